package ir

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/onnx"
)

func init() {
	registerOp("", "ConvTranspose", importConvTranspose)
}

// ---------------------------------------------------------------- ConvTranspose

// importConvTranspose imports ConvTranspose as ConvGradInput: the
// transposed convolution of X [N, C, i...] with W [C, M/group, k...] is
// the gradient, with respect to its input, of the convolution of an
// [N, M, o...] tensor with W, plus the optional bias [M]. Pads, output
// padding and output_shape become the convolution's begin pads and an end
// pad that makes its output length exactly the input's.
func importConvTranspose(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	x, w := in[0], in[1]
	if len(x.Shape) < 3 || len(w.Shape) != len(x.Shape) {
		return nil, fmt.Errorf("input %v and weights %v, want NC<spatial> and CM<kernel> of one rank", x.Shape, w.Shape)
	}
	k := len(x.Shape) - 2
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
	strides, err := spatialAttr("strides", 1, k)
	if err != nil {
		return nil, err
	}
	dilations, err := spatialAttr("dilations", 1, k)
	if err != nil {
		return nil, err
	}
	outPad, err := spatialAttr("output_padding", 0, k)
	if err != nil {
		return nil, err
	}
	for d := range k {
		if strides[d] < 1 || dilations[d] < 1 {
			return nil, fmt.Errorf("strides %v and dilations %v, want positive values", strides, dilations)
		}
		if outPad[d] < 0 || (outPad[d] >= strides[d] && outPad[d] >= dilations[d]) {
			return nil, fmt.Errorf("output_padding %v, want each smaller than its stride %v or dilation %v", outPad, strides, dilations)
		}
	}
	outShape, hasOutShape, err := attrInts(n, "output_shape")
	if err != nil {
		return nil, err
	}
	if hasOutShape {
		switch len(outShape) {
		case k:
		case k + 2:
			outShape = outShape[2:]
		default:
			return nil, fmt.Errorf("output_shape %v for %d spatial axes", outShape, k)
		}
		for _, s := range outShape {
			if s < 0 || s > maxTensorBytes {
				return nil, fmt.Errorf("output_shape %v", outShape)
			}
		}
	}
	autoPad, err := n.AttrString("auto_pad", "NOTSET")
	if err != nil {
		return nil, err
	}
	span := make([]int, k)
	for d := range k {
		span[d] = dilations[d]*(kernel[d]-1) + 1
	}
	// Begin pads and output lengths, as ONNX's definition resolves them.
	pads := make([]int, 2*k)
	out := make([]int, k)
	switch autoPad {
	case "NOTSET", "VALID":
		if autoPad == "NOTSET" {
			if pads, err = spatialAttr("pads", 0, 2*k); err != nil {
				return nil, err
			}
		}
		for d := range k {
			if pads[d] < 0 || pads[k+d] < 0 {
				return nil, fmt.Errorf("pads %v, want non-negative values", pads)
			}
			if hasOutShape {
				out[d] = outShape[d]
			} else {
				out[d] = strides[d]*(x.Shape[2+d]-1) + outPad[d] + span[d] - pads[d] - pads[k+d]
			}
		}
	case "SAME_UPPER", "SAME_LOWER":
		for d := range k {
			out[d] = x.Shape[2+d] * strides[d]
			if hasOutShape {
				out[d] = outShape[d]
			}
			total := strides[d]*(x.Shape[2+d]-1) + outPad[d] + span[d] - out[d]
			small := floorDiv(total, 2)
			if autoPad == "SAME_UPPER" {
				pads[d], pads[k+d] = small, total-small
			} else {
				pads[d], pads[k+d] = total-small, small
			}
		}
	default:
		return nil, fmt.Errorf("auto_pad %q", autoPad)
	}
	// The convolution maps an input of length out[d] back to x's length
	// with begin pad pads[d] and the end pad that makes its windows
	// exactly x's positions (negative where output_padding or
	// output_shape extend the output past the last window).
	conv := Conv{Strides: strides, Dilations: dilations, Pads: make([]int, 2*k), Group: group}
	outFull := Shape{x.Shape[0], w.Shape[1] * group}
	for d := range k {
		if out[d] < 1 {
			return nil, fmt.Errorf("output length %d on spatial axis %d", out[d], d)
		}
		conv.Pads[d] = pads[d]
		conv.Pads[k+d] = strides[d]*(x.Shape[2+d]-1) + span[d] - out[d] - pads[d]
		outFull = append(outFull, out[d])
	}
	if err := checkShape(outFull, x.DType.Size(), maxTensorBytes); err != nil {
		return nil, fmt.Errorf("output %v: %w", outFull, err)
	}
	y, err := im.emit1(&ConvGradInput{Conv: conv, InputShape: outFull}, x, w)
	if err != nil {
		return nil, err
	}
	if len(in) > 2 && in[2] != nil {
		b := in[2]
		if !b.Shape.Equal(Shape{outFull[1]}) {
			return nil, fmt.Errorf("bias %v, want [%d]", b.Shape, outFull[1])
		}
		bs := make(Shape, len(outFull)-1)
		for i := range bs {
			bs[i] = 1
		}
		bs[0] = outFull[1]
		if b, err = im.reshape(b, bs); err != nil {
			return nil, err
		}
		return one(im.emit1(&Binary{Fn: Add}, y, b))
	}
	return []*Value{y}, nil
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
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
