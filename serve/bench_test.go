package serve

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/tokenizer"
)

// BenchmarkSwitch times restoring one delta and writing another (what the
// scheduler does between passes of two deltas) on a 31M-parameter
// Llama-shaped model, its weights read into memory or mapped from the
// file; ns/entry is per changed entry of the two.
//
//	go test ./serve -run '^$' -bench Switch
func BenchmarkSwitch(b *testing.B) {
	dir := b.TempDir()
	c := llamagen.Config{Dim: 512, Layers: 8, Vocab: 8192, Heads: 8, KVHeads: 4, Hidden: 1365, Seed: 1}
	if err := llamagen.Write(dir, c); err != nil {
		b.Fatal(err)
	}
	for _, shared := range []bool{true, false} {
		m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
		if err != nil {
			b.Fatal(err)
		}
		load := ir.NewModel
		if shared {
			load = ir.NewModelShared
		}
		model, err := load(m)
		if err != nil {
			b.Fatal(err)
		}
		base, err := NewBase(m, model)
		if err != nil {
			b.Fatal(err)
		}
		for _, eps := range []float64{1e-4, 1e-3, 1e-2} {
			var ps [2]*Patch
			for i := range ps {
				d, err := deltagen.Random(m, eps, 0.01, uint64(i))
				if err != nil {
					b.Fatal(err)
				}
				if ps[i], err = base.NewPatch(d); err != nil {
					b.Fatal(err)
				}
			}
			var s Scheduler
			noop := func() error { return nil }
			// The first writes to a page of a mapped file copy it; time
			// the switches after that.
			s.Run(b.Context(), ps[0], noop)
			s.Run(b.Context(), ps[1], noop)
			b.Run(fmt.Sprintf("shared=%v/eps=%g", shared, eps), func(b *testing.B) {
				i := 0
				for b.Loop() {
					s.Run(b.Context(), ps[i%2], noop)
					i++
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(ps[0].Entries+ps[1].Entries), "ns/entry")
			})
			s.Run(b.Context(), nil, noop)
		}
		m.Close()
	}
}

// storiesTokenizer adapts stories260K's tokenizer as dstune serve does.
type storiesTokenizer struct{ t *tokenizer.Tokenizer }

func (s storiesTokenizer) Encode(text string) ([]int, error) { return s.t.EncodeChecked(text, true) }
func (s storiesTokenizer) Decode(ids []int) (string, error)  { return s.t.Decode(ids, true), nil }
func (s storiesTokenizer) IsByteToken(id int) bool           { return s.t.IsByteToken(id) }
func (s storiesTokenizer) Token(id int) string               { return s.t.Token(id) }

// storiesHandler serves stories260K with its tokenizer, one goroutine per
// kernel call and executables forward passes at once (0: GOMAXPROCS).
func storiesHandler(b *testing.B, executables int) http.Handler {
	path := sharedtest.Path(b, "models", "stories260K", "stories260K.onnx")
	m, err := onnx.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	model, err := ir.NewModelShared(m)
	if err != nil {
		b.Fatal(err)
	}
	base, err := NewBase(m, model)
	if err != nil {
		b.Fatal(err)
	}
	dec, err := generate.New(model, generate.Options{Threads: 1, Executables: executables})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(dec.Close)
	tok, err := tokenizer.Load(sharedtest.Path(b, "models", "stories260K", "tok512.bin"))
	if err != nil {
		b.Fatal(err)
	}
	return New(Config{Base: base, Decoder: dec, Tokenizer: storiesTokenizer{tok}, DeltaDir: b.TempDir()}).Handler()
}

// randomPrompt is BOS and n-1 token ids of stories260K drawn from a fixed
// seed, as JSON.
func randomPrompt(n int) string {
	rng := rand.New(rand.NewPCG(1, 2))
	prompt := []int64{1}
	for len(prompt) < n {
		prompt = append(prompt, 3+rng.Int64N(509))
	}
	ids, _ := json.Marshal(prompt)
	return string(ids)
}

// benchPost times answering body, after answering it once untimed (to
// compile the shapes it needs).
func benchPost(b *testing.B, h http.Handler, path, body string) {
	post := func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)))
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	post()
	b.ReportAllocs()
	for b.Loop() {
		post()
	}
}

// BenchmarkScoring times, on stories260K with its tokenizer, scoring a
// 128-token prompt as evaluation harnesses do (echo, logprobs 1,
// max_tokens 0) beside generating one token after it: both are one
// prefill, scoring adds the logprobs and the tokens' names.
//
//	go test ./serve -run '^$' -bench Scoring
func BenchmarkScoring(b *testing.B) {
	h := storiesHandler(b, 0)
	prompt := randomPrompt(128)
	for _, c := range []struct{ name, extra string }{
		{"score", `"echo":true,"logprobs":1,"max_tokens":0`},
		{"generate1", `"max_tokens":1`},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchPost(b, h, "/v1/completions", `{"model":"base","prompt":`+prompt+`,`+c.extra+`}`)
		})
	}
}

// BenchmarkChoices times, on stories260K, n completions of 16 tokens after
// a 448-token prompt, one forward pass at a time (a busy server's
// compute) and two at once.
//
//	go test ./serve -run '^$' -bench Choices -count 5
func BenchmarkChoices(b *testing.B) {
	prompt := randomPrompt(448)
	for _, executables := range []int{1, 2} {
		h := storiesHandler(b, executables)
		for _, n := range []int{1, 4} {
			b.Run(fmt.Sprintf("executables=%d/n=%d", executables, n), func(b *testing.B) {
				benchPost(b, h, "/v1/completions", fmt.Sprintf(`{"model":"base","prompt":%s,"n":%d,"max_tokens":16,"seed":1}`, prompt, n))
			})
		}
	}
}
