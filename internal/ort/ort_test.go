package ort

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// TestRunReproducesReferences: onnxruntime, driven through Run, reproduces
// the PyTorch reference outputs of the tiny models (their README reports
// max abs error 2e-6).
func TestRunReproducesReferences(t *testing.T) {
	Need(t)
	t.Logf("onnxruntime %s", Version())
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		dir := sharedtest.Path(t, "models", name)
		for set := 0; set < 2; set++ {
			setDir := filepath.Join(dir, fmt.Sprintf("test_data_set_%d", set))
			in, err := onnx.ReadTensorFile(filepath.Join(setDir, "input_0.pb"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := onnx.ReadTensorFile(filepath.Join(setDir, "output_0.pb"))
			if err != nil {
				t.Fatal(err)
			}
			out, err := Run(filepath.Join(dir, "model.onnx"), map[string]*onnx.Tensor{"tokens": in})
			if err != nil {
				t.Fatal(err)
			}
			got := out["logits"]
			if got == nil {
				t.Fatalf("%s: no logits output", name)
			}
			if fmt.Sprint(got.Dims) != fmt.Sprint(want.Dims) {
				t.Fatalf("%s set %d: dims %v, want %v", name, set, got.Dims, want.Dims)
			}
			g, _ := got.Float32s()
			w, _ := want.Float32s()
			for i := range w {
				if d := math.Abs(float64(g[i] - w[i])); d > 1e-5+1e-4*math.Abs(float64(w[i])) {
					t.Fatalf("%s set %d: logits[%d] = %v, reference %v", name, set, i, g[i], w[i])
				}
			}
		}
	}
}

// TestRunWithoutInputs: a graph that computes its outputs from
// initializers alone runs (onnxruntime_go itself cannot run a session
// without inputs), and a graph without outputs is refused with an error.
func TestRunWithoutInputs(t *testing.T) {
	Need(t)
	a, err := onnx.FromFloat32s("a", []int64{3}, []float32{1, -2, 0.5})
	if err != nil {
		t.Fatal(err)
	}
	m := &onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 13}}, Graph: &onnx.Graph{
		Name:         "no_inputs",
		Initializers: []*onnx.Tensor{a},
		Nodes:        []*onnx.Node{{OpType: "Neg", Inputs: []string{"a"}, Outputs: []string{"y"}}},
		Outputs:      []*onnx.ValueInfo{{Name: "y", Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Float}}},
	}}
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := onnx.WriteFile(path, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := Run(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out["y"] == nil || len(out) != 1 {
		t.Fatalf("outputs %v, want y only", out)
	}
	if y, _ := out["y"].Float32s(); fmt.Sprint(y) != "[-1 2 -0.5]" {
		t.Errorf("y = %v, want [-1 2 -0.5]", y)
	}

	m.Graph.Outputs = nil
	if err := onnx.WriteFile(path, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(path, nil); err == nil {
		t.Error("a graph without outputs ran")
	}
}
