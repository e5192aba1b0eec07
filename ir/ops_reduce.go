package ir

import (
	"fmt"
	"math"
	"slices"

	"github.com/dstune/dstune/onnx"
)

// The reductions of ONNX beyond Reduce's five: ReduceL1, ReduceL2,
// ReduceSumSquare, ReduceLogSum and ReduceLogSumExp as compositions of an
// element-wise map, ReduceSum and a final map (so they differentiate and
// lower as their parts do); ArgMax and ArgMin (ArgReduce); CumProd;
// Hardmax and LpNormalization, built on those.

func init() {
	for name, f := range map[string]importFunc{
		"ReduceL1":        importComposedReduce(reduceL1),
		"ReduceL2":        importComposedReduce(reduceL2),
		"ReduceSumSquare": importComposedReduce(reduceSumSquare),
		"ReduceLogSum":    importComposedReduce(reduceLogSum),
		"ReduceLogSumExp": importComposedReduce(reduceLogSumExp),
		"ArgMax":          importArgReduce(ReduceMax),
		"ArgMin":          importArgReduce(ReduceMin),
		"CumProd":         importCumulative(true),
		"Hardmax":         importHardmax,
		"LpNormalization": importLpNormalization,
	} {
		registerOp("", name, f)
	}
	for _, name := range []string{"ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "CumProd"} {
		registerStaticOperands("", name, 1)
	}
}

// composedReduction is one of the composed reductions: what it is called and how
// it maps its input to its output through im.sum.
type composedReduction struct {
	name string
	// floatOnly: integers are computed in float64 and truncated back.
	floatOnly bool
	build     func(im *importer, x *Value, r reduceSpec) (*Value, error)
}

// reduceSpec says which axes a composedReduction sums over.
type reduceSpec struct {
	axes []int
	keep bool
}

// sumOver is ReduceSum over r's axes (x itself over none).
func sumOver(im *importer, x *Value, r reduceSpec) (*Value, error) {
	if len(r.axes) == 0 {
		return x, nil
	}
	return im.emit1(&Reduce{Fn: ReduceSum, Axes: r.axes, KeepDims: r.keep}, x)
}

func mathUnary(im *importer, fn UnaryFn, x *Value) (*Value, error) {
	return im.emit1(&Unary{Fn: fn}, x)
}

func mathBinary(im *importer, fn BinaryFn, a, b *Value) (*Value, error) {
	return im.emit1(&Binary{Fn: fn}, a, b)
}

var (
	reduceL1 = composedReduction{name: "ReduceL1", build: func(im *importer, x *Value, r reduceSpec) (*Value, error) {
		a, err := mathUnary(im, Abs, x)
		if err != nil {
			return nil, err
		}
		return sumOver(im, a, r)
	}}
	reduceSumSquare = composedReduction{name: "ReduceSumSquare", build: func(im *importer, x *Value, r reduceSpec) (*Value, error) {
		sq, err := mathBinary(im, Mul, x, x)
		if err != nil {
			return nil, err
		}
		return sumOver(im, sq, r)
	}}
	reduceL2 = composedReduction{name: "ReduceL2", floatOnly: true, build: func(im *importer, x *Value, r reduceSpec) (*Value, error) {
		s, err := reduceSumSquare.build(im, x, r)
		if err != nil {
			return nil, err
		}
		return mathUnary(im, Sqrt, s)
	}}
	reduceLogSum = composedReduction{name: "ReduceLogSum", floatOnly: true, build: func(im *importer, x *Value, r reduceSpec) (*Value, error) {
		s, err := sumOver(im, x, r)
		if err != nil {
			return nil, err
		}
		return mathUnary(im, Log, s)
	}}
	// reduceLogSumExp is m + log Σ exp(x − m), m the maximum over the
	// axes (0 where it is infinite, so that lanes of −∞ give −∞ and empty
	// lanes log 0 = −∞ instead of NaN).
	reduceLogSumExp = composedReduction{name: "ReduceLogSumExp", floatOnly: true, build: func(im *importer, x *Value, r reduceSpec) (*Value, error) {
		if len(r.axes) == 0 {
			return x, nil // log(exp(x)), exactly
		}
		m, err := im.emit1(&Reduce{Fn: ReduceMax, Axes: r.axes, KeepDims: true}, x)
		if err != nil {
			return nil, err
		}
		absM, err := mathUnary(im, Abs, m)
		if err != nil {
			return nil, err
		}
		inf, err := mathBinary(im, Equal, absM, im.constScalarOf(x.DType, math.Inf(1)))
		if err != nil {
			return nil, err
		}
		shift, err := im.emit1(&Where{}, inf, im.constScalarOf(x.DType, 0), m)
		if err != nil {
			return nil, err
		}
		d, err := mathBinary(im, Sub, x, shift)
		if err != nil {
			return nil, err
		}
		e, err := mathUnary(im, Exp, d)
		if err != nil {
			return nil, err
		}
		s, err := sumOver(im, e, reduceSpec{r.axes, true})
		if err != nil {
			return nil, err
		}
		l, err := mathUnary(im, Log, s)
		if err != nil {
			return nil, err
		}
		y, err := mathBinary(im, Add, l, shift)
		if err != nil || r.keep {
			return y, err
		}
		return im.reshape(y, reducedShape(x.Shape, r.axes, false))
	}}
)

func importComposedReduce(red composedReduction) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 2); err != nil {
			return nil, err
		}
		x := in[0]
		if !x.DType.computable() {
			return nil, fmt.Errorf("%s of %s, want a number type", red.name, x.DType)
		}
		axes, keep, err := im.reductionAxes(n, in, 18)
		if err != nil {
			return nil, err
		}
		dt := x.DType
		if red.floatOnly && dt.IsInt() {
			if x, err = im.emit1(&Cast{To: Float64}, x); err != nil {
				return nil, err
			}
		}
		y, err := red.build(im, x, reduceSpec{axes, keep})
		if err != nil || y.DType == dt {
			return one(y, err)
		}
		return one(im.emit1(&Cast{To: dt}, y))
	}
}

// reduceExtremeRule is the gradient of ReduceMax and ReduceMin: the
// elements equal to the result share its gradient evenly (as the binary
// Max and Min split ties).
func (d *differ) reduceExtremeRule(c *gradCtx, op *Reduce) {
	x, y, dy := c.in(0), c.n.Outputs[0], c.dy[0]
	keep := reducedShape(x.Shape, op.Axes, true)
	hit := d.binary(Equal, x, d.reshape(y, keep))
	count := d.emit1(&Reduce{Fn: ReduceSum, Axes: op.Axes, KeepDims: true}, d.emit1(&Cast{To: x.DType}, hit))
	share := d.binary(Div, d.reshape(dy, keep), count)
	c.add(0, d.emit1(&Where{}, hit, share, d.scalar(x.DType, 0)))
}

// reduceProdRule is the gradient of ReduceProd: each element's is dy times
// the product of the other elements of its lane, the exclusive running
// products from both ends multiplied, so zeros need no division. The
// reduced axes are moved last and flattened into one lane axis first.
func (d *differ) reduceProdRule(c *gradCtx, op *Reduce) {
	x, dy := c.in(0), c.dy[0]
	var perm []int
	var rest Shape
	for a := range x.Shape {
		if !slices.Contains(op.Axes, a) {
			perm = append(perm, a)
			rest = append(rest, x.Shape[a])
		}
	}
	lane := 1
	for _, a := range op.Axes {
		perm = append(perm, a)
		lane *= x.Shape[a]
	}
	xt := d.transpose(x, perm)
	lanes := d.reshape(xt, append(rest.Clone(), lane))
	axis := len(rest)
	before := d.emit1(&CumProd{Axis: axis, Exclusive: true}, lanes)
	after := d.emit1(&CumProd{Axis: axis, Exclusive: true, Reverse: true}, lanes)
	g := d.binary(Mul, d.binary(Mul, before, after), d.reshape(dy, append(rest.Clone(), 1)))
	c.add(0, d.transpose(d.reshape(g, xt.Shape), invertPerm(perm)))
}

// ---------------------------------------------------------------- ArgMax, ArgMin

func importArgReduce(fn ReduceFn) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 1); err != nil {
			return nil, err
		}
		x := in[0]
		axis, err := attrAxis(n, 0, len(x.Shape))
		if err != nil {
			return nil, err
		}
		keep, err := attrInt(n, "keepdims", 1)
		if err != nil {
			return nil, err
		}
		last, err := attrInt(n, "select_last_index", 0)
		if err != nil {
			return nil, err
		}
		return one(im.emit1(&ArgReduce{Fn: fn, Axis: axis, KeepDims: keep != 0, SelectLast: last != 0}, x))
	}
}

// ---------------------------------------------------------------- Hardmax

// importHardmax: 1 at the first maximum along the axis, 0 elsewhere, as
// Equal(ArgMax, iota) cast to the input's type. Before opset 13 the input
// is coerced to 2-D at axis (default 1) and the maximum is taken over
// everything from axis on, as Softmax of that time.
func importHardmax(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantFloatInput(n, x); err != nil {
		return nil, err
	}
	r := len(x.Shape)
	def := -1
	if im.opset < 13 {
		def = 1
	}
	axis, err := attrInt(n, "axis", def)
	if err != nil {
		return nil, err
	}
	if r == 0 {
		return nil, fmt.Errorf("Hardmax of a scalar")
	}
	if axis, err = normAxis(axis, r); err != nil {
		return nil, err
	}
	if x.Shape.Size() == 0 {
		return []*Value{im.constant(NewTensor(x.DType, x.Shape))}, nil
	}
	if im.opset >= 13 || axis == r-1 {
		return one(hardmax(im, x, axis))
	}
	flat, err := im.reshape(x, Shape{x.Shape[:axis].Size(), x.Shape[axis:].Size()})
	if err != nil {
		return nil, err
	}
	y, err := hardmax(im, flat, 1)
	if err != nil {
		return nil, err
	}
	return one(im.reshape(y, x.Shape))
}

func hardmax(im *importer, x *Value, axis int) (*Value, error) {
	arg, err := im.emit1(&ArgReduce{Fn: ReduceMax, Axis: axis, KeepDims: true}, x)
	if err != nil {
		return nil, err
	}
	hit, err := mathBinary(im, Equal, arg, im.constant(iotaAlong(len(x.Shape), axis, x.Shape[axis])))
	if err != nil {
		return nil, err
	}
	return im.emit1(&Cast{To: x.DType}, hit)
}

// ---------------------------------------------------------------- LpNormalization

// importLpNormalization: x / ‖x‖ₚ along axis (p 1 or 2), 0 where the norm
// is 0 (the lane is all zeros).
func importLpNormalization(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantFloatInput(n, x); err != nil {
		return nil, err
	}
	axis, err := attrAxis(n, -1, len(x.Shape))
	if err != nil {
		return nil, err
	}
	p, err := attrInt(n, "p", 2)
	if err != nil {
		return nil, err
	}
	red := reduceL2
	switch p {
	case 1:
		red = reduceL1
	case 2:
	default:
		return nil, fmt.Errorf("LpNormalization p=%d, want 1 or 2", p)
	}
	norm, err := red.build(im, x, reduceSpec{[]int{axis}, true})
	if err != nil {
		return nil, err
	}
	zero, err := mathBinary(im, Equal, norm, im.constScalarOf(x.DType, 0))
	if err != nil {
		return nil, err
	}
	safe, err := im.emit1(&Where{}, zero, im.constScalarOf(x.DType, 1), norm)
	if err != nil {
		return nil, err
	}
	return one(mathBinary(im, Div, x, safe))
}
