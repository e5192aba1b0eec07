package ir

import "math"

// fuseGelu recognizes the erf GELU exporters spell out in primitive ops,
//
//	x·0.5·(1 + erf(x/√2))   as Div(x,√2) or Mul(x,1/√2), Erf, Add 1, then
//	                        Mul(x, ·) and Mul(·, 0.5), or Mul(x, 0.5) and Mul(·, ·)
//
// and replaces it with one Gelu node: one pass over the data instead of
// five, and one gradient rule instead of five. It runs at import, after
// folding (the constants are folded by then); intermediate values that
// anything else reads (or that are graph outputs) keep the pattern as it
// is.
func fuseGelu(g *Graph) {
	uses := map[*Value]int{}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			if v != nil {
				uses[v]++
			}
		}
	}
	for _, o := range g.Outputs {
		uses[o.Value] += 2 // never fuse a value away that is an output
	}
	consumer := map[*Value]*Node{}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			if v != nil && uses[v] == 1 {
				consumer[v] = n
			}
		}
	}
	// only returns the node reading v when it is v's one reader.
	only := func(v *Value) *Node { return consumer[v] }
	binary := func(n *Node, fn BinaryFn) bool {
		b, ok := n.Op.(*Binary)
		return ok && b.Fn == fn && len(n.Outputs) == 1 && n.Outputs[0] != nil
	}
	// otherOperand returns n's operand that is not v, when one of them is v.
	otherOperand := func(n *Node, v *Value) *Value {
		switch v {
		case n.Inputs[0]:
			return n.Inputs[1]
		case n.Inputs[1]:
			return n.Inputs[0]
		}
		return nil
	}
	isScalar := func(v *Value, want float64) bool {
		if v == nil || v.Kind != ConstValue || v.Const.Len() != 1 || !v.DType.IsFloat() {
			return false
		}
		return math.Abs(v.Const.Float64At(0)-want) <= 1e-6*want
	}
	dead := map[*Node]bool{}
	for _, erf := range g.Nodes {
		u, ok := erf.Op.(*Unary)
		if !ok || u.Fn != Erf || dead[erf] {
			continue
		}
		scaled := erf.Inputs[0]
		div := scaled.Producer
		if scaled.Kind != NodeOutput || uses[scaled] != 1 {
			continue
		}
		var x *Value
		switch {
		case binary(div, Div) && isScalar(div.Inputs[1], math.Sqrt2):
			x = div.Inputs[0]
		case binary(div, Mul) && isScalar(div.Inputs[1], 1/math.Sqrt2):
			x = div.Inputs[0]
		case binary(div, Mul) && isScalar(div.Inputs[0], 1/math.Sqrt2):
			x = div.Inputs[1]
		default:
			continue
		}
		add := only(erf.Outputs[0])
		if add == nil || !binary(add, Add) || !isScalar(otherOperand(add, erf.Outputs[0]), 1) {
			continue
		}
		m1 := only(add.Outputs[0])
		if m1 == nil || !binary(m1, Mul) {
			continue
		}
		var half, last *Node // the Mul by 0.5 and the node to replace
		switch other := otherOperand(m1, add.Outputs[0]); {
		case other == x: // x·(1+erf) then ·0.5
			m2 := only(m1.Outputs[0])
			if m2 == nil || !binary(m2, Mul) || !isScalar(otherOperand(m2, m1.Outputs[0]), 0.5) {
				continue
			}
			last = m2
		case other != nil && other.Kind == NodeOutput && uses[other] == 1 && binary(other.Producer, Mul) &&
			otherOperand(other.Producer, x) != nil && isScalar(otherOperand(other.Producer, x), 0.5): // (x·0.5)·(1+erf)
			half, last = other.Producer, m1
		default:
			continue
		}
		if y := last.Outputs[0]; x.DType != y.DType || !x.Shape.Equal(y.Shape) || !isFloat(x.DType) {
			continue
		}
		for _, n := range []*Node{div, erf, add, m1, half} {
			if n != nil && n != last {
				dead[n] = true
			}
		}
		last.Op = &Unary{Fn: Gelu}
		last.Inputs = []*Value{x}
	}
	if len(dead) == 0 {
		return
	}
	nodes := g.Nodes[:0]
	for _, n := range g.Nodes {
		if !dead[n] {
			nodes = append(nodes, n)
		}
	}
	g.Nodes = nodes
}
