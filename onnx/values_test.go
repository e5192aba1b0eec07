package onnx

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

// halfReference decodes binary16 bits from the IEEE 754 definition in
// float64 arithmetic: (-1)^s · 2^(e-15) · (1 + m/1024), subnormals
// 2^-14 · m/1024.
func halfReference(h uint16) float64 {
	s := 1.0
	if h&0x8000 != 0 {
		s = -1
	}
	e := int(h>>10) & 0x1f
	m := float64(h & 0x3ff)
	switch e {
	case 0:
		return s * math.Ldexp(m/1024, -14)
	case 0x1f:
		if m != 0 {
			return math.NaN()
		}
		return s * math.Inf(1)
	}
	return s * math.Ldexp(1+m/1024, e-15)
}

func TestHalfConversionsExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := HalfToFloat32(h)
		want := halfReference(h)
		if math.IsNaN(want) {
			if !math.IsNaN(float64(f)) {
				t.Fatalf("HalfToFloat32(%#04x) = %v, want NaN", h, f)
			}
			if back := Float32ToHalf(f); back&0x7c00 != 0x7c00 || back&0x3ff == 0 || back&0x8000 != h&0x8000 {
				t.Fatalf("Float32ToHalf(NaN from %#04x) = %#04x, not a NaN of the same sign", h, back)
			}
			continue
		}
		if float64(f) != want || math.Signbit(float64(f)) != math.Signbit(want) {
			t.Fatalf("HalfToFloat32(%#04x) = %v, want %v", h, f, want)
		}
		if back := Float32ToHalf(f); back != h {
			t.Fatalf("Float32ToHalf(%v) = %#04x, want %#04x", f, back, h)
		}
	}
}

// TestFloat32ToHalfRounding checks round-to-nearest-even against a float64
// reference: for every pair of adjacent finite halves, values just below,
// at and just above the midpoint round to the nearer (even on ties).
func TestFloat32ToHalfRounding(t *testing.T) {
	for i := 0; i < 0x7bff; i++ {
		lo, hi := uint16(i), uint16(i+1)
		a, b := halfReference(lo), halfReference(hi)
		mid := (a + b) / 2 // exact in float64, and representable in float32 here
		even := lo
		if lo&1 == 1 {
			even = hi
		}
		for _, sign := range []uint16{0, 0x8000} {
			s := 1.0
			if sign != 0 {
				s = -1
			}
			if got := Float32ToHalf(float32(s * mid)); got != even|sign {
				t.Fatalf("Float32ToHalf(%v) = %#04x, want %#04x (tie to even)", s*mid, got, even|sign)
			}
			below := math.Nextafter32(float32(mid), float32(a))
			above := math.Nextafter32(float32(mid), float32(b))
			if got := Float32ToHalf(float32(s) * below); got != lo|sign {
				t.Fatalf("Float32ToHalf(%v) = %#04x, want %#04x", s*float64(below), got, lo|sign)
			}
			if got := Float32ToHalf(float32(s) * above); got != hi|sign {
				t.Fatalf("Float32ToHalf(%v) = %#04x, want %#04x", s*float64(above), got, hi|sign)
			}
		}
	}
	// Overflow: at or past the midpoint between 65504 and 65536 → Inf.
	for _, f := range []float32{65520, 1e6, float32(math.Inf(1))} {
		if got := Float32ToHalf(f); got != 0x7c00 {
			t.Errorf("Float32ToHalf(%v) = %#04x, want +Inf", f, got)
		}
	}
	if got := Float32ToHalf(65519.99); got != 0x7bff {
		t.Errorf("Float32ToHalf(65519.99) = %#04x, want 65504", got)
	}
	// Underflow: half the smallest subnormal ties to zero, above it rounds up.
	tiny := float32(math.Ldexp(1, -25))
	if got := Float32ToHalf(tiny); got != 0 {
		t.Errorf("Float32ToHalf(2^-25) = %#04x, want 0", got)
	}
	if got := Float32ToHalf(math.Nextafter32(tiny, 1)); got != 1 {
		t.Errorf("Float32ToHalf(just above 2^-25) = %#04x, want 1", got)
	}
}

func TestBFloat16Conversions(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BFloat16ToFloat32(h)
		want := math.Float32frombits(uint32(h) << 16)
		if math.Float32bits(f) != math.Float32bits(want) {
			t.Fatalf("BFloat16ToFloat32(%#04x) = %v", h, f)
		}
		if f != f {
			if back := Float32ToBFloat16(f); back&0x7f80 != 0x7f80 || back&0x7f == 0 {
				t.Fatalf("Float32ToBFloat16(NaN) = %#04x", back)
			}
			continue
		}
		if back := Float32ToBFloat16(f); back != h {
			t.Fatalf("Float32ToBFloat16(%v) = %#04x, want %#04x", f, back, h)
		}
	}
	// Ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
	if got := Float32ToBFloat16(1 + 1.0/256); got != 0x3f80 {
		t.Errorf("tie below: %#04x", got)
	}
	if got := Float32ToBFloat16(1 + 3.0/256); got != 0x3f82 {
		t.Errorf("tie above: %#04x", got)
	}
}

// TestTypedAndRawAgree: a tensor stored in a typed field and the same
// values stored as raw_data give the same Bytes and the same converted
// values, for every supported data type.
func TestTypedAndRawAgree(t *testing.T) {
	le := binary.LittleEndian
	for _, test := range []struct {
		typed *Tensor
		raw   []byte
		want  []float64
	}{
		{&Tensor{DataType: Float, FloatData: []float32{1.5, -2, 0}}, le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-2)), 0), []float64{1.5, -2, 0}},
		{&Tensor{DataType: Double, DoubleData: []float64{0.1, -3}}, le.AppendUint64(le.AppendUint64(nil, math.Float64bits(0.1)), math.Float64bits(-3)), []float64{0.1, -3}},
		{&Tensor{DataType: Float16, Int32Data: []int32{0x3c00, 0xc000}}, []byte{0x00, 0x3c, 0x00, 0xc0}, []float64{1, -2}},
		{&Tensor{DataType: BFloat16, Int32Data: []int32{0x3f80, 0x4040}}, []byte{0x80, 0x3f, 0x40, 0x40}, []float64{1, 3}},
		{&Tensor{DataType: Int8, Int32Data: []int32{-1, 127, -128}}, []byte{0xff, 0x7f, 0x80}, []float64{-1, 127, -128}},
		{&Tensor{DataType: Uint8, Int32Data: []int32{255, 0}}, []byte{0xff, 0}, []float64{255, 0}},
		{&Tensor{DataType: Int16, Int32Data: []int32{-2, 300}}, []byte{0xfe, 0xff, 0x2c, 0x01}, []float64{-2, 300}},
		{&Tensor{DataType: Int32, Int32Data: []int32{-5}}, []byte{0xfb, 0xff, 0xff, 0xff}, []float64{-5}},
		{&Tensor{DataType: Int64, Int64Data: []int64{-7, 1 << 40}}, le.AppendUint64(le.AppendUint64(nil, uint64(1<<64-7)), 1<<40), []float64{-7, 1 << 40}},
		{&Tensor{DataType: Bool, Int32Data: []int32{1, 0, 1}}, []byte{1, 0, 1}, []float64{1, 0, 1}},
	} {
		dt := test.typed.DataType
		test.typed.Dims = []int64{int64(len(test.want))}
		test.typed.RawOffset = -1
		raw, err := NewTensor("r", dt, test.typed.Dims, test.raw)
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		got, err := test.typed.Bytes()
		if err != nil || string(got) != string(test.raw) {
			t.Errorf("%s: Bytes() = %x, %v, want %x", dt, got, err, test.raw)
		}
		for _, tensor := range []*Tensor{test.typed, raw} {
			var vals []float64
			if dt.IsFloat() {
				vals, err = tensor.Float64s()
			} else {
				var ints []int64
				ints, err = tensor.Int64s()
				for _, v := range ints {
					vals = append(vals, float64(v))
				}
			}
			if err != nil || !slices.Equal(vals, test.want) {
				t.Errorf("%s: values %v, %v, want %v", dt, vals, err, test.want)
			}
		}
	}
	if _, err := (&Tensor{DataType: Float8E4M3FN, Dims: []int64{1}, Raw: []byte{1}}).Float32s(); !errors.Is(err, ErrNotSupported) {
		t.Errorf("float8 to float32: got %v, want ErrNotSupported", err)
	}
	if _, err := NewTensor("bad", Float, []int64{2}, make([]byte, 4)); err == nil {
		t.Error("NewTensor accepted 4 bytes for 2 floats")
	}
}

func TestDataTypeSizes(t *testing.T) {
	for dt, want := range map[DataType]int{Float: 4, Double: 8, Float16: 2, BFloat16: 2, Int8: 1, Uint8: 1, Bool: 1, Int16: 2, Int32: 4, Int64: 8, Complex128: 16, String: 0, Int4: 0, Undefined: 0} {
		if got := dt.Size(); got != want {
			t.Errorf("%s.Size() = %d, want %d", dt, got, want)
		}
	}
	n, err := (&Tensor{DataType: Int4, Dims: []int64{3, 3}}).ByteSize()
	if err != nil || n != 5 {
		t.Errorf("int4 [3,3] ByteSize = %d, %v, want 5", n, err)
	}
	if DataType(99).String() != "DataType(99)" || Float16.String() != "FLOAT16" {
		t.Error("DataType.String")
	}
	for _, dt := range []DataType{Float, Float16, BFloat16, Double, Int8, Int16, Int32, Int64, Uint8, Bool} {
		if !dt.Supported() {
			t.Errorf("%s not supported", dt)
		}
	}
	if n, err := numElements(nil); n != 1 || err != nil {
		t.Errorf("scalar has %d elements, %v", n, err)
	}
	if n, err := numElements([]int64{1 << 62, 0, 1 << 62}); n != 0 || err != nil {
		t.Errorf("a zero dimension gives %d, %v", n, err)
	}
	if _, err := numElements([]int64{1 << 32, 1 << 31}); err == nil {
		t.Error("2^63 elements accepted")
	}
}

func TestAttributeGetters(t *testing.T) {
	n := &Node{Name: "n", OpType: "Op", Attributes: []*Attribute{
		{Name: "axis", Type: AttrInt, I: -1},
		{Name: "alpha", Type: AttrFloat, F: 0.5},
		{Name: "mode", Type: AttrString, S: []byte("constant")},
		{Name: "perm", Type: AttrInts, Ints: []int64{1, 0}},
		{Name: "scales", Type: AttrFloats, Floats: []float32{2}},
	}}
	if v, err := n.AttrInt("axis", 0); v != -1 || err != nil {
		t.Errorf("axis = %d, %v", v, err)
	}
	if v, err := n.AttrInt("missing", 7); v != 7 || err != nil {
		t.Errorf("missing = %d, %v", v, err)
	}
	if v, err := n.AttrFloat("alpha", 0); v != 0.5 || err != nil {
		t.Errorf("alpha = %v, %v", v, err)
	}
	if v, err := n.AttrString("mode", ""); v != "constant" || err != nil {
		t.Errorf("mode = %q, %v", v, err)
	}
	if v, err := n.AttrInts("perm", nil); !slices.Equal(v, []int64{1, 0}) || err != nil {
		t.Errorf("perm = %v, %v", v, err)
	}
	if v, err := n.AttrFloats("scales", nil); !slices.Equal(v, []float32{2}) || err != nil {
		t.Errorf("scales = %v, %v", v, err)
	}
	if _, err := n.AttrInt("perm", 0); err == nil || !strings.Contains(err.Error(), `attribute "perm": type INTS, want INT`) {
		t.Errorf("wrong type: %v", err)
	}
	m := &Model{OpsetImports: []OpsetID{{Domain: "ai.onnx", Version: 13}, {Domain: "com.microsoft", Version: 1}}}
	if m.Opset("") != 13 || m.Opset("com.microsoft") != 1 || m.Opset("x") != 0 {
		t.Error("Opset")
	}
}
