package ir

import (
	"fmt"
)

// Type is what shape inference knows about a value: its dtype and its
// static shape. The zero Type stands for an omitted optional input.
type Type struct {
	DType DType
	Shape Shape
}

func (t Type) String() string {
	if t.DType == InvalidDType {
		return "(none)"
	}
	return t.DType.String() + t.Shape.String()
}

// Present reports whether the type describes a value (not an omitted
// optional input).
func (t Type) Present() bool { return t.DType != InvalidDType }

// Op is one operation of the IR with its attributes normalized at import:
// axes are resolved and non-negative, shapes are static, and every operand
// that decides an output shape has been folded into an attribute. The set
// of ops is closed (backends switch on the concrete types); internal ops
// that ONNX lacks live here too.
type Op interface {
	// Name is the op's IR name ("MatMul", "Binary(Add)", ...), for
	// messages and listings.
	Name() string
	// Infer checks the input types (an omitted optional input has the
	// zero Type) and returns the type of every output the op can have.
	Infer(in []Type) ([]Type, error)
	// Eval is the reference implementation: it computes the outputs into
	// out, whose tensors are allocated with the inferred types (a nil
	// entry is an output nobody reads). It allocates freely; backends
	// have their own kernels for the ops that matter for speed.
	Eval(in, out []*Tensor) error
}

func typesOf(ts []*Tensor) []Type {
	out := make([]Type, len(ts))
	for i, t := range ts {
		if t != nil {
			out[i] = Type{t.dtype, t.shape}
		}
	}
	return out
}

// EvalOp infers the output types of op for the given inputs, allocates
// the outputs and evaluates them with the reference implementation.
func EvalOp(op Op, in ...*Tensor) ([]*Tensor, error) {
	types, err := op.Infer(typesOf(in))
	if err != nil {
		return nil, err
	}
	out := make([]*Tensor, len(types))
	for i, t := range types {
		out[i] = NewTensor(t.DType, t.Shape)
	}
	if err := op.Eval(in, out); err != nil {
		return nil, err
	}
	return out, nil
}

// wantInputs checks the number of (present or omitted) inputs.
func wantInputs(in []Type, lo, hi int) error {
	if len(in) < lo || len(in) > hi {
		if lo == hi {
			return fmt.Errorf("want %d inputs, got %d", lo, len(in))
		}
		return fmt.Errorf("want %d to %d inputs, got %d", lo, hi, len(in))
	}
	for i := range lo {
		if !in[i].Present() {
			return fmt.Errorf("input %d is required", i)
		}
	}
	return nil
}

func optional(in []Type, i int) (Type, bool) {
	if i < len(in) && in[i].Present() {
		return in[i], true
	}
	return Type{}, false
}

// optIn is input i (a value or tensor) when the node has it, else nil.
func optIn[E any](in []*E, i int) *E {
	if i < len(in) {
		return in[i]
	}
	return nil
}

func wantDTypes(what string, t Type, ok func(DType) bool, want string) error {
	if !ok(t.DType) {
		return fmt.Errorf("%s is %s, want %s", what, t.DType, want)
	}
	return nil
}

func isComputable(d DType) bool { return d.computable() }
func isFloat(d DType) bool      { return d.computable() && d.IsFloat() }
func isIntType(d DType) bool    { return d.computable() && d.IsInt() }
func isIndex(d DType) bool      { return d == Int32 || d == Int64 }
func isBool(d DType) bool       { return d == Bool }
func isAny(d DType) bool        { return d != InvalidDType }

// normAxis resolves a possibly negative axis against rank, accepting
// [-rank, rank).
func normAxis(axis, rank int) (int, error) {
	if axis < -rank || axis >= rank {
		return 0, fmt.Errorf("axis %d out of range for rank %d", axis, rank)
	}
	if axis < 0 {
		axis += rank
	}
	return axis, nil
}

// widenNarrow evaluates an op on float16/bfloat16 operands by converting
// them to float32, running eval, and rounding the float32 results back to
// the narrow type of the matching output. It reports whether it ran
// (false: no narrow operands, the caller evaluates directly).
func widenNarrow(in, out []*Tensor, eval func(in, out []*Tensor) error) (bool, error) {
	narrow := false
	for _, t := range in {
		if t != nil && t.dtype.narrowFloat() {
			narrow = true
		}
	}
	for _, t := range out {
		if t != nil && t.dtype.narrowFloat() {
			narrow = true
		}
	}
	if !narrow {
		return false, nil
	}
	win := make([]*Tensor, len(in))
	for i, t := range in {
		if t != nil && t.dtype.narrowFloat() {
			win[i] = NewTensor(Float32, t.shape)
			convertInto(win[i], t, true, RoundUp)
		} else {
			win[i] = t
		}
	}
	wout := make([]*Tensor, len(out))
	for i, t := range out {
		if t != nil && t.dtype.narrowFloat() {
			wout[i] = NewTensor(Float32, t.shape)
		} else {
			wout[i] = t
		}
	}
	if err := eval(win, wout); err != nil {
		return true, err
	}
	for i, t := range out {
		if t != nil && t.dtype.narrowFloat() {
			convertInto(t, wout[i], true, RoundUp)
		}
	}
	return true, nil
}

// iotaInts is 0, 1, ..., n-1 (every axis of a rank-n tensor, say).
func iotaInts(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// iotaInt64 is an int64 tensor of shape holding 0, 1, 2, ... in
// row-major order.
func iotaInt64(shape Shape) *Tensor {
	t := NewTensor(Int64, shape)
	for i := range t.Int64s() {
		t.Int64s()[i] = int64(i)
	}
	return t
}

// iotaAlong is 0, 1, ..., n-1 along axis of a tensor of rank rank whose
// other dimensions are 1 (an iota that broadcasts along the others).
func iotaAlong(rank, axis, n int) *Tensor {
	shape := Shape(ones(rank))
	shape[axis] = n
	return iotaInt64(shape)
}
