package ir

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/onnx"
)

// Scatters and the gathers they invert: ScatterElements (and the older
// Scatter), ScatterND with its reductions, GatherND with batch dimensions,
// and TensorScatter (the KV-cache update). Each scatter copies its data
// input and combines the updates into the copy in index order, so
// duplicate indices give a deterministic result (the last write wins
// without a reduction).

func init() {
	registerOp("", "ScatterElements", importScatterElements)
	registerOp("", "Scatter", importScatterElements)
	registerOp("", "ScatterND", importScatterND)
	registerOp("", "GatherND", importGatherND)
	registerOp("", "TensorScatter", importTensorScatter)
}

// ScatterReduction is how a scatter combines an update with the element
// it lands on.
type ScatterReduction uint8

const (
	ScatterNone ScatterReduction = iota // the update replaces the element
	ScatterAdd
	ScatterMul
	ScatterMax
	ScatterMin
)

var scatterReductionNames = [...]string{ScatterNone: "none", ScatterAdd: "add", ScatterMul: "mul", ScatterMax: "max", ScatterMin: "min"}

func (r ScatterReduction) String() string {
	if int(r) < len(scatterReductionNames) {
		return scatterReductionNames[r]
	}
	return fmt.Sprintf("ScatterReduction(%d)", uint8(r))
}

// checkScatterInputs checks what the scatters' inputs (data, indices,
// updates) have in common: three of them, integer indices, and a
// reduction that applies to data's type.
func checkScatterInputs(in []Type, r ScatterReduction) error {
	if err := wantInputs(in, 3, 3); err != nil {
		return err
	}
	if err := wantDTypes("indices", in[1], isIndex, "int32 or int64"); err != nil {
		return err
	}
	if int(r) >= len(scatterReductionNames) {
		return fmt.Errorf("unknown reduction %d", r)
	}
	if dt := in[0].DType; r != ScatterNone && !dt.computable() {
		return fmt.Errorf("reduction %s on %s data", r, dt)
	}
	return nil
}

// scatterName is a scatter's name with its reduction, as in
// "ScatterND(add)".
func scatterName(scatter string, r ScatterReduction) string {
	if r == ScatterNone {
		return scatter
	}
	return scatter + "(" + r.String() + ")"
}

// combine applies r to y's element yi and u's element ui, storing into
// y: floats are combined in float64 and rounded once (exactly the
// rounding of the data type's own arithmetic for add and mul), integers
// wrap like C arithmetic.
func combine(r ScatterReduction, y *Tensor, yi int, u *Tensor, ui int) {
	es := y.dtype.Size()
	if r == ScatterNone {
		copy(y.data[yi*es:(yi+1)*es], u.data[ui*es:(ui+1)*es])
		return
	}
	if y.dtype.IsFloat() {
		a, b := y.Float64At(yi), u.Float64At(ui)
		switch r {
		case ScatterAdd:
			a += b
		case ScatterMul:
			a *= b
		case ScatterMax:
			a = max(a, b)
		case ScatterMin:
			a = min(a, b)
		}
		storeFloat(y, yi, a, true, RoundUp)
		return
	}
	a, b := y.Int64At(yi), u.Int64At(ui)
	switch r {
	case ScatterAdd:
		a += b
	case ScatterMul:
		a *= b
	case ScatterMax, ScatterMin:
		less := a < b
		if y.dtype == Uint64 {
			less = uint64(a) < uint64(b)
		}
		if less == (r == ScatterMax) {
			a = b
		}
	}
	storeInt(y, yi, a, true, RoundUp)
}

// combineRun applies combine to n consecutive elements.
func combineRun(r ScatterReduction, y *Tensor, yi int, u *Tensor, ui, n int) {
	if r == ScatterNone {
		es := y.dtype.Size()
		copy(y.data[yi*es:(yi+n)*es], u.data[ui*es:(ui+n)*es])
		return
	}
	for k := range n {
		combine(r, y, yi+k, u, ui+k)
	}
}

// ---------------------------------------------------------------- ScatterElements

// ScatterElements is GatherElements' inverse: out is a copy of data, and
// for every position p of indices (whose shape updates shares)
//
//	q = p with q[Axis] = indices[p]   (negative indices count from the end)
//	out[q] = Reduction(out[q], updates[p])
//
// in row-major order of p. indices has data's rank and is no larger on
// the other axes; an index out of range is an error at run time.
type ScatterElements struct {
	Axis      int
	Reduction ScatterReduction
}

func (op *ScatterElements) Name() string { return scatterName("ScatterElements", op.Reduction) }

func (op *ScatterElements) Infer(in []Type) ([]Type, error) {
	if err := checkScatterInputs(in, op.Reduction); err != nil {
		return nil, err
	}
	x, idx, upd := in[0], in[1], in[2]
	if upd.DType != x.DType || !upd.Shape.Equal(idx.Shape) {
		return nil, fmt.Errorf("updates are %v, want %s with the indices' shape %v", upd, x.DType, idx.Shape)
	}
	if len(idx.Shape) != len(x.Shape) || op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("indices %v and data %v with axis %d", idx.Shape, x.Shape, op.Axis)
	}
	for d := range x.Shape {
		if d != op.Axis && idx.Shape[d] > x.Shape[d] {
			return nil, fmt.Errorf("indices %v exceed data %v on axis %d", idx.Shape, x.Shape, d)
		}
	}
	return []Type{x}, nil
}

func (op *ScatterElements) Eval(in, out []*Tensor) error {
	x, idx, upd, y := in[0], in[1], in[2], out[0]
	copy(y.data, x.data)
	return forElements(op.Name(), x.shape, idx, op.Axis, func(j, dst int) {
		combine(op.Reduction, y, dst, upd, j)
	})
}

// forElements calls fn(j, offset) for every position j of indices (in
// row-major order) with the element offset in data it addresses along
// axis, as GatherElements and ScatterElements read them.
func forElements(name string, data Shape, idx *Tensor, axis int, fn func(j, offset int)) error {
	n := data[axis]
	st := data.Strides()
	pos := make([]int, len(idx.shape))
	for j := range idx.Len() {
		i, err := indexAt(name, idx, j, n)
		if err != nil {
			return err
		}
		unflatten(j, idx.shape, pos)
		pos[axis] = i
		off := 0
		for d, p := range pos {
			off += p * st[d]
		}
		fn(j, off)
	}
	return nil
}

// indexAt reads index j of idx for an axis of length n, resolving a
// negative index; out of [-n, n) is an IndexError of op.
func indexAt(op string, idx *Tensor, j, n int) (int, error) {
	i := idx.Int64At(j)
	if i < int64(-n) || i >= int64(n) {
		return 0, &IndexError{Op: op, Index: i, Lo: -n, Hi: n}
	}
	if i < 0 {
		i += int64(n)
	}
	return int(i), nil
}

// gradRule: see scatterGrad.
func (op *ScatterElements) gradRule(d *differ, c *gradCtx) error {
	idx := c.in(1)
	unique := idx.Kind == ConstValue && uniqueOffsets(func(fn func(_, off int)) error {
		return forElements("", c.in(0).Shape, idx.Const, op.Axis, fn)
	})
	return scatterGrad(d, c, op.Name(), op.Reduction, &ScatterElements{Axis: op.Axis}, &GatherElements{Axis: op.Axis}, c.in(0).Shape, idx.Shape, unique)
}

// scatterGrad is the gradient of a scatter (ScatterElements, ScatterND)
// given its reduction-free self and its gather. Without a reduction,
// data's gradient is dy with the overwritten positions zeroed and each
// update's is dy where it landed (zero for an update a later duplicate
// overwrote; unique says no update is); with add, data's gradient is dy
// and the updates' dy where they landed. Which update wrote a position
// last is found by scattering each update's number into a table of -1
// (shape table; order is the shape of the numbered updates, indices'
// shape without the tuple axis for ScatterND).
func scatterGrad(d *differ, c *gradCtx, name string, r ScatterReduction, scatter, gather Op, table, order Shape, unique bool) error {
	dy, idx, upd := c.dy[0], c.in(1), c.in(2)
	switch r {
	case ScatterAdd:
		c.add(0, dy)
		if c.needs(2) {
			c.add(2, d.emit1(gather, dy, idx))
		}
	case ScatterNone:
		if c.needs(0) {
			c.add(0, d.emit1(scatter, dy, idx, d.zeros(upd.DType, upd.Shape)))
		}
		if c.needs(2) {
			g := d.emit1(gather, dy, idx)
			if !unique {
				number := d.constant(iotaInt64(order))
				last := d.emit1(scatter, d.filledNode(Int64, table, -1), idx, number)
				landed := d.binary(Equal, d.emit1(gather, last, idx), number)
				landed = d.reshape(landed, append(order.Clone(), ones(len(upd.Shape)-len(order))...))
				g = d.emit1(&Where{}, landed, g, d.scalar(g.DType, 0))
			}
			c.add(2, g)
		}
	default:
		if c.needs(0) || c.needs(2) {
			return c.unsupported(name)
		}
	}
	return nil
}

// uniqueOffsets reports whether the offsets a forElements or forTuples
// walk visits are distinct (and every index in range).
func uniqueOffsets(walk func(fn func(_, off int)) error) bool {
	seen := map[int]bool{}
	unique := true
	err := walk(func(_, off int) {
		unique = unique && !seen[off]
		seen[off] = true
	})
	return err == nil && unique
}

// filledNode is a tensor of v computed by a node (an Expand of a scalar),
// which lives in the executor's memory plan rather than as a constant.
func (d *differ) filledNode(dt DType, shape Shape, v float64) *Value {
	return d.emitFold(false, &Expand{Shape: shape.Clone()}, d.scalar(dt, v))[0]
}

// ---------------------------------------------------------------- GatherND

// GatherND gathers slices addressed by index tuples. data has shape
// B + D + S (B the BatchDims leading axes, D as many axes as an index
// tuple has elements) and indices has shape B + I + [len(D)]; for every
// batch position b and tuple position i
//
//	out[b, i] = data[b, indices[b, i, :]]   (a slice of shape S)
//
// so out has shape B + I + S. Negative indices count from the end; an
// index out of range is an error at run time.
type GatherND struct {
	BatchDims int
}

func (op *GatherND) Name() string { return "GatherND" }

// ndLayout checks data and indices shapes for the ND ops with b batch
// axes and returns the tuple length k and the shape of the gathered (or
// scattered) values, B + I + S.
func ndLayout(data, idx Shape, b int) (k int, values Shape, err error) {
	if len(idx) < 1 || b < 0 || b >= len(idx) || b > len(data) {
		return 0, nil, fmt.Errorf("indices %v and data %v with %d batch axes", idx, data, b)
	}
	k = idx[len(idx)-1]
	if k > len(data)-b {
		return 0, nil, fmt.Errorf("index tuples of %d elements for data %v with %d batch axes", k, data, b)
	}
	if !idx[:b].Equal(data[:b]) {
		return 0, nil, fmt.Errorf("indices %v and data %v differ on the %d batch axes", idx, data, b)
	}
	values = append(idx[:len(idx)-1].Clone(), data[b+k:]...)
	return k, values, nil
}

func (op *GatherND) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	x, idx := in[0], in[1]
	if err := wantDTypes("indices", idx, isIndex, "int32 or int64"); err != nil {
		return nil, err
	}
	_, shape, err := ndLayout(x.Shape, idx.Shape, op.BatchDims)
	if err != nil {
		return nil, err
	}
	return []Type{{x.DType, shape}}, nil
}

// forTuples calls fn(t, offset) for every index tuple t of indices (in
// row-major order) with the element offset in data of the slice it
// addresses. b batch axes, k tuple elements, slice the slice size.
func forTuples(name string, data Shape, idx *Tensor, b, k int, fn func(t, offset int)) error {
	tuples := idx.shape[:len(idx.shape)-1].Size()
	if tuples == 0 {
		return nil
	}
	batches := idx.shape[:b].Size()
	perBatch := tuples / batches
	batchStride := data[b:].Size()
	st := data[b:].Strides()
	for t := range tuples {
		off := (t / perBatch) * batchStride
		for j := range k {
			i, err := indexAt(name, idx, t*k+j, data[b+j])
			if err != nil {
				return err
			}
			off += i * st[j]
		}
		fn(t, off)
	}
	return nil
}

func (op *GatherND) Eval(in, out []*Tensor) error {
	x, idx, y := in[0], in[1], out[0]
	k := idx.shape[len(idx.shape)-1]
	slice := x.shape[op.BatchDims+k:].Size()
	es := x.dtype.Size()
	return forTuples(op.Name(), x.shape, idx, op.BatchDims, k, func(t, off int) {
		copy(y.data[t*slice*es:(t+1)*slice*es], x.data[off*es:(off+slice)*es])
	})
}

// gradRule: GatherND's gradient adds dy into zeros at the gathered
// slices.
func (op *GatherND) gradRule(d *differ, c *gradCtx) error {
	if c.needs(0) {
		x := c.in(0)
		c.add(0, d.emit1(&ScatterND{Reduction: ScatterAdd, BatchDims: op.BatchDims}, d.zeros(x.DType, x.Shape), c.in(1), c.dy[0]))
	}
	return nil
}

// ---------------------------------------------------------------- ScatterND

// ScatterND is GatherND's inverse: out is a copy of data and, for every
// tuple position (in row-major order),
//
//	out[b, indices[b, i, :]] = Reduction(out[b, indices[b, i, :]], updates[b, i])
//
// with updates of the shape GatherND would gather. ONNX's ScatterND has
// no batch axes (BatchDims 0); GatherND's gradient uses them.
type ScatterND struct {
	Reduction ScatterReduction
	BatchDims int
}

func (op *ScatterND) Name() string { return scatterName("ScatterND", op.Reduction) }

func (op *ScatterND) Infer(in []Type) ([]Type, error) {
	if err := checkScatterInputs(in, op.Reduction); err != nil {
		return nil, err
	}
	x, idx, upd := in[0], in[1], in[2]
	_, shape, err := ndLayout(x.Shape, idx.Shape, op.BatchDims)
	if err != nil {
		return nil, err
	}
	if upd.DType != x.DType || !upd.Shape.Equal(shape) {
		return nil, fmt.Errorf("updates are %v, want %s%v", upd, x.DType, shape)
	}
	return []Type{x}, nil
}

func (op *ScatterND) Eval(in, out []*Tensor) error {
	x, idx, upd, y := in[0], in[1], in[2], out[0]
	copy(y.data, x.data)
	k := idx.shape[len(idx.shape)-1]
	slice := x.shape[op.BatchDims+k:].Size()
	return forTuples(op.Name(), x.shape, idx, op.BatchDims, k, func(t, off int) {
		combineRun(op.Reduction, y, off, upd, t*slice, slice)
	})
}

// gradRule: see scatterGrad.
func (op *ScatterND) gradRule(d *differ, c *gradCtx) error {
	idx, data := c.in(1), c.in(0).Shape
	k := idx.Shape[len(idx.Shape)-1]
	unique := idx.Kind == ConstValue && uniqueOffsets(func(fn func(_, off int)) error {
		return forTuples("", data, idx.Const, op.BatchDims, k, fn)
	})
	return scatterGrad(d, c, op.Name(), op.Reduction, &ScatterND{BatchDims: op.BatchDims}, &GatherND{BatchDims: op.BatchDims},
		data[:op.BatchDims+k], idx.Shape[:len(idx.Shape)-1], unique)
}

// ---------------------------------------------------------------- TensorScatter

// TensorScatter writes update into a copy of the cache along Axis (the
// sequence axis) at a per-batch offset: for every prefix position p of
// the axes before Axis (p[0] the batch) and s < update's length on Axis,
//
//	out[p, w(p[0]) + s, ...] = update[p, s, ...]
//
// where w is the optional write_indices input (zeros when absent). In
// Circular mode positions wrap modulo the cache length; otherwise they
// must stay inside it (an IndexError at run time).
type TensorScatter struct {
	Axis     int
	Circular bool
}

func (op *TensorScatter) Name() string { return "TensorScatter" }

func (op *TensorScatter) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	cache, upd := in[0], in[1]
	r := len(cache.Shape)
	if op.Axis < 1 || op.Axis >= r {
		return nil, fmt.Errorf("axis %d for a cache of rank %d, want an axis after the batch axis", op.Axis, r)
	}
	if upd.DType != cache.DType || len(upd.Shape) != r {
		return nil, fmt.Errorf("update is %v, want %s of rank %d", upd, cache.DType, r)
	}
	for d := range r {
		if d != op.Axis && upd.Shape[d] != cache.Shape[d] || d == op.Axis && upd.Shape[d] > cache.Shape[d] {
			return nil, fmt.Errorf("update %v does not fit cache %v along axis %d", upd.Shape, cache.Shape, op.Axis)
		}
	}
	if w, ok := optional(in, 2); ok {
		if err := wantDTypes("write_indices", w, isIndex, "int32 or int64"); err != nil {
			return nil, err
		}
		if !w.Shape.Equal(Shape{cache.Shape[0]}) {
			return nil, fmt.Errorf("write_indices %v, want [%d] (one per batch entry)", w.Shape, cache.Shape[0])
		}
	}
	return []Type{cache}, nil
}

func (op *TensorScatter) Eval(in, out []*Tensor) error {
	copy(out[0].data, in[0].data)
	return op.ScatterInto(out[0], in[1], optIn(in, 2))
}

// ScatterInto writes update's rows into cache, which is changed in place
// (Eval's output with the cache already copied into it); w is the
// write_indices, or nil. Every position is checked before anything is
// written, so an IndexError leaves cache as it was.
func (op *TensorScatter) ScatterInto(cache, upd, w *Tensor) error {
	es := cache.dtype.Size()
	outer := cache.shape[:op.Axis].Size()
	perBatch := cache.shape[1:op.Axis].Size()
	inner := cache.shape[op.Axis+1:].Size() * es
	length, seq := cache.shape[op.Axis], upd.shape[op.Axis]
	row := func(o, s int) (int, error) {
		start := int64(0)
		if w != nil {
			start = w.Int64At(o / perBatch)
		}
		t := start + int64(s)
		if op.Circular {
			t = ((t % int64(length)) + int64(length)) % int64(length)
		} else if t < 0 || t >= int64(length) {
			return 0, &IndexError{Op: "TensorScatter", Index: t, Lo: 0, Hi: length}
		}
		return int(t), nil
	}
	if !op.Circular && outer > 0 {
		for b := range cache.shape[0] {
			for s := range seq {
				if _, err := row(b*perBatch, s); err != nil {
					return err
				}
			}
		}
	}
	for o := range outer {
		for s := range seq {
			t, err := row(o, s)
			if err != nil {
				return err
			}
			dst := (o*length + t) * inner
			src := (o*seq + s) * inner
			copy(cache.data[dst:dst+inner], upd.data[src:src+inner])
		}
	}
	return nil
}

// ---------------------------------------------------------------- import

// reductionAttr reads a scatter's reduction attribute: add and mul since
// opset 16, max and min since 18.
func reductionAttr(n *onnx.Node, opset int) (ScatterReduction, error) {
	name, err := n.AttrString("reduction", "none")
	if err != nil {
		return 0, err
	}
	i := slices.Index(scatterReductionNames[:], name)
	if i < 0 {
		return 0, fmt.Errorf("reduction %q, want none, add, mul, max or min", name)
	}
	r := ScatterReduction(i)
	since := map[ScatterReduction]int{ScatterAdd: 16, ScatterMul: 16, ScatterMax: 18, ScatterMin: 18}[r]
	if opset < since {
		return 0, fmt.Errorf("reduction %q needs opset %d, the model imports opset %d", name, since, opset)
	}
	return r, nil
}

func importScatterElements(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	axis, err := attrAxis(n, 0, len(in[0].Shape))
	if err != nil {
		return nil, err
	}
	red := ScatterNone
	if n.OpType == "ScatterElements" {
		if red, err = reductionAttr(n, im.opset); err != nil {
			return nil, err
		}
	}
	return one(im.emit1(&ScatterElements{Axis: axis, Reduction: red}, in...))
}

func importScatterND(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	red, err := reductionAttr(n, im.opset)
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&ScatterND{Reduction: red}, in...))
}

func importGatherND(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	b, err := attrInt(n, "batch_dims", 0)
	if err != nil {
		return nil, err
	}
	x, idx := in[0], in[1]
	if b < 0 || b >= min(len(x.Shape), len(idx.Shape)) {
		return nil, fmt.Errorf("batch_dims %d for data %v and indices %v", b, x.Shape, idx.Shape)
	}
	if k := idx.Shape[len(idx.Shape)-1]; k < 1 {
		return nil, fmt.Errorf("index tuples of %d elements, want at least 1", k)
	}
	return one(im.emit1(&GatherND{BatchDims: b}, x, idx))
}

func importTensorScatter(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	axis, err := attrAxis(n, -2, len(in[0].Shape))
	if err != nil {
		return nil, err
	}
	mode, err := n.AttrString("mode", "linear")
	if err != nil {
		return nil, err
	}
	if mode != "linear" && mode != "circular" {
		return nil, fmt.Errorf("TensorScatter mode %q, want linear or circular", mode)
	}
	return one(im.emit1(&TensorScatter{Axis: axis, Circular: mode == "circular"}, in...))
}
