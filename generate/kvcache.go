package generate

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/dstune/dstune/ir"
)

// The KV cache dstune keeps itself for decoders whose export has no
// past_key_values inputs.
//
// The model is specialized to the cache's capacity C (every position it
// may hold), so every constant that depends on the position (a rotary
// table sliced to the sequence length, a causal mask, positions made by
// Range) is there for all C positions. The rewrite then follows the
// "position axis" forward from the token inputs: a value derived from the
// tokens holds one row per position along one axis, and the rewritten
// graph computes only the S new rows (at the positions fed in the input
// cachePositions). Where such a value meets a value without that axis
// holding all C positions (the rotary table, the mask), the latter's rows
// at the new positions are gathered. Where attention contracts over the
// positions — Q·Kᵀ, whose right operand holds the keys of every position,
// and P·V — that operand is the one thing the new rows cannot give: it
// comes from a cache input holding the earlier positions' rows, with the
// new rows written into it (TensorScatter), and the new rows are also a
// graph output for the caller to keep. Positions after the new ones hold
// zeros in the cache and are masked by the model's own causal mask.
// Keys and values that the graph repeats for groups of query heads
// (grouped-query attention) are cached once per key head, the query heads
// of a group multiplying them as rows of one product (groupedAttention).
//
// Any op that reads the position axis in another way (a reduction or
// softmax over it, a reshape merging it with another axis, a cumulative
// sum, ...) stops the rewrite with an error naming the node: the caller
// then recomputes the whole prefix, which is always right.

// Names the rewritten graph uses for its own inputs and outputs.
const (
	cachePositions = "dstune.positions" // int64 [S]: the positions of the new rows
	cacheInPrefix  = "dstune.cache."    // + index: a cache input (capacity rows)
	cacheOutPrefix = "dstune.rows."     // + index: the new rows of that cache
)

// cacheIn and cacheOut name slot i's cache input and new-rows output.
func cacheIn(i int) string  { return cacheInPrefix + strconv.Itoa(i) }
func cacheOut(i int) string { return cacheOutPrefix + strconv.Itoa(i) }

// errNotCausalDecoder wraps the reasons the rewrite gives up.
var errNotCausalDecoder = errors.New("the graph does not have the decoder shape dstune caches")

// errBeyondContext is returned when the capacity exceeds what the model's
// position tables hold.
var errBeyondContext = errors.New("beyond the model's context")

// cacheSlot is one cached tensor of the rewritten graph: the operand of an
// attention MatMul, shaped like the original value (Capacity along Axis)
// but for grouped keys, which hold one head per key head.
type cacheSlot struct {
	Axis  int
	Shape ir.Shape
	DType ir.DType
}

// cachedGraph is a decoder rewritten to compute step new positions with
// the earlier ones taken from caches.
type cachedGraph struct {
	Graph    *ir.Graph
	Capacity int
	Step     int
	Slots    []cacheSlot
	// Decisions lists what the rewrite did at each node, in order; two
	// capacities with equal decisions were rewritten the same way.
	Decisions []string
}

// rowsValue is a value of the rewritten graph; Axis ≥ 0 when it holds one
// row per new position along that axis (the original held Capacity rows
// there), -1 when it equals the original value.
type rowsValue struct {
	v    *ir.Value
	axis int
	// group > 1: the axis holds group blocks of rows, one after the other
	// (the original group blocks of Capacity): an axis before the
	// positions merged into them, as the Attention op's import merges the
	// query heads of a key head into the rows of one product. Only a
	// Reshape splitting them off again and a MatMul taking them as its
	// rows (attention's, or a product with weights) read such a value.
	group int
}

type gatherKey struct {
	v    *ir.Value
	axis int
}

type rewriter struct {
	b         *ir.Builder
	capacity  int
	step      int
	vals      map[*ir.Value]rowsValue
	params    map[*ir.Param]*ir.Value
	gathered  map[gatherKey]*ir.Value
	cached    map[*ir.Value]*ir.Value
	positions *ir.Value
	writeAt   map[int]*ir.Value // write_indices by batch size
	rows      []*ir.Value       // the new rows of each cache slot
	out       *cachedGraph
	node      int // index of the node being rewritten, for decisions
}

// rewriteCached rewrites g — a decoder specialized to batch × capacity
// tokens — into a graph that computes step new positions. roles gives
// each graph input's role: tokens, position ids and token types become
// [batch, step] inputs, the attention mask stays [batch, capacity]. The
// first output must be the logits [batch, capacity, vocab]; the new graph
// returns them for the new positions, then the new rows of every cache.
func rewriteCached(g *ir.Graph, roles map[string]ir.InputRole, capacity, step int) (*cachedGraph, error) {
	if step < 1 || step > capacity {
		return nil, fmt.Errorf("generate: step %d for capacity %d", step, capacity)
	}
	r := &rewriter{
		b:        ir.NewBuilder(g.Name + "+kvcache"),
		capacity: capacity,
		step:     step,
		vals:     map[*ir.Value]rowsValue{},
		params:   map[*ir.Param]*ir.Value{},
		gathered: map[gatherKey]*ir.Value{},
		cached:   map[*ir.Value]*ir.Value{},
		writeAt:  map[int]*ir.Value{},
		out:      &cachedGraph{Capacity: capacity, Step: step},
	}
	for _, in := range g.Inputs {
		switch roles[in.Name] {
		case ir.RoleTokens, ir.RolePositionIDs, ir.RoleTokenTypeIDs:
			if len(in.Shape) != 2 || in.Shape[1] != capacity {
				return nil, fmt.Errorf("%w: input %q is %v, want [batch, %d]", errNotCausalDecoder, in.Name, in.Type, capacity)
			}
			r.vals[in] = rowsValue{v: r.b.Input(in.Name, in.DType, ir.Shape{in.Shape[0], step}), axis: 1}
		case ir.RoleAttentionMask:
			r.vals[in] = rowsValue{v: r.b.Input(in.Name, in.DType, in.Shape), axis: -1}
		default:
			return nil, fmt.Errorf("%w: input %q is not tokens, positions, token types or an attention mask", errNotCausalDecoder, in.Name)
		}
	}
	r.positions = r.b.Input(cachePositions, ir.Int64, ir.Shape{step})
	for i, n := range g.Nodes {
		r.node = i
		if err := r.rewrite(n); err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
	}
	if len(g.Outputs) == 0 {
		return nil, fmt.Errorf("%w: the graph has no outputs", errNotCausalDecoder)
	}
	logits, err := r.get(g.Outputs[0].Value)
	if err != nil {
		return nil, err
	}
	if logits.axis != 1 || logits.group > 1 || len(logits.v.Shape) != 3 {
		return nil, fmt.Errorf("%w: output %q is %v, not logits [batch, sequence, vocab]", errNotCausalDecoder, g.Outputs[0].Name, g.Outputs[0].Value.Type)
	}
	if len(r.out.Slots) == 0 {
		return nil, fmt.Errorf("%w: no attention over earlier positions found", errNotCausalDecoder)
	}
	r.b.Output(g.Outputs[0].Name, logits.v)
	for i, rows := range r.rows {
		r.b.Output(cacheOut(i), rows)
	}
	ng, err := r.b.Graph()
	if err != nil {
		return nil, err
	}
	r.out.Graph = ng
	return r.out, nil
}

func (r *rewriter) decide(format string, args ...any) {
	r.out.Decisions = append(r.out.Decisions, fmt.Sprintf("%d: ", r.node)+fmt.Sprintf(format, args...))
}

// get returns the rewritten form of an original value.
func (r *rewriter) get(v *ir.Value) (rowsValue, error) {
	if rv, ok := r.vals[v]; ok {
		return rv, nil
	}
	switch v.Kind {
	case ir.ParamValue:
		nv, ok := r.params[v.Param]
		if !ok {
			nv = r.b.Param(v.Param.Name, v.Param.Tensor)
			r.params[v.Param] = nv
		}
		return rowsValue{v: nv, axis: -1}, nil
	case ir.ConstValue:
		rv := rowsValue{v: r.b.Const(v.Const), axis: -1}
		r.vals[v] = rv
		return rv, nil
	}
	return rowsValue{}, fmt.Errorf("value %s is read before it is computed", v)
}

// gather returns the rows of a full value x (the original value orig) at
// the new positions along axis. Where orig is computed element-wise (a
// mask from a causal table and the attention mask, say) the rows are
// taken from its operands instead, so the value is never computed for
// every position.
func (r *rewriter) gather(orig, x *ir.Value, axis int) *ir.Value {
	key := gatherKey{orig, axis}
	if g, ok := r.gathered[key]; ok {
		return g
	}
	g := r.pushGather(orig, axis)
	if g == nil {
		r.decide("gather %v at the new positions along axis %d", orig.Type, axis)
		g = r.b.Op1(&ir.Gather{Axis: axis}, x, r.positions)
	}
	r.gathered[key] = g
	return g
}

// pushGather computes the rows at the new positions along axis of a full
// value from the rows of its operands, when orig comes from an
// element-wise op, a reshape or transpose keeping the axis whole, or a
// lookup by indices along that axis; nil otherwise.
func (r *rewriter) pushGather(orig *ir.Value, axis int) *ir.Value {
	n := orig.Producer
	if orig.Kind != ir.NodeOutput || n == nil || len(n.Outputs) != 1 {
		return nil
	}
	operand := func(i int) *ir.Value {
		rv, err := r.get(n.Inputs[i])
		if err != nil || rv.axis >= 0 {
			return nil
		}
		return rv.v
	}
	switch op := n.Op.(type) {
	case *ir.Unary, *ir.Binary, *ir.Where, *ir.Cast, *ir.Clip, *ir.Copy:
		ins := make([]*ir.Value, len(n.Inputs))
		for i, v := range n.Inputs {
			if v == nil {
				continue
			}
			if ins[i] = operand(i); ins[i] == nil {
				return nil
			}
			local := axis - (len(orig.Shape) - len(v.Shape))
			if local >= 0 && v.Shape[local] != 1 {
				ins[i] = r.gather(v, ins[i], local)
			}
		}
		return r.op1(n.Op, ins...)
	case *ir.Reshape:
		src, x := n.Inputs[0].Shape, operand(0)
		before := op.Shape[:axis].Size()
		for a, d := range src {
			if x != nil && d == r.capacity && src[:a].Size() == before {
				return r.op1(&ir.Reshape{Shape: r.withRows(op.Shape, axis)}, r.gather(n.Inputs[0], x, a))
			}
		}
	case *ir.Transpose:
		if x := operand(0); x != nil {
			return r.op1(op, r.gather(n.Inputs[0], x, op.Perm[axis]))
		}
	case *ir.Gather:
		data, idx := operand(0), operand(1)
		if data != nil && idx != nil && axis >= op.Axis && axis < op.Axis+len(n.Inputs[1].Shape) {
			return r.op1(op, data, r.gather(n.Inputs[1], idx, axis-op.Axis))
		}
	}
	return nil
}

// op1 adds a single-output op whose operands are known to fit, or returns
// nil when they do not (the caller then gathers the whole value).
func (r *rewriter) op1(op ir.Op, ins ...*ir.Value) *ir.Value {
	types := make([]ir.Type, len(ins))
	for i, v := range ins {
		if v != nil {
			types[i] = v.Type
		}
	}
	if _, err := op.Infer(types); err != nil {
		return nil
	}
	return r.b.Op1(op, ins...)
}

// full returns the value holding every position for orig, whose rows
// value rows holds the new positions along axis: a cache input with the
// new rows written in.
func (r *rewriter) full(orig *ir.Value, rows rowsValue) (*ir.Value, error) {
	return r.fullAs(orig, orig.Type, rows, "")
}

// fullAs is full for a cache of type t (orig's, or fewer heads for
// grouped keys), the decision noted with note.
func (r *rewriter) fullAs(orig *ir.Value, t ir.Type, rows rowsValue, note string) (*ir.Value, error) {
	if f, ok := r.cached[orig]; ok {
		return f, nil
	}
	if rows.axis < 1 {
		return nil, fmt.Errorf("%w: the attention operand %v has its positions on axis %d, before which no batch axis is left", errNotCausalDecoder, orig.Type, rows.axis)
	}
	slot := len(r.out.Slots)
	r.out.Slots = append(r.out.Slots, cacheSlot{Axis: rows.axis, Shape: t.Shape.Clone(), DType: t.DType})
	r.decide("cache %v along axis %d%s", t, rows.axis, note)
	in := r.b.Input(cacheIn(slot), t.DType, t.Shape)
	f := r.b.Op1(&ir.TensorScatter{Axis: rows.axis}, in, rows.v, r.writeIndices(t.Shape[0]))
	r.rows = append(r.rows, rows.v)
	r.cached[orig] = f
	return f, nil
}

// writeIndices is the first new position repeated for each of batch
// leading entries (TensorScatter's write_indices).
func (r *rewriter) writeIndices(batch int) *ir.Value {
	if w, ok := r.writeAt[batch]; ok {
		return w
	}
	first := r.b.Op1(&ir.Slice{Starts: []int{0}, Steps: []int{1}, Sizes: []int{1}}, r.positions)
	w := first
	if batch != 1 {
		w = r.b.Op1(&ir.Expand{Shape: ir.Shape{batch}}, first)
	}
	r.writeAt[batch] = w
	return w
}

// withRows replaces the capacity along axis of s by the step.
func (r *rewriter) withRows(s ir.Shape, axis int) ir.Shape {
	s = s.Clone()
	s[axis] = r.step
	return s
}

// emit adds op on the new inputs and records the outputs; axes gives each
// output's rows axis (-1: full). Outputs the original node dropped stay
// unrecorded.
func (r *rewriter) emit(n *ir.Node, op ir.Op, ins []*ir.Value, axes []int) error {
	return r.emitGrouped(n, op, ins, axes, 0)
}

// emitGrouped is emit for outputs whose rows come in group blocks (see
// rowsValue).
func (r *rewriter) emitGrouped(n *ir.Node, op ir.Op, ins []*ir.Value, axes []int, group int) error {
	types := make([]ir.Type, len(ins))
	for i, v := range ins {
		if v != nil {
			types[i] = v.Type
		}
	}
	if _, err := op.Infer(types); err != nil {
		return fmt.Errorf("%w: %w", errNotCausalDecoder, err)
	}
	outs := r.b.Op(op, ins...)
	for j, o := range n.Outputs {
		if o == nil {
			continue
		}
		if j >= len(outs) {
			return fmt.Errorf("the rewritten op has %d outputs, want %d", len(outs), len(n.Outputs))
		}
		want := o.Shape
		if axes[j] >= 0 {
			want = r.withRows(o.Shape, axes[j])
			want[axes[j]] *= max(group, 1)
		}
		if !outs[j].Shape.Equal(want) || outs[j].DType != o.DType {
			return fmt.Errorf("%w: output %d is %v after the rewrite, want %s%v", errNotCausalDecoder, j, outs[j].Type, o.DType, want)
		}
		r.vals[o] = rowsValue{outs[j], axes[j], group}
	}
	return nil
}

func sameAxes(n, axis int) []int {
	a := make([]int, n)
	for i := range a {
		a[i] = axis
	}
	return a
}

func (r *rewriter) rewrite(n *ir.Node) error {
	ins := make([]rowsValue, len(n.Inputs))
	anyRows := false
	for i, v := range n.Inputs {
		if v == nil {
			ins[i] = rowsValue{axis: -1}
			continue
		}
		rv, err := r.get(v)
		if err != nil {
			return err
		}
		ins[i] = rv
		anyRows = anyRows || rv.axis >= 0
	}
	plain := make([]*ir.Value, len(ins))
	for i, rv := range ins {
		plain[i] = rv.v
	}
	if !anyRows {
		if err := r.checkStaticGather(n); err != nil {
			return err
		}
		return r.emit(n, n.Op, plain, sameAxes(len(n.Outputs), -1))
	}
	switch n.Op.(type) {
	case *ir.Reshape, *ir.MatMul: // they check grouped rows themselves
	default:
		for _, rv := range ins {
			if rv.group > 1 {
				return fmt.Errorf("%w: %s reads query heads grouped into the rows of a key head, which the rewrite follows only into attention's products", errNotCausalDecoder, n.Op.Name())
			}
		}
	}
	switch op := n.Op.(type) {
	case *ir.Unary, *ir.Binary, *ir.Where, *ir.Cast, *ir.Clip, *ir.Copy:
		return r.elementwise(n, ins)
	case *ir.Reshape:
		return r.reshape(n, op, ins[0])
	case *ir.Transpose:
		axis := slices.Index(op.Perm, ins[0].axis)
		return r.emit(n, op, plain, []int{axis})
	case *ir.Expand:
		axis := ins[0].axis + len(op.Shape) - len(n.Inputs[0].Shape)
		if op.Shape[axis] != r.capacity {
			return fmt.Errorf("%w: Expand to %v moves the positions", errNotCausalDecoder, op.Shape)
		}
		return r.emit(n, &ir.Expand{Shape: r.withRows(op.Shape, axis)}, plain, []int{axis})
	case *ir.Slice:
		a := ins[0].axis
		if op.Starts[a] != 0 || op.Steps[a] != 1 || op.Sizes[a] != r.capacity {
			return fmt.Errorf("%w: Slice cuts the positions", errNotCausalDecoder)
		}
		sizes := slices.Clone(op.Sizes)
		sizes[a] = r.step
		return r.emit(n, &ir.Slice{Starts: op.Starts, Steps: op.Steps, Sizes: sizes}, plain, []int{a})
	case *ir.Gather:
		return r.gatherOp(n, op, ins)
	case *ir.Concat:
		return r.concat(n, op, ins)
	case *ir.Split:
		if ins[0].axis == op.Axis {
			return fmt.Errorf("%w: Split cuts the positions", errNotCausalDecoder)
		}
		return r.emit(n, op, plain, sameAxes(len(n.Outputs), ins[0].axis))
	case *ir.Softmax:
		if ins[0].axis == op.Axis {
			return fmt.Errorf("%w: softmax over the positions of the rows", errNotCausalDecoder)
		}
		return r.emit(n, op, plain, []int{ins[0].axis})
	case *ir.LayerNorm:
		if ins[0].axis < 0 || ins[0].axis >= op.Axis || ins[1].axis >= 0 || len(ins) > 2 && ins[2].axis >= 0 {
			return fmt.Errorf("%w: normalization over the positions", errNotCausalDecoder)
		}
		return r.emit(n, op, plain, sameAxes(len(n.Outputs), ins[0].axis))
	case *ir.Reduce:
		a := ins[0].axis
		if slices.Contains(op.Axes, a) {
			return fmt.Errorf("%w: reduction over the positions", errNotCausalDecoder)
		}
		out := a
		if !op.KeepDims {
			for _, x := range op.Axes {
				if x < a {
					out--
				}
			}
		}
		return r.emit(n, op, plain, []int{out})
	case *ir.MatMul:
		return r.matmul(n, op, ins)
	case *ir.Gemm:
		return r.gemm(n, op, ins)
	}
	return fmt.Errorf("%w: %s reads values that depend on the positions, which the rewrite does not model", errNotCausalDecoder, n.Op.Name())
}

// checkStaticGather refuses a Gather of fixed indices that leave its
// data: a position table too short for the capacity, which would fail
// only when the graph runs.
func (r *rewriter) checkStaticGather(n *ir.Node) error {
	op, ok := n.Op.(*ir.Gather)
	if !ok || n.Inputs[1].Kind != ir.ConstValue {
		return nil
	}
	size := n.Inputs[0].Shape[op.Axis]
	idx := n.Inputs[1].Const
	for i := range idx.Len() {
		if x := idx.Int64At(i); x < int64(-size) || x >= int64(size) {
			return fmt.Errorf("%w: index %d into a table of %d rows", errBeyondContext, x, size)
		}
	}
	return nil
}

// broadcastJoin gathers the full operands of a broadcasting op whose rows
// operands put the positions on output axis out (rank outRank).
func (r *rewriter) broadcastJoin(ins []rowsValue, origs []*ir.Value, outAxis, outRank int) ([]*ir.Value, error) {
	vals := make([]*ir.Value, len(ins))
	for i, rv := range ins {
		vals[i] = rv.v
		if rv.v == nil || rv.axis >= 0 {
			continue
		}
		local := outAxis - (outRank - len(origs[i].Shape))
		if local < 0 || origs[i].Shape[local] == 1 {
			continue
		}
		if origs[i].Shape[local] != r.capacity {
			return nil, fmt.Errorf("%w: operand %d %v does not broadcast over the positions", errNotCausalDecoder, i, origs[i].Type)
		}
		vals[i] = r.gather(origs[i], rv.v, local)
	}
	return vals, nil
}

func (r *rewriter) elementwise(n *ir.Node, ins []rowsValue) error {
	outRank := len(n.Outputs[0].Shape)
	axis := -1
	for i, rv := range ins {
		if rv.v == nil || rv.axis < 0 {
			continue
		}
		a := rv.axis + outRank - len(n.Inputs[i].Shape)
		if axis >= 0 && a != axis {
			return fmt.Errorf("%w: operands hold their positions on different axes", errNotCausalDecoder)
		}
		axis = a
	}
	vals, err := r.broadcastJoin(ins, n.Inputs, axis, outRank)
	if err != nil {
		return err
	}
	return r.emit(n, n.Op, vals, []int{axis})
}

// reshape keeps the positions when the reshape leaves their axis whole:
// the elements before it and after it are the same in both shapes. It
// also follows G entries of the axes before the positions merged into
// them (a value of G groups) and split off again: the query heads of a
// key head made rows of its product by the Attention op's import
// ([.., H, C, D] → [.., H/G, G·C, D]).
func (r *rewriter) reshape(n *ir.Node, op *ir.Reshape, in rowsValue) error {
	src := n.Inputs[0].Shape
	group := max(in.group, 1)
	before := src[:in.axis].Size() * group // the blocks of C rows before the positions' axis
	for b, d := range op.Shape {
		if d == r.capacity && op.Shape[:b].Size() == before {
			return r.emit(n, &ir.Reshape{Shape: r.withRows(op.Shape, b)}, []*ir.Value{in.v}, []int{b})
		}
	}
	for b, d := range op.Shape {
		if g := d / r.capacity; in.group <= 1 && g > 1 && d == g*r.capacity && op.Shape[:b].Size()*g == before {
			shape := r.withRows(op.Shape, b)
			shape[b] *= g
			return r.emitGrouped(n, &ir.Reshape{Shape: shape}, []*ir.Value{in.v}, []int{b}, g)
		}
	}
	return fmt.Errorf("%w: Reshape %v → %v merges the positions with another axis", errNotCausalDecoder, src, op.Shape)
}

func (r *rewriter) gatherOp(n *ir.Node, op *ir.Gather, ins []rowsValue) error {
	data, idx := ins[0], ins[1]
	switch {
	case data.axis < 0: // a table looked up by per-position indices (an embedding)
		return r.emit(n, op, []*ir.Value{data.v, idx.v}, []int{op.Axis + idx.axis})
	case idx.axis < 0 && data.axis != op.Axis:
		out := data.axis
		if data.axis > op.Axis {
			out += len(n.Inputs[1].Shape) - 1
		}
		if err := r.checkStaticGather(n); err != nil {
			return err
		}
		return r.emit(n, op, []*ir.Value{data.v, idx.v}, []int{out})
	}
	return fmt.Errorf("%w: Gather along the positions", errNotCausalDecoder)
}

func (r *rewriter) concat(n *ir.Node, op *ir.Concat, ins []rowsValue) error {
	axis := -1
	for _, rv := range ins {
		if rv.axis >= 0 {
			if axis >= 0 && rv.axis != axis {
				return fmt.Errorf("%w: Concat of operands with their positions on different axes", errNotCausalDecoder)
			}
			axis = rv.axis
		}
	}
	if axis == op.Axis {
		// An empty past bound as a constant, joined to the new keys:
		// the join is the rows themselves.
		var rows *rowsValue
		for i, rv := range ins {
			switch {
			case rv.axis >= 0 && rows == nil:
				rows = &ins[i]
			case rv.axis >= 0 || n.Inputs[i].Shape[op.Axis] != 0:
				return fmt.Errorf("%w: Concat along the positions", errNotCausalDecoder)
			}
		}
		r.vals[n.Outputs[0]] = *rows
		return nil
	}
	vals, err := r.broadcastJoin(ins, n.Inputs, axis, len(n.Outputs[0].Shape))
	if err != nil {
		return err
	}
	return r.emit(n, op, vals, []int{axis})
}

// matmul handles the two products of attention (the right operand holds
// every position: it comes from a cache) and products with weights
// (positions on a row or batch axis of one operand).
func (r *rewriter) matmul(n *ir.Node, op *ir.MatMul, ins []rowsValue) error {
	a, b := ins[0], ins[1]
	sa, sb := n.Inputs[0].Shape, n.Inputs[1].Shape
	outRank := len(n.Outputs[0].Shape)
	if len(sa) < 2 || len(sb) < 2 {
		return fmt.Errorf("%w: MatMul of a vector over the positions", errNotCausalDecoder)
	}
	posA, posB := a.axis-len(sa), b.axis-len(sb) // -1: columns, -2: rows, below: batch
	switch {
	case b.group > 1 || a.group > 1 && posA != -2:
		return fmt.Errorf("%w: MatMul of grouped query heads outside attention's products", errNotCausalDecoder)
	case a.axis >= 0 && posA == -2 && b.axis < 0:
		return r.emitGrouped(n, op, []*ir.Value{a.v, b.v}, []int{outRank - 2}, a.group)
	case a.axis >= 0 && posA == -2 && (posB == -1 || posB == -2):
		if gk, ok := groupedKeysOf(n.Inputs[1]); ok && a.group <= 1 {
			if done, err := r.groupedAttention(n, a, gk); done || err != nil {
				return err
			}
		}
		full, err := r.full(n.Inputs[1], b)
		if err != nil {
			return err
		}
		return r.emitGrouped(n, op, []*ir.Value{a.v, full}, []int{outRank - 2}, a.group)
	case a.axis < 0 && b.axis >= 0 && posB == -1:
		return r.emit(n, op, []*ir.Value{a.v, b.v}, []int{outRank - 1})
	case (a.axis < 0 || posA < -2) && (b.axis < 0 || posB < -2):
		// Positions on a batch axis: the batch axes broadcast like an
		// element-wise op's.
		axis := -1
		for i, rv := range ins {
			if rv.axis >= 0 {
				o := rv.axis + outRank - len(n.Inputs[i].Shape)
				if axis >= 0 && o != axis {
					return fmt.Errorf("%w: MatMul operands hold their positions on different axes", errNotCausalDecoder)
				}
				axis = o
			}
		}
		vals, err := r.broadcastJoin(ins, n.Inputs, axis, outRank)
		if err != nil {
			return err
		}
		return r.emit(n, op, vals, []int{axis})
	}
	return fmt.Errorf("%w: MatMul contracts over the positions outside the attention pattern", errNotCausalDecoder)
}

func (r *rewriter) gemm(n *ir.Node, op *ir.Gemm, ins []rowsValue) error {
	a, b := ins[0], ins[1]
	rowsAxisA := 0
	if op.TransA {
		rowsAxisA = 1
	}
	if a.axis != rowsAxisA || b.axis >= 0 || len(ins) > 2 && ins[2].axis >= 0 {
		return fmt.Errorf("%w: Gemm over the positions", errNotCausalDecoder)
	}
	vals := []*ir.Value{a.v, b.v}
	if len(ins) > 2 && ins[2].v != nil {
		bias, err := r.broadcastJoin(ins[2:], n.Inputs[2:], 0, 2)
		if err != nil {
			return err
		}
		vals = append(vals, bias[0])
	}
	return r.emit(n, op, vals, []int{0})
}

// groupedKeys describes an attention operand that repeats each of fewer
// key (or value) heads for a group of consecutive query heads, as
// grouped-query attention exports write it: the heads x, a unit axis
// inserted after their head axis (Reshape), Expand along it to the group,
// a Reshape merging it into the head axis, and maybe a Transpose:
//
//	orig = Transpose(Reshape(Expand(Reshape(x))), perm)
//
// so that orig's head h is x's head h/group. The own cache then holds x's
// heads (transposed like orig), not the expanded ones.
type groupedKeys struct {
	x     *ir.Value
	perm  []int // nil: no transpose
	group int
	head  int // the head axis, in x (and before the transpose)
}

// groupedKeysOf matches orig against the repetition groupedKeys
// describes, by the shapes along the chain.
func groupedKeysOf(orig *ir.Value) (groupedKeys, bool) {
	var gk groupedKeys
	producer := func(v *ir.Value) (*ir.Node, bool) {
		n := v.Producer
		return n, v.Kind == ir.NodeOutput && n != nil && len(n.Inputs) == 1 && n.Inputs[0] != nil
	}
	v := orig
	if n, ok := producer(v); ok {
		if t, ok := n.Op.(*ir.Transpose); ok {
			gk.perm, v = t.Perm, n.Inputs[0]
		}
	}
	merged := v // the heads repeated: x's shape with group times the heads
	n, ok := producer(merged)
	if !ok {
		return gk, false
	}
	if _, reshape := n.Op.(*ir.Reshape); !reshape {
		return gk, false
	}
	expanded := n.Inputs[0]
	if n, ok = producer(expanded); !ok {
		return gk, false
	}
	if _, expand := n.Op.(*ir.Expand); !expand {
		return gk, false
	}
	unit := n.Inputs[0]
	if n, ok = producer(unit); !ok {
		return gk, false
	}
	if _, reshape := n.Op.(*ir.Reshape); !reshape {
		return gk, false
	}
	gk.x = n.Inputs[0]
	xs, us, es, ms := gk.x.Shape, unit.Shape, expanded.Shape, merged.Shape
	if len(us) != len(xs)+1 || len(es) != len(us) || len(ms) != len(xs) {
		return gk, false
	}
	for at := 1; at < len(us); at++ {
		group := es[at]
		if us[at] != 1 || group < 2 ||
			!us[:at].Equal(xs[:at]) || !us[at+1:].Equal(xs[at:]) ||
			!es[:at].Equal(us[:at]) || !es[at+1:].Equal(us[at+1:]) ||
			!ms[:at-1].Equal(xs[:at-1]) || ms[at-1] != xs[at-1]*group || !ms[at:].Equal(xs[at:]) {
			continue
		}
		gk.group, gk.head = group, at-1
		return gk, true
	}
	return gk, false
}

// groupedAttention rewrites an attention product whose right operand
// repeats key heads (gk): the cache holds each key head once, and the
// query heads of a group become rows of one product, as the Attention
// op's import does ([.., H, S, K] → [.., H/G, G·S, K]; the heads may be
// the first axis, with no batch axis before them). It reports false, for
// the caller to cache the repeated operand, when the layout does not
// allow that: the heads not the batch axis right before the matrices, or
// the queries' batch axes not those of the keys.
func (r *rewriter) groupedAttention(n *ir.Node, a rowsValue, gk groupedKeys) (bool, error) {
	orig, out := n.Inputs[1], n.Outputs[0]
	rank := len(orig.Shape)
	xr, err := r.get(gk.x)
	if err != nil || xr.axis < 0 || xr.axis == gk.head {
		return false, err
	}
	head, axis := gk.head, xr.axis
	if gk.perm != nil {
		head, axis = slices.Index(gk.perm, head), slices.Index(gk.perm, axis)
	}
	q := a.v.Shape
	if rank < 3 || head != rank-3 || len(q) != rank || len(out.Shape) != rank ||
		!q[:rank-2].Equal(orig.Shape[:rank-2]) {
		return false, nil
	}
	rows := xr.v
	if gk.perm != nil {
		if rows = r.op1(&ir.Transpose{Perm: gk.perm}, rows); rows == nil {
			return false, nil
		}
	}
	heads := orig.Shape[head]
	compact := ir.Type{DType: orig.DType, Shape: orig.Shape.Clone()}
	compact.Shape[head] = heads / gk.group
	full, err := r.fullAs(orig, compact, rowsValue{v: rows, axis: axis}, fmt.Sprintf(", shared by %d query heads", gk.group))
	if err != nil {
		return true, err
	}
	grouped := q.Clone()
	grouped[rank-3], grouped[rank-2] = heads/gk.group, gk.group*q[rank-2]
	prod := r.op1(&ir.MatMul{}, r.op1(&ir.Reshape{Shape: grouped}, a.v), full)
	if prod == nil {
		return true, fmt.Errorf("%w: the grouped query heads do not multiply the cached key heads %v", errNotCausalDecoder, compact)
	}
	return true, r.emit(n, &ir.Reshape{Shape: r.withRows(out.Shape, rank-2)}, []*ir.Value{prod}, []int{rank - 2})
}
