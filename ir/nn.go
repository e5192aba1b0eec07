package ir

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ---------------------------------------------------------------- Conv

// Conv is N-d convolution (cross-correlation) over NC<spatial> inputs:
// X [N, C, d1..dk], W [M, C/Group, k1..kk], optional bias [M]. Pads holds
// the k begin pads then the k end pads; import resolves auto_pad into them.
type Conv struct {
	Strides, Pads, Dilations []int
	Group                    int
}

func (op *Conv) Name() string { return "Conv" }

func (op *Conv) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	x, w := in[0], in[1]
	if x.DType != w.DType || !isFloat(x.DType) {
		return nil, fmt.Errorf("operands are %s and %s, want one float type", x.DType, w.DType)
	}
	k := len(x.Shape) - 2
	if k < 1 || len(w.Shape) != k+2 || len(op.Strides) != k || len(op.Dilations) != k || len(op.Pads) != 2*k {
		return nil, fmt.Errorf("input %v, weights %v, strides %v, pads %v, dilations %v do not agree", x.Shape, w.Shape, op.Strides, op.Pads, op.Dilations)
	}
	g := op.Group
	if g < 1 || x.Shape[1] != w.Shape[1]*g || w.Shape[0]%g != 0 {
		return nil, fmt.Errorf("channels: input %v, weights %v, group %d", x.Shape, w.Shape, g)
	}
	if b, ok := optional(in, 2); ok && (b.DType != x.DType || !b.Shape.Equal(Shape{w.Shape[0]})) {
		return nil, fmt.Errorf("bias is %v, want %s[%d]", b, x.DType, w.Shape[0])
	}
	out := Shape{x.Shape[0], w.Shape[0]}
	for d := range k {
		n, err := windowCount(x.Shape[2+d], w.Shape[2+d], op.Strides[d], op.Dilations[d], op.Pads[d], op.Pads[k+d], false)
		if err != nil {
			return nil, fmt.Errorf("kernel %v over input %v (strides %v, dilations %v, pads %v), spatial axis %d: %w", w.Shape[2:], x.Shape[2:], op.Strides, op.Dilations, op.Pads, d, err)
		}
		out = append(out, n)
	}
	return []Type{{x.DType, out}}, nil
}

// windowCount is the number of output positions along one spatial axis:
// floor (or ceil) of (in + padBegin + padEnd - span)/stride + 1, where
// span = dilation·(kernel-1)+1; in ceil mode a window that would start in
// the end padding is dropped. It refuses a window longer than the padded
// input, and geometry whose arithmetic overflows an int (a dilation of
// 2⁶² over a kernel of 5, say) rather than let positions wrap.
func windowCount(in, kernel, stride, dilation, padBegin, padEnd int, ceil bool) (int, error) {
	if stride < 1 || dilation < 1 || kernel < 1 {
		return 0, fmt.Errorf("kernel %d, stride %d and dilation %d, want positive values", kernel, stride, dilation)
	}
	span, ok := windowSpan(kernel, dilation)
	if !ok {
		return 0, fmt.Errorf("dilation %d over a kernel of %d spans more than an int holds", dilation, kernel)
	}
	padded, ok := addInts(in, padBegin, padEnd)
	if !ok {
		return 0, fmt.Errorf("input length %d with pads %d and %d is more than an int holds", in, padBegin, padEnd)
	}
	if padded < span {
		return 0, fmt.Errorf("window of %d (kernel %d, dilation %d) longer than the padded input %d", span, kernel, dilation, padded)
	}
	total := padded - span
	n := total/stride + 1
	if ceil && total%stride != 0 {
		// One more window, starting at n·stride, unless that is in the
		// end padding: n·stride >= in+padBegin.
		end, ok := addInts(in, padBegin)
		if !ok || end > 0 && n <= (end-1)/stride {
			n++
		}
	}
	return n, nil
}

// windowSpan is dilation·(kernel-1)+1, the extent of a dilated window,
// and false where that overflows an int.
func windowSpan(kernel, dilation int) (int, bool) {
	if kernel < 1 || dilation < 1 || kernel-1 > (math.MaxInt-1)/dilation {
		return 0, false
	}
	return dilation*(kernel-1) + 1, true
}

// addInts is the sum of v, and false where it overflows an int.
func addInts(v ...int) (int, bool) {
	s := 0
	for _, x := range v {
		if x > 0 && s > math.MaxInt-x || x < 0 && s < math.MinInt-x {
			return 0, false
		}
		s += x
	}
	return s, true
}

func (op *Conv) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, w, y := in[0], in[1], out[0]
	xv, wv := Convert(x, Float64).Float64s(), Convert(w, Float64).Float64s()
	var bv []float64
	if b := optIn(in, 2); b != nil {
		bv = Convert(b, Float64).Float64s()
	}
	k := len(x.shape) - 2
	spatialIn, spatialOut, kern := x.shape[2:], y.shape[2:], w.shape[2:]
	n, c, m := x.shape[0], x.shape[1], w.shape[0]
	cg, mg := c/op.Group, m/op.Group
	res := make([]float64, y.Len())
	outPos := make([]int, k)
	kPos := make([]int, k)
	inSize, outSize, kSize := spatialIn.Size(), spatialOut.Size(), kern.Size()
	inStr := spatialIn.Strides()
	for b := range n {
		for oc := range m {
			g := oc / mg
			for o := range outSize {
				unflatten(o, spatialOut, outPos)
				s := 0.0
				if bv != nil {
					s = bv[oc]
				}
				for ic := range cg {
					xc := (b*c + g*cg + ic) * inSize
					wc := (oc*cg + ic) * kSize
					for kp := range kSize {
						unflatten(kp, kern, kPos)
						off, inside := 0, true
						for d := range k {
							p := outPos[d]*op.Strides[d] - op.Pads[d] + kPos[d]*op.Dilations[d]
							if p < 0 || p >= spatialIn[d] {
								inside = false
								break
							}
							off += p * inStr[d]
						}
						if inside {
							s += xv[xc+off] * wv[wc+kp]
						}
					}
				}
				res[(b*m+oc)*outSize+o] = s
			}
		}
	}
	storeFloats(y, res)
	return nil
}

func unflatten(i int, s Shape, pos []int) {
	for d := len(s) - 1; d >= 0; d-- {
		pos[d] = i % s[d]
		i /= s[d]
	}
}

// ---------------------------------------------------------------- Pool

// Pool is max or average pooling over the spatial axes of NC<spatial>
// input. Pads holds begin pads then end pads (auto_pad resolved at
// import). CeilMode rounds the output size up (a window starting in the
// end padding is dropped). Average pooling divides by the window
// positions inside the input, or with CountIncludePad by those inside
// the padded input. Max pooling's optional second output holds the flat
// index of each maximum in the input (row-major, or with StorageOrder 1
// column-major over the spatial axes).
type Pool struct {
	Max                      bool
	Kernel                   []int
	Strides, Pads, Dilations []int
	CeilMode                 bool
	CountIncludePad          bool
	StorageOrder             int
}

func (op *Pool) Name() string {
	if op.Max {
		return "MaxPool"
	}
	return "AveragePool"
}

func (op *Pool) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if !isFloat(x.DType) && !(op.Max && (x.DType == Uint8 || x.DType == Int8)) {
		return nil, fmt.Errorf("input is %s, want a float type", x.DType)
	}
	k := len(x.Shape) - 2
	if k < 1 || len(op.Kernel) != k || len(op.Strides) != k || len(op.Dilations) != k || len(op.Pads) != 2*k {
		return nil, fmt.Errorf("input %v, kernel %v, strides %v, pads %v, dilations %v do not agree", x.Shape, op.Kernel, op.Strides, op.Pads, op.Dilations)
	}
	out := Shape{x.Shape[0], x.Shape[1]}
	for d := range k {
		n, err := windowCount(x.Shape[2+d], op.Kernel[d], op.Strides[d], op.Dilations[d], op.Pads[d], op.Pads[k+d], op.CeilMode)
		if err != nil {
			return nil, fmt.Errorf("kernel %v over input %v (strides %v, dilations %v, pads %v), spatial axis %d: %w", op.Kernel, x.Shape[2:], op.Strides, op.Dilations, op.Pads, d, err)
		}
		out = append(out, n)
	}
	return []Type{{x.DType, out}, {Int64, out}}, nil
}

func (op *Pool) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, y := in[0], out[0]
	var indices []int64
	if len(out) > 1 && out[1] != nil {
		indices = out[1].Int64s()
	}
	xv := Convert(x, Float64).Float64s()
	k := len(x.shape) - 2
	spatialIn, spatialOut := x.shape[2:], y.shape[2:]
	kern := Shape(op.Kernel)
	inSize, outSize, kSize := spatialIn.Size(), spatialOut.Size(), kern.Size()
	inStr := spatialIn.Strides()
	colStr := make([]int, k) // column-major spatial strides for StorageOrder 1
	n := 1
	for d := range k {
		colStr[d] = n
		n *= spatialIn[d]
	}
	res := make([]float64, y.Len())
	outPos, kPos, pos := make([]int, k), make([]int, k), make([]int, k)
	for nc := range x.shape[0] * x.shape[1] {
		base := nc * inSize
		for o := range outSize {
			unflatten(o, spatialOut, outPos)
			best, bestIdx := math.Inf(-1), -1
			sum, count, padCount := 0.0, 0, 0
			for kp := range kSize {
				unflatten(kp, kern, kPos)
				inside, inPadded := true, true
				for d := range k {
					p := outPos[d]*op.Strides[d] - op.Pads[d] + kPos[d]*op.Dilations[d]
					pos[d] = p
					if p < 0 || p >= spatialIn[d] {
						inside = false
					}
					if p < -op.Pads[d] || p >= spatialIn[d]+op.Pads[k+d] {
						inPadded = false
					}
				}
				if inPadded {
					padCount++
				}
				if !inside {
					continue
				}
				off := 0
				for d := range k {
					off += pos[d] * inStr[d]
				}
				v := xv[base+off]
				count++
				sum += v
				if v > best || bestIdx < 0 {
					best, bestIdx = v, off
					if op.StorageOrder == 1 {
						bestIdx = 0
						for d := range k {
							bestIdx += pos[d] * colStr[d]
						}
					}
				}
			}
			r := nc*outSize + o
			switch {
			case op.Max:
				res[r] = best
				if indices != nil {
					indices[r] = int64(base + bestIdx)
				}
			case op.CountIncludePad:
				res[r] = sum / float64(padCount)
			default:
				res[r] = sum / float64(count)
			}
		}
	}
	storeNumbers(y, res)
	return nil
}

// ---------------------------------------------------------------- BatchNorm

// BatchNorm normalizes per channel (axis 1) of NC... input:
// y = (x - mean)/sqrt(var + Epsilon)·scale + bias. Inputs: x, scale, bias,
// mean, var. In Training mode mean and var are the batch's (population
// variance over every axis but 1) and the optional outputs 1 and 2 are the
// updated running statistics input·Momentum + batch·(1-Momentum).
type BatchNorm struct {
	Epsilon, Momentum float32
	Training          bool
}

func (op *BatchNorm) Name() string { return "BatchNorm" }

func (op *BatchNorm) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 5, 5); err != nil {
		return nil, err
	}
	x := in[0]
	if !isFloat(x.DType) || len(x.Shape) < 2 {
		return nil, fmt.Errorf("input is %v, want a float tensor of rank ≥ 2", x)
	}
	c := Shape{x.Shape[1]}
	for i := 1; i < 5; i++ {
		if !isFloat(in[i].DType) || !in[i].Shape.Equal(c) {
			return nil, fmt.Errorf("input %d is %v, want a float vector of %d", i, in[i], x.Shape[1])
		}
	}
	return []Type{x, {in[3].DType, c}, {in[4].DType, c}}, nil
}

func (op *BatchNorm) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x := in[0]
	xv := Convert(x, Float64).Float64s()
	scale, bias := Convert(in[1], Float64).Float64s(), Convert(in[2], Float64).Float64s()
	mean, vr := Convert(in[3], Float64).Float64s(), Convert(in[4], Float64).Float64s()
	c := x.shape[1]
	inner := x.shape[2:].Size()
	outer := x.shape[0]
	useMean, useVar := mean, vr
	if op.Training {
		cnt := float64(outer * inner)
		useMean, useVar = make([]float64, c), make([]float64, c)
		for ch := range c {
			var s float64
			for b := range outer {
				for _, v := range xv[(b*c+ch)*inner : (b*c+ch+1)*inner] {
					s += v
				}
			}
			m := s / cnt
			var q float64
			for b := range outer {
				for _, v := range xv[(b*c+ch)*inner : (b*c+ch+1)*inner] {
					q += (v - m) * (v - m)
				}
			}
			useMean[ch], useVar[ch] = m, q/cnt
		}
		mom := float64(op.Momentum)
		if len(out) > 1 && out[1] != nil {
			r := make([]float64, c)
			for ch := range c {
				r[ch] = mean[ch]*mom + useMean[ch]*(1-mom)
			}
			storeFloats(out[1], r)
		}
		if len(out) > 2 && out[2] != nil {
			r := make([]float64, c)
			for ch := range c {
				r[ch] = vr[ch]*mom + useVar[ch]*(1-mom)
			}
			storeFloats(out[2], r)
		}
	}
	res := make([]float64, len(xv))
	for b := range outer {
		for ch := range c {
			is := 1 / math.Sqrt(useVar[ch]+float64(op.Epsilon))
			o := (b*c + ch) * inner
			for i, v := range xv[o : o+inner] {
				res[o+i] = (v-useMean[ch])*is*scale[ch] + bias[ch]
			}
		}
	}
	storeFloats(out[0], res)
	return nil
}

// gradRule differentiates every input. With the running statistics
// (inference): y = (x − mean)·s·scale + bias, s = 1/√(var + ε). With the
// batch's (Training): x̂ = (x − μ)·s over the batch's μ and σ², and
// dx = s·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) per channel, dx̂ = dy·scale; the
// updated running statistics (outputs 1 and 2) pass their gradients to
// the running inputs (times Momentum) and to x through μ and σ².
func (op *BatchNorm) gradRule(d *differ, c *gradCtx) error {
	x := c.in(0)
	dt := x.DType
	for i := 1; i < 5; i++ {
		if c.in(i).DType != dt {
			return c.unsupported("BatchNorm with operands of different float types")
		}
	}
	dyOf := func(i int) *Value { return optIn(c.dy, i) }
	if !op.Training && (dyOf(1) != nil || dyOf(2) != nil) {
		return c.unsupported("BatchNorm's running statistics outside training mode")
	}
	bn := batchNormGrad{d: d, x: x, count: 1}
	for a, n := range x.Shape {
		if a != 1 {
			bn.axes = append(bn.axes, a)
			bn.count *= float64(n)
		}
	}
	scale := bn.perChannel(c.in(1))
	eps := d.scalar(dt, float64(op.Epsilon))
	invStd := func(variance *Value) *Value {
		return d.emit1(&Unary{Fn: Reciprocal}, d.emit1(&Unary{Fn: Sqrt}, d.binary(Add, variance, eps)))
	}
	dy := dyOf(0)
	if !op.Training {
		if dy == nil {
			return nil
		}
		s := invStd(bn.perChannel(c.in(4)))
		centered := d.binary(Sub, x, bn.perChannel(c.in(3)))
		c.add(0, d.binary(Mul, dy, d.binary(Mul, scale, s)))
		c.add(1, bn.sum(d.binary(Mul, dy, d.binary(Mul, centered, s))))
		c.add(2, bn.sum(dy))
		if c.needs(3) {
			c.add(3, d.neg(bn.sum(d.binary(Mul, dy, d.binary(Mul, scale, s)))))
		}
		if c.needs(4) {
			// ∂s/∂var = −s³/2
			ds := d.binary(Mul, d.binary(Mul, d.binary(Mul, s, s), s), d.scalar(dt, -0.5))
			c.add(4, bn.sum(d.binary(Mul, dy, d.binary(Mul, centered, d.binary(Mul, scale, ds)))))
		}
		return nil
	}
	mu := bn.mean(x)
	centered := d.binary(Sub, x, mu)
	s := invStd(bn.mean(d.binary(Mul, centered, centered)))
	if dy != nil {
		xhat := d.binary(Mul, centered, s)
		c.add(1, bn.sum(d.binary(Mul, dy, xhat)))
		c.add(2, bn.sum(dy))
		if c.needs(0) {
			dxhat := d.binary(Mul, dy, scale)
			inner := d.binary(Sub, d.binary(Sub, dxhat, bn.mean(dxhat)), d.binary(Mul, xhat, bn.mean(d.binary(Mul, dxhat, xhat))))
			c.add(0, d.binary(Mul, s, inner))
		}
	}
	mom := d.scalar(dt, float64(op.Momentum))
	rest := d.scalar(dt, (1-float64(op.Momentum))/bn.count)
	if dm := dyOf(1); dm != nil {
		c.add(3, d.binary(Mul, dm, mom))
		c.add(0, d.emit1(&Expand{Shape: x.Shape.Clone()}, bn.perChannel(d.binary(Mul, dm, rest))))
	}
	if dv := dyOf(2); dv != nil {
		c.add(4, d.binary(Mul, dv, mom))
		two := d.binary(Mul, bn.perChannel(dv), d.scalar(dt, 2))
		c.add(0, d.binary(Mul, d.binary(Mul, centered, two), rest))
	}
	return nil
}

// batchNormGrad holds what BatchNorm's gradient computes per channel:
// x [N, C, ...] and the axes other than the channels'.
type batchNormGrad struct {
	d     *differ
	x     *Value
	axes  []int
	count float64 // elements per channel
}

// perChannel reshapes a [C] value to broadcast along x's channel axis.
func (bn batchNormGrad) perChannel(v *Value) *Value {
	shape := Shape(ones(len(bn.x.Shape)))
	shape[1] = bn.x.Shape[1]
	return bn.d.reshape(v, shape)
}

// sum is v's sum per channel, [C].
func (bn batchNormGrad) sum(v *Value) *Value {
	return bn.d.emit1(&Reduce{Fn: ReduceSum, Axes: bn.axes}, v)
}

// mean is v's mean per channel, broadcasting along the channel axis.
func (bn batchNormGrad) mean(v *Value) *Value {
	return bn.d.emit1(&Reduce{Fn: ReduceMean, Axes: bn.axes, KeepDims: true}, v)
}

// ---------------------------------------------------------------- Dropout

// Dropout in training mode zeroes each element with probability Ratio and
// scales the rest by 1/(1-Ratio); the optional second output is the bool
// keep mask. The mask comes from a PCG generator seeded with Seed, so a
// given seed always drops the same elements. (Inference-mode Dropout is
// the identity and imports as an alias.)
type Dropout struct {
	Ratio float32
	Seed  uint64
}

func (op *Dropout) Name() string { return "Dropout" }

func (op *Dropout) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if err := wantDTypes("input", in[0], isFloat, "a float type"); err != nil {
		return nil, err
	}
	if op.Ratio < 0 || op.Ratio >= 1 {
		return nil, fmt.Errorf("ratio %g, want [0, 1)", op.Ratio)
	}
	return []Type{in[0], {Bool, in[0].Shape}}, nil
}

// DropoutMask fills keep with the mask for a seed and ratio: keep[i] is
// true with probability 1-ratio. Backends use it so that all of them drop
// the same elements.
func DropoutMask(keep []bool, ratio float32, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	for i := range keep {
		keep[i] = rng.Float32() >= ratio
	}
}

func (op *Dropout) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x := in[0]
	keep := make([]bool, x.Len())
	DropoutMask(keep, op.Ratio, op.Seed)
	xv := Convert(x, Float64).Float64s()
	scale := 1 / (1 - float64(op.Ratio))
	res := make([]float64, len(xv))
	for i, v := range xv {
		if keep[i] {
			res[i] = v * scale
		}
	}
	storeFloats(out[0], res)
	if len(out) > 1 && out[1] != nil {
		copy(out[1].Bools(), keep)
	}
	return nil
}

// ---------------------------------------------------------------- losses

// Reduction is how a loss op combines the per-element losses.
type Reduction uint8

const (
	ReductionNone Reduction = iota
	ReductionSum
	ReductionMean
)

// NLLLoss is the negative log-likelihood loss: input [N, C, d...] holds
// log-probabilities, target [N, d...] class indices, optional weight [C].
// loss[n, d] = -input[n, target[n,d], d]·weight[target[n,d]], and 0 where
// target equals IgnoreIndex (when HasIgnore). Mean divides the sum by the
// sum of the weights of the counted elements (their number without
// weights). With Softmax set it is SoftmaxCrossEntropyLoss: the input holds
// scores and log-softmax over axis 1 is applied first; its optional second
// output is those log-probabilities.
type NLLLoss struct {
	Softmax     bool
	Reduction   Reduction
	IgnoreIndex int
	HasIgnore   bool
}

func (op *NLLLoss) Name() string {
	if op.Softmax {
		return "SoftmaxCrossEntropyLoss"
	}
	return "NegativeLogLikelihoodLoss"
}

func (op *NLLLoss) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	x, t := in[0], in[1]
	if !isFloat(x.DType) || len(x.Shape) < 2 {
		return nil, fmt.Errorf("input is %v, want a float tensor of rank ≥ 2", x)
	}
	if !isIndex(t.DType) {
		return nil, fmt.Errorf("target is %s, want int32 or int64", t.DType)
	}
	want := append(Shape{x.Shape[0]}, x.Shape[2:]...)
	if !t.Shape.Equal(want) {
		return nil, fmt.Errorf("target shape %v, want %v", t.Shape, want)
	}
	if w, ok := optional(in, 2); ok && (w.DType != x.DType || !w.Shape.Equal(Shape{x.Shape[1]})) {
		return nil, fmt.Errorf("weight is %v, want %s[%d]", w, x.DType, x.Shape[1])
	}
	loss := Type{x.DType, Shape{}}
	if op.Reduction == ReductionNone {
		loss.Shape = want
	}
	return []Type{loss, x}, nil
}

func (op *NLLLoss) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, target := in[0], in[1]
	lp := Convert(x, Float64).Float64s()
	n, c := x.shape[0], x.shape[1]
	inner := x.shape[2:].Size()
	if op.Softmax {
		lp = append([]float64(nil), lp...)
		for b := range n {
			for i := range inner {
				m := math.Inf(-1)
				for k := range c {
					m = math.Max(m, lp[(b*c+k)*inner+i])
				}
				var s float64
				for k := range c {
					s += math.Exp(lp[(b*c+k)*inner+i] - m)
				}
				ls := math.Log(s)
				for k := range c {
					lp[(b*c+k)*inner+i] -= m + ls
				}
			}
		}
		if len(out) > 1 && out[1] != nil {
			storeFloats(out[1], lp)
		}
	}
	var weight []float64
	if w := optIn(in, 2); w != nil {
		weight = Convert(w, Float64).Float64s()
	}
	losses := make([]float64, n*inner)
	var sum, wsum float64
	for b := range n {
		for i := range inner {
			t := int(target.Int64At(b*inner + i))
			if op.HasIgnore && t == op.IgnoreIndex {
				continue
			}
			if t < 0 || t >= c {
				return fmt.Errorf("%s target %d out of range [0, %d)", op.Name(), t, c)
			}
			w := 1.0
			if weight != nil {
				w = weight[t]
			}
			l := -lp[(b*c+t)*inner+i] * w
			losses[b*inner+i] = l
			sum += l
			wsum += w
		}
	}
	switch op.Reduction {
	case ReductionNone:
		storeFloats(out[0], losses)
	case ReductionSum:
		storeFloats(out[0], []float64{sum})
	case ReductionMean:
		if weight == nil && !op.HasIgnore {
			wsum = float64(len(losses))
		}
		storeFloats(out[0], []float64{sum / wsum})
	}
	return nil
}

// gradRule differentiates the input and the weight. With lp the
// log-probabilities (the input, or SoftmaxCrossEntropyLoss's log_prob
// output), hit[n, c, d] = (target[n, d] = c, not ignored) and
// w[n, c, d] = weight[c]·hit (hit without weights), the loss terms are
// −w·lp, so dlp = −w·g, g being dy for no reduction, spread over the
// elements, and divided by W = Σ w for the mean. SoftmaxCrossEntropyLoss
// adds the log_prob output's own gradient and passes dlp through the log
// softmax. The weight's gradient is Σ hit·(−lp)·g per class, less L/W per
// counted element for the mean.
func (op *NLLLoss) gradRule(d *differ, c *gradCtx) error {
	x, target := c.in(0), c.in(1)
	dt := x.DType
	dy, dlogProb := c.dy[0], optIn(c.dy, 1)
	lp := x
	if op.Softmax {
		lp = c.out(1)
	}
	classes := x.Shape[1]
	spread := Shape(ones(len(x.Shape))) // [1, C, 1, ...]
	spread[1] = classes
	lanes := append(Shape{x.Shape[0], 1}, x.Shape[2:]...) // [N, 1, d...]
	t := d.reshape(d.emit1(&Cast{To: Int64}, target), lanes)
	hit := d.binary(Equal, t, d.constant(iotaAlong(len(x.Shape), 1, classes)))
	if op.HasIgnore && op.IgnoreIndex >= 0 && op.IgnoreIndex < classes {
		ignored := d.binary(Equal, t, d.constant(ScalarInt64(int64(op.IgnoreIndex))))
		hit = d.binary(And, hit, d.emit1(&Unary{Fn: Not}, ignored))
	}
	w := d.emit1(&Cast{To: dt}, hit)
	if weight := optIn(c.n.Inputs, 2); weight != nil {
		w = d.binary(Mul, w, d.reshape(weight, spread))
	}
	var g, total *Value // the loss's gradient per element ([N, 1, d...] or a scalar), W
	if dy != nil {
		switch op.Reduction {
		case ReductionNone:
			g = d.reshape(dy, lanes)
		case ReductionSum:
			g = dy
		case ReductionMean:
			total = d.emit1(&Reduce{Fn: ReduceSum, Axes: iotaInts(len(x.Shape))}, w)
			g = d.binary(Div, dy, total)
		}
	}
	var dlp *Value
	if g != nil {
		dlp = d.neg(d.binary(Mul, w, g))
	}
	if dlogProb != nil {
		if dlp == nil {
			dlp = dlogProb
		} else {
			dlp = d.binary(Add, dlp, dlogProb)
		}
	}
	if dlp != nil {
		if op.Softmax {
			c.add(0, d.emit1(&SoftmaxGrad{Axis: 1, Log: true}, dlp, lp))
		} else {
			c.add(0, dlp)
		}
	}
	if c.needs(2) && g != nil {
		others := slices.DeleteFunc(iotaInts(len(x.Shape)), func(a int) bool { return a == 1 })
		perClass := func(v *Value) *Value { return d.emit1(&Reduce{Fn: ReduceSum, Axes: others}, v) }
		hits := d.emit1(&Cast{To: dt}, hit)
		dw := perClass(d.binary(Mul, d.neg(d.binary(Mul, hits, lp)), g))
		if op.Reduction == ReductionMean {
			dw = d.binary(Sub, dw, d.binary(Mul, perClass(hits), d.binary(Mul, g, c.n.Outputs[0])))
		}
		c.add(2, dw)
	}
	return nil
}
