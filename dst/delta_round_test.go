package dst

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestApplyRawOverflowNamesElement: a value that overflows the tensor's
// half-precision type is an *OverflowError naming the tensor, the
// element's flat and multi-dimensional index, the value and what it
// rounds to, not the value's index in the delta (which, in a composed
// delta, is in no file); nothing is written.
func TestApplyRawOverflowNamesElement(t *testing.T) {
	for _, c := range []struct {
		dtype string
		value float32
		want  string
	}{
		{"F16", 70000, `tensor "w": element 7 [1,3]: value 70000 overflows float16 (rounds to +Inf; the largest finite float16 is 65504)`},
		{"BF16", -3.4e38, `tensor "w": element 7 [1,3]: value -3.4e+38 overflows bfloat16 (rounds to -Inf; the largest finite bfloat16 is 3.3895314e+38)`},
	} {
		td := TensorDelta{Name: "w", Dims: []int64{2, 4}, Indices: []int64{1, 7}, Values: []float32{1, c.value}}
		data := make([]byte, 8*2)
		err := td.ApplyRaw(c.dtype, data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to say %q", c.dtype, err, c.want)
		}
		var oe *OverflowError
		if !errors.As(err, &oe) {
			t.Errorf("%s: err is %T, want *OverflowError", c.dtype, err)
		} else if oe.Tensor != "w" || oe.Position != 7 || !slices.Equal(oe.Index, []int64{1, 3}) || oe.Entry != 1 ||
			oe.Value != float64(c.value) || !math.IsInf(oe.Result, int(math.Copysign(1, float64(c.value)))) || oe.DType != c.dtype {
			t.Errorf("%s: %+v", c.dtype, oe)
		}
		if slices.ContainsFunc(data, func(b byte) bool { return b != 0 }) {
			t.Errorf("%s: a failed ApplyRaw wrote into the tensor", c.dtype)
		}
	}
}

// TestF64ValuesRoundOnce: F64 values of a delta file reach a float64
// tensor exactly, and a float16, bfloat16 or float32 one rounded once
// from float64, also through Compose and back through a written file;
// rounding them to float32 first would lose 0.1's and 1/3's precision and
// break the near-ties the wrong way.
func TestF64ValuesRoundOnce(t *testing.T) {
	values := []float64{
		0.1, 1.0 / 3,
		1 + 0x1p-11 + 0x1p-40, // just above a float16 tie: 1+2⁻¹⁰ (float32 makes it the tie, which rounds to 1)
		1 + 0x1p-8 + 0x1p-40,  // just above a bfloat16 tie: 1+2⁻⁷
		-(0x1p-25 + 0x1p-60),  // just beyond half float16's smallest subnormal: -2⁻²⁴
	}
	file := deltaFile(t, map[string]string{"format_version": "1", "shapes": `{"w":[2,3]}`},
		named("w.indices", i32s(0, 1, 2, 3, 5)), named("w.values", f64s(values...)))
	d, err := DecodeDelta(file)
	if err != nil {
		t.Fatal(err)
	}
	other := &Delta{Tensors: []TensorDelta{{Name: "w", Dims: []int64{2, 3}, Indices: []int64{4}, Values: []float32{0.25}}}}
	composed, _, err := Compose([]*Delta{d, other}, false)
	if err != nil {
		t.Fatal(err)
	}
	rewritten, err := DecodeDelta(encodeDelta(t, d))
	if err != nil {
		t.Fatal(err)
	}
	at := []int{0, 1, 2, 3, 5}
	for name, delta := range map[string]*Delta{"read": d, "composed": composed, "written and read": rewritten} {
		td := &delta.Tensors[0]
		f64 := make([]byte, 6*8)
		if err := td.ApplyRaw("F64", f64); err != nil {
			t.Fatal(err)
		}
		f32 := make([]byte, 6*4)
		if err := td.ApplyRaw("F32", f32); err != nil {
			t.Fatal(err)
		}
		f16, bf16 := make([]byte, 6*2), make([]byte, 6*2)
		if err := td.ApplyRaw("F16", f16); err != nil {
			t.Fatal(err)
		}
		if err := td.ApplyRaw("BF16", bf16); err != nil {
			t.Fatal(err)
		}
		for k, v := range values {
			pos := at[k]
			if got := math.Float64frombits(binary.LittleEndian.Uint64(f64[8*pos:])); got != v {
				t.Errorf("%s: F64 element %d = %v, want %v", name, pos, got, v)
			}
			if got := math.Float32frombits(binary.LittleEndian.Uint32(f32[4*pos:])); got != float32(v) {
				t.Errorf("%s: F32 element %d = %v, want %v", name, pos, got, float32(v))
			}
			if got, want := binary.LittleEndian.Uint16(f16[2*pos:]), nearestHalf(v, float16Format); got != want {
				t.Errorf("%s: F16 element %d = %#04x (%v), want %#04x (%v) for %v", name, pos, got, float16ToFloat32(got), want, float16ToFloat32(want), v)
			}
			if got, want := binary.LittleEndian.Uint16(bf16[2*pos:]), nearestHalf(v, bfloat16Format); got != want {
				t.Errorf("%s: BF16 element %d = %#04x, want %#04x for %v", name, pos, got, want, v)
			}
		}
	}
	if composed.Tensors[0].Values64[4] != 0.25 {
		t.Errorf("composed: float64 value of the F32 part's entry = %v, want 0.25", composed.Tensors[0].Values64[4])
	}
}

// halfFormat describes float16 or bfloat16 for nearestHalf.
type halfFormat struct {
	bits     int     // significand bits, the implicit one included
	quantum  int     // exponent of the smallest subnormal
	maxValue float64 // largest finite value
	fromBits func(uint16) float64
	toBits   func(float32) uint16 // exact for values of the format
}

var (
	float16Format  = halfFormat{11, -24, 65504, func(h uint16) float64 { return float64(float16ToFloat32(h)) }, float32ToFloat16}
	bfloat16Format = halfFormat{8, -133, float64(math.Float32frombits(0x7f7f0000)),
		func(h uint16) float64 { return float64(math.Float32frombits(uint32(h) << 16)) }, float32ToBFloat16}
)

// nearestHalf rounds v to the format in float64 arithmetic alone, to
// nearest, ties to even: the reference for rounding once.
func nearestHalf(v float64, f halfFormat) uint16 {
	_, e := math.Frexp(v) // |v| in [2^(e−1), 2^e)
	q := max(e-f.bits, f.quantum)
	r := math.Ldexp(math.RoundToEven(math.Ldexp(v, -q)), q) // exact: a shift, then an integer
	if math.Abs(r) > f.maxValue {
		r = math.Copysign(math.Inf(1), v)
	}
	return f.toBits(float32(r))
}

// TestRoundToOddRoundsOnce: float16 and bfloat16 of float32RoundToOdd(v)
// are v rounded once to them, for random float64 values of every
// magnitude the formats hold and for values a hair off their ties.
func TestRoundToOddRoundsOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 4))
	for _, f := range []halfFormat{float16Format, bfloat16Format} {
		for i := range 200000 {
			var v float64
			switch i % 3 {
			case 0: // any magnitude from below the smallest subnormal to past the largest value
				v = math.Ldexp(1+rng.Float64(), f.quantum-3+rng.IntN(int(math.Log2(f.maxValue))-f.quantum+5))
			case 1, 2: // a tie between two neighbours of the format, nudged by far less than float32 resolves
				h := uint16(rng.IntN(0x7f00))
				lo, hi := f.fromBits(h), f.fromBits(h+1)
				nudge := math.Ldexp(lo+hi, -45)
				if i%3 == 1 {
					nudge = -nudge
				}
				v = (lo+hi)/2 + nudge
			}
			if rng.IntN(2) == 0 {
				v = -v
			}
			if math.IsInf(float64(float32(v)), 0) {
				continue // beyond float32: no delta value
			}
			got := f.toBits(float32RoundToOdd(v))
			if want := nearestHalf(v, f); got != want {
				t.Fatalf("%d-bit format: %v (%x) rounds to %#04x (%v), want %#04x (%v)", f.bits, v, math.Float64bits(v), got, f.fromBits(got), want, f.fromBits(want))
			}
		}
	}
}

// TestValuesFloat64MustAgree: Validate refuses float64 values that do
// not round to the float32 ones, or are not one per index.
func TestValuesFloat64MustAgree(t *testing.T) {
	td := TensorDelta{Name: "w", Dims: []int64{3}, Indices: []int64{0, 2}, Values: []float32{0.1, 2}, Values64: []float64{0.1, 2}}
	if err := (&Delta{Tensors: []TensorDelta{td}}).Validate(); err != nil {
		t.Fatal(err)
	}
	td.Values64 = []float64{0.1, 3}
	if err := (&Delta{Tensors: []TensorDelta{td}}).Validate(); err == nil || !strings.Contains(err.Error(), "value 1 (index 2)") {
		t.Errorf("disagreeing float64 value: err = %v", err)
	}
	td.Values64 = []float64{0.1}
	if err := (&Delta{Tensors: []TensorDelta{td}}).Validate(); err == nil || !strings.Contains(err.Error(), "1 float64 values for 2 indices") {
		t.Errorf("one float64 value for two indices: err = %v", err)
	}
	if err := td.ApplyRaw("F64", make([]byte, 24)); err == nil {
		t.Error("ApplyRaw with one float64 value for two indices: no error")
	}
}

// TestReadDeltaMissingFile: a delta that does not exist is named once,
// not as "delta open PATH".
func TestReadDeltaMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.safetensors")
	_, err := ReadDelta(path)
	if err == nil || err.Error() != "delta "+path+": no such file or directory" {
		t.Errorf("err = %v", err)
	}
}
