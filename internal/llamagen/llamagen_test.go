package llamagen

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

var small = Config{Vocab: 50, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 24, Seed: 7}

func ints(dims []int64, v ...int64) *onnx.Tensor {
	t, err := onnx.FromInt64s("", dims, v)
	if err != nil {
		panic(err)
	}
	return t
}

func floats(t *testing.T, x *onnx.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func maxAbsDiff(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

func write(t *testing.T, c Config) string {
	t.Helper()
	dir := t.TempDir()
	if err := Write(dir, c); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "model.onnx")
}

// TestCacheConsistentInORT checks the generated graphs in onnxruntime: the
// decoder with past, given the presents of a prefix, computes the same
// logits for the next tokens as the decoder without a cache computes over
// the whole sequence — which only holds when masks, rotary positions,
// the cache's concatenation and grouped-query attention are all right.
func TestCacheConsistentInORT(t *testing.T) {
	ort.Need(t)
	plain := write(t, small)
	cached := small
	cached.KVCache = true
	withPast := write(t, cached)

	const batch, n, p = 2, 7, 4 // p tokens of prefix, n-p new ones
	tokens := []int64{3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38}
	full, err := ort.Run(plain, map[string]*onnx.Tensor{
		"input_ids":      ints([]int64{batch, n}, tokens...),
		"attention_mask": ints([]int64{batch, n}, ones(batch*n)...),
		"position_ids":   ints([]int64{batch, n}, positions(batch, 0, n)...),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The prefix through the cached decoder needs a past; give it one
	// masked-out slot so it has no effect, then drop it from the presents.
	prefixIn := map[string]*onnx.Tensor{
		"input_ids":      ints([]int64{batch, p}, append(append([]int64{}, tokens[:p]...), tokens[n:n+p]...)...),
		"attention_mask": ints([]int64{batch, p + 1}, maskWithHole(batch, p+1)...),
		"position_ids":   ints([]int64{batch, p}, positions(batch, 0, p)...),
	}
	hd := small.Dim / small.Heads
	for l := range small.Layers {
		for _, kind := range []string{"key", "value"} {
			z, _ := onnx.FromFloat32s("", []int64{batch, int64(small.KVHeads), 1, int64(hd)}, make([]float32, batch*small.KVHeads*hd))
			prefixIn[pastName(l, kind)] = z
		}
	}
	prefix, err := ort.Run(withPast, prefixIn)
	if err != nil {
		t.Fatal(err)
	}
	rest := map[string]*onnx.Tensor{
		"input_ids":      ints([]int64{batch, n - p}, append(append([]int64{}, tokens[p:n]...), tokens[n+p:]...)...),
		"attention_mask": ints([]int64{batch, n}, ones(batch*n)...),
		"position_ids":   ints([]int64{batch, n - p}, positions(batch, p, n)...),
	}
	for l := range small.Layers {
		for _, kind := range []string{"key", "value"} {
			present := prefix[presentName(l, kind)]
			v := floats(t, present) // [batch, kv, 1+p, hd]: drop slot 0
			var kept []float32
			for b := range batch * small.KVHeads {
				kept = append(kept, v[(b*(p+1)+1)*hd:(b+1)*(p+1)*hd]...)
			}
			pk, _ := onnx.FromFloat32s("", []int64{batch, int64(small.KVHeads), p, int64(hd)}, kept)
			rest[pastName(l, kind)] = pk
		}
	}
	next, err := ort.Run(withPast, rest)
	if err != nil {
		t.Fatal(err)
	}
	want := floats(t, full["logits"]) // [batch, n, vocab]
	got := floats(t, next["logits"])  // [batch, n-p, vocab]
	V := small.Vocab
	var wantTail []float32
	for b := range batch {
		wantTail = append(wantTail, want[(b*n+p)*V:(b+1)*n*V]...)
	}
	if d := maxAbsDiff(got, wantTail); d > 1e-5 {
		t.Errorf("logits with a cache differ from logits without by %g", d)
	}
}

func pastName(l int, kind string) string    { return "past_key_values." + itoa(l) + "." + kind }
func presentName(l int, kind string) string { return "present." + itoa(l) + "." + kind }
func itoa(i int) string                     { return string(rune('0' + i)) }

func ones(n int) []int64 {
	v := make([]int64, n)
	for i := range v {
		v[i] = 1
	}
	return v
}

func maskWithHole(batch, n int) []int64 {
	v := ones(batch * n)
	for b := range batch {
		v[b*n] = 0
	}
	return v
}

func positions(batch, from, to int) []int64 {
	var v []int64
	for range batch {
		for i := from; i < to; i++ {
			v = append(v, int64(i))
		}
	}
	return v
}

// TestParamsCount checks Config.Params against the initializers written.
func TestParamsCount(t *testing.T) {
	for _, c := range []Config{small, {Vocab: 7, Dim: 8, Layers: 1, Heads: 2, KVHeads: 1, Hidden: 5, Tied: true}} {
		m, err := onnx.ReadFile(write(t, c))
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, it := range m.Graph.Initializers {
			e, _ := it.NumElements()
			n += e
		}
		m.Close()
		if n != c.Params() {
			t.Errorf("%+v: %d parameters written, Params says %d", c, n, c.Params())
		}
	}
}
