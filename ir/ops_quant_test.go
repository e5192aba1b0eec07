package ir

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// unravel and ravel convert between flat indices and positions.
func unravel(i int, s Shape) []int {
	pos := make([]int, len(s))
	for d := len(s) - 1; d >= 0; d-- {
		pos[d] = i % s[d]
		i /= s[d]
	}
	return pos
}

func ravel(pos []int, s Shape) int {
	i := 0
	for d := range s {
		i = i*s[d] + pos[d]
	}
	return i
}

// refScaleIndex is the scale element covering element i of x, written
// from the ONNX definition: one scale, one per index of axis, or the
// element's position with its axis coordinate divided by block.
func refScaleIndex(i int, x, scale Shape, axis, block int) int {
	if scale.Size() == 1 {
		return 0
	}
	pos := unravel(i, x)
	if block == 0 {
		return pos[axis]
	}
	pos[axis] /= block
	return ravel(pos, scale)
}

// refQuantize is QuantizeLinear to an integer type in float64, with the
// division rounded to float32.
func refQuantize(x, scale, zp *Tensor, axis, block int, to DType) []int64 {
	lo, hi := intRange(to)
	out := make([]int64, x.Len())
	for i := range out {
		s := refScaleIndex(i, x.Shape(), scale.Shape(), axis, block)
		q := float64(float32(x.Float64At(i)) / float32(scale.Float64At(s)))
		z := 0.0
		if zp != nil {
			z = zp.Float64At(s)
		}
		out[i] = int64(math.Max(lo, math.Min(hi, math.RoundToEven(q)+z)))
	}
	return out
}

func TestQuantizeLinearLayouts(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		name        string
		x, scale    Shape
		axis, block int
		to          DType
	}{
		{"per tensor", Shape{3, 4}, Shape{}, 1, 0, Uint8},
		{"per tensor [1]", Shape{5}, Shape{1}, 1, 0, Int8},
		{"per axis 0", Shape{3, 4, 2}, Shape{3}, 0, 0, Int16},
		{"per axis -1", Shape{3, 4, 2}, Shape{2}, -1, 0, Uint16},
		{"blocked exact", Shape{2, 6}, Shape{2, 3}, 1, 2, Int4},
		{"blocked remainder", Shape{2, 7, 3}, Shape{2, 3, 3}, 1, 3, Uint4},
		{"blocked axis 0", Shape{5, 2}, Shape{2, 2}, 0, 4, Int2},
		{"blocked size 1", Shape{3, 2}, Shape{3, 2}, 0, 1, Uint2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := randTensor(rng, Float32, c.x, -40, 40)
			scale := randTensor(rng, Float32, c.scale, 0.5, 4)
			lo, hi := intRange(c.to)
			zp := randTensor(rng, c.to, c.scale, lo, hi+1)
			attrs := []*onnx.Attribute{intAttr("axis", int64(c.axis)), intAttr("block_size", int64(c.block))}
			axis, _ := normAxis(c.axis, len(c.x))
			for _, withZP := range []bool{true, false} {
				in := []*Tensor{x, scale, zp}
				want := refQuantize(x, scale, zp, axis, c.block, c.to)
				a := attrs
				if !withZP {
					in = in[:2]
					a = append(a, intAttr("output_dtype", int64(c.to.ONNX())))
					want = refQuantize(x, scale, nil, axis, c.block, c.to)
				}
				got, err := runNode(t, 25, "QuantizeLinear", 1, a, in...)
				if err != nil {
					t.Fatal(err)
				}
				if got[0].DType() != c.to || !got[0].Shape().Equal(c.x) {
					t.Fatalf("output %v, want %s%v", got[0], c.to, c.x)
				}
				for i, w := range want {
					if g := got[0].Int64At(i); g != w {
						t.Fatalf("zero point %v: element %d (x %v): got %d, want %d", withZP, i, x.Float64At(i), g, w)
					}
				}
			}
		})
	}
}

// TestQuantizeLinearRounding: ties round to even, and every integer type
// saturates at its own range (the sub-byte ones too, not wrapping).
func TestQuantizeLinearRounding(t *testing.T) {
	x := FromFloat32s(Shape{8}, []float32{1, 3, 5, -1, -3, 1e9, -1e9, float32(math.NaN())})
	for _, to := range []DType{Int8, Uint8, Int16, Uint16, Int4, Uint4, Int2, Uint2} {
		zp := NewTensor(to, nil)
		if !to.IsSigned() {
			storeInt(zp, 0, 1, true, RoundUp)
		}
		got, err := runNode(t, 25, "QuantizeLinear", 1, nil, x, ScalarFloat32(2), zp)
		if err != nil {
			t.Fatal(err)
		}
		lo, hi := intRange(to)
		z := zp.Float64At(0)
		// x/2 = 0.5, 1.5, 2.5, -0.5, -1.5: half to even gives 0, 2, 2, -0, -2.
		want := []float64{0, 2, 2, 0, -2, hi, lo, 0}
		for i, w := range want {
			if i < 5 {
				w = math.Max(lo, math.Min(hi, w+z))
			} else if i == 7 {
				w = z // NaN quantizes to the zero point
			}
			if g := got[0].Float64At(i); g != w {
				t.Errorf("%s: x %v: got %v, want %v", to, x.Float64At(i), g, w)
			}
		}
	}
}

func TestQuantizeLinearFloat8(t *testing.T) {
	x := FromFloat32s(Shape{5}, []float32{0.3, -7, 1000, -1e6, float32(math.Inf(1))})
	for _, c := range []struct {
		to       DType
		saturate int64
	}{
		{Float8E4M3FN, 1}, {Float8E4M3FN, 0}, {Float8E5M2, 1}, {Float8E5M2, 0},
		{Float8E4M3FNUZ, 1}, {Float8E5M2FNUZ, 0}, {Float4E2M1, 1},
	} {
		attrs := []*onnx.Attribute{intAttr("saturate", c.saturate), intAttr("output_dtype", int64(c.to.ONNX()))}
		got, err := runNode(t, 25, "QuantizeLinear", 1, attrs, x, ScalarFloat32(0.5))
		if err != nil {
			t.Fatal(err)
		}
		for i := range x.Len() {
			want := NewTensor(c.to, Shape{1})
			storeFloat(want, 0, float64(float32(x.Float64At(i)/0.5)), c.saturate != 0, RoundNearest)
			if g := got[0].Bytes()[i]; g != want.Bytes()[0] {
				t.Errorf("%s saturate=%d: x %v: code %#x (%v), want %#x (%v)", c.to, c.saturate, x.Float64At(i), g, got[0].Float64At(i), want.Bytes()[0], want.Float64At(0))
			}
		}
		if c.to == Float8E4M3FN {
			big := got[0].Float64At(2)
			if c.saturate == 1 && big != 448 || c.saturate == 0 && !math.IsNaN(big) {
				t.Errorf("e4m3fn saturate=%d: 2000 quantizes to %v", c.saturate, big)
			}
		}
	}
}

// TestQuantizeLinearPrecision: the division runs in the precision
// attribute's type (here float16, where 3001 is not representable and
// rounds to 3000) instead of the scale's.
func TestQuantizeLinearPrecision(t *testing.T) {
	x := FromFloat32s(Shape{1}, []float32{3001})
	for _, c := range []struct {
		precision int64
		want      int64
	}{{0, 3001}, {int64(onnx.Float16), 3000}, {int64(onnx.Float), 3001}} {
		attrs := []*onnx.Attribute{intAttr("output_dtype", int64(onnx.Int16))}
		if c.precision != 0 {
			attrs = append(attrs, intAttr("precision", c.precision))
		}
		got, err := runNode(t, 25, "QuantizeLinear", 1, attrs, x, ScalarFloat32(1))
		if err != nil {
			t.Fatal(err)
		}
		if g := got[0].Int64At(0); g != c.want {
			t.Errorf("precision %d: got %d, want %d", c.precision, g, c.want)
		}
	}
}

func TestDequantizeLinearLayouts(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cases := []struct {
		name        string
		x, scale    Shape
		axis, block int
		from        DType
		scaleType   DType
	}{
		{"per tensor", Shape{3, 4}, Shape{}, 1, 0, Uint8, Float32},
		{"per axis", Shape{2, 3, 4}, Shape{3}, 1, 0, Int8, Float16},
		{"blocked remainder", Shape{2, 7}, Shape{2, 3}, 1, 3, Int4, Float32},
		{"blocked axis 0", Shape{5, 3, 2}, Shape{2, 3, 2}, 0, 4, Int16, BFloat16},
		{"int32", Shape{6}, Shape{1}, 0, 0, Int32, Float32},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lo, hi := intRange(c.from)
			lo, hi = math.Max(lo, -1000), math.Min(hi, 1000)
			x := randTensor(rng, c.from, c.x, lo, hi+1)
			zp := randTensor(rng, c.from, c.scale, lo, hi+1)
			scale := randTensor(rng, c.scaleType, c.scale, 0.01, 2)
			attrs := []*onnx.Attribute{intAttr("axis", int64(c.axis)), intAttr("block_size", int64(c.block))}
			axis, _ := normAxis(c.axis, len(c.x))
			for _, to := range []DType{InvalidDType, Float32, Float16} {
				a := attrs
				if to != InvalidDType {
					a = append(a, intAttr("output_dtype", int64(to.ONNX())))
				}
				got, err := runNode(t, 25, "DequantizeLinear", 1, a, x, scale, zp)
				if err != nil {
					t.Fatal(err)
				}
				wantType := to
				if to == InvalidDType {
					wantType = c.scaleType
				}
				if got[0].DType() != wantType || !got[0].Shape().Equal(c.x) {
					t.Fatalf("output %v, want %s%v", got[0], wantType, c.x)
				}
				for i := range x.Len() {
					s := refScaleIndex(i, c.x, c.scale, axis, c.block)
					w := NewTensor(wantType, Shape{1})
					storeFloat(w, 0, float64(float32(x.Float64At(i)-zp.Float64At(s))*float32(scale.Float64At(s))), true, RoundUp)
					if g := got[0].Float64At(i); g != w.Float64At(0) {
						t.Fatalf("element %d: got %v, want %v", i, g, w.Float64At(0))
					}
				}
			}
		})
	}
}

// TestDequantizeLinearE8M0Scale: a power-of-two float8e8m0 scale needs an
// output_dtype.
func TestDequantizeLinearE8M0Scale(t *testing.T) {
	scale := NewTensor(Float8E8M0, nil)
	scale.Bytes()[0] = 127 + 2 // 4
	x := NewTensor(Int8, Shape{3})
	copy(x.Int8s(), []int8{3, -2, 0})
	got, err := runNode(t, 25, "DequantizeLinear", 1, []*onnx.Attribute{intAttr("output_dtype", int64(onnx.Float))}, x, scale)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []float32{12, -8, 0} {
		if g := got[0].Float32s()[i]; g != w {
			t.Errorf("element %d: got %v, want %v", i, g, w)
		}
	}
	if _, err := runNode(t, 25, "DequantizeLinear", 1, nil, x, scale); err == nil || !strings.Contains(err.Error(), "output_dtype") {
		t.Errorf("no output_dtype with a float8e8m0 scale: error %v, want one naming output_dtype", err)
	}
}

// TestQuantizeDequantizeRoundTrip: x → QuantizeLinear → DequantizeLinear
// lands within half a scale step of x where x is in range.
func TestQuantizeDequantizeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := randTensor(rng, Float32, Shape{4, 9}, -3, 3)
	scale := randTensor(rng, Float32, Shape{4, 3}, 0.03, 0.05)
	zp := NewTensor(Int8, Shape{4, 3})
	attrs := []*onnx.Attribute{intAttr("axis", 1), intAttr("block_size", 3)}
	nodes := []*onnx.Node{
		node("QuantizeLinear", []string{"x", "s", "z"}, []string{"q"}, attrs...),
		node("DequantizeLinear", []string{"q", "s", "z"}, []string{"y"}, attrs...),
	}
	got, err := runNodeModel(t, 21, nodes, []string{"q", "y"}, namedTensor{"x", x}, namedTensor{"s", scale}, namedTensor{"z", zp})
	if err != nil {
		t.Fatal(err)
	}
	for i := range x.Len() {
		s := scale.Float64At(refScaleIndex(i, x.Shape(), scale.Shape(), 1, 3))
		if d := math.Abs(got[1].Float64At(i) - x.Float64At(i)); d > s/2*(1+1e-6) && math.Abs(got[0].Float64At(i)) < 127 {
			t.Errorf("element %d: %v → %v → %v, off by %v (scale %v)", i, x.Float64At(i), got[0].Float64At(i), got[1].Float64At(i), d, s)
		}
	}
}

// TestDequantizeLinearScaleGradient: a blocked scale stored as an
// initializer is a parameter; its gradient through the dequantization
// (expanded along the blocks, cut at the remainder) matches the analytic
// one, dL/ds_b = 2/N Σ_{i in block b} (y_i - t_i)(x_i - z_b).
func TestDequantizeLinearScaleGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	x := randTensor(rng, Int8, Shape{2, 7}, -100, 100)
	zp := randTensor(rng, Int8, Shape{2, 3}, -5, 5)
	scale := randTensor(rng, Float32, Shape{2, 3}, 0.01, 0.1)
	m := buildModel(21, nil, []*onnx.Tensor{initializer(t, "x", x), initializer(t, "s", scale), initializer(t, "z", zp)},
		[]*onnx.Node{node("DequantizeLinear", []string{"x", "s", "z"}, []string{"y"}, intAttr("axis", 1), intAttr("block_size", 3))}, "y")
	g, err := FromONNX(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := LossSpec{Kind: MeanSquaredError}
	tg, err := TrainingGraph(g, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	targets := randTensor(rng, Float32, Shape{2, 7}, -1, 1)
	res, err := Interpret(tg, map[string]*Tensor{TargetsInput: targets})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := Interpret(g, nil)
	if err != nil {
		t.Fatal(err)
	}
	y := fwd["y"]
	want := make([]float64, scale.Len())
	for i := range x.Len() {
		b := refScaleIndex(i, x.Shape(), scale.Shape(), 1, 3)
		want[b] += 2.0 / 14 * (y.Float64At(i) - targets.Float64At(i)) * (x.Float64At(i) - zp.Float64At(b))
	}
	grad := res[GradPrefix+"s"]
	for b, w := range want {
		if d := math.Abs(grad.Float64At(b) - w); d > 1e-5*(1+math.Abs(w)) {
			t.Errorf("d L/d s[%d] = %v, want %v", b, grad.Float64At(b), w)
		}
	}
}

func TestDynamicQuantizeLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range []struct {
		name   string
		lo, hi float64
	}{{"mixed", -3, 2}, {"positive", 1, 4}, {"negative", -4, -1}, {"zero", 0, 0}} {
		x := randTensor(rng, Float32, Shape{3, 5}, c.lo, c.hi)
		got, err := runNode(t, 11, "DynamicQuantizeLinear", 3, nil, x)
		if err != nil {
			t.Fatal(err)
		}
		lo, hi := float32(0), float32(0)
		for _, v := range x.Float32s() {
			lo, hi = min(lo, v), max(hi, v)
		}
		scale := (hi - lo) / 255
		if g := got[1].Float32s()[0]; g != scale {
			t.Errorf("%s: scale %v, want %v", c.name, g, scale)
		}
		var zp float64
		if scale != 0 {
			zp = math.RoundToEven(math.Max(0, math.Min(255, float64(0-lo/scale))))
		}
		if g := got[2].Float64At(0); g != zp {
			t.Errorf("%s: zero point %v, want %v", c.name, g, zp)
		}
		for i, v := range x.Float32s() {
			want := zp
			if scale != 0 {
				want = math.Max(0, math.Min(255, math.RoundToEven(float64(v/scale))+zp))
			}
			if g := got[0].Float64At(i); g != want {
				t.Errorf("%s: x %v: got %v, want %v", c.name, v, g, want)
				break
			}
		}
	}
}

// TestMatMulIntegerZeroPoints: per-row zero points of A and per-column
// ones of B.
func TestMatMulIntegerZeroPoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	a := randTensor(rng, Uint8, Shape{3, 4}, 0, 256)
	b := randTensor(rng, Int8, Shape{4, 2}, -128, 128)
	azp := randTensor(rng, Uint8, Shape{3}, 0, 256)
	bzp := randTensor(rng, Int8, Shape{2}, -128, 128)
	got, err := runNode(t, 10, "MatMulInteger", 1, nil, a, b, azp, bzp)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].DType() != Int32 || !got[0].Shape().Equal(Shape{3, 2}) {
		t.Fatalf("output %v, want int32[3,2]", got[0])
	}
	for i := range 3 {
		for j := range 2 {
			var s int64
			for k := range 4 {
				s += (a.Int64At(i*4+k) - azp.Int64At(i)) * (b.Int64At(k*2+j) - bzp.Int64At(j))
			}
			if g := got[0].Int64At(i*2 + j); g != s {
				t.Errorf("y[%d][%d] = %d, want %d", i, j, g, s)
			}
		}
	}
}

// TestQLinearMatMulPerRowColumn: per-row a and per-column b scales and
// zero points, against the definition computed in float64 with the
// scales' product in float32.
func TestQLinearMatMulPerRowColumn(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	a := randTensor(rng, Int8, Shape{2, 3, 5}, -128, 128)
	b := randTensor(rng, Int8, Shape{5, 4}, -128, 128)
	as := randTensor(rng, Float32, Shape{3}, 0.005, 0.02)
	azp := randTensor(rng, Int8, Shape{3}, -10, 10)
	bs := randTensor(rng, Float32, Shape{4}, 0.005, 0.02)
	bzp := randTensor(rng, Int8, Shape{4}, -10, 10)
	ys := ScalarFloat32(0.02)
	yzp := NewTensor(Int8, nil)
	yzp.Int8s()[0] = 3
	got, err := runNode(t, 21, "QLinearMatMul", 1, nil, a, as, azp, b, bs, bzp, ys, yzp)
	if err != nil {
		t.Fatal(err)
	}
	for bi := range 2 {
		for i := range 3 {
			for j := range 4 {
				var acc int64
				for k := range 5 {
					acc += (a.Int64At((bi*3+i)*5+k) - azp.Int64At(i)) * (b.Int64At(k*4+j) - bzp.Int64At(j))
				}
				mult := float32(as.Float32s()[i]*bs.Float32s()[j]) / 0.02
				want := math.Max(-128, math.Min(127, math.RoundToEven(float64(acc)*float64(mult))+3))
				if g := got[0].Float64At((bi*3+i)*4 + j); g != want {
					t.Errorf("y[%d][%d][%d] = %v, want %v", bi, i, j, g, want)
				}
			}
		}
	}
}

// TestQLinearConvPerChannel: per-output-channel weight scales and zero
// points, a bias, stride 2 and padding, against a direct convolution.
func TestQLinearConvPerChannel(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	x := randTensor(rng, Uint8, Shape{1, 2, 5, 5}, 0, 256)
	w := randTensor(rng, Uint8, Shape{3, 2, 3, 3}, 0, 256)
	xs, xzp := ScalarFloat32(0.01), NewTensor(Uint8, nil)
	xzp.Bytes()[0] = 120
	ws := randTensor(rng, Float32, Shape{3}, 0.002, 0.01)
	wzp := randTensor(rng, Uint8, Shape{3}, 100, 150)
	ys, yzp := ScalarFloat32(0.05), NewTensor(Uint8, nil)
	yzp.Bytes()[0] = 128
	bias := FromInt32s(Shape{3}, []int32{-500, 0, 700})
	attrs := []*onnx.Attribute{intsAttr("strides", 2, 2), intsAttr("pads", 1, 1, 1, 1)}
	got, err := runNode(t, 10, "QLinearConv", 1, attrs, x, xs, xzp, w, ws, wzp, ys, yzp, bias)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Shape().Equal(Shape{1, 3, 3, 3}) || got[0].DType() != Uint8 {
		t.Fatalf("output %v, want uint8[1,3,3,3]", got[0])
	}
	for m := range 3 {
		for oy := range 3 {
			for ox := range 3 {
				acc := int64(bias.Int32s()[m])
				for c := range 2 {
					for ky := range 3 {
						for kx := range 3 {
							iy, ix := oy*2-1+ky, ox*2-1+kx
							if iy < 0 || iy >= 5 || ix < 0 || ix >= 5 {
								continue
							}
							acc += (x.Int64At((c*5+iy)*5+ix) - 120) * (w.Int64At(((m*2+c)*3+ky)*3+kx) - wzp.Int64At(m))
						}
					}
				}
				mult := float32(0.01*ws.Float32s()[m]) / 0.05
				want := math.Max(0, math.Min(255, math.RoundToEven(float64(acc)*float64(mult))+128))
				if g := got[0].Float64At((m*3+oy)*3 + ox); g != want {
					t.Errorf("y[%d][%d][%d] = %v, want %v", m, oy, ox, g, want)
				}
			}
		}
	}
}

// TestQuantImportErrors: malformed quantization nodes are refused with
// an error naming the attribute, input or type at fault.
func TestQuantImportErrors(t *testing.T) {
	f := func(shape Shape) *Tensor { return NewTensor(Float32, shape) }
	i8 := func(shape Shape) *Tensor { return NewTensor(Int8, shape) }
	u8 := func(shape Shape) *Tensor { return NewTensor(Uint8, shape) }
	e8 := NewTensor(Float8E8M0, nil)
	cases := []struct {
		name        string
		op          string
		opset       int64
		attrs       []*onnx.Attribute
		in          []*Tensor
		want        string
		unsupported bool
	}{
		{"negative block", "QuantizeLinear", 25, []*onnx.Attribute{intAttr("block_size", -2)}, []*Tensor{f(Shape{2, 4}), f(Shape{2, 2})}, "block_size", false},
		{"scale length", "QuantizeLinear", 25, nil, []*Tensor{f(Shape{2, 4}), f(Shape{3})}, "scale", false},
		{"blocked scale shape", "QuantizeLinear", 25, []*onnx.Attribute{intAttr("block_size", 2)}, []*Tensor{f(Shape{2, 5}), f(Shape{2, 2})}, "block_size 2", false},
		{"axis out of range", "QuantizeLinear", 25, []*onnx.Attribute{intAttr("axis", 5)}, []*Tensor{f(Shape{2, 4}), f(Shape{4})}, "axis", false},
		{"float output", "QuantizeLinear", 25, []*onnx.Attribute{intAttr("output_dtype", int64(onnx.Float))}, []*Tensor{f(Shape{2}), f(nil)}, "float32", true},
		{"unknown output type", "QuantizeLinear", 25, []*onnx.Attribute{intAttr("output_dtype", 99)}, []*Tensor{f(Shape{2}), f(nil)}, "output_dtype", false},
		{"output_dtype vs zero point", "QuantizeLinear", 25, []*onnx.Attribute{intAttr("output_dtype", int64(onnx.Int8))}, []*Tensor{f(Shape{2}), f(nil), u8(nil)}, "output_dtype", false},
		{"integer precision", "QuantizeLinear", 25, []*onnx.Attribute{intAttr("precision", int64(onnx.Int32))}, []*Tensor{f(Shape{2}), f(nil)}, "precision", false},
		{"int8 input", "QuantizeLinear", 25, nil, []*Tensor{i8(Shape{2}), f(nil)}, "input x is int8", false},
		{"zero point shape", "QuantizeLinear", 25, nil, []*Tensor{f(Shape{2, 3}), f(Shape{3}), u8(Shape{2})}, "zero point", false},
		{"e8m0 scale without output_dtype", "DequantizeLinear", 25, nil, []*Tensor{i8(Shape{2}), e8}, "output_dtype", false},
		{"dequantize zero point type", "DequantizeLinear", 25, nil, []*Tensor{i8(Shape{2}), f(nil), u8(nil)}, "x_zero_point", false},
		{"dequantize float input", "DequantizeLinear", 25, nil, []*Tensor{f(Shape{2}), f(nil)}, "input x is float32", false},
		{"dequantize blocked shape", "DequantizeLinear", 25, []*onnx.Attribute{intAttr("block_size", 3)}, []*Tensor{i8(Shape{2, 7}), f(Shape{2, 2})}, "block_size 3", false},
		{"matmulinteger types", "MatMulInteger", 10, nil, []*Tensor{NewTensor(Int16, Shape{2, 2}), i8(Shape{2, 2})}, "int8", false},
		{"matmulinteger zero point", "MatMulInteger", 10, nil, []*Tensor{u8(Shape{3, 2}), u8(Shape{2, 2}), u8(Shape{2})}, "a_zero_point", false},
		{"qlinearmatmul output scale", "QLinearMatMul", 21, nil, []*Tensor{u8(Shape{2, 2}), f(nil), u8(nil), u8(Shape{2, 2}), f(nil), u8(nil), f(Shape{2}), u8(nil)}, "output scale", true},
		{"qlinearmatmul scale types", "QLinearMatMul", 21, nil, []*Tensor{u8(Shape{2, 2}), f(nil), u8(nil), u8(Shape{2, 2}), NewTensor(Float16, nil), u8(nil), f(nil), u8(nil)}, "scales", false},
		{"qlinearconv w_scale", "QLinearConv", 10, nil, []*Tensor{u8(Shape{1, 1, 3, 3}), f(nil), u8(nil), u8(Shape{2, 1, 1, 1}), f(Shape{3}), u8(nil), f(nil), u8(nil)}, "w_scale", false},
		{"convinteger w zero point", "ConvInteger", 10, nil, []*Tensor{u8(Shape{1, 1, 3, 3}), u8(Shape{2, 1, 1, 1}), u8(nil), u8(Shape{3})}, "w zero point", false},
		{"dynamic float16", "DynamicQuantizeLinear", 11, nil, []*Tensor{NewTensor(Float16, Shape{2})}, "float32", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nOut := 1
			if c.op == "DynamicQuantizeLinear" {
				nOut = 3
			}
			_, err := runNode(t, c.opset, c.op, nOut, c.attrs, c.in...)
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if c.unsupported != errors.Is(err, ErrNotSupported) {
				t.Errorf("error %q: errors.Is(ErrNotSupported) = %v, want %v", err, !c.unsupported, c.unsupported)
			}
		})
	}
}
