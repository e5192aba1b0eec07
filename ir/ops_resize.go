package ir

import (
	"fmt"
	"math"
	"slices"

	"github.com/dstune/dstune/onnx"
)

// Resize and Upsample import as compositions of Gather, Mul, ReduceSum
// and Where. ONNX defines every interpolation mode as separable: the
// output is a 1-D interpolation along each resized axis in turn. Along one
// axis, output position o reads a few input positions (its taps) with
// weights that depend only on o, the sizes and the attributes, so import
// computes the taps and weights once from the static scales or sizes and
// emits, per axis, a Gather of the taps, a Mul by the weights and a
// ReduceSum over the taps. The result is differentiable and runs on every
// backend.

func init() {
	registerOp("", "Resize", importResize)
	registerOp("", "Upsample", importUpsample)
	// Resize-10 reads its scales from input 1; later versions read roi,
	// scales and sizes from inputs 1 to 3.
	registerStaticOperands("", "Resize", 1, 2, 3)
	registerStaticOperands("", "Upsample", 1)
}

// resizeSpec holds a Resize node's interpolation attributes.
type resizeSpec struct {
	mode           string // nearest, linear or cubic
	coord          string // coordinate_transformation_mode
	nearest        string // nearest_mode, or "simple" (Resize-10, Upsample)
	cubicA         float64
	excludeOutside bool
	antialias      bool
	extrapolation  float64
}

var (
	resizeModes       = []string{"nearest", "linear", "cubic"}
	resizeCoordModes  = []string{"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"}
	resizeNearest     = []string{"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}
	resizeAspectRatio = []string{"stretch", "not_larger", "not_smaller"}
)

func oneOf(what, v string, allowed []string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("%s %q, want one of %v", what, v, allowed)
	}
	return nil
}

func resizeAttrs(n *onnx.Node, opset int) (*resizeSpec, error) {
	s := &resizeSpec{}
	var err error
	if s.mode, err = n.AttrString("mode", "nearest"); err != nil {
		return nil, err
	}
	if err := oneOf("mode", s.mode, resizeModes); err != nil {
		return nil, err
	}
	if opset < 11 {
		if s.mode == "cubic" {
			return nil, fmt.Errorf("mode cubic needs opset 11")
		}
		s.coord, s.nearest = "asymmetric", "simple"
		return s, nil
	}
	if s.coord, err = n.AttrString("coordinate_transformation_mode", "half_pixel"); err != nil {
		return nil, err
	}
	if err := oneOf("coordinate_transformation_mode", s.coord, resizeCoordModes); err != nil {
		return nil, err
	}
	if s.nearest, err = n.AttrString("nearest_mode", "round_prefer_floor"); err != nil {
		return nil, err
	}
	if err := oneOf("nearest_mode", s.nearest, resizeNearest); err != nil {
		return nil, err
	}
	a, err := n.AttrFloat("cubic_coeff_a", -0.75)
	if err != nil {
		return nil, err
	}
	s.cubicA = float64(a)
	e, err := n.AttrFloat("extrapolation_value", 0)
	if err != nil {
		return nil, err
	}
	s.extrapolation = float64(e)
	for _, f := range []struct {
		name string
		dst  *bool
	}{{"exclude_outside", &s.excludeOutside}, {"antialias", &s.antialias}} {
		v, err := attrInt(n, f.name, 0)
		if err != nil {
			return nil, err
		}
		if v != 0 && v != 1 {
			return nil, fmt.Errorf("%s %d, want 0 or 1", f.name, v)
		}
		*f.dst = v == 1
	}
	if math.IsNaN(s.cubicA) || math.IsInf(s.cubicA, 0) {
		return nil, fmt.Errorf("cubic_coeff_a %g, want a finite number", s.cubicA)
	}
	return s, nil
}

// resizeAxis is the 1-D interpolation along one axis: output position o
// reads Taps input positions Index[o·Taps+t] (inside the input) with
// weights Weight[o·Taps+t]. Outside[o] marks positions outside the crop of
// tf_crop_and_resize, which take the extrapolation value (nil: none).
type resizeAxis struct {
	In, Out, Taps int
	Index         []int64
	Weight        []float64
	Outside       []bool
}

// maxResizeTableEntries bounds the taps import computes for one axis
// (16 bytes each, 1 GiB in all).
const maxResizeTableEntries = 1 << 26

// source maps output position o to its coordinate in the input, as
// coordinate_transformation_mode says. outWidth is scale·in, not rounded
// (the ONNX definition uses it for align_corners and tf_crop_and_resize).
// ok is false for a position outside tf_crop_and_resize's crop.
func (s *resizeSpec) source(o, in, out int, scale, roiStart, roiEnd float64) (src float64, ok bool) {
	x := float64(o)
	outWidth := scale * float64(in)
	switch s.coord {
	case "half_pixel":
		return (x+0.5)/scale - 0.5, true
	case "half_pixel_symmetric":
		adjustment := float64(out) / outWidth
		center := float64(in) / 2
		return center*(1-adjustment) + (x+0.5)/scale - 0.5, true
	case "pytorch_half_pixel":
		if out <= 1 {
			return 0, true
		}
		return (x+0.5)/scale - 0.5, true
	case "tf_half_pixel_for_nn":
		return (x + 0.5) / scale, true
	case "align_corners":
		if outWidth == 1 {
			return 0, true
		}
		return x * float64(in-1) / (outWidth - 1), true
	case "tf_crop_and_resize":
		if outWidth == 1 {
			src = (roiEnd - roiStart) * float64(in-1) / 2
		} else {
			src = x * (roiEnd - roiStart) * float64(in-1) / (outWidth - 1)
		}
		src += roiStart * float64(in-1)
		return src, src >= 0 && src <= float64(in-1)
	default: // asymmetric
		return x / scale, true
	}
}

// coefficients returns the weights of the taps around a source coordinate
// whose preceding input position is base (ratio in (0, 1] is the distance
// from it) and the offset of the first tap from base.
func (s *resizeSpec) coefficients(ratio, scale float64) (first int, w []float64) {
	switch s.mode {
	case "nearest":
		up := false
		switch s.nearest {
		case "round_prefer_floor":
			up = ratio > 0.5
		case "round_prefer_ceil":
			up = ratio >= 0.5
		case "floor":
		case "ceil":
			up = true
		case "simple": // onnxruntime's Resize-10: floor upsampling, ceil downsampling
			up = scale < 1
		}
		if ratio == 1 || up {
			return 1, []float64{1}
		}
		return 0, []float64{1}
	case "linear":
		if !s.antialias || scale >= 1 {
			return 0, []float64{1 - ratio, ratio}
		}
		// The triangle filter stretched by 1/scale, normalized.
		start := int(math.Floor(-1/scale)) + 1
		w = make([]float64, 2-2*start)
		for i := range w {
			w[i] = max(0, 1-math.Abs((float64(start+i)-ratio)*scale))
		}
		return start, normalized(w)
	default: // cubic
		a := s.cubicA
		if !s.antialias || scale >= 1 {
			return -1, []float64{
				cubicKernel(ratio+1, a), cubicKernel(ratio, a),
				cubicKernel(1-ratio, a), cubicKernel(2-ratio, a),
			}
		}
		start := int(math.Floor(-2/scale)) + 1
		w = make([]float64, 2-2*start)
		for i := range w {
			w[i] = cubicKernel(scale*(float64(start+i)-ratio), a)
		}
		return start, normalized(w)
	}
}

// width is the number of taps coefficients returns at this scale.
func (s *resizeSpec) width(scale float64) float64 {
	switch s.mode {
	case "nearest":
		return 1
	case "linear":
		if !s.antialias || scale >= 1 {
			return 2
		}
		return 2 - 2*(math.Floor(-1/scale)+1)
	}
	if !s.antialias || scale >= 1 {
		return 4
	}
	return 2 - 2*(math.Floor(-2/scale)+1)
}

// cubicKernel is Keys' cubic convolution kernel with parameter a.
func cubicKernel(x, a float64) float64 {
	x = math.Abs(x)
	switch {
	case x <= 1:
		return ((a+2)*x-(a+3))*x*x + 1
	case x < 2:
		return ((a*x-5*a)*x+8*a)*x - 4*a
	}
	return 0
}

func normalized(w []float64) []float64 {
	sum := 0.0
	for _, v := range w {
		sum += v
	}
	if sum != 0 {
		for i := range w {
			w[i] /= sum
		}
	}
	return w
}

// axis computes the interpolation along an axis of length in resized to
// out with the given scale (and crop, for tf_crop_and_resize). Taps that
// fall outside the input read the nearest edge position (or, with
// exclude_outside, get weight 0 and the rest are renormalized); taps that
// land on the same position are merged.
func (s *resizeSpec) axis(in, out int, scale, roiStart, roiEnd float64) (*resizeAxis, error) {
	ax := &resizeAxis{In: in, Out: out}
	if out == 0 {
		return ax, nil
	}
	if in == 0 {
		return nil, fmt.Errorf("cannot resize an empty axis to %d", out)
	}
	// Every position has as many taps as the filter is wide.
	width := s.width(scale)
	if width*float64(out) > maxResizeTableEntries {
		return nil, fmt.Errorf("%g taps for each of %d positions is more than import computes", width, out)
	}
	ax.Taps = int(width)
	ax.Index = make([]int64, out*ax.Taps)
	ax.Weight = make([]float64, out*ax.Taps)
	used := 1
	for o := range out {
		src, inside := s.source(o, in, out, scale, roiStart, roiEnd)
		if math.IsNaN(src) || math.IsInf(src, 0) {
			return nil, fmt.Errorf("output position %d maps to input coordinate %g", o, src)
		}
		if !inside {
			if ax.Outside == nil {
				ax.Outside = make([]bool, out)
			}
			ax.Outside[o] = true
			continue
		}
		// The preceding position: with an integer coordinate the
		// position before it (ratio 1), as the ONNX definition does.
		base := math.Floor(src)
		ratio := src - base
		if ratio == 0 {
			base--
			ratio = 1
		}
		first, w := s.coefficients(ratio, scale)
		if s.excludeOutside {
			for t := range w {
				if p := base + float64(first+t); p < 0 || p >= float64(in) {
					w[t] = 0
				}
			}
			w = normalized(w)
		}
		index, weight := ax.Index[o*ax.Taps:(o+1)*ax.Taps], ax.Weight[o*ax.Taps:(o+1)*ax.Taps]
		n := 0
		for t, wt := range w {
			if wt == 0 {
				continue
			}
			p := int64(min(max(base+float64(first+t), 0), float64(in-1)))
			i := slices.Index(index[:n], p)
			if i < 0 {
				i = n
				index[i] = p
				n++
			}
			weight[i] += wt
		}
		used = max(used, n)
	}
	// Keep only as many taps as some position uses.
	if used < ax.Taps {
		for o := range out {
			copy(ax.Index[o*used:(o+1)*used], ax.Index[o*ax.Taps:o*ax.Taps+used])
			copy(ax.Weight[o*used:(o+1)*used], ax.Weight[o*ax.Taps:o*ax.Taps+used])
		}
		ax.Taps = used
		ax.Index, ax.Weight = ax.Index[:out*used], ax.Weight[:out*used]
	}
	return ax, nil
}

// identity reports whether the interpolation copies the axis unchanged.
func (ax *resizeAxis) identity() bool {
	if ax.In != ax.Out || ax.Taps != 1 || ax.Outside != nil {
		return false
	}
	for o := range ax.Out {
		if ax.Index[o] != int64(o) || ax.Weight[o] != 1 {
			return false
		}
	}
	return true
}

// unweighted reports whether every position reads one tap with weight 1
// (nearest, or every coordinate on an input position): a Gather alone.
func (ax *resizeAxis) unweighted() bool {
	if ax.Taps != 1 {
		return false
	}
	for o, w := range ax.Weight {
		if w != 1 && (ax.Outside == nil || !ax.Outside[o]) {
			return false
		}
	}
	return true
}

// resizePlan is a whole resize: the output shape and each axis's
// interpolation (nil for an axis left as it is).
type resizePlan struct {
	spec  *resizeSpec
	out   Shape
	axes  []*resizeAxis
	scale []float64
}

// newResizePlan computes the interpolation of every axis of an input of
// shape in resized to out with per-axis scales (roi: per-axis crop start
// and end, used by tf_crop_and_resize).
func newResizePlan(spec *resizeSpec, in, out Shape, scale []float64, roi [][2]float64, elemSize int) (*resizePlan, error) {
	if err := checkAmplified(out, elemSize, maxTensorBytes); err != nil {
		return nil, fmt.Errorf("output %v: %w", out, err)
	}
	p := &resizePlan{spec: spec, out: out, axes: make([]*resizeAxis, len(in)), scale: scale}
	for a := range in {
		if in[a] == out[a] && scale[a] == 1 && spec.coord != "tf_crop_and_resize" {
			continue // every mode maps an unscaled axis onto itself
		}
		ax, err := spec.axis(in[a], out[a], scale[a], roi[a][0], roi[a][1])
		if err != nil {
			return nil, fmt.Errorf("axis %d: %w", a, err)
		}
		if !ax.identity() {
			p.axes[a] = ax
		}
	}
	return p, nil
}

// emit adds the resize of x to the graph: per resized axis (those that
// shrink most first, so later axes interpolate fewer values) a Gather of
// the taps, a Mul by their weights and a ReduceSum over the taps; then a
// Where per axis with positions outside the crop. Narrow floats are
// computed in float32 and other types through float32 unless the mode
// only copies values (nearest).
func (p *resizePlan) emit(im *importer, x *Value) (*Value, error) {
	order := []int{}
	for a, ax := range p.axes {
		if ax != nil {
			order = append(order, a)
		}
	}
	if len(order) == 0 {
		return x, nil
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ra := float64(p.axes[a].Out) / float64(max(p.axes[a].In, 1))
		rb := float64(p.axes[b].Out) / float64(max(p.axes[b].In, 1))
		switch {
		case ra < rb:
			return -1
		case ra > rb:
			return 1
		}
		return 0
	})
	weighted := false
	for _, a := range order {
		if !p.axes[a].unweighted() || p.axes[a].Outside != nil {
			weighted = true
		}
	}
	cdt := x.DType
	if weighted && cdt != Float32 && cdt != Float64 {
		cdt = Float32
	}
	cur := x
	var err error
	if cdt != x.DType {
		if cur, err = im.emit1(&Cast{To: cdt}, cur); err != nil {
			return nil, err
		}
	}
	r := len(x.Shape)
	for _, a := range order {
		ax := p.axes[a]
		idxShape := Shape{ax.Out, ax.Taps}
		if ax.Taps == 1 {
			idxShape = Shape{ax.Out}
		}
		idx := FromInt64s(idxShape, ax.Index)
		if cur, err = im.emit1(&Gather{Axis: a}, cur, im.constant(idx)); err != nil {
			return nil, err
		}
		if ax.unweighted() {
			continue
		}
		wShape := append(idxShape.Clone(), make(Shape, r-a-1)...)
		for i := len(idxShape); i < len(wShape); i++ {
			wShape[i] = 1
		}
		w := NewTensor(cdt, wShape)
		storeFloats(w, ax.Weight)
		if cur, err = im.emit1(&Binary{Fn: Mul}, cur, im.constant(w)); err != nil {
			return nil, err
		}
		if ax.Taps > 1 {
			if cur, err = im.emit1(&Reduce{Fn: ReduceSum, Axes: []int{a + 1}}, cur); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range order {
		ax := p.axes[a]
		if ax.Outside == nil {
			continue
		}
		maskShape := make(Shape, r)
		for i := range maskShape {
			maskShape[i] = 1
		}
		maskShape[a] = ax.Out
		fill := NewTensor(cdt, Shape{})
		storeFloats(fill, []float64{p.spec.extrapolation})
		mask := im.constant(FromBools(maskShape, ax.Outside))
		if cur, err = im.emit1(&Where{}, mask, im.constant(fill), cur); err != nil {
			return nil, err
		}
	}
	if cdt != x.DType {
		return im.emit1(&Cast{To: x.DType}, cur)
	}
	return cur, nil
}

// resizedLength is floor(scale·n), checked to fit a dimension.
func resizedLength(scale float64, n int) (int, error) {
	if !(scale > 0) || math.IsInf(scale, 0) {
		return 0, fmt.Errorf("scale %g, want a positive finite number", scale)
	}
	l := math.Floor(scale * float64(n))
	if l > maxTensorBytes {
		return 0, fmt.Errorf("scale %g makes dimension %d of length %g", scale, n, l)
	}
	return int(l), nil
}

func importResize(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 4); err != nil {
		return nil, err
	}
	x := in[0]
	r := len(x.Shape)
	spec, err := resizeAttrs(n, im.opset)
	if err != nil {
		return nil, err
	}
	var roiT, scalesT, sizesT *Tensor
	if im.opset < 11 {
		if scalesT, err = im.constTensor(in, 1, "scales"); err != nil {
			return nil, err
		}
	} else {
		// Only tf_crop_and_resize reads the crop.
		if spec.coord == "tf_crop_and_resize" {
			if roiT, err = im.constTensor(in, 1, "roi"); err != nil {
				return nil, err
			}
		}
		if scalesT, err = im.constTensor(in, 2, "scales"); err != nil {
			return nil, err
		}
		if sizesT, err = im.constTensor(in, 3, "sizes"); err != nil {
			return nil, err
		}
	}
	// Before opset 13 scales is required and left empty when sizes are
	// given.
	if scalesT != nil && scalesT.Len() == 0 {
		scalesT = nil
	}
	if sizesT != nil && sizesT.Len() == 0 {
		sizesT = nil
	}
	if (scalesT == nil) == (sizesT == nil) {
		return nil, fmt.Errorf("want exactly one of scales and sizes")
	}
	axes := iotaInts(r)
	if given, ok, err := attrInts(n, "axes"); err != nil {
		return nil, err
	} else if ok {
		axes = axes[:0]
		for _, a := range given {
			a, err := normAxis(a, r)
			if err != nil {
				return nil, fmt.Errorf("axes %v: %w", given, err)
			}
			if slices.Contains(axes, a) {
				return nil, fmt.Errorf("axes %v repeat axis %d", given, a)
			}
			axes = append(axes, a)
		}
	}
	scale, out, err := resizeTarget(n, x.Shape, axes, scalesT, sizesT)
	if err != nil {
		return nil, err
	}
	roi := make([][2]float64, r)
	for i := range roi {
		roi[i] = [2]float64{0, 1}
	}
	if spec.coord == "tf_crop_and_resize" {
		if roiT == nil || !roiT.dtype.IsFloat() || roiT.Len() != 2*len(axes) {
			return nil, fmt.Errorf("tf_crop_and_resize needs roi, %d floats (got %v)", 2*len(axes), roiT)
		}
		for i, a := range axes {
			roi[a] = [2]float64{roiT.Float64At(i), roiT.Float64At(len(axes) + i)}
			if math.IsNaN(roi[a][0]) || math.IsNaN(roi[a][1]) || math.IsInf(roi[a][0], 0) || math.IsInf(roi[a][1], 0) {
				return nil, fmt.Errorf("roi of axis %d is %v", a, roi[a])
			}
		}
	}
	p, err := newResizePlan(spec, x.Shape, out, scale, roi, x.DType.Size())
	if err != nil {
		return nil, err
	}
	return one(p.emit(im, x))
}

// resizeTarget resolves the scale and the output length of every axis
// from scales or sizes (given for axes), and keep_aspect_ratio_policy.
// With scales the output length is floor(scale·length); with sizes the
// scale is size/length, or with a policy one scale for every axis in axes
// (the smallest, not_larger, or largest, not_smaller) and lengths rounded
// half up.
func resizeTarget(n *onnx.Node, in Shape, axes []int, scalesT, sizesT *Tensor) ([]float64, Shape, error) {
	var err error
	scale := make([]float64, len(in))
	for i := range scale {
		scale[i] = 1
	}
	out := in.Clone()
	if scalesT != nil {
		if !scalesT.dtype.IsFloat() || scalesT.Len() != len(axes) {
			return nil, nil, fmt.Errorf("scales is %v, want %d floats", scalesT, len(axes))
		}
		for i, a := range axes {
			scale[a] = scalesT.Float64At(i)
			if out[a], err = resizedLength(scale[a], in[a]); err != nil {
				return nil, nil, fmt.Errorf("axis %d: %w", a, err)
			}
		}
	} else {
		if !sizesT.dtype.IsInt() || sizesT.Len() != len(axes) {
			return nil, nil, fmt.Errorf("sizes is %v, want %d integers", sizesT, len(axes))
		}
		sizes := sizesT.Ints()
		for i, a := range axes {
			if sizes[i] < 0 || sizes[i] > maxTensorBytes {
				return nil, nil, fmt.Errorf("sizes %v: size %d of axis %d", sizes, sizes[i], a)
			}
			if in[a] == 0 && sizes[i] != 0 {
				return nil, nil, fmt.Errorf("cannot resize empty axis %d to %d", a, sizes[i])
			}
			out[a] = sizes[i]
			if in[a] > 0 {
				scale[a] = float64(sizes[i]) / float64(in[a])
			}
		}
		policy, err := n.AttrString("keep_aspect_ratio_policy", "stretch")
		if err != nil {
			return nil, nil, err
		}
		if err := oneOf("keep_aspect_ratio_policy", policy, resizeAspectRatio); err != nil {
			return nil, nil, err
		}
		if policy != "stretch" {
			// One scale for every axis in axes, the smallest (not_larger)
			// or largest (not_smaller), and sizes rounded half up.
			s := scale[axes[0]]
			for _, a := range axes[1:] {
				if policy == "not_larger" {
					s = min(s, scale[a])
				} else {
					s = max(s, scale[a])
				}
			}
			for _, a := range axes {
				scale[a] = s
				l := math.Floor(s*float64(in[a]) + 0.5)
				if l > maxTensorBytes {
					return nil, nil, fmt.Errorf("keep_aspect_ratio_policy %s makes axis %d of length %g", policy, a, l)
				}
				out[a] = int(l)
			}
		}
		for _, a := range axes {
			if out[a] > 0 && !(scale[a] > 0) {
				return nil, nil, fmt.Errorf("axis %d: scale %g", a, scale[a])
			}
		}
	}
	return scale, out, nil
}

func importUpsample(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	r := len(x.Shape)
	mode, err := n.AttrString("mode", "nearest")
	if err != nil {
		return nil, err
	}
	if mode == "bilinear" {
		mode = "linear"
	}
	if err := oneOf("mode", mode, []string{"nearest", "linear"}); err != nil {
		return nil, err
	}
	var scales []float64
	switch {
	case im.opset >= 9:
		t, err := im.constTensor(in, 1, "scales")
		if err != nil {
			return nil, err
		}
		if t == nil || !t.dtype.IsFloat() {
			return nil, fmt.Errorf("scales is required, a float tensor (got %v)", t)
		}
		for i := range t.Len() {
			scales = append(scales, t.Float64At(i))
		}
	case n.Attr("scales") != nil:
		fs, err := n.AttrFloats("scales", nil)
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			scales = append(scales, float64(f))
		}
	default:
		// Upsample-1: height_scale and width_scale of an NCHW input.
		h, err := n.AttrFloat("height_scale", 1)
		if err != nil {
			return nil, err
		}
		w, err := n.AttrFloat("width_scale", 1)
		if err != nil {
			return nil, err
		}
		scales = []float64{1, 1, float64(h), float64(w)}
	}
	if len(scales) != r {
		return nil, fmt.Errorf("%d scales for input %v", len(scales), x.Shape)
	}
	spec := &resizeSpec{mode: mode, coord: "asymmetric", nearest: "simple"}
	out := x.Shape.Clone()
	roi := make([][2]float64, r)
	for a := range r {
		if out[a], err = resizedLength(scales[a], x.Shape[a]); err != nil {
			return nil, fmt.Errorf("axis %d: %w", a, err)
		}
		roi[a] = [2]float64{0, 1}
	}
	p, err := newResizePlan(spec, x.Shape, out, scales, roi, x.DType.Size())
	if err != nil {
		return nil, err
	}
	return one(p.emit(im, x))
}
