package ir

import (
	"fmt"
	"slices"
	"sort"

	"github.com/dstune/dstune/onnx"
)

// InstanceNormalization, GroupNormalization, MeanVarianceNormalization and
// LRN import as compositions: the first two as a LayerNorm over the
// flattened group (which brings its fused kernel and gradient), followed by
// the per-channel scale and bias; the others as reductions and
// element-wise ops.

func init() {
	registerOp("", "InstanceNormalization", importInstanceNorm)
	registerOp("", "GroupNormalization", importGroupNorm)
	registerOp("", "MeanVarianceNormalization", importMeanVarianceNorm)
	registerOp("", "LRN", importLRN)
}

// onesLike is a constant of ones of dtype dt and the given shape.
func onesLike(dt DType, shape Shape) *Tensor { return filled(dt, shape, 1) }

// channelShape is [C, 1, ...] with rank-1 axes: a per-channel vector
// shaped to broadcast against [N, C, spatial...].
func channelShape(c, rank int) Shape {
	s := make(Shape, rank-1)
	for i := range s {
		s[i] = 1
	}
	s[0] = c
	return s
}

// groupNormalize normalizes x [N, C, spatial...] over each of groups
// groups of C/groups consecutive channels and all spatial positions (every
// channel its own group: instance normalization), then applies
// scale and bias, per channel.
func groupNormalize(im *importer, x, scale, bias *Value, groups int, eps float32, stash bool) (*Value, error) {
	n, c := x.Shape[0], x.Shape[1]
	if groups < 1 || c%groups != 0 {
		return nil, fmt.Errorf("%d channels do not split into %d groups", c, groups)
	}
	size := x.Shape[1:].Size() / groups
	// The LayerNorm's scale is a constant of ones over a group.
	if err := checkShape(Shape{size}, 4, maxFoldBytes); err != nil {
		return nil, fmt.Errorf("groups of %d elements: %w", size, err)
	}
	flat, err := im.reshape(x, Shape{n, groups, size})
	if err != nil {
		return nil, err
	}
	dt := x.DType
	if stash && dt.narrowFloat() {
		if flat, err = im.emit1(&Cast{To: Float32}, flat); err != nil {
			return nil, err
		}
	}
	y, err := im.emit1(&LayerNorm{Axis: 2, Epsilon: eps}, flat, im.constant(onesLike(flat.DType, Shape{size})))
	if err != nil {
		return nil, err
	}
	if y.DType != dt {
		if y, err = im.emit1(&Cast{To: dt}, y); err != nil {
			return nil, err
		}
	}
	if y, err = im.reshape(y, x.Shape); err != nil {
		return nil, err
	}
	cs := channelShape(c, len(x.Shape))
	for _, p := range []struct {
		v  *Value
		fn BinaryFn
	}{{scale, Mul}, {bias, Add}} {
		v, err := im.reshape(p.v, cs)
		if err != nil {
			return nil, err
		}
		if y, err = im.emit1(&Binary{Fn: p.fn}, y, v); err != nil {
			return nil, err
		}
	}
	return y, nil
}

func wantChannelVector(what string, v *Value, x *Value, length int) error {
	if v.DType != x.DType || !v.Shape.Equal(Shape{length}) {
		return fmt.Errorf("%s is %v, want %s[%d]", what, v.Type, x.DType, length)
	}
	return nil
}

func importInstanceNorm(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	x := in[0]
	if len(x.Shape) < 3 || !isFloat(x.DType) {
		return nil, fmt.Errorf("input is %v, want a float tensor N×C×D1×...", x.Type)
	}
	for i, what := range []string{"scale", "bias"} {
		if err := wantChannelVector(what, in[i+1], x, x.Shape[1]); err != nil {
			return nil, err
		}
	}
	eps, err := n.AttrFloat("epsilon", 1e-5)
	if err != nil {
		return nil, err
	}
	return one(groupNormalize(im, x, in[1], in[2], x.Shape[1], eps, false))
}

func importGroupNorm(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	x := in[0]
	if len(x.Shape) < 2 || !isFloat(x.DType) {
		return nil, fmt.Errorf("input is %v, want a float tensor N×C×...", x.Type)
	}
	groups, err := attrInt(n, "num_groups", 0)
	if err != nil {
		return nil, err
	}
	if n.Attr("num_groups") == nil {
		return nil, fmt.Errorf("num_groups is required")
	}
	c := x.Shape[1]
	if groups < 1 || c%groups != 0 {
		return nil, fmt.Errorf("num_groups %d, want a divisor of the %d channels", groups, c)
	}
	eps, err := n.AttrFloat("epsilon", 1e-5)
	if err != nil {
		return nil, err
	}
	stash, err := attrInt(n, "stash_type", 1)
	if err != nil {
		return nil, err
	}
	scale, bias := in[1], in[2]
	if im.opset < 21 {
		// GroupNormalization-18 scales and shifts per group: repeat each
		// group's value over its channels.
		for i, v := range []**Value{&scale, &bias} {
			if err := wantChannelVector([]string{"scale", "bias"}[i], *v, x, groups); err != nil {
				return nil, err
			}
			g, err := im.reshape(*v, Shape{groups, 1})
			if err != nil {
				return nil, err
			}
			if g, err = im.emit1(&Expand{Shape: Shape{groups, c / groups}}, g); err != nil {
				return nil, err
			}
			if *v, err = im.reshape(g, Shape{c}); err != nil {
				return nil, err
			}
		}
	} else {
		for i, what := range []string{"scale", "bias"} {
			if err := wantChannelVector(what, in[i+1], x, c); err != nil {
				return nil, err
			}
		}
	}
	// stash_type 1 computes the statistics in float32: for float16 and
	// bfloat16 inputs the normalization is widened; float32 and float64
	// inputs keep their own precision.
	return one(groupNormalize(im, x, scale, bias, groups, eps, stash == 1))
}

// importMeanVarianceNorm: y = (x - mean)/(sqrt(var) + 1e-9) over axes
// (default 0, 2, 3), the variance computed as the mean of squared
// deviations.
func importMeanVarianceNorm(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if !isFloat(x.DType) {
		return nil, fmt.Errorf("input is %s, want a float type", x.DType)
	}
	given, ok, err := attrInts(n, "axes")
	if err != nil {
		return nil, err
	}
	if !ok {
		given = []int{0, 2, 3}
	}
	var axes []int
	for _, a := range given {
		a, err := normAxis(a, len(x.Shape))
		if err != nil {
			return nil, fmt.Errorf("axes %v: %w", given, err)
		}
		if !slices.Contains(axes, a) {
			axes = append(axes, a)
		}
	}
	sort.Ints(axes)
	if len(axes) == 0 {
		return nil, fmt.Errorf("axes is empty")
	}
	mean, err := im.emit1(&Reduce{Fn: ReduceMean, Axes: axes, KeepDims: true}, x)
	if err != nil {
		return nil, err
	}
	dev, err := im.emit1(&Binary{Fn: Sub}, x, mean)
	if err != nil {
		return nil, err
	}
	sq, err := im.emit1(&Binary{Fn: Mul}, dev, dev)
	if err != nil {
		return nil, err
	}
	vr, err := im.emit1(&Reduce{Fn: ReduceMean, Axes: axes, KeepDims: true}, sq)
	if err != nil {
		return nil, err
	}
	std, err := im.emit1(&Unary{Fn: Sqrt}, vr)
	if err != nil {
		return nil, err
	}
	if std, err = im.emit1(&Binary{Fn: Add}, std, im.constant(filled(x.DType, Shape{}, 1e-9))); err != nil {
		return nil, err
	}
	return one(im.emit1(&Binary{Fn: Div}, dev, std))
}

// importLRN: y = x/(bias + alpha/size·Σ x²)^beta, the sum over the size
// channels around each channel (floor((size-1)/2) before, the rest after,
// clipped to the tensor), computed as a convolution of x² with ones over
// the channel axis.
func importLRN(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if len(x.Shape) < 2 || !isFloat(x.DType) {
		return nil, fmt.Errorf("input is %v, want a float tensor N×C×...", x.Type)
	}
	size, err := attrInt(n, "size", 0)
	if err != nil {
		return nil, err
	}
	if size < 1 {
		return nil, fmt.Errorf("size %d, want a positive number (it is required)", size)
	}
	alpha, err := n.AttrFloat("alpha", 1e-4)
	if err != nil {
		return nil, err
	}
	beta, err := n.AttrFloat("beta", 0.75)
	if err != nil {
		return nil, err
	}
	bias, err := n.AttrFloat("bias", 1)
	if err != nil {
		return nil, err
	}
	nb, c := x.Shape[0], x.Shape[1]
	rest := x.Shape[2:].Size()
	sq, err := im.emit1(&Binary{Fn: Mul}, x, x)
	if err != nil {
		return nil, err
	}
	if sq, err = im.reshape(sq, Shape{nb, 1, c, rest}); err != nil {
		return nil, err
	}
	// A window reaching more than c-1 channels either side covers no more
	// of the tensor than one reaching exactly that far.
	before, after := (size-1)/2, size-1-(size-1)/2
	before, after = min(before, c-1), min(after, c-1)
	conv := &Conv{Strides: []int{1, 1}, Dilations: []int{1, 1}, Pads: []int{before, 0, after, 0}, Group: 1}
	sum, err := im.emit1(conv, sq, im.constant(onesLike(x.DType, Shape{1, 1, before + after + 1, 1})))
	if err != nil {
		return nil, err
	}
	if sum, err = im.reshape(sum, x.Shape); err != nil {
		return nil, err
	}
	scaled, err := im.emit1(&Binary{Fn: Mul}, sum, im.constant(filled(x.DType, Shape{}, float64(alpha)/float64(size))))
	if err != nil {
		return nil, err
	}
	if scaled, err = im.emit1(&Binary{Fn: Add}, scaled, im.constant(filled(x.DType, Shape{}, float64(bias)))); err != nil {
		return nil, err
	}
	den, err := im.emit1(&Binary{Fn: Pow}, scaled, im.constant(filled(x.DType, Shape{}, float64(beta))))
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Binary{Fn: Div}, x, den))
}
