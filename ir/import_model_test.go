package ir

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// Tests of what NewModel makes of a model's initializers and declared
// types, and of Model.Usage.

// nearestUpsample2 is the reference for Resize (nearest, half_pixel,
// round_prefer_floor) of a [1,1,h,w] tensor by scales [1,1,2,2]: each
// output element (i, j) is x[i/2][j/2].
func nearestUpsample2(x []float32, h, w int) []float32 {
	out := make([]float32, 4*h*w)
	for i := range 2 * h {
		for j := range 2 * w {
			out[i*2*w+j] = x[(i/2)*w+j/2]
		}
	}
	return out
}

// functionCall is a node calling the model-local function op of domain
// "custom".
func functionCall(op string, in, out []string) *onnx.Node {
	n := node(op, in, out)
	n.Domain = "custom"
	return n
}

// withFunctions makes m a model of IR 9 whose default opset is 17 and
// that holds fns, of domain "custom".
func withFunctions(m *onnx.Model, fns ...*onnx.Function) *onnx.Model {
	m.IRVersion = 9
	m.OpsetImports = []onnx.OpsetID{{Version: 17}, {Domain: "custom", Version: 1}}
	for _, fn := range fns {
		fn.Domain = "custom"
		fn.OpsetImports = m.OpsetImports[:1]
	}
	m.Functions = fns
	return m
}

// TestInitializersReadAtImportAreConstants: a float initializer that
// feeds an operand that must be known at import (Resize's scales,
// Dropout's ratio, a float Range's bounds), directly, through arithmetic,
// from a subgraph or through a function call, is a constant, not a
// parameter, and the model imports and computes what the operator
// defines; one also read by a trainable operand is a constant for every
// use; a subgraph's own initializer of the same name as a parameter
// leaves the parameter alone.
func TestInitializersReadAtImportAreConstants(t *testing.T) {
	x := FromFloat32s(Shape{1, 1, 2, 2}, []float32{0, 1, 2, 3})
	scales := FromFloat32s(Shape{4}, []float32{1, 1, 2, 2})
	up := nearestUpsample2(x.Float32s(), 2, 2)
	xIn := []*onnx.ValueInfo{declareInput("x", x)}
	resize := func(in, scales, out string) *onnx.Node {
		return node("Resize", []string{in, "", scales}, []string{out}, stringAttr("mode", "nearest"))
	}
	ifTrue := func(then, els *onnx.Graph) []*onnx.Node {
		return []*onnx.Node{constNode(t, "c", FromBools(Shape{}, []bool{true})),
			node("If", []string{"c"}, []string{"y"}, graphAttr("then_branch", then), graphAttr("else_branch", els))}
	}
	v := FromFloat32s(Shape{4}, []float32{3, 5, 7, 11})
	w := FromFloat32s(Shape{2, 2}, []float32{1, 2, 3, 4})
	shadowing := func(out string) *onnx.Graph {
		g := body(nil, []*onnx.Node{resize("x", "W", out)}, out)
		g.Initializers = []*onnx.Tensor{initializer(t, "W", scales)}
		return g
	}
	for _, c := range []struct {
		name    string
		model   *onnx.Model
		feeds   map[string]*Tensor
		static  []string // the float initializers that must be constants
		params  []string
		outputs map[string][]float64
	}{
		{"Resize scales", buildModel(13, xIn, []*onnx.Tensor{initializer(t, "sc", scales)}, []*onnx.Node{resize("x", "sc", "y")}, "y"),
			map[string]*Tensor{"x": x}, []string{"sc"}, nil, map[string][]float64{"y": values(FromFloat32s(Shape{16}, up))}},
		{"Resize scales computed from an initializer", buildModel(13, xIn, []*onnx.Tensor{initializer(t, "half", FromFloat32s(Shape{4}, []float32{0.5, 0.5, 1, 1}))},
			[]*onnx.Node{constNode(t, "two", FromFloat32s(Shape{}, []float32{2})), node("Mul", []string{"half", "two"}, []string{"sc"}), resize("x", "sc", "y")}, "y"),
			map[string]*Tensor{"x": x}, []string{"half"}, nil, map[string][]float64{"y": values(FromFloat32s(Shape{16}, up))}},
		{"Resize scales read in an If branch", buildModel(13, xIn, []*onnx.Tensor{initializer(t, "sc", scales)},
			ifTrue(body(nil, []*onnx.Node{resize("x", "sc", "t")}, "t"), body(nil, []*onnx.Node{resize("x", "sc", "e")}, "e")), "y"),
			map[string]*Tensor{"x": x}, []string{"sc"}, nil, map[string][]float64{"y": values(FromFloat32s(Shape{16}, up))}},
		{"Resize scales passed to a function", withFunctions(buildModel(17, xIn, []*onnx.Tensor{initializer(t, "sc", scales)},
			[]*onnx.Node{functionCall("Up", []string{"x", "sc"}, []string{"y"})}, "y"),
			&onnx.Function{Name: "Up", Inputs: []string{"a", "s"}, Outputs: []string{"b"}, Nodes: []*onnx.Node{resize("a", "s", "b")}}),
			map[string]*Tensor{"x": x}, []string{"sc"}, nil, map[string][]float64{"y": values(FromFloat32s(Shape{16}, up))}},
		{"Resize scales also multiplied", buildModel(13, append(xIn, declareInput("v", v)), []*onnx.Tensor{initializer(t, "sc", scales)},
			[]*onnx.Node{resize("x", "sc", "y"), node("Mul", []string{"v", "sc"}, []string{"z"})}, "y", "z"),
			map[string]*Tensor{"x": x, "v": v}, []string{"sc"}, nil,
			map[string][]float64{"y": values(FromFloat32s(Shape{16}, up)), "z": {3 * 1, 5 * 1, 7 * 2, 11 * 2}}},
		{"a subgraph's own initializer of a parameter's name", buildModel(13, append(xIn, declareInput("v", w)), []*onnx.Tensor{initializer(t, "W", w)},
			append(ifTrue(shadowing("t"), shadowing("e")), node("MatMul", []string{"v", "W"}, []string{"z"})), "y", "z"),
			map[string]*Tensor{"x": x, "v": w}, nil, []string{"W"},
			map[string][]float64{"y": values(FromFloat32s(Shape{16}, up)), "z": {1*1 + 2*3, 1*2 + 2*4, 3*1 + 4*3, 3*2 + 4*4}}},
		{"a subgraph's name that another subgraph computes from a parameter", buildModel(13, append(xIn, declareInput("v", v)), []*onnx.Tensor{initializer(t, "W", v)},
			[]*onnx.Node{
				constNode(t, "c", FromBools(Shape{}, []bool{true})),
				node("If", []string{"c"}, []string{"z"}, graphAttr("then_branch", body(nil, []*onnx.Node{node("Add", []string{"v", "W"}, []string{"h"})}, "h")),
					graphAttr("else_branch", body(nil, []*onnx.Node{node("Sub", []string{"v", "W"}, []string{"h"})}, "h"))),
				node("If", []string{"c"}, []string{"y"}, graphAttr("then_branch", body(nil, []*onnx.Node{constNode(t, "h", scales), resize("x", "h", "t")}, "t")),
					graphAttr("else_branch", body(nil, []*onnx.Node{constNode(t, "h", scales), resize("x", "h", "e")}, "e"))),
			}, "y", "z"),
			map[string]*Tensor{"x": x, "v": v}, nil, []string{"W"},
			map[string][]float64{"y": values(FromFloat32s(Shape{16}, up)), "z": {6, 10, 14, 22}}},
		{"Resize scales cast like a parameter", buildModel(15, append(xIn, declareInput("v", v)), []*onnx.Tensor{initializer(t, "sc", Convert(scales, Float64)), initializer(t, "W", v)},
			[]*onnx.Node{node("CastLike", []string{"sc", "W"}, []string{"sc32"}), resize("x", "sc32", "y"), node("Mul", []string{"v", "W"}, []string{"z"})}, "y", "z"),
			map[string]*Tensor{"x": x, "v": v}, []string{"sc"}, []string{"W"},
			map[string][]float64{"y": values(FromFloat32s(Shape{16}, up)), "z": {9, 25, 49, 121}}},
		{"Dropout ratio", buildModel(13, []*onnx.ValueInfo{declareInput("v", v)}, []*onnx.Tensor{initializer(t, "ratio", FromFloat32s(Shape{}, []float32{0.3}))},
			[]*onnx.Node{node("Dropout", []string{"v", "ratio"}, []string{"y"})}, "y"),
			map[string]*Tensor{"v": v}, []string{"ratio"}, nil, map[string][]float64{"y": values(v)}},
		{"float Range", buildModel(13, nil, []*onnx.Tensor{initializer(t, "a", FromFloat32s(Shape{}, []float32{1})),
			initializer(t, "b", FromFloat32s(Shape{}, []float32{3.5})), initializer(t, "d", FromFloat32s(Shape{}, []float32{0.5}))},
			[]*onnx.Node{node("Range", []string{"a", "b", "d"}, []string{"y"})}, "y"),
			nil, []string{"a", "b", "d"}, nil, map[string][]float64{"y": floatRange(1, 3.5, 0.5)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			model, err := NewModel(c.model)
			if err != nil {
				t.Fatal(err)
			}
			var params []string
			for _, p := range model.Params {
				params = append(params, p.Name)
			}
			if !slices.Equal(params, c.params) {
				t.Errorf("params %v, want %v", params, c.params)
			}
			for _, name := range c.static {
				i := slices.IndexFunc(model.Initializers, func(info InitializerInfo) bool { return info.Name == name })
				if i < 0 || model.Initializers[i].Param || !model.Initializers[i].ReadAtImport {
					t.Errorf("initializer %q: %+v, want a constant read at import", name, model.Initializers)
				}
				if model.Usage()[name] != nil {
					t.Errorf("Usage lists %q, which is no parameter", name)
				}
			}
			res, _ := runModel(t, c.model, c.feeds)
			for name, want := range c.outputs {
				got := values(res[name])
				if !slices.Equal(got, want) {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		})
	}
}

// floatRange is ONNX's Range in float64: ceil((limit-start)/delta)
// elements start + i·delta.
func floatRange(start, limit, delta float64) []float64 {
	n := int(math.Ceil((limit - start) / delta))
	out := make([]float64, n)
	for i := range out {
		out[i] = start + float64(i)*delta
	}
	return out
}

// TestValueInputsSeeShadowing: a graph input that a subgraph's own
// initializer of the same name hides is not needed at import because the
// subgraph's value decides a shape.
func TestValueInputsSeeShadowing(t *testing.T) {
	x := FromFloat32s(Shape{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	s := IntsTensor(3, 2)
	reshape := func(out string) *onnx.Graph {
		g := body(nil, []*onnx.Node{node("Reshape", []string{"x", "s"}, []string{out})}, out)
		g.Initializers = []*onnx.Tensor{initializer(t, "s", s)}
		return g
	}
	m := buildModel(17, []*onnx.ValueInfo{declareInput("x", x), declareInput("s", s)}, nil, []*onnx.Node{
		constNode(t, "c", FromBools(Shape{}, []bool{false})),
		node("If", []string{"c"}, []string{"y"}, graphAttr("then_branch", reshape("t")), graphAttr("else_branch", reshape("e"))),
		node("Add", []string{"s", "s"}, []string{"z"}),
	}, "y", "z")
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.ValueInputs(); len(got) != 0 {
		t.Errorf("ValueInputs = %v, want none (the branches reshape by their own s)", got)
	}
	res, _ := runModel(t, m, map[string]*Tensor{"x": x, "s": s})
	if got := res["y"].Shape(); !got.Equal(Shape{3, 2}) {
		t.Errorf("y is %v, want [3 2]", got)
	}
	if got := res["z"].Ints(); !slices.Equal(got, []int{6, 4}) {
		t.Errorf("z = %v, want [6 4]", got)
	}
}

// TestFunctionOutputsNeedOnlyWhatTheyAreComputedFrom: a function call
// whose second output is a shape (Shape of its first) feeds Reshape's
// shape; the weight and the graph input the call also takes are not
// needed at import for that: the weight stays a parameter, the input is
// fed at run time.
func TestFunctionOutputsNeedOnlyWhatTheyAreComputedFrom(t *testing.T) {
	x := FromFloat32s(Shape{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	w := FromFloat32s(Shape{3, 2}, []float32{1, 0, 0, 1, 1, 1})
	m := withFunctions(buildModel(17, []*onnx.ValueInfo{declareInput("x", x)}, []*onnx.Tensor{initializer(t, "W", w)},
		[]*onnx.Node{
			functionCall("Project", []string{"x", "W"}, []string{"y", "s"}),
			node("Reshape", []string{"y", "s"}, []string{"z"}),
		}, "z"),
		&onnx.Function{Name: "Project", Inputs: []string{"a", "w"}, Outputs: []string{"b", "shape"}, Nodes: []*onnx.Node{
			node("MatMul", []string{"a", "w"}, []string{"b"}),
			node("Shape", []string{"b"}, []string{"shape"}),
		}})
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(model.Params) != 1 || model.Params[0].Name != "W" {
		t.Errorf("params %v, want W", model.Params)
	}
	if got := model.ValueInputs(); len(got) != 0 {
		t.Errorf("ValueInputs = %v, want none", got)
	}
	res, _ := runModel(t, m, map[string]*Tensor{"x": x})
	// z = x·W: rows [1+3, 2+3] and [4+6, 5+6].
	if got := values(res["z"]); !slices.Equal(got, []float64{4, 5, 10, 11}) {
		t.Errorf("z = %v, want [4 5 10 11]", got)
	}
}

// usageModel reads its parameters at top level, in If branches (one
// through an Identity alias, one branch defining its own U) and through a
// function whose body reads its weight twice.
func usageModel(t *testing.T) *onnx.Model {
	x := FromFloat32s(Shape{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	w34 := FromFloat32s(Shape{3, 4}, make([]float32, 12))
	b := FromFloat32s(Shape{4}, []float32{1, 2, 3, 4})
	then := body(nil, []*onnx.Node{node("Identity", []string{"B"}, []string{"Ba"}), node("Sub", []string{"hb", "Ba"}, []string{"t1"})}, "t1")
	els := body(nil, []*onnx.Node{
		node("Add", []string{"hb", "U"}, []string{"e1"}),
		node("MatMul", []string{"x", "V"}, []string{"e2"}),
		node("Add", []string{"e1", "e2"}, []string{"e3"}),
	}, "e3")
	els.Initializers = []*onnx.Tensor{initializer(t, "U", b)}
	m := buildModel(17, []*onnx.ValueInfo{declareInput("x", x), valueInfo("c", onnx.Bool)},
		[]*onnx.Tensor{initializer(t, "W", w34), initializer(t, "B", b), initializer(t, "V", w34), initializer(t, "U", b), initializer(t, "W2", w34)},
		[]*onnx.Node{
			node("MatMul", []string{"x", "W"}, []string{"h"}),
			node("Add", []string{"h", "B"}, []string{"hb"}),
			node("If", []string{"c"}, []string{"y"}, graphAttr("then_branch", then), graphAttr("else_branch", els)),
			functionCall("Twice", []string{"x", "W2"}, []string{"r"}),
		}, "y", "r")
	return withFunctions(m, &onnx.Function{Name: "Twice", Inputs: []string{"a", "w"}, Outputs: []string{"r"}, Nodes: []*onnx.Node{
		node("MatMul", []string{"a", "w"}, []string{"p"}),
		node("MatMul", []string{"a", "w"}, []string{"q"}),
		node("Add", []string{"p", "q"}, []string{"r"}),
	}})
}

// TestUsageSeesSubgraphsAndFunctions: Usage counts the uses inside If
// branches (through aliases made there, not where a branch's own
// initializer hides the parameter) and inside the functions a parameter
// is passed to, saying where each is.
func TestUsageSeesSubgraphsAndFunctions(t *testing.T) {
	m := usageModel(t)
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	usage := model.Usage()
	describe := func(name string) []string {
		var out []string
		for _, u := range usage[name].Uses {
			out = append(out, fmt.Sprintf("%s[%d]@%s", u.OpType, u.Input, u.Scope))
		}
		return out
	}
	ifScope := func(branch string) string { return `node 2 "If_y" (If) ` + branch }
	call := `function custom.Twice called by node 3 "Twice_r"`
	for name, want := range map[string][]string{
		"W":  {"MatMul[1]@"},
		"B":  {"Add[1]@", "Sub[1]@" + ifScope("then_branch")},
		"V":  {"MatMul[1]@" + ifScope("else_branch")},
		"U":  nil,
		"W2": {"MatMul[1]@" + call, "MatMul[1]@" + call},
	} {
		if got := describe(name); !slices.Equal(got, want) {
			t.Errorf("%s: uses %q, want %q", name, got, want)
		}
	}
	if got := usage["B"].Aliases; !slices.Equal(got, []string{"Ba"}) {
		t.Errorf("B: aliases %v, want [Ba]", got)
	}
	// The model is one dstune imports: the uses are real.
	if _, err := model.Specialize(Bindings{Values: map[string]*Tensor{"c": FromBools(Shape{}, []bool{true})}}); err != nil {
		t.Fatal(err)
	}
}

// exponentialFunctions is a model whose graph calls F0 with the weight W;
// each Fk calls F(k+1) twice, and the last multiplies by the weight:
// 2^(levels-1) uses of W, and as many nodes once inlined.
func exponentialFunctions(t *testing.T, levels int) *onnx.Model {
	x := FromFloat32s(Shape{2, 2}, []float32{1, 2, 3, 4})
	m := buildModel(17, []*onnx.ValueInfo{declareInput("x", x)}, []*onnx.Tensor{initializer(t, "W", x)},
		[]*onnx.Node{functionCall("F0", []string{"x", "W"}, []string{"y"})}, "y")
	var fns []*onnx.Function
	for k := range levels {
		fn := &onnx.Function{Name: fmt.Sprintf("F%d", k), Inputs: []string{"a", "w"}, Outputs: []string{"b"}}
		if k == levels-1 {
			fn.Nodes = []*onnx.Node{node("MatMul", []string{"a", "w"}, []string{"b"})}
		} else {
			next := fmt.Sprintf("F%d", k+1)
			fn.Nodes = []*onnx.Node{functionCall(next, []string{"a", "w"}, []string{"p"}), functionCall(next, []string{"p", "w"}, []string{"b"})}
		}
		fns = append(fns, fn)
	}
	return withFunctions(m, fns...)
}

// TestFunctionExplosion: a weight passed down forty levels of functions
// that each call the next twice is used 2^39 times; Usage lists the first
// maxListedUses of them at once, and the import stops at
// maxSubgraphNodes saying that function calls, not loops, made the nodes,
// once, not once per level of calls.
func TestFunctionExplosion(t *testing.T) {
	m := exponentialFunctions(t, 40)
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(model.Usage()["W"].Uses); got != maxListedUses {
		t.Errorf("W: %d uses listed, want %d", got, maxListedUses)
	}
	small, err := NewModel(exponentialFunctions(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	if u := small.Usage()["W"].Uses; len(u) != 4 || !strings.HasPrefix(u[0].Scope, `function custom.F0 called by node 0 "F0_y" > function custom.F1 called by node 0 "F1_p" > function custom.F2`) {
		t.Errorf("three levels: uses %+v, want 4 MatMuls in F2", u)
	}

	defer func(old int) { maxSubgraphNodes = old }(maxSubgraphNodes)
	maxSubgraphNodes = 1000
	_, err = model.Specialize(Bindings{})
	if err == nil {
		t.Fatal("imported")
	}
	msg := err.Error()
	for _, want := range []string{`node 0 "F0_y" (F0): not supported: subgraphs would import more than 1000 nodes: `, "calls of model-local functions (each call is inlined at import"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q, want one with %q", msg, want)
		}
	}
	if strings.Contains(msg, "loop") || strings.Count(msg, "function") > 1 || !errors.Is(err, ErrNotSupported) {
		t.Errorf("error %q: want it to name function calls once, and to wrap ErrNotSupported", msg)
	}
}

// TestUnsupportedInitializers: an initializer of a type dstune does not
// support (COMPLEX64) that nothing reads is left out and listed in
// Skipped, as unused UINT64 or FLOAT8 ones are kept as constants; one
// that a node or a subgraph reads fails the import, naming it.
func TestUnsupportedInitializers(t *testing.T) {
	x := FromFloat32s(Shape{2}, []float32{1, -2})
	complexU := &onnx.Tensor{Name: "U", DataType: onnx.Complex64, Dims: []int64{2}, Raw: make([]byte, 16), RawOffset: -1}
	model := func(nodes ...*onnx.Node) *onnx.Model {
		outs := []string{"y"}
		for _, n := range nodes {
			outs = append(outs, n.Outputs...)
		}
		return buildModel(17, []*onnx.ValueInfo{declareInput("x", x)}, []*onnx.Tensor{complexU},
			append([]*onnx.Node{node("Relu", []string{"x"}, []string{"y"})}, nodes...), outs...)
	}
	m, err := NewModel(model())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Skipped) != 1 || m.Skipped[0].Name != "U" || m.Skipped[0].Type != "COMPLEX64" || !slices.Equal(m.Skipped[0].Dims, []int64{2}) || len(m.Initializers) != 0 {
		t.Errorf("skipped %+v, initializers %+v; want U skipped", m.Skipped, m.Initializers)
	}
	res, _ := runModel(t, model(), map[string]*Tensor{"x": x})
	if got := values(res["y"]); !slices.Equal(got, []float64{1, 0}) {
		t.Errorf("y = %v, want [1 0]", got)
	}
	for name, n := range map[string]*onnx.Node{
		"read by a node":     node("Identity", []string{"U"}, []string{"u"}),
		"read by a subgraph": node("If", []string{"c"}, []string{"u"}, graphAttr("then_branch", body(nil, []*onnx.Node{node("Identity", []string{"U"}, []string{"t"})}, "t")), graphAttr("else_branch", body(nil, []*onnx.Node{node("Identity", []string{"U"}, []string{"e"})}, "e"))),
	} {
		_, err := NewModel(model(n))
		if err == nil || !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), `initializer "U": not supported: COMPLEX64 tensors (the graph reads it`) {
			t.Errorf("%s: got %v, want an error naming U", name, err)
		}
	}
}

// TestDeclaredTypesChecked: what a model declares and contradicts is
// refused naming the value and both types: an output's element type, an
// initializer's type against the graph input of its name, a negative
// dimension other than the -1 converters write for unknown; a graph
// without outputs, and a node without an op type, are refused too. An
// output's declared dims are not (often stale; onnxruntime warns).
func TestDeclaredTypesChecked(t *testing.T) {
	w := FromFloat32s(Shape{3, 4}, make([]float32, 12))
	matmul := []*onnx.Node{node("MatMul", []string{"x", "W"}, []string{"y"})}
	declaring := func(in *onnx.ValueInfo, out *onnx.ValueInfo, extraInputs ...*onnx.ValueInfo) *onnx.Model {
		m := buildModel(17, append([]*onnx.ValueInfo{in}, extraInputs...), []*onnx.Tensor{initializer(t, "W", w)}, matmul, "y")
		if out != nil {
			m.Graph.Outputs[0] = out
		}
		return m
	}
	xIn := valueInfo("x", onnx.Float, 2, 3)
	minus := func(v int64) *onnx.ValueInfo {
		vi := valueInfo("x", onnx.Float, 2, 3)
		vi.Type.Shape[0] = onnx.Dim{Value: v, HasValue: true}
		return vi
	}
	noOutputs := buildModel(17, []*onnx.ValueInfo{xIn}, []*onnx.Tensor{initializer(t, "W", w)}, matmul)
	noOp := buildModel(17, []*onnx.ValueInfo{xIn}, nil, []*onnx.Node{{Inputs: []string{"x"}, Outputs: []string{"y"}}}, "y")
	for _, c := range []struct {
		name  string
		model *onnx.Model
		b     Bindings
		want  string // "" when the model imports
	}{
		{"output of another dtype", declaring(xIn, valueInfo("y", onnx.Int32, 2, 4)), Bindings{},
			`graph output "y" is declared int32 [2, 4], but the graph computes float32[2,4]`},
		{"output of other dims", declaring(xIn, valueInfo("y", onnx.Float, 9, 9)), Bindings{}, ""},
		{"output of another rank", declaring(xIn, valueInfo("y", onnx.Float, 8)), Bindings{}, ""},
		{"output declared as the model computes it", declaring(xIn, valueInfo("y", onnx.Float, 2, "n")), Bindings{}, ""},
		{"output sized for the exporter's batch", declaring(valueInfo("x", onnx.Float, "batch", 3), valueInfo("y", onnx.Float, 1, 4)),
			Bindings{Shapes: map[string]Shape{"x": {2, 3}}}, ""},
		{"output of another dtype, batch chosen", declaring(valueInfo("x", onnx.Float, "batch", 3), valueInfo("y", onnx.Float16, 1, 4)),
			Bindings{Shapes: map[string]Shape{"x": {2, 3}}}, `graph output "y" is declared float16 [1, 4], but the graph computes float32[2,4]`},
		{"input dimension -2", declaring(minus(-2), nil), Bindings{}, `input "x": dimension 0 is -2, want a size of 0 or more or a symbolic name`},
		{"input dimension -1", declaring(minus(-1), nil), Bindings{Shapes: map[string]Shape{"x": {2, 3}}}, ""},
		{"initializer of other dims than its input", declaring(xIn, nil, valueInfo("W", onnx.Float, 5, 5)), Bindings{},
			`graph input "W" declares float32 [5, 5], but its initializer "W" is float32 [3, 4]`},
		{"initializer of another dtype than its input", declaring(xIn, nil, valueInfo("W", onnx.Int64, 3, 4)), Bindings{},
			`graph input "W" declares int64 [3, 4], but its initializer "W" is float32 [3, 4]`},
		{"initializer of another rank than its input", declaring(xIn, nil, valueInfo("W", onnx.Float, 12)), Bindings{},
			`graph input "W" declares float32 [12], but its initializer "W" is float32 [3, 4]`},
		{"initializer as its input declares it", declaring(xIn, nil, valueInfo("W", onnx.Float, "k", 4)), Bindings{}, ""},
		{"no outputs", noOutputs, Bindings{}, "the graph declares no outputs"},
		{"empty op_type", noOp, Bindings{}, `node 0 "": empty op_type`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := interpretModelErr(c.model, c.b)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("got %v, want the model to import", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// TestDeclaredHalfOutputsOfFloat32Compute: a float16 output computed in
// float32 by a Float32Compute import is what the model declares.
func TestDeclaredHalfOutputsOfFloat32Compute(t *testing.T) {
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float16, 2)}, nil, []*onnx.Node{node("Relu", []string{"x"}, []string{"y"})}, "y")
	m.Graph.Outputs[0] = valueInfo("y", onnx.Float16, 2)
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, mm := range []*Model{model, model.Float32Compute()} {
		g, err := mm.Specialize(Bindings{})
		if err != nil {
			t.Fatal(err)
		}
		if mm != model && g.Outputs[0].Value.DType != Float32 {
			t.Errorf("Float32Compute: y is %v, want float32", g.Outputs[0].Value.Type)
		}
	}
}

// TestSharedInitializersDoNotAlias: two initializers whose bytes are the
// same memory (external data naming one range, as an exporter that
// deduplicates tied weights writes) are two tensors in a model imported
// in place: a write into one, as a delta makes, leaves the other alone.
// Disjoint views stay views.
func TestSharedInitializersDoNotAlias(t *testing.T) {
	w := FromFloat32s(Shape{2, 2}, []float32{1, 2, 3, 4})
	w1, w2, w3 := initializer(t, "W1", w), initializer(t, "W2", w), initializer(t, "W3", FromFloat32s(Shape{2, 2}, []float32{5, 6, 7, 8}))
	raw, err := w1.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	backing := append(bytes.Clone(raw), make([]byte, 16)...)
	copy(backing[16:], func() []byte { b, _ := w3.Bytes(); return b }())
	for _, c := range []struct {
		t   *onnx.Tensor
		raw []byte
	}{{w1, backing[:16]}, {w2, backing[:16]}, {w3, backing[16:]}} {
		c.t.Raw, c.t.FloatData = c.raw, nil
	}
	m := buildModel(13, []*onnx.ValueInfo{valueInfo("X", onnx.Float, 1, 2)}, []*onnx.Tensor{w1, w2, w3},
		[]*onnx.Node{node("MatMul", []string{"X", "W1"}, []string{"A"}), node("MatMul", []string{"X", "W2"}, []string{"B"}),
			node("MatMul", []string{"X", "W3"}, []string{"C"}), node("Sum", []string{"A", "B", "C"}, []string{"Y"})}, "Y")
	model, err := NewModelShared(m)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2, p3 := model.Param("W1"), model.Param("W2"), model.Param("W3")
	if p1 == nil || p2 == nil || p3 == nil {
		t.Fatal("W1, W2, W3 should be parameters")
	}
	p1.Tensor.Float32s()[0] = 100
	if got := p2.Tensor.Float32s(); !slices.Equal(got, []float32{1, 2, 3, 4}) {
		t.Errorf("W2 = %v after a write into W1: the two are one memory", got)
	}
	view := func(p *Param, b []byte) bool { return &p.Tensor.Bytes()[0] == &b[0] }
	if !view(p1, backing[:16]) || !view(p3, backing[16:]) || view(p2, backing[:16]) {
		t.Errorf("views: W1 %v, W2 %v (want a copy), W3 %v", view(p1, backing[:16]), view(p2, backing[:16]), view(p3, backing[16:]))
	}
}
