package ir

import (
	"fmt"
	"math"
	"slices"
)

// The internal ops of gradient graphs. ONNX has no counterpart for them:
// Grad emits them where a fused pass is much faster or numerically better
// than a composition of ordinary ops. Every one has shape inference and a
// float64 reference Eval like the ONNX ops, so Interpret runs gradient
// graphs and the finite-difference tests work in float64; each doc comment
// states the math a backend must implement.

// ---------------------------------------------------------------- UnaryGrad

// UnaryGrad is the derivative of an element-wise function:
// dx[i] = dy[i]·f'(x[i]), for the Unary function Fn (with Alpha as there).
// Its inputs are dy and t, where t is the forward output y = f(x) for the
// functions whose derivative is a function of y, and x otherwise:
//
//	Exp:        f' = y
//	Sqrt:       f' = 1/(2y)
//	Tanh:       f' = 1 − y²
//	Sigmoid:    f' = y·(1 − y)
//	Relu:       f' = 1 if y > 0 else 0
//	Reciprocal: f' = −y²
//	Log:        f' = 1/x
//	Abs:        f' = sign(x) (0 at 0)
//	Erf:        f' = 2/√π·exp(−x²)
//	LeakyRelu:  f' = 1 if x > 0 else Alpha
//	Elu:        f' = 1 if x > 0 else Alpha·exp(x)
//	Gelu:       f' = Φ(x) + x·φ(x), Φ and φ the standard normal CDF and density
//	GeluTanh:   f' = ½(1 + tanh u) + ½x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715x²), u = √(2/π)(x + 0.044715x³)
//	Softplus:   f' = sigmoid(x)
//	Cos:        f' = −sin x
//	Sin:        f' = cos x
//	Tan:        f' = 1/cos² x
//	Acos:       f' = −1/√(1 − x²)
//	Asin:       f' = 1/√(1 − x²)
//	Atan:       f' = 1/(1 + x²)
//	Acosh:      f' = 1/√(x² − 1)
//	Asinh:      f' = 1/√(x² + 1)
//	Atanh:      f' = 1/(1 − x²)
//	Cosh:       f' = sinh x
//	Sinh:       f' = cosh x
//	HardSwish:  f' = 0 if x < −3, 1 if x > 3, else (2x + 3)/6
//	Softsign:   f' = 1/(1 + |x|)²
//	Mish:       f' = tanh s + x·(1 − tanh² s)·sigmoid(x), s = softplus(x)
//	Celu:       f' = 1 if x > 0 else exp(x/Alpha)
//	ThresholdedRelu: f' = 1 if x > Alpha else 0
//	Swish:      f' = s + Alpha·x·s·(1 − s), s = sigmoid(Alpha·x)
type UnaryGrad struct {
	Fn    UnaryFn
	Alpha float32
}

func (op *UnaryGrad) Name() string { return op.Fn.String() + "Grad" }

// UnaryGradUsesOutput reports whether UnaryGrad for fn takes the forward
// output y (true) or the input x (false) as its second operand.
func UnaryGradUsesOutput(fn UnaryFn) bool {
	switch fn {
	case Exp, Sqrt, Tanh, Sigmoid, Relu, Reciprocal:
		return true
	}
	return false
}

func unaryGradSupported(fn UnaryFn) bool {
	switch fn {
	case Exp, Sqrt, Tanh, Sigmoid, Relu, Reciprocal, Log, Abs, Erf, LeakyRelu, Elu, Gelu, GeluTanh, Softplus,
		Cos, Sin, Tan, Acos, Asin, Atan, Acosh, Asinh, Atanh, Cosh, Sinh,
		HardSwish, Softsign, Mish, Celu, ThresholdedRelu, Swish:
		return true
	}
	return false
}

func (op *UnaryGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	if !unaryGradSupported(op.Fn) {
		return nil, fmt.Errorf("no derivative for %s", op.Fn)
	}
	if err := sameFloat(in[0], in[1]); err != nil {
		return nil, err
	}
	return []Type{in[0]}, nil
}

// sameFloat checks that two operands have one float type and one shape.
func sameFloat(a, b Type) error {
	if !isFloat(a.DType) || a.DType != b.DType {
		return fmt.Errorf("operands are %s and %s, want one float type", a.DType, b.DType)
	}
	if !a.Shape.Equal(b.Shape) {
		return fmt.Errorf("operand shapes %v and %v differ", a.Shape, b.Shape)
	}
	return nil
}

// UnaryDerivative is f'(x) for UnaryGrad's function fn, given its second
// operand t (y or x, see UnaryGrad), computed in float64.
func UnaryDerivative(fn UnaryFn, alpha, t float64) float64 {
	switch fn {
	case Exp:
		return t
	case Sqrt:
		return 0.5 / t
	case Tanh:
		return 1 - t*t
	case Sigmoid:
		return t * (1 - t)
	case Relu:
		if t > 0 {
			return 1
		}
		return 0
	case Reciprocal:
		return -t * t
	case Log:
		return 1 / t
	case Abs:
		switch {
		case t > 0:
			return 1
		case t < 0:
			return -1
		}
		return 0
	case Erf:
		return 2 / math.SqrtPi * math.Exp(-t*t)
	case LeakyRelu:
		if t > 0 {
			return 1
		}
		return alpha
	case Elu:
		if t > 0 {
			return 1
		}
		return alpha * math.Exp(t)
	case Gelu:
		return 0.5*(1+math.Erf(t/math.Sqrt2)) + t*math.Exp(-0.5*t*t)/math.Sqrt(2*math.Pi)
	case GeluTanh:
		const c = 0.7978845608028654 // √(2/π)
		th := math.Tanh(c * (t + 0.044715*t*t*t))
		return 0.5*(1+th) + 0.5*t*(1-th*th)*c*(1+3*0.044715*t*t)
	case Softplus:
		return UnaryFloat64(Sigmoid, 0, t)
	case Cos:
		return -math.Sin(t)
	case Sin:
		return math.Cos(t)
	case Tan:
		c := math.Cos(t)
		return 1 / (c * c)
	case Acos:
		return -1 / math.Sqrt(1-t*t)
	case Asin:
		return 1 / math.Sqrt(1-t*t)
	case Atan:
		return 1 / (1 + t*t)
	case Acosh:
		return 1 / math.Sqrt(t*t-1)
	case Asinh:
		return 1 / math.Sqrt(t*t+1)
	case Atanh:
		return 1 / (1 - t*t)
	case Cosh:
		return math.Sinh(t)
	case Sinh:
		return math.Cosh(t)
	case HardSwish:
		switch {
		case t < -3:
			return 0
		case t > 3:
			return 1
		}
		return (2*t + 3) / 6
	case Softsign:
		d := 1 + math.Abs(t)
		return 1 / (d * d)
	case Mish:
		th := math.Tanh(UnaryFloat64(Softplus, 0, t))
		return th + t*(1-th*th)*UnaryFloat64(Sigmoid, 0, t)
	case Celu:
		if t > 0 {
			return 1
		}
		return math.Exp(t / alpha)
	case ThresholdedRelu:
		if t > alpha {
			return 1
		}
		return 0
	case Swish:
		sg := UnaryFloat64(Sigmoid, 0, alpha*t)
		return sg + alpha*t*sg*(1-sg)
	}
	panic("ir: no derivative for " + fn.String())
}

func (op *UnaryGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, t := Convert(in[0], Float64).Float64s(), Convert(in[1], Float64).Float64s()
	res := make([]float64, len(dy))
	alpha := float64(op.Alpha)
	for i := range res {
		res[i] = dy[i] * UnaryDerivative(op.Fn, alpha, t[i])
	}
	storeFloats(out[0], res)
	return nil
}

// ---------------------------------------------------------------- SoftmaxGrad

// SoftmaxGrad is the gradient of Softmax (or LogSoftmax) along Axis, from
// the upstream gradient dy and the forward output y, lane by lane:
//
//	Softmax:    dx = y·(dy − Σ dy·y)
//	LogSoftmax: dx = dy − exp(y)·Σ dy
//
// with the sums over the lane.
type SoftmaxGrad struct {
	Axis int
	Log  bool
}

func (op *SoftmaxGrad) Name() string {
	if op.Log {
		return "LogSoftmaxGrad"
	}
	return "SoftmaxGrad"
}

func (op *SoftmaxGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	if err := sameFloat(in[0], in[1]); err != nil {
		return nil, err
	}
	if op.Axis < 0 || op.Axis >= len(in[0].Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(in[0].Shape))
	}
	return []Type{in[0]}, nil
}

func (op *SoftmaxGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, y := Convert(in[0], Float64).Float64s(), Convert(in[1], Float64).Float64s()
	res := make([]float64, len(dy))
	axisLoop(in[0].shape, op.Axis, func(base, stride, n int) {
		var s float64
		for i := range n {
			p := base + i*stride
			if op.Log {
				s += dy[p]
			} else {
				s += dy[p] * y[p]
			}
		}
		for i := range n {
			p := base + i*stride
			if op.Log {
				res[p] = dy[p] - math.Exp(y[p])*s
			} else {
				res[p] = y[p] * (dy[p] - s)
			}
		}
	})
	storeFloats(out[0], res)
	return nil
}

// ---------------------------------------------------------------- LayerNormGrad

// LayerNormGrad is the gradient of LayerNorm over the axes from Axis on,
// from the forward statistics (LayerNorm's outputs 1 and 2). Inputs: dy,
// x, scale, mean, invStd. With rows r over x.shape[:Axis], N the normalized
// size, x̂ = (x − mean)·invStd and g = dy·scale (scale broadcast to
// x.shape[Axis:]):
//
//	dx     = invStd·(g − mean_r(g) − x̂·mean_r(g·x̂))   (per row)
//	dscale = Σ_r dy·x̂                                  (shape x.shape[Axis:])
//	dbias  = Σ_r dy                                    (shape x.shape[Axis:])
//
// The outputs are dx, dscale and dbias; backends skip the ones nobody reads.
type LayerNormGrad struct {
	Axis int
}

func (op *LayerNormGrad) Name() string { return "LayerNormGrad" }

func (op *LayerNormGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 5, 5); err != nil {
		return nil, err
	}
	dy, x, scale, mean, inv := in[0], in[1], in[2], in[3], in[4]
	if err := sameFloat(dy, x); err != nil {
		return nil, err
	}
	if op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(x.Shape))
	}
	norm := x.Shape[op.Axis:]
	if scale.DType != x.DType {
		return nil, fmt.Errorf("scale is %s, want %s", scale.DType, x.DType)
	}
	if s, err := BroadcastShapes(scale.Shape, norm); err != nil || !s.Equal(norm) {
		return nil, fmt.Errorf("scale has shape %v, want one broadcastable to %v", scale.Shape, norm)
	}
	stat := x.Shape.Clone()
	for d := op.Axis; d < len(stat); d++ {
		stat[d] = 1
	}
	for _, t := range []Type{mean, inv} {
		if t.DType != x.DType || !t.Shape.Equal(stat) {
			return nil, fmt.Errorf("statistics are %v, want %s%v", t, x.DType, stat)
		}
	}
	return []Type{x, {x.DType, norm.Clone()}, {x.DType, norm.Clone()}}, nil
}

func (op *LayerNormGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x := in[1]
	norm := x.shape[op.Axis:]
	n := norm.Size()
	rows := x.shape[:op.Axis].Size()
	dy, xs := Convert(in[0], Float64).Float64s(), Convert(x, Float64).Float64s()
	scale := expandTo(Convert(in[2], Float64), norm)
	mean, inv := Convert(in[3], Float64).Float64s(), Convert(in[4], Float64).Float64s()
	dx := make([]float64, len(xs))
	dscale, dbias := make([]float64, n), make([]float64, n)
	for r := range rows {
		row, drow := xs[r*n:(r+1)*n], dy[r*n:(r+1)*n]
		var sg, sgx float64
		for i, v := range row {
			xh := (v - mean[r]) * inv[r]
			g := drow[i] * scale[i]
			sg += g
			sgx += g * xh
			dscale[i] += drow[i] * xh
			dbias[i] += drow[i]
		}
		sg /= float64(n)
		sgx /= float64(n)
		for i, v := range row {
			xh := (v - mean[r]) * inv[r]
			dx[r*n+i] = inv[r] * (drow[i]*scale[i] - sg - xh*sgx)
		}
	}
	if out[0] != nil {
		storeFloats(out[0], dx)
	}
	if len(out) > 1 && out[1] != nil {
		storeFloats(out[1], dscale)
	}
	if len(out) > 2 && out[2] != nil {
		storeFloats(out[2], dbias)
	}
	return nil
}

// ---------------------------------------------------------------- ScatterAddRows

// ScatterAddRows is Gather's gradient: it adds the slices of dy back into
// the rows they were gathered from. For x of shape outer×Rows×inner
// gathered along Axis with indices of shape I, dy has shape outer×I×inner
// and
//
//	out = base (zeros when the optional third input is absent)
//	for o, j, k (j over I in row-major order, ascending):
//		out[o, idx[j], k] += dy[o, j, k]
//
// Negative indices count from the end, as in Gather. Rows gathered several
// times accumulate in index order, so the result is deterministic.
type ScatterAddRows struct {
	Axis int
	Rows int
}

func (op *ScatterAddRows) Name() string { return "ScatterAddRows" }

// scatterShape is the output shape for dy and the indices' rank.
func (op *ScatterAddRows) scatterShape(dy Shape, idxRank int) (Shape, error) {
	if op.Axis < 0 || op.Axis+idxRank > len(dy) || op.Rows < 0 {
		return nil, fmt.Errorf("axis %d, %d rows and indices of rank %d do not fit dy %v", op.Axis, op.Rows, idxRank, dy)
	}
	out := append(dy[:op.Axis:op.Axis], op.Rows)
	return append(out, dy[op.Axis+idxRank:]...), nil
}

func (op *ScatterAddRows) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	dy, idx := in[0], in[1]
	if !isFloat(dy.DType) {
		return nil, fmt.Errorf("dy is %s, want a float type", dy.DType)
	}
	if err := wantDTypes("indices", idx, isIndex, "int32 or int64"); err != nil {
		return nil, err
	}
	if len(dy.Shape) < op.Axis+len(idx.Shape) || !dy.Shape[op.Axis:op.Axis+len(idx.Shape)].Equal(idx.Shape) {
		return nil, fmt.Errorf("dy %v does not hold indices %v at axis %d", dy.Shape, idx.Shape, op.Axis)
	}
	shape, err := op.scatterShape(dy.Shape, len(idx.Shape))
	if err != nil {
		return nil, err
	}
	if base, ok := optional(in, 2); ok && (base.DType != dy.DType || !base.Shape.Equal(shape)) {
		return nil, fmt.Errorf("base is %v, want %s%v", base, dy.DType, shape)
	}
	return []Type{{dy.DType, shape}}, nil
}

func (op *ScatterAddRows) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, idx, y := in[0], in[1], out[0]
	res := make([]float64, y.Len())
	if base := optIn(in, 2); base != nil {
		copy(res, Convert(base, Float64).Float64s())
	}
	d := Convert(dy, Float64).Float64s()
	outer := y.shape[:op.Axis].Size()
	inner := y.shape[op.Axis+1:].Size()
	k, n := idx.Len(), op.Rows
	for j := range k {
		if i := idx.Int64At(j); i < int64(-n) || i >= int64(n) {
			return fmt.Errorf("ScatterAddRows index %d out of range [%d, %d)", i, -n, n)
		}
	}
	for o := range outer {
		for j := range k {
			i := int(idx.Int64At(j))
			if i < 0 {
				i += n
			}
			dst := res[(o*n+i)*inner : (o*n+i+1)*inner]
			src := d[(o*k+j)*inner : (o*k+j+1)*inner]
			for c, v := range src {
				dst[c] += v
			}
		}
	}
	storeFloats(y, res)
	return nil
}

// ---------------------------------------------------------------- SliceGrad

// SliceGrad is Slice's gradient: out has Shape, the shape of the sliced
// tensor, and
//
//	out = base (zeros when the optional second input is absent)
//	out[Starts + i·Steps] += dy[i]   for every index i of dy
//
// where dy has the slice's shape (Slice's Sizes).
type SliceGrad struct {
	Starts, Steps []int
	Shape         Shape
}

func (op *SliceGrad) Name() string { return "SliceGrad" }

func (op *SliceGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 2); err != nil {
		return nil, err
	}
	dy := in[0]
	if !isFloat(dy.DType) {
		return nil, fmt.Errorf("dy is %s, want a float type", dy.DType)
	}
	// The slice itself must be valid for Shape.
	if _, err := (&Slice{Starts: op.Starts, Steps: op.Steps, Sizes: dy.Shape}).Infer([]Type{{dy.DType, op.Shape}}); err != nil {
		return nil, err
	}
	if base, ok := optional(in, 1); ok && (base.DType != dy.DType || !base.Shape.Equal(op.Shape)) {
		return nil, fmt.Errorf("base is %v, want %s%v", base, dy.DType, op.Shape)
	}
	return []Type{{dy.DType, op.Shape.Clone()}}, nil
}

func (op *SliceGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, y := in[0], out[0]
	res := make([]float64, y.Len())
	if base := optIn(in, 1); base != nil {
		copy(res, Convert(base, Float64).Float64s())
	}
	d := Convert(dy, Float64).Float64s()
	st := op.Shape.Strides()
	pos := make([]int, len(dy.shape))
	for i, v := range d {
		unflatten(i, dy.shape, pos)
		o := 0
		for a, p := range pos {
			o += (op.Starts[a] + p*op.Steps[a]) * st[a]
		}
		res[o] += v
	}
	storeFloats(y, res)
	return nil
}

// ---------------------------------------------------------------- PoolGrad

// PoolGrad is the gradient of Pool (the embedded attributes) with respect
// to its input. Inputs: dy (the pooled shape) and x. For every output
// position, MaxPool routes dy to the window's maximum (the first one in
// window order on ties, as Pool picks it); AveragePool spreads dy evenly
// over the window positions inside the input, divided by the count Pool
// divided by (with CountIncludePad, the positions inside the padded input).
type PoolGrad struct {
	Pool
}

func (op *PoolGrad) Name() string { return op.Pool.Name() + "Grad" }

func (op *PoolGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	dy, x := in[0], in[1]
	if !isFloat(x.DType) || dy.DType != x.DType {
		return nil, fmt.Errorf("operands are %s and %s, want one float type", dy.DType, x.DType)
	}
	fwd, err := op.Pool.Infer([]Type{x})
	if err != nil {
		return nil, err
	}
	if !fwd[0].Shape.Equal(dy.Shape) {
		return nil, fmt.Errorf("dy has shape %v, the pool's output %v", dy.Shape, fwd[0].Shape)
	}
	return []Type{x}, nil
}

func (op *PoolGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, x := in[0], in[1]
	d, xv := Convert(dy, Float64).Float64s(), Convert(x, Float64).Float64s()
	k := len(x.shape) - 2
	spatialIn, spatialOut := x.shape[2:], dy.shape[2:]
	kern := Shape(op.Kernel)
	inSize, outSize, kSize := spatialIn.Size(), spatialOut.Size(), kern.Size()
	inStr := spatialIn.Strides()
	res := make([]float64, len(xv))
	outPos, kPos := make([]int, k), make([]int, k)
	offs := make([]int, 0, kSize)
	for nc := range x.shape[0] * x.shape[1] {
		base := nc * inSize
		for o := range outSize {
			unflatten(o, spatialOut, outPos)
			offs = offs[:0]
			padCount := 0
			for kp := range kSize {
				unflatten(kp, kern, kPos)
				inside, inPadded := true, true
				off := 0
				for a := range k {
					p := outPos[a]*op.Strides[a] - op.Pads[a] + kPos[a]*op.Dilations[a]
					if p < 0 || p >= spatialIn[a] {
						inside = false
					}
					if p < -op.Pads[a] || p >= spatialIn[a]+op.Pads[k+a] {
						inPadded = false
					}
					off += p * inStr[a]
				}
				if inPadded {
					padCount++
				}
				if inside {
					offs = append(offs, off)
				}
			}
			g := d[nc*outSize+o]
			switch {
			case op.Max:
				best, bestOff := math.Inf(-1), -1
				for _, off := range offs {
					if v := xv[base+off]; v > best || bestOff < 0 {
						best, bestOff = v, off
					}
				}
				if bestOff >= 0 {
					res[base+bestOff] += g
				}
			default:
				cnt := len(offs)
				if op.CountIncludePad {
					cnt = padCount
				}
				for _, off := range offs {
					res[base+off] += g / float64(cnt)
				}
			}
		}
	}
	storeFloats(out[0], res)
	return nil
}

// ---------------------------------------------------------------- Conv gradients

// ConvGradInput is the gradient of Conv (the embedded attributes) with
// respect to its input X, of shape InputShape: inputs dy [N, M, o...] and
// the weights W [M, C/Group, k...];
//
//	dx[n, g·C/G + c, p] = Σ_{m in group g, o, q: p = o·stride − pad + q·dilation} dy[n, m, o]·W[m, c, q]
//
// (the transposed convolution).
type ConvGradInput struct {
	Conv
	InputShape Shape
}

func (op *ConvGradInput) Name() string { return "ConvGradInput" }

func (op *ConvGradInput) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	dy, w := in[0], in[1]
	fwd, err := op.Conv.Infer([]Type{{w.DType, op.InputShape}, w})
	if err != nil {
		return nil, err
	}
	if dy.DType != w.DType || !dy.Shape.Equal(fwd[0].Shape) {
		return nil, fmt.Errorf("dy is %v, the convolution's output %v", dy, fwd[0])
	}
	return []Type{{w.DType, op.InputShape.Clone()}}, nil
}

func (op *ConvGradInput) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, w := in[0], in[1]
	res := make([]float64, out[0].Len())
	convWalk(&op.Conv, op.InputShape, w.shape, dy.shape, func(xi, wi, yi int) {
		res[xi] += dyAt(dy, yi) * w.Float64At(wi)
	})
	storeFloats(out[0], res)
	return nil
}

// ConvGradWeight is the gradient of Conv (the embedded attributes) with
// respect to its weights W, of shape WeightShape: inputs dy [N, M, o...]
// and X [N, C, i...];
//
//	dW[m, c, q] = Σ_{n, o: p = o·stride − pad + q·dilation inside X} dy[n, m, o]·X[n, g·C/G + c, p]
type ConvGradWeight struct {
	Conv
	WeightShape Shape
}

func (op *ConvGradWeight) Name() string { return "ConvGradWeight" }

func (op *ConvGradWeight) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	dy, x := in[0], in[1]
	fwd, err := op.Conv.Infer([]Type{x, {x.DType, op.WeightShape}})
	if err != nil {
		return nil, err
	}
	if dy.DType != x.DType || !dy.Shape.Equal(fwd[0].Shape) {
		return nil, fmt.Errorf("dy is %v, the convolution's output %v", dy, fwd[0])
	}
	return []Type{{x.DType, op.WeightShape.Clone()}}, nil
}

func (op *ConvGradWeight) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, x := in[0], in[1]
	res := make([]float64, out[0].Len())
	convWalk(&op.Conv, x.shape, op.WeightShape, dy.shape, func(xi, wi, yi int) {
		res[wi] += dyAt(dy, yi) * x.Float64At(xi)
	})
	storeFloats(out[0], res)
	return nil
}

func dyAt(t *Tensor, i int) float64 { return t.Float64At(i) }

// convWalk calls f(x index, w index, y index) for every product term of
// the convolution of x (xShape) with w (wShape) into y (yShape), in the
// order Conv.Eval sums them.
func convWalk(op *Conv, xShape, wShape, yShape Shape, f func(xi, wi, yi int)) {
	k := len(xShape) - 2
	spatialIn, spatialOut, kern := xShape[2:], yShape[2:], wShape[2:]
	n, c, m := xShape[0], xShape[1], wShape[0]
	cg, mg := c/op.Group, m/op.Group
	inSize, outSize, kSize := spatialIn.Size(), spatialOut.Size(), kern.Size()
	inStr := spatialIn.Strides()
	outPos, kPos := make([]int, k), make([]int, k)
	for b := range n {
		for oc := range m {
			g := oc / mg
			for o := range outSize {
				unflatten(o, spatialOut, outPos)
				yi := (b*m+oc)*outSize + o
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
							f(xc+off, wc+kp, yi)
						}
					}
				}
			}
		}
	}
}

// ---------------------------------------------------------------- helpers

// reduceAxesFor returns the axes of a gradient of shape out that must be
// summed to give the gradient of an operand of shape in that was
// broadcast to out: the leading axes in lacks and those where in has 1.
func reduceAxesFor(in, out Shape) []int {
	var axes []int
	off := len(out) - len(in)
	for d := range out {
		if d < off || (in[d-off] == 1 && out[d] != 1) {
			axes = append(axes, d)
		}
	}
	return axes
}

func isIdentityPerm(perm []int) bool {
	for i, p := range perm {
		if p != i {
			return false
		}
	}
	return true
}

func invertPerm(perm []int) []int {
	inv := make([]int, len(perm))
	for i, p := range perm {
		inv[p] = i
	}
	return inv
}

// swapLast2 is the permutation exchanging the last two of rank axes.
func swapLast2(rank int) []int {
	p := iotaInts(rank)
	p[rank-1], p[rank-2] = rank-2, rank-1
	return p
}

func isSwapLast2(perm []int) bool {
	r := len(perm)
	return r >= 2 && slices.Equal(perm, swapLast2(r))
}
