// Package models reads the shared test data's models and tensors for
// tests (package sharedtest finds the data; this package, which imports
// ir and onnx, decodes it).
package models

import (
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// ReadTensor reads a serialized TensorProto (the ONNX test layout's
// input_N.pb, output_N.pb) as an ir.Tensor.
func ReadTensor(t testing.TB, path string) *ir.Tensor {
	t.Helper()
	ot, err := onnx.ReadTensorFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ir.TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// Read reads and imports an ONNX model; the file is closed when the test
// ends.
func Read(t testing.TB, path string) *ir.Model {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return model
}

// Specialize reads the shared test data's model at rel (e.g.
// "models/tiny_gpt/model.onnx") and specializes it for the given input
// shapes.
func Specialize(t testing.TB, rel string, shapes map[string]ir.Shape) *ir.Graph {
	t.Helper()
	g, err := Read(t, sharedtest.Path(t, strings.Split(rel, "/")...)).Specialize(ir.Bindings{Shapes: shapes})
	if err != nil {
		t.Fatal(err)
	}
	return g
}
