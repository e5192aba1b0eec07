package generate

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/ir"
)

// BenchmarkDecode measures generation with each mode: the prompt (BOS)
// then n tokens greedily; ns/op is per generated token.
//
//	go test ./generate -run '^$' -bench 'Decode$' -benchtime 3x
func BenchmarkDecode(b *testing.B) {
	models := map[string]func(testing.TB) string{
		"stories260K": func(t testing.TB) string { return storiesPath(t, "stories260K.onnx") },
		"demo":        func(testing.TB) string { return "../demo/base.onnx" },
		"llama-past": func(t testing.TB) string {
			dir := t.TempDir()
			c := llamagen.Config{Vocab: 512, Dim: 64, Layers: 5, Heads: 8, KVHeads: 4, Hidden: 172, Seed: 1, KVCache: true}
			if err := llamagen.Write(dir, c); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "model.onnx")
		},
	}
	for _, name := range []string{"stories260K", "demo", "llama-past"} {
		model := loadModel(b, models[name](b))
		for _, mode := range []Mode{PastInputs, OwnCache, Recompute} {
			contextLen := 256
			if name == "demo" {
				contextLen = 32 // its position table's length
			}
			d, err := New(model, Options{Mode: mode, Threads: 1, Context: contextLen})
			if err != nil {
				continue // the mode does not apply to the model
			}
			n := min(d.Context()-1, 255)
			// Compile every shape first.
			greedy(b, d, []int64{1}, n)
			b.Run(fmt.Sprintf("model=%s/mode=%s/tokens=%d", name, mode, n), func(b *testing.B) {
				for b.Loop() {
					res, err := Run(context.Background(), d, nil, Request{Prompt: []int64{1}, MaxTokens: n}, func(Event) error { return nil })
					if err != nil || len(res.Tokens) != n {
						b.Fatal(err, len(res.Tokens))
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n)/1e6, "ms/token")
			})
			d.Close()
		}
	}
}

// BenchmarkPrefill measures the time to the first token after a long
// prompt with each mode, on a Llama-shaped export with past inputs (4
// layers, width 256): cold, on a new decoder, compiling every shape it
// needs (as a command's first prompt does), and warm, reusing them.
//
//	go test ./generate -run '^$' -bench Prefill -benchtime 3x
func BenchmarkPrefill(b *testing.B) {
	model := benchLlama(b)
	const n = 1984
	prompt := benchPrompt(n)
	first := func(b *testing.B, d *Decoder) {
		res, err := Run(context.Background(), d, nil, Request{Prompt: prompt, MaxTokens: 1}, func(Event) error { return nil })
		if err != nil || len(res.Tokens) != 1 {
			b.Fatal(err, len(res.Tokens))
		}
	}
	for _, mode := range []Mode{PastInputs, OwnCache, Recompute} {
		opts := Options{Mode: mode, Threads: 1, Context: 2048}
		b.Run(fmt.Sprintf("mode=%s/tokens=%d/cold", mode, n), func(b *testing.B) {
			for b.Loop() {
				d, err := New(model, opts)
				if err != nil {
					b.Fatal(err)
				}
				first(b, d)
				d.Close()
			}
		})
		b.Run(fmt.Sprintf("mode=%s/tokens=%d/warm", mode, n), func(b *testing.B) {
			d, err := New(model, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			first(b, d)
			for b.Loop() {
				first(b, d)
			}
		})
	}
}

// BenchmarkDecodeAt measures decoding after a prompt of a given length on
// BenchmarkPrefill's model, and on the same model with one key/value head
// shared by its 4 query heads (grouped-query attention), with each mode
// that keeps a cache: 16 tokens fed one at a time on a fork of the
// prompt's session (the fork not timed), so every token reads a cache of
// about that many positions (capacity 128 or 2048). ns/op is per 16
// tokens.
//
//	go test ./generate -run '^$' -bench DecodeAt -benchtime 10x
func BenchmarkDecodeAt(b *testing.B) {
	const n = 16
	for _, kvHeads := range []int{benchLlamaConfig.KVHeads, 1} {
		c := benchLlamaConfig
		c.KVHeads = kvHeads
		model := writeLlama(b, c)
		for _, mode := range []Mode{PastInputs, OwnCache} {
			d, err := New(model, Options{Mode: mode, Threads: 1, Context: 2048})
			if err != nil {
				b.Fatal(err)
			}
			for _, at := range []int{100, 2000} {
				s := d.NewSession()
				if _, err := s.Feed(context.Background(), benchPrompt(at)); err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("kv-heads=%d/mode=%s/positions=%d", kvHeads, mode, at), func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						f := s.Fork()
						b.StartTimer()
						for i := range n {
							if _, err := f.Feed(context.Background(), []int64{int64(i + 1)}); err != nil {
								b.Fatal(err)
							}
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n)/1e6, "ms/token")
				})
			}
			d.Close()
		}
	}
}

// benchLlamaConfig is the Llama-shaped export of the long-prompt
// benchmarks: 4 layers of width 256 with past inputs.
var benchLlamaConfig = llamagen.Config{Vocab: 2048, Dim: 256, Layers: 4, Heads: 4, KVHeads: 4, Hidden: 768, Seed: 1, KVCache: true}

// benchLlama writes and loads benchLlamaConfig's model.
func benchLlama(b *testing.B) *ir.Model { return writeLlama(b, benchLlamaConfig) }

// benchPrompt is n tokens spread over benchLlamaConfig's vocabulary.
func benchPrompt(n int) []int64 {
	prompt := make([]int64, n)
	for i := range prompt {
		prompt[i] = int64(i*7919) % int64(benchLlamaConfig.Vocab)
	}
	return prompt
}
