package ir

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/dstune/dstune/onnx"
)

func init() {
	registerOp("", "RoiAlign", importRoiAlign)
	registerOp("", "NonMaxSuppression", importNonMaxSuppression)
	// How many boxes NonMaxSuppression selects depends on every input's
	// values, and the IR's shapes are static: it runs at import.
	registerStaticOperands("", "NonMaxSuppression", 0, 1, 2, 3, 4)
}

// ---------------------------------------------------------------- RoiAlign

// RoiAlign pools each region of interest rois[r] = (x1, y1, x2, y2) of
// image batch_indices[r] of X [N, C, H, W] into an OutH×OutW grid: each
// bin averages (or, with Max, takes the largest of) bilinear samples on a
// SamplingRatio×SamplingRatio grid (ceil(bin size) samples per axis when
// SamplingRatio is 0). Coordinates are scaled by SpatialScale and, with
// HalfPixel, shifted by half a pixel; without it regions are at least
// 1×1. Output [R, C, OutH, OutW].
type RoiAlign struct {
	OutH, OutW    int
	SamplingRatio int
	SpatialScale  float32
	HalfPixel     bool
	Max           bool
}

func (op *RoiAlign) Name() string { return "RoiAlign" }

func (op *RoiAlign) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 3, 3); err != nil {
		return nil, err
	}
	x, rois, idx := in[0], in[1], in[2]
	if !isFloat(x.DType) || len(x.Shape) != 4 {
		return nil, fmt.Errorf("X is %v, want a float tensor N×C×H×W", x)
	}
	if rois.DType != x.DType || len(rois.Shape) != 2 || rois.Shape[1] != 4 {
		return nil, fmt.Errorf("rois are %v, want %s[num_rois, 4]", rois, x.DType)
	}
	if !isIndex(idx.DType) || !idx.Shape.Equal(Shape{rois.Shape[0]}) {
		return nil, fmt.Errorf("batch_indices are %v, want int64[%d]", idx, rois.Shape[0])
	}
	if op.OutH < 1 || op.OutW < 1 || op.SamplingRatio < 0 {
		return nil, fmt.Errorf("output %d×%d, sampling_ratio %d", op.OutH, op.OutW, op.SamplingRatio)
	}
	return []Type{{x.DType, Shape{rois.Shape[0], x.Shape[1], op.OutH, op.OutW}}}, nil
}

// maxRoiSamples bounds the samples of one bin: a region far larger than
// any image would otherwise make the pooling loop without end.
const maxRoiSamples = 1 << 24

// roiSample is one bilinear sample: four positions of the H×W plane with
// their weights (all zero for a sample outside it).
type roiSample struct {
	pos [4]int
	w   [4]float64
}

// walk calls f for every bin (region r of image b, bin ph, pw) with the
// bin's bilinear samples and the count the average divides by.
func (op *RoiAlign) walk(xShape Shape, rois, idx *Tensor, f func(r, b, ph, pw int, samples []roiSample, count float64)) error {
	rv := Convert(rois, Float64).Float64s()
	n, h, w := xShape[0], xShape[2], xShape[3]
	offset := 0.0
	if op.HalfPixel {
		offset = 0.5
	}
	scale := float64(op.SpatialScale)
	var samples []roiSample
	for r := range rois.shape[0] {
		b := int(idx.Int64At(r))
		if b < 0 || b >= n {
			return fmt.Errorf("RoiAlign batch index %d out of range [0, %d)", b, n)
		}
		startW, startH := rv[r*4]*scale-offset, rv[r*4+1]*scale-offset
		endW, endH := rv[r*4+2]*scale-offset, rv[r*4+3]*scale-offset
		roiW, roiH := endW-startW, endH-startH
		if !op.HalfPixel {
			roiW, roiH = max(roiW, 1), max(roiH, 1)
		}
		binH, binW := roiH/float64(op.OutH), roiW/float64(op.OutW)
		gridH, gridW := float64(op.SamplingRatio), float64(op.SamplingRatio)
		if op.SamplingRatio == 0 {
			gridH, gridW = math.Ceil(binH), math.Ceil(binW)
		}
		if !(gridH*gridW <= maxRoiSamples) || math.IsNaN(startW+startH+endW+endH) {
			return fmt.Errorf("RoiAlign region %v takes %g×%g samples per bin", rv[r*4:r*4+4], gridH, gridW)
		}
		gh, gw := max(int(gridH), 0), max(int(gridW), 0)
		count := float64(max(gh*gw, 1))
		for ph := range op.OutH {
			for pw := range op.OutW {
				samples = samples[:0]
				for iy := range gh {
					sy := startH + float64(ph)*binH + (float64(iy)+0.5)*binH/float64(gh)
					for ix := range gw {
						sx := startW + float64(pw)*binW + (float64(ix)+0.5)*binW/float64(gw)
						samples = append(samples, bilinearSample(sy, sx, h, w))
					}
				}
				f(r, b, ph, pw, samples, count)
			}
		}
	}
	return nil
}

// maxCorner is the largest weighted corner value over the samples (ONNX's
// definition, and onnxruntime, take the largest of the four weighted
// corners rather than of the interpolated values): the value, and the
// sample and corner holding it.
func maxCorner(samples []roiSample, plane []float64) (v float64, sample, corner int) {
	for i, s := range samples {
		for k := range 4 {
			if m := s.w[k] * plane[s.pos[k]]; (i == 0 && k == 0) || m > v {
				v, sample, corner = m, i, k
			}
		}
	}
	return v, sample, corner
}

func (op *RoiAlign) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	xv := Convert(x, Float64).Float64s()
	c, plane := x.shape[1], x.shape[2]*x.shape[3]
	res := make([]float64, y.Len())
	err := op.walk(x.shape, in[1], in[2], func(r, b, ph, pw int, samples []roiSample, count float64) {
		for ch := range c {
			px := xv[(b*c+ch)*plane : (b*c+ch+1)*plane]
			v := 0.0
			if op.Max {
				if len(samples) > 0 {
					v, _, _ = maxCorner(samples, px)
				}
			} else {
				for _, s := range samples {
					for k := range 4 {
						v += s.w[k] * px[s.pos[k]]
					}
				}
				v /= count
			}
			res[((r*c+ch)*op.OutH+ph)*op.OutW+pw] = v
		}
	})
	if err != nil {
		return err
	}
	storeFloats(y, res)
	return nil
}

// gradRule of RoiAlign: the gradient with respect to the image (the
// regions are taken as given, as detectors train them).
func (op *RoiAlign) gradRule(d *differ, c *gradCtx) error {
	if c.needs(1) {
		return c.unsupported("RoiAlign's regions")
	}
	if c.needs(0) {
		c.add(0, d.emit1(&RoiAlignGrad{RoiAlign: *op}, c.dy[0], c.in(0), c.in(1), c.in(2)))
	}
	return nil
}

// RoiAlignGrad is the gradient of RoiAlign (the embedded attributes) with
// respect to X: inputs dy, X, rois and batch_indices. Average pooling
// scatters dy/count through every sample's bilinear weights; max pooling
// gives dy·weight to the corner that won.
type RoiAlignGrad struct {
	RoiAlign
}

func (op *RoiAlignGrad) Name() string { return "RoiAlignGrad" }

func (op *RoiAlignGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 4, 4); err != nil {
		return nil, err
	}
	fwd, err := op.RoiAlign.Infer(in[1:])
	if err != nil {
		return nil, err
	}
	if !in[0].Shape.Equal(fwd[0].Shape) || in[0].DType != fwd[0].DType {
		return nil, fmt.Errorf("dy is %v, RoiAlign's output %v", in[0], fwd[0])
	}
	return []Type{in[1]}, nil
}

func (op *RoiAlignGrad) Eval(in, out []*Tensor) error {
	dy, x := in[0], in[1]
	dyv, xv := Convert(dy, Float64).Float64s(), Convert(x, Float64).Float64s()
	c, plane := x.shape[1], x.shape[2]*x.shape[3]
	dx := make([]float64, x.Len())
	err := op.walk(x.shape, in[2], in[3], func(r, b, ph, pw int, samples []roiSample, count float64) {
		for ch := range c {
			g := dyv[((r*c+ch)*op.OutH+ph)*op.OutW+pw]
			base := (b*c + ch) * plane
			if op.Max {
				if len(samples) > 0 {
					_, i, k := maxCorner(samples, xv[base:base+plane])
					dx[base+samples[i].pos[k]] += g * samples[i].w[k]
				}
				continue
			}
			for _, s := range samples {
				for k := range 4 {
					dx[base+s.pos[k]] += g * s.w[k] / count
				}
			}
		}
	})
	if err != nil {
		return err
	}
	storeFloats(out[0], dx)
	return nil
}

// bilinearSample is the sample of an h×w plane at (y, x): the four
// surrounding positions, clamped to the plane, and their weights; zero
// weights more than one pixel outside (or at a NaN coordinate).
func bilinearSample(y, x float64, h, w int) roiSample {
	var s roiSample
	if !(y >= -1 && y <= float64(h) && x >= -1 && x <= float64(w)) { // NaN too
		return s
	}
	y, x = max(y, 0), max(x, 0)
	yLow, xLow := int(y), int(x)
	yHigh, xHigh := yLow+1, xLow+1
	if yLow >= h-1 {
		yLow, yHigh, y = h-1, h-1, float64(h-1)
	}
	if xLow >= w-1 {
		xLow, xHigh, x = w-1, w-1, float64(w-1)
	}
	ly, lx := y-float64(yLow), x-float64(xLow)
	hy, hx := 1-ly, 1-lx
	s.pos = [4]int{yLow*w + xLow, yLow*w + xHigh, yHigh*w + xLow, yHigh*w + xHigh}
	s.w = [4]float64{hy * hx, hy * lx, ly * hx, ly * lx}
	return s
}

func importRoiAlign(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	op := &RoiAlign{}
	var err error
	if op.OutH, err = attrInt(n, "output_height", 1); err != nil {
		return nil, err
	}
	if op.OutW, err = attrInt(n, "output_width", 1); err != nil {
		return nil, err
	}
	if op.SamplingRatio, err = attrInt(n, "sampling_ratio", 0); err != nil {
		return nil, err
	}
	if op.SpatialScale, err = n.AttrFloat("spatial_scale", 1); err != nil {
		return nil, err
	}
	mode, err := n.AttrString("mode", "avg")
	if err != nil {
		return nil, err
	}
	switch mode {
	case "avg":
	case "max":
		op.Max = true
	default:
		return nil, fmt.Errorf("mode %q, want avg or max", mode)
	}
	def := "half_pixel"
	if im.opset < 16 {
		def = "output_half_pixel"
	}
	coord, err := n.AttrString("coordinate_transformation_mode", def)
	if err != nil {
		return nil, err
	}
	switch coord {
	case "half_pixel":
		op.HalfPixel = true
	case "output_half_pixel":
	default:
		return nil, fmt.Errorf("coordinate_transformation_mode %q, want half_pixel or output_half_pixel", coord)
	}
	if op.OutH < 1 || op.OutW < 1 || op.OutH > maxTensorBytes || op.OutW > maxTensorBytes {
		return nil, fmt.Errorf("output_height %d and output_width %d, want positive sizes", op.OutH, op.OutW)
	}
	if op.SamplingRatio < 0 {
		return nil, fmt.Errorf("sampling_ratio %d, want 0 (adaptive) or more", op.SamplingRatio)
	}
	if s := float64(op.SpatialScale); math.IsNaN(s) || math.IsInf(s, 0) {
		return nil, fmt.Errorf("spatial_scale %g", s)
	}
	return one(im.emit1(op, in...))
}

// ---------------------------------------------------------------- NonMaxSuppression

// nmsBox is a candidate box of one class: its score and index.
type nmsBox struct {
	score float64
	index int
}

// nonMaxSuppression selects, per batch entry and class, boxes in order of
// decreasing score (lower index first among equal scores), skipping those
// whose intersection over union with an already selected one exceeds
// iouThreshold, until maxPerClass are selected. With a score threshold
// only boxes scoring above it take part. boxes are [B, n, 4] as
// (y1, x1, y2, x2) corners in either order, or (x, y, width, height)
// around the center with centerPoint; scores are [B, classes, n]. The
// result lists (batch, class, box) triples, [selected, 3].
func nonMaxSuppression(boxes, scores *Tensor, maxPerClass int64, iouThreshold, scoreThreshold float64, hasScoreThreshold, centerPoint bool) *Tensor {
	bv := Convert(boxes, Float64).Float64s()
	sv := Convert(scores, Float64).Float64s()
	batches, nBoxes, classes := boxes.shape[0], boxes.shape[1], scores.shape[1]
	// corners returns (xmin, xmax, ymin, ymax) of box i of batch b.
	corners := func(b, i int) [4]float64 {
		p := bv[(b*nBoxes+i)*4 : (b*nBoxes+i+1)*4]
		if centerPoint {
			return [4]float64{p[0] - p[2]/2, p[0] + p[2]/2, p[1] - p[3]/2, p[1] + p[3]/2}
		}
		return [4]float64{min(p[1], p[3]), max(p[1], p[3]), min(p[0], p[2]), max(p[0], p[2])}
	}
	suppresses := func(a, b [4]float64) bool {
		ix0, ix1 := max(a[0], b[0]), min(a[1], b[1])
		iy0, iy1 := max(a[2], b[2]), min(a[3], b[3])
		if ix1 <= ix0 || iy1 <= iy0 {
			return false
		}
		inter := (ix1 - ix0) * (iy1 - iy0)
		areaA := (a[1] - a[0]) * (a[3] - a[2])
		areaB := (b[1] - b[0]) * (b[3] - b[2])
		union := areaA + areaB - inter
		if inter <= 0 || areaA <= 0 || areaB <= 0 || union <= 0 {
			return false
		}
		return inter/union > iouThreshold
	}
	var selected []int64
	var candidates []nmsBox
	var kept [][4]float64
	for b := range batches {
		for cl := range classes {
			candidates = candidates[:0]
			for i := range nBoxes {
				s := sv[(b*classes+cl)*nBoxes+i]
				if !hasScoreThreshold || s > scoreThreshold {
					candidates = append(candidates, nmsBox{s, i})
				}
			}
			slices.SortStableFunc(candidates, func(p, q nmsBox) int {
				if c := cmp.Compare(q.score, p.score); c != 0 {
					return c
				}
				return cmp.Compare(p.index, q.index)
			})
			kept = kept[:0]
			for _, cand := range candidates {
				if int64(len(kept)) >= maxPerClass {
					break
				}
				box := corners(b, cand.index)
				ok := true
				for _, k := range kept {
					if suppresses(box, k) {
						ok = false
						break
					}
				}
				if ok {
					kept = append(kept, box)
					selected = append(selected, int64(b), int64(cl), int64(cand.index))
				}
			}
		}
	}
	return FromInt64s(Shape{len(selected) / 3, 3}, selected)
}

// importNonMaxSuppression computes the selection at import: its size
// depends on the inputs' values, so they must all be known then.
func importNonMaxSuppression(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 5); err != nil {
		return nil, err
	}
	center, err := attrInt(n, "center_point_box", 0)
	if err != nil {
		return nil, err
	}
	if center != 0 && center != 1 {
		return nil, fmt.Errorf("center_point_box %d, want 0 or 1", center)
	}
	const why = "NonMaxSuppression's output size depends on its inputs' values, which must be known at import"
	names := []string{"boxes", "scores", "max_output_boxes_per_class", "iou_threshold", "score_threshold"}
	ts := make([]*Tensor, 5)
	for i := range ts {
		t, err := im.constTensor(in, i, names[i])
		if err != nil {
			return nil, fmt.Errorf("%w: %s (%w)", ErrNotSupported, why, err)
		}
		ts[i] = t
	}
	boxes, scores := ts[0], ts[1]
	if !isFloat(boxes.dtype) || len(boxes.shape) != 3 || boxes.shape[2] != 4 {
		return nil, fmt.Errorf("boxes are %v, want a float tensor [batches, boxes, 4]", boxes)
	}
	if !isFloat(scores.dtype) || len(scores.shape) != 3 || scores.shape[0] != boxes.shape[0] || scores.shape[2] != boxes.shape[1] {
		return nil, fmt.Errorf("scores are %v, want a float tensor [%d, classes, %d]", scores, boxes.shape[0], boxes.shape[1])
	}
	scalar := func(i int, integer bool) (float64, bool, error) {
		t := ts[i]
		if t == nil || t.Len() == 0 {
			return 0, false, nil
		}
		if t.Len() != 1 || (integer && !t.dtype.IsInt()) || (!integer && !t.dtype.IsFloat()) {
			return 0, false, fmt.Errorf("%s is %v, want one %s", names[i], t, map[bool]string{true: "integer", false: "float"}[integer])
		}
		if integer {
			return float64(t.Int64At(0)), true, nil
		}
		return t.Float64At(0), true, nil
	}
	if _, _, err := scalar(2, true); err != nil {
		return nil, err
	}
	iou, _, err := scalar(3, false)
	if err != nil {
		return nil, err
	}
	scoreThr, hasScoreThr, err := scalar(4, false)
	if err != nil {
		return nil, err
	}
	if iou < 0 || iou > 1 {
		return nil, fmt.Errorf("iou_threshold %g, want a value in [0, 1]", iou)
	}
	maxPerClass := int64(0) // none selected when not given
	if ts[2] != nil && ts[2].Len() == 1 {
		maxPerClass = max(ts[2].Int64At(0), 0)
	}
	return []*Value{im.constant(nonMaxSuppression(boxes, scores, maxPerClass, iou, scoreThr, hasScoreThr, center == 1))}, nil
}
