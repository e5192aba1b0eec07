package ir

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"unsafe"

	"github.com/dstune/dstune/onnx"
)

func TestTensorFromONNXRepresentations(t *testing.T) {
	raw := make([]byte, 12)
	for i, v := range []float32{1.5, -2, 3.25} {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	fromRaw, err := TensorFromONNX(&onnx.Tensor{Name: "a", DataType: onnx.Float, Dims: []int64{3}, Raw: raw})
	if err != nil {
		t.Fatal(err)
	}
	fromTyped, err := TensorFromONNX(&onnx.Tensor{Name: "a", DataType: onnx.Float, Dims: []int64{3}, FloatData: []float32{1.5, -2, 3.25}})
	if err != nil {
		t.Fatal(err)
	}
	if !fromRaw.Shape().Equal(Shape{3}) || string(fromRaw.Bytes()) != string(fromTyped.Bytes()) {
		t.Errorf("raw %v and typed %v differ", fromRaw.Float32s(), fromTyped.Float32s())
	}
	if addr := &fromRaw.Bytes()[0]; uintptr(unsafe.Pointer(addr))%64 != 0 {
		t.Error("tensor storage not 64-byte aligned")
	}

	// Typed fields of the narrow types hold one element per int32.
	h, err := TensorFromONNX(&onnx.Tensor{Name: "h", DataType: onnx.Float16, Dims: []int64{2}, Int32Data: []int32{int32(Float32ToFloat16(0.5)), int32(Float32ToFloat16(-3))}})
	if err != nil {
		t.Fatal(err)
	}
	if h.Float64At(0) != 0.5 || h.Float64At(1) != -3 {
		t.Errorf("float16 from int32_data: %v %v", h.Float64At(0), h.Float64At(1))
	}
	b, err := TensorFromONNX(&onnx.Tensor{Name: "b", DataType: onnx.Bool, Dims: []int64{3}, Raw: []byte{0, 7, 1}})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Bools(); got[0] || !got[1] || !got[2] || b.Bytes()[1] != 1 {
		t.Errorf("bools %v (bytes %v): want normalized 0/1", got, b.Bytes())
	}
	// int4: two per byte, low nibble first, sign-extended; odd count.
	i4, err := TensorFromONNX(&onnx.Tensor{Name: "i4", DataType: onnx.Int4, Dims: []int64{3}, Raw: []byte{0x8f, 0x07}})
	if err != nil {
		t.Fatal(err)
	}
	if got := i4.Int8s(); got[0] != -1 || got[1] != -8 || got[2] != 7 {
		t.Errorf("int4 %v, want [-1 -8 7]", got)
	}
	back, err := TensorToONNX("i4", i4)
	if err != nil {
		t.Fatal(err)
	}
	if string(back.Raw) != "\x8f\x07" {
		t.Errorf("int4 packs back to %x", back.Raw)
	}
}

func TestTensorFromONNXRejectsBadData(t *testing.T) {
	for _, tc := range []struct {
		t    *onnx.Tensor
		want string
	}{
		{&onnx.Tensor{Name: "short", DataType: onnx.Float, Dims: []int64{4}, Raw: make([]byte, 12)}, `tensor "short": 12 bytes of data for float32[4], want 16`},
		{&onnx.Tensor{Name: "huge", DataType: onnx.Float, Dims: []int64{1 << 40, 1 << 20}, Raw: make([]byte, 8)}, `tensor "huge"`},
		{&onnx.Tensor{Name: "neg", DataType: onnx.Float, Dims: []int64{-1}, Raw: nil}, `negative dimension`},
		{&onnx.Tensor{Name: "s", DataType: onnx.String, Dims: []int64{2}, StringData: [][]byte{[]byte("x")}}, `1 strings for string[2], want 2`},
		{&onnx.Tensor{Name: "c", DataType: onnx.Complex64, Dims: []int64{1}, FloatData: []float32{1, 2}}, `COMPLEX64 tensors are not supported`},
	} {
		_, err := TensorFromONNX(tc.t)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.t.Name, err, tc.want)
		}
	}
}

func TestTensorToONNXRoundTrip(t *testing.T) {
	for dt := Float32; dt < numDTypes; dt++ {
		x := NewTensor(dt, Shape{2, 3})
		for i := range x.data {
			x.data[i] = byte(i*29 + 3)
		}
		if dt == Bool {
			for i := range x.data {
				x.data[i] &= 1
			}
		}
		switch dt { // keep sub-byte values in range
		case Int4:
			for i := range x.data {
				x.data[i] = byte(int8(x.data[i]<<4) >> 4)
			}
		case Uint4, Float4E2M1:
			for i := range x.data {
				x.data[i] &= 0xf
			}
		case Int2:
			for i := range x.data {
				x.data[i] = byte(int8(x.data[i]<<6) >> 6)
			}
		case Uint2:
			for i := range x.data {
				x.data[i] &= 3
			}
		}
		o, err := TensorToONNX("x", x)
		if err != nil {
			t.Fatalf("%v: %v", dt, err)
		}
		y, err := TensorFromONNX(o)
		if err != nil {
			t.Fatalf("%v: %v", dt, err)
		}
		if y.DType() != dt || string(y.Bytes()) != string(x.Bytes()) {
			t.Errorf("%v: round trip changed the tensor: %v -> %v", dt, x.Bytes(), y.Bytes())
		}
	}
}

func TestBroadcastShapes(t *testing.T) {
	for _, tc := range []struct {
		a, b, want Shape
	}{
		{Shape{2, 3}, Shape{3}, Shape{2, 3}},
		{Shape{2, 1, 4}, Shape{3, 1}, Shape{2, 3, 4}},
		{Shape{}, Shape{5}, Shape{5}},
		{Shape{0, 1}, Shape{1, 3}, Shape{0, 3}},
	} {
		got, err := BroadcastShapes(tc.a, tc.b)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%v, %v: got %v %v, want %v", tc.a, tc.b, got, err, tc.want)
		}
	}
	if _, err := BroadcastShapes(Shape{2, 3}, Shape{4}); err == nil {
		t.Error("[2,3] and [4] broadcast")
	}
	// Runs merge contiguous dimensions: [2,3,4] + [4] is 6 runs of 4.
	l := NewRunLayout(Shape{2, 3, 4}, Shape{2, 3, 4}, Shape{4})
	if l.Inner != 4 || l.Runs() != 6 || l.Step[0] != 1 || l.Step[1] != 1 {
		t.Errorf("layout %+v", l)
	}
	l = NewRunLayout(Shape{2, 3, 4}, Shape{2, 3, 4}, Shape{2, 3, 4})
	if l.Inner != 24 || l.Runs() != 1 {
		t.Errorf("same-shape layout not merged: %+v", l)
	}
}

func TestCompare(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	a := FromFloat32s(Shape{4}, []float32{1, nan, inf, 100})
	b := FromFloat32s(Shape{4}, []float32{1.00001, nan, inf, 100.05})
	if d := Compare(a, b, 1e-3, 0); !d.OK() {
		t.Errorf("within tolerance: %v", d)
	}
	if d := Compare(a, b, 1e-4, 0); d.OK() || d.Off != 1 || d.FirstOff != 3 {
		t.Errorf("100 vs 100.05 at rtol 1e-4: %+v", d)
	}
	c := FromFloat32s(Shape{4}, []float32{1, 0, inf, 100})
	if d := Compare(a, c, 1, 1); d.Off != 1 {
		t.Errorf("NaN vs 0 must be off: %+v", d)
	}
	if d := Compare(FromInt64s(Shape{2}, []int64{1, 2}), FromInt64s(Shape{2}, []int64{1, 3}), 1, 1); d.Off != 1 {
		t.Errorf("integers compare exactly: %+v", d)
	}
	if d := Compare(a, FromFloat32s(Shape{2, 2}, make([]float32, 4)), 1, 1); d.Mismatch == "" {
		t.Error("shape mismatch not reported")
	}
	// The distance of integers is exact, where float64 would lose it.
	u := func(v ...uint64) *Tensor {
		t := NewTensor(Uint64, Shape{len(v)})
		copy(t.Uint64s(), v)
		return t
	}
	if d := Compare(u(math.MaxUint64, 7), u(math.MaxUint64-1, 7), 0, 0); d.Off != 1 || d.MaxAbs != 1 {
		t.Errorf("2⁶⁴−1 vs 2⁶⁴−2: %+v, want 1 off by 1", d)
	}
	if d := Compare(FromInt64s(Shape{1}, []int64{math.MinInt64}), FromInt64s(Shape{1}, []int64{math.MaxInt64}), 0, 0); d.MaxAbs != math.MaxUint64 {
		t.Errorf("MinInt64 vs MaxInt64: %+v, want max abs 2⁶⁴−1", d)
	}
	i8 := func(v int8) *Tensor {
		t := NewTensor(Int8, Shape{1})
		t.data[0] = byte(v)
		return t
	}
	if d := Compare(i8(-128), i8(127), 0, 0); d.MaxAbs != 255 {
		t.Errorf("int8 -128 vs 127: %+v, want max abs 255", d)
	}
}
