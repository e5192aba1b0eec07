package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/dstune/dstune/internal/atomicfile"
)

// certReloader hands out the certificate of --tls-cert and --tls-key,
// reading the files again when either changes (another file, size or
// modification time), so that a renewed certificate is served from the
// next connection on without a restart. A renewal writes two files one
// after the other: while they do not match, the server keeps the
// certificate it has and says so once.
type certReloader struct {
	certFile, keyFile string
	logf              func(format string, args ...any)

	mu                sync.Mutex
	cert              *tls.Certificate
	certInfo, keyInfo fs.FileInfo // the versions cert was read from
	// The versions that could not be read last time, and why (as
	// logged): not read again until either file changes.
	badCert, badKey fs.FileInfo
	failed          string
}

// newCertReloader reads the pair once: a server that cannot serve its
// certificate does not start.
func newCertReloader(certFile, keyFile string, logf func(format string, args ...any)) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, logf: logf}
	ci, ki, err := r.stat()
	if err != nil {
		return nil, err
	}
	if r.cert, err = r.read(); err != nil {
		return nil, err
	}
	r.certInfo, r.keyInfo = ci, ki
	if leaf := r.cert.Leaf; leaf != nil && time.Now().After(leaf.NotAfter) {
		logf("warning: --tls-cert %s expired on %s: clients will refuse it", certFile, leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return r, nil
}

func (r *certReloader) stat() (cert, key fs.FileInfo, err error) {
	if cert, err = os.Stat(r.certFile); err != nil {
		return nil, nil, fmt.Errorf("--tls-cert: %w", err)
	}
	if key, err = os.Stat(r.keyFile); err != nil {
		return nil, nil, fmt.Errorf("--tls-key: %w", err)
	}
	return cert, key, nil
}

// read loads and checks the pair: PEM blocks, a key matching the first
// certificate (Go's tls package checks that), and a first certificate
// that parses.
func (r *certReloader) read() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("--tls-cert %s: %w", r.certFile, err)
		}
	}
	return &cert, nil
}

// get is tls.Config.GetCertificate: the pair as the files hold it now, or
// the last pair read while they cannot be read or do not match (each
// reason said once).
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ci, ki, err := r.stat()
	if err == nil {
		if atomicfile.SameVersion(ci, r.certInfo) && atomicfile.SameVersion(ki, r.keyInfo) ||
			atomicfile.SameVersion(ci, r.badCert) && atomicfile.SameVersion(ki, r.badKey) {
			return r.cert, nil
		}
		var cert *tls.Certificate
		if cert, err = r.read(); err == nil {
			r.cert, r.certInfo, r.keyInfo, r.badCert, r.badKey, r.failed = cert, ci, ki, nil, nil, ""
			r.logf("read the renewed certificate %s (valid until %s)", r.certFile, cert.Leaf.NotAfter.UTC().Format(time.DateOnly))
			return cert, nil
		}
		r.badCert, r.badKey = ci, ki
	}
	if msg := err.Error(); msg != r.failed {
		r.failed = msg
		r.logf("keeping the certificate read before: %s", msg)
	}
	return r.cert, nil
}

// tlsConfig serves the reloader's certificate over TLS 1.2 or later, to
// HTTP/1.1 clients (the protocol the server's limits on bodies and
// streams are written for; OpenAI's clients speak it).
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
}
