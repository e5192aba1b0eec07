package ir

import "fmt"

// rule emits the gradient terms of one forward node's inputs from the
// gradients of its outputs. Every rule only computes the terms of inputs
// that need them (c.needs).
func (d *differ) rule(c *gradCtx) error {
	dy := c.dy[0]
	switch op := c.n.Op.(type) {
	case *Binary:
		return d.binaryRule(c, op)
	case *Unary:
		return d.unaryRule(c, op)
	case *Where:
		zero := d.scalar(dy.DType, 0)
		if c.needs(1) {
			c.add(1, d.emit1(&Where{}, c.in(0), dy, zero))
		}
		if c.needs(2) {
			c.add(2, d.emit1(&Where{}, c.in(0), zero, dy))
		}
	case *Cast:
		x := c.in(0)
		if x.DType == dy.DType {
			c.add(0, dy)
		} else {
			c.add(0, d.emit1(&Cast{To: x.DType}, dy))
		}
	case *Copy:
		c.add(0, dy)
	case *Reshape:
		c.add(0, d.reshape(dy, c.in(0).Shape))
	case *Transpose:
		c.add(0, d.transpose(dy, invertPerm(op.Perm)))
	case *Expand:
		c.add(0, dy) // summed over the broadcast axes by add
	case *Concat:
		sizes := make([]int, len(c.n.Inputs))
		for i, v := range c.n.Inputs {
			sizes[i] = v.Shape[op.Axis]
		}
		parts := d.emit(&Split{Axis: op.Axis, Sizes: sizes}, dy)
		for i := range c.n.Inputs {
			if c.needs(i) {
				c.add(i, parts[i])
			}
		}
	case *Split:
		parts := make([]*Value, len(op.Sizes))
		x := c.in(0)
		for i, s := range op.Sizes {
			if i < len(c.dy) && c.dy[i] != nil {
				parts[i] = c.dy[i]
				continue
			}
			shape := x.Shape.Clone()
			shape[op.Axis] = s
			parts[i] = d.zeros(x.DType, shape)
		}
		c.add(0, d.emit1(&Concat{Axis: op.Axis}, parts...))
	case *Slice:
		c.deferScatter(0, &SliceGrad{Starts: op.Starts, Steps: op.Steps, Shape: c.in(0).Shape.Clone()}, dy, nil)
	case *Gather:
		x := c.in(0)
		c.deferScatter(0, &ScatterAddRows{Axis: op.Axis, Rows: x.Shape[op.Axis]}, dy, c.in(1))
	case *MatMul:
		d.matmulRule(c)
	case *Gemm:
		d.gemmRule(c, op)
	case *Softmax:
		c.add(0, d.emit1(&SoftmaxGrad{Axis: op.Axis, Log: op.Log}, dy, c.n.Outputs[0]))
	case *LayerNorm:
		if len(c.dy) > 1 && (c.dy[1] != nil || (len(c.dy) > 2 && c.dy[2] != nil)) {
			return c.unsupported("LayerNorm's mean and inverse standard deviation outputs")
		}
		outs := d.emit(&LayerNormGrad{Axis: op.Axis}, dy, c.in(0), c.in(1), c.out(1), c.out(2))
		c.add(0, outs[0])
		c.add(1, outs[1])
		c.add(2, outs[2])
	case *Reduce:
		switch op.Fn {
		case ReduceMax, ReduceMin:
			d.reduceExtremeRule(c, op)
			return nil
		case ReduceProd:
			d.reduceProdRule(c, op)
			return nil
		}
		if op.Fn != ReduceSum && op.Fn != ReduceMean {
			return c.unsupported(op.Name())
		}
		x := c.in(0)
		g := dy
		if op.Fn == ReduceMean {
			count := 1
			for _, a := range op.Axes {
				count *= x.Shape[a]
			}
			g = d.binary(Mul, g, d.scalar(dy.DType, 1/float64(count)))
		}
		g = d.reshape(g, reducedShape(x.Shape, op.Axes, true))
		c.add(0, d.emit1(&Expand{Shape: x.Shape.Clone()}, g))
	case *Conv:
		x, w := c.in(0), c.in(1)
		if c.needs(0) {
			c.add(0, d.emit1(&ConvGradInput{Conv: *op, InputShape: x.Shape.Clone()}, dy, w))
		}
		if c.needs(1) {
			c.add(1, d.emit1(&ConvGradWeight{Conv: *op, WeightShape: w.Shape.Clone()}, dy, x))
		}
		if c.needs(2) {
			axes := []int{0}
			for a := 2; a < len(dy.Shape); a++ {
				axes = append(axes, a)
			}
			c.add(2, d.emit1(&Reduce{Fn: ReduceSum, Axes: axes}, dy))
		}
	case *Pool:
		if dy != nil {
			c.add(0, d.emit1(&PoolGrad{Pool: *op}, dy, c.in(0)))
		}
	case *Dropout:
		mask := c.out(1)
		scaled := d.binary(Mul, dy, d.scalar(dy.DType, 1/(1-float64(op.Ratio))))
		c.add(0, d.emit1(&Where{}, mask, scaled, d.scalar(dy.DType, 0)))
	case *Trilu:
		c.add(0, d.emit1(&Trilu{Upper: op.Upper, K: op.K}, dy))
	case *Clip:
		if c.needs(1) || c.needs(2) {
			return c.unsupported("Clip's bounds")
		}
		x := c.in(0)
		var keep *Value
		if lo := optIn(c.n.Inputs, 1); lo != nil {
			keep = d.binary(GreaterOrEqual, x, lo)
		}
		if hi := optIn(c.n.Inputs, 2); hi != nil {
			le := d.binary(LessOrEqual, x, hi)
			if keep == nil {
				keep = le
			} else {
				keep = d.binary(And, keep, le)
			}
		}
		if keep == nil {
			c.add(0, dy)
		} else {
			c.add(0, d.emit1(&Where{}, keep, dy, d.scalar(dy.DType, 0)))
		}
	case *SoftmaxCELoss:
		if len(c.dy) > 1 && c.dy[1] != nil {
			return c.unsupported("SoftmaxCELoss's gradient output")
		}
		if c.needs(2) {
			return c.unsupported("SoftmaxCELoss's denominator")
		}
		c.add(0, d.scaleBy(c.out(1), dy))
	case *BCELoss:
		if c.needs(1) {
			return c.unsupported("BCELoss's targets")
		}
		c.add(0, d.emit1(&BCELossGrad{}, dy, c.in(0), c.in(1)))
	default:
		if r, ok := c.n.Op.(gradRuler); ok {
			return r.gradRule(d, c)
		}
		return c.unsupported(c.n.Op.Name())
	}
	return nil
}

// gradRuler is implemented by ops that carry their gradient rule with
// them (in the op's own file) instead of a case above.
type gradRuler interface {
	gradRule(d *differ, c *gradCtx) error
}

// scaleBy is g·s for a scalar s, or g itself when s is the constant 1 (the
// seed of a training graph's loss).
func (d *differ) scaleBy(g, s *Value) *Value {
	if s.Kind == ConstValue && s.Const.Len() == 1 && s.Const.Float64At(0) == 1 {
		return g
	}
	return d.binary(Mul, g, s)
}

// zeros is a tensor of zeros computed by a node (an Expand of a scalar),
// so that it lives in the executor's memory plan rather than as a
// constant.
func (d *differ) zeros(dt DType, shape Shape) *Value {
	return d.emitFold(false, &Expand{Shape: shape.Clone()}, d.scalar(dt, 0))[0]
}

func (d *differ) binaryRule(c *gradCtx, op *Binary) error {
	a, b, y, dy := c.in(0), c.in(1), c.n.Outputs[0], c.dy[0]
	switch op.Fn {
	case Add:
		c.add(0, dy)
		c.add(1, dy)
	case Sub:
		c.add(0, dy)
		c.addNeg(1, dy)
	case Mul:
		if c.needs(0) {
			c.add(0, d.binary(Mul, dy, b))
		}
		if c.needs(1) {
			c.add(1, d.binary(Mul, dy, a))
		}
	case Div:
		if c.needs(0) {
			c.add(0, d.binary(Div, dy, b))
		}
		if c.needs(1) {
			// d(a/b)/db = −a/b² = −y/b
			c.addNeg(1, d.binary(Div, d.binary(Mul, dy, y), b))
		}
	case Pow:
		if c.needs(0) {
			if g := d.powBaseGrad(a, b, dy); g != nil {
				c.add(0, g)
			}
		}
		if c.needs(1) {
			// d(a^b)/db = a^b·ln a, taken as 0 where a = 0 (as PyTorch).
			dt := a.DType
			zero := d.scalar(dt, 0)
			g := d.binary(Mul, d.binary(Mul, dy, y), d.emit1(&Unary{Fn: Log}, a))
			g = d.emit1(&Where{}, d.binary(Equal, a, zero), zero, g)
			if b.DType != dt {
				g = d.emit1(&Cast{To: b.DType}, g)
			}
			c.add(1, g)
		}
	case Max, Min:
		// The selected operand gets the gradient; ties split it evenly
		// (as PyTorch's maximum and minimum).
		wins := Greater
		if op.Fn == Min {
			wins = Less
		}
		aWins := d.binary(wins, a, b)
		tie := d.binary(Equal, a, b)
		zero := d.scalar(dy.DType, 0)
		half := d.binary(Mul, dy, d.scalar(dy.DType, 0.5))
		if c.needs(0) {
			c.add(0, d.emit1(&Where{}, aWins, dy, d.emit1(&Where{}, tie, half, zero)))
		}
		if c.needs(1) {
			c.add(1, d.emit1(&Where{}, aWins, zero, d.emit1(&Where{}, tie, half, dy)))
		}
	default:
		return c.unsupported(op.Name())
	}
	return nil
}

// powBaseGrad is dy·b·a^(b−1), simplified for a constant scalar exponent
// (nil when the gradient is zero).
func (d *differ) powBaseGrad(a, b, dy *Value) *Value {
	dt := a.DType
	if b.Kind == ConstValue && b.Shape.Size() == 1 {
		e := b.Const.Float64At(0)
		switch e {
		case 0:
			return nil
		case 1:
			return dy
		case 2:
			return d.binary(Mul, dy, d.binary(Mul, a, d.scalar(dt, 2)))
		}
		der := d.binary(Mul, d.binary(Pow, a, d.scalar(dt, e-1)), d.scalar(dt, e))
		return d.binary(Mul, dy, der)
	}
	if b.DType != dt {
		b = d.emit1(&Cast{To: dt}, b)
	}
	der := d.binary(Mul, d.binary(Pow, a, d.binary(Sub, b, d.scalar(dt, 1))), b)
	return d.binary(Mul, dy, der)
}

func (d *differ) unaryRule(c *gradCtx, op *Unary) error {
	x, y, dy := c.in(0), c.n.Outputs[0], c.dy[0]
	switch op.Fn {
	case Neg:
		c.addNeg(0, dy)
	case Exp:
		c.add(0, d.binary(Mul, dy, y))
	case Log:
		c.add(0, d.binary(Div, dy, x))
	case Floor, Ceil, Sign, Round:
		// Zero almost everywhere: the branch is pruned.
	default:
		if !unaryGradSupported(op.Fn) {
			return c.unsupported(op.Name())
		}
		t := x
		if UnaryGradUsesOutput(op.Fn) {
			t = y
		}
		c.add(0, d.emit1(&UnaryGrad{Fn: op.Fn, Alpha: op.Alpha}, dy, t))
	}
	return nil
}

// matmulRule: for Y = A·B (numpy matmul), dA = dY·Bᵀ and dB = Aᵀ·dY per
// batch entry, summed over the batch axes an operand was broadcast along;
// 1-D operands are treated as a row (A) or column (B). When B has no batch
// axes (a weight), dB is one GEMM over the flattened rows of A and dY.
func (d *differ) matmulRule(c *gradCtx) {
	a, b, dy := c.in(0), c.in(1), c.dy[0]
	dims, err := MatMulShapes(a.Shape, b.Shape)
	if err != nil {
		d.err = fmt.Errorf("ir: grad: %s: %w", c.n, err)
		return
	}
	a2, b2 := a, b
	if len(a.Shape) == 1 {
		a2 = d.reshape(a, Shape{1, dims.K})
	}
	if len(b.Shape) == 1 {
		b2 = d.reshape(b, Shape{dims.K, 1})
	}
	full := append(dims.Batch.Clone(), dims.M, dims.N)
	dy2 := d.reshape(dy, full)
	if c.needs(0) {
		c.add(0, d.emit1(&MatMul{}, dy2, d.transpose(b2, swapLast2(len(b2.Shape)))))
	}
	if c.needs(1) {
		var gb *Value
		if len(b2.Shape) == 2 {
			rows := dims.Batch.Size() * dims.M
			af := d.reshape(a2, Shape{rows, dims.K})
			df := d.reshape(dy2, Shape{rows, dims.N})
			gb = d.emit1(&MatMul{}, d.transpose(af, swapLast2(2)), df)
		} else {
			gb = d.emit1(&MatMul{}, d.transpose(a2, swapLast2(len(a2.Shape))), dy2)
		}
		c.add(1, gb)
	}
}

// gemmRule: for Y = α·op(A)·op(B) + β·C, dop(A) = α·dY·op(B)ᵀ and
// dop(B) = α·op(A)ᵀ·dY, written as Gemms with the transposes as flags so
// that each gradient comes out in its operand's layout; dC = β·dY summed
// over C's broadcast axes.
func (d *differ) gemmRule(c *gradCtx, op *Gemm) {
	a, b, dy := c.in(0), c.in(1), c.dy[0]
	gemm := func(x, y *Value, ta, tb bool) *Value {
		return d.emit1(&Gemm{TransA: ta, TransB: tb, Alpha: op.Alpha}, x, y)
	}
	if c.needs(0) {
		switch {
		case !op.TransA && !op.TransB:
			c.add(0, gemm(dy, b, false, true))
		case !op.TransA && op.TransB:
			c.add(0, gemm(dy, b, false, false))
		case op.TransA && !op.TransB:
			c.add(0, gemm(b, dy, false, true))
		default:
			c.add(0, gemm(b, dy, true, true))
		}
	}
	if c.needs(1) {
		switch {
		case !op.TransB && !op.TransA:
			c.add(1, gemm(a, dy, true, false))
		case !op.TransB && op.TransA:
			c.add(1, gemm(a, dy, false, false))
		case op.TransB && !op.TransA:
			c.add(1, gemm(dy, a, true, false))
		default:
			c.add(1, gemm(dy, a, true, true))
		}
	}
	if c.needs(2) && op.Beta != 0 {
		g := dy
		if op.Beta != 1 {
			g = d.binary(Mul, dy, d.scalar(dy.DType, float64(op.Beta)))
		}
		c.add(2, g)
	}
}
