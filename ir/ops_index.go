package ir

import (
	"fmt"
	"math"
	"sort"

	"github.com/dstune/dstune/onnx"
)

// Selection by value: Compress, NonZero and Unique, whose output shapes
// depend on the values of an input — that input must be known at import,
// and the ops fold there (Compress into a Gather with constant indices,
// NonZero and Unique into constants) — and ReverseSequence.

func init() {
	registerOp("", "Compress", importCompress)
	registerOp("", "NonZero", importNonZero)
	registerOp("", "Unique", importUnique)
	registerOp("", "ReverseSequence", importReverseSequence)
	registerStaticOperands("", "Compress", 1)
	registerStaticOperands("", "NonZero", 0)
	registerStaticOperands("", "Unique", 0)
}

// importCompress keeps the positions along axis (of the flattened input
// when there is no axis) where condition is true: a Gather of the kept
// positions. condition may be shorter than the axis (the rest is
// dropped).
func importCompress(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	x := in[0]
	cond, err := im.constTensor(in, 1, "condition")
	if err != nil {
		return nil, err
	}
	if cond.dtype != Bool || len(cond.shape) != 1 {
		return nil, fmt.Errorf("condition is %v, want a 1-D bool tensor", cond)
	}
	axis := 0
	if n.Attr("axis") != nil {
		if axis, err = attrAxis(n, 0, len(x.Shape)); err != nil {
			return nil, err
		}
	} else if x, err = im.reshape(x, Shape{x.Shape.Size()}); err != nil {
		return nil, err
	}
	length := x.Shape[axis]
	var keep []int64
	for i, c := range cond.Bools() {
		if !c {
			continue
		}
		if i >= length {
			return nil, fmt.Errorf("condition selects position %d of an axis of length %d", i, length)
		}
		keep = append(keep, int64(i))
	}
	if len(keep) == length {
		return []*Value{x}, nil
	}
	return one(im.emit1(&Gather{Axis: axis}, x, im.constant(FromInt64s(Shape{len(keep)}, keep))))
}

// importNonZero folds NonZero: the indices of the nonzero elements
// (NaN counts as nonzero), one column per element in row-major order, as
// int64 of shape [rank, count] (a scalar counts as rank 1).
func importNonZero(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x, err := im.constTensor(in, 0, "X")
	if err != nil {
		return nil, err
	}
	shape := x.shape
	if len(shape) == 0 {
		shape = Shape{1}
	}
	var hits []int
	for i := range x.Len() {
		if x.Float64At(i) != 0 {
			hits = append(hits, i)
		}
	}
	out := NewTensor(Int64, Shape{len(shape), len(hits)})
	pos := make([]int, len(shape))
	o := out.Int64s()
	for j, i := range hits {
		unflatten(i, shape, pos)
		for d, p := range pos {
			o[d*len(hits)+j] = int64(p)
		}
	}
	return []*Value{im.constant(out)}, nil
}

// compareElements orders element i of a against element j of b (same
// dtype) by value: -1, 0 or 1. NaN is equal to NaN and above every number
// (numpy's unique groups NaNs at the end).
func compareElements(a *Tensor, i int, b *Tensor, j int) int {
	switch {
	case a.dtype.IsFloat():
		x, y := a.Float64At(i), b.Float64At(j)
		switch nx, ny := math.IsNaN(x), math.IsNaN(y); {
		case nx && ny:
			return 0
		case nx:
			return 1
		case ny:
			return -1
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	case a.dtype == Uint64:
		x, y := uint64(a.Int64At(i)), uint64(b.Int64At(j))
		if x < y {
			return -1
		} else if x > y {
			return 1
		}
		return 0
	}
	x, y := a.Int64At(i), b.Int64At(j)
	if x < y {
		return -1
	} else if x > y {
		return 1
	}
	return 0
}

// importUnique folds Unique. Without axis the elements of the flattened
// input are the items; with it, the slices along axis. Outputs: the
// distinct items (sorted ascending, slices lexicographically, or in
// order of first occurrence when sorted is 0), the index of each one's
// first occurrence, each input item's position in the output, and the
// counts.
func importUnique(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x, err := im.constTensor(in, 0, "X")
	if err != nil {
		return nil, err
	}
	sorted, err := attrInt(n, "sorted", 1)
	if err != nil {
		return nil, err
	}
	// Items are x[o, i, k] over o < outer and k < inner for i < items.
	outer, items, inner := 1, x.Len(), 1
	axis := -1
	if n.Attr("axis") != nil {
		if axis, err = attrAxis(n, 0, len(x.shape)); err != nil {
			return nil, err
		}
		outer, items, inner = x.shape[:axis].Size(), x.shape[axis], x.shape[axis+1:].Size()
	}
	compareItems := func(i, j int) int {
		for o := range outer {
			for k := range inner {
				if c := compareElements(x, (o*items+i)*inner+k, x, (o*items+j)*inner+k); c != 0 {
					return c
				}
			}
		}
		return 0
	}
	order := iotaInts(items)
	// Stable: the first item of each run of equal ones is its first
	// occurrence.
	sort.SliceStable(order, func(a, b int) bool { return compareItems(order[a], order[b]) < 0 })
	var firsts, counts []int
	group := make([]int, items) // item -> its group, in sorted order
	for r, i := range order {
		if r == 0 || compareItems(order[r-1], i) != 0 {
			firsts = append(firsts, i)
			counts = append(counts, 0)
		}
		group[i] = len(firsts) - 1
		counts[len(counts)-1]++
	}
	rank := make([]int, len(firsts)) // group -> output position
	for g := range rank {
		rank[g] = g
	}
	if sorted == 0 {
		byFirst := make([]int, len(firsts))
		for g := range byFirst {
			byFirst[g] = g
		}
		sort.Slice(byFirst, func(a, b int) bool { return firsts[byFirst[a]] < firsts[byFirst[b]] })
		for r, g := range byFirst {
			rank[g] = r
		}
	}
	k := len(firsts)
	yShape := Shape{k}
	if axis >= 0 {
		yShape = x.shape.Clone()
		yShape[axis] = k
	}
	y := NewTensor(x.dtype, yShape)
	indices, inverse, count := NewTensor(Int64, Shape{k}), NewTensor(Int64, Shape{items}), NewTensor(Int64, Shape{k})
	es := x.dtype.Size()
	for g, first := range firsts {
		r := rank[g]
		indices.Int64s()[r] = int64(first)
		count.Int64s()[r] = int64(counts[g])
		for o := range outer {
			src := (o*items + first) * inner * es
			dst := (o*k + r) * inner * es
			copy(y.data[dst:dst+inner*es], x.data[src:src+inner*es])
		}
	}
	for i, g := range group {
		inverse.Int64s()[i] = int64(rank[g])
	}
	return []*Value{im.constant(y), im.constant(indices), im.constant(inverse), im.constant(count)}, nil
}

// ---------------------------------------------------------------- ReverseSequence

// ReverseSequence reverses, for every batch entry b (position along
// BatchAxis), the first lens[b] positions along TimeAxis and keeps the
// rest: out[.., b, .., t, ..] = x[.., b, .., lens[b]-1-t, ..] for
// t < lens[b]. A length outside [0, the time axis' length] is an
// IndexError at run time.
type ReverseSequence struct {
	BatchAxis, TimeAxis int
}

func (op *ReverseSequence) Name() string { return "ReverseSequence" }

func (op *ReverseSequence) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	x, lens := in[0], in[1]
	r := len(x.Shape)
	if op.BatchAxis < 0 || op.BatchAxis >= r || op.TimeAxis < 0 || op.TimeAxis >= r || op.BatchAxis == op.TimeAxis {
		return nil, fmt.Errorf("batch axis %d and time axis %d for rank %d, want two different axes", op.BatchAxis, op.TimeAxis, r)
	}
	if err := wantDTypes("sequence_lens", lens, isIndex, "int32 or int64"); err != nil {
		return nil, err
	}
	if !lens.Shape.Equal(Shape{x.Shape[op.BatchAxis]}) {
		return nil, fmt.Errorf("sequence_lens %v, want [%d] (one per batch entry)", lens.Shape, x.Shape[op.BatchAxis])
	}
	return []Type{x}, nil
}

func (op *ReverseSequence) Eval(in, out []*Tensor) error {
	x, lens, y := in[0], in[1], out[0]
	steps := x.shape[op.TimeAxis]
	for b := range lens.Len() {
		if l := lens.Int64At(b); l < 0 || l > int64(steps) {
			return &IndexError{Op: op.Name() + " sequence length", Index: l, Lo: 0, Hi: steps + 1}
		}
	}
	es := x.dtype.Size()
	st := x.shape.Strides()
	pos := make([]int, len(x.shape))
	for i := range x.Len() {
		unflatten(i, x.shape, pos)
		src := i
		if t, l := pos[op.TimeAxis], int(lens.Int64At(pos[op.BatchAxis])); t < l {
			src += (l - 1 - 2*t) * st[op.TimeAxis]
		}
		copy(y.data[i*es:(i+1)*es], x.data[src*es:(src+1)*es])
	}
	return nil
}

// gradRule: the reversal is a permutation that is its own inverse.
func (op *ReverseSequence) gradRule(d *differ, c *gradCtx) error {
	c.add(0, d.emit1(&ReverseSequence{BatchAxis: op.BatchAxis, TimeAxis: op.TimeAxis}, c.dy[0], c.in(1)))
	return nil
}

func importReverseSequence(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	r := len(in[0].Shape)
	batch, err := attrInt(n, "batch_axis", 1)
	if err != nil {
		return nil, err
	}
	time, err := attrInt(n, "time_axis", 0)
	if err != nil {
		return nil, err
	}
	if batch, err = normAxis(batch, r); err != nil {
		return nil, fmt.Errorf("batch_axis: %w", err)
	}
	if time, err = normAxis(time, r); err != nil {
		return nil, fmt.Errorf("time_axis: %w", err)
	}
	return one(im.emit1(&ReverseSequence{BatchAxis: batch, TimeAxis: time}, in...))
}
