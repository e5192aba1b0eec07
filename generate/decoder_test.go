package generate

import (
	"context"
	"path/filepath"
	"slices"
	"time"

	"github.com/dstune/dstune/internal/llamagen"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func loadModel(t testing.TB, path string) *ir.Model {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModelShared(m)
	if err != nil {
		t.Fatal(err)
	}
	return model
}

func storiesPath(t testing.TB, elem ...string) string {
	return sharedtest.Path(t, append([]string{"models", "stories260K"}, elem...)...)
}

// storiesGreedy reads the README's greedy tokens: BOS and the 40 tokens
// after it.
func storiesGreedy(t testing.TB) []int64 {
	ot, err := onnx.ReadTensorFile(storiesPath(t, "test_data_set_1", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := ir.TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	return x.Int64s()
}

func greedy(t testing.TB, d *Decoder, prompt []int64, n int) []int64 {
	t.Helper()
	res, err := Run(context.Background(), d, nil, Request{Prompt: prompt, MaxTokens: n}, func(Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res.Tokens
}

func TestStoriesGreedyEveryMode(t *testing.T) {
	model := loadModel(t, storiesPath(t, "stories260K.onnx"))
	want := storiesGreedy(t)
	for _, mode := range []Mode{Auto, OwnCache, Recompute} {
		d, err := New(model, Options{Mode: mode, Threads: 1})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		t.Logf("%s: %s, context %d", mode, d.Note(), d.Context())
		got := greedy(t, d, want[:1], len(want)-1)
		for i := range got {
			if got[i] != want[i+1] {
				t.Errorf("%s: token %d is %d, want %d (got %v)", mode, i, got[i], want[i+1], got)
				break
			}
		}
		d.Close()
	}
	_ = filepath.Join
}

func writeLlama(t testing.TB, c llamagen.Config) *ir.Model {
	t.Helper()
	dir := t.TempDir()
	if err := llamagen.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	return loadModel(t, filepath.Join(dir, "model.onnx"))
}

var smallLlama = llamagen.Config{Vocab: 61, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 40, Seed: 5}

func TestLlamagenVariants(t *testing.T) {
	prompt := []int64{1, 7, 19, 3, 44, 2, 9}
	for _, v := range []struct {
		name string
		edit func(*llamagen.Config)
		mode Mode
	}{
		{"plain", func(*llamagen.Config) {}, OwnCache},
		{"with past", func(c *llamagen.Config) { c.KVCache = true }, PastInputs},
		{"merged", func(c *llamagen.Config) { c.Merged = true }, PastInputs},
		{"float16", func(c *llamagen.Config) { c.DType = onnx.Float16 }, OwnCache},
		{"tied", func(c *llamagen.Config) { c.Tied = true }, OwnCache},
	} {
		c := smallLlama
		v.edit(&c)
		model := writeLlama(t, c)
		start := time.Now()
		d, err := New(model, Options{Threads: 1, Context: 128})
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		t.Logf("%s: %s (%v)", v.name, d.Note(), time.Since(start))
		if d.Mode() != v.mode {
			t.Errorf("%s: mode %s, want %s", v.name, d.Mode(), v.mode)
		}
		r, err := New(model, Options{Threads: 1, Context: 128, Mode: Recompute})
		if err != nil {
			t.Fatal(err)
		}
		got, want := greedy(t, d, prompt, 40), greedy(t, r, prompt, 40)
		if !slices.Equal(got, want) {
			t.Errorf("%s: greedy tokens\n%v, recomputing gives\n%v", v.name, got, want)
		}
	}
}

func TestDemoGPT(t *testing.T) {
	model := loadModel(t, "../demo/base.onnx")
	d, err := New(model, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, context %d", d.Note(), d.Context())
	r, err := New(model, Options{Threads: 1, Mode: Recompute})
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int64{'h', 'e', 'l', 'l', 'o', '<'}
	got, want := greedy(t, d, prompt, 10), greedy(t, r, prompt, 10)
	if !slices.Equal(got, want) {
		t.Errorf("greedy tokens %v, recomputing gives %v", got, want)
	}
	t.Logf("%v", got)
}
