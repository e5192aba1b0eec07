package ir

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// TestRoiAlignMatchesOnnxruntime: both coordinate modes, average and
// max, fixed and adaptive sampling, a spatial scale, and regions reaching
// past the image.
func TestRoiAlignMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(33, 34))
	x := randTensor(rng, Float32, Shape{2, 3, 8, 7}, -2, 2)
	rois := FromFloat32s(Shape{4, 4}, []float32{
		0, 0, 6, 5,
		1.3, 2.2, 4.6, 7.9,
		-2, -1, 3, 3,
		10, 3, 14, 17,
	})
	idx := FromInt64s(Shape{4}, []int64{0, 1, 1, 0})
	for _, coord := range []string{"half_pixel", "output_half_pixel"} {
		for _, mode := range []string{"avg", "max"} {
			for _, sr := range []int64{0, 2} {
				attrs := []*onnx.Attribute{stringAttr("coordinate_transformation_mode", coord), stringAttr("mode", mode),
					intAttr("sampling_ratio", sr), intAttr("output_height", 3), intAttr("output_width", 2), floatAttr("spatial_scale", 0.5)}
				t.Run(attrsString(attrs), func(t *testing.T) {
					m, feeds := oneNodeModel(t, 16, "RoiAlign", attrs, []nodeInput{feed(x), feed(rois), feed(idx)}, 1)
					checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
				})
			}
		}
	}
}

// TestNonMaxSuppressionMatchesOnnxruntime: random boxes in both formats,
// with and without a score threshold, several batches and classes. dstune
// takes the inputs as constants (they decide the output's size);
// onnxruntime gets the same values as graph inputs.
func TestNonMaxSuppressionMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(35, 36))
	for _, center := range []int64{0, 1} {
		for _, withScore := range []bool{false, true} {
			t.Run(fmt.Sprintf("center=%d/score=%v", center, withScore), func(t *testing.T) {
				boxes := randTensor(rng, Float32, Shape{2, 12, 4}, 0, 10)
				scores := randTensor(rng, Float32, Shape{2, 3, 12}, 0, 1)
				values := []*Tensor{boxes, scores, FromInt64s(Shape{1}, []int64{4}), FromFloat32s(Shape{1}, []float32{0.3})}
				if withScore {
					values = append(values, FromFloat32s(Shape{1}, []float32{0.4}))
				}
				var static, fed []nodeInput
				for _, v := range values {
					static, fed = append(static, fixed(v)), append(fed, feed(v))
				}
				attrs := []*onnx.Attribute{intAttr("center_point_box", center)}
				m, _ := oneNodeModel(t, 11, "NonMaxSuppression", attrs, static, 1)
				got, _, err := interpretModel(m, nil)
				if err != nil {
					t.Fatal(err)
				}
				mo, feeds := oneNodeModel(t, 11, "NonMaxSuppression", attrs, fed, 1)
				want := ortOutputs(t, mo, feeds)["y0"]
				if d := Compare(got["y0"], want, 0, 0); !d.OK() || want.Shape()[0] < 4 {
					t.Errorf("selected %v, onnxruntime %v (%v)", got["y0"].Int64s(), want.Int64s(), d)
				}
			})
		}
	}
}

// TestDeformConvWithoutOffsetsIsConv: with zero offsets and no mask a
// deformable convolution is the plain one (an independent implementation).
func TestDeformConvWithoutOffsetsIsConv(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	x := randTensor(rng, Float64, Shape{2, 4, 5, 6}, -1, 1)
	w := randTensor(rng, Float64, Shape{6, 2, 3, 2}, -1, 1)
	b := randTensor(rng, Float64, Shape{6}, -1, 1)
	conv := Conv{Strides: []int{2, 1}, Pads: []int{1, 0, 1, 1}, Dilations: []int{1, 2}, Group: 2}
	want, err := EvalOp(&conv, x, w, b)
	if err != nil {
		t.Fatal(err)
	}
	o := want[0].Shape()
	offset := NewTensor(Float64, Shape{2, 2 * 6 * 2, o[2], o[3]})
	got, err := EvalOp(&DeformConv{Strides: conv.Strides, Pads: conv.Pads, Dilations: conv.Dilations, Group: 2, OffsetGroup: 2}, x, w, offset, b)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(got[0], want[0], 1e-12, 1e-12); !d.OK() {
		t.Errorf("DeformConv with zero offsets: %v", d)
	}
}

// TestDeformConvMatchesOnnxruntime: fractional offsets reaching outside
// the input, offset groups, groups, a mask and a bias.
func TestDeformConvMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(39, 40))
	x := randTensor(rng, Float32, Shape{2, 4, 5, 5}, -1, 1)
	w := randTensor(rng, Float32, Shape{4, 2, 2, 3}, -1, 1)
	attrs := []*onnx.Attribute{intAttr("group", 2), intAttr("offset_group", 2), intsAttr("pads", 1, 0, 0, 1), intsAttr("strides", 1, 2)}
	// Output 5×2.
	offset := randTensor(rng, Float32, Shape{2, 2 * 6 * 2, 5, 2}, -1.5, 1.5)
	mask := randTensor(rng, Float32, Shape{2, 2 * 6, 5, 2}, 0, 1)
	b := randTensor(rng, Float32, Shape{4}, -1, 1)
	m, feeds := oneNodeModel(t, 19, "DeformConv", attrs, []nodeInput{feed(x), feed(w), feed(offset), feed(b), feed(mask)}, 1)
	checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
}

func TestDetectionErrors(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 2, 4, 4})
	rois := NewTensor(Float32, Shape{2, 4})
	idx := NewTensor(Int64, Shape{2})
	boxes := NewTensor(Float32, Shape{1, 3, 4})
	scores := NewTensor(Float32, Shape{1, 1, 3})
	for _, c := range []struct {
		name   string
		op     string
		ins    []nodeInput
		attrs  []*onnx.Attribute
		target error
		want   string
	}{
		{"roi mode", "RoiAlign", []nodeInput{feed(x), feed(rois), feed(idx)}, []*onnx.Attribute{stringAttr("mode", "sum")}, nil, `mode "sum"`},
		{"roi coord", "RoiAlign", []nodeInput{feed(x), feed(rois), feed(idx)}, []*onnx.Attribute{stringAttr("coordinate_transformation_mode", "corners")}, nil, "coordinate_transformation_mode"},
		{"roi size", "RoiAlign", []nodeInput{feed(x), feed(rois), feed(idx)}, []*onnx.Attribute{intAttr("output_height", 0)}, nil, "output_height 0"},
		{"roi sampling", "RoiAlign", []nodeInput{feed(x), feed(rois), feed(idx)}, []*onnx.Attribute{intAttr("sampling_ratio", -1)}, nil, "sampling_ratio -1"},
		{"roi shape", "RoiAlign", []nodeInput{feed(x), feed(NewTensor(Float32, Shape{2, 5})), feed(idx)}, nil, nil, "rois are float32[2,5]"},
		{"roi indices", "RoiAlign", []nodeInput{feed(x), feed(rois), feed(NewTensor(Int64, Shape{3}))}, nil, nil, "batch_indices"},
		{"nms runtime", "NonMaxSuppression", []nodeInput{feed(boxes), fixed(scores)}, nil, ErrNotSupported, "known at import"},
		{"nms scores", "NonMaxSuppression", []nodeInput{fixed(boxes), fixed(NewTensor(Float32, Shape{1, 1, 4}))}, nil, nil, "scores are float32[1,1,4]"},
		{"nms iou", "NonMaxSuppression", []nodeInput{fixed(boxes), fixed(scores), fixed(IntsTensor(1)), fixed(FromFloat32s(Shape{1}, []float32{2}))}, nil, nil, "iou_threshold 2"},
		{"nms center", "NonMaxSuppression", []nodeInput{fixed(boxes), fixed(scores)}, []*onnx.Attribute{intAttr("center_point_box", 2)}, nil, "center_point_box 2"},
		{"deform offset", "DeformConv", []nodeInput{feed(x), feed(NewTensor(Float32, Shape{2, 2, 2, 2})), feed(NewTensor(Float32, Shape{1, 6, 3, 3}))}, nil, nil, "offset is [1,6,3,3], want [1,8,3,3]"},
		{"deform groups", "DeformConv", []nodeInput{feed(x), feed(NewTensor(Float32, Shape{2, 2, 2, 2})), feed(NewTensor(Float32, Shape{1, 8, 3, 3}))}, []*onnx.Attribute{intAttr("offset_group", 3)}, nil, "offset_group 3"},
		{"deform stride", "DeformConv", []nodeInput{feed(x), feed(NewTensor(Float32, Shape{2, 2, 2, 2})), feed(NewTensor(Float32, Shape{1, 8, 3, 3}))}, []*onnx.Attribute{intsAttr("strides", 0, 1)}, nil, "strides [0 1]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := oneNodeModel(t, 22, c.op, c.attrs, c.ins, 1)
			wantImportError(t, m, c.target, c.want)
		})
	}
}

// TestRoiAlignRuntimeErrors: a batch index out of range or a region
// needing unbounded sampling fails at run time instead of reading out of
// bounds or looping without end.
func TestRoiAlignRuntimeErrors(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 1, 4, 4})
	op := &RoiAlign{OutH: 1, OutW: 1, SpatialScale: 1}
	for _, c := range []struct {
		roi []float32
		idx int64
	}{
		{[]float32{0, 0, 2, 2}, 1},
		{[]float32{0, 0, 3e38, 3e38}, 0},
	} {
		_, err := EvalOp(op, x, FromFloat32s(Shape{1, 4}, c.roi), FromInt64s(Shape{1}, []int64{c.idx}))
		if err == nil {
			t.Errorf("roi %v of batch %d accepted", c.roi, c.idx)
		}
	}
}

// TestRoiAlignGradient: the gradient with respect to the image, average
// and max pooling, against central differences.
func TestRoiAlignGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(47, 48))
	rois := FromFloat64s(Shape{3, 4}, []float64{0.3, 0.2, 4.6, 3.9, 1.3, 2.2, 3.6, 5.1, -1.2, -0.7, 2.3, 2.8})
	idx := FromInt64s(Shape{3}, []int64{0, 1, 1})
	for _, mode := range []string{"avg", "max"} {
		for _, coord := range []string{"half_pixel", "output_half_pixel"} {
			attrs := []*onnx.Attribute{stringAttr("mode", mode), stringAttr("coordinate_transformation_mode", coord),
				intAttr("output_height", 2), intAttr("output_width", 3), intAttr("sampling_ratio", 2)}
			t.Run(attrsString(attrs), func(t *testing.T) {
				x := randTensor(rng, Float64, Shape{2, 2, 6, 5}, -1, 1)
				m, feeds := oneNodeModel(t, 16, "RoiAlign", attrs, []nodeInput{weight(x), feed(rois), feed(idx)}, 1)
				checkImportedGrad(t, m, feeds, 1e-6)
			})
		}
	}
}

// TestDeformConvGradient: the gradients with respect to X, W, the
// offsets, the mask and the bias against central differences, with
// groups, offset groups and offsets reaching outside the input.
func TestDeformConvGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(49, 50))
	for _, withMask := range []bool{false, true} {
		t.Run(fmt.Sprintf("mask=%v", withMask), func(t *testing.T) {
			x := randTensor(rng, Float64, Shape{2, 4, 4, 5}, -1, 1)
			w := randTensor(rng, Float64, Shape{4, 2, 2, 2}, -1, 1)
			// Output 4×3 (pads 1, 0, 0, 1; strides 1, 2).
			offset := randTensor(rng, Float64, Shape{2, 2 * 4 * 2, 4, 3}, -1.3, 1.3)
			b := randTensor(rng, Float64, Shape{4}, -1, 1)
			ins := []nodeInput{weight(x), weight(w), weight(offset), weight(b)}
			if withMask {
				ins = append(ins, weight(randTensor(rng, Float64, Shape{2, 2 * 4, 4, 3}, 0, 1)))
			}
			attrs := []*onnx.Attribute{intAttr("group", 2), intAttr("offset_group", 2), intsAttr("pads", 1, 0, 0, 1), intsAttr("strides", 1, 2)}
			m, _ := oneNodeModel(t, 19, "DeformConv", attrs, ins, 1)
			checkImportedGrad(t, m, nil, 1e-6)
		})
	}
}
