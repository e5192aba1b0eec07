package tpu

import (
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func readTensor(t testing.TB, path string) *ir.Tensor {
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

// loadModel specializes a model from ../shared/testdata/models for the
// given input shapes.
func loadModel(t testing.TB, rel string, shapes map[string]ir.Shape) *ir.Graph {
	t.Helper()
	path := sharedtest.Path(t, strings.Split(rel, "/")...)
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.Specialize(ir.Bindings{Shapes: shapes})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// allSilos is one DST silo per parameter of tg (module-layer), in order.
func allSilos(tg *ir.Graph) [][]string {
	var s [][]string
	for _, p := range tg.Params {
		s = append(s, []string{p.Name})
	}
	return s
}
