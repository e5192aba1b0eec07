package ir

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// TestShapeSubgraphFolds: the exporters' Shape → Gather → Unsqueeze →
// Concat → Reshape chain folds to one Reshape with a static target.
func TestShapeSubgraphFolds(t *testing.T) {
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, "b", "s", 8)}, nil, []*onnx.Node{
		node("Shape", []string{"x"}, []string{"shape"}),
		constNode(t, "zero", ScalarInt64(0)),
		constNode(t, "one", ScalarInt64(1)),
		constNode(t, "axes", IntsTensor(0)),
		node("Gather", []string{"shape", "zero"}, []string{"b"}, intAttr("axis", 0)),
		node("Gather", []string{"shape", "one"}, []string{"s"}, intAttr("axis", 0)),
		node("Unsqueeze", []string{"b", "axes"}, []string{"b1"}),
		node("Unsqueeze", []string{"s", "axes"}, []string{"s1"}),
		constNode(t, "tail", IntsTensor(2, -1)),
		node("Concat", []string{"b1", "s1", "tail"}, []string{"target"}, intAttr("axis", 0)),
		node("Reshape", []string{"x", "target"}, []string{"y"}),
	}, "y")
	g, err := FromONNX(m, map[string]Shape{"x": {2, 3, 8}})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes) != 1 {
		t.Fatalf("%d nodes after folding, want 1:\n%v", len(g.Nodes), g)
	}
	r, ok := g.Nodes[0].Op.(*Reshape)
	if !ok || !r.Shape.Equal(Shape{2, 3, 2, 4}) {
		t.Fatalf("got %s, want Reshape to [2,3,2,4]", g.Nodes[0].Op.Name())
	}
	if g.Outputs[0].Value.Name != "y" || !g.Outputs[0].Value.Shape.Equal(Shape{2, 3, 2, 4}) {
		t.Errorf("output %v", g.Outputs[0].Value)
	}
	// Another specialization of the same model gets another static shape.
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := model.Specialize(Bindings{Shapes: map[string]Shape{"x": {1, 5, 8}}})
	if err != nil {
		t.Fatal(err)
	}
	if s := g2.Outputs[0].Value.Shape; !s.Equal(Shape{1, 5, 2, 4}) {
		t.Errorf("second specialization: %v", s)
	}
}

// TestCausalMaskFolds: a causal mask built from the sequence length
// (Range, Unsqueeze, Greater, Where) becomes one constant; only the Add
// that applies it remains.
func TestCausalMaskFolds(t *testing.T) {
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, "t", "t")}, nil, []*onnx.Node{
		node("Shape", []string{"x"}, []string{"shape"}),
		constNode(t, "zero", ScalarInt64(0)),
		node("Gather", []string{"shape", "zero"}, []string{"n"}, intAttr("axis", 0)),
		constNode(t, "start", ScalarInt64(0)),
		constNode(t, "step", ScalarInt64(1)),
		node("Range", []string{"start", "n", "step"}, []string{"pos"}),
		constNode(t, "a0", IntsTensor(0)),
		constNode(t, "a1", IntsTensor(1)),
		node("Unsqueeze", []string{"pos", "a0"}, []string{"row"}),
		node("Unsqueeze", []string{"pos", "a1"}, []string{"col"}),
		node("Greater", []string{"row", "col"}, []string{"future"}),
		constNode(t, "ninf", ScalarFloat32(float32(math.Inf(-1)))),
		constNode(t, "zerof", ScalarFloat32(0)),
		node("Where", []string{"future", "ninf", "zerof"}, []string{"mask"}),
		node("Add", []string{"x", "mask"}, []string{"y"}),
	}, "y")
	g, err := FromONNX(m, map[string]Shape{"x": {3, 3}})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes) != 1 || g.Nodes[0].Op.Name() != "Add" {
		t.Fatalf("want a single Add:\n%v", g)
	}
	mask := g.Nodes[0].Inputs[1]
	if mask.Kind != ConstValue || !mask.Shape.Equal(Shape{3, 3}) {
		t.Fatalf("mask %v is not a [3,3] constant", mask)
	}
	for i := range 3 {
		for j := range 3 {
			v := mask.Const.Float32s()[i*3+j]
			if (j > i) != math.IsInf(float64(v), -1) || (j <= i && v != 0) {
				t.Errorf("mask[%d][%d] = %v", i, j, v)
			}
		}
	}
}

// TestAliasesAndTiedUses: Identity of an initializer is an alias of the
// parameter, and every use (direct or through the alias) is recorded.
func TestAliasesAndTiedUses(t *testing.T) {
	w := FromFloat32s(Shape{2, 2}, []float32{1, 2, 3, 4})
	m := buildModel(13, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 1, 2), valueInfo("ids", onnx.Int64, 3)},
		[]*onnx.Tensor{initializer(t, "W", w), initializer(t, "shape_const", IntsTensor(4))},
		[]*onnx.Node{
			node("Identity", []string{"W"}, []string{"W_tied"}),
			node("MatMul", []string{"x", "W"}, []string{"a"}),
			node("Transpose", []string{"W_tied"}, []string{"Wt"}, intsAttr("perm", 1, 0)),
			node("MatMul", []string{"a", "Wt"}, []string{"b"}),
			node("Gather", []string{"W_tied", "ids"}, []string{"e"}),
		}, "b", "e", "W_tied")
	g, err := FromONNX(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Params) != 1 {
		t.Fatalf("%d params, want 1 (the int64 initializer is a constant)", len(g.Params))
	}
	p := g.Param("W")
	if p == nil || len(p.Aliases) != 1 || p.Aliases[0] != "W_tied" {
		t.Fatalf("W aliases: %+v", p)
	}
	if len(p.Uses) != 3 || !p.Tied() {
		t.Errorf("W has %d uses, want 3 (MatMul, Transpose, Gather)", len(p.Uses))
	}
	var outW *Value
	for _, o := range g.Outputs {
		if o.Name == "W_tied" {
			outW = o.Value
		}
	}
	if outW != p.Value {
		t.Errorf("the W_tied output is %v, want the parameter's value", outW)
	}
	res, err := Interpret(g, map[string]*Tensor{"x": FromFloat32s(Shape{1, 2}, []float32{1, 1}), "ids": FromInt64s(Shape{3}, []int64{1, -2, 0})})
	if err != nil {
		t.Fatal(err)
	}
	// a = [1,1]·W = [4,6]; b = a·Wᵀ = [4+12, 12+24]
	if got := res["b"].Float32s(); got[0] != 16 || got[1] != 36 {
		t.Errorf("b = %v, want [16 36]", got)
	}
	if got := res["e"].Float32s(); got[0] != 3 || got[2] != 1 || got[4] != 1 {
		t.Errorf("e = %v", got)
	}
}

// TestSoftmaxOpsetSemantics: before opset 13 Softmax normalizes over every
// axis from `axis` on (the input seen as 2-D); from 13 over one axis.
func TestSoftmaxOpsetSemantics(t *testing.T) {
	x := NewTensor(Float32, Shape{2, 3, 2})
	for i := range x.Float32s() {
		x.Float32s()[i] = float32(i%5) * 0.5
	}
	for _, opset := range []int64{11, 13} {
		m := buildModel(opset, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3, 2)}, nil,
			[]*onnx.Node{node("Softmax", []string{"x"}, []string{"y"}, intAttr("axis", 1))}, "y")
		res, g := runModel(t, m, map[string]*Tensor{"x": x})
		y := res["y"].Float32s()
		for b := range 2 {
			var sum float64
			for i := range 6 {
				sum += float64(y[b*6+i])
			}
			inner := float64(y[b*6]) + float64(y[b*6+2]) + float64(y[b*6+4])
			if opset == 11 && math.Abs(sum-1) > 1e-6 {
				t.Errorf("opset 11: batch %d sums to %v over axes 1..2, want 1", b, sum)
			}
			if opset == 13 && math.Abs(inner-1) > 1e-6 {
				t.Errorf("opset 13: batch %d column 0 sums to %v over axis 1, want 1", b, inner)
			}
		}
		if opset == 11 && len(g.Nodes) != 3 {
			t.Errorf("opset 11: %d nodes, want reshape, softmax, reshape", len(g.Nodes))
		}
		if opset == 13 && (len(g.Nodes) != 1 || g.Nodes[0].Op.(*Softmax).Axis != 1) {
			t.Errorf("opset 13: want one Softmax over axis 1:\n%v", g)
		}
	}
}

func TestImportErrors(t *testing.T) {
	x := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3)}
	for _, tc := range []struct {
		name  string
		model *onnx.Model
		want  string
		is    error
	}{
		{"unsupported op", buildModel(17, x, nil, []*onnx.Node{{Name: "weird", OpType: "FooBar", Inputs: []string{"x"}, Outputs: []string{"y"}}}, "y"),
			`node 0 "weird" (FooBar): not supported: operator FooBar`, ErrNotSupported},
		{"other domain", buildModel(17, x, nil, []*onnx.Node{{Name: "ex", OpType: "Gelu", Domain: "org.example", Inputs: []string{"x"}, Outputs: []string{"y"}}}, "y"),
			`dstune imports no operator of domain "org.example"`, ErrNotSupported},
		{"unknown operator of a known domain", buildModel(17, x, nil, []*onnx.Node{{Name: "ms", OpType: "NoSuchOp", Domain: "com.microsoft", Inputs: []string{"x"}, Outputs: []string{"y"}}}, "y"),
			`operator com.microsoft::NoSuchOp`, ErrNotSupported},
		{"undefined input", buildModel(17, x, nil, []*onnx.Node{node("Add", []string{"x", "nope"}, []string{"y"})}, "y"),
			`input 1 "nope" is not defined`, nil},
		{"bad reshape", buildModel(17, x, []*onnx.Tensor{initializer(t, "s", IntsTensor(4, 2))}, []*onnx.Node{node("Reshape", []string{"x", "s"}, []string{"y"})}, "y"),
			`cannot reshape [2,3] (6 elements) to [4 2]`, nil},
		{"dynamic reshape", buildModel(17, append(x, valueInfo("s", onnx.Int64, 2)), nil, []*onnx.Node{node("Reshape", []string{"x", "s"}, []string{"y"})}, "y"),
			`input 1 (shape, "s") must be known at import, but it is a graph input`, nil},
		{"type mismatch", buildModel(17, append(x, valueInfo("i", onnx.Int64, 2, 3)), nil, []*onnx.Node{node("Add", []string{"x", "i"}, []string{"y"})}, "y"),
			`Add: operand dtypes differ: float32 and int64`, nil},
		{"missing output", buildModel(17, x, nil, nil, "y"), `graph output "y" is not produced`, nil},
		{"huge ConstantOfShape", buildModel(17, x, []*onnx.Tensor{initializer(t, "s", IntsTensor(1<<20, 1<<20))}, []*onnx.Node{node("ConstantOfShape", []string{"s"}, []string{"y"})}, "y"),
			`exceed the 1024 MiB limit`, nil},
		{"huge Expand", buildModel(17, x, []*onnx.Tensor{initializer(t, "s", IntsTensor(1<<40, 2, 3))}, []*onnx.Node{node("Expand", []string{"x", "s"}, []string{"y"})}, "y"),
			`exceed the 16384 MiB limit`, nil},
		{"overflowing Reshape", buildModel(17, x, []*onnx.Tensor{initializer(t, "s", IntsTensor(1<<62, 1<<62, 0))}, []*onnx.Node{node("Reshape", []string{"x", "s"}, []string{"y"}, intAttr("allowzero", 1))}, "y"),
			`beyond any tensor's size`, nil},
		{"runtime If", buildModel(17, append(x, valueInfo("c", onnx.Bool)), nil, []*onnx.Node{node("If", []string{"c"}, []string{"y"},
			graphAttr("then_branch", branch(t, "a", IntsTensor(1, 2))), graphAttr("else_branch", branch(t, "b", IntsTensor(1, 2, 3))))}, "y"),
			`If with a condition computed at run time: output 0: the branches give int64[2] and int64[3]`, ErrNotSupported},
	} {
		t.Run(tc.name, func(t *testing.T) { wantImportError(t, tc.model, tc.is, tc.want) })
	}
}

// TestValueInputs: an input feeding a shape operand must be bound, one
// reaching it only through Shape need not.
func TestValueInputs(t *testing.T) {
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3), valueInfo("s", onnx.Int64, 2), valueInfo("z", onnx.Float, 6)}, nil,
		[]*onnx.Node{
			node("Reshape", []string{"x", "s"}, []string{"y"}),
			node("Shape", []string{"z"}, []string{"zs"}),
			node("Reshape", []string{"x", "zs"}, []string{"w"}),
		}, "y", "w")
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.ValueInputs(); len(got) != 1 || got[0] != "s" {
		t.Errorf("ValueInputs = %v, want [s]", got)
	}
	g, err := model.Specialize(Bindings{Values: map[string]*Tensor{"s": IntsTensor(3, -1)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Inputs) != 2 || g.Outputs[0].Value.Shape.String() != "[3,2]" || g.Outputs[1].Value.Shape.String() != "[6]" {
		t.Errorf("inputs %v, outputs %v %v", g.Inputs, g.Outputs[0].Value, g.Outputs[1].Value)
	}
}

// TestNodesOutOfOrder: import sorts nodes topologically.
func TestNodesOutOfOrder(t *testing.T) {
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2)}, nil, []*onnx.Node{
		node("Neg", []string{"a"}, []string{"y"}),
		node("Exp", []string{"x"}, []string{"a"}),
	}, "y")
	g, err := FromONNX(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes) != 2 || g.Nodes[0].Op.Name() != "Exp" {
		t.Errorf("order:\n%v", g)
	}
	cyc := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2)}, nil, []*onnx.Node{
		node("Add", []string{"x", "b"}, []string{"a"}),
		node("Neg", []string{"a"}, []string{"b"}),
	}, "b")
	if _, err := FromONNX(cyc, nil); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
}

func TestValidateCatchesBadGraphs(t *testing.T) {
	b := NewBuilder("g")
	x := b.Input("x", Float32, Shape{2})
	y := b.Op1(&Unary{Fn: Exp}, x)
	b.Output("y", y)
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	y.Shape = Shape{3}
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "inferred float32[2]") {
		t.Errorf("wrong output shape: %v", err)
	}
	b = NewBuilder("g")
	b.Op1(&Binary{Fn: Add}, b.Input("a", Float32, Shape{2}), b.Input("b", Float32, Shape{3}))
	if _, err := b.Graph(); err == nil || !strings.Contains(err.Error(), "do not broadcast") {
		t.Errorf("builder error: %v", err)
	}
}

func TestParseEinsum(t *testing.T) {
	for _, tc := range []struct {
		eq     string
		ranks  []int
		inputs []string
		output string
	}{
		{"ij,jk->ik", []int{2, 2}, []string{"ij", "jk"}, "ik"},
		{"ij,jk", []int{2, 2}, []string{"ij", "jk"}, "ik"},
		{"...ii->...i", []int{4}, []string{"ABii", "ii"}[:1], "ABi"},
		{"i,i", []int{1, 1}, []string{"i", "i"}, ""},
		{"ba", []int{2}, []string{"ba"}, "ab"},
	} {
		op, err := ParseEinsum(tc.eq, tc.ranks)
		if err != nil {
			t.Errorf("%s: %v", tc.eq, err)
			continue
		}
		if strings.Join(op.Inputs, ",") != strings.Join(tc.inputs, ",") || op.Output != tc.output {
			t.Errorf("%s: %v -> %q, want %v -> %q", tc.eq, op.Inputs, op.Output, tc.inputs, tc.output)
		}
	}
	if _, err := ParseEinsum("ij,jk->ik", []int{2}); err == nil {
		t.Error("operand count mismatch accepted")
	}
}

func TestSliceRange(t *testing.T) {
	for _, tc := range []struct{ start, end, step, n, first, count int }{
		{0, 3, 1, 5, 0, 3}, {1, 1000, 1, 5, 1, 4}, {-1, -1000, -1, 5, 4, 5}, {-2, 0, -1, 5, 3, 3},
		{1000, 0, 1, 5, 0, 0}, {0, 5, 2, 5, 0, 3}, {4, 0, -2, 5, 4, 2}, {0, -1, 1, 0, 0, 0},
	} {
		first, count, err := sliceRange(tc.start, tc.end, tc.step, tc.n)
		if err != nil || count != tc.count || (count > 0 && first != tc.first) {
			t.Errorf("slice(%d:%d:%d) of %d = %d,%d %v, want %d,%d", tc.start, tc.end, tc.step, tc.n, first, count, err, tc.first, tc.count)
		}
	}
}

// An opset import that is no opset (negative, or far beyond any ONNX
// release) is refused naming it.
func TestImportRefusesNonsenseOpsets(t *testing.T) {
	for _, v := range []int64{-5, 1 << 62} {
		m, _ := oneNodeModel(t, 17, "Abs", nil, []nodeInput{feed(NewTensor(Float32, Shape{2}))}, 1)
		m.OpsetImports[0].Version = v
		_, err := NewModel(m)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("imports opset %d of domain \"\", which is no opset", v)) {
			t.Errorf("opset %d: %v", v, err)
		}
	}
}
