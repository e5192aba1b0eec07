package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/peft"
)

// TestOverlapKnownCase: per tensor and total |A∩B|/|A| on subsets counted
// by hand; the overlap is not symmetric.
func TestOverlapKnownCase(t *testing.T) {
	tmp := t.TempDir()
	hash := strings.Repeat("0f", 32)
	a := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash, Method: "dst"}, Tensors: []dst.TensorDelta{
		{Name: "w", Dims: []int64{4, 5}, Indices: []int64{0, 1, 2, 3}, Values: []float32{1, 1, 1, 1}},
		{Name: "b", Dims: []int64{5}, Indices: []int64{4}, Values: []float32{1}},
		{Name: "only_a", Dims: []int64{3}, Indices: []int64{0, 2}, Values: []float32{1, 1}},
	}}
	b := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash, Method: "dst"}, Tensors: []dst.TensorDelta{
		{Name: "w", Dims: []int64{4, 5}, Indices: []int64{2, 3, 4}, Values: []float32{2, 2, 2}},
		{Name: "b", Dims: []int64{5}, Indices: []int64{4}, Values: []float32{-1}},
		{Name: "only_b", Dims: []int64{2}, Indices: []int64{1}, Values: []float32{1}},
	}}
	pa, pb := writeDelta(t, tmp, "a.safetensors", a), writeDelta(t, tmp, "b.safetensors", b)
	// By hand: w: |A|=4, |B|=3, both {2,3} → 0.5; b: 1,1,1 → 1; only_a:
	// 2,0,0 → 0; only_b: 0,1,0 → undefined. Total: 7, 5, 3 → 3/7.
	type row struct {
		Tensor  string   `json:"tensor"`
		InA     int64    `json:"in_a"`
		InB     int64    `json:"in_b"`
		Both    int64    `json:"both"`
		Overlap *float64 `json:"overlap"`
	}
	var got struct {
		A, B     string
		SameBase bool `json:"same_base"`
		Tensors  []row
		Total    row
	}
	code, stdout, stderr := dstune("overlap", pa, pb, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, stdout)
	}
	f := func(v float64) *float64 { return &v }
	want := []row{{"b", 1, 1, 1, f(1)}, {"only_a", 2, 0, 0, f(0)}, {"only_b", 0, 1, 0, nil}, {"w", 4, 3, 2, f(0.5)}}
	if len(got.Tensors) != len(want) || got.A != pa || got.B != pb || !got.SameBase {
		t.Fatalf("got %+v", got)
	}
	same := func(x, y *float64) bool {
		return x == nil && y == nil || x != nil && y != nil && math.Abs(*x-*y) < 1e-15
	}
	for i, w := range want {
		g := got.Tensors[i]
		if g.Tensor != w.Tensor || g.InA != w.InA || g.InB != w.InB || g.Both != w.Both || !same(g.Overlap, w.Overlap) {
			t.Errorf("row %d: got %+v, want %+v", i, g, w)
		}
	}
	if g := got.Total; g.InA != 7 || g.InB != 5 || g.Both != 3 || !same(g.Overlap, f(3.0/7)) {
		t.Errorf("total %+v, want 7, 5, 3, 3/7", g)
	}

	// The text form, and B against A: 3/5.
	code, stdout, _ = dstune("overlap", pb, pa)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"total", "0.6000", "w ", "0.6667", "only_a", "-"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("B vs A lacks %q:\n%s", want, stdout)
		}
	}

	// Different base models: still computed, with a note.
	b.Meta.BaseSHA256 = strings.Repeat("1f", 32)
	pb2 := writeDelta(t, tmp, "b2.safetensors", b)
	if code, _, stderr := dstune("overlap", pa, pb2); code != 0 || !strings.Contains(stderr, "different") {
		t.Errorf("different bases: exit %d, %s", code, stderr)
	}
	// A tensor with other dims in B is an error naming it.
	b.Tensors[0].Dims = []int64{5, 4}
	pb3 := writeDelta(t, tmp, "b3.safetensors", b)
	if code, _, stderr := dstune("overlap", pa, pb3); code != 1 || !strings.Contains(stderr, `"w"`) {
		t.Errorf("mismatched dims: exit %d, %s", code, stderr)
	}
	if code, _, _ := dstune("overlap", pa); code != 2 {
		t.Errorf("one argument: exit %d, want 2", code)
	}
}

// TestOverlapRefusesAdapters: overlap compares the subsets DST chose; a
// LoRA adapter or a soft prompt is refused as such, not as a damaged
// delta, and a FIFO in place of a delta is refused, not waited on.
func TestOverlapRefusesAdapters(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	tmp := t.TempDir()
	lora, prompt := tinyGPTAdapters(t, model, tmp, func(*peft.LoRAModule) {}, func([]float32) {})
	for what, path := range map[string]string{"a LoRA adapter": lora, "a soft prompt": prompt} {
		code, _, stderr := dstune("overlap", path, path)
		if code != 2 || !strings.Contains(stderr, path+" is "+what+": overlap compares the subsets of DST deltas") {
			t.Errorf("overlap of %s: exit %d, %s", what, code, stderr)
		}
	}
	fifo := filepath.Join(tmp, "fifo.safetensors")
	if err := syscall.Mkfifo(fifo, 0o644); err == nil {
		if code, _, stderr := dstune("overlap", fifo, fifo); code != 1 || !strings.Contains(stderr, "not a regular file (a FIFO)") {
			t.Errorf("overlap of a FIFO: exit %d, %s", code, stderr)
		}
	}
}
