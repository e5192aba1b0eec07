package generate

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/llamagen"
)

// BenchmarkDecode measures generation with each mode: the prompt (BOS)
// then n tokens greedily; ns/op is per generated token.
//
//	go test ./generate -run '^$' -bench Decode -benchtime 3x
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
