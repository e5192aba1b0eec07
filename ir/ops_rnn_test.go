package ir

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// rnnCase is one recurrent node: its kind, shapes and which optional
// inputs and attributes it has.
type rnnCase struct {
	kind               rnnKind
	steps, batch, size int
	hidden             int
	direction          string
	layout             int64
	bias, initial      bool
	seqLens            []int32
	peepholes          bool
	attrs              []*onnx.Attribute
}

func (c rnnCase) String() string {
	s := fmt.Sprintf("%s/%s/T%dB%dI%dH%d/layout%d", c.kind, c.direction, c.steps, c.batch, c.size, c.hidden, c.layout)
	if c.bias {
		s += "/bias"
	}
	if c.initial {
		s += "/initial"
	}
	if c.seqLens != nil {
		s += fmt.Sprintf("/lens%v", c.seqLens)
	}
	if c.peepholes {
		s += "/peepholes"
	}
	return s + attrsString(c.attrs)
}

func (c rnnCase) dirs() int {
	if c.direction == "bidirectional" {
		return 2
	}
	return 1
}

// model builds the node; the float operands come through in (feed for
// onnxruntime, weight for gradients), sequence_lens is always fed.
func (c rnnCase) model(t *testing.T, rng *rand.Rand, dt DType, in func(*Tensor) nodeInput) (*onnx.Model, map[string]*Tensor) {
	return c.build(t, c.inputs(rng, dt, in))
}

func (c rnnCase) inputs(rng *rand.Rand, dt DType, in func(*Tensor) nodeInput) []nodeInput {
	d, g, h := c.dirs(), c.kind.gates(), c.hidden
	xShape := Shape{c.steps, c.batch, c.size}
	stateShape := Shape{d, c.batch, h}
	if c.layout == 1 {
		xShape = Shape{c.batch, c.steps, c.size}
		stateShape = Shape{c.batch, d, h}
	}
	ins := []nodeInput{
		in(randTensor(rng, dt, xShape, -1, 1)),
		in(randTensor(rng, dt, Shape{d, g * h, c.size}, -0.7, 0.7)),
		in(randTensor(rng, dt, Shape{d, g * h, h}, -0.7, 0.7)),
		omitted, omitted, omitted, omitted, omitted,
	}
	if c.bias {
		ins[3] = in(randTensor(rng, dt, Shape{d, 2 * g * h}, -0.5, 0.5))
	}
	if c.seqLens != nil {
		ins[4] = feed(FromInt32s(Shape{c.batch}, c.seqLens))
	}
	if c.initial {
		ins[5] = in(randTensor(rng, dt, stateShape, -1, 1))
		if c.kind == rnnLSTM {
			ins[6] = in(randTensor(rng, dt, stateShape, -1, 1))
		}
	}
	if c.peepholes {
		ins[7] = in(randTensor(rng, dt, Shape{d, 3 * h}, -0.5, 0.5))
	}
	for len(ins) > 3 && ins[len(ins)-1].t == nil {
		ins = ins[:len(ins)-1]
	}
	return ins
}

func (c rnnCase) build(t *testing.T, ins []nodeInput) (*onnx.Model, map[string]*Tensor) {
	h := c.hidden
	attrs := append([]*onnx.Attribute{intAttr("hidden_size", int64(h)), stringAttr("direction", c.direction)}, c.attrs...)
	if c.layout != 0 {
		attrs = append(attrs, intAttr("layout", c.layout))
	}
	outs := 2
	if c.kind == rnnLSTM {
		outs = 3
	}
	return oneNodeModel(t, 22, c.kind.String(), attrs, ins, outs)
}

func rnnCases() []rnnCase {
	var cases []rnnCase
	for _, kind := range []rnnKind{rnnPlain, rnnLSTM, rnnGRU} {
		for _, dir := range []string{"forward", "reverse", "bidirectional"} {
			cases = append(cases,
				rnnCase{kind: kind, steps: 4, batch: 2, size: 3, hidden: 3, direction: dir},
				rnnCase{kind: kind, steps: 3, batch: 3, size: 2, hidden: 4, direction: dir, bias: true, initial: true, seqLens: []int32{3, 1, 2}},
				rnnCase{kind: kind, steps: 3, batch: 2, size: 3, hidden: 2, direction: dir, layout: 1, bias: true, initial: true},
			)
		}
	}
	cases = append(cases,
		rnnCase{kind: rnnLSTM, steps: 3, batch: 2, size: 3, hidden: 3, direction: "bidirectional", bias: true, initial: true, peepholes: true, seqLens: []int32{2, 3}},
		rnnCase{kind: rnnLSTM, steps: 3, batch: 2, size: 2, hidden: 3, direction: "forward", bias: true, attrs: []*onnx.Attribute{intAttr("input_forget", 1)}},
		rnnCase{kind: rnnLSTM, steps: 4, batch: 2, size: 2, hidden: 3, direction: "forward", bias: true, attrs: []*onnx.Attribute{floatAttr("clip", 0.4)}},
		rnnCase{kind: rnnGRU, steps: 4, batch: 2, size: 3, hidden: 3, direction: "bidirectional", bias: true, initial: true, seqLens: []int32{4, 2},
			attrs: []*onnx.Attribute{intAttr("linear_before_reset", 1)}},
		rnnCase{kind: rnnGRU, steps: 3, batch: 2, size: 3, hidden: 2, direction: "forward", bias: true, attrs: []*onnx.Attribute{floatAttr("clip", 0.3)}},
		rnnCase{kind: rnnPlain, steps: 3, batch: 2, size: 3, hidden: 3, direction: "bidirectional", bias: true,
			attrs: []*onnx.Attribute{stringsAttr("activations", "Relu", "Sigmoid")}},
		rnnCase{kind: rnnPlain, steps: 3, batch: 2, size: 3, hidden: 3, direction: "forward", bias: true,
			attrs: []*onnx.Attribute{stringsAttr("activations", "Affine"), floatsAttr("activation_alpha", 0.7), floatsAttr("activation_beta", 0.2)}},
		rnnCase{kind: rnnGRU, steps: 3, batch: 2, size: 3, hidden: 2, direction: "bidirectional", bias: true,
			attrs: []*onnx.Attribute{stringsAttr("activations", "HardSigmoid", "Softsign", "Sigmoid", "ScaledTanh"),
				floatsAttr("activation_alpha", 0.3, 0.8), floatsAttr("activation_beta", 0.4, 1.2)}},
		rnnCase{kind: rnnLSTM, steps: 3, batch: 2, size: 3, hidden: 2, direction: "forward", bias: true,
			attrs: []*onnx.Attribute{stringsAttr("activations", "Sigmoid", "LeakyRelu", "Elu"), floatsAttr("activation_alpha", 0.2, 0.6)}},
		rnnCase{kind: rnnLSTM, steps: 3, batch: 2, size: 3, hidden: 2, direction: "forward", bias: true,
			attrs: []*onnx.Attribute{stringsAttr("activations", "Sigmoid", "Softplus", "Tanh")}},
	)
	return cases
}

// TestRecurrentMatchesOnnxruntime: RNN, LSTM and GRU in every direction,
// layout, with and without bias, initial states and sequence_lens, and
// with peepholes, input_forget, clip, linear_before_reset and the other
// activation functions with their alpha and beta.
func TestRecurrentMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(29, 30))
	for _, c := range rnnCases() {
		t.Run(c.String(), func(t *testing.T) {
			if c.layout == 1 {
				checkBatchwiseAgainstORT(t, c, c.inputs(rng, Float32, feed))
				return
			}
			m, feeds := c.model(t, rng, Float32, feed)
			checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
		})
	}
}

// checkBatchwiseAgainstORT: onnxruntime has no layout 1 (batch first), so
// the batch-first node is compared with onnxruntime running the same node
// with layout 0 on the transposed input and initial states, its outputs
// transposed back.
func checkBatchwiseAgainstORT(t *testing.T, c rnnCase, ins []nodeInput) {
	t.Helper()
	transpose := func(x *Tensor, perm ...int) *Tensor {
		out, err := EvalOp(&Transpose{Perm: perm}, x)
		if err != nil {
			t.Fatal(err)
		}
		return out[0]
	}
	m1, feeds1 := c.build(t, ins)
	got, _, err := interpretModel(m1, feeds1)
	if err != nil {
		t.Fatal(err)
	}
	seqFirst := slices.Clone(ins)
	for _, i := range []int{0, 5, 6} {
		if i < len(seqFirst) && seqFirst[i].t != nil {
			seqFirst[i] = feed(transpose(seqFirst[i].t, 1, 0, 2))
		}
	}
	c0 := c
	c0.layout = 0
	m0, feeds0 := c0.build(t, seqFirst)
	want := ortOutputs(t, m0, feeds0)
	for i, name := range []string{"y0", "y1", "y2"} {
		if want[name] == nil {
			continue
		}
		var w *Tensor
		if i == 0 {
			w = transpose(want[name], 2, 0, 1, 3)
		} else {
			w = transpose(want[name], 1, 0, 2)
		}
		if d := Compare(got[name], w, 1e-4, 1e-5); !d.OK() {
			t.Errorf("output %s: %v", name, d)
		}
	}
}

// TestRecurrentGradient: the unrolled compositions are differentiable
// with respect to every operand, the input included.
func TestRecurrentGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, c := range rnnCases() {
		if c.steps > 3 && c.seqLens == nil {
			c.steps = 3
		}
		t.Run(c.String(), func(t *testing.T) {
			m, feeds := c.model(t, rng, Float64, weight)
			checkImportedGrad(t, m, feeds, 1e-6)
		})
	}
}

func TestRecurrentErrors(t *testing.T) {
	x := NewTensor(Float32, Shape{2, 1, 3})
	w := NewTensor(Float32, Shape{1, 4, 3})
	r := NewTensor(Float32, Shape{1, 4, 4})
	hs := intAttr("hidden_size", 4)
	for _, c := range []struct {
		name  string
		op    string
		ins   []nodeInput
		attrs []*onnx.Attribute
		want  string
	}{
		{"hidden_size", "RNN", []nodeInput{feed(x), feed(w), feed(r)}, nil, "hidden_size 0"},
		{"direction", "RNN", []nodeInput{feed(x), feed(w), feed(r)}, []*onnx.Attribute{hs, stringAttr("direction", "both")}, `direction "both"`},
		{"layout", "RNN", []nodeInput{feed(x), feed(w), feed(r)}, []*onnx.Attribute{hs, intAttr("layout", 2)}, "layout 2"},
		{"activation", "RNN", []nodeInput{feed(x), feed(w), feed(r)}, []*onnx.Attribute{hs, stringsAttr("activations", "Swish")}, `activation "Swish"`},
		{"activation count", "LSTM", []nodeInput{feed(x), feed(NewTensor(Float32, Shape{1, 16, 3})), feed(NewTensor(Float32, Shape{1, 16, 4}))},
			[]*onnx.Attribute{hs, stringsAttr("activations", "Tanh")}, "1 activations, want 3"},
		{"weights", "GRU", []nodeInput{feed(x), feed(w), feed(r)}, []*onnx.Attribute{hs}, "W is float32[1,4,3], want float32[1,12,3]"},
		{"bias", "RNN", []nodeInput{feed(x), feed(w), feed(r), feed(NewTensor(Float32, Shape{1, 4}))}, []*onnx.Attribute{hs}, "B is float32[1,4]"},
		{"initial_h", "RNN", []nodeInput{feed(x), feed(w), feed(r), omitted, omitted, feed(NewTensor(Float32, Shape{1, 2, 4}))}, []*onnx.Attribute{hs}, "initial_h"},
		{"sequence_lens", "RNN", []nodeInput{feed(x), feed(w), feed(r), omitted, feed(NewTensor(Float32, Shape{1}))}, []*onnx.Attribute{hs}, "sequence_lens is float32[1]"},
		{"long sequence_lens", "RNN", []nodeInput{feed(x), feed(w), feed(r), omitted, fixed(FromInt32s(Shape{1}, []int32{3}))}, []*onnx.Attribute{hs}, "lengths in [0, 2]"},
		{"clip", "RNN", []nodeInput{feed(x), feed(w), feed(r)}, []*onnx.Attribute{hs, floatAttr("clip", -1)}, "clip -1"},
		{"rank", "RNN", []nodeInput{feed(NewTensor(Float32, Shape{2, 3})), feed(w), feed(r)}, []*onnx.Attribute{hs}, "rank 3"},
		{"no steps", "RNN", []nodeInput{feed(NewTensor(Float32, Shape{0, 1, 3})), feed(w), feed(r)}, []*onnx.Attribute{hs}, "no time steps"},
		{"dtype", "RNN", []nodeInput{feed(x), feed(NewTensor(Float64, Shape{1, 4, 3})), feed(r)}, []*onnx.Attribute{hs}, "W is float64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := oneNodeModel(t, 22, c.op, c.attrs, c.ins, 2)
			wantImportError(t, m, nil, c.want)
		})
	}
}
