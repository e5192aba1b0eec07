package ir

import (
	"fmt"
	"math"
	"sort"
)

// ---------------------------------------------------------------- Reduce

// ReduceFn names a reduction.
type ReduceFn uint8

const (
	ReduceSum ReduceFn = iota
	ReduceMean
	ReduceMax
	ReduceMin
	ReduceProd
)

var reduceNames = [...]string{"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}

func (f ReduceFn) String() string { return reduceNames[f] }

// Reduce reduces over Axes (sorted, distinct, non-negative; never empty —
// import turns an empty reduction into an alias). KeepDims keeps the
// reduced axes with size 1. Float sums accumulate in float64; an empty
// reduction gives 0 (sum), NaN (mean), 1 (prod), -Inf/+Inf (max/min of
// floats) or the type's min/max (integers). Max and Min accept bools.
type Reduce struct {
	Fn       ReduceFn
	Axes     []int
	KeepDims bool
}

func (op *Reduce) Name() string { return op.Fn.String() }

func (op *Reduce) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if !x.DType.computable() && !(x.DType == Bool && (op.Fn == ReduceMax || op.Fn == ReduceMin)) {
		return nil, fmt.Errorf("input is %s, want a number type", x.DType)
	}
	if len(op.Axes) == 0 || !sort.IntsAreSorted(op.Axes) {
		return nil, fmt.Errorf("axes %v must be sorted and non-empty", op.Axes)
	}
	for i, a := range op.Axes {
		if a < 0 || a >= len(x.Shape) || (i > 0 && op.Axes[i-1] == a) {
			return nil, fmt.Errorf("axes %v invalid for rank %d", op.Axes, len(x.Shape))
		}
	}
	return []Type{{x.DType, reducedShape(x.Shape, op.Axes, op.KeepDims)}}, nil
}

func reducedShape(s Shape, axes []int, keep bool) Shape {
	out := Shape{}
	for d, n := range s {
		reduced := false
		for _, a := range axes {
			if a == d {
				reduced = true
			}
		}
		switch {
		case !reduced:
			out = append(out, n)
		case keep:
			out = append(out, 1)
		}
	}
	return out
}

// reduceMap returns, for every element of x (row-major), the flat index of
// the output element it reduces into, and the number of inputs per output.
func reduceMap(s Shape, axes []int) (idx []int, count int) {
	keep := reducedShape(s, axes, true)
	outStrides := keep.Strides()
	for _, a := range axes {
		outStrides[a] = 0
	}
	idx = make([]int, s.Size())
	pos := make([]int, len(s))
	for i := range idx {
		o := 0
		for d, p := range pos {
			o += p * outStrides[d]
		}
		idx[i] = o
		for d := len(pos) - 1; d >= 0; d-- {
			pos[d]++
			if pos[d] < s[d] {
				break
			}
			pos[d] = 0
		}
	}
	count = 1
	for _, a := range axes {
		count *= s[a]
	}
	return idx, count
}

func (op *Reduce) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, y := in[0], out[0]
	idx, count := reduceMap(x.shape, op.Axes)
	switch x.dtype {
	case Bool:
		xs, ys := view[bool](x), view[bool](y)
		for i := range ys {
			ys[i] = op.Fn == ReduceMin // the identity: true for all(), false for any()
		}
		for i, v := range xs {
			if op.Fn == ReduceMax {
				ys[idx[i]] = ys[idx[i]] || v
			} else {
				ys[idx[i]] = ys[idx[i]] && v
			}
		}
	case Float32:
		reduceFloat(op.Fn, view[float32](x), view[float32](y), idx, count)
	case Float64:
		reduceFloat(op.Fn, view[float64](x), view[float64](y), idx, count)
	case Int8:
		reduceInt(op.Fn, view[int8](x), view[int8](y), idx, count)
	case Int16:
		reduceInt(op.Fn, view[int16](x), view[int16](y), idx, count)
	case Int32:
		reduceInt(op.Fn, view[int32](x), view[int32](y), idx, count)
	case Int64:
		reduceInt(op.Fn, view[int64](x), view[int64](y), idx, count)
	case Uint8:
		reduceInt(op.Fn, view[uint8](x), view[uint8](y), idx, count)
	case Uint16:
		reduceInt(op.Fn, view[uint16](x), view[uint16](y), idx, count)
	case Uint32:
		reduceInt(op.Fn, view[uint32](x), view[uint32](y), idx, count)
	case Uint64:
		reduceInt(op.Fn, view[uint64](x), view[uint64](y), idx, count)
	default:
		return fmt.Errorf("%s on %s is not supported", op.Name(), x.dtype)
	}
	return nil
}

func reduceFloat[T floatT](fn ReduceFn, x, y []T, idx []int, count int) {
	acc := make([]float64, len(y))
	for i := range acc {
		switch fn {
		case ReduceMax:
			acc[i] = math.Inf(-1)
		case ReduceMin:
			acc[i] = math.Inf(1)
		case ReduceProd:
			acc[i] = 1
		}
	}
	for i, v := range x {
		a, f := &acc[idx[i]], float64(v)
		switch fn {
		case ReduceSum, ReduceMean:
			*a += f
		case ReduceProd:
			*a *= f
		case ReduceMax:
			if f > *a || f != f {
				*a = f
			}
		case ReduceMin:
			if f < *a || f != f {
				*a = f
			}
		}
	}
	for i, a := range acc {
		if fn == ReduceMean {
			a /= float64(count)
		}
		y[i] = T(a)
	}
}

func reduceInt[T number](fn ReduceFn, x, y []T, idx []int, count int) {
	lo, hi := intRangeOf[T]()
	for i := range y {
		switch fn {
		case ReduceMax:
			y[i] = lo
		case ReduceMin:
			y[i] = hi
		case ReduceProd:
			y[i] = 1
		default:
			y[i] = 0
		}
	}
	for i, v := range x {
		a := &y[idx[i]]
		switch fn {
		case ReduceSum, ReduceMean:
			*a += v
		case ReduceProd:
			*a *= v
		case ReduceMax:
			*a = max(*a, v)
		case ReduceMin:
			*a = min(*a, v)
		}
	}
	if fn == ReduceMean && count > 0 {
		for i := range y {
			y[i] /= T(count)
		}
	}
}

func intRangeOf[T number]() (lo, hi T) {
	var z T
	switch any(z).(type) {
	case int8:
		return any(int8(math.MinInt8)).(T), any(int8(math.MaxInt8)).(T)
	case int16:
		return any(int16(math.MinInt16)).(T), any(int16(math.MaxInt16)).(T)
	case int32:
		return any(int32(math.MinInt32)).(T), any(int32(math.MaxInt32)).(T)
	case int64:
		return any(int64(math.MinInt64)).(T), any(int64(math.MaxInt64)).(T)
	case uint8:
		return 0, any(uint8(math.MaxUint8)).(T)
	case uint16:
		return 0, any(uint16(math.MaxUint16)).(T)
	case uint32:
		return 0, any(uint32(math.MaxUint32)).(T)
	case uint64:
		return 0, any(uint64(math.MaxUint64)).(T)
	}
	return 0, 0
}

// ---------------------------------------------------------------- Softmax

// Softmax normalizes along Axis: out = exp(x - max) / Σ exp(x - max).
// With Log it is LogSoftmax: out = x - max - log Σ exp(x - max).
type Softmax struct {
	Axis int
	Log  bool
}

func (op *Softmax) Name() string {
	if op.Log {
		return "LogSoftmax"
	}
	return "Softmax"
}

func (op *Softmax) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if err := wantDTypes("input", in[0], isFloat, "a float type"); err != nil {
		return nil, err
	}
	if op.Axis < 0 || op.Axis >= len(in[0].Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(in[0].Shape))
	}
	return []Type{in[0]}, nil
}

// axisLoop calls fn for every 1-D lane along axis: the lane's elements are
// at base + i*stride for i in [0, n).
func axisLoop(s Shape, axis int, fn func(base, stride, n int)) {
	outer := s[:axis].Size()
	n := s[axis]
	inner := s[axis+1:].Size()
	for o := range outer {
		for in := range inner {
			fn(o*n*inner+in, inner, n)
		}
	}
}

func (op *Softmax) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	switch in[0].dtype {
	case Float32:
		softmaxTyped(op.Log, op.Axis, in[0].shape, view[float32](in[0]), view[float32](out[0]))
	case Float64:
		softmaxTyped(op.Log, op.Axis, in[0].shape, view[float64](in[0]), view[float64](out[0]))
	}
	return nil
}

func softmaxTyped[T floatT](log bool, axis int, s Shape, x, y []T) {
	axisLoop(s, axis, func(base, stride, n int) {
		m := math.Inf(-1)
		for i := range n {
			m = math.Max(m, float64(x[base+i*stride]))
		}
		var sum float64
		for i := range n {
			sum += math.Exp(float64(x[base+i*stride]) - m)
		}
		for i := range n {
			v := float64(x[base+i*stride]) - m
			if log {
				y[base+i*stride] = T(v - math.Log(sum))
			} else {
				y[base+i*stride] = T(math.Exp(v) / sum)
			}
		}
	})
}

// ---------------------------------------------------------------- LayerNorm

// LayerNorm normalizes over the axes from Axis on:
// y = (x - mean)/sqrt(var + Epsilon)·scale + bias, with scale and the
// optional bias broadcast to x.shape[Axis:]. Optional outputs 1 and 2 are
// the mean and 1/sqrt(var+Epsilon), shaped x.shape[:Axis] followed by ones.
type LayerNorm struct {
	Axis    int
	Epsilon float32
}

func (op *LayerNorm) Name() string { return "LayerNorm" }

func (op *LayerNorm) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantDTypes("input", x, isFloat, "a float type"); err != nil {
		return nil, err
	}
	if op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(x.Shape))
	}
	norm := x.Shape[op.Axis:]
	for i := 1; i < len(in); i++ {
		t, ok := optional(in, i)
		if !ok {
			continue
		}
		if t.DType != x.DType {
			return nil, fmt.Errorf("input %d is %s, want %s", i, t.DType, x.DType)
		}
		if s, err := BroadcastShapes(t.Shape, norm); err != nil || !s.Equal(norm) {
			return nil, fmt.Errorf("input %d has shape %v, want one broadcastable to %v", i, t.Shape, norm)
		}
	}
	stat := x.Shape.Clone()
	for d := op.Axis; d < len(stat); d++ {
		stat[d] = 1
	}
	return []Type{x, {x.DType, stat}, {x.DType, stat}}, nil
}

func (op *LayerNorm) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x := in[0]
	norm := x.shape[op.Axis:]
	scale := Convert(in[1], Float64)
	sc := expandTo(scale, norm)
	var bias []float64
	if b := optIn(in, 2); b != nil {
		bias = expandTo(Convert(b, Float64), norm)
	}
	n := norm.Size()
	rows := x.shape[:op.Axis].Size()
	xs := Convert(x, Float64).Float64s()
	ys := make([]float64, len(xs))
	means := make([]float64, rows)
	inv := make([]float64, rows)
	for r := range rows {
		row := xs[r*n : (r+1)*n]
		var mean float64
		for _, v := range row {
			mean += v
		}
		mean /= float64(n)
		var vr float64
		for _, v := range row {
			vr += (v - mean) * (v - mean)
		}
		vr /= float64(n)
		is := 1 / math.Sqrt(vr+float64(op.Epsilon))
		means[r], inv[r] = mean, is
		for i, v := range row {
			y := (v - mean) * is * sc[i]
			if bias != nil {
				y += bias[i]
			}
			ys[r*n+i] = y
		}
	}
	storeFloats(out[0], ys)
	if len(out) > 1 && out[1] != nil {
		storeFloats(out[1], means)
	}
	if len(out) > 2 && out[2] != nil {
		storeFloats(out[2], inv)
	}
	return nil
}

// expandTo returns t (float64) broadcast to shape, as a flat slice.
func expandTo(t *Tensor, shape Shape) []float64 {
	if t.shape.Equal(shape) {
		return t.Float64s()
	}
	out, _ := EvalOp(&Expand{Shape: shape}, t.Reshaped(t.shape))
	return out[0].Float64s()
}

// storeFloats writes float64 values into a float tensor of any width.
func storeFloats(t *Tensor, v []float64) {
	switch t.dtype {
	case Float64:
		copy(view[float64](t), v)
	case Float32:
		f := view[float32](t)
		for i, x := range v {
			f[i] = float32(x)
		}
	default:
		for i, x := range v {
			storeFloat(t, i, x, true, RoundUp)
		}
	}
}

// ---------------------------------------------------------------- CumSum, CumProd

// CumSum is the running sum along Axis; Exclusive leaves out the element
// itself, Reverse runs from the end.
type CumSum struct {
	Axis      int
	Exclusive bool
	Reverse   bool
}

func (op *CumSum) Name() string { return "CumSum" }

func (op *CumSum) Infer(in []Type) ([]Type, error) { return cumulativeInfer(in, op.Axis) }

func (op *CumSum) Eval(in, out []*Tensor) error {
	return cumulativeEval(op.Name(), in, out, op.Axis, op.Exclusive, op.Reverse, false)
}

// CumProd is the running product along Axis; Exclusive leaves out the
// element itself (the first output is 1), Reverse runs from the end.
type CumProd struct {
	Axis      int
	Exclusive bool
	Reverse   bool
}

func (op *CumProd) Name() string { return "CumProd" }

func (op *CumProd) Infer(in []Type) ([]Type, error) { return cumulativeInfer(in, op.Axis) }

func (op *CumProd) Eval(in, out []*Tensor) error {
	return cumulativeEval(op.Name(), in, out, op.Axis, op.Exclusive, op.Reverse, true)
}

// gradRule: CumSum of dy run the other way.
func (op *CumSum) gradRule(d *differ, c *gradCtx) error {
	c.add(0, d.emit1(&CumSum{Axis: op.Axis, Exclusive: op.Exclusive, Reverse: !op.Reverse}, c.dy[0]))
	return nil
}

// gradRule: CumProdGrad, exact where x holds zeros.
func (op *CumProd) gradRule(d *differ, c *gradCtx) error {
	c.add(0, d.emit1(&CumProdGrad{CumProd: *op}, c.dy[0], c.in(0)))
	return nil
}

// CumProdGrad is the gradient of CumProd with respect to its input x,
// given dy: dx[j] = Σ_i dy[i]·∂y[i]/∂x[j], where ∂y[i]/∂x[j] is the
// product of the factors of y[i] other than x[j]. Along each lane, in
// CumProd's order, the product of the factors before j times
//
//	S[j] = dy[j] + x[j+1]·S[j+1]   (S[n-1] = dy[n-1]; exclusive: S[j] = dy[j+1] + x[j+1]·S[j+1], S[n-1] = 0)
//
// so no division by x is needed. Computed in float64.
type CumProdGrad struct {
	CumProd
}

func (op *CumProdGrad) Name() string { return "CumProdGrad" }

func (op *CumProdGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	if err := sameFloat(in[0], in[1]); err != nil {
		return nil, err
	}
	return cumulativeInfer(in[1:], op.Axis)
}

func (op *CumProdGrad) Eval(in, out []*Tensor) error {
	dy, x := Convert(in[0], Float64).Float64s(), Convert(in[1], Float64).Float64s()
	dx := make([]float64, len(x))
	axisLoop(in[1].shape, op.Axis, func(base, stride, n int) {
		at := func(k int) int { // position of the k-th element in CumProd's order
			if op.Reverse {
				k = n - 1 - k
			}
			return base + k*stride
		}
		var s float64 // S[k+1] while k runs back
		for k := n - 1; k >= 0; k-- {
			if op.Exclusive {
				if k == n-1 {
					s = 0
				} else {
					s = dy[at(k+1)] + x[at(k+1)]*s
				}
			} else if k == n-1 {
				s = dy[at(k)]
			} else {
				s = dy[at(k)] + x[at(k+1)]*s
			}
			dx[at(k)] = s
		}
		before := 1.0
		for k := range n {
			p := at(k)
			dx[p] *= before
			before *= x[p]
		}
	})
	storeFloats(out[0], dx)
	return nil
}

func cumulativeInfer(in []Type, axis int) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	types := func(d DType) bool {
		switch d {
		case Float32, Float64, Float16, BFloat16, Int32, Int64, Uint32, Uint64:
			return true
		}
		return false
	}
	if err := wantDTypes("input", in[0], types, "float, int32, int64, uint32 or uint64"); err != nil {
		return nil, err
	}
	if axis < 0 || axis >= len(in[0].Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", axis, len(in[0].Shape))
	}
	return []Type{in[0]}, nil
}

// cumulativeEval evaluates CumSum (prod false) or CumProd.
func cumulativeEval(name string, in, out []*Tensor, axis int, exclusive, reverse, prod bool) error {
	if done, err := widenNarrow(in, out, func(in, out []*Tensor) error {
		return cumulativeEval(name, in, out, axis, exclusive, reverse, prod)
	}); done {
		return err
	}
	s := in[0].shape
	switch in[0].dtype {
	case Float32:
		cumulate(s, axis, exclusive, reverse, prod, view[float32](in[0]), view[float32](out[0]))
	case Float64:
		cumulate(s, axis, exclusive, reverse, prod, view[float64](in[0]), view[float64](out[0]))
	case Int32:
		cumulate(s, axis, exclusive, reverse, prod, view[int32](in[0]), view[int32](out[0]))
	case Int64:
		cumulate(s, axis, exclusive, reverse, prod, view[int64](in[0]), view[int64](out[0]))
	case Uint32:
		cumulate(s, axis, exclusive, reverse, prod, view[uint32](in[0]), view[uint32](out[0]))
	case Uint64:
		cumulate(s, axis, exclusive, reverse, prod, view[uint64](in[0]), view[uint64](out[0]))
	default:
		return fmt.Errorf("%s on %s is not supported", name, in[0].dtype)
	}
	return nil
}

// cumulate writes into y the running sum (or product) of x along axis.
func cumulate[T number](s Shape, axis int, exclusive, reverse, prod bool, x, y []T) {
	axisLoop(s, axis, func(base, stride, n int) {
		var acc T
		if prod {
			acc = 1
		}
		for k := range n {
			i := k
			if reverse {
				i = n - 1 - k
			}
			p := base + i*stride
			if exclusive {
				y[p] = acc
			}
			if prod {
				acc *= x[p]
			} else {
				acc += x[p]
			}
			if !exclusive {
				y[p] = acc
			}
		}
	})
}

// ---------------------------------------------------------------- ArgMax, ArgMin

// ArgReduce is ArgMax (Fn ReduceMax) or ArgMin (ReduceMin): the int64
// index of the largest (smallest) element along Axis, the first one among
// equals or, with SelectLast, the last. NaN compares false with
// everything, so it is never picked after the first element (as
// onnxruntime). KeepDims keeps the axis with size 1.
type ArgReduce struct {
	Fn         ReduceFn
	Axis       int
	KeepDims   bool
	SelectLast bool
}

func (op *ArgReduce) Name() string {
	if op.Fn == ReduceMin {
		return "ArgMin"
	}
	return "ArgMax"
}

func (op *ArgReduce) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantDTypes("input", x, isComputable, "a number type"); err != nil {
		return nil, err
	}
	if op.Fn != ReduceMax && op.Fn != ReduceMin {
		return nil, fmt.Errorf("%s is not ReduceMax or ReduceMin", op.Fn)
	}
	if op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(x.Shape))
	}
	if x.Shape[op.Axis] == 0 {
		return nil, fmt.Errorf("axis %d of %v is empty: no element to pick", op.Axis, x.Shape)
	}
	return []Type{{Int64, reducedShape(x.Shape, []int{op.Axis}, op.KeepDims)}}, nil
}

func (op *ArgReduce) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, y := in[0], view[int64](out[0])
	switch x.dtype {
	case Float32:
		argTyped(op, x.shape, view[float32](x), y)
	case Float64:
		argTyped(op, x.shape, view[float64](x), y)
	case Int8:
		argTyped(op, x.shape, view[int8](x), y)
	case Int16:
		argTyped(op, x.shape, view[int16](x), y)
	case Int32:
		argTyped(op, x.shape, view[int32](x), y)
	case Int64:
		argTyped(op, x.shape, view[int64](x), y)
	case Uint8:
		argTyped(op, x.shape, view[uint8](x), y)
	case Uint16:
		argTyped(op, x.shape, view[uint16](x), y)
	case Uint32:
		argTyped(op, x.shape, view[uint32](x), y)
	case Uint64:
		argTyped(op, x.shape, view[uint64](x), y)
	default:
		return fmt.Errorf("%s on %s is not supported", op.Name(), x.dtype)
	}
	return nil
}

func argTyped[T number](op *ArgReduce, s Shape, x []T, y []int64) {
	inner := s[op.Axis+1:].Size()
	axisLoop(s, op.Axis, func(base, stride, n int) {
		best := 0
		bv := x[base]
		for i := 1; i < n; i++ {
			v := x[base+i*stride]
			better, tie := v < bv, v == bv
			if op.Fn == ReduceMax {
				better = v > bv
			}
			if better || (tie && op.SelectLast) {
				best, bv = i, v
			}
		}
		// The output lane sits at the same outer/inner position.
		y[base/(n*inner)*inner+base%inner] = int64(best)
	})
}

// ---------------------------------------------------------------- TopK

// TopK returns the K largest (or smallest) elements along Axis, sorted,
// and their int64 indices; ties go to the lower index.
type TopK struct {
	Axis    int
	K       int
	Largest bool
}

func (op *TopK) Name() string { return "TopK" }

func (op *TopK) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantDTypes("input", x, isComputable, "a number type"); err != nil {
		return nil, err
	}
	if op.Axis < 0 || op.Axis >= len(x.Shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, len(x.Shape))
	}
	if op.K < 0 || op.K > x.Shape[op.Axis] {
		return nil, fmt.Errorf("k = %d, want 0..%d", op.K, x.Shape[op.Axis])
	}
	s := x.Shape.Clone()
	s[op.Axis] = op.K
	return []Type{{x.DType, s}, {Int64, s}}, nil
}

// gradRule: the values' gradient goes to the positions they were taken
// from (the indices output, as GatherElements' gradient does); the
// indices have none.
func (op *TopK) gradRule(d *differ, c *gradCtx) error {
	if !c.needs(0) || c.dy[0] == nil {
		return nil
	}
	x := c.in(0)
	c.add(0, d.emit1(&ScatterElements{Axis: op.Axis, Reduction: ScatterAdd}, d.zeros(x.DType, x.Shape), c.out(1), c.dy[0]))
	return nil
}

func (op *TopK) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x := in[0]
	inner := x.shape[op.Axis+1:].Size()
	n := x.shape[op.Axis]
	// A lane is compared as float64, but 64-bit integers as themselves:
	// float64 would tie those above 2⁵³ apart.
	lane := make([]float64, n)
	var ints []int64
	var uints []uint64
	switch x.dtype {
	case Int64:
		ints = make([]int64, n)
	case Uint64:
		uints = make([]uint64, n)
	}
	order := make([]int, 0, n)
	var indices []int64
	if out[1] != nil {
		indices = out[1].Int64s()
	}
	// before orders a lane's positions: the larger (or smaller) value
	// first, a NaN above every number (as PyTorch's topk), ties to the
	// lower index — a total order, so the selection is the same however
	// it is made.
	before := func(a, b int) bool {
		switch {
		case ints != nil && ints[a] != ints[b]:
			return (ints[a] > ints[b]) == op.Largest
		case uints != nil && uints[a] != uints[b]:
			return (uints[a] > uints[b]) == op.Largest
		case ints != nil || uints != nil:
			return a < b
		}
		va, vb := lane[a], lane[b]
		if va != vb {
			an, bn := math.IsNaN(va), math.IsNaN(vb)
			if an || bn {
				if an && bn {
					return a < b
				}
				return an == op.Largest
			}
			return (va > vb) == op.Largest
		}
		return a < b
	}
	axisLoop(x.shape, op.Axis, func(base, stride, n int) {
		if n == 0 || op.K == 0 {
			return
		}
		switch {
		case ints != nil:
			xs := x.Int64s()
			for i := range ints {
				ints[i] = xs[base+i*stride]
			}
		case uints != nil:
			xs := x.Uint64s()
			for i := range uints {
				uints[i] = xs[base+i*stride]
			}
		default:
			for i := range lane {
				lane[i] = x.Float64At(base + i*stride)
			}
		}
		order = selectTop(order[:0], n, op.K, before)
		// The output lane starts at the same outer/inner position with
		// the axis shortened to K.
		o, in := base/(n*inner), base%inner
		obase := o*op.K*inner + in
		for k, src := range order {
			p := obase + k*inner
			if out[0] != nil {
				es := x.dtype.Size()
				copy(out[0].data[p*es:(p+1)*es], x.data[(base+src*stride)*es:(base+src*stride+1)*es])
			}
			if indices != nil {
				indices[p] = int64(src)
			}
		}
	})
	return nil
}

// selectTop appends to dst the k first of positions 0…n−1 in the order
// before gives, sorted: through a heap of k when k is small against n
// (O(n log k)), else by sorting them all.
func selectTop(dst []int, n, k int, before func(a, b int) bool) []int {
	if 4*k >= n {
		for i := range n {
			dst = append(dst, i)
		}
		sort.Slice(dst, func(a, b int) bool { return before(dst[a], dst[b]) })
		return dst[:k]
	}
	// A heap whose root is the last of the k kept: a position before it
	// replaces it.
	h := dst
	after := func(a, b int) bool { return before(h[b], h[a]) }
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= len(h) {
				return
			}
			if c+1 < len(h) && after(c+1, c) {
				c++
			}
			if !after(c, i) {
				return
			}
			h[i], h[c] = h[c], h[i]
			i = c
		}
	}
	for i := range n {
		switch {
		case len(h) < k:
			h = append(h, i)
			for c := len(h) - 1; c > 0 && after(c, (c-1)/2); c = (c - 1) / 2 {
				h[c], h[(c-1)/2] = h[(c-1)/2], h[c]
			}
		case before(i, h[0]):
			h[0] = i
			down(0)
		}
	}
	sort.Slice(h, func(a, b int) bool { return before(h[a], h[b]) })
	return h
}
