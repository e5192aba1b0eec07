package cpu

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
)

// kernelFor picks the kernel for a node: a fast float32 kernel for the ops
// transformer training spends its time in, the op's reference Eval for the
// rest (every dtype, every op, so breadth never depends on a fast path).
func (c *compiler) kernelFor(n *ir.Node) (kernel, error) {
	reads, writes := c.readsOf(n), c.writesOf(n)
	in := make([]*ir.Tensor, len(reads))
	for i, v := range reads {
		if v != nil {
			in[i] = c.tensors[v]
		}
	}
	out := make([]*ir.Tensor, len(writes))
	for i, v := range writes {
		if v != nil {
			out[i] = c.tensors[v]
		}
	}
	f32 := func(ts ...*ir.Tensor) bool {
		for _, t := range ts {
			if t != nil && t.DType() != ir.Float32 {
				return false
			}
		}
		return true
	}
	if k := c.trainingKernel(n, in, out); k != nil {
		return k, nil
	}
	switch op := n.Op.(type) {
	case *ir.Reshape:
		return nopKernel{}, nil // a view: nothing to compute
	case *ir.MatMul:
		if f32(in[0], in[1]) {
			f := c.fused[n]
			k, err := newMatMul(c.threads, c.productsFor(n), in[0], f.permA, in[1], f.permB, out[0], f.permOut)
			if err == nil && f.bias != nil {
				mk := k.(*matmulKernel)
				mk.epi = &biasEpilogue{c: mk.c, bias: in[2].Float32s(), n: mk.n}
				if f.actOut != nil {
					mk.epi.act, mk.epi.y = simdUnary(f.act), out[1].Float32s()
				}
			}
			return k, err
		}
	case *ir.Gemm:
		if f32(in...) {
			return newGemm(c.threads, c.productsFor(n), op, in, out[0])
		}
	case *ir.Binary:
		if f32(in[0], in[1], out[0]) {
			if k := newBinary(c.threads, op.Fn, in[0], in[1], out[0]); k != nil {
				return k, nil
			}
		}
	case *ir.Unary:
		if f32(in[0]) {
			if k := newUnary(c.threads, op, in[0], out[0]); k != nil {
				return k, nil
			}
		}
	case *ir.Softmax:
		if f32(in[0]) && op.Axis == len(in[0].Shape())-1 {
			return newSoftmax(c.threads, op, in[0], out[0]), nil
		}
	case *ir.LayerNorm:
		if f32(in...) && in[1].Shape().Equal(in[0].Shape()[op.Axis:]) && (len(in) < 3 || in[2] == nil || in[2].Shape().Equal(in[1].Shape())) {
			return newLayerNorm(c.threads, op, in, out), nil
		}
	case *ir.Gather:
		return newGather(op, in[0], in[1], out[0]), nil
	case *ir.Transpose:
		return newTranspose(c.threads, op, in[0], out[0]), nil
	case *ir.Slice:
		return newSlice(c.threads, op, in[0], out[0]), nil
	case *ir.Where:
		if f32(in[1], in[2]) {
			return newWhere(c.threads, in[0], in[1], in[2], out[0]), nil
		}
	case *ir.Concat:
		return newConcat(c.threads, op, in, out[0]), nil
	case *ir.Conv:
		if f32(in...) && convFits(in[0]) {
			return newConvKernel(c.threads, &c.conv, op, in, out), nil
		}
	case *ir.ConvGradInput:
		if f32(in...) && convFits(out[0]) {
			return newConvGradInputKernel(c.threads, &c.conv, op, in, out), nil
		}
	case *ir.ConvGradWeight:
		if f32(in...) && convFits(in[1]) {
			return newConvGradWeightKernel(c.threads, &c.conv, op, in, out), nil
		}
	case *ir.Split, *ir.Copy:
		// The reference copies slabs without allocating.
	}
	return &evalKernel{op: n.Op, in: in, out: out}, nil
}

// convFits reports whether a convolution's input x has channels whose
// positions int32 offsets address (conv.go), as any that fit in memory
// do.
func convFits(x *ir.Tensor) bool { return x.Shape()[2:].Size() <= math.MaxInt32 }

type nopKernel struct{}

func (nopKernel) run() error { return nil }

// evalKernel runs the op's reference implementation on the planned
// tensors.
type evalKernel struct {
	op      ir.Op
	in, out []*ir.Tensor
}

func (k *evalKernel) run() error {
	if err := k.op.Eval(k.in, k.out); err != nil {
		return fmt.Errorf("%s: %w", k.op.Name(), err)
	}
	return nil
}
