package ir

import (
	"fmt"
	"math"
)

type number interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

type floatT interface{ ~float32 | ~float64 }

func isFloatT[T number]() bool {
	var z T
	switch any(z).(type) {
	case float32, float64:
		return true
	}
	return false
}

// ---------------------------------------------------------------- Unary

// UnaryFn names an element-wise function of one operand.
type UnaryFn uint8

const (
	Neg UnaryFn = iota
	Abs
	Sqrt
	Exp
	Log
	Tanh
	Sigmoid
	Relu
	Erf
	Not        // bool
	Reciprocal // 1/x
	Floor
	Ceil
	Sign
	LeakyRelu // x if x >= 0 else Alpha·x
	Elu       // x if x >= 0 else Alpha·(exp(x)-1)
	Gelu      // x·Φ(x) = x/2·(1+erf(x/√2))
	GeluTanh  // x/2·(1+tanh(√(2/π)·(x+0.044715x³)))
	Softplus  // log(1+exp(x))
	Cos
	Sin
	Tan
	Acos
	Asin
	Atan
	Acosh
	Asinh
	Atanh
	Cosh
	Sinh
	Round           // to the nearest integer, halves to even
	BitwiseNot      // integers: ^x
	HardSwish       // x·max(0, min(1, x/6 + ½))
	Softsign        // x/(1+|x|)
	Mish            // x·tanh(softplus(x))
	Celu            // max(0, x) + min(0, Alpha·(exp(x/Alpha)-1))
	ThresholdedRelu // x if x > Alpha else 0
	Swish           // x·sigmoid(Alpha·x)
)

var unaryNames = [...]string{"Neg", "Abs", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Erf", "Not", "Reciprocal", "Floor", "Ceil", "Sign", "LeakyRelu", "Elu", "Gelu", "GeluTanh", "Softplus",
	"Cos", "Sin", "Tan", "Acos", "Asin", "Atan", "Acosh", "Asinh", "Atanh", "Cosh", "Sinh",
	"Round", "BitwiseNot", "HardSwish", "Softsign", "Mish", "Celu", "ThresholdedRelu", "Swish"}

func (f UnaryFn) String() string { return unaryNames[f] }

// Unary applies Fn to every element: out[i] = Fn(x[i]). Integer inputs
// are accepted by Neg, Abs, Relu and Sign; BitwiseNot takes only integers
// and Not only bools; the others take floats (float16/bfloat16 are
// computed in float32, float32 through float64).
type Unary struct {
	Fn    UnaryFn
	Alpha float32 // LeakyRelu, Elu, Celu, ThresholdedRelu, Swish
}

func (op *Unary) Name() string { return op.Fn.String() }

func (op *Unary) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	switch op.Fn {
	case Not:
		if err := wantDTypes("input", x, isBool, "bool"); err != nil {
			return nil, err
		}
	case Neg, Abs, Relu, Sign:
		if err := wantDTypes("input", x, isComputable, "a number type"); err != nil {
			return nil, err
		}
	case BitwiseNot:
		if err := wantDTypes("input", x, isIntType, "an integer type"); err != nil {
			return nil, err
		}
	default:
		if err := wantDTypes("input", x, isFloat, "a float type"); err != nil {
			return nil, err
		}
	}
	return []Type{x}, nil
}

func (op *Unary) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, y := in[0], out[0]
	if op.Fn == BitwiseNot {
		return bitwiseNot(x, y)
	}
	switch x.dtype {
	case Bool:
		a, b := view[bool](x), view[bool](y)
		for i := range a {
			b[i] = !a[i]
		}
	case Float32:
		unaryFloat(op, view[float32](x), view[float32](y))
	case Float64:
		unaryFloat(op, view[float64](x), view[float64](y))
	case Int8:
		unaryInt(op.Fn, view[int8](x), view[int8](y))
	case Int16:
		unaryInt(op.Fn, view[int16](x), view[int16](y))
	case Int32:
		unaryInt(op.Fn, view[int32](x), view[int32](y))
	case Int64:
		unaryInt(op.Fn, view[int64](x), view[int64](y))
	case Uint8:
		unaryInt(op.Fn, view[uint8](x), view[uint8](y))
	case Uint16:
		unaryInt(op.Fn, view[uint16](x), view[uint16](y))
	case Uint32:
		unaryInt(op.Fn, view[uint32](x), view[uint32](y))
	case Uint64:
		unaryInt(op.Fn, view[uint64](x), view[uint64](y))
	default:
		return fmt.Errorf("%s on %s is not supported", op.Name(), x.dtype)
	}
	return nil
}

// integerT is the set of Go integer types the integer dtypes are stored as.
type integerT interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

// bitwiseNot complements the bits of every element; signedness does not
// matter, so it works on the unsigned type of each width.
func bitwiseNot(x, y *Tensor) error {
	switch x.dtype.Size() {
	case 1:
		bitwiseNotTyped(view[uint8](x), view[uint8](y))
	case 2:
		bitwiseNotTyped(view[uint16](x), view[uint16](y))
	case 4:
		bitwiseNotTyped(view[uint32](x), view[uint32](y))
	case 8:
		bitwiseNotTyped(view[uint64](x), view[uint64](y))
	default:
		return fmt.Errorf("BitwiseNot on %s is not supported", x.dtype)
	}
	return nil
}

func bitwiseNotTyped[T integerT](x, y []T) {
	for i, v := range x {
		y[i] = ^v
	}
}

func unaryInt[T number](fn UnaryFn, x, y []T) {
	var zero T
	for i, v := range x {
		switch fn {
		case Neg:
			y[i] = zero - v
		case Abs:
			if v < zero {
				v = zero - v
			}
			y[i] = v
		case Relu:
			y[i] = max(v, zero)
		case Sign:
			switch {
			case v > zero:
				y[i] = 1
			case v < zero:
				y[i] = zero - 1
			default:
				y[i] = 0
			}
		}
	}
}

// UnaryFloat64 is the scalar definition of each float function, computed
// in float64; backends use it as their reference.
func UnaryFloat64(fn UnaryFn, alpha float64, v float64) float64 {
	switch fn {
	case Neg:
		return -v
	case Abs:
		return math.Abs(v)
	case Sqrt:
		return math.Sqrt(v)
	case Exp:
		return math.Exp(v)
	case Log:
		return math.Log(v)
	case Tanh:
		return math.Tanh(v)
	case Sigmoid:
		if v >= 0 {
			return 1 / (1 + math.Exp(-v))
		}
		e := math.Exp(v)
		return e / (1 + e)
	case Relu:
		if v > 0 {
			return v
		}
		if v == 0 || v < 0 {
			return 0
		}
		return v // NaN
	case Erf:
		return math.Erf(v)
	case Reciprocal:
		return 1 / v
	case Floor:
		return math.Floor(v)
	case Ceil:
		return math.Ceil(v)
	case Sign:
		switch {
		case v > 0:
			return 1
		case v < 0:
			return -1
		}
		return v // ±0, NaN
	case LeakyRelu:
		if v >= 0 {
			return v
		}
		return alpha * v
	case Elu:
		if v >= 0 {
			return v
		}
		return alpha * math.Expm1(v)
	case Gelu:
		return 0.5 * v * (1 + math.Erf(v/math.Sqrt2))
	case GeluTanh:
		return 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
	case Softplus:
		if v > 0 {
			return v + math.Log1p(math.Exp(-v))
		}
		return math.Log1p(math.Exp(v))
	case Cos:
		return math.Cos(v)
	case Sin:
		return math.Sin(v)
	case Tan:
		return math.Tan(v)
	case Acos:
		return math.Acos(v)
	case Asin:
		return math.Asin(v)
	case Atan:
		return math.Atan(v)
	case Acosh:
		return math.Acosh(v)
	case Asinh:
		return math.Asinh(v)
	case Atanh:
		return math.Atanh(v)
	case Cosh:
		return math.Cosh(v)
	case Sinh:
		return math.Sinh(v)
	case Round:
		return math.RoundToEven(v)
	case HardSwish:
		return v * math.Max(0, math.Min(1, v/6+0.5))
	case Softsign:
		return v / (1 + math.Abs(v))
	case Mish:
		return v * math.Tanh(UnaryFloat64(Softplus, 0, v))
	case Celu:
		return math.Max(0, v) + math.Min(0, alpha*math.Expm1(v/alpha))
	case ThresholdedRelu:
		if v > alpha {
			return v
		}
		if v != v {
			return v
		}
		return 0
	case Swish:
		return v * UnaryFloat64(Sigmoid, 0, alpha*v)
	}
	panic("ir: unknown unary function")
}

func unaryFloat[T floatT](op *Unary, x, y []T) {
	alpha := float64(op.Alpha)
	for i, v := range x {
		y[i] = T(UnaryFloat64(op.Fn, alpha, float64(v)))
	}
}

// ---------------------------------------------------------------- Binary

// BinaryFn names an element-wise function of two operands.
type BinaryFn uint8

const (
	Add BinaryFn = iota
	Sub
	Mul
	Div
	Pow
	Max
	Min
	Equal
	Less
	Greater
	LessOrEqual
	GreaterOrEqual
	And
	Or
	Xor
	Mod           // the remainder with the divisor's sign (Python's %); integers give 0 for a zero divisor
	Fmod          // the remainder with the dividend's sign (C's fmod); integers give 0 for a zero divisor
	BitShiftLeft  // integers: a << b (0 once b reaches the width)
	BitShiftRight // integers: a >> b, logical for unsigned types
	BitwiseAnd    // integers: a & b
	BitwiseOr     // integers: a | b
	BitwiseXor    // integers: a ^ b
)

var binaryNames = [...]string{"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
	"Mod", "Fmod", "BitShiftLeft", "BitShiftRight", "BitwiseAnd", "BitwiseOr", "BitwiseXor"}

func (f BinaryFn) String() string { return binaryNames[f] }

// IsComparison reports whether f returns bools from numbers.
func (f BinaryFn) IsComparison() bool { return f >= Equal && f <= GreaterOrEqual }

// IsLogical reports whether f combines bools.
func (f BinaryFn) IsLogical() bool { return f >= And && f <= Xor }

// IsBitwise reports whether f works on the bits of integers.
func (f BinaryFn) IsBitwise() bool { return f >= BitShiftLeft && f <= BitwiseXor }

// Binary applies Fn element-wise with numpy broadcasting:
// out[i] = Fn(a[ia], b[ib]). Both operands have one dtype, except Pow,
// whose exponent may have any number type (the result has the base's).
// Integer Div truncates toward zero and gives 0 for a zero divisor; Max and
// Min propagate NaN. The bitwise functions take integers only.
type Binary struct {
	Fn BinaryFn
}

func (op *Binary) Name() string { return op.Fn.String() }

func (op *Binary) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	a, b := in[0], in[1]
	shape, err := BroadcastShapes(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	switch {
	case op.Fn.IsLogical():
		if a.DType != Bool || b.DType != Bool {
			return nil, fmt.Errorf("operands are %s and %s, want bool", a.DType, b.DType)
		}
		return []Type{{Bool, shape}}, nil
	case op.Fn == Pow:
		if !a.DType.computable() || !b.DType.computable() {
			return nil, fmt.Errorf("operands are %s and %s, want number types", a.DType, b.DType)
		}
		return []Type{{a.DType, shape}}, nil
	}
	if a.DType != b.DType {
		return nil, fmt.Errorf("operand dtypes differ: %s and %s", a.DType, b.DType)
	}
	if op.Fn == Equal && a.DType == Bool {
		return []Type{{Bool, shape}}, nil
	}
	if !a.DType.computable() {
		return nil, fmt.Errorf("operands are %s, want a number type", a.DType)
	}
	if op.Fn.IsComparison() {
		return []Type{{Bool, shape}}, nil
	}
	if op.Fn.IsBitwise() && !a.DType.IsInt() {
		return nil, fmt.Errorf("operands are %s, want an integer type", a.DType)
	}
	return []Type{{a.DType, shape}}, nil
}

func (op *Binary) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	a, b, o := in[0], in[1], out[0]
	ix := newRunIndexer(o.shape, a.shape, b.shape)
	if op.Fn.IsLogical() || (op.Fn == Equal && a.dtype == Bool) {
		binaryLoop(ix, view[bool](a), view[bool](b), view[bool](o), logicalFn(op.Fn))
		return nil
	}
	if op.Fn == Pow && a.dtype != b.dtype {
		// Mixed types: compute in float64, convert to the base's type.
		fa, fb := Convert(a, Float64), Convert(b, Float64)
		fo := NewTensor(Float64, o.shape)
		binaryLoop(ix, view[float64](fa), view[float64](fb), view[float64](fo), math.Pow)
		if a.dtype.IsInt() {
			for i, v := range view[float64](fo) {
				storeInt(o, i, int64(v), true, RoundUp)
			}
		} else {
			convertInto(o, fo, true, RoundUp)
		}
		return nil
	}
	if op.Fn.IsBitwise() || ((op.Fn == Mod || op.Fn == Fmod) && a.dtype.IsInt()) {
		return binaryInteger(op.Fn, ix, a, b, o)
	}
	switch a.dtype {
	case Float32:
		return binaryTyped(op.Fn, ix, view[float32](a), view[float32](b), o)
	case Float64:
		return binaryTyped(op.Fn, ix, view[float64](a), view[float64](b), o)
	case Int8:
		return binaryTyped(op.Fn, ix, view[int8](a), view[int8](b), o)
	case Int16:
		return binaryTyped(op.Fn, ix, view[int16](a), view[int16](b), o)
	case Int32:
		return binaryTyped(op.Fn, ix, view[int32](a), view[int32](b), o)
	case Int64:
		return binaryTyped(op.Fn, ix, view[int64](a), view[int64](b), o)
	case Uint8:
		return binaryTyped(op.Fn, ix, view[uint8](a), view[uint8](b), o)
	case Uint16:
		return binaryTyped(op.Fn, ix, view[uint16](a), view[uint16](b), o)
	case Uint32:
		return binaryTyped(op.Fn, ix, view[uint32](a), view[uint32](b), o)
	case Uint64:
		return binaryTyped(op.Fn, ix, view[uint64](a), view[uint64](b), o)
	}
	return fmt.Errorf("%s on %s is not supported", op.Name(), a.dtype)
}

// binaryInteger evaluates the functions defined only on integers (and
// Mod, Fmod on integers).
func binaryInteger(fn BinaryFn, ix *runIndexer, a, b, o *Tensor) error {
	switch a.dtype {
	case Int8:
		binaryLoop(ix, view[int8](a), view[int8](b), view[int8](o), integerFn[int8](fn))
	case Int16:
		binaryLoop(ix, view[int16](a), view[int16](b), view[int16](o), integerFn[int16](fn))
	case Int32:
		binaryLoop(ix, view[int32](a), view[int32](b), view[int32](o), integerFn[int32](fn))
	case Int64:
		binaryLoop(ix, view[int64](a), view[int64](b), view[int64](o), integerFn[int64](fn))
	case Uint8:
		binaryLoop(ix, view[uint8](a), view[uint8](b), view[uint8](o), integerFn[uint8](fn))
	case Uint16:
		binaryLoop(ix, view[uint16](a), view[uint16](b), view[uint16](o), integerFn[uint16](fn))
	case Uint32:
		binaryLoop(ix, view[uint32](a), view[uint32](b), view[uint32](o), integerFn[uint32](fn))
	case Uint64:
		binaryLoop(ix, view[uint64](a), view[uint64](b), view[uint64](o), integerFn[uint64](fn))
	default:
		return fmt.Errorf("%s on %s is not supported", fn, a.dtype)
	}
	return nil
}

func integerFn[T integerT](fn BinaryFn) func(a, b T) T {
	switch fn {
	case Mod:
		return func(a, b T) T {
			if b == 0 {
				return 0
			}
			r := a % b
			if r != 0 && (r < 0) != (b < 0) {
				r += b
			}
			return r
		}
	case Fmod:
		return func(a, b T) T {
			if b == 0 {
				return 0
			}
			return a % b
		}
	case BitShiftLeft:
		return func(a, b T) T { return a << uint64(b) }
	case BitShiftRight:
		return func(a, b T) T { return a >> uint64(b) }
	case BitwiseAnd:
		return func(a, b T) T { return a & b }
	case BitwiseOr:
		return func(a, b T) T { return a | b }
	case BitwiseXor:
		return func(a, b T) T { return a ^ b }
	}
	panic("ir: not an integer function: " + fn.String())
}

func binaryLoop[A, B, O any](ix *runIndexer, a []A, b []B, o []O, f func(A, B) O) {
	sa, sb := ix.step[0], ix.step[1]
	n := ix.inner
	ix.forRuns(func(off int, base []int) {
		ia, ib := base[0], base[1]
		for i := range n {
			o[off+i] = f(a[ia+i*sa], b[ib+i*sb])
		}
	})
}

func logicalFn(fn BinaryFn) func(a, b bool) bool {
	switch fn {
	case And:
		return func(a, b bool) bool { return a && b }
	case Or:
		return func(a, b bool) bool { return a || b }
	case Xor, Less: // Less on bools is not reachable; Xor is a != b
		return func(a, b bool) bool { return a != b }
	}
	return func(a, b bool) bool { return a == b }
}

func binaryTyped[T number](fn BinaryFn, ix *runIndexer, a, b []T, o *Tensor) error {
	if fn.IsComparison() {
		binaryLoop(ix, a, b, view[bool](o), compareFn[T](fn))
		return nil
	}
	binaryLoop(ix, a, b, view[T](o), arithFn[T](fn))
	return nil
}

func compareFn[T number](fn BinaryFn) func(a, b T) bool {
	switch fn {
	case Equal:
		return func(a, b T) bool { return a == b }
	case Less:
		return func(a, b T) bool { return a < b }
	case Greater:
		return func(a, b T) bool { return a > b }
	case LessOrEqual:
		return func(a, b T) bool { return a <= b }
	}
	return func(a, b T) bool { return a >= b }
}

// ArithFloat64 is the scalar definition of the arithmetic functions for
// floats.
func ArithFloat64(fn BinaryFn, a, b float64) float64 {
	switch fn {
	case Add:
		return a + b
	case Sub:
		return a - b
	case Mul:
		return a * b
	case Div:
		return a / b
	case Pow:
		return math.Pow(a, b)
	case Max:
		if a != a || b != b {
			return math.NaN()
		}
		return math.Max(a, b)
	case Min:
		if a != a || b != b {
			return math.NaN()
		}
		return math.Min(a, b)
	case Fmod:
		return math.Mod(a, b)
	case Mod:
		r := math.Mod(a, b)
		if r != 0 && (r < 0) != (b < 0) {
			r += b
		}
		return r
	}
	panic("ir: not an arithmetic function")
}

func arithFn[T number](fn BinaryFn) func(a, b T) T {
	if isFloatT[T]() {
		switch fn {
		case Add:
			return func(a, b T) T { return a + b }
		case Sub:
			return func(a, b T) T { return a - b }
		case Mul:
			return func(a, b T) T { return a * b }
		case Div:
			return func(a, b T) T { return a / b }
		}
		return func(a, b T) T { return T(ArithFloat64(fn, float64(a), float64(b))) }
	}
	switch fn {
	case Add:
		return func(a, b T) T { return a + b }
	case Sub:
		return func(a, b T) T { return a - b }
	case Mul:
		return func(a, b T) T { return a * b }
	case Div:
		return func(a, b T) T {
			if b == 0 {
				return 0
			}
			return a / b
		}
	case Max:
		return func(a, b T) T { return max(a, b) }
	case Min:
		return func(a, b T) T { return min(a, b) }
	}
	// Pow with an integer base and exponent of the same type.
	return func(a, b T) T { return T(math.Pow(float64(a), float64(b))) }
}

// ---------------------------------------------------------------- Where

// Where selects element-wise with broadcasting: out = cond ? x : y.
type Where struct{}

func (op *Where) Name() string { return "Where" }

func (op *Where) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 3, 3); err != nil {
		return nil, err
	}
	if in[0].DType != Bool {
		return nil, fmt.Errorf("condition is %s, want bool", in[0].DType)
	}
	if in[1].DType != in[2].DType {
		return nil, fmt.Errorf("branch dtypes differ: %s and %s", in[1].DType, in[2].DType)
	}
	shape, err := BroadcastShapes(in[0].Shape, in[1].Shape, in[2].Shape)
	if err != nil {
		return nil, err
	}
	return []Type{{in[1].DType, shape}}, nil
}

func (op *Where) Eval(in, out []*Tensor) error {
	switch in[1].dtype.Size() {
	case 1:
		whereTyped[uint8](in, out[0])
	case 2:
		whereTyped[uint16](in, out[0])
	case 4:
		whereTyped[uint32](in, out[0])
	case 8:
		whereTyped[uint64](in, out[0])
	}
	return nil
}

func whereTyped[E any](in []*Tensor, o *Tensor) {
	ix := newRunIndexer(o.shape, in[0].shape, in[1].shape, in[2].shape)
	c, x, y, out := view[bool](in[0]), view[E](in[1]), view[E](in[2]), view[E](o)
	sc, sx, sy, n := ix.step[0], ix.step[1], ix.step[2], ix.inner
	ix.forRuns(func(off int, base []int) {
		for i := range n {
			if c[base[0]+i*sc] {
				out[off+i] = x[base[1]+i*sx]
			} else {
				out[off+i] = y[base[2]+i*sy]
			}
		}
	})
}

// ---------------------------------------------------------------- Cast

// Cast converts every element to To: floats to integers truncate toward
// zero (saturating; NaN gives 0), numbers to bool test != 0, narrowing
// float conversions round to nearest even. Saturate (8-bit float targets)
// clamps out-of-range values to the largest finite one instead of
// Inf/NaN; Round is float8e8m0's rounding.
type Cast struct {
	To       DType
	Saturate bool
	Round    RoundMode
}

func (op *Cast) Name() string { return "Cast" }

func (op *Cast) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	return []Type{{op.To, in[0].Shape}}, nil
}

func (op *Cast) Eval(in, out []*Tensor) error {
	convertInto(out[0], in[0], op.Saturate, op.Round)
	return nil
}

// ---------------------------------------------------------------- Clip

// Clip clamps every element to [min, max]; the bounds are optional scalar
// inputs 1 and 2 (absent: unbounded). out = min(max(x, lo), hi), so lo >
// hi gives hi everywhere.
type Clip struct{}

func (op *Clip) Name() string { return "Clip" }

func (op *Clip) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 3); err != nil {
		return nil, err
	}
	if err := wantDTypes("input", in[0], isComputable, "a number type"); err != nil {
		return nil, err
	}
	for i := 1; i < len(in); i++ {
		if t, ok := optional(in, i); ok {
			if t.DType != in[0].DType || t.Shape.Size() != 1 {
				return nil, fmt.Errorf("bound %d is %v, want a single %s", i, t, in[0].DType)
			}
		}
	}
	return []Type{in[0]}, nil
}

func (op *Clip) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x := in[0]
	lo, hi := optIn(in, 1), optIn(in, 2)
	switch x.dtype {
	case Float32:
		clipTyped[float32](x, lo, hi, out[0])
	case Float64:
		clipTyped[float64](x, lo, hi, out[0])
	case Int8:
		clipTyped[int8](x, lo, hi, out[0])
	case Int16:
		clipTyped[int16](x, lo, hi, out[0])
	case Int32:
		clipTyped[int32](x, lo, hi, out[0])
	case Int64:
		clipTyped[int64](x, lo, hi, out[0])
	case Uint8:
		clipTyped[uint8](x, lo, hi, out[0])
	case Uint16:
		clipTyped[uint16](x, lo, hi, out[0])
	case Uint32:
		clipTyped[uint32](x, lo, hi, out[0])
	case Uint64:
		clipTyped[uint64](x, lo, hi, out[0])
	default:
		return fmt.Errorf("Clip on %s is not supported", x.dtype)
	}
	return nil
}

func clipTyped[T number](x, lo, hi, o *Tensor) {
	xs, ys := view[T](x), view[T](o)
	copy(ys, xs)
	if lo != nil {
		l := view[T](lo)[0]
		for i, v := range ys {
			if v < l {
				ys[i] = l
			}
		}
	}
	if hi != nil {
		h := view[T](hi)[0]
		for i, v := range ys {
			if v > h {
				ys[i] = h
			}
		}
	}
}
