package ir

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// resizeCase is one Resize node: attributes, the input shape and either
// scales or sizes (over axes, when given).
type resizeCase struct {
	attrs  []*onnx.Attribute
	shape  Shape
	scales []float32
	sizes  []int64
	roi    []float32
}

func (c resizeCase) model(t *testing.T, rng *rand.Rand, dt DType) (*onnx.Model, map[string]*Tensor) {
	x := randTensor(rng, dt, c.shape, -2, 2)
	ins := []nodeInput{feed(x), omitted, omitted, omitted}
	if c.roi != nil {
		ins[1] = fixed(FromFloat32s(Shape{len(c.roi)}, c.roi))
	}
	if c.scales != nil {
		ins[2] = fixed(FromFloat32s(Shape{len(c.scales)}, c.scales))
	}
	if c.sizes != nil {
		ins[3] = fixed(FromInt64s(Shape{len(c.sizes)}, c.sizes))
	}
	for len(ins) > 1 && ins[len(ins)-1].t == nil {
		ins = ins[:len(ins)-1]
	}
	return oneNodeModel(t, 19, "Resize", c.attrs, ins, 1)
}

func resizeCases() []resizeCase {
	var cases []resizeCase
	shapes := []struct {
		shape  Shape
		scales []float32
		sizes  []int64
	}{
		{Shape{1, 2, 4, 6}, []float32{1, 1, 2, 1.5}, nil},
		{Shape{2, 1, 6, 8}, []float32{1, 1, 0.5, 0.75}, nil},
		{Shape{1, 1, 5, 3}, nil, []int64{1, 1, 8, 2}},
		{Shape{1, 1, 9, 4}, nil, []int64{1, 1, 4, 7}},
		{Shape{3, 10}, []float32{1, 0.4}, nil},
	}
	for _, s := range shapes {
		for _, coord := range []string{"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"} {
			for _, mode := range []string{"nearest", "linear", "cubic"} {
				attrs := []*onnx.Attribute{stringAttr("mode", mode), stringAttr("coordinate_transformation_mode", coord)}
				cases = append(cases, resizeCase{attrs: attrs, shape: s.shape, scales: s.scales, sizes: s.sizes})
			}
		}
		for _, nm := range resizeNearest {
			attrs := []*onnx.Attribute{stringAttr("mode", "nearest"), stringAttr("nearest_mode", nm)}
			cases = append(cases, resizeCase{attrs: attrs, shape: s.shape, scales: s.scales, sizes: s.sizes})
		}
		for _, mode := range []string{"linear", "cubic"} {
			attrs := []*onnx.Attribute{stringAttr("mode", mode), intAttr("antialias", 1)}
			cases = append(cases, resizeCase{attrs: attrs, shape: s.shape, scales: s.scales, sizes: s.sizes})
		}
		attrs := []*onnx.Attribute{stringAttr("mode", "cubic"), floatAttr("cubic_coeff_a", -0.5), intAttr("exclude_outside", 1)}
		cases = append(cases, resizeCase{attrs: attrs, shape: s.shape, scales: s.scales, sizes: s.sizes})
	}
	for _, policy := range []string{"not_larger", "not_smaller"} {
		attrs := []*onnx.Attribute{stringAttr("mode", "linear"), intsAttr("axes", 3, 2), stringAttr("keep_aspect_ratio_policy", policy)}
		cases = append(cases, resizeCase{attrs: attrs, shape: Shape{1, 2, 5, 7}, sizes: []int64{9, 4}})
	}
	for _, mode := range []string{"nearest", "linear", "cubic"} {
		attrs := []*onnx.Attribute{stringAttr("mode", mode), stringAttr("coordinate_transformation_mode", "tf_crop_and_resize"), floatAttr("extrapolation_value", 3)}
		cases = append(cases, resizeCase{attrs: attrs, shape: Shape{1, 1, 5, 6}, sizes: []int64{1, 1, 7, 4},
			roi: []float32{0, 0, -0.2, 0.35, 1, 1, 1.1, 0.9}})
	}
	return cases
}

func (c resizeCase) String() string {
	s := fmt.Sprintf("%v", c.shape) + attrsString(c.attrs)
	if c.scales != nil {
		s += fmt.Sprintf(",scales=%v", c.scales)
	}
	if c.sizes != nil {
		s += fmt.Sprintf(",sizes=%v", c.sizes)
	}
	return s
}

// TestResizeMatchesOnnxruntime compares Resize with onnxruntime over every
// mode, coordinate transformation, nearest rounding, antialiasing, cubic
// coefficient, axes and aspect-ratio policy, with scales and with sizes.
//
// The scales make scale·length whole: where it is not, ONNX's reference
// (whose outputs the backend tests hold, and dstune follows) maps
// align_corners through scale·length and onnxruntime through the rounded
// output length. The crop avoids source coordinates exactly halfway
// between two positions, which nearest rounds one way in float32
// arithmetic (onnxruntime) and the other in float64 (dstune).
func TestResizeMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range resizeCases() {
		t.Run(c.String(), func(t *testing.T) {
			m, feeds := c.model(t, rng, Float32)
			checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
		})
	}
}

// TestResizeOlderOpsetsMatchOnnxruntime: Resize-10 (scales only,
// asymmetric coordinates), Resize-11's tf_half_pixel_for_nn, Upsample-9,
// and integer inputs.
func TestResizeOlderOpsetsMatchOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(5, 6))
	x := randTensor(rng, Float32, Shape{1, 2, 3, 4}, -2, 2)
	scales := fixed(FromFloat32s(Shape{4}, []float32{1, 1, 2, 1.5}))
	down := fixed(FromFloat32s(Shape{4}, []float32{1, 1, 0.7, 0.5}))
	type tc struct {
		name  string
		opset int64
		op    string
		attrs []*onnx.Attribute
		ins   []nodeInput
	}
	cases := []tc{
		{"Resize-10/nearest", 10, "Resize", nil, []nodeInput{feed(x), scales}},
		{"Resize-10/nearest-down", 10, "Resize", nil, []nodeInput{feed(x), down}},
		{"Resize-10/linear", 10, "Resize", []*onnx.Attribute{stringAttr("mode", "linear")}, []nodeInput{feed(x), scales}},
		{"Resize-11/tf_half_pixel_for_nn", 11, "Resize", []*onnx.Attribute{stringAttr("coordinate_transformation_mode", "tf_half_pixel_for_nn")},
			[]nodeInput{feed(x), fixed(FromFloat32s(Shape{0}, nil)), scales}},
		{"Resize-11/sizes", 11, "Resize", []*onnx.Attribute{stringAttr("mode", "cubic")},
			[]nodeInput{feed(x), fixed(FromFloat32s(Shape{0}, nil)), fixed(FromFloat32s(Shape{0}, nil)), fixed(IntsTensor(1, 2, 5, 3))}},
		{"Upsample-9/nearest", 9, "Upsample", nil, []nodeInput{feed(x), scales}},
		{"Upsample-9/linear", 9, "Upsample", []*onnx.Attribute{stringAttr("mode", "linear")}, []nodeInput{feed(x), scales}},
		{"Upsample-7/nearest", 7, "Upsample", []*onnx.Attribute{floatsAttr("scales", 1, 1, 2, 3)}, []nodeInput{feed(x)}},
		{"Resize/uint8-nearest", 19, "Resize", nil, []nodeInput{feed(Convert(randTensor(rng, Float32, Shape{1, 1, 3, 4}, 0, 255), Uint8)), omitted, scales}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, feeds := oneNodeModel(t, c.opset, c.op, c.attrs, c.ins, 1)
			checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
		})
	}
}

// TestResizeGradient: Resize imports as Gather, Mul and ReduceSum, so it
// is differentiable with respect to its input; checked against central
// differences in float64 for each mode.
func TestResizeGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []resizeCase{
		{attrs: []*onnx.Attribute{stringAttr("mode", "linear")}, shape: Shape{1, 2, 3, 4}, scales: []float32{1, 1, 1.7, 0.6}},
		{attrs: []*onnx.Attribute{stringAttr("mode", "cubic"), intAttr("antialias", 1)}, shape: Shape{1, 1, 5, 4}, sizes: []int64{1, 1, 3, 6}},
		{attrs: []*onnx.Attribute{stringAttr("mode", "nearest")}, shape: Shape{2, 3}, scales: []float32{2, 1.5}},
		{attrs: []*onnx.Attribute{stringAttr("mode", "linear"), stringAttr("coordinate_transformation_mode", "tf_crop_and_resize")},
			shape: Shape{3, 4}, sizes: []int64{4, 5}, roi: []float32{-0.1, 0.2, 0.9, 1.2}},
	} {
		t.Run(c.String(), func(t *testing.T) {
			m, feeds := c.model(t, rng, Float64)
			// The resized tensor becomes a parameter.
			x := feeds["in0"]
			m.Graph.Inputs = nil
			m.Graph.Initializers = append(m.Graph.Initializers, initializer(t, "in0", x))
			checkImportedGrad(t, m, nil, 1e-6)
		})
	}
}

// TestResizeErrors: malformed Resize and Upsample nodes fail to import
// with an error naming the problem.
func TestResizeErrors(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 1, 2, 2})
	sc := func(v ...float32) nodeInput { return fixed(FromFloat32s(Shape{len(v)}, v)) }
	sz := func(v ...int64) nodeInput { return fixed(FromInt64s(Shape{len(v)}, v)) }
	for _, c := range []struct {
		name  string
		op    string
		opset int64
		attrs []*onnx.Attribute
		ins   []nodeInput
		want  string
	}{
		{"mode", "Resize", 19, []*onnx.Attribute{stringAttr("mode", "area")}, []nodeInput{feed(x), omitted, sc(1, 1, 2, 2)}, `mode "area"`},
		{"coordinate mode", "Resize", 19, []*onnx.Attribute{stringAttr("coordinate_transformation_mode", "corners")}, []nodeInput{feed(x), omitted, sc(1, 1, 2, 2)}, "coordinate_transformation_mode"},
		{"nearest mode", "Resize", 19, []*onnx.Attribute{stringAttr("nearest_mode", "up")}, []nodeInput{feed(x), omitted, sc(1, 1, 2, 2)}, "nearest_mode"},
		{"antialias", "Resize", 19, []*onnx.Attribute{intAttr("antialias", 2)}, []nodeInput{feed(x), omitted, sc(1, 1, 2, 2)}, "antialias 2"},
		{"policy", "Resize", 19, []*onnx.Attribute{stringAttr("keep_aspect_ratio_policy", "fit")}, []nodeInput{feed(x), omitted, omitted, sz(1, 1, 3, 3)}, "keep_aspect_ratio_policy"},
		{"both", "Resize", 19, nil, []nodeInput{feed(x), omitted, sc(1, 1, 2, 2), sz(1, 1, 3, 3)}, "exactly one of scales and sizes"},
		{"neither", "Resize", 19, nil, []nodeInput{feed(x)}, "exactly one of scales and sizes"},
		{"scales length", "Resize", 19, nil, []nodeInput{feed(x), omitted, sc(2, 2)}, "want 4 floats"},
		{"negative scale", "Resize", 19, nil, []nodeInput{feed(x), omitted, sc(1, 1, -2, 2)}, "scale -2"},
		{"huge scale", "Resize", 19, nil, []nodeInput{feed(x), omitted, sc(1, 1, 3e38, 3e38)}, "scale 3"},
		{"huge sizes", "Resize", 19, nil, []nodeInput{feed(x), omitted, omitted, sz(1, 1, 1<<40, 1<<40)}, "size"},
		{"negative size", "Resize", 19, nil, []nodeInput{feed(x), omitted, omitted, sz(1, 1, -1, 2)}, "size -1"},
		{"axes", "Resize", 19, []*onnx.Attribute{intsAttr("axes", 2, 2)}, []nodeInput{feed(x), omitted, sc(2, 2)}, "repeat axis 2"},
		{"axes range", "Resize", 19, []*onnx.Attribute{intsAttr("axes", 4)}, []nodeInput{feed(x), omitted, sc(2)}, "axis 4 out of range"},
		{"no roi", "Resize", 19, []*onnx.Attribute{stringAttr("coordinate_transformation_mode", "tf_crop_and_resize")}, []nodeInput{feed(x), omitted, sc(1, 1, 2, 2)}, "needs roi"},
		{"cubic-10", "Resize", 10, []*onnx.Attribute{stringAttr("mode", "cubic")}, []nodeInput{feed(x), sc(1, 1, 2, 2)}, "cubic needs opset 11"},
		{"runtime scales", "Resize", 19, nil, []nodeInput{feed(x), omitted, feed(FromFloat32s(Shape{4}, []float32{1, 1, 2, 2}))}, "must be known at import"},
		{"upsample mode", "Upsample", 9, []*onnx.Attribute{stringAttr("mode", "cubic")}, []nodeInput{feed(x), sc(1, 1, 2, 2)}, `mode "cubic"`},
		{"upsample scales", "Upsample", 9, nil, []nodeInput{feed(x), sc(1, 2)}, "2 scales"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := oneNodeModel(t, c.opset, c.op, c.attrs, c.ins, 1)
			wantImportError(t, m, nil, c.want)
		})
	}
}

// TestResizeBoundsImportWork: an antialiasing filter over a whole huge
// axis would need billions of taps; import refuses it instead of
// computing them.
func TestResizeBoundsImportWork(t *testing.T) {
	m := buildModel(19, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 1<<30)}, nil, []*onnx.Node{
		constNode(t, "sizes", IntsTensor(1)),
		node("Resize", []string{"x", "", "", "sizes"}, []string{"y"}, stringAttr("mode", "cubic"), intAttr("antialias", 1)),
	}, "y")
	wantImportError(t, m, nil, "taps for each of 1 positions")
}

// TestResizeIgnoresUnusedRoi: roi matters only to tf_crop_and_resize; a
// roi computed at run time does not stop other modes from importing.
func TestResizeIgnoresUnusedRoi(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 1, 2, 2})
	roi := feed(FromFloat32s(Shape{8}, []float32{0, 0, 0, 0, 1, 1, 1, 1}))
	scales := fixed(FromFloat32s(Shape{4}, []float32{1, 1, 2, 2}))
	m, feeds := oneNodeModel(t, 19, "Resize", []*onnx.Attribute{stringAttr("mode", "linear")}, []nodeInput{feed(x), roi, scales}, 1)
	if _, _, err := interpretModel(m, feeds); err != nil {
		t.Fatal(err)
	}
	m, _ = oneNodeModel(t, 19, "Resize", []*onnx.Attribute{stringAttr("coordinate_transformation_mode", "tf_crop_and_resize")}, []nodeInput{feed(x), roi, scales}, 1)
	wantImportError(t, m, nil, "roi", "must be known at import")
}
