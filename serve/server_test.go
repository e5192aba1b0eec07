package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

var testModel = llamagen.Config{Vocab: 61, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 40, Seed: 3}

// fixture is a served model with deltas in a directory.
type fixture struct {
	modelPath string
	dir       string
	deltas    map[string]*dst.Delta
	srv       *Server
	http      *httptest.Server
}

// newFixture writes the test model and n random deltas (ε = 0.05, large
// changes, so that they change the tokens) and starts a server, its
// configuration changed by edits.
func newFixture(t *testing.T, n int, edits ...func(*Config)) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), deltas: map[string]*dst.Delta{}}
	modelDir := t.TempDir()
	if err := llamagen.Write(modelDir, testModel); err != nil {
		t.Fatal(err)
	}
	f.modelPath = filepath.Join(modelDir, "model.onnx")
	m, err := onnx.ReadFile(f.modelPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for i := range n {
		d, err := deltagen.Random(m, 0.05, 0.3, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("task%d", i)
		if err := dst.WriteDelta(filepath.Join(f.dir, name+DeltaExt), d); err != nil {
			t.Fatal(err)
		}
		f.deltas[name] = d
	}
	model, err := ir.NewModelShared(m)
	if err != nil {
		t.Fatal(err)
	}
	base, err := NewBase(m, model)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := generate.New(model, generate.Options{Threads: 1, Context: 64, Executables: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	cfg := Config{Base: base, Decoder: dec, DeltaDir: f.dir, StopTokens: nil}
	for _, edit := range edits {
		edit(&cfg)
	}
	f.srv = New(cfg)
	f.http = httptest.NewServer(f.srv.Handler())
	t.Cleanup(f.http.Close)
	return f
}

// reference generates with the delta applied to a separate copy of the
// model as `dstune apply` writes it (TensorDelta.ApplyRaw on the
// initializers' bytes).
func (f *fixture) reference(t *testing.T, delta string, req generate.Request) []int64 {
	t.Helper()
	m, err := onnx.ReadFile(f.modelPath)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if d := f.deltas[delta]; d != nil {
		for i := range d.Tensors {
			td := &d.Tensors[i]
			if err := td.ApplyRaw("F32", model.Param(td.Name).Tensor.Bytes()); err != nil {
				t.Fatal(err)
			}
		}
	}
	dec, err := generate.New(model, generate.Options{Threads: 1, Context: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	res, err := generate.Run(context.Background(), dec, nil, req, func(generate.Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res.Tokens
}

func (f *fixture) post(t *testing.T, body string) (int, []byte) {
	t.Helper()
	resp, b := f.do(t, "POST", "/v1/completions", body, map[string]string{"Content-Type": "application/json"})
	return resp.StatusCode, b
}

// do sends a request with the given headers and reads the whole answer.
func (f *fixture) do(t *testing.T, method, path, body string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

type completionBody struct {
	Choices []struct {
		Tokens       []int64 `json:"tokens"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Error *apiError `json:"error"`
}

func decodeCompletion(t *testing.T, b []byte) completionBody {
	t.Helper()
	var c completionBody
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return c
}

// TestConcurrentDeltasMatchApply: requests of different deltas and seeds,
// sent from many goroutines at once, get exactly the tokens generating
// with each delta applied to its own copy of the model gives.
func TestConcurrentDeltasMatchApply(t *testing.T) {
	f := newFixture(t, 3)
	models := []string{BaseName, "task0", "task1", "task2"}
	prompt := []int64{1, 5, 9, 22}
	type job struct {
		model string
		seed  uint64
	}
	var jobs []job
	for i := range 16 {
		jobs = append(jobs, job{models[i%len(models)], uint64(i / len(models))})
	}
	want := map[job][]int64{}
	distinct := map[string]bool{}
	for _, j := range jobs {
		req := generate.Request{Prompt: prompt, MaxTokens: 12, Sampling: generate.Sampling{Temperature: 0.9, TopK: 20, TopP: 0.95, Seed: j.seed}}
		want[j] = f.reference(t, j.model, req)
		distinct[fmt.Sprint(want[j])] = true
	}
	if len(distinct) < len(jobs)/2 {
		t.Fatalf("only %d distinct references for %d jobs: the deltas hardly change the model", len(distinct), len(jobs))
	}

	var wg sync.WaitGroup
	errs := make(chan error, 3*len(jobs))
	for round := range 3 {
		for i := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j := jobs[(i+round*5)%len(jobs)]
				body := fmt.Sprintf(`{"model":%q,"prompt":[1,5,9,22],"max_tokens":12,"temperature":0.9,"top_k":20,"top_p":0.95,"seed":%d,"stream":%v}`,
					j.model, j.seed, i%2 == 0)
				resp, err := http.Post(f.http.URL+"/v1/completions", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				got, err := readTokens(resp, i%2 == 0)
				if err != nil {
					errs <- fmt.Errorf("%s seed %d: %w", j.model, j.seed, err)
					return
				}
				if !slices.Equal(got, want[j]) {
					errs <- fmt.Errorf("%s seed %d: tokens %v, want %v", j.model, j.seed, got, want[j])
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := f.srv.sched.Switches(); n < 2 {
		t.Errorf("%d delta switches: the requests did not interleave", n)
	}
}

// readTokens reads a completion's tokens from a JSON or event-stream
// response.
func readTokens(resp *http.Response, stream bool) ([]int64, error) {
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if !stream {
		var c completionBody
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			return nil, err
		}
		return c.Choices[0].Tokens, nil
	}
	var tokens []int64
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var c completionBody
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			return nil, err
		}
		if c.Error != nil {
			return nil, fmt.Errorf("error event: %s", c.Error.Message)
		}
		tokens = append(tokens, c.Choices[0].Tokens...)
	}
	if !done {
		return nil, fmt.Errorf("the stream ended without [DONE]")
	}
	return tokens, sc.Err()
}

// TestBadRequests: each bad request gets its status and a message naming
// the reason, and the server keeps serving.
func TestBadRequests(t *testing.T) {
	f := newFixture(t, 1)
	// A delta made for another base model.
	other := testModel
	other.Seed = 99
	otherDir := t.TempDir()
	if err := llamagen.Write(otherDir, other); err != nil {
		t.Fatal(err)
	}
	om, err := onnx.ReadFile(filepath.Join(otherDir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := deltagen.Random(om, 0.01, 0.1, 1)
	om.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.WriteDelta(filepath.Join(f.dir, "foreign"+DeltaExt), d); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "garbage"+DeltaExt), []byte("not a delta"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("1,", 64) + "1"
	for _, c := range []struct {
		name, body string
		status     int
		says       string
	}{
		{"malformed JSON", `{"model": "base", "prompt": [1, 2`, 400, "not a completion request"},
		{"two values", `{"model":"base","prompt":[1]} {}`, 400, "more than one"},
		{"wrong type", `{"model":"base","prompt":{"a":1}}`, 400, "prompt must be"},
		{"no model", `{"prompt":[1]}`, 400, "model is required"},
		{"no prompt", `{"model":"base"}`, 400, "prompt is required"},
		{"text without tokenizer", `{"model":"base","prompt":"hello"}`, 400, "no tokenizer"},
		{"unknown delta", `{"model":"nope","prompt":[1]}`, 404, "no delta file nope.safetensors"},
		{"path in the name", `{"model":"../etc/passwd","prompt":[1]}`, 404, "no such model"},
		{"other base", `{"model":"foreign","prompt":[1]}`, 409, "different base model"},
		{"not a delta", `{"model":"garbage","prompt":[1]}`, 422, "cannot be used"},
		{"prompt beyond the context", `{"model":"base","prompt":[` + long + `]}`, 400, "context holds 64"},
		{"max_tokens 0", `{"model":"base","prompt":[1],"max_tokens":0}`, 400, "max_tokens 0"},
		{"max_tokens negative", `{"model":"base","prompt":[1],"max_tokens":-5}`, 400, "max_tokens -5"},
		{"max_tokens huge", `{"model":"base","prompt":[1],"max_tokens":1000000000}`, 400, "room for at most 64"},
		{"max_tokens 2 after a prompt filling the context", `{"model":"base","prompt":[` + long[2:] + `],"max_tokens":2}`, 400, "the prompt's 64 tokens leave room for at most 1"},
		{"token outside the vocabulary", `{"model":"base","prompt":[1,61]}`, 400, "outside the vocabulary"},
		{"negative temperature", `{"model":"base","prompt":[1],"temperature":-1}`, 400, "temperature"},
		{"top_p 0", `{"model":"base","prompt":[1],"top_p":0}`, 400, "top_p 0: want a number in (0, 1]"},
		{"top_p above 1", `{"model":"base","prompt":[1],"top_p":1.1}`, 400, "top_p 1.1: want a number in (0, 1]"},
		{"seed not an integer", `{"model":"base","prompt":[1],"seed":"x"}`, 400, `seed \"x\": want an integer`},
		{"seed beyond 64 bits", `{"model":"base","prompt":[1],"seed":18446744073709551616}`, 400, "seed 18446744073709551616: want an integer"},
		{"a batch of batches", `{"model":"base","prompt":[[[1]]]}`, 400, "prompt 0 of the batch must be"},
		{"a batch of an empty prompt", `{"model":"base","prompt":[[]]}`, 400, "the prompt is empty"},
		{"a batch with an empty prompt", `{"model":"base","prompt":[[1],[]]}`, 400, "prompt 1: bad request: the prompt is empty"},
		{"a batch with a prompt beyond the vocabulary", `{"model":"base","prompt":[[1],[2],[61]]}`, 400, "prompt 2: bad request: token id 61 is outside"},
		{"an empty batch", `{"model":"base","prompt":[]}`, 400, "the prompt is empty"},
		{"n 0", `{"model":"base","prompt":[1],"n":0}`, 400, "n 0: want at least 1"},
		{"n not an integer", `{"model":"base","prompt":[1],"n":1.5}`, 400, "n 1.5: want an integer"},
		{"best_of below n", `{"model":"base","prompt":[1],"n":3,"best_of":2}`, 400, "best_of 2 is less than n 3"},
		{"too many completions", `{"model":"base","prompt":[[1],[2],[3]],"n":43}`, 400, "3 prompts × n 43: at most 128 completions a request"},
		{"too many best_of", `{"model":"base","prompt":[1],"best_of":129}`, 400, "1 prompts × best_of 129: at most 128"},
		{"best_of streamed", `{"model":"base","prompt":[1],"n":1,"best_of":2,"stream":true}`, 400, "best_of 2 with n 1 cannot stream"},
		{"logprobs above 5", `{"model":"base","prompt":[1],"logprobs":6}`, 400, "logprobs 6: want an integer in [0, 5]"},
		{"logprobs negative", `{"model":"base","prompt":[1],"logprobs":-1}`, 400, "logprobs -1: want an integer in [0, 5]"},
		{"logprobs true", `{"model":"base","prompt":[1],"logprobs":true}`, 400, "logprobs true: want an integer"},
		{"max_tokens 0 without echo", `{"model":"base","prompt":[1],"max_tokens":0}`, 400, "max_tokens 0: want at least 1 (0 only with echo"},
		{"max_tokens a fraction", `{"model":"base","prompt":[1],"max_tokens":2.5}`, 400, "max_tokens 2.5: want an integer"},
		{"max_tokens a string", `{"model":"base","prompt":[1],"max_tokens":"3"}`, 400, `max_tokens \"3\": want an integer`},
		{"temperature above 2", `{"model":"base","prompt":[1],"temperature":2.5}`, 400, "temperature 2.5: want a number in [0, 2]"},
		{"a logit bias beyond the vocabulary", `{"model":"base","prompt":[1],"logit_bias":{"61":5}}`, 400, `logit_bias[\"61\"]: token id 61 is outside the vocabulary [0, 61)`},
		{"a logit bias not an id", `{"model":"base","prompt":[1],"logit_bias":{"a":5}}`, 400, `logit_bias[\"a\"]: want a token id`},
		{"a logit bias too large", `{"model":"base","prompt":[1],"logit_bias":{"5":101}}`, 400, `logit_bias[\"5\"] 101: want a number in [-100, 100]`},
		{"a logit bias not an object", `{"model":"base","prompt":[1],"logit_bias":[5]}`, 400, "logit_bias must be an object"},
		{"a presence penalty too large", `{"model":"base","prompt":[1],"presence_penalty":2.5}`, 400, "presence_penalty 2.5: want a number in [-2, 2]"},
		{"a frequency penalty too small", `{"model":"base","prompt":[1],"frequency_penalty":-3}`, 400, "frequency_penalty -3: want a number in [-2, 2]"},
		{"a suffix", `{"model":"base","prompt":[1],"suffix":"x"}`, 400, "suffix is not supported"},
		{"top_k negative", `{"model":"base","prompt":[1],"top_k":-1}`, 400, "top_k -1: want at least 0"},
		{"too many stop strings", `{"model":"base","prompt":[1],"stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, 400, "at most 16"},
		{"body too large", `{"model":"base","prompt":[` + strings.Repeat("1,", 600000) + `1]}`, 413, "exceeds"},
	} {
		status, body := f.post(t, c.body)
		if status != c.status || !strings.Contains(string(body), c.says) {
			t.Errorf("%s: status %d %s, want %d saying %q", c.name, status, body, c.status, c.says)
		}
	}
	status, body := f.post(t, `{"model":"task0","prompt":[1],"max_tokens":3}`)
	if status != 200 {
		t.Errorf("after the bad requests: status %d %s", status, body)
	}
	resp, err := http.Get(f.http.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"id":"base"`, `"id":"task0","object":"model"`, `"loaded":true`, `different base model`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("/v1/models lacks %s: %s", want, b)
		}
	}
}

// TestDeltaFileChanges: a delta rewritten while serving is reloaded; one
// truncated is refused with the reason until it is whole again.
func TestDeltaFileChanges(t *testing.T) {
	f := newFixture(t, 2)
	path := filepath.Join(f.dir, "task0"+DeltaExt)
	body := `{"model":"task0","prompt":[1,2,3],"max_tokens":8,"temperature":0}`
	_, first := f.post(t, body)
	tokens0 := decodeCompletion(t, first).Choices[0].Tokens

	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, whole[:len(whole)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	status, b := f.post(t, body)
	if status != http.StatusUnprocessableEntity || !strings.Contains(string(b), "task0") {
		t.Errorf("truncated delta: status %d %s, want 422 naming the file", status, b)
	}
	if status, b := f.post(t, `{"model":"task1","prompt":[1],"max_tokens":2}`); status != 200 {
		t.Errorf("another delta while one is broken: %d %s", status, b)
	}

	// The other delta's content under task0's name: its tokens.
	other, err := os.ReadFile(filepath.Join(f.dir, "task1"+DeltaExt))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, other, 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Second)
	os.Chtimes(path, future, future)
	_, b = f.post(t, body)
	got := decodeCompletion(t, b).Choices[0].Tokens
	_, b = f.post(t, strings.Replace(body, "task0", "task1", 1))
	want := decodeCompletion(t, b).Choices[0].Tokens
	if !slices.Equal(got, want) || slices.Equal(got, tokens0) {
		t.Errorf("after rewriting task0 with task1's delta: %v, task1 gives %v, task0 gave %v", got, want, tokens0)
	}
}

// TestClientGoesAway: a client closing a stream mid-way ends its
// generation; no goroutine is left behind and the server keeps serving.
func TestClientGoesAway(t *testing.T) {
	f := newFixture(t, 1)
	before := runtime.NumGoroutine()
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", f.http.URL+"/v1/completions",
			strings.NewReader(`{"model":"task0","prompt":[1],"max_tokens":60,"stream":true}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: ") {
			t.Fatalf("first event %q, %v", line, err)
		}
		cancel()
		resp.Body.Close()
	}
	if status, b := f.post(t, `{"model":"task0","prompt":[1],"max_tokens":4}`); status != 200 {
		t.Errorf("after the disconnects: %d %s", status, b)
	}
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines, %d before the requests:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	if n := f.srv.metrics.inFlight.Load(); n != 0 {
		t.Errorf("%d requests still counted in flight", n)
	}
}

func TestEndpoints(t *testing.T) {
	f := newFixture(t, 1)
	f.post(t, `{"model":"task0","prompt":[1],"max_tokens":2}`)
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/metrics": `dstune_completion_tokens_total{model="task0"} 2`,
	} {
		resp, err := http.Get(f.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %s, want %q", path, resp.StatusCode, b, want)
		}
	}
	resp, err := http.Get(f.http.URL + "/v1/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/completions: %d, want 405", resp.StatusCode)
	}
}

// TestAPIKeyAndCORS: with an API key, every /v1 route answers 401 in
// OpenAI's shape (code invalid_api_key) without it or with another, and
// serves the request with it; /healthz and /metrics stay open. Pages of
// an allowed origin get Access-Control-Allow-Origin, and their preflight
// (which carries no key) is answered with the methods and the headers
// asked for; other origins get neither.
func TestAPIKeyAndCORS(t *testing.T) {
	const key, page = "sk-test-123", "http://localhost:3000"
	f := newFixture(t, 1, func(c *Config) { c.APIKey, c.CORSOrigins = key, []string{page} })
	do := func(method, path, body string, header map[string]string) (*http.Response, []byte) {
		t.Helper()
		return f.do(t, method, path, body, header)
	}
	completion := `{"model":"task0","prompt":[1],"max_tokens":2}`
	for _, c := range []struct {
		name, method, path, auth string
		want                     int
	}{
		{"no key", "POST", "/v1/completions", "", http.StatusUnauthorized},
		{"another key", "POST", "/v1/completions", "Bearer sk-other", http.StatusUnauthorized},
		{"the key as a prefix", "POST", "/v1/completions", "Bearer " + key + "4", http.StatusUnauthorized},
		{"not a bearer", "POST", "/v1/completions", key, http.StatusUnauthorized},
		{"the key", "POST", "/v1/completions", "Bearer " + key, http.StatusOK},
		{"the scheme in lower case", "POST", "/v1/completions", "bearer " + key, http.StatusOK},
		{"models, no key", "GET", "/v1/models", "", http.StatusUnauthorized},
		{"models, the key", "GET", "/v1/models", "Bearer " + key, http.StatusOK},
		{"health", "GET", "/healthz", "", http.StatusOK},
		{"metrics", "GET", "/metrics", "", http.StatusOK},
	} {
		header := map[string]string{"Content-Type": "application/json"}
		if c.auth != "" {
			header["Authorization"] = c.auth
		}
		resp, b := do(c.method, c.path, completion, header)
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, b, c.want)
			continue
		}
		if resp.Header.Get("Vary") != "Origin" {
			// A cache must not hand this answer to a page of the origin.
			t.Errorf("%s, no Origin: Vary %q, want Origin", c.name, resp.Header.Get("Vary"))
		}
		if c.want == http.StatusUnauthorized {
			body := decodeCompletion(t, b)
			if body.Error == nil || body.Error.Code != "invalid_api_key" || body.Error.Type != "invalid_request_error" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: %s (WWW-Authenticate %q), want OpenAI's invalid_api_key error", c.name, b, resp.Header.Get("WWW-Authenticate"))
			}
		}
		if c.name == "the key" {
			if body := decodeCompletion(t, b); len(body.Choices) != 1 || len(body.Choices[0].Tokens) != 2 {
				t.Errorf("%s: %s, want a completion of 2 tokens", c.name, b)
			}
		}
	}

	preflight := map[string]string{"Origin": page, "Access-Control-Request-Method": "POST",
		"Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}
	resp, b := do("OPTIONS", "/v1/chat/completions", "", preflight)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != page ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") ||
		resp.Header.Get("Access-Control-Allow-Headers") != preflight["Access-Control-Request-Headers"] {
		t.Errorf("preflight from %s: %d %s, headers %v", page, resp.StatusCode, b, resp.Header)
	}
	resp, _ = do("POST", "/v1/completions", completion, map[string]string{"Origin": page, "Authorization": "Bearer " + key})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != page {
		t.Errorf("a request from %s: %d, Access-Control-Allow-Origin %q", page, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	preflight["Origin"] = "http://elsewhere.example"
	resp, _ = do("OPTIONS", "/v1/chat/completions", "", preflight)
	if resp.StatusCode == http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d, Access-Control-Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestSlowBodyHoldsNoSlot: clients that send a request's headers and then
// stall in its body take none of MaxInFlight (a legitimate request is
// served beside them) and are answered 408 once BodyTimeout has passed;
// the bodies received at once are bounded (4 a place), and a request
// finding none free waits ReceiveWait for one, then gets 429.
func TestSlowBodyHoldsNoSlot(t *testing.T) {
	f := newFixture(t, 0)
	cfg := f.srv.cfg
	// BodyTimeout long enough that no stalled body is cut off before the
	// checks below (a loaded machine, -race), ReceiveWait short.
	cfg.MaxInFlight, cfg.BodyTimeout, cfg.ReceiveWait = 1, 3*time.Second, 100*time.Millisecond
	srv := New(cfg)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	var stalled []net.Conn
	stall := func(n int) {
		for range n {
			c, err := net.Dial("tcp", hs.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
			stalled = append(stalled, c)
		}
		// Until they are all being read.
		for deadline := time.Now().Add(5 * time.Second); srv.receivingBodies() < len(stalled) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if n := srv.receivingBodies(); n != len(stalled) {
			t.Fatalf("%d bodies being received, want %d", n, len(stalled))
		}
	}
	post := func() (int, string) {
		resp, err := http.Post(hs.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"base","prompt":[1],"max_tokens":2}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	stall(3)
	if code, b := post(); code != http.StatusOK {
		t.Errorf("beside three stalled bodies (one place to serve): %d %s", code, b)
	}
	stall(1) // four: every place to receive a body is taken
	if code, b := post(); code != http.StatusTooManyRequests || !strings.Contains(b, "receiving 4 requests for all of 100ms") {
		t.Errorf("beside four stalled bodies: %d %s", code, b)
	}
	for i, c := range stalled {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("stalled request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "did not arrive within 3s") {
			t.Errorf("stalled request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if code, b := post(); code != http.StatusOK {
		t.Errorf("after the stalled bodies were cut off: %d %s", code, b)
	}
	if n, m := srv.InFlight(), srv.receivingBodies(); n != 0 || m != 0 {
		t.Errorf("%d requests in flight, %d bodies being received after the stalled ones were answered", n, m)
	}
}

// TestStopEndsWaitingRequests: a request waiting for a place to receive
// its body gives up with 503 when the server stops (a graceful shutdown
// need not wait the whole ReceiveWait for it).
func TestStopEndsWaitingRequests(t *testing.T) {
	f := newFixture(t, 0)
	cfg := f.srv.cfg
	cfg.MaxInFlight, cfg.BodyTimeout, cfg.ReceiveWait = 1, time.Minute, time.Minute
	srv := New(cfg)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	for range 4 { // every place to receive a body
		c, err := net.Dial("tcp", hs.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	}
	for deadline := time.Now().Add(5 * time.Second); srv.receivingBodies() < 4 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := http.Post(hs.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"base","prompt":[1]}`))
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	time.Sleep(50 * time.Millisecond)
	srv.Stop()
	select {
	case code := <-done:
		if code != http.StatusServiceUnavailable {
			t.Errorf("waiting request after Stop: %d, want 503", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request did not end after Stop")
	}
}
