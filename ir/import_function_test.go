package ir

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// functionModel is a model whose graph calls model-local functions of the
// domain "custom": Block (MatMul, then Act twice: once with alpha set,
// once with Act's default; then Softmax over the call's axis), which
// calls Act (LeakyRelu), and Clamp (Clip) called without its optional
// upper bound.
func functionModel(t testing.TB) (*onnx.Model, map[string]*Tensor) {
	rng := rand.New(rand.NewPCG(5, 6))
	x := randTensor(rng, Float32, Shape{3, 4}, -2, 2)
	w := randTensor(rng, Float32, Shape{4, 5}, -1, 1)
	ref := func(name, ref string) *onnx.Attribute {
		return &onnx.Attribute{Name: name, RefAttrName: ref, Type: onnx.AttrFloat}
	}
	call := func(op string, in, out []string, attrs ...*onnx.Attribute) *onnx.Node {
		n := node(op, in, out, attrs...)
		n.Domain = "custom"
		return n
	}
	opsets := []onnx.OpsetID{{Version: 17}, {Domain: "custom", Version: 1}}
	act := &onnx.Function{Name: "Act", Domain: "custom", Inputs: []string{"a"}, Outputs: []string{"b"},
		AttributeDefaults: []*onnx.Attribute{floatAttr("alpha", 0.5)},
		Nodes:             []*onnx.Node{node("LeakyRelu", []string{"a"}, []string{"b"}, ref("alpha", "alpha"))},
		OpsetImports:      opsets[:1]}
	softmaxAxis := &onnx.Attribute{Name: "axis", RefAttrName: "axis", Type: onnx.AttrInt}
	block := &onnx.Function{Name: "Block", Domain: "custom", Inputs: []string{"x", "w"}, Outputs: []string{"p", "h"},
		Attributes: []string{"axis"},
		Nodes: []*onnx.Node{
			node("MatMul", []string{"x", "w"}, []string{"h"}),
			call("Act", []string{"h"}, []string{"a1"}, floatAttr("alpha", 0.1)),
			call("Act", []string{"a1"}, []string{"a2"}),
			node("Softmax", []string{"a2"}, []string{"p"}, softmaxAxis),
		},
		OpsetImports: opsets}
	clamp := &onnx.Function{Name: "Clamp", Domain: "custom", Inputs: []string{"v", "lo", "hi"}, Outputs: []string{"c"},
		Nodes:        []*onnx.Node{node("Clip", []string{"v", "lo", "hi"}, []string{"c"})},
		OpsetImports: opsets[:1]}
	lo := FromFloat32s(Shape{}, []float32{0.15})
	g := &onnx.Graph{Name: "functions",
		Inputs:       []*onnx.ValueInfo{declareInput("x", x)},
		Initializers: []*onnx.Tensor{initializer(t, "w", w), initializer(t, "lo", lo)},
		Nodes: []*onnx.Node{
			call("Block", []string{"x", "w"}, []string{"p", "h"}, intAttr("axis", 0)),
			call("Clamp", []string{"p", "lo"}, []string{"c"}),
		},
		Outputs: []*onnx.ValueInfo{{Name: "p"}, {Name: "h"}, {Name: "c"}}}
	m := &onnx.Model{IRVersion: 9, OpsetImports: opsets, Graph: g, Functions: []*onnx.Function{act, block, clamp}}
	return m, map[string]*Tensor{"x": x}
}

// TestModelLocalFunctionsMatchOnnxruntime: calls of model-local functions
// (nested, attribute references set by the call or defaulted, an absent
// optional input) compute what onnxruntime computes, also after the model
// is written and read back.
func TestModelLocalFunctionsMatchOnnxruntime(t *testing.T) {
	ort.Need(t)
	m, feeds := functionModel(t)
	checkAgainstORT(t, m, feeds, 1e-6, 1e-7)
	b, err := onnx.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := onnx.Decode(b, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Functions) != 3 || back.Function("custom", "Act", "") == nil || len(back.Function("custom", "Act", "").AttributeDefaults) != 1 {
		t.Fatalf("read back %d functions", len(back.Functions))
	}
	checkAgainstORT(t, back, feeds, 1e-6, 1e-7)
}

// TestModelLocalFunctionErrors: calls a function cannot take are refused
// naming the function and what is wrong.
func TestModelLocalFunctionErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(m *onnx.Model)
		want string
	}{
		{"undeclared attribute", func(m *onnx.Model) {
			m.Graph.Nodes[1].Attributes = append(m.Graph.Nodes[1].Attributes, floatAttr("beta", 1))
		}, `function custom.Clamp: the call sets attribute "beta", which the function does not declare`},
		{"reference to an undeclared attribute", func(m *onnx.Model) {
			m.Function("custom", "Act", "").Nodes[0].Attributes[0].RefAttrName = "gamma"
		}, `attribute "alpha" refers to "gamma"`},
		{"too many inputs", func(m *onnx.Model) {
			m.Graph.Nodes[1].Inputs = []string{"p", "lo", "lo", "lo"}
		}, "function custom.Clamp takes 3 inputs, the call gives 4"},
		{"recursion", func(m *onnx.Model) {
			act := m.Function("custom", "Act", "")
			self := node("Act", []string{"a"}, []string{"b"})
			self.Domain = "custom"
			act.Nodes = []*onnx.Node{self}
		}, "nest more than 64 deep"},
		{"error inside", func(m *onnx.Model) {
			m.Function("custom", "Block", "").Nodes[0].Inputs = []string{"x", "nothing"}
		}, `(Block): in function custom.Block: ir: node 0 "MatMul_h" (MatMul): input 1 "nothing" is not defined`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := functionModel(t)
			c.edit(m)
			model, err := NewModel(m)
			if err == nil {
				_, err = model.Specialize(Bindings{})
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
			// Named once, not once per nested call (64 copies).
			if err != nil && strings.Count(err.Error(), "function custom.") > 2 {
				t.Errorf("the error repeats itself: %v", err)
			}
		})
	}
}

// TestValueInputsThroughFunctions: a graph input that a function call
// passes on to an operand needed at import (Reshape's shape, two calls
// deep) must be bound by value; one that only feeds data need not; a
// function that calls itself ends the analysis.
func TestValueInputsThroughFunctions(t *testing.T) {
	call := func(op string, in, out []string) *onnx.Node {
		n := node(op, in, out)
		n.Domain = "custom"
		return n
	}
	opsets := []onnx.OpsetID{{Version: 17}, {Domain: "custom", Version: 1}}
	reshape := &onnx.Function{Name: "Reshape2", Domain: "custom", Inputs: []string{"data", "dims"}, Outputs: []string{"out"},
		Nodes: []*onnx.Node{node("Reshape", []string{"data", "dims"}, []string{"out"})}, OpsetImports: opsets[:1]}
	outer := &onnx.Function{Name: "Outer", Domain: "custom", Inputs: []string{"a", "b", "c"}, Outputs: []string{"r"},
		Nodes: []*onnx.Node{
			node("Add", []string{"a", "c"}, []string{"ac"}),
			call("Reshape2", []string{"ac", "b"}, []string{"r"}),
		}, OpsetImports: opsets}
	loop := &onnx.Function{Name: "Loop", Domain: "custom", Inputs: []string{"p"}, Outputs: []string{"q"},
		Nodes: []*onnx.Node{call("Loop", []string{"p"}, []string{"q"})}, OpsetImports: opsets}
	g := &onnx.Graph{Name: "g",
		Inputs: []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3), valueInfo("s", onnx.Int64, 2), valueInfo("y", onnx.Float, 2, 3)},
		Nodes: []*onnx.Node{
			call("Outer", []string{"x", "s", "y"}, []string{"z"}),
			call("Loop", []string{"x"}, []string{"w"}),
		},
		Outputs: []*onnx.ValueInfo{{Name: "z"}, {Name: "w"}}}
	m := &onnx.Model{IRVersion: 9, OpsetImports: opsets, Graph: g, Functions: []*onnx.Function{reshape, outer, loop}}
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.ValueInputs(); len(got) != 1 || got[0] != "s" {
		t.Errorf("ValueInputs = %v, want [s]", got)
	}
}
