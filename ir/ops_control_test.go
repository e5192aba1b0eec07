package ir

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// branch is a subgraph without inputs whose one output, out, is the
// constant x.
func branch(t *testing.T, out string, x *Tensor) *onnx.Graph {
	return &onnx.Graph{Name: out, Nodes: []*onnx.Node{constNode(t, out, x)}, Outputs: []*onnx.ValueInfo{{Name: out}}}
}

// body is a subgraph with the given inputs, nodes and outputs.
func body(inputs []*onnx.ValueInfo, nodes []*onnx.Node, outputs ...string) *onnx.Graph {
	g := &onnx.Graph{Name: "body", Inputs: inputs, Nodes: nodes}
	for _, o := range outputs {
		g.Outputs = append(g.Outputs, &onnx.ValueInfo{Name: o})
	}
	return g
}

// interpretModel specializes m with b and runs it with the reference
// implementations, returning the assembled results.
func interpretComposite(t *testing.T, m *onnx.Model, b Bindings, feeds map[string]*Tensor) ([]*Datum, *Graph) {
	t.Helper()
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.Specialize(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Interpret(g, feeds)
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Assemble(out)
	if err != nil {
		t.Fatal(err)
	}
	return res, g
}

// TestIfRuntimeCondition: an If whose condition is fed at run time
// imports both branches and selects with Where; a bound condition
// imports one branch.
func TestIfRuntimeCondition(t *testing.T) {
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("c", onnx.Bool), valueInfo("x", onnx.Float, 3)}, nil, []*onnx.Node{
		node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", body(nil, []*onnx.Node{node("Neg", []string{"x"}, []string{"t"})}, "t")),
			graphAttr("else_branch", body(nil, []*onnx.Node{node("Abs", []string{"x"}, []string{"e"})}, "e"))),
	}, "y")
	x := FromFloat32s(Shape{3}, []float32{-1, 2, -3})
	for _, c := range []bool{true, false} {
		res, g := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"c": {}, "x": {3}}}, map[string]*Tensor{"c": FromBools(Shape{}, []bool{c}), "x": x})
		if g.OpCounts()["Where"] != 1 {
			t.Errorf("runtime If: want one Where:\n%v", g)
		}
		want := []float32{1, 2, 3}
		if c {
			want = []float32{1, -2, 3}
		}
		if d := Compare(res[0].Tensor, FromFloat32s(Shape{3}, want), 0, 0); !d.OK() {
			t.Errorf("cond %v: %v, want %v", c, res[0].Tensor.Float32s(), want)
		}
	}
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.ValueInputs(); len(got) != 1 || got[0] != "c" {
		t.Errorf("ValueInputs %v, want [c] (a bound condition picks the branch at import)", got)
	}
	g, err := model.Specialize(Bindings{Shapes: map[string]Shape{"x": {3}}, Values: map[string]*Tensor{"c": FromBools(Shape{}, []bool{true})}})
	if err != nil {
		t.Fatal(err)
	}
	if counts := g.OpCounts(); len(g.Nodes) != 1 || counts["Neg"] != 1 {
		t.Errorf("bound If: want the then branch alone:\n%v", g)
	}
}

// loopModel is y = x; for i < trips while i < stop: y = y + i, with the
// running y as a scan output (the loop condition computed from i).
func loopModel(t *testing.T) *onnx.Model {
	b := body([]*onnx.ValueInfo{valueInfo("i", onnx.Int64), valueInfo("cin", onnx.Bool), valueInfo("yin", onnx.Float, 2)}, []*onnx.Node{
		node("Cast", []string{"i"}, []string{"fi"}, intAttr("to", int64(onnx.Float))),
		node("Add", []string{"yin", "fi"}, []string{"yout"}),
		node("Identity", []string{"yout"}, []string{"scan"}),
		constNode(t, "one", ScalarInt64(1)),
		node("Add", []string{"i", "one"}, []string{"next"}),
		node("Less", []string{"next", "stop"}, []string{"cout"}),
	}, "cout", "yout", "scan")
	b.Outputs[2] = valueInfo("scan", onnx.Float, 2) // declared, for a loop of no iteration
	return buildModel(17, []*onnx.ValueInfo{valueInfo("trips", onnx.Int64), valueInfo("stop", onnx.Int64), valueInfo("x", onnx.Float, 2)}, nil, []*onnx.Node{
		constNode(t, "true", FromBools(Shape{}, []bool{true})),
		node("Loop", []string{"trips", "true", "x"}, []string{"y", "ys"}, graphAttr("body", b)),
	}, "y", "ys")
}

// TestLoopUnrolls: the loop runs min(trips, stop) iterations, threading y
// and stacking the scan output; trips and stop are value inputs (the
// trip count directly, stop through the condition the body computes).
func TestLoopUnrolls(t *testing.T) {
	m := loopModel(t)
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(model.ValueInputs()); got != "[stop trips]" {
		t.Errorf("ValueInputs %s, want [stop trips]", got)
	}
	x := FromFloat32s(Shape{2}, []float32{10, 20})
	for _, tc := range []struct{ trips, stop int64 }{{3, 10}, {5, 2}, {0, 4}, {1, 1}} {
		b := Bindings{Shapes: map[string]Shape{"x": {2}}, Values: map[string]*Tensor{"trips": ScalarInt64(tc.trips), "stop": ScalarInt64(tc.stop)}}
		res, _ := interpretComposite(t, m, b, map[string]*Tensor{"x": x})
		// The reference: the loop as Go.
		y := []float32{10, 20}
		var ys []float32
		iters := 0
		for i := int64(0); i < tc.trips; i++ {
			y = []float32{y[0] + float32(i), y[1] + float32(i)}
			ys = append(ys, y...)
			iters++
			if i+1 >= tc.stop {
				break
			}
		}
		if d := Compare(res[0].Tensor, FromFloat32s(Shape{2}, y), 0, 0); !d.OK() {
			t.Errorf("trips %d stop %d: y %v, want %v", tc.trips, tc.stop, res[0].Tensor.Float32s(), y)
		}
		if d := Compare(res[1].Tensor, FromFloat32s(Shape{iters, 2}, ys), 0, 0); !d.OK() {
			t.Errorf("trips %d stop %d: ys %v, want %v %v", tc.trips, tc.stop, res[1].Tensor, iters, ys)
		}
	}
}

// TestLoopNotKnownAtImport: a trip count or a condition only known at
// run time is refused, naming the Loop.
func TestLoopNotKnownAtImport(t *testing.T) {
	m := loopModel(t)
	m.Graph.Nodes[1].Name = "the_loop"
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	x := FromFloat32s(Shape{2}, []float32{1, 2})
	for _, tc := range []struct {
		b    Bindings
		want string
	}{
		{Bindings{Shapes: map[string]Shape{"x": {2}, "trips": {}}, Values: map[string]*Tensor{"stop": ScalarInt64(3)}}, `Loop "the_loop" with a trip count computed at run time`},
		{Bindings{Shapes: map[string]Shape{"x": {2}, "stop": {}}, Values: map[string]*Tensor{"trips": ScalarInt64(3)}}, `Loop "the_loop": the condition the body computes in iteration 0 is only known at run time`},
	} {
		_, err := model.Specialize(tc.b)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrNotSupported) {
			t.Errorf("got %v, want a not-supported error containing %q", err, tc.want)
		}
	}
	_ = x
}

// TestScanDirectionsAndAxes: a running sum over axis 1 of x, forward and
// reversed, with the scan output stacked on axis 0 or 1, against a Go
// reference.
func TestScanDirectionsAndAxes(t *testing.T) {
	b := body([]*onnx.ValueInfo{{Name: "s"}, {Name: "xt"}}, []*onnx.Node{
		node("Add", []string{"s", "xt"}, []string{"sout"}),
		node("Identity", []string{"sout"}, []string{"o"}),
	}, "sout", "o")
	x := FromFloat32s(Shape{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	for _, tc := range []struct{ inDir, outDir, outAxis int64 }{{0, 0, 0}, {1, 0, 0}, {0, 1, 1}, {1, 1, 1}} {
		m := buildModel(17, []*onnx.ValueInfo{valueInfo("s0", onnx.Float, 2), valueInfo("x", onnx.Float, 2, 3)}, nil, []*onnx.Node{
			node("Scan", []string{"s0", "x"}, []string{"s", "o"}, graphAttr("body", b), intAttr("num_scan_inputs", 1),
				intsAttr("scan_input_axes", 1), intsAttr("scan_input_directions", tc.inDir),
				intsAttr("scan_output_axes", tc.outAxis), intsAttr("scan_output_directions", tc.outDir)),
		}, "s", "o")
		res, _ := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"s0": {2}, "x": {2, 3}}},
			map[string]*Tensor{"s0": FromFloat32s(Shape{2}, []float32{100, 200}), "x": x})
		state := []float64{100, 200}
		var steps [][]float64
		for k := range 3 {
			col := k
			if tc.inDir == 1 {
				col = 2 - k
			}
			for r := range 2 {
				state[r] += x.Float64At(r*3 + col)
			}
			steps = append(steps, append([]float64{}, state...))
		}
		if tc.outDir == 1 {
			for i, j := 0, len(steps)-1; i < j; i, j = i+1, j-1 {
				steps[i], steps[j] = steps[j], steps[i]
			}
		}
		got := res[1].Tensor
		for k, st := range steps {
			for r, v := range st {
				at := k*2 + r // axis 0: [step, row]
				if tc.outAxis == 1 {
					at = r*3 + k // axis 1: [row, step]
				}
				if got.Float64At(at) != v {
					t.Errorf("%+v: output step %d row %d = %v, want %v (%v)", tc, k, r, got.Float64At(at), v, got.Float32s())
				}
			}
		}
		if math.Abs(res[0].Tensor.Float64At(0)-state[0]) > 0 || res[0].Tensor.Float64At(1) != state[1] {
			t.Errorf("%+v: final state %v, want %v", tc, res[0].Tensor.Float32s(), state)
		}
	}
}

// TestSubgraphOuterReadOrdersNodes: a node listed after an If whose
// branch reads its output is imported first (the branch's outer-scope
// read is a dependency of the If).
func TestSubgraphOuterReadOrdersNodes(t *testing.T) {
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("c", onnx.Bool), valueInfo("x", onnx.Float, 2)}, nil, []*onnx.Node{
		node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", body(nil, []*onnx.Node{node("Neg", []string{"z"}, []string{"t"})}, "t")),
			graphAttr("else_branch", body(nil, []*onnx.Node{node("Identity", []string{"z"}, []string{"e"})}, "e"))),
		node("Relu", []string{"x"}, []string{"z"}),
	}, "y")
	res, _ := interpretComposite(t, m, Bindings{Values: map[string]*Tensor{"c": FromBools(Shape{}, []bool{true})}, Shapes: map[string]Shape{"x": {2}}},
		map[string]*Tensor{"x": floats(-1, 2)})
	if got := res[0].Tensor.Float32s(); got[0] != 0 || got[1] != -2 {
		t.Errorf("got %v, want -relu(x) = [0 -2]", got)
	}
}

// TestMalformedSubgraphs: broken bodies and branches give errors naming
// the node, never panics.
func TestMalformedSubgraphs(t *testing.T) {
	defer func(old int) { maxSubgraphNodes = old }(maxSubgraphNodes)
	maxSubgraphNodes = 1000
	x := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3), valueInfo("c", onnx.Bool)}
	cond := Bindings{Shapes: map[string]Shape{"x": {2, 3}, "c": {}}}
	known := Bindings{Shapes: map[string]Shape{"x": {2, 3}}, Values: map[string]*Tensor{"c": FromBools(Shape{}, []bool{true})}}
	trips := func(n int64) *onnx.Node { return constNode(t, "m", ScalarInt64(n)) }
	scanBody := body([]*onnx.ValueInfo{{Name: "s"}, {Name: "a"}, {Name: "b"}}, []*onnx.Node{node("Add", []string{"s", "a"}, []string{"so"})}, "so")
	for _, tc := range []struct {
		name  string
		nodes []*onnx.Node
		b     Bindings
		want  string
	}{
		{"If without branches", []*onnx.Node{node("If", []string{"c"}, []string{"y"})}, known, `(If): no then_branch`},
		{"branch output not produced", []*onnx.Node{node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", body(nil, nil, "nothing")), graphAttr("else_branch", branch(t, "e", IntsTensor(1))))}, known,
			`then_branch output 0 "nothing" is not produced`},
		{"branch outputs differ in number", []*onnx.Node{node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"a"}), node("Identity", []string{"x"}, []string{"b"})}, "a", "b")),
			graphAttr("else_branch", body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"e"})}, "e")))}, cond,
			"then_branch has 2 outputs and else_branch 1, want 1 each (the If's outputs)"},
		{"known condition, branch outputs differ in number", []*onnx.Node{node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"a"})}, "a")),
			graphAttr("else_branch", body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"e"}), node("Identity", []string{"x"}, []string{"f"})}, "e", "f")))}, known,
			"then_branch has 1 outputs and else_branch 2, want 1 each (the If's outputs)"},
		{"known condition, both branches give more than the If", []*onnx.Node{node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"a"}), node("Identity", []string{"x"}, []string{"b"})}, "a", "b")),
			graphAttr("else_branch", body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"e"}), node("Identity", []string{"x"}, []string{"f"})}, "e", "f")))}, known,
			"then_branch has 2 outputs and else_branch 2, want 1 each (the If's outputs)"},
		{"If without else_branch", []*onnx.Node{node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"a"})}, "a")))}, known, `(If): no else_branch`},
		{"If on a float", []*onnx.Node{node("If", []string{"x"}, []string{"y"})}, known, "cond is float32[2,3], want a bool tensor of one element"},
		{"Loop without body", []*onnx.Node{trips(2), node("Loop", []string{"m", "", "x"}, []string{"y"})}, known, "(Loop): no body"},
		{"Loop body with too few inputs", []*onnx.Node{trips(2), node("Loop", []string{"m", "", "x"}, []string{"y"},
			graphAttr("body", body([]*onnx.ValueInfo{{Name: "i"}}, nil, "i")))}, known, "body has 1 inputs and 1 outputs for 1 loop-carried values"},
		{"endless Loop", []*onnx.Node{node("Loop", []string{"", "", "x"}, []string{"y"},
			graphAttr("body", body([]*onnx.ValueInfo{{Name: "i"}, {Name: "ci"}, {Name: "v"}}, nil, "ci", "v")))}, known, "neither a trip count nor a condition"},
		{"huge Loop", []*onnx.Node{trips(1 << 40), node("Loop", []string{"m", "", "x"}, []string{"y"},
			graphAttr("body", body([]*onnx.ValueInfo{{Name: "i"}, {Name: "ci"}, {Name: "v"}}, nil, "ci", "v")))}, known,
			"subgraphs would import more than 1000 nodes: 1001 in 1001 loop iterations (loops are unrolled at import)"},
		{"Loop scan output changing type", []*onnx.Node{trips(2), node("Loop", []string{"m", "", "x"}, []string{"y", "s"},
			graphAttr("body", body([]*onnx.ValueInfo{{Name: "i"}, {Name: "ci"}, {Name: "v"}},
				[]*onnx.Node{node("Unsqueeze", []string{"v", "zero"}, []string{"vu"}), constNode(t, "zero", IntsTensor(0))}, "ci", "vu", "vu")))}, known,
			"scan output 0 is float32[1,1,2,3] in iteration 1 and float32[1,2,3] in iteration 0"},
		{"Scan lengths differ", []*onnx.Node{constNode(t, "s0", floats(0)), node("Scan", []string{"s0", "x", "x"}, []string{"s"}, intAttr("num_scan_inputs", 2),
			intsAttr("scan_input_axes", 0, 1), graphAttr("body", scanBody))}, known,
			"scan input 1 has 3 steps along axis 1, an earlier one 2"},
		{"Scan without num_scan_inputs", []*onnx.Node{node("Scan", []string{"x", "x"}, []string{"s"}, graphAttr("body", scanBody))}, known,
			"num_scan_inputs -1 for 2 inputs"},
		{"Scan body of another arity", []*onnx.Node{node("Scan", []string{"x", "x"}, []string{"s", "o"}, intAttr("num_scan_inputs", 1), graphAttr("body", scanBody))}, known,
			"body has 3 inputs and 1 outputs for 1 states and 1 scan inputs"},
	} {
		_, err := interpretModelErr(buildModel(17, x, nil, tc.nodes, tc.nodes[len(tc.nodes)-1].Outputs[0]), tc.b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
