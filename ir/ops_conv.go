package ir

import (
	"fmt"
	"math"
	"slices"

	"github.com/dstune/dstune/onnx"
)

func init() {
	registerOp("", "ConvTranspose", importConvTranspose)
	registerOp("", "LpPool", importLpPool)
	registerOp("", "MaxUnpool", importMaxUnpool)
	registerOp("", "DeformConv", importDeformConv)
	registerStaticOperands("", "MaxUnpool", 2)
}

// ---------------------------------------------------------------- ConvTranspose

// importConvTranspose imports ConvTranspose as ConvGradInput: the
// transposed convolution of X [N, C, i...] with W [C, M/group, k...] is
// the gradient, with respect to its input, of the convolution of an
// [N, M, o...] tensor with W, plus the optional bias [M].
func importConvTranspose(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	x, w := in[0], in[1]
	if len(x.Shape) < 3 || len(w.Shape) != len(x.Shape) {
		return nil, fmt.Errorf("input %v and weights %v, want NC<spatial> and CM<kernel> of one rank", x.Shape, w.Shape)
	}
	kernel := []int(w.Shape[2:].Clone())
	if ks, ok, err := attrInts(n, "kernel_shape"); err != nil {
		return nil, err
	} else if ok && !slices.Equal(ks, kernel) {
		return nil, fmt.Errorf("kernel_shape %v does not match weights %v", ks, w.Shape)
	}
	group, err := attrInt(n, "group", 1)
	if err != nil {
		return nil, err
	}
	if group < 1 || x.Shape[1]%group != 0 || w.Shape[0] != x.Shape[1] {
		return nil, fmt.Errorf("input %v, weights %v and group %d: want weights [C, M/group, k...] for C input channels divisible by group", x.Shape, w.Shape, group)
	}
	conv, out, err := convTransposeGeometry(n, x.Shape[2:], kernel)
	if err != nil {
		return nil, err
	}
	conv.Group = group
	outFull := append(Shape{x.Shape[0], w.Shape[1] * group}, out...)
	if err := checkShape(outFull, x.DType.Size(), maxTensorBytes); err != nil {
		return nil, fmt.Errorf("output %v: %w", outFull, err)
	}
	var y *Value
	if x.Shape[2:].Size() == 0 {
		// No input position, so no window of the convolution this is the
		// gradient of: every output is zero, before the bias.
		if x.DType != w.DType || !isFloat(x.DType) {
			return nil, fmt.Errorf("input and weights are %s and %s, want one float type", x.DType, w.DType)
		}
		if err := checkShape(outFull, x.DType.Size(), maxFoldBytes); err != nil {
			return nil, fmt.Errorf("output %v of an empty input: %w", outFull, err)
		}
		y = im.constant(NewTensor(x.DType, outFull))
	} else if y, err = im.emit1(&ConvGradInput{Conv: conv, InputShape: outFull}, x, w); err != nil {
		return nil, err
	}
	if len(in) < 3 || in[2] == nil {
		return []*Value{y}, nil
	}
	b := in[2]
	if !b.Shape.Equal(Shape{outFull[1]}) {
		return nil, fmt.Errorf("bias %v, want [%d]", b.Shape, outFull[1])
	}
	if b, err = im.reshape(b, channelShape(outFull[1], len(outFull))); err != nil {
		return nil, err
	}
	return one(im.emit1(&Binary{Fn: Add}, y, b))
}

// convTransposeGeometry resolves ConvTranspose's strides, dilations,
// pads, output_padding, output_shape and auto_pad over spatial input
// lengths in, as ONNX's definition does, into the output lengths and the
// convolution whose input gradient it is: the begin pads, and the end pad
// that makes the convolution's windows exactly in's positions (negative
// where output_padding or output_shape extend the output past the last
// window). Where the definition and onnxruntime part (the pads derived
// from output_shape or auto_pad SAME_*), it follows onnxruntime, as the
// models in use were checked against it.
func convTransposeGeometry(n *onnx.Node, in Shape, kernel []int) (Conv, []int, error) {
	k := len(in)
	spatialAttr := func(name string, def int, length int) ([]int, error) {
		v, ok, err := attrInts(n, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			v = make([]int, length)
			for i := range v {
				v[i] = def
			}
		}
		if len(v) != length {
			return nil, fmt.Errorf("%s %v, want %d values", name, v, length)
		}
		return v, nil
	}
	var conv Conv
	strides, err := spatialAttr("strides", 1, k)
	if err != nil {
		return conv, nil, err
	}
	dilations, err := spatialAttr("dilations", 1, k)
	if err != nil {
		return conv, nil, err
	}
	outPad, err := spatialAttr("output_padding", 0, k)
	if err != nil {
		return conv, nil, err
	}
	// natural is each axis's length before any padding is cut:
	// stride·(in-1) + output_padding + dilation·(kernel-1) + 1.
	span, natural := make([]int, k), make([]int, k)
	for d := range k {
		if strides[d] < 1 || dilations[d] < 1 {
			return conv, nil, fmt.Errorf("strides %v and dilations %v, want positive values", strides, dilations)
		}
		if outPad[d] < 0 || (outPad[d] >= strides[d] && outPad[d] >= dilations[d]) {
			return conv, nil, fmt.Errorf("output_padding %v, want each smaller than its stride %v or dilation %v", outPad, strides, dilations)
		}
		var ok bool
		if span[d], ok = windowSpan(kernel[d], dilations[d]); !ok {
			return conv, nil, fmt.Errorf("dilations %v over kernel %v span more than an int holds", dilations, kernel)
		}
		if in[d] > 0 && in[d]-1 > math.MaxInt/strides[d] {
			return conv, nil, fmt.Errorf("strides %v over input %v span more than an int holds", strides, in)
		}
		if natural[d], ok = addInts(strides[d]*(in[d]-1), outPad[d], span[d]); !ok {
			return conv, nil, fmt.Errorf("strides %v, dilations %v and output_padding %v over input %v: the output length is more than an int holds", strides, dilations, outPad, in)
		}
	}
	outShape, hasOutShape, err := attrInts(n, "output_shape")
	if err != nil {
		return conv, nil, err
	}
	if hasOutShape {
		switch len(outShape) {
		case k:
		case k + 2:
			outShape = outShape[2:]
		default:
			return conv, nil, fmt.Errorf("output_shape %v for %d spatial axes", outShape, k)
		}
		for _, s := range outShape {
			if s < 0 || s > maxTensorBytes {
				return conv, nil, fmt.Errorf("output_shape %v", outShape)
			}
		}
	}
	autoPad, err := n.AttrString("auto_pad", "NOTSET")
	if err != nil {
		return conv, nil, err
	}
	pads := make([]int, 2*k)
	out := make([]int, k)
	switch autoPad {
	case "NOTSET", "VALID":
		if autoPad == "NOTSET" {
			if pads, err = spatialAttr("pads", 0, 2*k); err != nil {
				return conv, nil, err
			}
		}
		for d := range k {
			if pads[d] < 0 || pads[k+d] < 0 || pads[d] > maxTensorBytes || pads[k+d] > maxTensorBytes {
				return conv, nil, fmt.Errorf("pads %v, want non-negative values of at most %d", pads, maxTensorBytes)
			}
			out[d] = natural[d] - pads[d] - pads[k+d]
		}
	case "SAME_UPPER", "SAME_LOWER":
		// The output is in·stride long where the natural length reaches
		// that far, cut as below; a shorter natural length is kept
		// whole (onnxruntime's reading of the definition).
		for d := range k {
			if in[d] > math.MaxInt/strides[d] {
				return conv, nil, fmt.Errorf("strides %v over input %v: the output length is more than an int holds", strides, in)
			}
			out[d] = min(in[d]*strides[d], natural[d])
		}
	default:
		return conv, nil, fmt.Errorf("auto_pad %q", autoPad)
	}
	if hasOutShape {
		// The output length is given, and the pads attribute ignored; a
		// longer output than the natural length has zeros past it.
		copy(out, outShape)
	}
	if hasOutShape || autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER" {
		// The pads are derived from the output length: what the natural
		// length has beyond it is cut from both ends, the odd one more at
		// the end for SAME_UPPER and at the beginning otherwise.
		for d := range k {
			total := max(0, natural[d]-out[d])
			if autoPad == "SAME_UPPER" {
				pads[d] = total / 2
			} else {
				pads[d] = total - total/2
			}
		}
	}
	conv = Conv{Strides: strides, Dilations: dilations, Pads: make([]int, 2*k)}
	for d := range k {
		if out[d] < 1 {
			return conv, nil, fmt.Errorf("output length %d on spatial axis %d", out[d], d)
		}
		conv.Pads[d] = pads[d]
		conv.Pads[k+d] = natural[d] - outPad[d] - out[d] - pads[d]
	}
	return conv, out, nil
}

// gradRule of ConvGradInput (the transposed convolution): for
// out = ConvGradInput(dy, W), the gradient with respect to dy is the
// forward convolution of the output's gradient with W, and with respect to
// W the convolution's weight gradient with dy in the role of the
// convolution's output gradient and the output's gradient in the role of
// its input.
func (op *ConvGradInput) gradRule(d *differ, c *gradCtx) error {
	g := c.dy[0]
	if c.needs(0) {
		c.add(0, d.emit1(&Conv{Strides: op.Strides, Pads: op.Pads, Dilations: op.Dilations, Group: op.Group}, g, c.in(1)))
	}
	if c.needs(1) {
		c.add(1, d.emit1(&ConvGradWeight{Conv: op.Conv, WeightShape: c.in(1).Shape.Clone()}, c.in(0), g))
	}
	return nil
}

// ---------------------------------------------------------------- LpPool

// importLpPool: y = (Σ |x|^p)^(1/p) over each window, computed as a
// depthwise convolution of |x|^p with ones (the padding adds nothing; in
// ceil mode the end padding grows so that the last, partial windows
// exist), then the p-th root.
func importLpPool(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if len(x.Shape) < 3 || !isFloat(x.DType) {
		return nil, fmt.Errorf("input is %v, want a float tensor N×C×D1×...", x.Type)
	}
	kernel, ok, err := attrInts(n, "kernel_shape")
	if err != nil {
		return nil, err
	}
	if !ok || len(kernel) != len(x.Shape)-2 {
		return nil, fmt.Errorf("kernel_shape %v for input %v", kernel, x.Shape)
	}
	for _, kd := range kernel {
		if kd < 1 || kd > maxTensorBytes {
			return nil, fmt.Errorf("kernel_shape %v", kernel)
		}
	}
	p, err := attrInt(n, "p", 2)
	if err != nil {
		return nil, err
	}
	if p < 1 {
		return nil, fmt.Errorf("p %d, want a positive integer", p)
	}
	ceil, err := attrInt(n, "ceil_mode", 0)
	if err != nil {
		return nil, err
	}
	strides, pads, dil, err := spatialAttrs(n, x.Shape, kernel)
	if err != nil {
		return nil, err
	}
	if err := checkWindows(strides, pads, dil); err != nil {
		return nil, err
	}
	k := len(kernel)
	for d := range k {
		if ceil != 0 {
			want, err := windowCount(x.Shape[2+d], kernel[d], strides[d], dil[d], pads[d], pads[k+d], true)
			if err != nil {
				return nil, fmt.Errorf("kernel_shape %v over input %v, spatial axis %d: %w", kernel, x.Shape[2:], d, err)
			}
			span, _ := windowSpan(kernel[d], dil[d])
			pads[k+d] = max(pads[k+d], (want-1)*strides[d]+span-x.Shape[2+d]-pads[d])
		}
	}
	c := x.Shape[1]
	wShape := append(Shape{c, 1}, kernel...)
	if err := checkShape(wShape, x.DType.Size(), maxFoldBytes); err != nil {
		return nil, fmt.Errorf("kernel_shape %v: %w", kernel, err)
	}
	var powered *Value
	switch p {
	case 1:
		powered, err = im.emit1(&Unary{Fn: Abs}, x)
	case 2:
		powered, err = im.emit1(&Binary{Fn: Mul}, x, x)
	default:
		var abs *Value
		if abs, err = im.emit1(&Unary{Fn: Abs}, x); err == nil {
			powered, err = im.emit1(&Binary{Fn: Pow}, abs, im.constant(filled(x.DType, Shape{}, float64(p))))
		}
	}
	if err != nil {
		return nil, err
	}
	conv := &Conv{Strides: strides, Pads: pads, Dilations: dil, Group: c}
	sum, err := im.emit1(conv, powered, im.constant(onesLike(x.DType, wShape)))
	if err != nil {
		return nil, err
	}
	switch p {
	case 1:
		return []*Value{sum}, nil
	case 2:
		return one(im.emit1(&Unary{Fn: Sqrt}, sum))
	}
	return one(im.emit1(&Binary{Fn: Pow}, sum, im.constant(filled(x.DType, Shape{}, 1/float64(p)))))
}

// ---------------------------------------------------------------- MaxUnpool

// MaxUnpool scatters X [N, C, d...] into a zero tensor of shape Pooled
// at the flat indices I (of X's shape), as MaxPool's second output gives
// them for its input of shape Pooled: y.flat[I[i]] = X[i], the last
// written winning where indices repeat. The result sits at the origin of
// a zero tensor of shape Shape (output_shape; Pooled when not given).
type MaxUnpool struct {
	Pooled, Shape Shape
}

func (op *MaxUnpool) Name() string { return "MaxUnpool" }

func (op *MaxUnpool) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	x, idx := in[0], in[1]
	if !isComputable(x.DType) {
		return nil, fmt.Errorf("input is %s, want a number type", x.DType)
	}
	if idx.DType != Int64 || !idx.Shape.Equal(x.Shape) {
		return nil, fmt.Errorf("indices are %v, want int64%v", idx, x.Shape)
	}
	r := len(x.Shape)
	if r < 3 || len(op.Pooled) != r || len(op.Shape) != r || op.Pooled[0] != x.Shape[0] || op.Pooled[1] != x.Shape[1] {
		return nil, fmt.Errorf("unpooled shape %v for input %v", op.Pooled, x.Shape)
	}
	for d := range r {
		if op.Shape[d] < op.Pooled[d] || (d < 2 && op.Shape[d] != op.Pooled[d]) {
			return nil, fmt.Errorf("output shape %v, want at least the unpooled shape %v", op.Shape, op.Pooled)
		}
	}
	return []Type{{x.DType, op.Shape.Clone()}}, nil
}

func (op *MaxUnpool) Eval(in, out []*Tensor) error {
	x, idx, y := in[0], in[1], out[0]
	clear(y.data)
	es := x.dtype.Size()
	total := int64(op.Pooled.Size())
	pos := make([]int, len(op.Pooled))
	outStrides := op.Shape.Strides()
	for i, j := range idx.Int64s() {
		if j < 0 || j >= total {
			return fmt.Errorf("MaxUnpool index %d out of range [0, %d)", j, total)
		}
		unflatten(int(j), op.Pooled, pos)
		o := 0
		for d, p := range pos {
			o += p * outStrides[d]
		}
		copy(y.data[o*es:(o+1)*es], x.data[i*es:(i+1)*es])
	}
	return nil
}

// gradRule of MaxUnpool: each input element's gradient is the output
// gradient where it landed (zero for one overwritten by a later element
// at the same index).
func (op *MaxUnpool) gradRule(d *differ, c *gradCtx) error {
	if c.needs(0) {
		c.add(0, d.emit1(&MaxUnpoolGrad{MaxUnpool: *op}, c.dy[0], c.in(1)))
	}
	return nil
}

// MaxUnpoolGrad is the gradient of MaxUnpool (the embedded shapes) with
// respect to X: inputs dy (of the output's shape) and the indices; dX[i]
// is dy where X[i] was written, zero where a later element overwrote it.
type MaxUnpoolGrad struct {
	MaxUnpool
}

func (op *MaxUnpoolGrad) Name() string { return "MaxUnpoolGrad" }

func (op *MaxUnpoolGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	dy, idx := in[0], in[1]
	if !isFloat(dy.DType) || !dy.Shape.Equal(op.Shape) {
		return nil, fmt.Errorf("dy is %v, want a float tensor %v", dy, op.Shape)
	}
	if _, err := op.MaxUnpool.Infer([]Type{{dy.DType, idx.Shape}, idx}); err != nil {
		return nil, err
	}
	return []Type{{dy.DType, idx.Shape.Clone()}}, nil
}

func (op *MaxUnpoolGrad) Eval(in, out []*Tensor) error {
	dy, idx, dx := in[0], in[1], out[0]
	indices := idx.Int64s()
	total := int64(op.Pooled.Size())
	last := make(map[int64]int, len(indices))
	for i, j := range indices {
		if j < 0 || j >= total {
			return fmt.Errorf("MaxUnpool index %d out of range [0, %d)", j, total)
		}
		last[j] = i
	}
	pos := make([]int, len(op.Pooled))
	outStrides := op.Shape.Strides()
	res := make([]float64, dx.Len())
	for i, j := range indices {
		if last[j] != i {
			continue
		}
		unflatten(int(j), op.Pooled, pos)
		o := 0
		for d, p := range pos {
			o += p * outStrides[d]
		}
		res[i] = dy.Float64At(o)
	}
	storeFloats(dx, res)
	return nil
}

// importMaxUnpool: the unpooled shape is the input's inverted through the
// pooling's kernel, strides and pads, (in-1)·stride + kernel - pads; the
// output's is output_shape (input 2) when given.
func importMaxUnpool(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	x := in[0]
	if len(x.Shape) < 3 {
		return nil, fmt.Errorf("input %v, want N×C×D1×...", x.Shape)
	}
	k := len(x.Shape) - 2
	kernel, ok, err := attrInts(n, "kernel_shape")
	if err != nil {
		return nil, err
	}
	if !ok || len(kernel) != k {
		return nil, fmt.Errorf("kernel_shape %v for input %v", kernel, x.Shape)
	}
	strides, _, err := attrInts(n, "strides")
	if err != nil {
		return nil, err
	}
	if strides == nil {
		strides = ones(k)
	}
	pads, _, err := attrInts(n, "pads")
	if err != nil {
		return nil, err
	}
	if pads == nil {
		pads = make([]int, 2*k)
	}
	if len(strides) != k || len(pads) != 2*k {
		return nil, fmt.Errorf("kernel_shape %v, strides %v, pads %v", kernel, strides, pads)
	}
	shape := Shape{x.Shape[0], x.Shape[1]}
	for d := range k {
		if kernel[d] < 1 || strides[d] < 1 || pads[d] < 0 || pads[k+d] < 0 || kernel[d] > maxTensorBytes || strides[d] > maxTensorBytes {
			return nil, fmt.Errorf("kernel_shape %v, strides %v, pads %v", kernel, strides, pads)
		}
		l := (x.Shape[2+d]-1)*strides[d] + kernel[d] - pads[d] - pads[k+d]
		if l < 0 {
			return nil, fmt.Errorf("kernel_shape %v, strides %v and pads %v leave no output", kernel, strides, pads)
		}
		shape = append(shape, l)
	}
	op := &MaxUnpool{Pooled: shape, Shape: shape}
	if given, ok, err := im.constInts(in, 2, "output_shape"); err != nil {
		return nil, err
	} else if ok {
		if len(given) != len(x.Shape) {
			return nil, fmt.Errorf("output_shape %v for input %v", given, x.Shape)
		}
		op.Shape = Shape(given)
	}
	return one(im.emit1(op, x, in[1]))
}

// ---------------------------------------------------------------- DeformConv

// DeformConv is a convolution whose kernel taps are displaced by learned
// offsets: X [N, C, d...], W [M, C/Group, k...], offset
// [N, OffsetGroup·K·r, o...] (K kernel positions, r spatial axes; for
// each offset group and kernel position the displacement along each axis),
// optional bias [M] and mask [N, OffsetGroup·K, o...] scaling each tap.
// Tap q of output position o reads X at o·stride − pad + q·dilation +
// offset, interpolated multilinearly with zeros outside; channel c uses
// offset group c/(C/OffsetGroup). Output [N, M, o...].
type DeformConv struct {
	Strides, Pads, Dilations []int
	Group, OffsetGroup       int
}

func (op *DeformConv) Name() string { return "DeformConv" }

func (op *DeformConv) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 3, 5); err != nil {
		return nil, err
	}
	x, w, off := in[0], in[1], in[2]
	if !isFloat(x.DType) || w.DType != x.DType || off.DType != x.DType {
		return nil, fmt.Errorf("X, W and offset are %s, %s, %s; want one float type", x.DType, w.DType, off.DType)
	}
	r := len(x.Shape) - 2
	if r < 1 || len(w.Shape) != r+2 || len(off.Shape) != r+2 || len(op.Strides) != r || len(op.Dilations) != r || len(op.Pads) != 2*r {
		return nil, fmt.Errorf("X %v, W %v, offset %v, strides %v, pads %v, dilations %v do not agree", x.Shape, w.Shape, off.Shape, op.Strides, op.Pads, op.Dilations)
	}
	g, og := op.Group, op.OffsetGroup
	if g < 1 || og < 1 || x.Shape[1] != w.Shape[1]*g || w.Shape[0]%g != 0 || x.Shape[1]%og != 0 {
		return nil, fmt.Errorf("channels: X %v, W %v, group %d, offset_group %d", x.Shape, w.Shape, g, og)
	}
	k := w.Shape[2:].Size()
	out := Shape{x.Shape[0], w.Shape[0]}
	for d := range r {
		n, err := windowCount(x.Shape[2+d], w.Shape[2+d], op.Strides[d], op.Dilations[d], op.Pads[d], op.Pads[r+d], false)
		if err != nil {
			return nil, fmt.Errorf("kernel %v over input %v (strides %v, dilations %v, pads %v), spatial axis %d: %w", w.Shape[2:], x.Shape[2:], op.Strides, op.Dilations, op.Pads, d, err)
		}
		out = append(out, n)
	}
	if want := append(Shape{x.Shape[0], og * k * r}, out[2:]...); !off.Shape.Equal(want) {
		return nil, fmt.Errorf("offset is %v, want %v", off.Shape, want)
	}
	if b, ok := optional(in, 3); ok && (b.DType != x.DType || !b.Shape.Equal(Shape{w.Shape[0]})) {
		return nil, fmt.Errorf("bias is %v, want %s[%d]", b, x.DType, w.Shape[0])
	}
	if m, ok := optional(in, 4); ok {
		if want := append(Shape{x.Shape[0], og * k}, out[2:]...); m.DType != x.DType || !m.Shape.Equal(want) {
			return nil, fmt.Errorf("mask is %v, want %s%v", m, x.DType, want)
		}
	}
	return []Type{{x.DType, out}}, nil
}

// deformSampling holds, for one output position of one image, where each
// tap of each offset group samples: for tap t = g·K + q its 2^r corners'
// flat positions in the spatial plane (-1 outside the input), their
// multilinear weights and the weights' derivatives along each axis.
type deformSampling struct {
	op                    *DeformConv
	r, taps, corners      int
	in, out, kern         Shape
	inStr                 []int
	pos                   []int     // [taps·corners]
	weight                []float64 // [taps·corners]
	slope                 []float64 // [taps·corners·r]
	outPos, kPos, lo      []int
	frac                  []float64
	offsets               []float64
	offsetGroups, outSize int
}

func (op *DeformConv) sampling(x, w, offset *Tensor, outShape Shape) *deformSampling {
	r := len(x.shape) - 2
	s := &deformSampling{op: op, r: r, corners: 1 << r, in: x.shape[2:], out: outShape[2:], kern: w.shape[2:],
		offsets: Convert(offset, Float64).Float64s(), offsetGroups: op.OffsetGroup}
	s.inStr = s.in.Strides()
	s.outSize = s.out.Size()
	s.taps = op.OffsetGroup * s.kern.Size()
	s.pos = make([]int, s.taps*s.corners)
	s.weight = make([]float64, s.taps*s.corners)
	s.slope = make([]float64, s.taps*s.corners*r)
	s.outPos, s.kPos, s.lo, s.frac = make([]int, r), make([]int, r), make([]int, r), make([]float64, r)
	return s
}

// at computes the sampling of output position o of image b.
func (s *deformSampling) at(b, o int) {
	op, r := s.op, s.r
	kSize := s.kern.Size()
	unflatten(o, s.out, s.outPos)
	for t := range s.taps {
		unflatten(t%kSize, s.kern, s.kPos)
		for d := range r {
			p := float64(s.outPos[d]*op.Strides[d]-op.Pads[d]+s.kPos[d]*op.Dilations[d]) +
				s.offsets[((b*s.taps+t)*r+d)*s.outSize+o]
			f := math.Floor(p)
			if math.IsNaN(f) || f < -2 || f > float64(s.in[d]) {
				f = -2 // every corner outside
			}
			s.lo[d], s.frac[d] = int(f), p-f
		}
		for j := range s.corners {
			k := t*s.corners + j
			w, pos := 1.0, 0
			for d := range r {
				i := s.lo[d]
				if j>>d&1 == 1 {
					i++
					w *= s.frac[d]
				} else {
					w *= 1 - s.frac[d]
				}
				if i < 0 || i >= s.in[d] {
					pos = -1
					break
				}
				pos += i * s.inStr[d]
			}
			s.pos[k], s.weight[k] = pos, w
			if pos < 0 {
				continue
			}
			for d := range r {
				// ∂w/∂p_d: the other axes' factors, ±1 for this one.
				g := 1.0
				for e := range r {
					switch {
					case e == d && j>>e&1 == 1:
					case e == d:
						g = -g
					case j>>e&1 == 1:
						g *= s.frac[e]
					default:
						g *= 1 - s.frac[e]
					}
				}
				s.slope[k*r+d] = g
			}
		}
	}
}

// sample is tap t's interpolated value of the plane.
func (s *deformSampling) sample(t int, plane []float64) float64 {
	v := 0.0
	for k := t * s.corners; k < (t+1)*s.corners; k++ {
		if s.pos[k] >= 0 {
			v += s.weight[k] * plane[s.pos[k]]
		}
	}
	return v
}

func (op *DeformConv) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, w, y := in[0], in[1], out[0]
	xv, wv := Convert(x, Float64).Float64s(), Convert(w, Float64).Float64s()
	var bv, mv []float64
	if b := optIn(in, 3); b != nil {
		bv = Convert(b, Float64).Float64s()
	}
	if m := optIn(in, 4); m != nil {
		mv = Convert(m, Float64).Float64s()
	}
	s := op.sampling(x, w, in[2], y.shape)
	n, c, m := x.shape[0], x.shape[1], w.shape[0]
	inSize, kSize := s.in.Size(), s.kern.Size()
	cg, mg := c/op.Group, m/op.Group
	perOffsetGroup := c / op.OffsetGroup
	res := make([]float64, y.Len())
	for b := range n {
		for o := range s.outSize {
			s.at(b, o)
			for oc := range m {
				sum := 0.0
				if bv != nil {
					sum = bv[oc]
				}
				grp := oc / mg
				for ic := range cg {
					ch := grp*cg + ic
					plane := xv[(b*c+ch)*inSize : (b*c+ch+1)*inSize]
					for q := range kSize {
						t := (ch/perOffsetGroup)*kSize + q
						v := s.sample(t, plane)
						if mv != nil {
							v *= mv[(b*s.taps+t)*s.outSize+o]
						}
						sum += wv[(oc*cg+ic)*kSize+q] * v
					}
				}
				res[(b*m+oc)*s.outSize+o] = sum
			}
		}
	}
	storeFloats(y, res)
	return nil
}

// gradRule of DeformConv: DeformConvGrad gives the gradients of X, W,
// the offsets and the mask; the bias's is dy summed over the batch and
// the spatial axes.
func (op *DeformConv) gradRule(d *differ, c *gradCtx) error {
	dy := c.dy[0]
	if c.needs(0) || c.needs(1) || c.needs(2) || c.needs(4) {
		ins := []*Value{dy, c.in(0), c.in(1), c.in(2)}
		if mask := optIn(c.n.Inputs, 4); mask != nil {
			ins = append(ins, mask)
		}
		outs := d.emit(&DeformConvGrad{DeformConv: *op}, ins...)
		for i, input := range []int{0, 1, 2, 4} {
			if c.needs(input) {
				c.add(input, outs[i])
			}
		}
	}
	if c.needs(3) {
		axes := []int{0}
		for a := 2; a < len(dy.Shape); a++ {
			axes = append(axes, a)
		}
		c.add(3, d.emit1(&Reduce{Fn: ReduceSum, Axes: axes}, dy))
	}
	return nil
}

// DeformConvGrad is the gradient of DeformConv (the embedded attributes):
// inputs dy, X, W, offset and the optional mask; outputs the gradients of
// X (scattered through the sampling weights), W, the offsets (through the
// weights' derivatives) and the mask (whose shape it has also without a
// mask input).
type DeformConvGrad struct {
	DeformConv
}

func (op *DeformConvGrad) Name() string { return "DeformConvGrad" }

func (op *DeformConvGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 4, 5); err != nil {
		return nil, err
	}
	fwdIn := []Type{in[1], in[2], in[3], {}}
	if m, ok := optional(in, 4); ok {
		fwdIn = append(fwdIn, m)
	}
	fwd, err := op.DeformConv.Infer(fwdIn)
	if err != nil {
		return nil, err
	}
	if !in[0].Shape.Equal(fwd[0].Shape) || in[0].DType != fwd[0].DType {
		return nil, fmt.Errorf("dy is %v, DeformConv's output %v", in[0], fwd[0])
	}
	x, w := in[1], in[2]
	mask := Type{x.DType, append(Shape{x.Shape[0], op.OffsetGroup * w.Shape[2:].Size()}, fwd[0].Shape[2:]...)}
	return []Type{x, w, in[3], mask}, nil
}

func (op *DeformConvGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, x, w := in[0], in[1], in[2]
	dyv, xv, wv := Convert(dy, Float64).Float64s(), Convert(x, Float64).Float64s(), Convert(w, Float64).Float64s()
	var mv []float64
	if m := optIn(in, 4); m != nil {
		mv = Convert(m, Float64).Float64s()
	}
	s := op.sampling(x, w, in[3], dy.shape)
	n, c, m, r := x.shape[0], x.shape[1], w.shape[0], s.r
	inSize, kSize := s.in.Size(), s.kern.Size()
	cg, mg := c/op.Group, m/op.Group
	perOffsetGroup := c / op.OffsetGroup
	dx, dw := make([]float64, x.Len()), make([]float64, w.Len())
	doff := make([]float64, in[3].Len())
	dmask := make([]float64, n*s.taps*s.outSize)
	for b := range n {
		for o := range s.outSize {
			s.at(b, o)
			for oc := range m {
				g := dyv[(b*m+oc)*s.outSize+o]
				if g == 0 {
					continue
				}
				grp := oc / mg
				for ic := range cg {
					ch := grp*cg + ic
					base := (b*c + ch) * inSize
					plane := xv[base : base+inSize]
					for q := range kSize {
						t := (ch/perOffsetGroup)*kSize + q
						mi := (b*s.taps+t)*s.outSize + o
						scale := 1.0
						if mv != nil {
							scale = mv[mi]
						}
						wi := (oc*cg+ic)*kSize + q
						v := s.sample(t, plane)
						dw[wi] += g * scale * v
						dmask[mi] += g * wv[wi] * v
						gs := g * wv[wi] * scale
						for k := t * s.corners; k < (t+1)*s.corners; k++ {
							p := s.pos[k]
							if p < 0 {
								continue
							}
							dx[base+p] += gs * s.weight[k]
							for d := range r {
								doff[((b*s.taps+t)*r+d)*s.outSize+o] += gs * s.slope[k*r+d] * plane[p]
							}
						}
					}
				}
			}
		}
	}
	for i, v := range [][]float64{dx, dw, doff, dmask} {
		if i < len(out) && out[i] != nil {
			storeFloats(out[i], v)
		}
	}
	return nil
}

func importDeformConv(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 5); err != nil {
		return nil, err
	}
	strides, pads, dil, group, err := convAttrs(n, in[0], in[1])
	if err != nil {
		return nil, err
	}
	if err := checkWindows(strides, pads, dil); err != nil {
		return nil, err
	}
	offsetGroup, err := attrInt(n, "offset_group", 1)
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&DeformConv{Strides: strides, Pads: pads, Dilations: dil, Group: group, OffsetGroup: offsetGroup}, in...))
}
