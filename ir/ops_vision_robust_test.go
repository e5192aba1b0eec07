package ir

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dstune/dstune/onnx"
)

// TestVisionOpsSurviveHostileAttributes imports (and, when the import
// succeeds and the graph is small, runs) the image, convolution,
// normalization, detection and recurrent operators with attributes and
// static operands drawn from hostile values: negative, zero, huge, NaN and
// infinite numbers, and unknown strings. Each must either import or fail
// with an error; none may panic or allocate without bound.
func TestVisionOpsSurviveHostileAttributes(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	ints := []int64{-1, 0, 1, 2, 3, 7, 1 << 31, 1 << 62, -(1 << 62)}
	floats := []float32{float32(math.NaN()), float32(math.Inf(1)), -1, 0, 0.5, 1, 3, 1e30}
	// Each value is hostile one time in five, else one of the valid ones
	// given, so that most nodes have one or two hostile values.
	hostile := func() bool { return rng.IntN(5) == 0 }
	pickInt := func(valid ...int64) int64 {
		if len(valid) == 0 || hostile() {
			return ints[rng.IntN(len(ints))]
		}
		return valid[rng.IntN(len(valid))]
	}
	pickInts := func(n int, valid ...int64) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = pickInt(valid...)
		}
		return out
	}
	pickFloat := func(valid ...float32) float32 {
		if len(valid) == 0 || hostile() {
			return floats[rng.IntN(len(floats))]
		}
		return valid[rng.IntN(len(valid))]
	}
	pickString := func(valid ...string) string {
		if hostile() {
			return "bogus"
		}
		return valid[rng.IntN(len(valid))]
	}
	x4 := func() *Tensor { return randTensor(rng, Float32, Shape{1, 2, 4, 4}, -1, 1) }
	type gen func() (op string, opset int64, attrs []*onnx.Attribute, ins []nodeInput, outs int)
	gens := []gen{
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{
				stringAttr("mode", pickString("nearest", "linear", "cubic")),
				stringAttr("coordinate_transformation_mode", pickString(resizeCoordModes...)),
				intAttr("antialias", pickInt(0, 1)), intAttr("exclude_outside", pickInt(0, 1)),
				floatAttr("cubic_coeff_a", pickFloat(-0.75, -0.5)), floatAttr("extrapolation_value", pickFloat(0, 2)),
			}
			scales := []float32{1, 1, pickFloat(0.5, 1, 2.5), pickFloat(0.3, 3)}
			ins := []nodeInput{feed(x4()), fixed(FromFloat32s(Shape{8}, []float32{0, 0, pickFloat(0, -0.5), 0, 1, 1, pickFloat(1, 1.5), 1})), fixed(FromFloat32s(Shape{4}, scales))}
			if rng.IntN(2) == 0 {
				ins[2] = fixed(FromFloat32s(Shape{0}, nil))
				ins = append(ins, fixed(FromInt64s(Shape{4}, []int64{1, 2, pickInt(1, 3, 9), pickInt(2, 5)})))
			}
			return "Resize", 19, attrs, ins, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{intsAttr("strides", pickInts(2, 1, 2)...), intsAttr("pads", pickInts(4, 0, 1)...), intsAttr("dilations", pickInts(2, 1, 2)...),
				intsAttr("output_padding", pickInts(2, 0, 1)...), intAttr("group", pickInt(1, 2)), stringAttr("auto_pad", pickString("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"))}
			if rng.IntN(2) == 0 {
				attrs = append(attrs, intsAttr("output_shape", pickInts(2, 5, 9)...))
			}
			return "ConvTranspose", 22, attrs, []nodeInput{feed(x4()), feed(randTensor(rng, Float32, Shape{2, 1, 2, 2}, -1, 1))}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{intsAttr("kernel_shape", pickInts(2, 1, 2, 3)...), intsAttr("strides", pickInts(2, 1, 2)...), intsAttr("pads", pickInts(4, 0, 1)...),
				intAttr("p", pickInt(1, 2, 3)), intAttr("ceil_mode", pickInt(0, 1))}
			return "LpPool", 22, attrs, []nodeInput{feed(x4())}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{intsAttr("kernel_shape", pickInts(2, 2)...), intsAttr("strides", pickInts(2, 2)...), intsAttr("pads", pickInts(4, 0)...)}
			idx := FromInt64s(Shape{1, 2, 4, 4}, pickInts(32, 0, 5, 63))
			ins := []nodeInput{feed(x4()), feed(idx)}
			if rng.IntN(2) == 0 {
				ins = append(ins, fixed(FromInt64s(Shape{4}, []int64{1, 2, pickInt(8, 9), pickInt(8, 10)})))
			}
			return "MaxUnpool", 22, attrs, ins, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{intAttr("size", pickInt(1, 2, 3)), floatAttr("alpha", pickFloat(1e-4)), floatAttr("beta", pickFloat(0.75)), floatAttr("bias", pickFloat(1))}
			return "LRN", 13, attrs, []nodeInput{feed(x4())}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{intAttr("num_groups", pickInt(1, 2)), floatAttr("epsilon", pickFloat(1e-5))}
			v := func() nodeInput { return feed(randTensor(rng, Float32, Shape{2}, -1, 1)) }
			return "GroupNormalization", 21, attrs, []nodeInput{feed(x4()), v(), v()}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{stringAttr("mode", pickString("linear", "nearest", "cubic")), stringAttr("padding_mode", pickString("zeros", "border", "reflection")),
				intAttr("align_corners", pickInt(0, 1))}
			grid := FromFloat32s(Shape{1, 2, 2, 2}, []float32{pickFloat(0.3), pickFloat(-2), pickFloat(1), -pickFloat(1.5), pickFloat(0), 0, 1, -1})
			return "GridSample", 20, attrs, []nodeInput{feed(x4()), feed(grid)}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			return "AffineGrid", 20, []*onnx.Attribute{intAttr("align_corners", pickInt(0, 1))},
				[]nodeInput{feed(randTensor(rng, Float32, Shape{1, 2, 3}, -1, 1)), fixed(FromInt64s(Shape{4}, []int64{1, 1, pickInt(1, 3), pickInt(2, 4)}))}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{intAttr("output_height", pickInt(1, 3)), intAttr("output_width", pickInt(2)), intAttr("sampling_ratio", pickInt(0, 2)),
				floatAttr("spatial_scale", pickFloat(1, 0.5)), stringAttr("mode", pickString("avg", "max"))}
			rois := FromFloat32s(Shape{1, 4}, []float32{pickFloat(0, 1), pickFloat(0.5), pickFloat(3, 9), pickFloat(2)})
			return "RoiAlign", 16, attrs, []nodeInput{feed(x4()), feed(rois), feed(FromInt64s(Shape{1}, []int64{pickInt(0)}))}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			boxes := FromFloat32s(Shape{1, 2, 4}, []float32{pickFloat(0), pickFloat(0), pickFloat(1), pickFloat(1), 0, 0, 1, 1})
			scores := FromFloat32s(Shape{1, 1, 2}, []float32{pickFloat(0.5, 1), 0.5})
			return "NonMaxSuppression", 11, []*onnx.Attribute{intAttr("center_point_box", pickInt(0, 1))},
				[]nodeInput{fixed(boxes), fixed(scores), fixed(FromInt64s(Shape{1}, []int64{pickInt(1, 2)})), fixed(FromFloat32s(Shape{1}, []float32{pickFloat(0.5)})),
					fixed(FromFloat32s(Shape{1}, []float32{pickFloat(0.1)}))}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			attrs := []*onnx.Attribute{intsAttr("strides", pickInts(2, 1)...), intsAttr("pads", pickInts(4, 0)...), intsAttr("dilations", pickInts(2, 1)...),
				intAttr("group", pickInt(1)), intAttr("offset_group", pickInt(1))}
			off := NewTensor(Float32, Shape{1, 8, 3, 3})
			for i := range off.Float32s() {
				off.Float32s()[i] = pickFloat(0, 0.5, -1.5)
			}
			return "DeformConv", 22, attrs, []nodeInput{feed(x4()), feed(randTensor(rng, Float32, Shape{2, 2, 2, 2}, -1, 1)), feed(off)}, 1
		},
		func() (string, int64, []*onnx.Attribute, []nodeInput, int) {
			kind := []string{"RNN", "LSTM", "GRU"}[rng.IntN(3)]
			g := map[string]int{"RNN": 1, "LSTM": 4, "GRU": 3}[kind]
			attrs := []*onnx.Attribute{intAttr("hidden_size", pickInt(2)), stringAttr("direction", pickString("forward", "reverse")),
				intAttr("layout", pickInt(0)), floatAttr("clip", pickFloat(0.5, 3)), floatsAttr("activation_alpha", pickFloat(0.5)),
				stringsAttr("activations", pickString("Relu", "Tanh", "Sigmoid", "HardSigmoid"))}
			if rng.IntN(2) == 0 {
				attrs = attrs[:4]
			}
			ins := []nodeInput{feed(randTensor(rng, Float32, Shape{3, 2, 2}, -1, 1)), feed(randTensor(rng, Float32, Shape{1, 2 * g, 2}, -1, 1)),
				feed(randTensor(rng, Float32, Shape{1, 2 * g, 2}, -1, 1)), omitted, feed(FromInt32s(Shape{2}, []int32{int32(pickInt(1, 3)), 2}))}
			return kind, 22, attrs, ins, 2
		},
	}
	for i := range 600 {
		op, opset, attrs, ins, outs := gens[i%len(gens)]()
		name := fmt.Sprintf("%d/%s%s", i, op, attrsString(attrs))
		start := time.Now()
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: panic: %v", name, r)
				}
			}()
			m, feeds := oneNodeModel(t, opset, op, attrs, ins, outs)
			model, err := NewModel(m)
			if err != nil {
				return
			}
			g, err := model.Specialize(Bindings{})
			if err != nil {
				return
			}
			for _, n := range g.Nodes {
				for _, v := range n.Outputs {
					if v != nil && v.Shape.Size() > 1<<20 {
						return // imported fine; too large to run here
					}
				}
			}
			_, _ = Interpret(g, feeds) // a run-time error is fine, a panic is not
		}()
		if d := time.Since(start); d > time.Second {
			t.Logf("%s: %v", name, d)
		}
	}
}
