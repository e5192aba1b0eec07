package ir

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// One-node models run in onnxruntime and in dstune, as an independent
// reference for the data-movement and indexing ops.

// ortModel builds a model of one opset whose graph outputs declare their
// element types (onnxruntime wants them).
func ortModel(opset int64, inputs []*onnx.ValueInfo, nodes []*onnx.Node, outputs map[string]onnx.DataType) *onnx.Model {
	g := &onnx.Graph{Name: "test", Inputs: inputs, Nodes: nodes}
	names := make([]string, 0, len(outputs))
	for name := range outputs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		g.Outputs = append(g.Outputs, &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: outputs[name]}})
	}
	ir := int64(8)
	switch {
	case opset >= 23:
		ir = 11
	case opset >= 21:
		ir = 10
	case opset >= 19:
		ir = 9
	}
	return &onnx.Model{IRVersion: ir, OpsetImports: []onnx.OpsetID{{Version: opset}}, Graph: g}
}

// declareInput declares a graph input of x's type and shape.
func declareInput(name string, x *Tensor) *onnx.ValueInfo {
	dims := make([]any, len(x.shape))
	for i, d := range x.shape {
		dims[i] = d
	}
	return valueInfo(name, x.dtype.ONNX(), dims...)
}

// compareWithORT runs m on inputs in onnxruntime and in dstune (import,
// then Interpret; the inputs the import needs as values are bound as
// constants) and requires the same outputs: integers and bools exactly,
// floats to rtol.
func compareWithORT(t *testing.T, m *onnx.Model, inputs map[string]*Tensor, rtol float64) {
	t.Helper()
	ort.Need(t)
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := onnx.WriteFile(path, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	ortIn := map[string]*onnx.Tensor{}
	for name, x := range inputs {
		ot, err := TensorToONNX(name, x)
		if err != nil {
			t.Fatal(err)
		}
		ortIn[name] = ot
	}
	want, err := ort.Run(path, ortIn)
	if err != nil {
		t.Fatalf("onnxruntime: %v", err)
	}
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	static := model.ValueInputs()
	b := Bindings{Shapes: map[string]Shape{}, Values: map[string]*Tensor{}}
	fed := map[string]*Tensor{}
	for name, x := range inputs {
		if slices.Contains(static, name) {
			b.Values[name] = x
		} else {
			b.Shapes[name] = x.shape
			fed[name] = x
		}
	}
	g, err := model.Specialize(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Interpret(g, fed)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range model.Outputs {
		w, err := TensorFromONNX(want[name])
		if err != nil {
			t.Fatal(err)
		}
		if d := Compare(got[name], w, rtol, 0); !d.OK() {
			t.Errorf("output %s: %v (first off at %d)\ngot  %v\nwant %v", name, d, d.FirstOff, elements(got[name]), elements(w))
		}
	}
}

// elements lists up to 64 elements of t as float64, for messages.
func elements(t *Tensor) []float64 {
	out := make([]float64, min(t.Len(), 64))
	for i := range out {
		out[i] = t.Float64At(i)
	}
	return out
}
