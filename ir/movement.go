package ir

import (
	"fmt"
	"slices"
)

// The data-movement ops work on any dtype: they copy elements by their
// byte size.

type word interface {
	uint8 | uint16 | uint32 | uint64
}

// byWidth calls the instantiation of f for the element width of dt.
func byWidth(dt DType, f1, f2, f4, f8 func()) {
	switch dt.Size() {
	case 1:
		f1()
	case 2:
		f2()
	case 4:
		f4()
	case 8:
		f8()
	}
}

// IndexError is the run-time error of an index outside its axis: the
// index ops (Gather, GatherElements, the scatters, ...) report it naming
// themselves, and callers can tell it apart with errors.As.
type IndexError struct {
	Op     string // the op that read the index
	Index  int64
	Lo, Hi int // the valid range [Lo, Hi)
}

func (e *IndexError) Error() string {
	return fmt.Sprintf("%s index %d out of range [%d, %d)", e.Op, e.Index, e.Lo, e.Hi)
}

// ---------------------------------------------------------------- Reshape

// Reshape gives the input a new static shape with the same element count
// (ONNX Reshape, Flatten, Squeeze and Unsqueeze all import as this). The
// data is unchanged; backends make it a view.
type Reshape struct {
	Shape Shape
}

func (op *Reshape) Name() string { return "Reshape" }

func (op *Reshape) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if op.Shape.Size() != in[0].Shape.Size() {
		return nil, fmt.Errorf("cannot reshape %v (%d elements) to %v", in[0].Shape, in[0].Shape.Size(), op.Shape)
	}
	return []Type{{in[0].DType, op.Shape}}, nil
}

func (op *Reshape) Eval(in, out []*Tensor) error {
	copy(out[0].data, in[0].data)
	return nil
}

// ---------------------------------------------------------------- Copy

// Copy is the identity on tensors: out = x. Import turns ONNX Identity into
// plain value aliasing; Copy is for graphs that must materialize a value.
type Copy struct{}

func (op *Copy) Name() string { return "Copy" }

func (op *Copy) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	return []Type{in[0]}, nil
}

func (op *Copy) Eval(in, out []*Tensor) error {
	copy(out[0].data, in[0].data)
	return nil
}

// ---------------------------------------------------------------- Transpose

// Transpose permutes the axes: out dimension i is input dimension Perm[i].
type Transpose struct {
	Perm []int
}

func (op *Transpose) Name() string { return "Transpose" }

func (op *Transpose) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if len(op.Perm) != len(x.Shape) {
		return nil, fmt.Errorf("perm %v for rank %d", op.Perm, len(x.Shape))
	}
	seen := make([]bool, len(op.Perm))
	shape := make(Shape, len(op.Perm))
	for i, p := range op.Perm {
		if p < 0 || p >= len(seen) || seen[p] {
			return nil, fmt.Errorf("perm %v is not a permutation", op.Perm)
		}
		seen[p] = true
		shape[i] = x.Shape[p]
	}
	return []Type{{x.DType, shape}}, nil
}

func (op *Transpose) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	st := x.shape.Strides()
	perm := make([]int, len(op.Perm))
	for i, p := range op.Perm {
		perm[i] = st[p]
	}
	byWidth(x.dtype,
		func() { gatherStrided(view[uint8](x), view[uint8](y), y.shape, perm, 0) },
		func() { gatherStrided(view[uint16](x), view[uint16](y), y.shape, perm, 0) },
		func() { gatherStrided(view[uint32](x), view[uint32](y), y.shape, perm, 0) },
		func() { gatherStrided(view[uint64](x), view[uint64](y), y.shape, perm, 0) })
	return nil
}

// gatherStrided fills out (row-major over shape) with x[offset + Σ idx·strides].
func gatherStrided[E word](x, out []E, shape Shape, strides []int, offset int) {
	ix := &runIndexer{inner: 1}
	if len(shape) > 0 {
		last := len(shape) - 1
		ix.inner = shape[last]
		ix.outer = shape[:last]
		ix.step = []int{strides[last]}
		ix.strides = [][]int{strides[:last]}
	} else {
		ix.step = []int{0}
		ix.strides = [][]int{nil}
	}
	s, n := ix.step[0], ix.inner
	ix.forRuns(func(o int, base []int) {
		b := base[0] + offset
		for i := range n {
			out[o+i] = x[b+i*s]
		}
	})
}

// ---------------------------------------------------------------- Expand

// Expand broadcasts the input to Shape (numpy rules; Shape is the
// broadcast of the input shape and ONNX's shape operand).
type Expand struct {
	Shape Shape
}

func (op *Expand) Name() string { return "Expand" }

func (op *Expand) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	s, err := BroadcastShapes(in[0].Shape, op.Shape)
	if err != nil || !s.Equal(op.Shape) {
		return nil, fmt.Errorf("cannot expand %v to %v", in[0].Shape, op.Shape)
	}
	return []Type{{in[0].DType, op.Shape}}, nil
}

func (op *Expand) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	st := BroadcastStrides(x.shape, y.shape)
	byWidth(x.dtype,
		func() { gatherStrided(view[uint8](x), view[uint8](y), y.shape, st, 0) },
		func() { gatherStrided(view[uint16](x), view[uint16](y), y.shape, st, 0) },
		func() { gatherStrided(view[uint32](x), view[uint32](y), y.shape, st, 0) },
		func() { gatherStrided(view[uint64](x), view[uint64](y), y.shape, st, 0) })
	return nil
}

// ---------------------------------------------------------------- Concat

// Concat joins the inputs along Axis.
type Concat struct {
	Axis int
}

func (op *Concat) Name() string { return "Concat" }

func (op *Concat) Infer(in []Type) ([]Type, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("want at least one input")
	}
	first := in[0]
	if op.Axis < 0 || op.Axis >= len(first.Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(first.Shape))
	}
	shape := first.Shape.Clone()
	shape[op.Axis] = 0
	for i, t := range in {
		if !t.Present() {
			return nil, fmt.Errorf("input %d is required", i)
		}
		if t.DType != first.DType || len(t.Shape) != len(shape) {
			return nil, fmt.Errorf("input %d is %v, want %s of rank %d", i, t, first.DType, len(shape))
		}
		for d := range shape {
			if d != op.Axis && t.Shape[d] != shape[d] {
				return nil, fmt.Errorf("input %d has shape %v, incompatible with %v on axis %d", i, t.Shape, first.Shape, d)
			}
		}
		shape[op.Axis] += t.Shape[op.Axis]
	}
	return []Type{{first.DType, shape}}, nil
}

func (op *Concat) Eval(in, out []*Tensor) error {
	y := out[0]
	es := y.dtype.Size()
	outer := y.shape[:op.Axis].Size()
	inner := y.shape[op.Axis+1:].Size() * es
	row := y.shape[op.Axis] * inner
	off := 0
	for _, x := range in {
		chunk := x.shape[op.Axis] * inner
		for o := range outer {
			copy(y.data[o*row+off:o*row+off+chunk], x.data[o*chunk:(o+1)*chunk])
		}
		off += chunk
	}
	return nil
}

// ---------------------------------------------------------------- Split

// Split cuts the input along Axis into pieces of the given Sizes (which sum
// to the axis length).
type Split struct {
	Axis  int
	Sizes []int
}

func (op *Split) Name() string { return "Split" }

func (op *Split) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(x.Shape))
	}
	total := 0
	out := make([]Type, len(op.Sizes))
	for i, s := range op.Sizes {
		if s < 0 {
			return nil, fmt.Errorf("negative split size %d", s)
		}
		total += s
		sh := x.Shape.Clone()
		sh[op.Axis] = s
		out[i] = Type{x.DType, sh}
	}
	if total != x.Shape[op.Axis] {
		return nil, fmt.Errorf("split sizes %v do not sum to axis %d's length %d", op.Sizes, op.Axis, x.Shape[op.Axis])
	}
	return out, nil
}

func (op *Split) Eval(in, out []*Tensor) error {
	x := in[0]
	es := x.dtype.Size()
	outer := x.shape[:op.Axis].Size()
	inner := x.shape[op.Axis+1:].Size() * es
	row := x.shape[op.Axis] * inner
	off := 0
	for i, s := range op.Sizes {
		chunk := s * inner
		if y := out[i]; y != nil {
			for o := range outer {
				copy(y.data[o*chunk:(o+1)*chunk], x.data[o*row+off:o*row+off+chunk])
			}
		}
		off += chunk
	}
	return nil
}

// ---------------------------------------------------------------- Slice

// Slice takes, on every axis d, Sizes[d] elements starting at Starts[d]
// with step Steps[d] (negative steps walk backwards). Import resolves
// ONNX's starts/ends/axes/steps, clamping and negative indices into these.
type Slice struct {
	Starts, Steps, Sizes []int
}

func (op *Slice) Name() string { return "Slice" }

func (op *Slice) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	r := len(x.Shape)
	if len(op.Starts) != r || len(op.Steps) != r || len(op.Sizes) != r {
		return nil, fmt.Errorf("slice has %d/%d/%d axes for rank %d", len(op.Starts), len(op.Steps), len(op.Sizes), r)
	}
	for d := range r {
		n, st, sz := x.Shape[d], op.Starts[d], op.Sizes[d]
		if sz < 0 || op.Steps[d] == 0 {
			return nil, fmt.Errorf("axis %d: bad size %d or step %d", d, sz, op.Steps[d])
		}
		if sz > 0 {
			last := st + (sz-1)*op.Steps[d]
			if st < 0 || st >= n || last < 0 || last >= n {
				return nil, fmt.Errorf("axis %d: slice from %d by %d (%d elements) leaves [0,%d)", d, st, op.Steps[d], sz, n)
			}
		}
	}
	return []Type{{x.DType, slices.Clone(op.Sizes)}}, nil
}

func (op *Slice) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	if y.Len() == 0 {
		return nil
	}
	st := x.shape.Strides()
	strides := make([]int, len(st))
	offset := 0
	for d := range st {
		strides[d] = st[d] * op.Steps[d]
		offset += st[d] * op.Starts[d]
	}
	byWidth(x.dtype,
		func() { gatherStrided(view[uint8](x), view[uint8](y), y.shape, strides, offset) },
		func() { gatherStrided(view[uint16](x), view[uint16](y), y.shape, strides, offset) },
		func() { gatherStrided(view[uint32](x), view[uint32](y), y.shape, strides, offset) },
		func() { gatherStrided(view[uint64](x), view[uint64](y), y.shape, strides, offset) })
	return nil
}

// ---------------------------------------------------------------- Gather

// Gather picks slices along Axis by index: for indices of shape I,
// out[a..., i..., b...] = x[a..., idx[i...], b...]; negative indices count
// from the end; an index out of range is an error at run time.
type Gather struct {
	Axis int
}

func (op *Gather) Name() string { return "Gather" }

func (op *Gather) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	x, idx := in[0], in[1]
	if err := wantDTypes("indices", idx, isIndex, "int32 or int64"); err != nil {
		return nil, err
	}
	if op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(x.Shape))
	}
	shape := append(append(x.Shape[:op.Axis:op.Axis], idx.Shape...), x.Shape[op.Axis+1:]...)
	return []Type{{x.DType, shape}}, nil
}

func (op *Gather) Eval(in, out []*Tensor) error {
	x, idx, y := in[0], in[1], out[0]
	es := x.dtype.Size()
	outer := x.shape[:op.Axis].Size()
	n := x.shape[op.Axis]
	inner := x.shape[op.Axis+1:].Size() * es
	k := idx.Len()
	for j := range k {
		i := int(idx.Int64At(j))
		if i < -n || i >= n {
			return &IndexError{Op: "Gather", Index: int64(i), Lo: -n, Hi: n}
		}
	}
	for o := range outer {
		for j := range k {
			i := int(idx.Int64At(j))
			if i < 0 {
				i += n
			}
			src := (o*n + i) * inner
			dst := (o*k + j) * inner
			copy(y.data[dst:dst+inner], x.data[src:src+inner])
		}
	}
	return nil
}

// ---------------------------------------------------------------- GatherElements

// GatherElements picks single elements along Axis:
// out[i][j][k] = x[idx[i][j][k]][j][k] for Axis 0 (and so on); idx has the
// output's shape and may be smaller than x on the other axes.
type GatherElements struct {
	Axis int
}

func (op *GatherElements) Name() string { return "GatherElements" }

func (op *GatherElements) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	x, idx := in[0], in[1]
	if err := wantDTypes("indices", idx, isIndex, "int32 or int64"); err != nil {
		return nil, err
	}
	if len(idx.Shape) != len(x.Shape) || op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("indices %v and data %v with axis %d", idx.Shape, x.Shape, op.Axis)
	}
	for d := range x.Shape {
		if d != op.Axis && idx.Shape[d] > x.Shape[d] {
			return nil, fmt.Errorf("indices %v exceed data %v on axis %d", idx.Shape, x.Shape, d)
		}
	}
	return []Type{{x.DType, idx.Shape}}, nil
}

func (op *GatherElements) Eval(in, out []*Tensor) error {
	x, idx, y := in[0], in[1], out[0]
	es := x.dtype.Size()
	return forElements("GatherElements", x.shape, idx, op.Axis, func(j, src int) {
		copy(y.data[j*es:(j+1)*es], x.data[src*es:(src+1)*es])
	})
}

// gradRule: GatherElements' gradient adds dy into zeros at the gathered
// positions.
func (op *GatherElements) gradRule(d *differ, c *gradCtx) error {
	if c.needs(0) {
		x := c.in(0)
		c.add(0, d.emit1(&ScatterElements{Axis: op.Axis, Reduction: ScatterAdd}, d.zeros(x.DType, x.Shape), c.in(1), c.dy[0]))
	}
	return nil
}

// ---------------------------------------------------------------- Trilu

// Trilu keeps the upper (or lower) triangle of the last two dimensions,
// relative to diagonal K, and zeroes the rest: Upper keeps j-i >= K,
// lower keeps j-i <= K.
type Trilu struct {
	Upper bool
	K     int
}

func (op *Trilu) Name() string { return "Trilu" }

func (op *Trilu) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if len(in[0].Shape) < 2 {
		return nil, fmt.Errorf("input rank %d, want at least 2", len(in[0].Shape))
	}
	return []Type{in[0]}, nil
}

func (op *Trilu) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	copy(y.data, x.data)
	r := len(x.shape)
	rows, cols := x.shape[r-2], x.shape[r-1]
	es := x.dtype.Size()
	for b := range x.shape[:r-2].Size() {
		for i := range rows {
			for j := range cols {
				keep := j-i <= op.K
				if op.Upper {
					keep = j-i >= op.K
				}
				if !keep {
					o := ((b*rows+i)*cols + j) * es
					clear(y.data[o : o+es])
				}
			}
		}
	}
	return nil
}
