package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// The element-wise operators of ONNX beyond the core set that
// import_ops.go registers: trigonometric and hyperbolic functions,
// rounding, the activation functions, Mod, the bitwise operators, IsNaN,
// IsInf, BitCast and Det. Those with a single-parameter formula are Unary or
// Binary functions; Selu, HardSigmoid, Shrink and PRelu are compositions
// of existing ops, so their gradients and lowerings come for free.

func init() {
	for name, fn := range map[string]UnaryFn{
		"Cos": Cos, "Sin": Sin, "Tan": Tan, "Acos": Acos, "Asin": Asin, "Atan": Atan,
		"Acosh": Acosh, "Asinh": Asinh, "Atanh": Atanh, "Cosh": Cosh, "Sinh": Sinh,
		"Round": Round, "BitwiseNot": BitwiseNot, "HardSwish": HardSwish, "Softsign": Softsign, "Mish": Mish,
	} {
		registerOp("", name, importUnary(fn))
	}
	for name, fn := range map[string]BinaryFn{
		"BitwiseAnd": BitwiseAnd, "BitwiseOr": BitwiseOr, "BitwiseXor": BitwiseXor,
	} {
		registerOp("", name, importBinary(fn))
	}
	for name, f := range map[string]importFunc{
		"Celu":            importAlphaUnary(Celu, 1),
		"ThresholdedRelu": importAlphaUnary(ThresholdedRelu, 1),
		"Swish":           importAlphaUnary(Swish, 1),
		"Selu":            importSelu,
		"HardSigmoid":     importHardSigmoid,
		"Shrink":          importShrink,
		"PRelu":           importPRelu,
		"Mod":             importMod,
		"BitShift":        importBitShift,
		"IsNaN":           importIsNaN,
		"IsInf":           importIsInf,
		"BitCast":         importBitCast,
		"Det":             importDet,
	} {
		registerOp("", name, f)
	}
}

// constScalarOf is a scalar constant of dtype dt holding v (rounded to dt).
func (im *importer) constScalarOf(dt DType, v float64) *Value {
	t := NewTensor(dt, nil)
	storeFloat(t, 0, v, true, RoundUp)
	return im.constant(t)
}

// wantFloatInput checks that an operator defined only on floats gets one.
func wantFloatInput(n *onnx.Node, x *Value) error {
	if !isFloat(x.DType) {
		return fmt.Errorf("%s of %s, want a float type", n.OpType, x.DType)
	}
	return nil
}

// importAlphaUnary imports a Unary function with one FLOAT attribute alpha.
func importAlphaUnary(fn UnaryFn, def float32) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 1); err != nil {
			return nil, err
		}
		alpha, err := n.AttrFloat("alpha", def)
		if err != nil {
			return nil, err
		}
		if fn == Celu && alpha == 0 {
			return nil, fmt.Errorf("Celu alpha = 0, want a nonzero value (x/alpha is taken)")
		}
		return one(im.emit1(&Unary{Fn: fn, Alpha: alpha}, in[0]))
	}
}

// importSelu: gamma·Elu_alpha(x) = gamma·x for x > 0, gamma·alpha·(eˣ−1)
// otherwise.
func importSelu(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	alpha, err := n.AttrFloat("alpha", 1.67326319217681884765625)
	if err != nil {
		return nil, err
	}
	gamma, err := n.AttrFloat("gamma", 1.05070102214813232421875)
	if err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantFloatInput(n, x); err != nil {
		return nil, err
	}
	elu, err := im.emit1(&Unary{Fn: Elu, Alpha: alpha}, x)
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Binary{Fn: Mul}, elu, im.constScalarOf(x.DType, float64(gamma))))
}

// importHardSigmoid: max(0, min(1, alpha·x + beta)).
func importHardSigmoid(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	alpha, err := n.AttrFloat("alpha", 0.2)
	if err != nil {
		return nil, err
	}
	beta, err := n.AttrFloat("beta", 0.5)
	if err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantFloatInput(n, x); err != nil {
		return nil, err
	}
	dt := x.DType
	ax, err := im.emit1(&Binary{Fn: Mul}, x, im.constScalarOf(dt, float64(alpha)))
	if err != nil {
		return nil, err
	}
	lin, err := im.emit1(&Binary{Fn: Add}, ax, im.constScalarOf(dt, float64(beta)))
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Clip{}, lin, im.constScalarOf(dt, 0), im.constScalarOf(dt, 1)))
}

// importShrink: x+bias where x < −lambd, x−bias where x > lambd, else 0.
// Integer inputs are compared and shifted in float64 and truncated back,
// as the operator's float attributes ask.
func importShrink(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	bias, err := n.AttrFloat("bias", 0)
	if err != nil {
		return nil, err
	}
	lambd, err := n.AttrFloat("lambd", 0.5)
	if err != nil {
		return nil, err
	}
	if lambd < 0 {
		return nil, fmt.Errorf("Shrink lambd = %g, want >= 0", lambd)
	}
	x := in[0]
	if !x.DType.computable() {
		return nil, fmt.Errorf("Shrink of %s, want a number type", x.DType)
	}
	dt := x.DType
	if dt.IsInt() {
		if x, err = im.emit1(&Cast{To: Float64}, x); err != nil {
			return nil, err
		}
	}
	ft := x.DType
	below, err := im.emit1(&Binary{Fn: Less}, x, im.constScalarOf(ft, -float64(lambd)))
	if err != nil {
		return nil, err
	}
	above, err := im.emit1(&Binary{Fn: Greater}, x, im.constScalarOf(ft, float64(lambd)))
	if err != nil {
		return nil, err
	}
	plus, err := im.emit1(&Binary{Fn: Add}, x, im.constScalarOf(ft, float64(bias)))
	if err != nil {
		return nil, err
	}
	minus, err := im.emit1(&Binary{Fn: Sub}, x, im.constScalarOf(ft, float64(bias)))
	if err != nil {
		return nil, err
	}
	inner, err := im.emit1(&Where{}, above, minus, im.constScalarOf(ft, 0))
	if err != nil {
		return nil, err
	}
	y, err := im.emit1(&Where{}, below, plus, inner)
	if err != nil || !dt.IsInt() {
		return one(y, err)
	}
	return one(im.emit1(&Cast{To: dt}, y))
}

// importPRelu: x where x >= 0, slope·x elsewhere, slope broadcast to x
// (unidirectionally: the result has x's shape). Before opset 7 a 1-D
// slope with one entry per channel applies along axis 1, as PyTorch's
// exports of that time mean.
func importPRelu(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	x, slope := in[0], in[1]
	if im.opset < 7 && len(slope.Shape) == 1 && len(x.Shape) >= 2 && slope.Shape[0] == x.Shape[1] && slope.Shape[0] != 1 {
		shape := make(Shape, len(x.Shape)-1)
		for i := range shape {
			shape[i] = 1
		}
		shape[0] = slope.Shape[0]
		var err error
		if slope, err = im.reshape(slope, shape); err != nil {
			return nil, err
		}
	}
	if s, err := BroadcastShapes(x.Shape, slope.Shape); err != nil || !s.Equal(x.Shape) {
		return nil, fmt.Errorf("PRelu slope of shape %v does not broadcast to the input's %v", in[1].Shape, x.Shape)
	}
	scaled, err := im.emit1(&Binary{Fn: Mul}, x, slope)
	if err != nil {
		return nil, err
	}
	neg, err := im.emit1(&Binary{Fn: Less}, x, im.constScalarOf(x.DType, 0))
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Where{}, neg, scaled, x))
}

// importMod: fmod=0 takes the divisor's sign (integers only, as ONNX
// requires fmod=1 for floats), fmod=1 the dividend's.
func importMod(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	fmod, err := attrInt(n, "fmod", 0)
	if err != nil {
		return nil, err
	}
	fn := Mod
	switch fmod {
	case 0:
		if in[0].DType.IsFloat() {
			return nil, fmt.Errorf("Mod with fmod=0 on %s, want fmod=1 for float inputs", in[0].DType)
		}
	case 1:
		fn = Fmod
	default:
		return nil, fmt.Errorf("Mod fmod=%d, want 0 or 1", fmod)
	}
	return one(im.emit1(&Binary{Fn: fn}, in[0], in[1]))
}

func importBitShift(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	dir, err := n.AttrString("direction", "")
	if err != nil {
		return nil, err
	}
	var fn BinaryFn
	switch dir {
	case "LEFT":
		fn = BitShiftLeft
	case "RIGHT":
		fn = BitShiftRight
	default:
		return nil, fmt.Errorf("BitShift direction %q, want LEFT or RIGHT", dir)
	}
	if in[0].DType.IsSigned() || !in[0].DType.IsInt() {
		return nil, fmt.Errorf("BitShift of %s, want an unsigned integer type", in[0].DType)
	}
	return one(im.emit1(&Binary{Fn: fn}, in[0], in[1]))
}

// importIsNaN: x != x, the one comparison NaN fails with itself.
func importIsNaN(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x, err := floatOperand(im, n, in[0])
	if err != nil {
		return nil, err
	}
	eq, err := im.emit1(&Binary{Fn: Equal}, x, x)
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Unary{Fn: Not}, eq))
}

// floatOperand returns x for the float types the arithmetic ops compute,
// and x cast (exactly) to float32 for the 8- and 4-bit floats.
func floatOperand(im *importer, n *onnx.Node, x *Value) (*Value, error) {
	if !x.DType.IsFloat() {
		return nil, fmt.Errorf("%s of %s, want a float type", n.OpType, x.DType)
	}
	if x.DType.computable() {
		return x, nil
	}
	return im.emit1(&Cast{To: Float32}, x)
}

// importIsInf compares with the infinities asked for.
func importIsInf(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	neg, err := attrInt(n, "detect_negative", 1)
	if err != nil {
		return nil, err
	}
	pos, err := attrInt(n, "detect_positive", 1)
	if err != nil {
		return nil, err
	}
	x, err := floatOperand(im, n, in[0])
	if err != nil {
		return nil, err
	}
	switch {
	case neg != 0 && pos != 0:
		abs, err := im.emit1(&Unary{Fn: Abs}, x)
		if err != nil {
			return nil, err
		}
		return one(im.emit1(&Binary{Fn: Equal}, abs, im.constScalarOf(x.DType, math.Inf(1))))
	case neg != 0:
		return one(im.emit1(&Binary{Fn: Equal}, x, im.constScalarOf(x.DType, math.Inf(-1))))
	case pos != 0:
		return one(im.emit1(&Binary{Fn: Equal}, x, im.constScalarOf(x.DType, math.Inf(1))))
	}
	return []*Value{im.constant(NewTensor(Bool, x.Shape))}, nil
}

func importBitCast(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	if n.Attr("to") == nil {
		return nil, fmt.Errorf("BitCast needs the attribute to")
	}
	to, err := n.AttrInt("to", 0)
	if err != nil {
		return nil, err
	}
	dt, err := DTypeFromONNX(onnx.DataType(to))
	if err != nil {
		return nil, fmt.Errorf("%w: BitCast to %v: %w", ErrNotSupported, onnx.DataType(to), err)
	}
	if in[0].DType == dt {
		return []*Value{in[0]}, nil
	}
	return one(im.emit1(&BitCast{To: dt}, in[0]))
}

// ---------------------------------------------------------------- BitCast

// BitCast reinterprets the bits of every element as type To, which has
// the same bit width as the input's type (little-endian, as ONNX
// defines it). A bool target reads any nonzero byte as true; the sub-byte
// types keep their low bits, sign-extended for the signed ones.
type BitCast struct {
	To DType
}

func (op *BitCast) Name() string { return "BitCast" }

func (op *BitCast) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	from := in[0].DType
	if from == String || op.To == String {
		return nil, fmt.Errorf("%w: bit-casting %s to %s (strings have no fixed width)", ErrNotSupported, from, op.To)
	}
	if fb, tb := from.ONNX().Bits(), op.To.ONNX().Bits(); fb != tb || fb == 0 {
		return nil, fmt.Errorf("cannot bit-cast %s (%d bits) to %s (%d bits): the widths must match", from, fb, op.To, tb)
	}
	return []Type{{op.To, in[0].Shape}}, nil
}

func (op *BitCast) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	copy(y.data, x.data)
	bits := op.To.ONNX().Bits()
	switch {
	case op.To == Bool:
		for i, b := range y.data {
			y.data[i] = b2u(b != 0)
		}
	case bits < 8:
		mask := byte(1)<<bits - 1
		for i, b := range y.data {
			b &= mask
			if op.To.IsSigned() && b&(1<<(bits-1)) != 0 {
				b |= ^mask
			}
			y.data[i] = b
		}
	}
	return nil
}

// ---------------------------------------------------------------- Det

func importDet(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	return one(im.emit1(&Det{}, in[0]))
}

// Det is the determinant of every square matrix in the last two axes of
// a float tensor [..., M, M], giving [...]: Gaussian elimination with
// partial pivoting in float64 (the determinant of a 0×0 matrix is 1).
type Det struct{}

func (op *Det) Name() string { return "Det" }

func (op *Det) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantDTypes("input", x, isFloat, "a float type"); err != nil {
		return nil, err
	}
	r := len(x.Shape)
	if r < 2 || x.Shape[r-1] != x.Shape[r-2] {
		return nil, fmt.Errorf("input shape %v, want [..., M, M]", x.Shape)
	}
	return []Type{{x.DType, x.Shape[:r-2].Clone()}}, nil
}

func (op *Det) Eval(in, out []*Tensor) error {
	x := in[0]
	r := len(x.shape)
	m := x.shape[r-1]
	xs := Convert(x, Float64).Float64s()
	dets := make([]float64, x.shape[:r-2].Size())
	a := make([]float64, m*m)
	for b := range dets {
		copy(a, xs[b*m*m:(b+1)*m*m])
		dets[b] = determinant(a, m)
	}
	storeFloats(out[0], dets)
	return nil
}

// determinant reduces the m×m row-major matrix a (overwritten) to upper
// triangular form, pivoting on the largest entry of each column.
func determinant(a []float64, m int) float64 {
	det := 1.0
	for c := range m {
		p := c
		for i := c + 1; i < m; i++ {
			if math.Abs(a[i*m+c]) > math.Abs(a[p*m+c]) {
				p = i
			}
		}
		if a[p*m+c] == 0 {
			return 0
		}
		if p != c {
			for j := range m {
				a[c*m+j], a[p*m+j] = a[p*m+j], a[c*m+j]
			}
			det = -det
		}
		pivot := a[c*m+c]
		det *= pivot
		for i := c + 1; i < m; i++ {
			f := a[i*m+c] / pivot
			for j := c + 1; j < m; j++ {
				a[i*m+j] -= f * a[c*m+j]
			}
		}
	}
	return det
}
