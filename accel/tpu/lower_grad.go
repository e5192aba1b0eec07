package tpu

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
)

// lowerGradNode lowers the internal gradient and loss ops of package ir
// (ir.TrainingGraph's graphs); ok is false for other ops.
func lowerGradNode(f *fn, n *ir.Node, in []value) (out []value, ok bool, err error) {
	present := func(i int) bool { return i < len(in) && in[i].name != "" }
	switch op := n.Op.(type) {
	case *ir.UnaryGrad:
		v, err := lowerUnaryGrad(f, op, in[0], in[1])
		return []value{v}, true, err
	case *ir.SoftmaxGrad:
		orig := in[0].dtype()
		dy, y := widen(f, in[0]), widen(f, in[1])
		lane := func(v value) value {
			return f.broadcastTo(keepDims(f, v, reduceAdd, []int{op.Axis}), v.shape())
		}
		var dx value
		if op.Log {
			dx = f.sub(dy, f.mul(f.unary("stablehlo.exponential", y), lane(dy)))
		} else {
			dx = f.mul(y, f.sub(dy, lane(f.mul(dy, y))))
		}
		return []value{f.convert(dx, orig)}, true, nil
	case *ir.LayerNormGrad:
		return lowerLayerNormGrad(f, op, in), true, nil
	case *ir.ScatterAddRows:
		var base value
		if present(2) {
			base = in[2]
		}
		return []value{lowerScatterAddRows(f, op, in[0], in[1], base, n.Outputs[0].Type)}, true, nil
	case *ir.SliceGrad:
		var base value
		if present(1) {
			base = in[1]
		}
		return []value{lowerSliceGrad(f, op, in[0], base)}, true, nil
	case *ir.SoftmaxCELoss:
		// Outputs: the loss and dlogits = ∂loss/∂logits (the gradient for
		// an upstream gradient of 1, which the training graph scales),
		// both divided by the denominator input where there is one.
		var denom value
		if present(2) {
			denom = in[2]
		}
		loss, lse := lowerSoftmaxCE(f, op.IgnoreIndex, in[0], in[1], denom)
		one := f.scalarConst(loss.dtype(), 1)
		return []value{loss, lowerSoftmaxCEGrad(f, op.IgnoreIndex, one, in[0], in[1], lse, denom)}, true, nil
	case *ir.BCELoss:
		orig := in[0].dtype()
		p, t := widen(f, in[0]), widen(f, in[1])
		floor := f.splat(p.t, -100)
		lp := f.max(f.unary("stablehlo.log", p), floor)
		l1p := f.max(f.unary("stablehlo.log", f.sub(f.splat(p.t, 1), p)), floor)
		e := f.add(f.mul(t, lp), f.mul(f.sub(f.splat(t.t, 1), t), l1p))
		s := f.reduce(e, f.scalarConst(p.dtype(), 0), reduceAdd, allAxes(p.rank()))
		mean := f.div(s, f.scalarConst(p.dtype(), float64(max(p.shape().Size(), 1))))
		return []value{f.convert(f.unary("stablehlo.negate", mean), orig)}, true, nil
	case *ir.BCELossGrad:
		orig := in[1].dtype()
		dl, p, t := widen(f, in[0]), widen(f, in[1]), widen(f, in[2])
		den := f.max(f.mul(p, f.sub(f.splat(p.t, 1), p)), f.splat(p.t, 1e-12))
		scale := f.div(dl, f.scalarConst(dl.dtype(), float64(max(p.shape().Size(), 1))))
		dp := f.mul(f.div(f.sub(p, t), den), f.broadcastTo(scale, p.shape()))
		return []value{f.convert(dp, orig)}, true, nil
	case *ir.PoolGrad, *ir.ConvGradInput, *ir.ConvGradWeight:
		return nil, true, fmt.Errorf("%w: %s on the pjrt backend (convolutional training is CPU-only for now)", ir.ErrNotSupported, n.Op.Name())
	}
	return nil, false, nil
}

func allAxes(r int) []int {
	a := make([]int, r)
	for i := range a {
		a[i] = i
	}
	return a
}

// lowerUnaryGrad is dy·f'(t), t the forward output or input as
// ir.UnaryGradUsesOutput says.
func lowerUnaryGrad(f *fn, op *ir.UnaryGrad, dy0, t0 value) (value, error) {
	orig := dy0.dtype()
	dy, t := widen(f, dy0), widen(f, t0)
	c := func(v float64) value { return f.splat(t.t, v) }
	zero, one := c(0), c(1)
	var d value
	switch op.Fn {
	case ir.Exp:
		d = t
	case ir.Sqrt:
		d = f.div(one, f.mul(c(2), t))
	case ir.Tanh:
		d = f.sub(one, f.mul(t, t))
	case ir.Sigmoid:
		d = f.mul(t, f.sub(one, t))
	case ir.Relu:
		d = f.selectOp(f.compare("GT", t, zero), one, zero)
	case ir.Reciprocal:
		d = f.unary("stablehlo.negate", f.mul(t, t))
	case ir.Log:
		d = f.div(one, t)
	case ir.Abs:
		d = f.unary("stablehlo.sign", t)
	case ir.Erf:
		d = f.mul(c(2/math.Sqrt(math.Pi)), f.unary("stablehlo.exponential", f.unary("stablehlo.negate", f.mul(t, t))))
	case ir.LeakyRelu:
		d = f.selectOp(f.compare("GT", t, zero), one, c(float64(op.Alpha)))
	case ir.Elu:
		d = f.selectOp(f.compare("GT", t, zero), one, f.mul(c(float64(op.Alpha)), f.unary("stablehlo.exponential", t)))
	case ir.Gelu:
		cdf := f.mul(c(0.5), f.add(one, f.unary("chlo.erf", f.mul(t, c(1/math.Sqrt2)))))
		pdf := f.mul(c(1/math.Sqrt(2*math.Pi)), f.unary("stablehlo.exponential", f.mul(c(-0.5), f.mul(t, t))))
		d = f.add(cdf, f.mul(t, pdf))
	case ir.GeluTanh:
		k := math.Sqrt(2 / math.Pi)
		x2 := f.mul(t, t)
		u := f.mul(c(k), f.add(t, f.mul(c(0.044715), f.mul(x2, t))))
		th := f.unary("stablehlo.tanh", u)
		left := f.mul(c(0.5), f.add(one, th))
		right := f.mul(f.mul(f.mul(c(0.5), t), f.sub(one, f.mul(th, th))), f.mul(c(k), f.add(one, f.mul(c(3*0.044715), x2))))
		d = f.add(left, right)
	case ir.Softplus:
		d = f.unary("stablehlo.logistic", t)
	default:
		return value{}, fmt.Errorf("%w: %s", ir.ErrNotSupported, op.Name())
	}
	return f.convert(f.mul(dy, d), orig), nil
}

func lowerLayerNormGrad(f *fn, op *ir.LayerNormGrad, in []value) []value {
	orig := in[1].dtype()
	dy, x, scale := widen(f, in[0]), widen(f, in[1]), widen(f, in[2])
	mean, inv := widen(f, in[3]), widen(f, in[4])
	shape := x.shape()
	var axes, rows []int
	count := 1
	for d := range x.rank() {
		if d >= op.Axis {
			axes = append(axes, d)
			count *= shape[d]
		} else {
			rows = append(rows, d)
		}
	}
	full := func(v value) value { return f.broadcastTo(v, shape) }
	rowMean := func(v value) value {
		return f.mul(full(keepDims(f, v, reduceAdd, axes)), f.splat(v.t, 1/float64(count)))
	}
	invB := full(inv)
	xhat := f.mul(f.sub(x, full(mean)), invB)
	g := f.mul(dy, full(scale))
	dx := f.mul(invB, f.sub(f.sub(g, rowMean(g)), f.mul(xhat, rowMean(f.mul(g, xhat)))))
	out := []value{f.convert(dx, orig)}
	norm := ir.Shape(shape[op.Axis:]).Clone()
	sumRows := func(v value) value {
		s := v
		if len(rows) > 0 {
			s = f.reduce(v, f.scalarConst(v.dtype(), 0), reduceAdd, rows)
		}
		return f.convert(f.reshape(s, norm), orig)
	}
	out = append(out, sumRows(f.mul(dy, xhat)), sumRows(dy))
	return out
}

// lowerScatterAddRows is stablehlo.scatter with an add body. (On GPUs
// XLA may accumulate rows hit several times in any order; see README.)
func lowerScatterAddRows(f *fn, op *ir.ScatterAddRows, dy, idx, base value, out ir.Type) value {
	orig := dy.dtype()
	dy = widen(f, dy)
	idx = normIndex(f, idx, op.Rows)
	if base.name == "" {
		base = f.splat(ir.Type{DType: dy.dtype(), Shape: out.Shape}, 0)
	} else {
		base = widen(f, base)
	}
	ni := idx.rank()
	var window []int
	for d := range dy.rank() {
		if d < op.Axis || d >= op.Axis+ni {
			window = append(window, d)
		}
	}
	st := scalarType(dy.dtype())
	body := f.region([]ir.Type{st, st}, func(r *fn, a []value) []value { return []value{r.add(a[0], a[1])} })
	attrs := "scatter_dimension_numbers = #stablehlo.scatter<" + dimFields("update_window_dims", window, "inserted_window_dims", []int{op.Axis},
		"scatter_dims_to_operand_dims", []int{op.Axis}, "index_vector_dim", ni) + ">, indices_are_sorted = false, unique_indices = false"
	r := f.op("stablehlo.scatter", []value{base, idx, dy}, attrs, []string{body}, base.t)[0]
	return f.convert(r, orig)
}

// lowerSliceGrad pads dy back into the sliced tensor's shape (interior
// padding for the steps), after reversing the axes taken backwards.
func lowerSliceGrad(f *fn, op *ir.SliceGrad, dy, base value) value {
	r := dy.rank()
	var rev []int
	lo, hi, interior := make([]int, r), make([]int, r), make([]int, r)
	for d := range r {
		n, step, start := dy.shape()[d], op.Steps[d], op.Starts[d]
		if step < 0 {
			rev = append(rev, d)
			if n > 0 {
				start += (n - 1) * step
			}
			step = -step
		}
		lo[d], interior[d] = start, step-1
		used := start
		if n > 0 {
			used = start + (n-1)*step + 1
		}
		hi[d] = op.Shape[d] - used
	}
	x := f.reverse(dy, rev)
	out := f.pad(x, f.scalarConst(dy.dtype(), 0), lo, hi, interior)
	if base.name != "" {
		out = f.add(out, base)
	}
	return out
}

// lowerSoftmaxCE is ir.SoftmaxCELoss: the mean over non-ignored rows of
// lse − logit[target] (their sum over denom, a scalar, where denom is
// given), and lse.
func lowerSoftmaxCE(f *fn, ignore int64, logits0, targets, denom value) (value, value) {
	orig := logits0.dtype()
	logits := widen(f, logits0)
	last := logits.rank() - 1
	lse := logSumExp(f, logits, last)
	onehot := classMask(f, targets, logits.shape())
	zero := f.splat(logits.t, 0)
	picked := f.reduce(f.selectOp(onehot, logits, zero), f.scalarConst(logits.dtype(), 0), reduceAdd, []int{last})
	valid := f.compare("NE", targets, f.splat(targets.t, float64(ignore)))
	per := f.selectOp(valid, f.sub(lse, picked), f.splat(lse.t, 0))
	all := allAxes(per.rank())
	sum := f.reduce(per, f.scalarConst(logits.dtype(), 0), reduceAdd, all)
	n := softmaxCEDivisor(f, valid, logits.dtype(), denom)
	fzero := f.scalarConst(logits.dtype(), 0)
	loss := f.selectOp(f.compare("EQ", n, fzero), fzero, f.div(sum, n))
	return f.convert(loss, orig), f.convert(lse, orig)
}

// logSumExp is log Σ exp(x) over axis (shifted by the max), the axis
// dropped.
func logSumExp(f *fn, x value, axis int) value {
	m := keepDims(f, x, reduceMax, []int{axis})
	e := f.unary("stablehlo.exponential", f.sub(x, f.broadcastTo(m, x.shape())))
	s := f.reduce(e, f.scalarConst(x.dtype(), 0), reduceAdd, []int{axis})
	return f.add(f.unary("stablehlo.log", s), f.reshape(m, s.shape()))
}

// classMask is onehot[..., c] = (targets[...] == c) for logits of shape.
func classMask(f *fn, targets value, shape ir.Shape) value {
	last := len(shape) - 1
	tb := f.broadcastInDim(targets, shape, allAxes(last))
	return f.compare("EQ", tb, f.iota(ir.Type{DType: targets.dtype(), Shape: shape}, last))
}

// softmaxCEDivisor is what ir.SoftmaxCELoss divides by, in dtype: the
// number of valid rows, or the denominator input where there is one.
func softmaxCEDivisor(f *fn, valid value, dtype ir.DType, denom value) value {
	if denom.name != "" {
		return f.convert(f.reshape(denom, ir.Shape{}), dtype)
	}
	return f.reduce(f.convert(valid, dtype), f.scalarConst(dtype, 0), reduceAdd, allAxes(valid.rank()))
}

func lowerSoftmaxCEGrad(f *fn, ignore int64, dloss0, logits0, targets, lse0, denom value) value {
	orig := logits0.dtype()
	logits, lse, dloss := widen(f, logits0), widen(f, lse0), widen(f, dloss0)
	shape := logits.shape()
	last := len(shape) - 1
	p := f.unary("stablehlo.exponential", f.sub(logits, f.broadcastInDim(lse, shape, allAxes(last))))
	onehot := f.convert(classMask(f, targets, shape), logits.dtype())
	valid := f.compare("NE", targets, f.splat(targets.t, float64(ignore)))
	n := softmaxCEDivisor(f, valid, logits.dtype(), denom)
	fzero := f.scalarConst(logits.dtype(), 0)
	scale := f.selectOp(f.compare("EQ", n, fzero), fzero, f.div(f.reshape(dloss, ir.Shape{}), n))
	d := f.mul(f.sub(p, onehot), f.broadcastTo(scale, shape))
	d = f.selectOp(f.broadcastInDim(valid, shape, allAxes(last)), d, f.splat(logits.t, 0))
	return f.convert(d, orig)
}
