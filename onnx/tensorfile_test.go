package onnx

import (
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteTensorFileRoundTrip(t *testing.T) {
	for _, src := range []*Tensor{
		{Name: "raw", DataType: Float, Dims: []int64{2, 2}, Raw: []byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64}, RawOffset: -1},
		{Name: "typed", DataType: Int64, Dims: []int64{3}, Int64Data: []int64{-1, 0, 1 << 40}, RawOffset: -1},
		{Name: "scalar", DataType: Bool, Dims: nil, Int32Data: []int32{1}, RawOffset: -1},
	} {
		path := filepath.Join(t.TempDir(), src.Name+".pb")
		if err := WriteTensorFile(path, src); err != nil {
			t.Fatal(err)
		}
		got, err := ReadTensorFile(path)
		if err != nil {
			t.Fatal(err)
		}
		a, err1 := got.Bytes()
		b, err2 := src.Bytes()
		if err1 != nil || err2 != nil || got.Name != src.Name || got.DataType != src.DataType || !slices.Equal(got.Dims, src.Dims) || string(a) != string(b) {
			t.Errorf("%s: read back %+v (%v %v)", src.Name, got, err1, err2)
		}
	}
}
