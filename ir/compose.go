package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// composer emits the IR ops that an ONNX operator is imported as, for the
// operators written as a composition of existing ops (RMSNormalization,
// RotaryEmbedding, Attention, ...): their CPU kernels, gradients and
// lowerings then come with the ops they are made of. The first error
// stops the chain: every later call returns nil and emits nothing, so an
// importer checks err once, after the last op.
type composer struct {
	im  *importer
	err error
}

func (c *composer) ops(op Op, in ...*Value) []*Value {
	if c.err != nil {
		return nil
	}
	outs, err := c.im.emit(op, in...)
	if err != nil {
		c.err = err
		return nil
	}
	return outs
}

func (c *composer) op(op Op, in ...*Value) *Value {
	outs := c.ops(op, in...)
	if outs == nil {
		return nil
	}
	return outs[0]
}

func (c *composer) binary(fn BinaryFn, a, b *Value) *Value { return c.op(&Binary{Fn: fn}, a, b) }
func (c *composer) unary(fn UnaryFn, x *Value) *Value      { return c.op(&Unary{Fn: fn}, x) }
func (c *composer) add(a, b *Value) *Value                 { return c.binary(Add, a, b) }
func (c *composer) mul(a, b *Value) *Value                 { return c.binary(Mul, a, b) }

// scalar is a constant of dtype dt holding v (rounded to dt).
func (c *composer) scalar(dt DType, v float64) *Value {
	t := NewTensor(dt, Shape{})
	storeFloat(t, 0, v, true, RoundUp)
	return c.im.constant(t)
}

// scale is x·s, or x itself when s is 1.
func (c *composer) scale(x *Value, s float64) *Value {
	if c.err != nil || s == 1 {
		return x
	}
	return c.mul(x, c.scalar(x.DType, s))
}

func (c *composer) reshape(x *Value, shape Shape) *Value {
	if c.err != nil {
		return nil
	}
	v, err := c.im.reshape(x, shape)
	if err != nil {
		c.err = err
	}
	return v
}

func (c *composer) transpose(x *Value, perm ...int) *Value {
	if c.err != nil {
		return nil
	}
	identity := true
	for i, p := range perm {
		identity = identity && p == i
	}
	if identity {
		return x
	}
	return c.op(&Transpose{Perm: perm}, x)
}

// cast converts x to dt (x itself when it already is; nil stays nil).
func (c *composer) cast(x *Value, dt DType) *Value {
	if c.err != nil || x == nil {
		return nil
	}
	if x.DType == dt {
		return x
	}
	return c.op(&Cast{To: dt, Saturate: true}, x)
}

// slice takes count elements of x along axis, from start in steps of step.
func (c *composer) slice(x *Value, axis, start, count, step int) *Value {
	if c.err != nil {
		return nil
	}
	r := len(x.Shape)
	op := &Slice{Starts: make([]int, r), Steps: make([]int, r), Sizes: x.Shape.Clone()}
	for d := range r {
		op.Steps[d] = 1
	}
	op.Starts[axis], op.Steps[axis], op.Sizes[axis] = start, step, count
	if start == 0 && step == 1 && count == x.Shape[axis] {
		return x
	}
	return c.op(op, x)
}

func (c *composer) concat(axis int, parts ...*Value) *Value {
	if c.err != nil {
		return nil
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return c.op(&Concat{Axis: axis}, parts...)
}

// silu is x·sigmoid(x), computed in float32 for the narrow float types.
func (c *composer) silu(x *Value) *Value {
	if c.err != nil {
		return nil
	}
	w := c.cast(x, computeType(x.DType, Float32))
	return c.cast(c.mul(w, c.unary(Sigmoid, w)), x.DType)
}

// fail records an error (the first one wins).
func (c *composer) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(format, args...)
	}
}

// filled is a constant of dtype dt and the given shape with every element
// v.
func (c *composer) filled(dt DType, shape Shape, v float64) *Value {
	if c.err != nil {
		return nil
	}
	if err := checkShape(shape, dt.Size(), maxFoldBytes); err != nil {
		c.err = err
		return nil
	}
	return c.im.constant(filled(dt, shape, v))
}

// table is a constant of dtype dt and shape [..1, rows, cols] (leading
// dimensions of size 1) holding f(i, j) at row i, column j: the masks and
// position grids attention builds from its sizes. Its size is bounded like
// every folded constant's.
func (c *composer) table(dt DType, shape Shape, f func(i, j int) float64) *Value {
	if c.err != nil {
		return nil
	}
	if err := checkShape(shape, dt.Size(), maxFoldBytes); err != nil {
		c.err = err
		return nil
	}
	rows, cols := 1, shape[len(shape)-1]
	if len(shape) > 1 {
		rows = shape[len(shape)-2]
	}
	t := NewTensor(dt, shape)
	for i := range rows {
		for j := range cols {
			if v := f(i, j); v != 0 {
				storeFloat(t, i*cols+j, v, true, RoundUp)
			}
		}
	}
	return c.im.constant(t)
}

// ---------------------------------------------------------------- attributes

// attrFloatOpt reads an optional float attribute: its value and whether
// the node has it.
func attrFloatOpt(n *onnx.Node, name string) (float64, bool, error) {
	if n.Attr(name) == nil {
		return 0, false, nil
	}
	v, err := n.AttrFloat(name, 0)
	if err != nil {
		return 0, false, err
	}
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return 0, false, fmt.Errorf("attribute %s is %v, want a finite number", name, v)
	}
	return float64(v), true, nil
}

// attrBool reads a 0/1 integer attribute.
func attrBool(n *onnx.Node, name string) (bool, error) {
	v, err := attrInt(n, name, 0)
	if err != nil {
		return false, err
	}
	if v != 0 && v != 1 {
		return false, fmt.Errorf("attribute %s is %d, want 0 or 1", name, v)
	}
	return v == 1, nil
}

// attrCount reads a non-negative integer attribute (0 when absent) that
// sizes something, bounded so that products of it stay far from
// overflow.
func attrCount(n *onnx.Node, name string) (int, error) {
	v, err := n.AttrInt(name, 0)
	if err != nil {
		return 0, err
	}
	if v < 0 || v > 1<<24 {
		return 0, fmt.Errorf("attribute %s is %d, want 0 to %d", name, v, 1<<24)
	}
	return int(v), nil
}

// sameFloatInputs checks that every present value is of one float type
// and returns it.
func sameFloatInputs(names []string, vs ...*Value) (DType, error) {
	dt := InvalidDType
	for i, v := range vs {
		if v == nil {
			continue
		}
		if !isFloat(v.DType) {
			return 0, fmt.Errorf("%s is %s, want a float type", names[i], v.DType)
		}
		if dt == InvalidDType {
			dt = v.DType
		} else if v.DType != dt {
			return 0, fmt.Errorf("%s is %s, want %s like %s", names[i], v.DType, dt, names[0])
		}
	}
	return dt, nil
}
