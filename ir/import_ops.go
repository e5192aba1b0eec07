package ir

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/dstune/dstune/onnx"
)

func init() {
	for name, f := range map[string]importFunc{
		"Constant":                  importConstant,
		"Identity":                  importIdentity,
		"Cast":                      importCast,
		"CastLike":                  importCastLike,
		"Where":                     importWhere,
		"Clip":                      importClip,
		"Softmax":                   importSoftmax(false),
		"LogSoftmax":                importSoftmax(true),
		"MatMul":                    importMatMul,
		"Gemm":                      importGemm,
		"Transpose":                 importTranspose,
		"Reshape":                   importReshape,
		"Flatten":                   importFlatten,
		"Squeeze":                   importSqueeze,
		"Unsqueeze":                 importUnsqueeze,
		"Concat":                    importConcat,
		"Split":                     importSplit,
		"Slice":                     importSlice,
		"Gather":                    importGather,
		"GatherElements":            importGatherElements,
		"Expand":                    importExpand,
		"Shape":                     importShape,
		"Size":                      importSize,
		"ConstantOfShape":           importConstantOfShape,
		"Range":                     importRange,
		"ReduceSum":                 importReduce(ReduceSum),
		"ReduceMean":                importReduce(ReduceMean),
		"ReduceMax":                 importReduce(ReduceMax),
		"ReduceMin":                 importReduce(ReduceMin),
		"ReduceProd":                importReduce(ReduceProd),
		"LayerNormalization":        importLayerNorm,
		"Dropout":                   importDropout,
		"Trilu":                     importTrilu,
		"CumSum":                    importCumulative(false),
		"TopK":                      importTopK,
		"Einsum":                    importEinsum,
		"Conv":                      importConv,
		"MaxPool":                   importPool(true),
		"AveragePool":               importPool(false),
		"GlobalAveragePool":         importGlobalPool(ReduceMean),
		"GlobalMaxPool":             importGlobalPool(ReduceMax),
		"BatchNormalization":        importBatchNorm,
		"SoftmaxCrossEntropyLoss":   importLoss(true),
		"NegativeLogLikelihoodLoss": importLoss(false),
		"Min":                       importVariadic(Min),
		"Max":                       importVariadic(Max),
		"Sum":                       importVariadic(Add),
		"Mean":                      importMean,
	} {
		registerOp("", name, f)
	}
	// The operands that decide shapes or attributes.
	for _, name := range []string{"Reshape", "Expand", "TopK", "Trilu", "CumSum", "Unsqueeze", "Squeeze", "Split",
		"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"} {
		registerStaticOperands("", name, 1)
	}
	registerStaticOperands("", "ConstantOfShape", 0)
	registerStaticOperands("", "Range", 0, 1, 2)
	registerStaticOperands("", "Slice", 1, 2, 3, 4)
	registerStaticOperands("", "Dropout", 1, 2)
	for name, fn := range map[string]BinaryFn{
		"Add": Add, "Sub": Sub, "Mul": Mul, "Div": Div, "Pow": Pow,
		"Equal": Equal, "Less": Less, "Greater": Greater, "LessOrEqual": LessOrEqual, "GreaterOrEqual": GreaterOrEqual,
		"And": And, "Or": Or, "Xor": Xor,
	} {
		registerOp("", name, importBinary(fn))
	}
	for name, fn := range map[string]UnaryFn{
		"Neg": Neg, "Abs": Abs, "Sqrt": Sqrt, "Exp": Exp, "Log": Log, "Tanh": Tanh, "Sigmoid": Sigmoid,
		"Relu": Relu, "Erf": Erf, "Not": Not, "Reciprocal": Reciprocal, "Floor": Floor, "Ceil": Ceil,
		"Sign": Sign, "Softplus": Softplus, "LeakyRelu": LeakyRelu, "Elu": Elu, "Gelu": Gelu,
	} {
		registerOp("", name, importUnary(fn))
	}
}

func wantIn(in []*Value, lo, hi int) error {
	if len(in) < lo || len(in) > hi {
		if lo == hi {
			return fmt.Errorf("want %d inputs, got %d", lo, len(in))
		}
		return fmt.Errorf("want %d to %d inputs, got %d", lo, hi, len(in))
	}
	for i := range lo {
		if in[i] == nil {
			return fmt.Errorf("input %d is required", i)
		}
	}
	return nil
}

func one(v *Value, err error) ([]*Value, error) {
	if err != nil {
		return nil, err
	}
	return []*Value{v}, nil
}

func attrInt(n *onnx.Node, name string, def int) (int, error) {
	v, err := n.AttrInt(name, int64(def))
	return int(v), err
}

// attrAxis reads the axis attribute (def when absent) of an operand of
// rank rank, made non-negative.
func attrAxis(n *onnx.Node, def, rank int) (int, error) {
	axis, err := attrInt(n, "axis", def)
	if err != nil {
		return 0, err
	}
	return normAxis(axis, rank)
}

func attrInts(n *onnx.Node, name string) ([]int, bool, error) {
	a := n.Attr(name)
	if a == nil {
		return nil, false, nil
	}
	v, err := n.AttrInts(name, nil)
	if err != nil {
		return nil, false, err
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out, true, nil
}

// ---------------------------------------------------------------- constants

func importConstant(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(n.Attributes) != 1 {
		return nil, fmt.Errorf("want exactly one value attribute, got %d", len(n.Attributes))
	}
	a := n.Attributes[0]
	var t *Tensor
	switch a.Name {
	case "value":
		if a.Type != onnx.AttrTensor || a.T == nil {
			return nil, fmt.Errorf("attribute value is %s, want TENSOR", a.Type)
		}
		var err error
		if t, err = TensorFromONNX(a.T); err != nil {
			return nil, err
		}
	case "value_float":
		t = ScalarFloat32(a.F)
	case "value_floats":
		t = FromFloat32s(Shape{len(a.Floats)}, a.Floats)
	case "value_int":
		t = ScalarInt64(a.I)
	case "value_ints":
		t = FromInt64s(Shape{len(a.Ints)}, a.Ints)
	case "value_string":
		t = FromStrings(Shape{}, []string{string(a.S)})
	case "value_strings":
		strs := make([]string, len(a.Strings))
		for i, s := range a.Strings {
			strs[i] = string(s)
		}
		t = FromStrings(Shape{len(strs)}, strs)
	default:
		return nil, fmt.Errorf("%w: Constant attribute %q", ErrNotSupported, a.Name)
	}
	return []*Value{im.constant(t)}, nil
}

func importIdentity(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	return []*Value{in[0]}, nil // an alias: the same value under another name
}

// ---------------------------------------------------------------- element-wise

func importUnary(fn UnaryFn) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 1); err != nil {
			return nil, err
		}
		op := &Unary{Fn: fn}
		switch fn {
		case LeakyRelu:
			a, err := n.AttrFloat("alpha", 0.01)
			if err != nil {
				return nil, err
			}
			op.Alpha = a
		case Elu:
			a, err := n.AttrFloat("alpha", 1)
			if err != nil {
				return nil, err
			}
			op.Alpha = a
		case Gelu:
			approx, err := n.AttrString("approximate", "none")
			if err != nil {
				return nil, err
			}
			switch approx {
			case "none":
			case "tanh":
				op.Fn = GeluTanh
			default:
				return nil, fmt.Errorf("Gelu approximate=%q, want none or tanh", approx)
			}
		}
		return one(im.emit1(op, in[0]))
	}
}

func importBinary(fn BinaryFn) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 2, 2); err != nil {
			return nil, err
		}
		a, b := in[0], in[1]
		if fn == Equal && (a.DType == String || b.DType == String) {
			return one(im.emit1(&StringEqual{}, a, b))
		}
		if bc, _ := n.AttrInt("broadcast", 0); bc != 0 && im.opset < 7 {
			// Opset < 7 broadcasting: b's dimensions align with a's
			// starting at axis (default: right-aligned).
			axis, err := attrInt(n, "axis", len(a.Shape)-len(b.Shape))
			if err != nil {
				return nil, err
			}
			if axis < 0 {
				axis += len(a.Shape)
			}
			shape := make(Shape, 0, len(a.Shape))
			for range axis {
				shape = append(shape, 1)
			}
			shape = append(shape, b.Shape...)
			for len(shape) < len(a.Shape) {
				shape = append(shape, 1)
			}
			var err2 error
			if b, err2 = im.reshape(b, shape); err2 != nil {
				return nil, err2
			}
		}
		return one(im.emit1(&Binary{Fn: fn}, a, b))
	}
}

func importVariadic(fn BinaryFn) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if len(in) == 0 {
			return nil, fmt.Errorf("want at least one input")
		}
		acc := in[0]
		for _, v := range in[1:] {
			var err error
			if acc, err = im.emit1(&Binary{Fn: fn}, acc, v); err != nil {
				return nil, err
			}
		}
		return []*Value{acc}, nil // one input: the op is the identity
	}
}

func importMean(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	sum, err := importVariadic(Add)(im, n, in)
	if err != nil || len(in) == 1 {
		return sum, err
	}
	c := NewTensor(sum[0].DType, nil)
	storeFloat(c, 0, float64(len(in)), true, RoundUp)
	return one(im.emit1(&Binary{Fn: Div}, sum[0], im.constant(c)))
}

func importWhere(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	return one(im.emit1(&Where{}, in...))
}

func importCast(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	to, err := n.AttrInt("to", 0)
	if err != nil {
		return nil, err
	}
	dt, err := DTypeFromONNX(onnx.DataType(to))
	if err != nil {
		return nil, fmt.Errorf("%w: Cast to %v: %w", ErrNotSupported, onnx.DataType(to), err)
	}
	return importCastTo(im, n, in[0], dt)
}

func importCastTo(im *importer, n *onnx.Node, x *Value, dt DType) ([]*Value, error) {
	sat, err := n.AttrInt("saturate", 1)
	if err != nil {
		return nil, err
	}
	mode, err := n.AttrString("round_mode", "up")
	if err != nil {
		return nil, err
	}
	op := &Cast{To: dt, Saturate: sat != 0}
	switch mode {
	case "up":
		op.Round = RoundUp
	case "down":
		op.Round = RoundDown
	case "nearest":
		op.Round = RoundNearest
	default:
		return nil, fmt.Errorf("round_mode %q, want up, down or nearest", mode)
	}
	if x.DType == dt {
		return []*Value{x}, nil
	}
	return one(im.emit1(op, x))
}

func importCastLike(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	return importCastTo(im, n, in[0], in[1].DType)
}

func importClip(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 3); err != nil {
		return nil, err
	}
	x := in[0]
	bounds := []*Value{x, nil, nil}
	if im.opset < 11 {
		for i, name := range []string{"min", "max"} {
			if a := n.Attr(name); a != nil {
				t := NewTensor(x.DType, nil)
				storeFloat(t, 0, float64(a.F), true, RoundUp)
				bounds[i+1] = im.constant(t)
			}
		}
	} else {
		for i := 1; i < len(in); i++ {
			if in[i] != nil {
				b := in[i]
				if len(b.Shape) != 0 {
					var err error
					if b, err = im.reshape(b, Shape{}); err != nil {
						return nil, err
					}
				}
				bounds[i] = b
			}
		}
	}
	for len(bounds) > 1 && bounds[len(bounds)-1] == nil {
		bounds = bounds[:len(bounds)-1]
	}
	if len(bounds) == 1 {
		return []*Value{x}, nil
	}
	return one(im.emit1(&Clip{}, bounds...))
}

// ---------------------------------------------------------------- softmax

func importSoftmax(log bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 1); err != nil {
			return nil, err
		}
		x := in[0]
		r := len(x.Shape)
		if im.opset >= 13 {
			axis, err := attrAxis(n, -1, r)
			if err != nil {
				return nil, err
			}
			return one(im.emit1(&Softmax{Axis: axis, Log: log}, x))
		}
		// Before opset 13 the input is coerced to 2-D at axis (default
		// 1): softmax over everything from axis on.
		axis, err := attrInt(n, "axis", 1)
		if err != nil {
			return nil, err
		}
		if r == 0 {
			return nil, fmt.Errorf("Softmax of a scalar")
		}
		if axis, err = normAxis(axis, r); err != nil {
			return nil, err
		}
		if axis == r-1 {
			return one(im.emit1(&Softmax{Axis: axis, Log: log}, x))
		}
		flat, err := im.reshape(x, Shape{x.Shape[:axis].Size(), x.Shape[axis:].Size()})
		if err != nil {
			return nil, err
		}
		y, err := im.emit1(&Softmax{Axis: 1, Log: log}, flat)
		if err != nil {
			return nil, err
		}
		return one(im.reshape(y, x.Shape))
	}
}

// ---------------------------------------------------------------- linear algebra

func importMatMul(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	return one(im.emit1(&MatMul{}, in[0], in[1]))
}

func importGemm(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	op := &Gemm{}
	var err error
	var ta, tb int
	if ta, err = attrInt(n, "transA", 0); err != nil {
		return nil, err
	}
	if tb, err = attrInt(n, "transB", 0); err != nil {
		return nil, err
	}
	op.TransA, op.TransB = ta != 0, tb != 0
	if op.Alpha, err = n.AttrFloat("alpha", 1); err != nil {
		return nil, err
	}
	if op.Beta, err = n.AttrFloat("beta", 1); err != nil {
		return nil, err
	}
	args := []*Value{in[0], in[1]}
	if len(in) > 2 && in[2] != nil && op.Beta != 0 {
		args = append(args, in[2])
	}
	return one(im.emit1(op, args...))
}

func importEinsum(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	eq, err := n.AttrString("equation", "")
	if err != nil {
		return nil, err
	}
	ranks := make([]int, len(in))
	for i, v := range in {
		if v == nil {
			return nil, fmt.Errorf("input %d is missing", i)
		}
		ranks[i] = len(v.Shape)
	}
	op, err := ParseEinsum(eq, ranks)
	if err != nil {
		return nil, err
	}
	if _, err := op.Infer(valueTypes(in)); err != nil {
		return nil, err // named as the Einsum's error, before any lowering
	}
	if y, err := lowerEinsum(im.emit1, op, in); y != nil || err != nil {
		return one(y, err)
	}
	return one(im.emit1(op, in...))
}

// ---------------------------------------------------------------- shapes

func importTranspose(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	perm, ok, err := attrInts(n, "perm")
	if err != nil {
		return nil, err
	}
	if !ok {
		for i := len(x.Shape) - 1; i >= 0; i-- {
			perm = append(perm, i)
		}
	}
	for i, p := range perm {
		if p < 0 {
			perm[i] += len(x.Shape)
		}
	}
	identity := true
	for i, p := range perm {
		if p != i {
			identity = false
		}
	}
	if identity && len(perm) == len(x.Shape) {
		return []*Value{x}, nil
	}
	return one(im.emit1(&Transpose{Perm: perm}, x))
}

func importReshape(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	var target []int
	var err error
	if im.opset < 5 {
		target, _, err = attrInts(n, "shape")
	} else {
		if len(in) < 2 || in[1] == nil {
			return nil, fmt.Errorf("input 1 (shape) is required")
		}
		target, _, err = im.constInts(in, 1, "shape")
	}
	if err != nil {
		return nil, err
	}
	allowZero, err := attrInt(n, "allowzero", 0)
	if err != nil {
		return nil, err
	}
	shape, err := resolveReshape(x.Shape, target, allowZero != 0)
	if err != nil {
		return nil, err
	}
	return one(im.reshape(x, shape))
}

// resolveReshape applies ONNX Reshape's rules: 0 copies the input's
// dimension (unless allowZero), -1 is inferred.
func resolveReshape(in Shape, target []int, allowZero bool) (Shape, error) {
	out := make(Shape, len(target))
	infer := -1
	known := 1
	for _, d := range target {
		if d > maxTensorBytes {
			return nil, fmt.Errorf("reshape target %v has a dimension beyond any tensor's size", target)
		}
	}
	for i, d := range target {
		switch {
		case d == 0 && !allowZero:
			if i >= len(in) {
				return nil, fmt.Errorf("reshape target %v copies dimension %d of %v, which has none", target, i, in)
			}
			out[i] = in[i]
		case d == -1:
			if infer >= 0 {
				return nil, fmt.Errorf("reshape target %v has two -1", target)
			}
			infer = i
			continue
		case d < 0:
			return nil, fmt.Errorf("reshape target %v has a negative dimension", target)
		default:
			out[i] = d
		}
		known *= out[i]
	}
	if infer >= 0 {
		if known == 0 || in.Size()%known != 0 {
			return nil, fmt.Errorf("cannot reshape %v to %v", in, target)
		}
		out[infer] = in.Size() / known
	}
	if out.Size() != in.Size() {
		return nil, fmt.Errorf("cannot reshape %v (%d elements) to %v", in, in.Size(), target)
	}
	return out, nil
}

func importFlatten(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	axis, err := attrInt(n, "axis", 1)
	if err != nil {
		return nil, err
	}
	r := len(x.Shape)
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis > r {
		return nil, fmt.Errorf("axis %d out of range for rank %d", axis, r)
	}
	return one(im.reshape(x, Shape{x.Shape[:axis].Size(), x.Shape[axis:].Size()}))
}

// axesOperand reads the axes of Squeeze/Unsqueeze/Reduce*: an attribute
// before opset `inputSince`, the optional input 1 after.
func (im *importer) axesOperand(n *onnx.Node, in []*Value, inputSince int) ([]int, bool, error) {
	if im.opset < inputSince {
		return attrInts(n, "axes")
	}
	return im.constInts(in, 1, "axes")
}

func importSqueeze(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	axes, given, err := im.axesOperand(n, in, 13)
	if err != nil {
		return nil, err
	}
	drop := make([]bool, len(x.Shape))
	if !given {
		for d, s := range x.Shape {
			drop[d] = s == 1
		}
	}
	for _, a := range axes {
		a, err := normAxis(a, len(x.Shape))
		if err != nil {
			return nil, err
		}
		if x.Shape[a] != 1 {
			return nil, fmt.Errorf("cannot squeeze axis %d of %v: its size is not 1", a, x.Shape)
		}
		drop[a] = true
	}
	shape := Shape{}
	for d, s := range x.Shape {
		if !drop[d] {
			shape = append(shape, s)
		}
	}
	return one(im.reshape(x, shape))
}

func importUnsqueeze(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	axes, given, err := im.axesOperand(n, in, 13)
	if err != nil {
		return nil, err
	}
	if !given {
		return nil, fmt.Errorf("axes are required")
	}
	r := len(x.Shape) + len(axes)
	insert := make([]bool, r)
	for _, a := range axes {
		a, err := normAxis(a, r)
		if err != nil {
			return nil, err
		}
		if insert[a] {
			return nil, fmt.Errorf("axis %d repeated", a)
		}
		insert[a] = true
	}
	shape := make(Shape, r)
	j := 0
	for d := range r {
		if insert[d] {
			shape[d] = 1
		} else {
			shape[d] = x.Shape[j]
			j++
		}
	}
	return one(im.reshape(x, shape))
}

func importConcat(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	var parts []*Value
	for i, v := range in {
		if v == nil {
			return nil, fmt.Errorf("input %d is missing", i)
		}
		parts = append(parts, v)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("want at least one input")
	}
	axis, err := attrAxis(n, 0, len(parts[0].Shape))
	if err != nil {
		return nil, err
	}
	if len(parts) == 1 {
		return []*Value{parts[0]}, nil
	}
	return one(im.emit1(&Concat{Axis: axis}, parts...))
}

func importSplit(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	axis, err := attrAxis(n, 0, len(x.Shape))
	if err != nil {
		return nil, err
	}
	length := x.Shape[axis]
	var sizes []int
	var given bool
	if im.opset < 13 {
		sizes, given, err = attrInts(n, "split")
	} else {
		sizes, given, err = im.constInts(in, 1, "split")
	}
	if err != nil {
		return nil, err
	}
	outs := len(n.Outputs)
	if !given {
		parts := outs
		if im.opset >= 18 {
			if a := n.Attr("num_outputs"); a != nil {
				parts = int(a.I)
			}
		}
		if parts < 1 || parts != outs {
			// Checked before the sizes are listed: num_outputs comes from
			// the file.
			return nil, fmt.Errorf("split into %d parts (num_outputs) for %d outputs", parts, outs)
		}
		chunk := (length + parts - 1) / parts
		if im.opset < 18 && length%parts != 0 {
			return nil, fmt.Errorf("axis length %d does not split evenly into %d outputs", length, parts)
		}
		for i := range parts {
			sizes = append(sizes, max(0, min(chunk, length-i*chunk)))
		}
	}
	if len(sizes) != outs {
		return nil, fmt.Errorf("%d split sizes for %d outputs", len(sizes), outs)
	}
	return im.emit(&Split{Axis: axis, Sizes: sizes}, x)
}

func importSlice(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 5); err != nil {
		return nil, err
	}
	x := in[0]
	r := len(x.Shape)
	var starts, ends, axes, steps []int
	var err error
	if im.opset < 10 {
		if starts, _, err = attrInts(n, "starts"); err != nil {
			return nil, err
		}
		if ends, _, err = attrInts(n, "ends"); err != nil {
			return nil, err
		}
		if axes, _, err = attrInts(n, "axes"); err != nil {
			return nil, err
		}
	} else {
		if starts, _, err = im.constInts(in, 1, "starts"); err != nil {
			return nil, err
		}
		if ends, _, err = im.constInts(in, 2, "ends"); err != nil {
			return nil, err
		}
		if axes, _, err = im.constInts(in, 3, "axes"); err != nil {
			return nil, err
		}
		if steps, _, err = im.constInts(in, 4, "steps"); err != nil {
			return nil, err
		}
	}
	if len(ends) != len(starts) {
		return nil, fmt.Errorf("%d starts and %d ends", len(starts), len(ends))
	}
	if axes == nil {
		for i := range starts {
			axes = append(axes, i)
		}
	}
	if steps == nil {
		for range starts {
			steps = append(steps, 1)
		}
	}
	if len(axes) != len(starts) || len(steps) != len(starts) {
		return nil, fmt.Errorf("%d starts, %d axes, %d steps", len(starts), len(axes), len(steps))
	}
	op := &Slice{Starts: make([]int, r), Steps: make([]int, r), Sizes: x.Shape.Clone()}
	for d := range r {
		op.Steps[d] = 1
	}
	seen := make([]bool, r)
	for i, a := range axes {
		a, err := normAxis(a, r)
		if err != nil {
			return nil, err
		}
		if seen[a] {
			return nil, fmt.Errorf("axis %d repeated", a)
		}
		seen[a] = true
		start, size, err := sliceRange(starts[i], ends[i], steps[i], x.Shape[a])
		if err != nil {
			return nil, fmt.Errorf("axis %d: %w", a, err)
		}
		op.Starts[a], op.Steps[a], op.Sizes[a] = start, steps[i], size
	}
	return one(im.emit1(op, x))
}

// sliceRange resolves ONNX Slice's start/end/step on an axis of length n
// (negative indices count from the end; out-of-range ones clamp) into the
// first index and the element count.
func sliceRange(start, end, step, n int) (first, count int, err error) {
	if step == 0 {
		return 0, 0, fmt.Errorf("step 0")
	}
	if start < 0 {
		start += n
	}
	if end < 0 {
		end += n
	}
	if step > 0 {
		start = max(0, min(start, n))
		end = max(0, min(end, n))
		if end <= start {
			return 0, 0, nil
		}
		return start, (end - start + step - 1) / step, nil
	}
	start = max(-1, min(start, n-1))
	end = max(-1, min(end, n-1))
	if start <= end {
		return 0, 0, nil
	}
	return start, (start - end - step - 1) / -step, nil
}

func importGather(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	axis, err := attrAxis(n, 0, len(in[0].Shape))
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Gather{Axis: axis}, in[0], in[1]))
}

func importGatherElements(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	axis, err := attrAxis(n, 0, len(in[0].Shape))
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&GatherElements{Axis: axis}, in[0], in[1]))
}

func importExpand(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	target, _, err := im.constInts(in, 1, "shape")
	if err != nil {
		return nil, err
	}
	shape, err := BroadcastShapes(in[0].Shape, Shape(target))
	if err != nil {
		return nil, err
	}
	if shape.Equal(in[0].Shape) {
		return []*Value{in[0]}, nil
	}
	if err := checkAmplified(shape, in[0].DType.Size(), maxTensorBytes); err != nil {
		return nil, fmt.Errorf("expanding %v to %v: %w", in[0].Shape, target, err)
	}
	return one(im.emit1(&Expand{Shape: shape}, in[0]))
}

func importShape(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	s := in[0].Shape
	r := len(s)
	start, err := attrInt(n, "start", 0)
	if err != nil {
		return nil, err
	}
	end, err := attrInt(n, "end", r)
	if err != nil {
		return nil, err
	}
	clamp := func(i int) int {
		if i < 0 {
			i += r
		}
		return max(0, min(i, r))
	}
	start, end = clamp(start), clamp(end)
	dims := []int{}
	if start < end {
		dims = s[start:end]
	}
	return []*Value{im.constant(IntsTensor(dims...))}, nil
}

func importSize(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	return []*Value{im.constant(ScalarInt64(int64(in[0].Shape.Size())))}, nil
}

func importConstantOfShape(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	dims, _, err := im.constInts(in, 0, "shape")
	if err != nil {
		return nil, err
	}
	for _, d := range dims {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in %v", dims)
		}
	}
	fill := ScalarFloat32(0)
	if a, err := n.AttrTensor("value"); err != nil {
		return nil, err
	} else if a != nil {
		if fill, err = TensorFromONNX(a); err != nil {
			return nil, err
		}
		if fill.Len() != 1 {
			return nil, fmt.Errorf("value has %d elements, want 1", fill.Len())
		}
	}
	if _, err := checkedSizeLimit(toInt64s(dims), fill.dtype.Size(), maxFoldBytes); err != nil {
		return nil, err
	}
	if err := checkAmplified(Shape(dims), fill.dtype.Size(), maxFoldBytes); err != nil {
		return nil, err
	}
	out := NewTensor(fill.dtype, Shape(dims))
	es := fill.dtype.Size()
	for i := range out.Len() {
		copy(out.data[i*es:], fill.data[:es])
	}
	return []*Value{im.constant(out)}, nil
}

func toInt64s(v []int) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

func importRange(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	var ts [3]*Tensor
	for i, what := range []string{"start", "limit", "delta"} {
		t, err := im.constTensor(in, i, what)
		if err != nil {
			return nil, err
		}
		if t.Len() != 1 {
			return nil, fmt.Errorf("%s has %d elements, want a scalar", what, t.Len())
		}
		ts[i] = t
	}
	dt := ts[0].dtype
	if ts[1].dtype != dt || ts[2].dtype != dt || !dt.computable() {
		return nil, fmt.Errorf("start, limit, delta are %s, %s, %s; want one number type", dt, ts[1].dtype, ts[2].dtype)
	}
	var out *Tensor
	if dt.IsFloat() {
		start, limit, delta := ts[0].Float64At(0), ts[1].Float64At(0), ts[2].Float64At(0)
		if delta == 0 {
			return nil, fmt.Errorf("delta is 0")
		}
		n := math.Ceil((limit - start) / delta)
		if math.IsNaN(n) || n > maxRangeCount {
			return nil, fmt.Errorf("start %v, limit %v and delta %v give %v elements", start, limit, delta, n)
		}
		count := int(max(n, 0))
		if _, err := checkedSizeLimit([]int64{int64(count)}, dt.Size(), maxFoldBytes); err != nil {
			return nil, err
		}
		out = NewTensor(dt, Shape{count})
		// Accumulate in the output type, as ONNX's definition does
		// (start, start+delta, ... each rounded).
		acc := NewTensor(dt, nil)
		storeFloat(acc, 0, start, true, RoundUp)
		d := NewTensor(dt, nil)
		storeFloat(d, 0, delta, true, RoundUp)
		for i := range count {
			storeFloat(out, i, acc.Float64At(0), true, RoundUp)
			storeFloat(acc, 0, acc.Float64At(0)+d.Float64At(0), true, RoundUp)
		}
	} else {
		start, limit, delta := ts[0].Int64At(0), ts[1].Int64At(0), ts[2].Int64At(0)
		if delta == 0 {
			return nil, fmt.Errorf("delta is 0")
		}
		// In unsigned arithmetic: limit − start may not fit an int64.
		var span, step uint64
		if delta > 0 && limit > start {
			span, step = uint64(limit)-uint64(start), uint64(delta)
		} else if delta < 0 && limit < start {
			span, step = uint64(start)-uint64(limit), -uint64(delta)
		}
		var n uint64
		if step > 0 {
			n = span / step
			if span%step != 0 {
				n++
			}
		}
		if n > maxRangeCount {
			return nil, fmt.Errorf("start %d, limit %d and delta %d give %d elements", start, limit, delta, n)
		}
		count := int64(n)
		if _, err := checkedSizeLimit([]int64{count}, dt.Size(), maxFoldBytes); err != nil {
			return nil, err
		}
		out = NewTensor(dt, Shape{int(count)})
		for i := range int(count) {
			storeInt(out, i, start+int64(i)*delta, true, RoundUp)
		}
	}
	return []*Value{im.constant(out)}, nil
}

// maxRangeCount is more elements than any Range may have (its bytes are
// bounded far lower), small enough to convert to an int exactly.
const maxRangeCount = 1 << 50

func importTrilu(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	upper, err := attrInt(n, "upper", 1)
	if err != nil {
		return nil, err
	}
	k := 0
	if ks, ok, err := im.constInts(in, 1, "k"); err != nil {
		return nil, err
	} else if ok {
		if len(ks) != 1 {
			return nil, fmt.Errorf("k has %d elements, want 1", len(ks))
		}
		k = ks[0]
	}
	return one(im.emit1(&Trilu{Upper: upper != 0, K: k}, in[0]))
}

// ---------------------------------------------------------------- reductions

func importReduce(fn ReduceFn) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 2); err != nil {
			return nil, err
		}
		since := 18
		if fn == ReduceSum {
			since = 13
		}
		axes, keep, err := im.reductionAxes(n, in, since)
		if err != nil {
			return nil, err
		}
		if len(axes) == 0 { // noop_with_empty_axes, or a scalar input
			return []*Value{in[0]}, nil
		}
		return one(im.emit1(&Reduce{Fn: fn, Axes: axes, KeepDims: keep}, in[0]))
	}
}

// reductionAxes reads a reduction's axes (the attribute before opset
// inputSince, the optional input 1 from it), keepdims and
// noop_with_empty_axes, and returns the axes sorted, distinct and
// non-negative. Absent or empty axes mean every axis, unless
// noop_with_empty_axes is set: then none (a Reduce is then its input, a
// composed reduction only its element-wise part, as ONNX's reference
// applies it: ReduceSumSquare gives x²).
func (im *importer) reductionAxes(n *onnx.Node, in []*Value, inputSince int) (axes []int, keep bool, err error) {
	x := in[0]
	given, _, err := im.axesOperand(n, in, inputSince)
	if err != nil {
		return nil, false, err
	}
	k, err := attrInt(n, "keepdims", 1)
	if err != nil {
		return nil, false, err
	}
	noop, err := attrInt(n, "noop_with_empty_axes", 0)
	if err != nil {
		return nil, false, err
	}
	if len(given) == 0 {
		if noop != 0 {
			return nil, k != 0, nil
		}
		for d := range x.Shape {
			given = append(given, d)
		}
	}
	for _, a := range given {
		a, err := normAxis(a, len(x.Shape))
		if err != nil {
			return nil, false, err
		}
		if !slices.Contains(axes, a) {
			axes = append(axes, a)
		}
	}
	sort.Ints(axes)
	return axes, k != 0, nil
}

// importCumulative imports CumSum (prod false) and CumProd: the running
// sum or product along the axis input.
func importCumulative(prod bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 2, 2); err != nil {
			return nil, err
		}
		ax, _, err := im.constInts(in, 1, "axis")
		if err != nil {
			return nil, err
		}
		if len(ax) != 1 {
			return nil, fmt.Errorf("axis has %d elements, want 1", len(ax))
		}
		axis, err := normAxis(ax[0], len(in[0].Shape))
		if err != nil {
			return nil, err
		}
		excl, err := attrInt(n, "exclusive", 0)
		if err != nil {
			return nil, err
		}
		rev, err := attrInt(n, "reverse", 0)
		if err != nil {
			return nil, err
		}
		if prod {
			return one(im.emit1(&CumProd{Axis: axis, Exclusive: excl != 0, Reverse: rev != 0}, in[0]))
		}
		return one(im.emit1(&CumSum{Axis: axis, Exclusive: excl != 0, Reverse: rev != 0}, in[0]))
	}
}

func importTopK(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	var k int
	if im.opset < 10 {
		var err error
		if k, err = attrInt(n, "k", 0); err != nil {
			return nil, err
		}
	} else {
		ks, ok, err := im.constInts(in, 1, "K")
		if err != nil {
			return nil, err
		}
		if !ok || len(ks) != 1 {
			return nil, fmt.Errorf("K must be a single value")
		}
		k = ks[0]
	}
	axis, err := attrAxis(n, -1, len(x.Shape))
	if err != nil {
		return nil, err
	}
	largest, err := attrInt(n, "largest", 1)
	if err != nil {
		return nil, err
	}
	return im.emit(&TopK{Axis: axis, K: k, Largest: largest != 0}, x)
}

// ---------------------------------------------------------------- normalization

func importLayerNorm(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	axis, err := attrAxis(n, -1, len(in[0].Shape))
	if err != nil {
		return nil, err
	}
	eps, err := n.AttrFloat("epsilon", 1e-5)
	if err != nil {
		return nil, err
	}
	return im.emit(&LayerNorm{Axis: axis, Epsilon: eps}, in...)
}

func importBatchNorm(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 5, 5); err != nil {
		return nil, err
	}
	eps, err := n.AttrFloat("epsilon", 1e-5)
	if err != nil {
		return nil, err
	}
	mom, err := n.AttrFloat("momentum", 0.9)
	if err != nil {
		return nil, err
	}
	training, err := attrInt(n, "training_mode", 0)
	if err != nil {
		return nil, err
	}
	if im.opset < 14 && len(n.Outputs) > 1 {
		return nil, fmt.Errorf("%w: BatchNormalization training outputs before opset 14", ErrNotSupported)
	}
	return im.emit(&BatchNorm{Epsilon: eps, Momentum: mom, Training: training != 0}, in...)
}

func importDropout(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 3); err != nil {
		return nil, err
	}
	x := in[0]
	ratio := float32(0.5)
	training := false
	if im.opset < 12 {
		r, err := n.AttrFloat("ratio", 0.5)
		if err != nil {
			return nil, err
		}
		ratio = r
		// Before opset 12 an ONNX runtime runs Dropout in inference mode
		// (is_test, removed in opset 7, meant the same).
	} else {
		if t, err := im.constTensor(in, 1, "ratio"); err != nil {
			return nil, err
		} else if t != nil {
			ratio = float32(t.Float64At(0))
		}
		if t, err := im.constTensor(in, 2, "training_mode"); err != nil {
			return nil, err
		} else if t != nil {
			training = t.Int64At(0) != 0
		}
	}
	if !training || ratio == 0 {
		outs := []*Value{x}
		if len(n.Outputs) > 1 && n.Outputs[1] != "" {
			mask := NewTensor(Bool, x.Shape)
			for i := range mask.data {
				mask.data[i] = 1
			}
			outs = append(outs, im.constant(mask))
		}
		return outs, nil
	}
	seed, err := n.AttrInt("seed", 0)
	if err != nil {
		return nil, err
	}
	op := &Dropout{Ratio: ratio, Seed: uint64(seed)}
	if _, err := op.Infer([]Type{x.Type}); err != nil {
		return nil, err
	}
	// A training-mode Dropout is never folded: keep it a node even on
	// constant input, so that the same executor draws the mask.
	node := &Node{Name: n.Name, Op: op, Inputs: []*Value{x}, Origin: im.origin}
	y, mask := im.newValue(x.Type), im.newValue(Type{Bool, x.Shape})
	y.Producer, mask.Producer = node, node
	node.Outputs = []*Value{y, mask}
	im.g.Nodes = append(im.g.Nodes, node)
	return []*Value{y, mask}, nil
}

// ---------------------------------------------------------------- convolution and pooling

// spatialAttrs reads kernel_shape/strides/dilations/pads/auto_pad of a
// convolution or pooling node over input x and kernel shape kernel, and
// resolves auto_pad into explicit pads.
func spatialAttrs(n *onnx.Node, x Shape, kernel []int) (strides, pads, dilations []int, err error) {
	k := len(kernel)
	if strides, _, err = attrInts(n, "strides"); err != nil {
		return
	}
	if dilations, _, err = attrInts(n, "dilations"); err != nil {
		return
	}
	if pads, _, err = attrInts(n, "pads"); err != nil {
		return
	}
	if strides == nil {
		strides = ones(k)
	}
	if dilations == nil {
		dilations = ones(k)
	}
	if pads == nil {
		pads = make([]int, 2*k)
	}
	if len(strides) != k || len(dilations) != k || len(pads) != 2*k {
		err = fmt.Errorf("kernel %v with strides %v, dilations %v, pads %v", kernel, strides, dilations, pads)
		return
	}
	autoPad, err := n.AttrString("auto_pad", "NOTSET")
	if err != nil {
		return
	}
	switch autoPad {
	case "NOTSET":
	case "VALID":
		pads = make([]int, 2*k)
	case "SAME_UPPER", "SAME_LOWER":
		pads = make([]int, 2*k)
		for d := range k {
			in := x[2+d]
			out := (in + strides[d] - 1) / strides[d]
			span := dilations[d]*(kernel[d]-1) + 1
			total := max(0, (out-1)*strides[d]+span-in)
			small, big := total/2, total-total/2
			if autoPad == "SAME_UPPER" {
				pads[d], pads[k+d] = small, big
			} else {
				pads[d], pads[k+d] = big, small
			}
		}
	default:
		err = fmt.Errorf("auto_pad %q", autoPad)
	}
	return
}

// checkWindows checks what spatialAttrs read for the ops whose Infer does
// not: positive strides and dilations, pads of at least 0.
func checkWindows(strides, pads, dilations []int) error {
	k := len(strides)
	for d := range k {
		if strides[d] < 1 || dilations[d] < 1 || pads[d] < 0 || pads[k+d] < 0 {
			return fmt.Errorf("strides %v, dilations %v, pads %v", strides, dilations, pads)
		}
	}
	return nil
}

func ones(k int) []int {
	out := make([]int, k)
	for i := range out {
		out[i] = 1
	}
	return out
}

func importConv(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	strides, pads, dil, group, err := convAttrs(n, in[0], in[1])
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Conv{Strides: strides, Pads: pads, Dilations: dil, Group: group}, in...))
}

// convAttrs reads the geometry of a convolution (Conv, DeformConv) of
// input x by weights w: the kernel is w's spatial shape (kernel_shape,
// when given, must agree), then spatialAttrs and group.
func convAttrs(n *onnx.Node, x, w *Value) (strides, pads, dilations []int, group int, err error) {
	if len(x.Shape) < 3 || len(w.Shape) != len(x.Shape) {
		return nil, nil, nil, 0, fmt.Errorf("input %v and weights %v, want NC<spatial> and MC<kernel> of one rank", x.Shape, w.Shape)
	}
	kernel := []int(w.Shape[2:].Clone())
	if ks, ok, err := attrInts(n, "kernel_shape"); err != nil {
		return nil, nil, nil, 0, err
	} else if ok && !slices.Equal(ks, kernel) {
		return nil, nil, nil, 0, fmt.Errorf("kernel_shape %v does not match weights %v", ks, w.Shape)
	}
	if strides, pads, dilations, err = spatialAttrs(n, x.Shape, kernel); err != nil {
		return nil, nil, nil, 0, err
	}
	group, err = attrInt(n, "group", 1)
	return strides, pads, dilations, group, err
}

func importPool(isMax bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 1); err != nil {
			return nil, err
		}
		x := in[0]
		kernel, ok, err := attrInts(n, "kernel_shape")
		if err != nil {
			return nil, err
		}
		if !ok || len(kernel) != len(x.Shape)-2 {
			return nil, fmt.Errorf("kernel_shape %v for input %v", kernel, x.Shape)
		}
		ceil, err := attrInt(n, "ceil_mode", 0)
		if err != nil {
			return nil, err
		}
		strides, pads, dil, err := spatialAttrs(n, x.Shape, kernel)
		if err != nil {
			return nil, err
		}
		op := &Pool{Max: isMax, Kernel: kernel, Strides: strides, Pads: pads, Dilations: dil, CeilMode: ceil != 0}
		cip, err := attrInt(n, "count_include_pad", 0)
		if err != nil {
			return nil, err
		}
		op.CountIncludePad = cip != 0
		if op.StorageOrder, err = attrInt(n, "storage_order", 0); err != nil {
			return nil, err
		}
		outs, err := im.emit(op, x)
		if err != nil {
			return nil, err
		}
		if !isMax {
			outs = outs[:1]
		}
		return outs, nil
	}
}

func importGlobalPool(fn ReduceFn) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 1); err != nil {
			return nil, err
		}
		x := in[0]
		if len(x.Shape) < 3 {
			return nil, fmt.Errorf("input %v, want NC<spatial>", x.Shape)
		}
		var axes []int
		for d := 2; d < len(x.Shape); d++ {
			axes = append(axes, d)
		}
		return one(im.emit1(&Reduce{Fn: fn, Axes: axes, KeepDims: true}, x))
	}
}

// ---------------------------------------------------------------- losses

func importLoss(softmax bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 2, 3); err != nil {
			return nil, err
		}
		red, err := n.AttrString("reduction", "mean")
		if err != nil {
			return nil, err
		}
		op := &NLLLoss{Softmax: softmax}
		switch red {
		case "none":
			op.Reduction = ReductionNone
		case "sum":
			op.Reduction = ReductionSum
		case "mean":
			op.Reduction = ReductionMean
		default:
			return nil, fmt.Errorf("reduction %q, want none, sum or mean", red)
		}
		if a := n.Attr("ignore_index"); a != nil {
			op.HasIgnore, op.IgnoreIndex = true, int(a.I)
		}
		outs, err := im.emit(op, in...)
		if err != nil {
			return nil, err
		}
		if !softmax {
			outs = outs[:1]
		}
		return outs, nil
	}
}
