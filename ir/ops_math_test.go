package ir

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// mathUnaryDomains are the unary functions of ops_math.go with a
// derivative, an input range inside their domain, the kinks to keep away
// from and the alpha they take.
var mathUnaryDomains = []struct {
	fn     UnaryFn
	lo, hi float64
	kinks  []float64
	alpha  float32
}{
	{fn: Cos, lo: -3, hi: 3},
	{fn: Sin, lo: -3, hi: 3},
	{fn: Tan, lo: -1.2, hi: 1.2},
	{fn: Acos, lo: -0.9, hi: 0.9},
	{fn: Asin, lo: -0.9, hi: 0.9},
	{fn: Atan, lo: -3, hi: 3},
	{fn: Acosh, lo: 1.1, hi: 4},
	{fn: Asinh, lo: -3, hi: 3},
	{fn: Atanh, lo: -0.9, hi: 0.9},
	{fn: Cosh, lo: -2, hi: 2},
	{fn: Sinh, lo: -2, hi: 2},
	{fn: HardSwish, lo: -5, hi: 5, kinks: []float64{-3, 3}},
	{fn: Softsign, lo: -3, hi: 3, kinks: []float64{0}},
	{fn: Mish, lo: -4, hi: 4},
	{fn: Celu, lo: -3, hi: 3, kinks: []float64{0}, alpha: 0.8},
	{fn: ThresholdedRelu, lo: -1, hi: 3, kinks: []float64{1.5}, alpha: 1.5},
	{fn: Swish, lo: -4, hi: 4, alpha: 1.3},
}

func TestMathUnaryGradients(t *testing.T) {
	for _, u := range mathUnaryDomains {
		t.Run(u.fn.String(), func(t *testing.T) {
			runGradCase(t, gradCase{name: "Unary/" + u.fn.String(), build: func(h *caseBuilder) []*Value {
				x := h.awayFrom(Shape{3, 4}, u.lo, u.hi, 1e-3, u.kinks...)
				return []*Value{h.op(&Unary{Fn: u.fn, Alpha: u.alpha}, x)}
			}})
		})
	}
	// Round's derivative is zero almost everywhere: the branch is pruned.
	runGradCase(t, gradCase{name: "Unary/Round", build: func(h *caseBuilder) []*Value {
		x := h.awayFrom(Shape{3, 4}, -3, 3, 1e-3, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5)
		return []*Value{h.op(&Unary{Fn: Round}, x), x}
	}})
}

// TestMathUnaryRoundsOnce: float32 results are the float64 function
// rounded once to float32, special values included.
func TestMathUnaryRoundsOnce(t *testing.T) {
	xs := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1), 1e-30, -1e-30, 0.5, -0.5, 1.5, 2.5, -2.5, 1, -1, 3, -3, 7.3, -7.3, 1e10, -1e10}
	for _, u := range mathUnaryDomains {
		f32 := NewTensor(Float32, Shape{len(xs)})
		for i, x := range xs {
			f32.Float32s()[i] = float32(x)
		}
		f64 := Convert(f32, Float64)
		op := &Unary{Fn: u.fn, Alpha: u.alpha}
		got, err := EvalOp(op, f32)
		if err != nil {
			t.Fatal(err)
		}
		want, err := EvalOp(op, f64)
		if err != nil {
			t.Fatal(err)
		}
		for i := range xs {
			g, w := got[0].Float32s()[i], float32(want[0].Float64s()[i])
			if math.Float32bits(g) != math.Float32bits(w) && !(g != g && w != w) {
				t.Errorf("%s(%g): float32 %g, float64 rounded %g", u.fn, f32.Float32s()[i], g, w)
			}
		}
	}
}

// TestModSemantics checks Mod against floor division (the divisor's sign)
// and Fmod against truncated division (the dividend's), over every int8
// pair, uint8 and float values.
func TestModSemantics(t *testing.T) {
	var as, bs []int8
	for a := -128; a < 128; a++ {
		for b := -128; b < 128; b++ {
			as, bs = append(as, int8(a)), append(bs, int8(b))
		}
	}
	n := len(as)
	at, bt := NewTensor(Int8, Shape{n}), NewTensor(Int8, Shape{n})
	copy(at.Int8s(), as)
	copy(bt.Int8s(), bs)
	for _, fn := range []BinaryFn{Mod, Fmod} {
		out, err := EvalOp(&Binary{Fn: fn}, at, bt)
		if err != nil {
			t.Fatal(err)
		}
		for i, got := range out[0].Int8s() {
			a, b := float64(as[i]), float64(bs[i])
			want := 0.0
			switch {
			case b == 0:
			case fn == Mod:
				want = a - math.Floor(a/b)*b
			default:
				want = a - math.Trunc(a/b)*b
			}
			if float64(got) != want {
				t.Fatalf("%s(%d, %d) = %d, want %g", fn, as[i], bs[i], got, want)
			}
		}
	}
	u, err := EvalOp(&Binary{Fn: Mod}, uint8Tensor(Shape{4}, 250, 7, 9, 200), uint8Tensor(Shape{4}, 7, 250, 0, 3))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(u[0].Uint8s()); got != fmt.Sprint([]uint8{250 % 7, 7, 0, 200 % 3}) {
		t.Errorf("uint8 Mod = %s", got)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	fa, fb := NewTensor(Float64, Shape{200}), NewTensor(Float64, Shape{200})
	for i := range 200 {
		fa.Float64s()[i] = 20 * (rng.Float64() - 0.5)
		fb.Float64s()[i] = 6 * (rng.Float64() - 0.5)
	}
	for _, fn := range []BinaryFn{Mod, Fmod} {
		out, err := EvalOp(&Binary{Fn: fn}, fa, fb)
		if err != nil {
			t.Fatal(err)
		}
		for i, got := range out[0].Float64s() {
			a, b := fa.Float64s()[i], fb.Float64s()[i]
			q := math.Trunc(a / b)
			if fn == Mod {
				q = math.Floor(a / b)
			}
			if want := a - q*b; math.Abs(got-want) > 1e-12*math.Abs(a) {
				t.Errorf("%s(%g, %g) = %g, want %g", fn, a, b, got, want)
			}
		}
	}
}

// TestBitwiseIdentities checks the bitwise functions through identities
// that tie them to arithmetic.
func TestBitwiseIdentities(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 500
	a, b := NewTensor(Int32, Shape{n}), NewTensor(Int32, Shape{n})
	for i := range n {
		a.Int32s()[i] = int32(rng.Uint32())
		b.Int32s()[i] = int32(rng.Uint32())
	}
	eval := func(op Op, in ...*Tensor) []int32 {
		out, err := EvalOp(op, in...)
		if err != nil {
			t.Fatal(err)
		}
		return out[0].Int32s()
	}
	and, or, xor := eval(&Binary{Fn: BitwiseAnd}, a, b), eval(&Binary{Fn: BitwiseOr}, a, b), eval(&Binary{Fn: BitwiseXor}, a, b)
	not := eval(&Unary{Fn: BitwiseNot}, a)
	for i := range n {
		x, y := int64(a.Int32s()[i]), int64(b.Int32s()[i])
		if int64(and[i])+int64(or[i]) != x+y {
			t.Fatalf("and + or != a + b for %d, %d", x, y)
		}
		if int64(xor[i]) != int64(or[i])-int64(and[i]) {
			t.Fatalf("xor != or - and for %d, %d", x, y)
		}
		if int64(not[i]) != -x-1 {
			t.Fatalf("not(%d) = %d, want %d", x, not[i], -x-1)
		}
	}
	// Shifts: multiplication and division by powers of two, 0 past the width.
	u := uint8Tensor(Shape{6}, 1, 3, 200, 255, 17, 1)
	k := uint8Tensor(Shape{6}, 0, 2, 1, 7, 8, 9)
	left, err := EvalOp(&Binary{Fn: BitShiftLeft}, u, k)
	if err != nil {
		t.Fatal(err)
	}
	right, err := EvalOp(&Binary{Fn: BitShiftRight}, u, k)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		x, s := int(u.Uint8s()[i]), int(k.Uint8s()[i])
		if want := x * (1 << s) % 256; int(left[0].Uint8s()[i]) != want {
			t.Errorf("%d << %d = %d, want %d", x, s, left[0].Uint8s()[i], want)
		}
		if want := x / (1 << s); int(right[0].Uint8s()[i]) != want {
			t.Errorf("%d >> %d = %d, want %d", x, s, right[0].Uint8s()[i], want)
		}
	}
	if _, err := (&Binary{Fn: BitwiseAnd}).Infer([]Type{{Float32, Shape{2}}, {Float32, Shape{2}}}); err == nil {
		t.Error("BitwiseAnd accepts float32")
	}
	if _, err := (&Unary{Fn: BitwiseNot}).Infer([]Type{{Float32, Shape{2}}}); err == nil {
		t.Error("BitwiseNot accepts float32")
	}
}

func uint8Tensor(shape Shape, v ...uint8) *Tensor {
	t := NewTensor(Uint8, shape)
	copy(t.Uint8s(), v)
	return t
}

func TestBitCast(t *testing.T) {
	fs := []float32{0, -0, 1, -2.5, float32(math.Inf(1)), float32(math.NaN()), 1e-40}
	x := FromFloat32s(Shape{len(fs)}, fs)
	out, err := EvalOp(&BitCast{To: Int32}, x)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range fs {
		if got, want := out[0].Int32s()[i], int32(math.Float32bits(f)); got != want {
			t.Errorf("bits of %g: %#x, want %#x", f, got, want)
		}
	}
	back, err := EvalOp(&BitCast{To: Float32}, out[0])
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range fs {
		if math.Float32bits(back[0].Float32s()[i]) != math.Float32bits(f) {
			t.Errorf("round trip of %g gave %g", f, back[0].Float32s()[i])
		}
	}
	// int8 → uint8 is the two's complement reading.
	i8 := NewTensor(Int8, Shape{4})
	copy(i8.Int8s(), []int8{-1, -128, 5, 0})
	u8, err := EvalOp(&BitCast{To: Uint8}, i8)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range i8.Int8s() {
		if u8[0].Uint8s()[i] != uint8(v) {
			t.Errorf("int8 %d → uint8 %d", v, u8[0].Uint8s()[i])
		}
	}
	// uint4 → int4 sign-extends the low four bits.
	u4 := NewTensor(Uint4, Shape{16})
	for i := range 16 {
		u4.data[i] = byte(i)
	}
	i4, err := EvalOp(&BitCast{To: Int4}, u4)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 16 {
		want := i
		if i >= 8 {
			want = i - 16
		}
		if got := i4[0].Int64At(i); got != int64(want) {
			t.Errorf("uint4 %d → int4 %d, want %d", i, got, want)
		}
	}
	if _, err := (&BitCast{To: Int64}).Infer([]Type{{Float32, Shape{2}}}); err == nil || !strings.Contains(err.Error(), "widths must match") {
		t.Errorf("float32 → int64: %v, want a width error", err)
	}
}

// checkMathGrad checks by checkImportedGrad the gradients of a one-node
// model whose inputs are the initializers params (the float64 ones
// parameters).
func checkMathGrad(t *testing.T, opset int64, op *onnx.Node, params map[string]*Tensor) {
	t.Helper()
	var inits []*onnx.Tensor
	for _, name := range slices.Sorted(maps.Keys(params)) {
		inits = append(inits, initializer(t, name, params[name]))
	}
	checkImportedGrad(t, buildModel(opset, nil, inits, []*onnx.Node{op}, op.Outputs[0]), nil, 1e-6)
}

// awayFromPoints returns n values in [lo, hi) at least gap from every point.
func awayFromPoints(rng *rand.Rand, shape Shape, lo, hi, gap float64, points ...float64) *Tensor {
	t := NewTensor(Float64, shape)
	for i := range t.Float64s() {
	draw:
		v := lo + (hi-lo)*rng.Float64()
		for _, p := range points {
			if math.Abs(v-p) < gap {
				goto draw
			}
		}
		t.Float64s()[i] = v
	}
	return t
}

// TestCompositionGradients: the operators imported as compositions
// differentiate through them.
func TestCompositionGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := func(points ...float64) *Tensor { return awayFromPoints(rng, Shape{2, 3, 4}, -3, 3, 1e-3, points...) }
	for _, tc := range []struct {
		opset  int64
		node   *onnx.Node
		params map[string]*Tensor
	}{
		{22, node("Selu", []string{"x"}, []string{"y"}, floatAttr("alpha", 1.5), floatAttr("gamma", 2)), map[string]*Tensor{"x": x(0)}},
		{22, node("HardSigmoid", []string{"x"}, []string{"y"}, floatAttr("alpha", 0.3)), map[string]*Tensor{"x": x(-0.5/0.3, 0.5/0.3)}},
		{10, node("Shrink", []string{"x"}, []string{"y"}, floatAttr("lambd", 1), floatAttr("bias", 0.5)), map[string]*Tensor{"x": x(-1, 1)}},
		{16, node("PRelu", []string{"x", "s"}, []string{"y"}), map[string]*Tensor{"x": x(0), "s": awayFromPoints(rng, Shape{4}, 0.1, 0.5, 0)}},
		{6, node("PRelu", []string{"x", "s"}, []string{"y"}), map[string]*Tensor{"x": x(0), "s": awayFromPoints(rng, Shape{3}, 0.1, 0.5, 0)}},
	} {
		t.Run(fmt.Sprintf("%s/opset%d", tc.node.OpType, tc.opset), func(t *testing.T) {
			checkMathGrad(t, tc.opset, tc.node, tc.params)
		})
	}
}

// TestPReluChannelSlope: before opset 7 a slope with one entry per
// channel scales along axis 1; from opset 7 on it broadcasts as numpy
// does and must reach x's shape.
func TestPReluChannelSlope(t *testing.T) {
	x := NewTensor(Float32, Shape{2, 3, 2})
	for i := range x.Float32s() {
		x.Float32s()[i] = float32(i%5) - 2
	}
	slope := FromFloat32s(Shape{3}, []float32{0.1, 0.2, 0.3})
	m := buildModel(6, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3, 2)}, []*onnx.Tensor{initializer(t, "s", slope)},
		[]*onnx.Node{node("PRelu", []string{"x", "s"}, []string{"y"})}, "y")
	res, _ := runModel(t, m, map[string]*Tensor{"x": x})
	for i, v := range x.Float32s() {
		want := v
		if v < 0 {
			want = v * slope.Float32s()[(i/2)%3]
		}
		if got := res["y"].Float32s()[i]; got != want {
			t.Errorf("y[%d] = %g, want %g", i, got, want)
		}
	}
	m.OpsetImports[0].Version = 16
	if _, err := FromONNX(m, nil); err == nil || !strings.Contains(err.Error(), "does not broadcast") {
		t.Errorf("opset 16: %v, want a broadcast error", err)
	}
}

func TestMathImportErrors(t *testing.T) {
	f := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3), valueInfo("y", onnx.Float, 2, 3)}
	ints := []*onnx.ValueInfo{valueInfo("x", onnx.Int32, 2, 3), valueInfo("y", onnx.Int32, 2, 3)}
	one := func(opset int64, in []*onnx.ValueInfo, n *onnx.Node) *onnx.Model {
		return buildModel(opset, in, nil, []*onnx.Node{n}, "z")
	}
	for _, tc := range []struct {
		name  string
		model *onnx.Model
		want  string
		is    error
	}{
		{"float Mod without fmod", one(13, f, node("Mod", []string{"x", "y"}, []string{"z"})), "want fmod=1 for float inputs", nil},
		{"fmod=2", one(13, ints, node("Mod", []string{"x", "y"}, []string{"z"}, intAttr("fmod", 2))), "fmod=2, want 0 or 1", nil},
		{"BitShift direction", one(11, ints, node("BitShift", []string{"x", "y"}, []string{"z"}, stringAttr("direction", "UP"))), `direction "UP", want LEFT or RIGHT`, nil},
		{"BitShift signed", one(11, ints, node("BitShift", []string{"x", "y"}, []string{"z"}, stringAttr("direction", "LEFT"))), "want an unsigned integer type", nil},
		{"BitwiseAnd float", one(18, f, node("BitwiseAnd", []string{"x", "y"}, []string{"z"})), "want an integer type", nil},
		{"BitwiseNot float", one(18, f, node("BitwiseNot", []string{"x"}, []string{"z"})), "want an integer type", nil},
		{"BitCast width", one(26, f, node("BitCast", []string{"x"}, []string{"z"}, intAttr("to", int64(onnx.Int64)))), "the widths must match", nil},
		{"BitCast without to", one(26, f, node("BitCast", []string{"x"}, []string{"z"})), "needs the attribute to", nil},
		{"BitCast to string", one(26, f, node("BitCast", []string{"x"}, []string{"z"}, intAttr("to", int64(onnx.String)))), "strings have no fixed width", ErrNotSupported},
		{"Celu alpha 0", one(12, f, node("Celu", []string{"x"}, []string{"z"}, floatAttr("alpha", 0))), "Celu alpha = 0", nil},
		{"Shrink negative lambd", one(10, f, node("Shrink", []string{"x"}, []string{"z"}, floatAttr("lambd", -1))), "lambd = -1, want >= 0", nil},
		{"Selu of ints", one(6, ints, node("Selu", []string{"x"}, []string{"z"})), "Selu of int32, want a float type", nil},
		{"IsNaN of ints", one(20, ints, node("IsNaN", []string{"x"}, []string{"z"})), "IsNaN of int32, want a float type", nil},
		{"Round of ints", one(22, ints, node("Round", []string{"x"}, []string{"z"})), "want a float type", nil},
		{"Swish attribute type", one(24, f, node("Swish", []string{"x"}, []string{"z"}, intAttr("alpha", 2))), `attribute "alpha": type INT, want FLOAT`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { wantImportError(t, tc.model, tc.is, tc.want) })
	}
}

// TestIsInfDetect: each detect_* combination against math.IsInf.
func TestIsInfDetect(t *testing.T) {
	vals := []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0, -3, math.MaxFloat32}
	x := FromFloat32s(Shape{len(vals)}, vals)
	for _, neg := range []int64{0, 1} {
		for _, pos := range []int64{0, 1} {
			m := buildModel(20, []*onnx.ValueInfo{valueInfo("x", onnx.Float, len(vals))}, nil,
				[]*onnx.Node{node("IsInf", []string{"x"}, []string{"y"}, intAttr("detect_negative", neg), intAttr("detect_positive", pos))}, "y")
			res, _ := runModel(t, m, map[string]*Tensor{"x": x})
			for i, v := range vals {
				want := (neg == 1 && math.IsInf(float64(v), -1)) || (pos == 1 && math.IsInf(float64(v), 1))
				if got := res["y"].Bools()[i]; got != want {
					t.Errorf("detect_negative=%d detect_positive=%d: IsInf(%g) = %v", neg, pos, v, got)
				}
			}
		}
	}
}
