package ir

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/dstune/dstune/onnx"
)

// TestNewModelShared imports a model whose weights (external data, large
// enough to be memory-mapped) are used in place: the parameter views the
// file's bytes, holds the same values as NewModel's copy, can be written
// (copy-on-write), and the file on disk never changes.
func TestNewModelShared(t *testing.T) {
	const n = 5 << 20 // 20 MiB of float32: above the reader's mapping threshold
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(math.Sin(float64(i)))
	}
	wt, err := onnx.FromFloat32s("w", []int64{n}, w)
	if err != nil {
		t.Fatal(err)
	}
	b := NewTensor(Int64, Shape{1})
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, n)}, []*onnx.Tensor{wt, initializer(t, "b", b)},
		[]*onnx.Node{node("Add", []string{"x", "w"}, []string{"y"})}, "y")
	dir := t.TempDir()
	path := filepath.Join(dir, "m.onnx")
	if err := onnx.WriteFile(path, m, onnx.WriteOptions{ExternalData: onnx.ExternalAlways}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path + ".data")
	if err != nil {
		t.Fatal(err)
	}
	om, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer om.Close()
	copied, err := NewModel(om)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := NewModelShared(om)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := om.Graph.Initializers[0].Bytes()
	if err != nil {
		t.Fatal(err)
	}
	sp, cp := shared.Param("w").Tensor, copied.Param("w").Tensor
	if unsafe.SliceData(sp.Bytes()) != unsafe.SliceData(raw) {
		t.Errorf("NewModelShared copied the weights")
	}
	if unsafe.SliceData(cp.Bytes()) == unsafe.SliceData(raw) {
		t.Errorf("NewModel shares the weights")
	}
	if !bytes.Equal(sp.Bytes(), cp.Bytes()) {
		t.Fatalf("shared and copied weights differ")
	}
	sp.Float32s()[7] = 42 // copy-on-write: this process only
	if cp.Float32s()[7] == 42 {
		t.Errorf("a write to the shared model reached NewModel's copy")
	}
	after, err := os.ReadFile(path + ".data")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("a write to a shared tensor changed the file")
	}
}
