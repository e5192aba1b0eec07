package serve

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/onnx"
)

// TestRoutesAnswerInJSON: a route the server does not have and a method a
// route does not take are answered in the API's error shape (OpenAI's
// clients read the error from it), 405 with the methods the route takes;
// GET /v1/models/{model} gives the model's entry of the list.
func TestRoutesAnswerInJSON(t *testing.T) {
	f := newFixture(t, 1)
	for _, c := range []struct {
		method, path string
		status       int
		kind, says   string
		allow        string
	}{
		{"POST", "/v1/embeddings", 404, "not_found_error", "no route POST /v1/embeddings: this server answers POST /v1/completions, POST /v1/chat/completions", ""},
		{"GET", "/v1/chat/completions", 405, "invalid_request_error", "GET /v1/chat/completions: this route takes POST", "POST"},
		{"GET", "/v1/completions", 405, "invalid_request_error", "GET /v1/completions: this route takes POST", "POST"},
		{"POST", "/v1/models", 405, "invalid_request_error", "this route takes GET, HEAD", "GET, HEAD"},
		{"DELETE", "/v1/models/task0", 405, "invalid_request_error", "this route takes GET, HEAD", "GET, HEAD"},
		{"GET", "/v1/models/nope", 404, "not_found_error", `no such model: "nope"`, ""},
	} {
		req, _ := http.NewRequest(c.method, f.http.URL+c.path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Error apiError }
		err = json.Unmarshal(b, &e)
		if resp.StatusCode != c.status || err != nil || e.Error.Type != c.kind || !strings.Contains(e.Error.Message, c.says) ||
			resp.Header.Get("Allow") != c.allow || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d (Allow %q, %s) %s, want %d %s saying %q (Allow %q)", c.method, c.path, resp.StatusCode,
				resp.Header.Get("Allow"), resp.Header.Get("Content-Type"), b, c.status, c.kind, c.says, c.allow)
		}
	}
	// None of those is a completion request: the metrics count none.
	f.srv.metrics.mu.Lock()
	counted := len(f.srv.metrics.byModel)
	f.srv.metrics.mu.Unlock()
	if counted != 0 {
		t.Errorf("requests to other routes counted under %d models", counted)
	}
	resp, err := http.Get(f.http.URL + "/v1/models/task0")
	if err != nil {
		t.Fatal(err)
	}
	var m modelEntry
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || m.ID != "task0" || m.Object != "model" || m.OwnedBy != "dstune" || m.FileBytes == 0 {
		t.Errorf("GET /v1/models/task0: %d %v %+v", resp.StatusCode, err, m)
	}
}

// TestSeeds: a request without a seed draws its own, so that requests
// sent alike sample alike only by chance, and the answer gives the seed,
// which sent again gives the same completion; a negative seed stands for
// its two's complement.
func TestSeeds(t *testing.T) {
	f := newFixture(t, 1)
	type answer struct {
		Seed    *uint64 `json:"seed"`
		Choices []struct {
			Tokens []int64 `json:"tokens"`
		} `json:"choices"`
	}
	ask := func(extra string) answer {
		t.Helper()
		status, b := f.post(t, `{"model":"task0","prompt":[1,5],"max_tokens":24,"temperature":1.5`+extra+`}`)
		var a answer
		if err := json.Unmarshal(b, &a); status != 200 || err != nil || a.Seed == nil || len(a.Choices) != 1 {
			t.Fatalf("status %d, %v: %s", status, err, b)
		}
		return a
	}
	var seeds []uint64
	var first answer
	distinct := map[string]bool{}
	for i := range 4 {
		a := ask("")
		if i == 0 {
			first = a
		}
		seeds = append(seeds, *a.Seed)
		distinct[fmt.Sprint(a.Choices[0].Tokens)] = true
	}
	slices.Sort(seeds)
	if len(slices.Compact(seeds)) != 4 || len(distinct) < 2 {
		t.Errorf("4 requests without a seed: seeds %v, %d distinct completions", seeds, len(distinct))
	}
	again := ask(fmt.Sprintf(`,"seed":%d`, *first.Seed))
	if !slices.Equal(again.Choices[0].Tokens, first.Choices[0].Tokens) || *again.Seed != *first.Seed {
		t.Errorf("seed %d sent again: %v, first %v", *first.Seed, again.Choices[0].Tokens, first.Choices[0].Tokens)
	}
	neg, big := ask(`,"seed":-1`), ask(`,"seed":18446744073709551615`)
	if *neg.Seed != 1<<64-1 || !slices.Equal(neg.Choices[0].Tokens, big.Choices[0].Tokens) {
		t.Errorf("seed -1: seed %d, %v; seed 2⁶⁴-1: %v", *neg.Seed, neg.Choices[0].Tokens, big.Choices[0].Tokens)
	}
	// A batch of one prompt is that prompt.
	batch := ask(`,"seed":7,"prompt":[[1,5]]`)
	plain := ask(`,"seed":7`)
	if !slices.Equal(batch.Choices[0].Tokens, plain.Choices[0].Tokens) {
		t.Errorf("prompt [[1,5]]: %v, prompt [1,5]: %v", batch.Choices[0].Tokens, plain.Choices[0].Tokens)
	}
}

// TestStreamChunksShareCreated: every chunk of a streamed completion has
// its id and creation time, and the last one gives the seed.
func TestStreamChunksShareCreated(t *testing.T) {
	f := newFixture(t, 0)
	resp, err := http.Post(f.http.URL+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"base","prompt":[1],"max_tokens":40,"stream":true,"seed":3}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ids []string
	var created []int64
	var seed *uint64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c completion
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%v: %s", err, data)
		}
		ids, created, seed = append(ids, c.ID), append(created, c.Created), c.Seed
	}
	if len(ids) < 2 || len(slices.Compact(ids)) != 1 || len(slices.Compact(created)) != 1 || seed == nil || *seed != 3 {
		t.Errorf("%d chunks: ids %v, created %v, last seed %v", len(ids), slices.Compact(ids), slices.Compact(created), seed)
	}
}

// TestRetryAdvice: OpenAI's clients retry a 409 unless told not to (a
// delta of another base model stays one); a 429 says when to come back,
// and counts under the model the request named.
func TestRetryAdvice(t *testing.T) {
	f := newFixture(t, 0)
	m, err := onnx.ReadFile(f.modelPath)
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	cfg := testModel
	cfg.Dim = 16
	if err := llamagen.Write(other, cfg); err != nil {
		t.Fatal(err)
	}
	om, err := onnx.ReadFile(filepath.Join(other, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := deltagen.Random(om, 0.01, 0.1, 1)
	om.Close()
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.WriteDelta(filepath.Join(f.dir, "foreign"+DeltaExt), d); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(f.http.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"foreign","prompt":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("a delta of another base: %d, X-Should-Retry %q", resp.StatusCode, resp.Header.Get("X-Should-Retry"))
	}
	for range cap(f.srv.inFlight) {
		f.srv.inFlight <- struct{}{}
	}
	resp, err = http.Post(f.http.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"base","prompt":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for range cap(f.srv.inFlight) {
		<-f.srv.inFlight
	}
	f.srv.metrics.mu.Lock()
	base := f.srv.metrics.counters(BaseName).byStatus[http.StatusTooManyRequests]
	f.srv.metrics.mu.Unlock()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || base != 1 {
		t.Errorf("all slots taken: %d, Retry-After %q, counted %d times under base", resp.StatusCode, resp.Header.Get("Retry-After"), base)
	}
}

// TestOversizedBodyNotAskedFor: a body whose Content-Length exceeds the
// limit is refused at once, even while every place to receive bodies is
// taken (a 429 would have it retried); a client waiting on
// "Expect: 100-continue" is not told to send it.
func TestOversizedBodyNotAskedFor(t *testing.T) {
	f := newFixture(t, 0)
	for range cap(f.srv.receiving) {
		f.srv.receiving <- struct{}{}
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", 2<<20)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "of 2097152 bytes exceeds 1048576") {
		t.Errorf("%d %s, want 413 before the body", resp.StatusCode, b)
	}
}

// TestModelsHideTheDirectory: GET /v1/models names a delta's file as the
// directory lists it, wherever a link there leads; and a model name the
// client sent is quoted as sent.
func TestModelsHideTheDirectory(t *testing.T) {
	f := newFixture(t, 0)
	elsewhere := t.TempDir()
	target := filepath.Join(elsewhere, "kept.bin")
	if err := os.WriteFile(target, []byte("not a delta"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(f.dir, "linked"+DeltaExt)); err != nil {
		t.Fatal(err)
	}
	if status, b := f.post(t, `{"model":"linked","prompt":[1]}`); status != 422 || strings.Contains(string(b), elsewhere) || !strings.Contains(string(b), "linked"+DeltaExt) {
		t.Errorf("a link to a bad file: %d %s", status, b)
	}
	resp, err := http.Get(f.http.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), elsewhere) || strings.Contains(string(b), f.dir) || !strings.Contains(string(b), "linked"+DeltaExt) {
		t.Errorf("/v1/models: %s", b)
	}
	name := "../" + filepath.Base(f.dir) + "/x"
	if status, b := f.post(t, `{"model":"`+name+`","prompt":[1]}`); status != 404 || !strings.Contains(string(b), name) {
		t.Errorf("model %q: %d %s", name, status, b)
	}
}
