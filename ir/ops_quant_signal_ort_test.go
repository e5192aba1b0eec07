package ir

import (
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// quantORTCase is one node run by onnxruntime and by dstune: constants are
// initializers (onnxruntime takes no scalar inputs), inputs are fed.
type quantORTCase struct {
	name      string
	opset     int64
	node      *onnx.Node
	extra     []*onnx.Node // after node, e.g. reshaping scalar outputs
	outputs   []string     // default: node's outputs
	constants []namedTensor
	inputs    []namedTensor
	tol       float64 // for float outputs, relative to 1 + |want|
}

// msNode is a node of onnxruntime's com.microsoft domain.
func msNode(op string, in, out []string, attrs ...*onnx.Attribute) *onnx.Node {
	n := node(op, in, out, attrs...)
	n.Domain = "com.microsoft"
	return n
}

func (c quantORTCase) model(t *testing.T) *onnx.Model {
	var inits []*onnx.Tensor
	for _, k := range c.constants {
		inits = append(inits, initializer(t, k.name, k.t))
	}
	infos, _ := declareInputs(c.inputs)
	m := buildModel(c.opset, infos, inits, append([]*onnx.Node{c.node}, c.extra...), c.outputNames()...)
	if c.node.Domain != "" {
		m.OpsetImports = append(m.OpsetImports, onnx.OpsetID{Domain: c.node.Domain, Version: 1})
	}
	return m
}

func (c quantORTCase) outputNames() []string {
	if c.outputs != nil {
		return c.outputs
	}
	return c.node.Outputs
}

// TestQuantSignalMatchOnnxruntime runs the quantization and signal
// operators in onnxruntime and compares: integer outputs exactly, float
// outputs to the case's tolerance (dstune computes the transforms in
// float64, onnxruntime in float32).
func TestQuantSignalMatchOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(41, 42))
	f32 := func(shape Shape, lo, hi float64) *Tensor { return randTensor(rng, Float32, shape, lo, hi) }
	typed := func(dt DType, shape Shape, lo, hi float64) *Tensor { return randTensor(rng, dt, shape, lo, hi) }
	scalar := func(dt DType, v float64) *Tensor {
		x := NewTensor(dt, nil)
		storeFloat(x, 0, v, true, RoundUp)
		return x
	}
	k := func(name string, t *Tensor) namedTensor { return namedTensor{name, t} }
	cases := []quantORTCase{
		{name: "QuantizeLinear per axis", opset: 13,
			node:      node("QuantizeLinear", []string{"x", "s", "z"}, []string{"y"}, intAttr("axis", 1)),
			constants: []namedTensor{k("s", f32(Shape{4}, 0.01, 0.1)), k("z", typed(Uint8, Shape{4}, 0, 256))},
			inputs:    []namedTensor{k("x", f32(Shape{3, 4, 5}, -10, 10))}},
		{name: "QuantizeLinear blocked int8", opset: 21,
			node:      node("QuantizeLinear", []string{"x", "s", "z"}, []string{"y"}, intAttr("axis", 1), intAttr("block_size", 4)),
			constants: []namedTensor{k("s", f32(Shape{3, 3}, 0.01, 0.1)), k("z", typed(Int8, Shape{3, 3}, -20, 20))},
			inputs:    []namedTensor{k("x", f32(Shape{3, 10}, -5, 5))}},
		{name: "DequantizeLinear blocked", opset: 21, tol: 1e-6,
			node:      node("DequantizeLinear", []string{"x", "s", "z"}, []string{"y"}, intAttr("axis", 0), intAttr("block_size", 2)),
			constants: []namedTensor{k("s", f32(Shape{3, 4}, 0.01, 0.1)), k("z", typed(Int8, Shape{3, 4}, -20, 20))},
			inputs:    []namedTensor{k("x", typed(Int8, Shape{5, 4}, -128, 128))}},
		{name: "DequantizeLinear per axis", opset: 13, tol: 1e-6,
			node:      node("DequantizeLinear", []string{"x", "s", "z"}, []string{"y"}, intAttr("axis", 0)),
			constants: []namedTensor{k("s", f32(Shape{5}, 0.01, 0.1)), k("z", typed(Uint8, Shape{5}, 0, 256))},
			inputs:    []namedTensor{k("x", typed(Uint8, Shape{5, 4}, 0, 256))}},
		{name: "com.microsoft QuantizeLinear per axis", opset: 17,
			node:      msNode("QuantizeLinear", []string{"x", "s", "z"}, []string{"y"}, intAttr("axis", 0)),
			constants: []namedTensor{k("s", f32(Shape{3}, 0.2, 0.5)), k("z", typed(Int8, Shape{3}, -100, 100))},
			inputs:    []namedTensor{k("x", f32(Shape{3, 5}, -50, 50))}},
		{name: "com.microsoft DequantizeLinear uint16", opset: 17, tol: 1e-6,
			node:      msNode("DequantizeLinear", []string{"x", "s", "z"}, []string{"y"}),
			constants: []namedTensor{k("s", scalar(Float32, 0.003)), k("z", scalar(Uint16, 30000))},
			inputs:    []namedTensor{k("x", typed(Uint16, Shape{4, 6}, 0, 65536))}},
		{name: "DynamicQuantizeLinear", opset: 11, tol: 1e-6,
			node: node("DynamicQuantizeLinear", []string{"x"}, []string{"y", "s", "z"}),
			// The onnxruntime bridge reads no scalars: reshape them to [1].
			extra:     []*onnx.Node{node("Reshape", []string{"s", "one"}, []string{"s1"}), node("Reshape", []string{"z", "one"}, []string{"z1"})},
			outputs:   []string{"y", "s1", "z1"},
			constants: []namedTensor{k("one", IntsTensor(1))},
			inputs:    []namedTensor{k("x", f32(Shape{4, 7}, -3, 2))}},
		{name: "QLinearMatMul", opset: 10,
			node: node("QLinearMatMul", []string{"a", "as", "az", "b", "bs", "bz", "ys", "yz"}, []string{"y"}),
			constants: []namedTensor{k("as", scalar(Float32, 0.02)), k("az", scalar(Uint8, 120)), k("b", typed(Uint8, Shape{6, 3}, 0, 256)),
				k("bs", scalar(Float32, 0.015)), k("bz", scalar(Uint8, 130)), k("ys", scalar(Float32, 0.05)), k("yz", scalar(Uint8, 128))},
			inputs: []namedTensor{k("a", typed(Uint8, Shape{2, 4, 6}, 0, 256))}},
		// onnxruntime multiplies uint8 by int8 in pairs summed in 16 bits
		// with saturation on x86 CPUs without VNNI (why its quantizer has
		// reduce_range): weights of 7 bits (here and in MatMulInteger) keep
		// those sums exact there, so both sides compute the specification's
		// int32 result on any host.
		{name: "QLinearConv per channel", opset: 10,
			node: node("QLinearConv", []string{"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "B"}, []string{"y"}, intsAttr("pads", 1, 1, 1, 1), intsAttr("strides", 2, 1)),
			constants: []namedTensor{k("xs", scalar(Float32, 0.01)), k("xz", scalar(Uint8, 100)), k("w", typed(Int8, Shape{3, 2, 3, 3}, -64, 64)),
				k("ws", f32(Shape{3}, 0.002, 0.01)), k("wz", NewTensor(Int8, Shape{3})), k("ys", scalar(Float32, 0.05)), k("yz", scalar(Uint8, 128)),
				k("B", FromInt32s(Shape{3}, []int32{-300, 20, 500}))},
			inputs: []namedTensor{k("x", typed(Uint8, Shape{1, 2, 6, 5}, 0, 256))}},
		{name: "MatMulInteger", opset: 10,
			node:      node("MatMulInteger", []string{"a", "b", "az", "bz"}, []string{"y"}),
			constants: []namedTensor{k("b", typed(Int8, Shape{5, 3}, -64, 64)), k("az", scalar(Uint8, 7)), k("bz", typed(Int8, Shape{3}, -5, 5))},
			inputs:    []namedTensor{k("a", typed(Uint8, Shape{4, 5}, 0, 256))}},
		{name: "ConvInteger", opset: 10,
			node:      node("ConvInteger", []string{"x", "w", "xz", "wz"}, []string{"y"}, intsAttr("pads", 0, 1, 0, 1)),
			constants: []namedTensor{k("w", typed(Uint8, Shape{2, 3, 2, 2}, 0, 256)), k("xz", scalar(Uint8, 3)), k("wz", scalar(Uint8, 9))},
			inputs:    []namedTensor{k("x", typed(Uint8, Shape{1, 3, 4, 4}, 0, 256))}},
		{name: "DFT complex", opset: 20, tol: 1e-5,
			node:      node("DFT", []string{"x", "", "axis"}, []string{"y"}),
			constants: []namedTensor{k("axis", ScalarInt64(1))},
			inputs:    []namedTensor{k("x", f32(Shape{2, 12, 3, 2}, -1, 1))}},
		{name: "DFT inverse padded", opset: 20, tol: 1e-5,
			node:      node("DFT", []string{"x", "len", "axis"}, []string{"y"}, intAttr("inverse", 1)),
			constants: []namedTensor{k("len", ScalarInt64(16)), k("axis", ScalarInt64(-2))},
			inputs:    []namedTensor{k("x", f32(Shape{3, 9, 2}, -1, 1))}},
		// onnxruntime transforms float32 in float32 (off by up to 1e-4
		// relative here), float64 in float64.
		{name: "RFFT", opset: 20, tol: 1e-4,
			node:      node("DFT", []string{"x", "", "axis"}, []string{"y"}, intAttr("onesided", 1)),
			constants: []namedTensor{k("axis", ScalarInt64(1))},
			inputs:    []namedTensor{k("x", f32(Shape{2, 30, 1}, -1, 1))}},
		{name: "RFFT float64", opset: 20, tol: 1e-12,
			node:      node("DFT", []string{"x", "", "axis"}, []string{"y"}, intAttr("onesided", 1)),
			constants: []namedTensor{k("axis", ScalarInt64(1))},
			inputs:    []namedTensor{k("x", typed(Float64, Shape{2, 30, 1}, -1, 1))}},
		{name: "DFT float64 Bluestein", opset: 20, tol: 1e-12,
			node:      node("DFT", []string{"x", "", "axis"}, []string{"y"}),
			constants: []namedTensor{k("axis", ScalarInt64(0))},
			inputs:    []namedTensor{k("x", typed(Float64, Shape{257, 2}, -1, 1))}},
		{name: "DFT opset 17", opset: 17, tol: 1e-5,
			node:   node("DFT", []string{"x"}, []string{"y"}, intAttr("axis", 1)),
			inputs: []namedTensor{k("x", f32(Shape{2, 7, 1}, -1, 1))}},
		{name: "STFT", opset: 17, tol: 1e-5,
			node:      node("STFT", []string{"x", "step", "w", "len"}, []string{"y"}),
			constants: []namedTensor{k("step", ScalarInt64(5)), k("w", f32(Shape{12}, 0, 1)), k("len", ScalarInt64(12))},
			inputs:    []namedTensor{k("x", f32(Shape{2, 64, 1}, -1, 1))}},
		{name: "HammingWindow", opset: 17, tol: 1e-6,
			node:      node("HammingWindow", []string{"n"}, []string{"y"}, intAttr("periodic", 0)),
			constants: []namedTensor{k("n", FromInt32s(Shape{}, []int32{21}))}},
		{name: "BlackmanWindow", opset: 17, tol: 1e-6,
			node:      node("BlackmanWindow", []string{"n"}, []string{"y"}),
			constants: []namedTensor{k("n", ScalarInt64(16))}},
		{name: "MelWeightMatrix", opset: 17, tol: 1e-6,
			node: node("MelWeightMatrix", []string{"m", "n", "r", "lo", "hi"}, []string{"y"}),
			constants: []namedTensor{k("m", ScalarInt64(12)), k("n", ScalarInt64(256)), k("r", ScalarInt64(16000)),
				k("lo", ScalarFloat32(50)), k("hi", ScalarFloat32(7000))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, feeds := declareInputs(c.inputs)
			checkAgainstORT(t, c.model(t), feeds, c.tol, c.tol)
		})
	}
}
