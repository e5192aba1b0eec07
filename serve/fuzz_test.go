package serve

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// FuzzCompletionRequest sends arbitrary bodies to POST /v1/completions of
// a server of the small test model (one delta, one file that is not a
// delta): every answer is a JSON object with a status the API documents —
// never a crash or a 500 — and a completion holds at most the tokens the
// context leaves room for.
func FuzzCompletionRequest(f *testing.F) {
	dir, modelDir := f.TempDir(), f.TempDir()
	if err := llamagen.Write(modelDir, testModel); err != nil {
		f.Fatal(err)
	}
	m, err := onnx.ReadFile(filepath.Join(modelDir, "model.onnx"))
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	d, err := deltagen.Random(m, 0.05, 0.3, 1)
	if err != nil {
		f.Fatal(err)
	}
	if err := dst.WriteDelta(filepath.Join(dir, "task0"+DeltaExt), d); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage"+DeltaExt), []byte("not a delta"), 0o644); err != nil {
		f.Fatal(err)
	}
	model, err := ir.NewModelShared(m)
	if err != nil {
		f.Fatal(err)
	}
	base, err := NewBase(m, model)
	if err != nil {
		f.Fatal(err)
	}
	const context = 16
	dec, err := generate.New(model, generate.Options{Threads: 1, Context: context, Executables: 2})
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	handler := New(Config{Base: base, Decoder: dec, DeltaDir: dir, MaxBodyBytes: 1 << 14}).Handler()
	for _, body := range []string{
		`{"model":"base","prompt":[1,2,3],"max_tokens":4}`,
		`{"model":"task0","prompt":[5],"max_tokens":3,"temperature":0.7,"top_p":0.9,"top_k":5,"seed":7}`,
		`{"model":"task0","prompt":[5],"max_tokens":2,"stream":true}`,
		`{"model":"garbage","prompt":[1]}`,
		`{"model":"../x","prompt":[1],"stop":["a"],"n":1}`,
		`{"model":"base","prompt":"text"}`,
		`{"model":"base","prompt":[[1,2]],"logprobs":null,"suffix":null,"echo":false,"best_of":1}`,
		`{"model":"task0","prompt":[[1,2],[3]],"n":2,"best_of":3,"logprobs":2,"echo":true,"max_tokens":2,"logit_bias":{"4":-5},"presence_penalty":1}`,
		`{"model":"base","prompt":[7,8],"echo":true,"logprobs":5,"max_tokens":0,"stream":true,"n":2}`,
		`[]`, `{"model":`, ``,
	} {
		f.Add([]byte(body))
	}
	documented := map[int]bool{200: true, 400: true, 404: true, 409: true, 413: true, 422: true, 429: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/completions", strings.NewReader(string(body)))
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if !documented[rec.Code] {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.Bytes())
		}
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
			return
		}
		var resp struct {
			Choices []struct {
				Tokens []int64 `json:"tokens"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("status %d, not JSON (%v): %q", rec.Code, err, rec.Body.Bytes())
		}
		for _, c := range resp.Choices {
			if len(c.Tokens) > context {
				t.Fatalf("a completion of %d tokens: %s", len(c.Tokens), rec.Body.Bytes())
			}
		}
		switch {
		case rec.Code == 200 && (len(resp.Choices) < 1 || len(resp.Choices) > MaxChoices):
			t.Fatalf("completion of %d choices: %s", len(resp.Choices), rec.Body.Bytes())
		case rec.Code != 200 && (resp.Error == nil || resp.Error.Message == ""):
			t.Fatalf("status %d without an error message: %s", rec.Code, rec.Body.Bytes())
		}
	})
}
