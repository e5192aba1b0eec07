package ir

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// GradPrefix starts the name of every gradient output: the gradient of
// parameter "h.0.attn.weight" is the output "grad:h.0.attn.weight".
const GradPrefix = "grad:"

// ErrNoGradient is wrapped by the errors of Grad for a differentiable path
// through an op (or an op's input) that has no gradient rule.
var ErrNoGradient = errors.New("no gradient rule")

// Grad differentiates g's scalar output named output with respect to the
// parameters wrt (parameters of g; nil means every float parameter the
// output depends on, in g.Params order) by reverse-mode automatic
// differentiation on the IR. The result is a new graph with g's inputs
// whose outputs are output (under its name) followed by one gradient per
// parameter, named GradPrefix + the parameter's ONNX name, with the
// parameter's shape and dtype. g itself is not modified.
//
// The new graph's parameters are new Param values holding the very same
// tensors as g's (writing one updates the other). Its nodes are g's nodes
// (copied) followed by the backward pass: ordinary IR ops (MatMul with
// transposed operands, ReduceSum for broadcast operands, Mul, ...) and the
// fused internal gradient ops of this package (SoftmaxGrad, LayerNormGrad,
// UnaryGrad, ScatterAddRows, ...). Only paths from the parameters to the
// output through float values are differentiated: integer and bool values
// (shapes, masks, token ids, Where's condition) carry no gradient, and
// branches whose gradient is zero (Floor, Sign, an unselected Split piece)
// are pruned rather than filled with zeros. A parameter listed in wrt that
// gets no gradient at all gets an output of zeros (computed by an Expand
// node, so that every gradient output is a tensor of its own). Tied parameters and Identity
// aliases accumulate every use's contribution into the one gradient, in
// a fixed order (reverse node order, then input order), so a graph always
// computes the same bits.
func Grad(g *Graph, output string, wrt []*Param) (*Graph, error) {
	c, vmap, pmap := cloneGraph(g)
	var loss *Value
	for _, o := range g.Outputs {
		if o.Name == output {
			loss = vmap[o.Value]
			break
		}
	}
	if loss == nil {
		return nil, fmt.Errorf("ir: grad: graph %q has no output %q", g.Name, output)
	}
	params, err := mapParams(g, pmap, wrt)
	if err != nil {
		return nil, err
	}
	return differentiate(c, loss, output, params)
}

// mapParams translates parameters of g into those of its clone.
func mapParams(g *Graph, pmap map[*Param]*Param, wrt []*Param) ([]*Param, error) {
	if wrt == nil {
		return nil, nil
	}
	out := make([]*Param, 0, len(wrt))
	seen := map[*Param]bool{}
	for _, p := range wrt {
		q, ok := pmap[p]
		if !ok {
			name := "<nil>"
			if p != nil {
				name = p.Name
			}
			return nil, fmt.Errorf("ir: grad: %q is not a parameter of graph %q", name, g.Name)
		}
		if seen[q] {
			return nil, fmt.Errorf("ir: grad: parameter %q listed twice", p.Name)
		}
		seen[q] = true
		out = append(out, q)
	}
	return out, nil
}

// cloneGraph copies g's values and nodes (ops are immutable and shared;
// parameters become new Params sharing the tensors), so that a transform
// can add nodes and outputs without touching g.
func cloneGraph(g *Graph) (*Graph, map[*Value]*Value, map[*Param]*Param) {
	c := &Graph{Name: g.Name, Opset: g.Opset}
	vmap := map[*Value]*Value{}
	pmap := map[*Param]*Param{}
	cloneValue := func(v *Value) *Value {
		if v == nil {
			return nil
		}
		if w, ok := vmap[v]; ok {
			return w
		}
		w := &Value{Name: v.Name, Type: Type{v.DType, v.Shape.Clone()}, Kind: v.Kind, Const: v.Const}
		vmap[v] = w
		return w
	}
	for _, v := range g.Inputs {
		c.Inputs = append(c.Inputs, cloneValue(v))
	}
	for _, p := range g.Params {
		q := &Param{Name: p.Name, Tensor: p.Tensor, Aliases: slices.Clone(p.Aliases)}
		q.Value = cloneValue(p.Value)
		q.Value.Param = q
		pmap[p] = q
		c.Params = append(c.Params, q)
	}
	for _, n := range g.Nodes {
		m := &Node{Name: n.Name, Op: n.Op, Origin: n.Origin}
		for _, v := range n.Inputs {
			m.Inputs = append(m.Inputs, cloneValue(v))
		}
		for _, v := range n.Outputs {
			w := cloneValue(v)
			if w != nil {
				w.Producer = m
			}
			m.Outputs = append(m.Outputs, w)
		}
		c.Nodes = append(c.Nodes, m)
	}
	for _, o := range g.Outputs {
		c.Outputs = append(c.Outputs, Output{Name: o.Name, Value: cloneValue(o.Value)})
	}
	return c, vmap, pmap
}

// builderOn returns a Builder that appends to an existing graph, with the
// graph's value names taken.
func builderOn(g *Graph) *Builder {
	b := &Builder{g: g, names: map[string]bool{}}
	mark := func(v *Value) {
		if v != nil {
			b.names[v.Name] = true
		}
	}
	for _, v := range g.Inputs {
		mark(v)
	}
	for _, p := range g.Params {
		mark(p.Value)
		for _, a := range p.Aliases {
			b.names[a] = true
		}
	}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			mark(v)
		}
		for _, v := range n.Outputs {
			mark(v)
		}
	}
	return b
}

// contribution is one term of a value's gradient: a dense tensor, or a
// deferred scatter (Gather's and Slice's gradients), which is emitted when
// the terms are summed so that it can add into the sum of the others
// instead of materializing a zero-filled tensor first.
type contribution struct {
	dense *Value
	dy    *Value // deferred: the gradient being scattered
	idx   *Value // ScatterAddRows: the indices
	op    Op     // deferred: *ScatterAddRows or *SliceGrad
	from  *Node  // deferred: the forward node whose gradient it is
}

// differ builds the backward pass of one graph.
type differ struct {
	g        *Graph
	b        *Builder
	active   map[*Value]bool // depends on a differentiated parameter through float values
	contribs map[*Value][]contribution
	backward map[*Node]bool // nodes of the backward pass
	cur      *Node          // the forward node whose rule is running
	err      error
}

func differentiate(g *Graph, loss *Value, lossName string, wrt []*Param) (*Graph, error) {
	if !isFloat(loss.DType) || loss.Shape.Size() != 1 {
		return nil, fmt.Errorf("ir: grad: output %q is %v, want a float scalar", lossName, loss.Type)
	}
	d := &differ{g: g, b: builderOn(g), active: map[*Value]bool{}, contribs: map[*Value][]contribution{}, backward: map[*Node]bool{}}
	forward := slices.Clone(g.Nodes)

	// Which values depend on the parameters, and which ones the loss
	// depends on.
	all := wrt == nil
	if all {
		for _, p := range g.Params {
			if isFloat(p.Value.DType) {
				d.active[p.Value] = true
			}
		}
	} else {
		for _, p := range wrt {
			if !isFloat(p.Value.DType) {
				return nil, fmt.Errorf("ir: grad: parameter %q is %s, not a float", p.Name, p.Value.DType)
			}
			d.active[p.Value] = true
		}
	}
	for _, n := range forward {
		on := false
		for _, v := range n.Inputs {
			if v != nil && d.active[v] {
				on = true
			}
		}
		if !on {
			continue
		}
		for _, v := range n.Outputs {
			if v != nil && isFloat(v.DType) {
				d.active[v] = true
			}
		}
	}
	reach := map[*Value]bool{loss: true}
	for i := len(forward) - 1; i >= 0; i-- {
		n := forward[i]
		if !slices.ContainsFunc(n.Outputs, func(v *Value) bool { return v != nil && reach[v] }) {
			continue
		}
		for _, v := range n.Inputs {
			if v != nil {
				reach[v] = true
			}
		}
	}
	if all {
		for _, p := range g.Params {
			if d.active[p.Value] && reach[p.Value] {
				wrt = append(wrt, p)
			}
		}
	}

	// Reverse sweep.
	if d.active[loss] {
		d.contribs[loss] = []contribution{{dense: d.constant(filled(loss.DType, loss.Shape, 1))}}
	}
	for i := len(forward) - 1; i >= 0; i-- {
		n := forward[i]
		dys := make([]*Value, len(n.Outputs))
		any := false
		for j, v := range n.Outputs {
			if v != nil && d.active[v] && reach[v] {
				d.cur = n
				dys[j] = d.finalize(v)
				any = any || dys[j] != nil
			}
		}
		if !any {
			continue
		}
		d.cur = n
		if err := d.rule(&gradCtx{d: d, n: n, dy: dys}); err != nil {
			return nil, fmt.Errorf("ir: grad: %s: %w", n, err)
		}
		if d.err != nil {
			return nil, d.err
		}
	}

	// Outputs: the loss, then a gradient per parameter, each its own
	// node output (so that a caller scaling one gradient in place never
	// changes another or a forward value).
	d.cur = nil
	outs := []Output{{Name: lossName, Value: loss}}
	used := map[*Value]bool{loss: true}
	for _, p := range wrt {
		gv := d.finalize(p.Value)
		switch {
		case gv == nil:
			gv = d.emitFold(false, &Expand{Shape: p.Value.Shape.Clone()}, d.scalar(p.Value.DType, 0))[0]
		case gv.Kind != NodeOutput || used[gv] || !d.backward[gv.Producer]:
			gv = d.emitFold(false, &Copy{}, gv)[0]
		}
		used[gv] = true
		outs = append(outs, Output{Name: GradPrefix + p.Name, Value: gv})
	}
	if d.err != nil {
		return nil, d.err
	}
	g.Outputs = outs
	g.pruneDead()
	g.relinkUses()
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("ir: grad: the gradient graph is invalid: %w", err)
	}
	return g, nil
}

// filled returns a tensor of the given type with every element v.
func filled(dt DType, shape Shape, v float64) *Tensor {
	t := NewTensor(Float64, shape)
	for i := range t.Float64s() {
		t.Float64s()[i] = v
	}
	return Convert(t, dt)
}

// constant adds a constant value.
func (d *differ) constant(t *Tensor) *Value { return d.b.Const(t) }

// scalar is a rank-0 constant of dtype dt.
func (d *differ) scalar(dt DType, v float64) *Value { return d.constant(filled(dt, Shape{}, v)) }

// foldLimit bounds the results the differ computes at build time when
// every operand is a constant (scalars derived from attributes, say);
// larger ones stay ops so they share the executor's memory plan.
const foldLimit = 1 << 16

// emit appends a backward node and returns its outputs; when every operand
// is a constant and the result small, it evaluates it instead. The first
// error is kept in d.err and later calls return placeholders.
func (d *differ) emit(op Op, in ...*Value) []*Value { return d.emitFold(true, op, in...) }

// emitFold is emit, folding all-constant operations only when fold is set.
func (d *differ) emitFold(fold bool, op Op, in ...*Value) []*Value {
	placeholders := func() []*Value {
		out := make([]*Value, 16)
		for i := range out {
			out[i] = &Value{Name: "invalid", Type: Type{Float32, Shape{}}}
		}
		return out
	}
	if d.err != nil {
		return placeholders()
	}
	types := make([]Type, len(in))
	allConst := true
	for i, v := range in {
		if v != nil {
			types[i] = v.Type
			if v.Kind != ConstValue {
				allConst = false
			}
		}
	}
	outTypes, err := op.Infer(types)
	if err != nil {
		where := "the loss"
		if d.cur != nil {
			where = d.cur.String()
		}
		d.err = fmt.Errorf("ir: grad: %s: emitting %s: %w", where, op.Name(), err)
		return placeholders()
	}
	if allConst && fold {
		size := 0
		for _, t := range outTypes {
			size += t.Shape.Size() * t.DType.Size()
		}
		if size <= foldLimit {
			ts := make([]*Tensor, len(in))
			for i, v := range in {
				if v != nil {
					ts[i] = v.Const
				}
			}
			res, err := EvalOp(op, ts...)
			if err == nil {
				out := make([]*Value, len(res))
				for i, t := range res {
					out[i] = d.constant(t)
				}
				return out
			}
		}
	}
	origin := "loss"
	hint := "loss"
	if d.cur != nil {
		origin = "gradient of " + d.cur.String()
		hint = "grad/" + op.Name()
		if len(d.cur.Outputs) > 0 && d.cur.Outputs[0] != nil {
			hint = "grad/" + d.cur.Outputs[0].Name
		}
	}
	n := &Node{Op: op, Inputs: in, Origin: origin}
	for _, t := range outTypes {
		n.Outputs = append(n.Outputs, &Value{Name: d.b.name(hint), Type: Type{t.DType, t.Shape.Clone()}, Producer: n})
	}
	d.g.Nodes = append(d.g.Nodes, n)
	d.backward[n] = true
	return n.Outputs
}

func (d *differ) emit1(op Op, in ...*Value) *Value { return d.emit(op, in...)[0] }

// ensureOutput makes sure forward node n computes its output i (LayerNorm's
// statistics, Dropout's mask, SoftmaxCELoss's gradient), which the
// imported graph may have left out.
func (d *differ) ensureOutput(n *Node, i int) *Value {
	if i < len(n.Outputs) && n.Outputs[i] != nil {
		return n.Outputs[i]
	}
	types := make([]Type, len(n.Inputs))
	for j, v := range n.Inputs {
		if v != nil {
			types[j] = v.Type
		}
	}
	outTypes, err := n.Op.Infer(types)
	if err != nil || i >= len(outTypes) {
		if d.err == nil {
			d.err = fmt.Errorf("ir: grad: %s has no output %d", n, i)
		}
		return &Value{Name: "invalid", Type: Type{Float32, Shape{}}}
	}
	for len(n.Outputs) <= i {
		n.Outputs = append(n.Outputs, nil)
	}
	name := fmt.Sprintf("%s/output_%d", n.Op.Name(), i)
	if n.Outputs[0] != nil {
		name = fmt.Sprintf("%s/output_%d", n.Outputs[0].Name, i)
	}
	v := &Value{Name: d.b.name(name), Type: Type{outTypes[i].DType, outTypes[i].Shape.Clone()}, Producer: n}
	n.Outputs[i] = v
	return v
}

// addDense records g as a term of x's gradient, summed over the axes along
// which x was broadcast to g's shape.
func (d *differ) addDense(x, g *Value) {
	d.contribs[x] = append(d.contribs[x], contribution{dense: d.unbroadcast(g, x.Shape)})
}

// finalize sums the recorded terms of v's gradient (nil: none, the
// gradient is zero). Dense terms add in recording order; deferred scatters
// then add into that sum. Slices that tile v exactly along one axis (the
// q/k/v slices of a packed projection) become one Concat.
func (d *differ) finalize(v *Value) *Value {
	cs := d.contribs[v]
	delete(d.contribs, v)
	if len(cs) == 0 {
		return nil
	}
	if t := d.tiledSlices(v, cs); t != nil {
		return t
	}
	var acc *Value
	for _, c := range cs {
		if c.dense == nil {
			continue
		}
		if acc == nil {
			acc = c.dense
		} else {
			acc = d.emit1(&Binary{Fn: Add}, acc, c.dense)
		}
	}
	defer func(cur *Node) { d.cur = cur }(d.cur)
	for _, c := range cs {
		if c.op != nil {
			// Named as the gradient of the node it came from (a parameter's
			// terms are summed after the walk, with no node current).
			d.cur = c.from
		}
		switch op := c.op.(type) {
		case *ScatterAddRows:
			if acc == nil {
				acc = d.emit1(op, c.dy, c.idx)
			} else {
				acc = d.emit1(op, c.dy, c.idx, acc)
			}
		case *SliceGrad:
			if acc == nil {
				acc = d.emit1(op, c.dy)
			} else {
				acc = d.emit1(op, c.dy, acc)
			}
		}
	}
	return acc
}

// tiledSlices returns Concat of the deferred slice terms when they are all
// unit-step slices along one axis that cover v exactly once, else nil.
func (d *differ) tiledSlices(v *Value, cs []contribution) *Value {
	axis := -1
	type piece struct {
		start int
		dy    *Value
	}
	var pieces []piece
	for _, c := range cs {
		sg, ok := c.op.(*SliceGrad)
		if !ok {
			return nil
		}
		a := -1
		for i := range sg.Starts {
			if sg.Steps[i] != 1 {
				return nil
			}
			if c.dy.Shape[i] != v.Shape[i] {
				if a >= 0 {
					return nil
				}
				a = i
			} else if sg.Starts[i] != 0 {
				return nil
			}
		}
		if a < 0 {
			// A full-size slice covers v by itself.
			if len(cs) == 1 {
				return c.dy
			}
			return nil
		}
		if axis >= 0 && a != axis {
			return nil
		}
		axis = a
		pieces = append(pieces, piece{sg.Starts[a], c.dy})
	}
	sort.SliceStable(pieces, func(i, j int) bool { return pieces[i].start < pieces[j].start })
	at := 0
	ins := make([]*Value, len(pieces))
	for i, p := range pieces {
		if p.start != at {
			return nil
		}
		at += p.dy.Shape[axis]
		ins[i] = p.dy
	}
	if at != v.Shape[axis] {
		return nil
	}
	return d.emit1(&Concat{Axis: axis}, ins...)
}

// ---------------------------------------------------------------- helpers for rules

func (d *differ) binary(fn BinaryFn, a, b *Value) *Value { return d.emit1(&Binary{Fn: fn}, a, b) }

func (d *differ) neg(a *Value) *Value {
	if a.Kind == NodeOutput {
		if u, ok := a.Producer.Op.(*Unary); ok && u.Fn == Neg && d.backward[a.Producer] {
			return a.Producer.Inputs[0]
		}
	}
	return d.emit1(&Unary{Fn: Neg}, a)
}

// reshape returns v with another shape (v itself when it has it already).
func (d *differ) reshape(v *Value, shape Shape) *Value {
	if v.Shape.Equal(shape) {
		return v
	}
	if v.Kind == NodeOutput {
		if _, ok := v.Producer.Op.(*Reshape); ok {
			v = v.Producer.Inputs[0]
			if v.Shape.Equal(shape) {
				return v
			}
		}
	}
	return d.emit1(&Reshape{Shape: shape.Clone()}, v)
}

// transpose returns v with its axes permuted, composing with a transpose
// that produced v, and turning the transpose of a backward MatMul into the
// product of the transposed operands in swapped order ((AB)ᵀ = BᵀAᵀ), so
// that weight gradients come out in the weights' layout without a
// transpose pass (the executor folds operand transposes into the GEMM).
func (d *differ) transpose(v *Value, perm []int) *Value {
	if isIdentityPerm(perm) {
		return v
	}
	if v.Kind == NodeOutput {
		switch op := v.Producer.Op.(type) {
		case *Transpose:
			composed := make([]int, len(perm))
			for i, p := range perm {
				composed[i] = op.Perm[p]
			}
			// Compose unless that turns a last-two-axes swap, which the
			// executor folds into a GEMM for free, into a general
			// permutation that must be materialized.
			if isIdentityPerm(composed) || isSwapLast2(composed) || !isSwapLast2(perm) {
				return d.transpose(v.Producer.Inputs[0], composed)
			}
		case *MatMul:
			a, b := v.Producer.Inputs[0], v.Producer.Inputs[1]
			if d.backward[v.Producer] && isSwapLast2(perm) && len(a.Shape) >= 2 && len(b.Shape) >= 2 {
				return d.emit1(&MatMul{}, d.transpose(b, swapLast2(len(b.Shape))), d.transpose(a, swapLast2(len(a.Shape))))
			}
		}
	}
	return d.emit1(&Transpose{Perm: slices.Clone(perm)}, v)
}

// unbroadcast sums g over the axes along which an operand of shape to was
// broadcast to g's shape, and reshapes the sum to exactly to.
func (d *differ) unbroadcast(g *Value, to Shape) *Value {
	if g.Shape.Equal(to) {
		return g
	}
	if g.Shape.Size() == to.Size() {
		return d.reshape(g, to)
	}
	axes := reduceAxesFor(to, g.Shape)
	if len(axes) == 0 {
		return d.reshape(g, to)
	}
	s := d.emit1(&Reduce{Fn: ReduceSum, Axes: axes}, g)
	return d.reshape(s, to)
}

// gradCtx is what a rule sees: the forward node and the gradients of its
// outputs (nil where an output's gradient is zero or not needed).
type gradCtx struct {
	d  *differ
	n  *Node
	dy []*Value
}

func (c *gradCtx) in(i int) *Value  { return c.n.Inputs[i] }
func (c *gradCtx) out(i int) *Value { return c.d.ensureOutput(c.n, i) }

// needs reports whether input i takes part in the gradient.
func (c *gradCtx) needs(i int) bool {
	return i < len(c.n.Inputs) && c.n.Inputs[i] != nil && c.d.active[c.n.Inputs[i]]
}

// add records g (broadcast to the node's output shape or already input
// i's shape) as a term of input i's gradient.
func (c *gradCtx) add(i int, g *Value) {
	if g == nil || !c.needs(i) {
		return
	}
	c.d.addDense(c.n.Inputs[i], g)
}

// addNeg records −g, negating after the broadcast reduction (fewer
// elements).
func (c *gradCtx) addNeg(i int, g *Value) {
	if g == nil || !c.needs(i) {
		return
	}
	x := c.n.Inputs[i]
	c.d.contribs[x] = append(c.d.contribs[x], contribution{dense: c.d.neg(c.d.unbroadcast(g, x.Shape))})
}

// defer records a scatter term of input i's gradient.
func (c *gradCtx) deferScatter(i int, op Op, dy, idx *Value) {
	if !c.needs(i) {
		return
	}
	x := c.n.Inputs[i]
	c.d.contribs[x] = append(c.d.contribs[x], contribution{dy: dy, idx: idx, op: op, from: c.n})
}

// unsupported is the error for a needed gradient no rule computes.
func (c *gradCtx) unsupported(what string) error {
	return fmt.Errorf("%w for %s", ErrNoGradient, what)
}
