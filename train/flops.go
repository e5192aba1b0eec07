package train

import "github.com/dstune/dstune/ir"

// ProductFLOPs is the arithmetic of one node's matrix product, 2·m·n·k
// per matrix (a multiply and an add per term), or 0 for a node that is no
// MatMul, Gemm or convolution. Model FLOPs utilization counts these: they
// are what a training step is made of, and what a machine's peak is
// quoted for. A convolution (and each of its two gradients) is a product
// of its output's elements by the window's inputs, 2·|y|·(C/group)·|kernel|.
func ProductFLOPs(n *ir.Node) float64 {
	switch op := n.Op.(type) {
	case *ir.Conv:
		return 2 * float64(n.Outputs[0].Shape.Size()) * float64(n.Inputs[1].Shape[1:].Size())
	case *ir.ConvGradInput:
		return 2 * float64(n.Inputs[0].Shape.Size()) * float64(n.Inputs[1].Shape[1:].Size())
	case *ir.ConvGradWeight:
		return 2 * float64(n.Inputs[0].Shape.Size()) * float64(op.WeightShape[1:].Size())
	case *ir.MatMul:
		d, err := ir.MatMulShapes(n.Inputs[0].Shape, n.Inputs[1].Shape)
		if err != nil {
			return 0
		}
		return 2 * float64(d.M) * float64(d.N) * float64(d.K) * float64(d.Batch.Size())
	case *ir.Gemm:
		a, b := n.Inputs[0].Shape, n.Inputs[1].Shape
		if len(a) != 2 || len(b) != 2 {
			return 0
		}
		m, k, cols := a[0], a[1], b[1]
		if op.TransA {
			m, k = a[1], a[0]
		}
		if op.TransB {
			cols = b[0]
		}
		return 2 * float64(m) * float64(cols) * float64(k)
	}
	return 0
}

// GraphProductFLOPs sums ProductFLOPs over g's nodes: for a training
// graph, the matrix-product work of one step (forward and backward).
func GraphProductFLOPs(g *ir.Graph) float64 {
	var sum float64
	for _, n := range g.Nodes {
		sum += ProductFLOPs(n)
	}
	return sum
}
