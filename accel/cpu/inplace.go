package cpu

import "github.com/dstune/dstune/ir"

// In-place execution: when a node's input dies at that node (nothing reads
// it later and it is not a graph output) and one of its outputs has the
// same dtype and size, the output can take over the input's buffer instead
// of a new one — provided the kernel reads every input element (or row)
// before it writes the matching output element (or row). A training step
// has many such pairs: the logits' buffer becomes their gradient, a bias
// add overwrites the product it adds to, a gradient scatters into the sum
// it accumulates onto (no copy at all), the element-wise backward ops
// overwrite their upstream gradient. The memory plan treats the output as
// a view of the input's buffer, like a reshape.

// inPlaceInputs lists the inputs whose buffer output j of n may take over,
// best first: those the kernel that kernelFor picks for n reads element by
// element (or row by row, a row read entirely before it is written).
func inPlaceInputs(n *ir.Node, j int) []int {
	out := n.Outputs[j]
	in := n.Inputs
	f32 := func(vs ...*ir.Value) bool {
		for _, v := range vs {
			if v != nil && v.DType != ir.Float32 {
				return false
			}
		}
		return true
	}
	sameShape := func(i int) bool { return i < len(in) && in[i] != nil && in[i].Shape.Equal(out.Shape) }
	var cand []int
	add := func(is ...int) {
		for _, i := range is {
			if sameShape(i) {
				cand = append(cand, i)
			}
		}
	}
	switch op := n.Op.(type) {
	case *ir.Unary:
		if f32(in[0]) && op.Fn != ir.Not {
			add(0)
		}
	case *ir.Binary:
		switch op.Fn {
		case ir.Add, ir.Sub, ir.Mul, ir.Div:
			if f32(in[0], in[1], out) {
				add(0, 1)
			}
		}
	case *ir.Where:
		if f32(in[1], in[2]) {
			add(1, 2)
		}
	case *ir.Softmax:
		if f32(in[0]) && op.Axis == len(in[0].Shape)-1 {
			add(0)
		}
	case *ir.LayerNorm:
		if j == 0 && f32(in...) && in[1].Shape.Equal(in[0].Shape[op.Axis:]) && (len(in) < 3 || in[2] == nil || in[2].Shape.Equal(in[1].Shape)) {
			add(0)
		}
	case *ir.UnaryGrad:
		if f32(in...) {
			add(0, 1)
		}
	case *ir.SoftmaxGrad:
		if f32(in...) && op.Axis == len(in[0].Shape)-1 {
			add(0, 1)
		}
	case *ir.LayerNormGrad:
		// kernels.LayerNormBackward allows dx = dy, but then runs on one
		// thread: not worth the few megabytes.
	case *ir.SoftmaxCELoss:
		if j == 1 && f32(in[0]) {
			add(0)
		}
	case *ir.ScatterAddRows:
		if f32(in[0]) {
			add(2)
		}
	case *ir.SliceGrad:
		if f32(in[0]) {
			add(1)
		}
	}
	return cand
}

// lastReads returns, for every buffer (a value that is not a reshape
// view), the index of the last active node reading it or one of its views;
// graph outputs count as read after the last node.
func (c *compiler) lastReads(active []*ir.Node, root func(*ir.Value) *ir.Value) map[*ir.Value]int {
	last := map[*ir.Value]int{}
	for i, n := range active {
		for _, v := range c.readsOf(n) {
			if v != nil {
				last[root(v)] = i
			}
		}
	}
	for _, o := range c.g.Outputs {
		last[root(o.Value)] = len(active) + 1
	}
	return last
}

// inPlaceTarget returns the buffer output j of node n (step i) takes over,
// or nil: an input buffer of the same dtype and size, read last by this
// node, that no other input of the node reads, and that has a slot in the
// plan (not a parameter or constant).
func (c *compiler) inPlaceTarget(n *ir.Node, j, i int, root func(*ir.Value) *ir.Value, lastRead map[*ir.Value]int, hasSlot func(*ir.Value) bool) *ir.Value {
	out := n.Outputs[j]
	reads := c.readsOf(n)
	for _, k := range inPlaceInputs(n, j) {
		r := root(reads[k])
		if !hasSlot(r) || lastRead[r] != i || r.DType != out.DType || r.Shape.Size() != out.Shape.Size() {
			continue
		}
		shared := false
		for m, v := range reads {
			if m != k && v != nil && root(v) == r {
				shared = true
			}
		}
		if !shared {
			return r
		}
	}
	return nil
}
