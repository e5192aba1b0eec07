package ir

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// normCase is one normalization (or pooling) node over x with per-channel
// or per-group parameters.
type normCase struct {
	op     string
	opset  int64
	x      Shape
	params []Shape // scale, bias, ...
	attrs  []*onnx.Attribute
}

func (c normCase) String() string {
	return fmt.Sprintf("%s-%d%v%s", c.op, c.opset, c.x, attrsString(c.attrs))
}

func (c normCase) model(t *testing.T, rng *rand.Rand, dt DType, asWeights bool) (*onnx.Model, map[string]*Tensor) {
	in := feed
	if asWeights {
		in = weight
	}
	ins := []nodeInput{in(randTensor(rng, dt, c.x, -2, 2))}
	for _, s := range c.params {
		ins = append(ins, in(randTensor(rng, dt, s, 0.5, 1.5)))
	}
	return oneNodeModel(t, c.opset, c.op, c.attrs, ins, 1)
}

// normCases: onnxruntime takes only odd LRN sizes of 4-D inputs and leaves dilations out
// of auto_pad SAME (which ONNX's definition includes), so dilations come
// with explicit pads.
func normCases() []normCase {
	return []normCase{
		{op: "InstanceNormalization", opset: 22, x: Shape{2, 3, 4, 5}, params: []Shape{{3}, {3}}},
		{op: "InstanceNormalization", opset: 6, x: Shape{1, 2, 7}, params: []Shape{{2}, {2}}, attrs: []*onnx.Attribute{floatAttr("epsilon", 0.1)}},
		{op: "GroupNormalization", opset: 21, x: Shape{2, 6, 3, 2}, params: []Shape{{6}, {6}}, attrs: []*onnx.Attribute{intAttr("num_groups", 3)}},
		{op: "GroupNormalization", opset: 21, x: Shape{1, 4, 5}, params: []Shape{{4}, {4}}, attrs: []*onnx.Attribute{intAttr("num_groups", 1), floatAttr("epsilon", 0.01)}},
		{op: "GroupNormalization", opset: 18, x: Shape{2, 6, 3}, params: []Shape{{2}, {2}}, attrs: []*onnx.Attribute{intAttr("num_groups", 2)}},
		{op: "MeanVarianceNormalization", opset: 13, x: Shape{2, 3, 4, 2}},
		{op: "MeanVarianceNormalization", opset: 13, x: Shape{2, 3, 4}, attrs: []*onnx.Attribute{intsAttr("axes", -1, 1)}},
		{op: "LRN", opset: 13, x: Shape{2, 5, 3, 2}, attrs: []*onnx.Attribute{intAttr("size", 3)}},
		{op: "LRN", opset: 13, x: Shape{1, 6, 4, 1}, attrs: []*onnx.Attribute{intAttr("size", 5), floatAttr("alpha", 0.3), floatAttr("beta", 0.6), floatAttr("bias", 1.5)}},
		{op: "LpPool", opset: 22, x: Shape{1, 2, 5, 6}, attrs: []*onnx.Attribute{intsAttr("kernel_shape", 2, 3), intAttr("p", 3)}},
		{op: "LpPool", opset: 22, x: Shape{2, 1, 7}, attrs: []*onnx.Attribute{intsAttr("kernel_shape", 3), intAttr("p", 1), intsAttr("strides", 2), intsAttr("pads", 1, 1)}},
		{op: "LpPool", opset: 22, x: Shape{1, 2, 6, 7}, attrs: []*onnx.Attribute{intsAttr("kernel_shape", 3, 2), intsAttr("strides", 2, 2), intAttr("ceil_mode", 1)}},
		{op: "LpPool", opset: 22, x: Shape{1, 1, 5, 5}, attrs: []*onnx.Attribute{intsAttr("kernel_shape", 2, 2), stringAttr("auto_pad", "SAME_UPPER")}},
		{op: "LpPool", opset: 22, x: Shape{1, 1, 6, 5}, attrs: []*onnx.Attribute{intsAttr("kernel_shape", 2, 2), intsAttr("dilations", 2, 1), intsAttr("pads", 1, 0, 0, 1)}},
	}
}

// TestNormalizationMatchesOnnxruntime: InstanceNormalization,
// GroupNormalization (per-group parameters of opset 18 and per-channel of
// 21), MeanVarianceNormalization, LRN and LpPool against onnxruntime.
func TestNormalizationMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(15, 16))
	for _, c := range normCases() {
		t.Run(c.String(), func(t *testing.T) {
			m, feeds := c.model(t, rng, Float32, false)
			checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
		})
	}
}

// TestNormalizationGradient: the compositions these ops import as are
// differentiable with respect to the input and the parameters.
func TestNormalizationGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, c := range normCases() {
		t.Run(c.String(), func(t *testing.T) {
			m, _ := c.model(t, rng, Float64, true)
			checkImportedGrad(t, m, nil, 1e-6)
		})
	}
}

// TestMaxUnpoolMatchesOnnxruntime: MaxPool's indices unpooled again, with
// overlapping windows (repeated indices) and padding.
func TestMaxUnpoolMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(19, 20))
	for _, c := range []struct {
		x     Shape
		attrs []*onnx.Attribute
	}{
		{Shape{1, 2, 4, 6}, []*onnx.Attribute{intsAttr("kernel_shape", 2, 2), intsAttr("strides", 2, 2)}},
		{Shape{2, 1, 5, 5}, []*onnx.Attribute{intsAttr("kernel_shape", 3, 3), intsAttr("strides", 1, 2)}},
		{Shape{1, 1, 6}, []*onnx.Attribute{intsAttr("kernel_shape", 2), intsAttr("strides", 2), intsAttr("pads", 1, 1)}},
	} {
		t.Run(fmt.Sprintf("%v%s", c.x, attrsString(c.attrs)), func(t *testing.T) {
			x := randTensor(rng, Float32, c.x, -2, 2)
			m := buildModel(22, []*onnx.ValueInfo{valueInfo("x", onnx.Float, anyDims(c.x)...)}, nil, []*onnx.Node{
				node("MaxPool", []string{"x"}, []string{"pooled", "indices"}, c.attrs...),
				node("MaxUnpool", []string{"pooled", "indices"}, []string{"y"}, c.attrs...),
			}, "y")
			checkAgainstORT(t, m, map[string]*Tensor{"x": x}, 0, 0)
		})
	}
}

func TestNormalizationErrors(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 4, 3, 3})
	v := func(n int) nodeInput { return feed(NewTensor(Float32, Shape{n})) }
	idx := feed(NewTensor(Int64, Shape{1, 4, 3, 3}))
	for _, c := range []struct {
		name  string
		op    string
		opset int64
		ins   []nodeInput
		attrs []*onnx.Attribute
		want  string
	}{
		{"instance scale", "InstanceNormalization", 22, []nodeInput{feed(x), v(3), v(4)}, nil, "scale is float32[3]"},
		{"instance rank", "InstanceNormalization", 22, []nodeInput{feed(NewTensor(Float32, Shape{2, 4})), v(4), v(4)}, nil, "N×C×D1"},
		{"group count", "GroupNormalization", 21, []nodeInput{feed(x), v(4), v(4)}, []*onnx.Attribute{intAttr("num_groups", 3)}, "num_groups 3"},
		{"group missing", "GroupNormalization", 21, []nodeInput{feed(x), v(4), v(4)}, nil, "num_groups is required"},
		{"group-18 scale", "GroupNormalization", 18, []nodeInput{feed(x), v(4), v(2)}, []*onnx.Attribute{intAttr("num_groups", 2)}, "scale is float32[4], want float32[2]"},
		{"mvn axes", "MeanVarianceNormalization", 13, []nodeInput{feed(x)}, []*onnx.Attribute{intsAttr("axes", 4)}, "axis 4 out of range"},
		{"lrn size", "LRN", 13, []nodeInput{feed(x)}, nil, "size 0"},
		{"lppool p", "LpPool", 22, []nodeInput{feed(x)}, []*onnx.Attribute{intsAttr("kernel_shape", 2, 2), intAttr("p", 0)}, "p 0"},
		{"lppool kernel", "LpPool", 22, []nodeInput{feed(x)}, []*onnx.Attribute{intsAttr("kernel_shape", 2)}, "kernel_shape [2]"},
		{"lppool huge kernel", "LpPool", 22, []nodeInput{feed(x)}, []*onnx.Attribute{intsAttr("kernel_shape", 1<<40, 1<<40)}, "kernel_shape"},
		{"lppool stride", "LpPool", 22, []nodeInput{feed(x)}, []*onnx.Attribute{intsAttr("kernel_shape", 2, 2), intsAttr("strides", 0, 1)}, "strides [0 1]"},
		{"unpool kernel", "MaxUnpool", 22, []nodeInput{feed(x), idx}, nil, "kernel_shape []"},
		{"unpool indices", "MaxUnpool", 22, []nodeInput{feed(x), feed(NewTensor(Int32, Shape{1, 4, 3, 3}))}, []*onnx.Attribute{intsAttr("kernel_shape", 2, 2)}, "indices are int32"},
		{"unpool output_shape", "MaxUnpool", 22, []nodeInput{feed(x), idx, fixed(IntsTensor(1, 4, 2, 2))}, []*onnx.Attribute{intsAttr("kernel_shape", 2, 2)}, "want at least the unpooled shape"},
		{"unpool huge output_shape", "MaxUnpool", 22, []nodeInput{feed(x), idx, fixed(IntsTensor(1, 4, 1<<30, 1<<30))}, []*onnx.Attribute{intsAttr("kernel_shape", 2, 2)}, "MaxUnpool: output 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := oneNodeModel(t, c.opset, c.op, c.attrs, c.ins, 1)
			wantImportError(t, m, nil, c.want)
		})
	}
}

// TestMaxUnpoolIndexOutOfRange: an index beyond the unpooled tensor is an
// error at run time, not a write out of bounds.
func TestMaxUnpoolIndexOutOfRange(t *testing.T) {
	op := &MaxUnpool{Pooled: Shape{1, 1, 2, 2}, Shape: Shape{1, 1, 2, 2}}
	_, err := EvalOp(op, FromFloat32s(Shape{1, 1, 1, 1}, []float32{1}), FromInt64s(Shape{1, 1, 1, 1}, []int64{4}))
	if err == nil {
		t.Fatal("index 4 of a 4-element tensor accepted")
	}
}

// TestLRNEvenSize: with an even size the window has one channel more
// after than before (onnxruntime takes only odd sizes); checked against
// the definition's sum written out.
func TestLRNEvenSize(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	x := randTensor(rng, Float64, Shape{2, 5, 3}, -2, 2)
	const size, alpha, beta, bias = 4, 0.5, 0.75, 2.0
	m, feeds := oneNodeModel(t, 13, "LRN", []*onnx.Attribute{intAttr("size", size), floatAttr("alpha", alpha), floatAttr("beta", beta), floatAttr("bias", bias)}, []nodeInput{feed(x)}, 1)
	got, _, err := interpretModel(m, feeds)
	if err != nil {
		t.Fatal(err)
	}
	xs := x.Float64s()
	want := NewTensor(Float64, x.Shape())
	for n := range 2 {
		for c := range 5 {
			for i := range 3 {
				sum := 0.0
				for j := max(0, c-(size-1)/2); j <= min(4, c+size/2); j++ {
					v := xs[(n*5+j)*3+i]
					sum += v * v
				}
				want.Float64s()[(n*5+c)*3+i] = xs[(n*5+c)*3+i] / math.Pow(bias+alpha/size*sum, beta)
			}
		}
	}
	if d := Compare(got["y0"], want, 1e-12, 1e-12); !d.OK() {
		t.Errorf("LRN size %d: %v", size, d)
	}
}

// TestMaxUnpoolGradient: the gradient with respect to the pooled values,
// repeated indices included (only the element written last receives it),
// against central differences.
func TestMaxUnpoolGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	x := randTensor(rng, Float64, Shape{1, 2, 2, 2}, -1, 1)
	idx := FromInt64s(Shape{1, 2, 2, 2}, []int64{0, 5, 5, 15, 3, 3, 3, 12})
	m, feeds := oneNodeModel(t, 22, "MaxUnpool", []*onnx.Attribute{intsAttr("kernel_shape", 2, 2), intsAttr("strides", 2, 2)},
		[]nodeInput{weight(x), feed(idx), fixed(IntsTensor(1, 2, 5, 4))}, 1)
	checkImportedGrad(t, m, feeds, 1e-6)
}
