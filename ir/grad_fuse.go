package ir

import "math"

// Rewrites of a model's forward graph before it is differentiated
// (TrainingGraph and LossGraph apply them to their copy of the model).
// Exporters spell some functions out in primitive ops — GELU as five to
// nine element-wise nodes — whose backward would then take as many passes
// over memory and keep every intermediate alive until the backward pass
// reads it. Fused, the function is one op, one pass forward and one
// (UnaryGrad) backward, and keeps only its input. Import already fuses the
// erf GELU (fuseGelu); the tanh approximation (GPT-2's gelu_new), whose
// exports vary more, is fused here, where a missed pattern costs speed
// only.

// fuseForTraining rewrites g in place: tanh-GELU subgraphs become
// Unary{GeluTanh}, and multiplications by a constant 1 disappear. The
// rewritten nodes keep their output values, so every reader is unchanged;
// the nodes that only fed them become dead and are pruned.
func fuseForTraining(g *Graph) {
	uses := map[*Value]int{}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			if v != nil {
				uses[v]++
			}
		}
	}
	for _, o := range g.Outputs {
		uses[o.Value]++
	}
	f := &fuser{uses: uses}
	for _, n := range g.Nodes {
		if x, fn, ok := f.gelu(n); ok {
			n.Op = &Unary{Fn: fn}
			n.Inputs = []*Value{x}
		}
	}
	// x·1 → x: replace the product by its operand everywhere.
	alias := map[*Value]*Value{}
	resolve := func(v *Value) *Value {
		for v != nil && alias[v] != nil {
			v = alias[v]
		}
		return v
	}
	for _, n := range g.Nodes {
		for i, v := range n.Inputs {
			n.Inputs[i] = resolve(v)
		}
		if b, ok := n.Op.(*Binary); ok && b.Fn == Mul && n.Outputs[0] != nil {
			y := n.Outputs[0]
			for k := range 2 {
				x, one := n.Inputs[k], n.Inputs[1-k]
				if isConstScalar(one, 1) && x.DType == y.DType && x.Shape.Equal(y.Shape) {
					alias[y] = x
					break
				}
			}
		}
	}
	for i := range g.Outputs {
		if a := resolve(g.Outputs[i].Value); a != g.Outputs[i].Value && a.Kind == NodeOutput {
			g.Outputs[i].Value = a
		}
	}
	g.pruneDead()
	g.relinkUses()
}

type fuser struct {
	uses map[*Value]int
}

// private returns the node computing v when v is read only once (by the
// pattern being matched), else nil.
func (f *fuser) private(v *Value) *Node {
	if v == nil || v.Kind != NodeOutput || f.uses[v] != 1 {
		return nil
	}
	return v.Producer
}

func binaryOf(n *Node, fn BinaryFn) bool {
	b, ok := n.Op.(*Binary)
	return ok && b.Fn == fn
}

func unaryOf(n *Node, fn UnaryFn) bool {
	u, ok := n.Op.(*Unary)
	return ok && u.Fn == fn
}

// isConstScalar reports whether v is a constant holding one value within
// float32 rounding of want.
func isConstScalar(v *Value, want float64) bool {
	if v == nil || v.Kind != ConstValue || v.Const.Len() != 1 || !v.DType.computable() {
		return false
	}
	got := v.Const.Float64At(0)
	return math.Abs(got-want) <= 1e-6*math.Abs(want)
}

// constOperand returns the operand of binary node n other than a
// constant scalar equal to want.
func constOperand(n *Node, want float64) (*Value, bool) {
	if len(n.Inputs) != 2 {
		return nil, false
	}
	for k := range 2 {
		if isConstScalar(n.Inputs[1-k], want) {
			return n.Inputs[k], true
		}
	}
	return nil, false
}

// gelu reports whether n's output is the tanh-approximated GELU of some x,
//
//	½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
//
// with the products in any order: (x·(1+f))·½, or (x·½)·(1+f), (½·x)·(1+f).
// Every intermediate must be read by the pattern alone.
func (f *fuser) gelu(n *Node) (*Value, UnaryFn, bool) {
	if !binaryOf(n, Mul) || n.Outputs[0] == nil || !isFloat(n.Outputs[0].DType) {
		return nil, 0, false
	}
	y := n.Outputs[0]
	try := func(x, onePlus *Value) (*Value, UnaryFn, bool) {
		if x == nil || !x.Shape.Equal(y.Shape) || x.DType != y.DType {
			return nil, 0, false
		}
		fn, ok := f.onePlusGelu(onePlus, x)
		return x, fn, ok
	}
	a, b := n.Inputs[0], n.Inputs[1]
	// (x·(1+f))·½
	if m, ok := constOperand(n, 0.5); ok {
		if p := f.private(m); p != nil && binaryOf(p, Mul) {
			for k := range 2 {
				if x, fn, ok := try(p.Inputs[k], p.Inputs[1-k]); ok {
					return x, fn, true
				}
			}
		}
	}
	// (x·½)·(1+f) or (½·x)·(1+f)
	for _, pair := range [2][2]*Value{{a, b}, {b, a}} {
		half, onePlus := pair[0], pair[1]
		p := f.private(half)
		if p == nil || !binaryOf(p, Mul) {
			continue
		}
		if x, ok := constOperand(p, 0.5); ok {
			if x, fn, ok := try(x, onePlus); ok {
				return x, fn, true
			}
		}
	}
	return nil, 0, false
}

// onePlusGelu reports whether v is 1 + tanh(√(2/π)·(x + 0.044715·x³)).
func (f *fuser) onePlusGelu(v, x *Value) (UnaryFn, bool) {
	add := f.private(v)
	if add == nil || !binaryOf(add, Add) {
		return 0, false
	}
	t, ok := constOperand(add, 1)
	if !ok {
		return 0, false
	}
	fnNode := f.private(t)
	if fnNode == nil {
		return 0, false
	}
	arg := f.private(fnNode.Inputs[0])
	if arg == nil {
		return 0, false
	}
	switch {
	case unaryOf(fnNode, Tanh):
		// √(2/π)·(x + 0.044715·x³)
		if !binaryOf(arg, Mul) {
			return 0, false
		}
		inner, ok := constOperand(arg, math.Sqrt(2/math.Pi))
		sum := f.private(inner)
		if !ok || sum == nil || !binaryOf(sum, Add) {
			return 0, false
		}
		for k := range 2 {
			if sum.Inputs[k] != x {
				continue
			}
			cube := f.private(sum.Inputs[1-k])
			if cube == nil || !binaryOf(cube, Mul) {
				continue
			}
			pw, ok := constOperand(cube, 0.044715)
			pow := f.private(pw)
			if ok && pow != nil && binaryOf(pow, Pow) && pow.Inputs[0] == x && isConstScalar(pow.Inputs[1], 3) {
				return GeluTanh, true
			}
		}
	}
	return 0, false
}
