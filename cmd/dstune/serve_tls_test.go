package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeCertPair writes a fresh self-signed certificate for 127.0.0.1 and
// its key as PEM files, each written beside and renamed into place (as a
// renewal replaces them), and returns the certificate.
func writeCertPair(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("dstune test %d", serial)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if certFile != "" {
		writeRenamed(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	if keyFile != "" {
		writeRenamed(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writeRenamed(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// TestServeTLS: with --tls-cert and --tls-key the server speaks HTTPS
// (HTTP/1.1) with that certificate, and a plain HTTP request gets no
// completion. When the files are replaced, the next connection gets the
// new certificate; while the certificate and key do not match, the last
// good pair is served and the log says why, once.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	model, _ := llamaWithDeltas(t, dir, 0)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCertPair(t, certFile, keyFile, 1)

	var mu sync.Mutex
	var logged []string
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, fmt.Sprintf(format, args...))
	}
	certs, err := newCertReloader(certFile, keyFile, logf)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveInProcess(t, model, serveOptions{deltaDir: dir, threads: 1, executables: 1, maxInFlight: 4}, certs.tlsConfig())

	// complete asks for 3 tokens over a new connection trusting only
	// trusted, and returns the certificate the server showed.
	complete := func(trusted *x509.Certificate) (*x509.Certificate, error) {
		pool := x509.NewCertPool()
		pool.AddCert(trusted)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true, ForceAttemptHTTP2: true}}
		resp, err := client.Post("https://"+addr+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"base","prompt":[1,4],"max_tokens":3,"temperature":0}`))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 || !bytes.Contains(b, []byte(`"completion_tokens":3`)) {
			return nil, fmt.Errorf("%s %s: %s, want 200 over HTTP/1.1 with 3 tokens", resp.Proto, resp.Status, b)
		}
		return resp.TLS.PeerCertificates[0], nil
	}
	if got, err := complete(first); err != nil {
		t.Fatal(err)
	} else if !got.Equal(first) {
		t.Errorf("served certificate %v, want the first", got.Subject)
	}
	// Go's server answers plain HTTP on a TLS port with a bare 400.
	if resp, err := http.Post("http://"+addr+"/v1/completions", "application/json", strings.NewReader(`{"model":"base","prompt":[1,4],"max_tokens":3}`)); err != nil {
		t.Errorf("plain HTTP to the TLS port: %v, want a 400 answer", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || bytes.Contains(b, []byte("completion_tokens")) {
			t.Errorf("plain HTTP to the TLS port: %s %s, want 400 and no completion", resp.Status, b)
		}
	}

	// A renewal half done: a new certificate beside the old key.
	second := writeCertPair(t, certFile, "", 2)
	for range 2 {
		if got, err := complete(first); err != nil {
			t.Fatalf("with a certificate not matching the key: %v", err)
		} else if !got.Equal(first) {
			t.Errorf("with a certificate not matching the key, served %v, want the first", got.Subject)
		}
	}
	mu.Lock()
	if n := len(logged); n != 1 || !strings.Contains(logged[0], "keeping the certificate read before") || !strings.Contains(logged[0], certFile) {
		t.Errorf("log %q, want one line keeping the old certificate and naming %s", logged, certFile)
	}
	mu.Unlock()
	if _, err := complete(second); err == nil {
		t.Error("a client trusting only the half-written certificate got through")
	}

	third := writeCertPair(t, certFile, keyFile, 3)
	if got, err := complete(third); err != nil {
		t.Fatalf("after renewal: %v", err)
	} else if !got.Equal(third) {
		t.Errorf("after renewal, served %v, want the renewed", got.Subject)
	}
	if _, err := complete(first); err == nil {
		t.Error("after renewal a client trusting only the first certificate got through")
	}
	mu.Lock()
	if n := len(logged); n != 2 || !strings.Contains(logged[1], "read the renewed certificate") {
		t.Errorf("log %q, want a second line saying it read the renewed certificate", logged)
	}
	mu.Unlock()
}

// TestServeTLSUsage: the TLS flags come in pairs, and a server whose
// certificate cannot be read does not start, naming the files.
func TestServeTLSUsage(t *testing.T) {
	dir := t.TempDir()
	model, _ := llamaWithDeltas(t, dir, 0)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCertPair(t, certFile, keyFile, 1)
	otherKey := filepath.Join(dir, "other.pem")
	writeCertPair(t, "", otherKey, 2)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--tls-cert", certFile}, 2, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", keyFile}, 2, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", filepath.Join(dir, "none.pem"), "--tls-key", keyFile}, 1, "--tls-cert: stat " + filepath.Join(dir, "none.pem")},
		{[]string{"--tls-cert", certFile, "--tls-key", otherKey}, 1, "--tls-cert " + certFile + ", --tls-key " + otherKey + ": tls: private key does not match public key"},
		{[]string{"--tls-cert", keyFile, "--tls-key", keyFile}, 1, "--tls-cert " + keyFile},
	} {
		args := append([]string{"serve", model, "--deltas", dir, "--addr", "127.0.0.1:0"}, c.args...)
		code, _, stderr := runCmd(args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
}
