package ir

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

type convTransposeCase struct {
	x, w  Shape
	bias  bool
	attrs []*onnx.Attribute
}

// convTransposeCases are ConvTranspose geometries checked against
// onnxruntime (output_shape and auto_pad cases, where dstune follows
// onnxruntime rather than the ONNX text, are in conv_geometry_test.go).
func convTransposeCases() []convTransposeCase {
	return []convTransposeCase{
		{x: Shape{1, 2, 4}, w: Shape{2, 3, 3}},
		{x: Shape{2, 4, 3, 5}, w: Shape{4, 3, 2, 3}, bias: true, attrs: []*onnx.Attribute{intAttr("group", 2), intsAttr("strides", 2, 3)}},
		{x: Shape{1, 3, 4, 3}, w: Shape{3, 2, 3, 2}, attrs: []*onnx.Attribute{intsAttr("strides", 3, 2), intsAttr("pads", 1, 0, 2, 1), intsAttr("output_padding", 2, 1)}},
		{x: Shape{1, 2, 3, 3}, w: Shape{2, 2, 2, 3}, bias: true, attrs: []*onnx.Attribute{intsAttr("dilations", 2, 3), intsAttr("strides", 2, 2)}},
		{x: Shape{1, 1, 3, 4}, w: Shape{1, 2, 3, 3}, attrs: []*onnx.Attribute{intsAttr("strides", 2, 2), stringAttr("auto_pad", "SAME_LOWER")}},
		{x: Shape{1, 1, 3, 4}, w: Shape{1, 2, 3, 3}, attrs: []*onnx.Attribute{intsAttr("strides", 2, 3), stringAttr("auto_pad", "SAME_UPPER")}},
		{x: Shape{1, 2, 3, 3}, w: Shape{2, 1, 3, 3}, attrs: []*onnx.Attribute{intsAttr("strides", 2, 2), intsAttr("output_shape", 5, 6), stringAttr("auto_pad", "SAME_UPPER")}},
		{x: Shape{1, 2, 3, 3}, w: Shape{2, 1, 3, 3}, attrs: []*onnx.Attribute{intsAttr("strides", 3, 2), intsAttr("output_shape", 9, 7)}},
		{x: Shape{1, 1, 2, 3, 2}, w: Shape{1, 2, 2, 2, 3}, bias: true, attrs: []*onnx.Attribute{intsAttr("strides", 1, 2, 2), intsAttr("pads", 0, 1, 1, 1, 0, 1)}},
		{x: Shape{1, 6, 3, 3}, w: Shape{6, 1, 3, 3}, attrs: []*onnx.Attribute{intAttr("group", 6), stringAttr("auto_pad", "VALID")}},
	}
}

func (c convTransposeCase) model(t *testing.T, rng *rand.Rand, dt DType, xIn, wIn func(*Tensor) nodeInput) (*onnx.Model, map[string]*Tensor) {
	ins := []nodeInput{xIn(randTensor(rng, dt, c.x, -1, 1)), wIn(randTensor(rng, dt, c.w, -1, 1))}
	if c.bias {
		ins = append(ins, wIn(randTensor(rng, dt, Shape{c.w[1] * groupOf(c.attrs)}, -1, 1)))
	}
	return oneNodeModel(t, 22, "ConvTranspose", c.attrs, ins, 1)
}

func groupOf(attrs []*onnx.Attribute) int {
	for _, a := range attrs {
		if a.Name == "group" {
			return int(a.I)
		}
	}
	return 1
}

// TestConvTransposeMatchesOnnxruntime covers groups, strides, pads,
// output_padding, dilations, every auto_pad, output_shape, 1-D to 3-D and
// the bias.
func TestConvTransposeMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range convTransposeCases() {
		t.Run(fmt.Sprintf("%v%v%s", c.x, c.w, attrsString(c.attrs)), func(t *testing.T) {
			m, feeds := c.model(t, rng, Float32, feed, feed)
			checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
		})
	}
}

// TestConvTransposeGradient checks the gradients with respect to the
// input, the weights and the bias against central differences.
func TestConvTransposeGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, c := range convTransposeCases() {
		t.Run(fmt.Sprintf("%v%v%s", c.x, c.w, attrsString(c.attrs)), func(t *testing.T) {
			m, _ := c.model(t, rng, Float64, weight, weight)
			checkImportedGrad(t, m, nil, 1e-6)
		})
	}
}

func TestConvTransposeErrors(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 2, 3, 3})
	w := NewTensor(Float32, Shape{2, 1, 3, 3})
	for _, c := range []struct {
		name  string
		w     *Tensor
		attrs []*onnx.Attribute
		want  string
	}{
		{"kernel_shape", w, []*onnx.Attribute{intsAttr("kernel_shape", 2, 2)}, "kernel_shape [2 2]"},
		{"group", w, []*onnx.Attribute{intAttr("group", 3)}, "group 3"},
		{"weights", NewTensor(Float32, Shape{3, 1, 3, 3}), nil, "weights [3,1,3,3]"},
		{"rank", NewTensor(Float32, Shape{2, 1, 3}), nil, "of one rank"},
		{"strides", w, []*onnx.Attribute{intsAttr("strides", 1)}, "strides [1], want 2 values"},
		{"zero stride", w, []*onnx.Attribute{intsAttr("strides", 0, 1)}, "want positive values"},
		{"output_padding", w, []*onnx.Attribute{intsAttr("output_padding", 1, 1)}, "output_padding [1 1]"},
		{"output_shape", w, []*onnx.Attribute{intsAttr("output_shape", 5)}, "output_shape [5]"},
		{"huge output_shape", w, []*onnx.Attribute{intsAttr("output_shape", 1<<30, 1<<30)}, "output"},
		{"negative pads", w, []*onnx.Attribute{intsAttr("pads", -1, 0, 0, 0)}, "non-negative"},
		{"pads swallow output", w, []*onnx.Attribute{intsAttr("pads", 3, 0, 3, 0)}, "output length"},
		{"auto_pad", w, []*onnx.Attribute{stringAttr("auto_pad", "SAME")}, `auto_pad "SAME"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := oneNodeModel(t, 22, "ConvTranspose", c.attrs, []nodeInput{feed(x), feed(c.w)}, 1)
			wantImportError(t, m, nil, c.want)
		})
	}
}
