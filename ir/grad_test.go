package ir

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// gradCase is one finite-difference check: build makes a float64 graph
// from parameters (created through the helper) and returns the values
// whose weighted sum is the scalar being differentiated.
type gradCase struct {
	name  string
	build func(h *caseBuilder) []*Value
	step  float64 // central-difference step (default 1e-5)
	tol   float64 // relative tolerance (default 1e-6)
}

// caseBuilder hands out parameters and constants with random values.
type caseBuilder struct {
	*Builder
	rng *rand.Rand
	n   int
}

// param adds a float64 parameter with values uniform in [lo, hi).
func (h *caseBuilder) param(shape Shape, lo, hi float64) *Value {
	t := NewTensor(Float64, shape)
	for i := range t.Float64s() {
		t.Float64s()[i] = lo + (hi-lo)*h.rng.Float64()
	}
	h.n++
	return h.Param(fmt.Sprintf("p%d", h.n), t)
}

// awayFrom is param with every value at least gap away from the points
// (kinks of Relu, Abs, ...), so central differences do not straddle them.
func (h *caseBuilder) awayFrom(shape Shape, lo, hi, gap float64, points ...float64) *Value {
	v := h.param(shape, lo, hi)
	xs := v.Param.Tensor.Float64s()
	for i := range xs {
		for _, p := range points {
			if math.Abs(xs[i]-p) < gap {
				xs[i] = p + gap*math.Copysign(2, xs[i]-p+1e-300)
			}
		}
	}
	return v
}

// withZeros sets the elements at flat indices idx of parameter v to 0.
func (h *caseBuilder) withZeros(v *Value, idx ...int) *Value {
	for _, i := range idx {
		v.Param.Tensor.Float64s()[i] = 0
	}
	return v
}

func (h *caseBuilder) constant(t *Tensor) *Value { return h.Const(t) }

func (h *caseBuilder) op(op Op, in ...*Value) *Value { return h.Op1(op, in...) }

// runGradCase builds the case and checks the gradients of the weighted
// sum of its values with respect to every parameter against central
// differences (checkGradOfLoss).
func runGradCase(t *testing.T, c gradCase) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, uint64(len(c.name))))
	h := &caseBuilder{Builder: NewBuilder(c.name), rng: rng}
	h.Output("L", weightedSum(h.Builder, rng, c.build(h), nil))
	g, err := h.Graph()
	if err != nil {
		t.Fatal(err)
	}
	step, tol := c.step, c.tol
	if step == 0 {
		step = 1e-5
	}
	if tol == 0 {
		tol = 1e-6
	}
	checkGradOfLoss(t, g, nil, step, tol)
}

func TestGradFiniteDifferences(t *testing.T) {
	for _, c := range gradCases() {
		t.Run(c.name, func(t *testing.T) { runGradCase(t, c) })
	}
}

// binaryShapes are operand shape pairs covering broadcasting: equal,
// trailing vector, size-1 axes on both sides, scalars.
var binaryShapes = [][2]Shape{
	{{2, 3}, {2, 3}},
	{{3, 1, 4}, {4}},
	{{3, 1, 4}, {2, 1}},
	{{}, {2, 3}},
	{{2, 3}, {}},
	{{1, 3}, {2, 1}},
}

func gradCases() []gradCase {
	var cases []gradCase
	for _, fn := range []BinaryFn{Add, Sub, Mul, Div, Max, Min} {
		for _, s := range binaryShapes {
			cases = append(cases, gradCase{name: fmt.Sprintf("%s/%v%v", fn, s[0], s[1]), build: func(h *caseBuilder) []*Value {
				a := h.param(s[0], -2, 2)
				var b *Value
				switch fn {
				case Div:
					b = h.param(s[1], 0.5, 2)
				case Max, Min:
					b = h.param(s[1], 2.5, 4) // no ties with a
					if len(s[1]) == 0 || s[1].Size() > 1 {
						// Interleave: half the b values below a's range.
						xs := b.Param.Tensor.Float64s()
						for i := range xs {
							if i%2 == 1 {
								xs[i] = -xs[i]
							}
						}
					}
				default:
					b = h.param(s[1], -2, 2)
				}
				return []*Value{h.op(&Binary{Fn: fn}, a, b)}
			}})
		}
	}
	for _, s := range binaryShapes {
		cases = append(cases, gradCase{name: fmt.Sprintf("Pow/%v%v", s[0], s[1]), build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Binary{Fn: Pow}, h.param(s[0], 0.5, 2), h.param(s[1], -1.5, 2))}
		}})
	}
	for _, e := range []float64{0, 1, 2, 3, 0.5, -1} {
		cases = append(cases, gradCase{name: fmt.Sprintf("Pow/const%g", e), build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Binary{Fn: Pow}, h.param(Shape{2, 3}, 0.5, 2), h.constant(FromFloat64s(Shape{}, []float64{e})))}
		}})
	}
	cases = append(cases, gradCase{name: "Pow/int-exponent", build: func(h *caseBuilder) []*Value {
		return []*Value{h.op(&Binary{Fn: Pow}, h.param(Shape{2, 3}, -2, 2), h.constant(FromInt64s(Shape{3}, []int64{2, 3, 1})))}
	}})
	cases = append(cases, gradCase{name: "Mul/same-operand", build: func(h *caseBuilder) []*Value {
		x := h.param(Shape{2, 3}, -2, 2)
		return []*Value{h.op(&Binary{Fn: Mul}, x, x)}
	}})

	type unaryDomain struct {
		fn     UnaryFn
		lo, hi float64
		kinks  []float64
		alpha  float32
	}
	for _, u := range []unaryDomain{
		{fn: Neg, lo: -2, hi: 2},
		{fn: Abs, lo: -2, hi: 2, kinks: []float64{0}},
		{fn: Sqrt, lo: 0.2, hi: 3},
		{fn: Exp, lo: -2, hi: 2},
		{fn: Log, lo: 0.2, hi: 3},
		{fn: Tanh, lo: -3, hi: 3},
		{fn: Sigmoid, lo: -4, hi: 4},
		{fn: Relu, lo: -2, hi: 2, kinks: []float64{0}},
		{fn: Erf, lo: -2, hi: 2},
		{fn: Reciprocal, lo: 0.3, hi: 3},
		{fn: LeakyRelu, lo: -2, hi: 2, kinks: []float64{0}, alpha: 0.1},
		{fn: Elu, lo: -2, hi: 2, kinks: []float64{0}, alpha: 0.7},
		{fn: Gelu, lo: -3, hi: 3},
		{fn: GeluTanh, lo: -3, hi: 3},
		{fn: Softplus, lo: -4, hi: 4},
		{fn: Floor, lo: -2, hi: 2, kinks: []float64{-2, -1, 0, 1, 2}},
	} {
		cases = append(cases, gradCase{name: "Unary/" + u.fn.String(), build: func(h *caseBuilder) []*Value {
			x := h.awayFrom(Shape{3, 4}, u.lo, u.hi, 1e-3, u.kinks...)
			// A second, differentiable use keeps the parameter on the
			// path when the function's own gradient is zero (Floor).
			return []*Value{h.op(&Unary{Fn: u.fn, Alpha: u.alpha}, x), x}
		}})
	}

	cases = append(cases,
		gradCase{name: "Where/broadcast", build: func(h *caseBuilder) []*Value {
			cond := FromBools(Shape{2, 1, 3}, []bool{true, false, true, false, false, true})
			return []*Value{h.op(&Where{}, h.constant(cond), h.param(Shape{4, 3}, -1, 1), h.param(Shape{2, 1, 1}, -1, 1))}
		}},
		gradCase{name: "Cast/f32-roundtrip", step: 1e-2, tol: 1e-5, build: func(h *caseBuilder) []*Value {
			x := h.param(Shape{2, 3}, -1, 1)
			return []*Value{h.op(&Cast{To: Float64}, h.op(&Cast{To: Float32}, x))}
		}},
		gradCase{name: "Cast/to-int-pruned", build: func(h *caseBuilder) []*Value {
			x := h.param(Shape{2, 3}, 0.5, 3)
			// The integer path carries no gradient; x*2 does.
			i := h.op(&Cast{To: Int64}, x)
			return []*Value{h.op(&Cast{To: Float64}, i), h.op(&Binary{Fn: Mul}, x, h.constant(FromFloat64s(Shape{}, []float64{2})))}
		}},
		gradCase{name: "Copy", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Copy{}, h.param(Shape{2, 3}, -1, 1))}
		}},
		gradCase{name: "Reshape", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Reshape{Shape: Shape{3, 1, 2}}, h.param(Shape{2, 3}, -1, 1))}
		}},
		gradCase{name: "Transpose", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Transpose{Perm: []int{2, 0, 1}}, h.param(Shape{2, 3, 4}, -1, 1))}
		}},
		gradCase{name: "Transpose/twice", build: func(h *caseBuilder) []*Value {
			x := h.param(Shape{2, 3, 4}, -1, 1)
			return []*Value{h.op(&Transpose{Perm: []int{1, 2, 0}}, h.op(&Transpose{Perm: []int{2, 0, 1}}, x))}
		}},
		gradCase{name: "Expand", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Expand{Shape: Shape{2, 3, 4}}, h.param(Shape{3, 1}, -1, 1))}
		}},
		gradCase{name: "Concat", build: func(h *caseBuilder) []*Value {
			c := FromFloat64s(Shape{2, 1}, []float64{1, 2})
			return []*Value{h.op(&Concat{Axis: 1}, h.param(Shape{2, 3}, -1, 1), h.constant(c), h.param(Shape{2, 2}, -1, 1))}
		}},
		gradCase{name: "Split/one-unused", build: func(h *caseBuilder) []*Value {
			outs := h.Op(&Split{Axis: 1, Sizes: []int{1, 2, 2}}, h.param(Shape{2, 5}, -1, 1))
			return []*Value{outs[0], outs[2]}
		}},
		gradCase{name: "Slice/steps", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Slice{Starts: []int{1, 4}, Steps: []int{2, -2}, Sizes: []int{2, 3}}, h.param(Shape{5, 6}, -1, 1))}
		}},
		gradCase{name: "Slice/tiled", build: func(h *caseBuilder) []*Value {
			// The q/k/v slices of a packed projection: they tile the axis.
			x := h.param(Shape{2, 3, 6}, -1, 1)
			var ys []*Value
			for s := range 3 {
				ys = append(ys, h.op(&Slice{Starts: []int{0, 0, 2 * s}, Steps: []int{1, 1, 1}, Sizes: []int{2, 3, 2}}, x))
			}
			return ys
		}},
		gradCase{name: "Slice/overlapping-and-dense", build: func(h *caseBuilder) []*Value {
			x := h.param(Shape{4, 3}, -1, 1)
			a := h.op(&Slice{Starts: []int{0, 0}, Steps: []int{1, 1}, Sizes: []int{3, 3}}, x)
			b := h.op(&Slice{Starts: []int{1, 1}, Steps: []int{1, 1}, Sizes: []int{3, 2}}, x)
			return []*Value{a, b, h.op(&Unary{Fn: Tanh}, x)}
		}},
		gradCase{name: "Gather/rows-repeated-negative", build: func(h *caseBuilder) []*Value {
			idx := FromInt64s(Shape{2, 3}, []int64{0, 4, 0, -1, 2, 2})
			return []*Value{h.op(&Gather{Axis: 0}, h.param(Shape{5, 3}, -1, 1), h.constant(idx))}
		}},
		gradCase{name: "Gather/axis1-int32", build: func(h *caseBuilder) []*Value {
			idx := FromInt32s(Shape{3}, []int32{2, 0, 2})
			return []*Value{h.op(&Gather{Axis: 1}, h.param(Shape{2, 4, 3}, -1, 1), h.constant(idx))}
		}},
		gradCase{name: "Gather/scalar-index", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Gather{Axis: 1}, h.param(Shape{2, 4}, -1, 1), h.constant(ScalarInt64(3)))}
		}},
		gradCase{name: "Gather/tied-with-head", build: func(h *caseBuilder) []*Value {
			// GPT's tied embedding: rows gathered, and the same matrix
			// transposed as the LM head.
			wte := h.param(Shape{6, 4}, -1, 1)
			idx := FromInt64s(Shape{2, 3}, []int64{1, 5, 1, 0, 3, 3})
			emb := h.op(&Gather{Axis: 0}, wte, h.constant(idx))
			head := h.op(&Transpose{Perm: []int{1, 0}}, wte)
			return []*Value{h.op(&MatMul{}, h.op(&Unary{Fn: Tanh}, emb), head)}
		}},
	)
	for _, s := range [][2]Shape{
		{{3, 4}, {4, 5}},
		{{2, 3, 4}, {4, 5}},
		{{2, 3, 4}, {2, 4, 5}},
		{{2, 1, 3, 4}, {5, 4, 2}},
		{{3, 4}, {2, 4, 5}},
		{{2, 3, 4}, {1, 4, 5}},
		{{4}, {4, 5}},
		{{3, 4}, {4}},
		{{4}, {4}},
		{{4}, {2, 4, 5}},
	} {
		cases = append(cases, gradCase{name: fmt.Sprintf("MatMul/%v%v", s[0], s[1]), build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&MatMul{}, h.param(s[0], -1, 1), h.param(s[1], -1, 1))}
		}})
	}
	cases = append(cases,
		gradCase{name: "MatMul/transposed-weight", build: func(h *caseBuilder) []*Value {
			w := h.param(Shape{5, 4}, -1, 1) // [out, in] as nn.Linear
			return []*Value{h.op(&MatMul{}, h.param(Shape{2, 3, 4}, -1, 1), h.op(&Transpose{Perm: []int{1, 0}}, w))}
		}},
		gradCase{name: "MatMul/attention", build: func(h *caseBuilder) []*Value {
			q := h.param(Shape{2, 3, 4}, -1, 1)
			k := h.param(Shape{2, 3, 4}, -1, 1)
			v := h.param(Shape{2, 3, 4}, -1, 1)
			s := h.op(&MatMul{}, q, h.op(&Transpose{Perm: []int{0, 2, 1}}, k))
			p := h.op(&Softmax{Axis: 2}, s)
			return []*Value{h.op(&MatMul{}, p, v)}
		}},
	)
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			for _, cs := range []Shape{nil, {5}, {1, 5}, {3, 1}, {}, {3, 5}} {
				cases = append(cases, gradCase{name: fmt.Sprintf("Gemm/ta=%v/tb=%v/c=%v", ta, tb, cs), build: func(h *caseBuilder) []*Value {
					as, bs := Shape{3, 4}, Shape{4, 5}
					if ta {
						as = Shape{4, 3}
					}
					if tb {
						bs = Shape{5, 4}
					}
					in := []*Value{h.param(as, -1, 1), h.param(bs, -1, 1)}
					if cs != nil {
						in = append(in, h.param(cs, -1, 1))
					}
					return []*Value{h.op(&Gemm{TransA: ta, TransB: tb, Alpha: 0.7, Beta: 1.3}, in...)}
				}})
			}
		}
	}
	for _, log := range []bool{false, true} {
		for _, axis := range []int{0, 1, 2} {
			cases = append(cases, gradCase{name: fmt.Sprintf("Softmax/log=%v/axis=%d", log, axis), build: func(h *caseBuilder) []*Value {
				return []*Value{h.op(&Softmax{Axis: axis, Log: log}, h.param(Shape{2, 3, 4}, -2, 2))}
			}})
		}
	}
	for _, ln := range []struct {
		axis        int
		scale, bias Shape
	}{
		{2, Shape{4}, Shape{4}},
		{2, Shape{4}, nil},
		{1, Shape{3, 4}, Shape{4}},
		{1, Shape{1, 4}, Shape{3, 1}},
	} {
		cases = append(cases, gradCase{name: fmt.Sprintf("LayerNorm/axis=%d/scale%v/bias%v", ln.axis, ln.scale, ln.bias), build: func(h *caseBuilder) []*Value {
			in := []*Value{h.param(Shape{2, 3, 4}, -2, 2), h.param(ln.scale, 0.5, 1.5)}
			if ln.bias != nil {
				in = append(in, h.param(ln.bias, -1, 1))
			}
			return []*Value{h.op(&LayerNorm{Axis: ln.axis, Epsilon: 1e-5}, in...)}
		}})
	}
	for _, fn := range []ReduceFn{ReduceSum, ReduceMean} {
		for _, r := range []struct {
			axes []int
			keep bool
		}{{[]int{0}, false}, {[]int{1}, true}, {[]int{0, 2}, false}, {[]int{0, 1, 2}, true}} {
			cases = append(cases, gradCase{name: fmt.Sprintf("%s/axes%v/keep=%v", fn, r.axes, r.keep), build: func(h *caseBuilder) []*Value {
				return []*Value{h.op(&Reduce{Fn: fn, Axes: r.axes, KeepDims: r.keep}, h.param(Shape{2, 3, 4}, -1, 1))}
			}})
		}
	}
	for _, r := range []struct {
		axes  []int
		keep  bool
		zeros []int
	}{{[]int{1}, true, nil}, {[]int{0, 2}, false, []int{5}}, {[]int{2}, false, []int{0, 4, 5}}, {[]int{0, 1, 2}, false, []int{7}}, {[]int{1, 2}, true, []int{12, 13}}} {
		cases = append(cases, gradCase{name: fmt.Sprintf("ReduceProd/axes%v/keep=%v/zeros%v", r.axes, r.keep, r.zeros), build: func(h *caseBuilder) []*Value {
			x := h.withZeros(h.param(Shape{2, 3, 4}, 0.5, 1.5), r.zeros...)
			return []*Value{h.op(&Reduce{Fn: ReduceProd, Axes: r.axes, KeepDims: r.keep}, x)}
		}})
	}
	for _, e := range []struct {
		eq     string
		shapes []Shape
	}{
		{"ij,jk->ik", []Shape{{3, 4}, {4, 2}}},
		{"ij,jk", []Shape{{3, 4}, {4, 2}}},
		{"bhqd,bhkd->bhqk", []Shape{{2, 2, 3, 4}, {2, 2, 5, 4}}},
		{"bhqk,bhkd->bhqd", []Shape{{1, 2, 3, 5}, {1, 2, 5, 4}}},
		{"...i,oi->...o", []Shape{{2, 3, 4}, {5, 4}}},
		{"bij,bjk->bik", []Shape{{2, 3, 4}, {1, 4, 2}}},
		{"ij,ij->ij", []Shape{{3, 4}, {1, 4}}},
		{"i,i->", []Shape{{5}, {5}}},
		{"i,j->ij", []Shape{{3}, {4}}},
		{"ij->ji", []Shape{{3, 4}}},
		{"ij->", []Shape{{3, 4}}},
		{"ij->i", []Shape{{3, 4}}},
		{"ij,jk,kl->il", []Shape{{2, 3}, {3, 4}, {4, 2}}},
		{"ii->i", []Shape{{4, 4}}},
		{"ii->", []Shape{{4, 4}}},
		{"iij,jk->ik", []Shape{{3, 3, 2}, {2, 4}}},
		{"bii,bi->bi", []Shape{{2, 3, 3}, {2, 3}}},
	} {
		cases = append(cases, gradCase{name: "Einsum/" + e.eq, build: func(h *caseBuilder) []*Value {
			ranks := make([]int, len(e.shapes))
			in := make([]*Value, len(e.shapes))
			for i, s := range e.shapes {
				ranks[i], in[i] = len(s), h.param(s, -1, 1)
			}
			op, err := ParseEinsum(e.eq, ranks)
			if err != nil {
				panic(err)
			}
			return []*Value{h.op(op, in...)}
		}})
	}
	cases = append(cases, gradCase{name: "Einsum/operand-twice", build: func(h *caseBuilder) []*Value {
		x := h.param(Shape{3, 4}, -1, 1)
		return []*Value{h.op(&Einsum{Equation: "ij,kj->ik", Inputs: []string{"ij", "kj"}, Output: "ik"}, x, x)}
	}})
	for _, l := range []struct {
		name      string
		softmax   bool
		red       Reduction
		x         Shape
		target    []int64
		weight    bool
		ignore    int
		hasIgnore bool
	}{
		{"NegativeLogLikelihoodLoss/none/weight/ignore-in-range", false, ReductionNone, Shape{2, 3, 2}, []int64{0, 1, 2, 1}, true, 1, true},
		{"NegativeLogLikelihoodLoss/mean/weight/ignore", false, ReductionMean, Shape{3, 4}, []int64{3, -100, 0}, true, -100, true},
		{"NegativeLogLikelihoodLoss/sum", false, ReductionSum, Shape{2, 3, 2}, []int64{2, 0, 1, 1}, false, 0, false},
		{"NegativeLogLikelihoodLoss/mean", false, ReductionMean, Shape{2, 3}, []int64{2, 0}, false, 0, false},
		{"SoftmaxCrossEntropyLoss/mean/weight/ignore", true, ReductionMean, Shape{2, 4, 3}, []int64{3, 0, -1, 1, 3, 2}, true, -1, true},
		{"SoftmaxCrossEntropyLoss/none", true, ReductionNone, Shape{3, 5}, []int64{4, 0, 2}, false, 0, false},
		{"SoftmaxCrossEntropyLoss/sum/ignore-in-range", true, ReductionSum, Shape{2, 3, 2}, []int64{0, 2, 2, 1}, false, 2, true},
	} {
		cases = append(cases, gradCase{name: l.name, build: func(h *caseBuilder) []*Value {
			tshape := append(Shape{l.x[0]}, l.x[2:]...)
			in := []*Value{h.param(l.x, -2, 0.5), h.constant(FromInt64s(tshape, l.target))}
			if l.weight {
				in = append(in, h.param(Shape{l.x[1]}, 0.5, 1.5))
			}
			outs := h.Op(&NLLLoss{Softmax: l.softmax, Reduction: l.red, IgnoreIndex: l.ignore, HasIgnore: l.hasIgnore}, in...)
			if l.softmax {
				return outs // the loss and the log-probabilities
			}
			return outs[:1]
		}})
	}
	cases = append(cases,
		gradCase{name: "Conv/2d-stride-pad-dilation-bias", build: func(h *caseBuilder) []*Value {
			op := &Conv{Strides: []int{2, 1}, Pads: []int{1, 0, 0, 1}, Dilations: []int{1, 2}, Group: 1}
			return []*Value{h.op(op, h.param(Shape{2, 3, 5, 6}, -1, 1), h.param(Shape{4, 3, 2, 3}, -1, 1), h.param(Shape{4}, -1, 1))}
		}},
		gradCase{name: "Conv/1d-groups", build: func(h *caseBuilder) []*Value {
			op := &Conv{Strides: []int{1}, Pads: []int{1, 1}, Dilations: []int{1}, Group: 2}
			return []*Value{h.op(op, h.param(Shape{1, 4, 7}, -1, 1), h.param(Shape{6, 2, 3}, -1, 1))}
		}},
		gradCase{name: "MaxPool/2d-pad", build: func(h *caseBuilder) []*Value {
			op := &Pool{Max: true, Kernel: []int{2, 3}, Strides: []int{2, 2}, Pads: []int{1, 1, 0, 1}, Dilations: []int{1, 1}}
			return []*Value{h.op(op, h.param(Shape{2, 2, 5, 6}, -1, 1))}
		}},
		gradCase{name: "AveragePool/2d", build: func(h *caseBuilder) []*Value {
			op := &Pool{Kernel: []int{3, 2}, Strides: []int{1, 2}, Pads: []int{1, 0, 1, 1}, Dilations: []int{1, 1}}
			return []*Value{h.op(op, h.param(Shape{2, 2, 5, 6}, -1, 1))}
		}},
		gradCase{name: "AveragePool/count-include-pad-ceil", build: func(h *caseBuilder) []*Value {
			op := &Pool{Kernel: []int{3}, Strides: []int{2}, Pads: []int{1, 1}, Dilations: []int{1}, CountIncludePad: true, CeilMode: true}
			return []*Value{h.op(op, h.param(Shape{2, 3, 8}, -1, 1))}
		}},
		gradCase{name: "Dropout", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Dropout{Ratio: 0.4, Seed: 7}, h.param(Shape{4, 5}, -1, 1))}
		}},
		gradCase{name: "CumSum/reverse-exclusive", build: func(h *caseBuilder) []*Value {
			x := h.param(Shape{3, 4}, -1, 1)
			return []*Value{h.op(&CumSum{Axis: 1}, x), h.op(&CumSum{Axis: 0, Exclusive: true, Reverse: true}, x)}
		}},
		gradCase{name: "Trilu", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Trilu{Upper: true, K: 1}, h.param(Shape{2, 4, 4}, -1, 1))}
		}},
		gradCase{name: "Clip", build: func(h *caseBuilder) []*Value {
			x := h.awayFrom(Shape{3, 5}, -2, 2, 1e-3, -0.5, 0.7)
			lo, hi := FromFloat64s(Shape{}, []float64{-0.5}), FromFloat64s(Shape{}, []float64{0.7})
			return []*Value{h.op(&Clip{}, x, h.constant(lo), h.constant(hi)), h.op(&Clip{}, x, nil, h.constant(hi))}
		}},
		gradCase{name: "SoftmaxCELoss/ignore", build: func(h *caseBuilder) []*Value {
			t := FromInt64s(Shape{2, 3}, []int64{1, -100, 4, 0, 2, -100})
			return []*Value{h.op(&SoftmaxCELoss{IgnoreIndex: -100}, h.param(Shape{2, 3, 5}, -3, 3), h.constant(t))}
		}},
		gradCase{name: "SoftmaxCELoss/denominator", build: func(h *caseBuilder) []*Value {
			t := FromInt64s(Shape{2, 3}, []int64{1, -100, 4, 0, 2, -100})
			return []*Value{h.op(&SoftmaxCELoss{IgnoreIndex: -100}, h.param(Shape{2, 3, 5}, -3, 3), h.constant(t), h.constant(ScalarFloat32(7)))}
		}},
		gradCase{name: "BCELoss", build: func(h *caseBuilder) []*Value {
			t := FromFloat64s(Shape{2, 3}, []float64{1, 0, 0.3, 1, 0, 0.5})
			return []*Value{h.op(&BCELoss{}, h.param(Shape{2, 3}, 0.05, 0.95), h.constant(t))}
		}},
		gradCase{name: "CumProd/zeros", build: func(h *caseBuilder) []*Value {
			x := h.withZeros(h.param(Shape{3, 5}, -1.5, 1.5), 2, 7, 8)
			return []*Value{h.op(&CumProd{Axis: 1}, x), h.op(&CumProd{Axis: 0, Exclusive: true, Reverse: true}, x),
				h.op(&CumProd{Axis: 1, Exclusive: true}, x), h.op(&CumProd{Axis: 1, Reverse: true}, x)}
		}},
		gradCase{name: "BatchNorm/inference", build: func(h *caseBuilder) []*Value {
			in := []*Value{h.param(Shape{2, 3, 2, 2}, -2, 2), h.param(Shape{3}, 0.5, 1.5), h.param(Shape{3}, -1, 1),
				h.param(Shape{3}, -0.5, 0.5), h.param(Shape{3}, 0.5, 2)}
			return []*Value{h.Op(&BatchNorm{Epsilon: 1e-5}, in...)[0]}
		}},
		gradCase{name: "BatchNorm/training", build: func(h *caseBuilder) []*Value {
			in := []*Value{h.param(Shape{3, 2, 4}, -2, 2), h.param(Shape{2}, 0.5, 1.5), h.param(Shape{2}, -1, 1)}
			running := []*Value{h.constant(FromFloat64s(Shape{2}, []float64{0.1, -0.2})), h.constant(FromFloat64s(Shape{2}, []float64{1, 2}))}
			return []*Value{h.Op(&BatchNorm{Epsilon: 1e-3, Momentum: 0.9, Training: true}, append(in, running...)...)[0]}
		}},
		gradCase{name: "BatchNorm/training-running-statistics", build: func(h *caseBuilder) []*Value {
			in := []*Value{h.param(Shape{2, 3, 3}, -2, 2), h.param(Shape{3}, 0.5, 1.5), h.param(Shape{3}, -1, 1),
				h.param(Shape{3}, -0.5, 0.5), h.param(Shape{3}, 0.5, 2)}
			return h.Op(&BatchNorm{Epsilon: 1e-5, Momentum: 0.8, Training: true}, in...)
		}},
		gradCase{name: "chain/residual-layernorm-gelu", build: func(h *caseBuilder) []*Value {
			// A residual block: every value is used twice.
			x := h.param(Shape{2, 3, 4}, -1, 1)
			ln := h.op(&LayerNorm{Axis: 2, Epsilon: 1e-5}, x, h.param(Shape{4}, 0.5, 1.5), h.param(Shape{4}, -0.5, 0.5))
			w := h.param(Shape{4, 4}, -1, 1)
			f := h.op(&Unary{Fn: Gelu}, h.op(&MatMul{}, ln, w))
			return []*Value{h.op(&Binary{Fn: Add}, x, f)}
		}},
	)
	return cases
}

// TestGradPrunesIntegerPaths checks that masks and indices are not
// differentiated and that a parameter without a path gets zeros.
func TestGradPrunesIntegerPaths(t *testing.T) {
	b := NewBuilder("prune")
	x := b.Param("x", FromFloat64s(Shape{2, 2}, []float64{1, -2, 3, -4}))
	unused := b.Param("unused", FromFloat64s(Shape{3}, []float64{1, 2, 3}))
	_ = unused
	mask := b.Op1(&Binary{Fn: Greater}, x, b.Const(FromFloat64s(Shape{}, []float64{0})))
	y := b.Op1(&Where{}, mask, x, b.Const(FromFloat64s(Shape{}, []float64{0})))
	s := b.Op1(&Reduce{Fn: ReduceSum, Axes: []int{0, 1}}, y)
	b.Output("s", s)
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	gg, err := Grad(g, "s", []*Param{g.Param("x"), g.Param("unused")})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range gg.Nodes {
		if bin, ok := n.Op.(*Binary); ok && bin.Fn == Greater && strings.HasPrefix(n.Origin, "gradient") {
			t.Errorf("the mask is differentiated: %s", n)
		}
	}
	res, err := Interpret(gg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res["grad:x"].Float64s(); fmt.Sprint(got) != "[1 0 1 0]" {
		t.Errorf("grad:x = %v, want [1 0 1 0]", got)
	}
	if got := res["grad:unused"].Float64s(); fmt.Sprint(got) != "[0 0 0]" {
		t.Errorf("grad:unused = %v, want zeros", got)
	}
	// nil wrt: only x, which the output depends on.
	gg, err = Grad(g, "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(gg.Outputs) != 2 || gg.Outputs[1].Name != "grad:x" {
		t.Errorf("outputs %v, want s and grad:x", gg.Outputs)
	}
	// g itself is untouched and still valid.
	if err := g.Validate(); err != nil {
		t.Error(err)
	}
	if len(g.Outputs) != 1 || len(g.Param("x").Uses) != 2 {
		t.Errorf("the source graph changed: outputs %v, uses of x %d", g.Outputs, len(g.Param("x").Uses))
	}
}

// TestGradTiesAndKinks checks the conventions at points where central
// differences cannot: Max/Min ties split evenly, Relu'(0) = 0.
func TestGradTiesAndKinks(t *testing.T) {
	b := NewBuilder("ties")
	a := b.Param("a", FromFloat64s(Shape{3}, []float64{1, 2, 0}))
	c := b.Param("c", FromFloat64s(Shape{3}, []float64{1, 3, 0}))
	m := b.Op1(&Binary{Fn: Max}, a, c)
	r := b.Op1(&Unary{Fn: Relu}, b.Op1(&Binary{Fn: Sub}, a, c))
	s := b.Op1(&Reduce{Fn: ReduceSum, Axes: []int{0}}, b.Op1(&Binary{Fn: Add}, m, r))
	b.Output("s", s)
	res := gradientsOf(t, b, "s")
	if got := fmt.Sprint(res["grad:a"].Float64s()); got != "[0.5 0 0.5]" {
		t.Errorf("grad:a = %s, want [0.5 0 0.5]", got)
	}
	if got := fmt.Sprint(res["grad:c"].Float64s()); got != "[0.5 1 0.5]" {
		t.Errorf("grad:c = %s, want [0.5 1 0.5]", got)
	}
}

// TestGradErrors checks that a differentiable path through an op without
// a rule is reported with the node, and that bad requests fail cleanly.
func TestGradErrors(t *testing.T) {
	b := NewBuilder("err")
	x := b.Param("x", FromFloat64s(Shape{2, 2, 2}, []float64{1, 2, 3, 4, 5, 6, 7, 8}))
	y := b.Op1(&Det{}, x)
	b.Output("y", b.Op1(&Reduce{Fn: ReduceSum, Axes: []int{0}}, y))
	b.Output("v", y)
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Grad(g, "y", nil)
	if !errors.Is(err, ErrNoGradient) || !strings.Contains(err.Error(), "Det") {
		t.Errorf("err = %v, want ErrNoGradient naming Det", err)
	}
	if _, err := Grad(g, "nope", nil); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing output: err = %v", err)
	}
	if _, err := Grad(g, "v", nil); err == nil || !strings.Contains(err.Error(), "scalar") {
		t.Errorf("non-scalar output: err = %v", err)
	}
	other := &Param{Name: "x"}
	if _, err := Grad(g, "y", []*Param{other}); err == nil {
		t.Error("a parameter of another graph was accepted")
	}
}

// TestGradDeferredTermsNameTheirNode: Gather's and Slice's gradients are
// emitted when a parameter's terms are summed, after the walk over the
// nodes; they still say which node they are the gradient of (profiles
// group them with it), not that they came from the loss.
func TestGradDeferredTermsNameTheirNode(t *testing.T) {
	b := NewBuilder("embed")
	table := b.Param("table", FromFloat64s(Shape{4, 2}, []float64{1, 2, 3, 4, 5, 6, 7, 8}))
	rows := b.Op1(&Gather{Axis: 0}, table, b.Const(FromInt64s(Shape{3}, []int64{2, 0, 2})))
	part := b.Op1(&Slice{Starts: []int{1, 0}, Steps: []int{1, 1}, Sizes: []int{2, 2}}, table)
	// Weighed by parameters, so that the gradient is not a constant
	// (which would be folded).
	w := b.Param("w", FromFloat64s(Shape{3, 2}, []float64{1, 1, 1, 1, 1, 1}))
	v := b.Param("v", FromFloat64s(Shape{2, 2}, []float64{1, 1, 1, 1}))
	sum := func(x, y *Value) *Value {
		return b.Op1(&Reduce{Fn: ReduceSum, Axes: []int{0, 1}}, b.Op1(&Binary{Fn: Mul}, x, y))
	}
	s := b.Op1(&Binary{Fn: Add}, sum(rows, w), sum(part, v))
	b.Output("s", s)
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	gg, err := Grad(g, "s", []*Param{g.Param("table")})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for _, n := range gg.Nodes {
		switch n.Op.(type) {
		case *ScatterAddRows, *SliceGrad:
			found[n.Op.Name()] = n.Origin
		}
	}
	for _, c := range []struct{ op, from string }{{"ScatterAddRows", "Gather"}, {"SliceGrad", "Slice"}} {
		if o := found[c.op]; !strings.HasPrefix(o, "gradient of ") || !strings.Contains(o, c.from) {
			t.Errorf("%s's origin %q, want the gradient of the %s", c.op, o, c.from)
		}
	}
	res, err := Interpret(gg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Row 2 is gathered twice, rows 1 and 2 are sliced.
	if got := res["grad:table"].Float64s(); fmt.Sprint(got) != "[1 1 1 1 3 3 0 0]" {
		t.Errorf("grad:table = %v, want [1 1 1 1 3 3 0 0]", got)
	}
}
