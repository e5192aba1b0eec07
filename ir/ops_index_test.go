package ir

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

func TestIndexOpsMatchOnnxruntime(t *testing.T) {
	f := FromFloat32s(Shape{3, 4}, []float32{1, 0, 2, 0, 1, 0, 2, 0, -1, float32(math.NaN()), 0, 3})
	noNaN := FromFloat32s(Shape{4, 3}, []float32{2, 1, 2, 0, 5, 0, 2, 1, 2, 0, 5, -1})
	ints := FromInt64s(Shape{10}, []int64{4, -2, 4, 7, -2, 0, 9, 0, 4, 1})
	for _, tc := range []struct {
		name string
		node *onnx.Node
		in   []namedTensor
	}{
		{"NonZero/float", node("NonZero", []string{"x"}, []string{"y"}), []namedTensor{{"x", f}}},
		{"NonZero/int", node("NonZero", []string{"x"}, []string{"y"}), []namedTensor{{"x", ints}}},
		{"NonZero/bool", node("NonZero", []string{"x"}, []string{"y"}), []namedTensor{{"x", FromBools(Shape{2, 1, 2}, []bool{false, true, true, true})}}},
		{"Compress/axis", node("Compress", []string{"x", "c"}, []string{"y"}, intAttr("axis", 1)),
			[]namedTensor{{"x", f}, {"c", FromBools(Shape{3}, []bool{true, false, true})}}},
		{"Compress/flat", node("Compress", []string{"x", "c"}, []string{"y"}),
			[]namedTensor{{"x", ints}, {"c", FromBools(Shape{6}, []bool{false, true, true, false, false, true})}}},
		{"Unique/sorted", node("Unique", []string{"x"}, []string{"y", "idx", "inv", "cnt"}),
			[]namedTensor{{"x", ints}}},
		{"Unique/unsorted", node("Unique", []string{"x"}, []string{"y", "idx", "inv", "cnt"}, intAttr("sorted", 0)),
			[]namedTensor{{"x", ints}}},
		{"Unique/axis0", node("Unique", []string{"x"}, []string{"y", "idx", "inv", "cnt"}, intAttr("axis", 0)), []namedTensor{{"x", noNaN}}},
		{"Unique/axis1/unsorted", node("Unique", []string{"x"}, []string{"y", "idx", "inv", "cnt"}, intAttr("axis", -1), intAttr("sorted", 0)), []namedTensor{{"x", noNaN}}},
		{"Unique/flat-float", node("Unique", []string{"x"}, []string{"y", "idx", "inv", "cnt"}), []namedTensor{{"x", noNaN}}},
		{"ReverseSequence/time0", node("ReverseSequence", []string{"x", "l"}, []string{"y"}),
			[]namedTensor{{"x", noNaN}, {"l", FromInt64s(Shape{3}, []int64{4, 0, 2})}}},
		{"ReverseSequence/batch0", node("ReverseSequence", []string{"x", "l"}, []string{"y"}, intAttr("batch_axis", 0), intAttr("time_axis", 1)),
			[]namedTensor{{"x", noNaN}, {"l", FromInt64s(Shape{4}, []int64{3, 1, 2, 0})}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			infos, inputs := declareInputs(tc.in)
			checkAgainstORT(t, buildModel(13, infos, nil, []*onnx.Node{tc.node}, tc.node.Outputs...), inputs, 0, 0)
		})
	}
}

// TestUniqueNaN: NaNs group into one item after every number, as
// numpy's unique does.
func TestUniqueNaN(t *testing.T) {
	nan := math.NaN()
	m := buildModel(11, nil, nil, []*onnx.Node{
		constNode(t, "x", FromFloat64s(Shape{5}, []float64{nan, 1, nan, -1, 1})),
		node("Unique", []string{"x"}, []string{"y", "idx", "inv", "cnt"}),
	}, "y", "idx", "inv", "cnt")
	out, _ := runModel(t, m, nil)
	y := out["y"].Float64s()
	if len(y) != 3 || y[0] != -1 || y[1] != 1 || !math.IsNaN(y[2]) {
		t.Errorf("y = %v, want [-1 1 NaN]", y)
	}
	for name, want := range map[string]string{"idx": "[3 1 0]", "inv": "[2 1 2 0 1]", "cnt": "[1 2 2]"} {
		if got := fmt.Sprint(out[name].Int64s()); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
}

// TestValueDependentOpsFold: NonZero, Unique and Compress's condition are
// bound at import and fold; a condition computed at run time is refused.
func TestValueDependentOpsFold(t *testing.T) {
	m := buildModel(13, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 4), valueInfo("c", onnx.Bool, 4)}, nil, []*onnx.Node{
		node("NonZero", []string{"c"}, []string{"nz"}),
		node("Compress", []string{"x", "c"}, []string{"y"}, intAttr("axis", 0)),
	}, "y", "nz")
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.ValueInputs(); len(got) != 1 || got[0] != "c" {
		t.Fatalf("ValueInputs = %v, want [c]", got)
	}
	g, err := model.Specialize(Bindings{Values: map[string]*Tensor{"c": FromBools(Shape{4}, []bool{true, false, false, true})}})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes) != 1 {
		t.Errorf("%d nodes, want the one Gather:\n%v", len(g.Nodes), g)
	}
	if _, ok := g.Nodes[0].Op.(*Gather); !ok {
		t.Errorf("Compress imports as %s, want Gather", g.Nodes[0].Op.Name())
	}
	if _, err := model.Specialize(Bindings{}); err == nil || !strings.Contains(err.Error(), `input 0 (X, "c") must be known at import`) {
		t.Errorf("unbound condition: got %v", err)
	}
}

// TestCompressGradient: Compress differentiates as the Gather it imports
// as.
func TestCompressGradient(t *testing.T) {
	m := buildModel(13, nil, []*onnx.Tensor{initializer(t, "w", FromFloat64s(Shape{2, 3}, []float64{0.5, -1, 2, 0.25, 3, -0.75}))},
		[]*onnx.Node{
			constNode(t, "c", FromBools(Shape{3}, []bool{true, false, true})),
			node("Compress", []string{"w", "c"}, []string{"y"}, intAttr("axis", 1)),
		}, "y")
	checkImportedGrad(t, m, nil, 1e-6)
}

func TestReverseSequenceGradient(t *testing.T) {
	runGradCase(t, gradCase{name: "ReverseSequence", build: func(h *caseBuilder) []*Value {
		lens := h.constant(FromInt64s(Shape{3}, []int64{2, 4, 0}))
		return []*Value{h.op(&ReverseSequence{BatchAxis: 1, TimeAxis: 0}, h.param(Shape{4, 3, 2}, -1, 1), lens)}
	}})
}

func TestIndexOpErrors(t *testing.T) {
	x := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 3, 2)}
	for _, tc := range []struct {
		name  string
		model *onnx.Model
		want  string
	}{
		{"condition dtype", buildModel(13, x, []*onnx.Tensor{initializer(t, "c", IntsTensor(1, 0))}, []*onnx.Node{node("Compress", []string{"x", "c"}, []string{"y"}, intAttr("axis", 1))}, "y"),
			"condition is int64[2], want a 1-D bool tensor"},
		{"condition too long", buildModel(13, x, nil, []*onnx.Node{constNode(t, "c", FromBools(Shape{3}, []bool{true, false, true})), node("Compress", []string{"x", "c"}, []string{"y"}, intAttr("axis", 1))}, "y"),
			"condition selects position 2 of an axis of length 2"},
		{"compress axis", buildModel(13, x, nil, []*onnx.Node{constNode(t, "c", FromBools(Shape{1}, []bool{true})), node("Compress", []string{"x", "c"}, []string{"y"}, intAttr("axis", 2))}, "y"),
			"axis 2 out of range for rank 2"},
		{"unique axis", buildModel(13, nil, nil, []*onnx.Node{constNode(t, "c", IntsTensor(1, 2)), node("Unique", []string{"c"}, []string{"y"}, intAttr("axis", 1))}, "y"),
			"axis 1 out of range for rank 1"},
		{"nonzero of a computed value", buildModel(13, x, nil, []*onnx.Node{node("Relu", []string{"x"}, []string{"r"}), node("NonZero", []string{"r"}, []string{"y"})}, "y"),
			"must be known at import, but it is computed at run time"},
		{"same axes", buildModel(13, append(x, valueInfo("l", onnx.Int64, 3)), nil, []*onnx.Node{node("ReverseSequence", []string{"x", "l"}, []string{"y"}, intAttr("batch_axis", 0), intAttr("time_axis", 0))}, "y"),
			"batch axis 0 and time axis 0 for rank 2, want two different axes"},
		{"batch axis", buildModel(13, append(x, valueInfo("l", onnx.Int64, 3)), nil, []*onnx.Node{node("ReverseSequence", []string{"x", "l"}, []string{"y"}, intAttr("batch_axis", 5))}, "y"),
			"batch_axis: axis 5 out of range for rank 2"},
		{"lens shape", buildModel(13, append(x, valueInfo("l", onnx.Int64, 3)), nil, []*onnx.Node{node("ReverseSequence", []string{"x", "l"}, []string{"y"})}, "y"),
			"sequence_lens [3], want [2]"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantImportError(t, tc.model, nil, tc.want) })
	}
	_, err := EvalOp(&ReverseSequence{BatchAxis: 1}, NewTensor(Float32, Shape{3, 2}), FromInt64s(Shape{2}, []int64{1, 4}))
	var ie *IndexError
	if !errors.As(err, &ie) || ie.Index != 4 || ie.Hi != 4 {
		t.Errorf("sequence length past the time axis: got %v, want an IndexError for 4 of [0, 4)", err)
	}
}
