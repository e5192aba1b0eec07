package ir

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

func mlModel(inputs []*onnx.ValueInfo, n *onnx.Node, outputs ...string) *onnx.Model {
	n.Domain = mlDomain
	m := buildModel(17, inputs, nil, []*onnx.Node{n}, outputs...)
	m.OpsetImports = append(m.OpsetImports, onnx.OpsetID{Domain: mlDomain, Version: 4})
	return m
}

// TestLabelEncoder: float keys (NaN matching NaN) to strings, with the
// default for unknown keys; the string output makes the input a value
// input.
func TestLabelEncoder(t *testing.T) {
	nan := float32(math.NaN())
	m := mlModel([]*onnx.ValueInfo{valueInfo("x", onnx.Float, 5)},
		node("LabelEncoder", []string{"x"}, []string{"y"}, floatsAttr("keys_floats", 1.5, nan, -2), stringsAttr("values_strings", "one", "nan", "minus"),
			stringAttr("default_string", "?")), "y")
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if vi := model.ValueInputs(); !slices.Equal(vi, []string{"x"}) {
		t.Errorf("ValueInputs %v, want [x] (strings come out)", vi)
	}
	x := floats(-2, nan, 1.5, 3, float32(math.Copysign(0, -1)))
	res, _ := interpretComposite(t, m, Bindings{Values: map[string]*Tensor{"x": x}}, nil)
	if got, want := res[0].Tensor.Strings(), []string{"minus", "nan", "one", "?", "?"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// int64 to float at run time, default -0.0.
	m = mlModel([]*onnx.ValueInfo{valueInfo("x", onnx.Int64, 3)},
		node("LabelEncoder", []string{"x"}, []string{"y"}, intsAttr("keys_int64s", 7, 8), floatsAttr("values_floats", 0.5, 0.25)), "y")
	res, g := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"x": {3}}}, map[string]*Tensor{"x": IntsTensor(8, 9, 7)})
	if len(g.Nodes) != 1 {
		t.Errorf("a numeric LabelEncoder runs at run time:\n%v", g)
	}
	got := res[0].Tensor.Float32s()
	if got[0] != 0.25 || got[2] != 0.5 || got[1] != 0 || !math.Signbit(float64(got[1])) {
		t.Errorf("got %v, want [0.25 -0 0.5]", got)
	}
}

// TestTreeEnsemble: two trees over two features, every aggregate, with
// a NaN routed by nodes_missing_value_tracks_true, against the trees
// walked by hand.
func TestTreeEnsemble(t *testing.T) {
	// Tree 0: node 0: x0 <= 1 ? leaf 0 (t0 += 1) : node 1; node 1: x1 > 5 ? leaf 1 (t1 += 10) : leaf 2 (t0 += 100).
	// Tree 1: node 2: x1 in {3, 4} ? leaf 3 (t1 += 1000) : leaf 4 (t0 += -1).
	splits := FromFloat32s(Shape{3}, []float32{1, 5, 0})
	modes := FromInt64s(Shape{3}, []int64{treeLEQ, treeGT, treeMember})
	modes8 := NewTensor(Uint8, Shape{3})
	for i, v := range modes.Int64s() {
		modes8.Uint8s()[i] = uint8(v)
	}
	rows := [][2]float32{{0, 0}, {2, 6}, {2, 3}, {float32(math.NaN()), 4}}
	// The hand walk: leaves reached per row, per tree.
	leaves := [][2]int{{0, 4}, {1, 4}, {2, 3}, {0, 3}} // NaN <= 1 is false, but missing tracks true
	weights := []float64{1, 10, 100, 1000, -1}
	targets := []int{0, 1, 0, 1, 0}
	x := NewTensor(Float32, Shape{4, 2})
	for r, row := range rows {
		copy(x.Float32s()[2*r:], row[:])
	}
	for _, agg := range []int{treeSum, treeAverage, treeMin, treeMax} {
		n := node("TreeEnsemble", []string{"x"}, []string{"y"},
			tensorAttr(t, "nodes_splits", splits), tensorAttr(t, "nodes_modes", modes8),
			intsAttr("nodes_featureids", 0, 1, 1), intsAttr("nodes_truenodeids", 0, 1, 3), intsAttr("nodes_trueleafs", 1, 1, 1),
			intsAttr("nodes_falsenodeids", 1, 2, 4), intsAttr("nodes_falseleafs", 0, 1, 1),
			intsAttr("nodes_missing_value_tracks_true", 1, 0, 0),
			intsAttr("leaf_targetids", 0, 1, 0, 1, 0), tensorAttr(t, "leaf_weights", FromFloat32s(Shape{5}, []float32{1, 10, 100, 1000, -1})),
			tensorAttr(t, "membership_values", FromFloat32s(Shape{3}, []float32{3, 4, float32(math.NaN())})),
			intsAttr("tree_roots", 0, 2), intAttr("n_targets", 2), intAttr("aggregate_function", int64(agg)))
		m := mlModel([]*onnx.ValueInfo{valueInfo("x", onnx.Float, 4, 2)}, n, "y")
		res, _ := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"x": {4, 2}}}, map[string]*Tensor{"x": x})
		for r := range rows {
			want := []float64{0, 0}
			if agg == treeMin {
				want = []float64{math.MaxFloat32, math.MaxFloat32}
			} else if agg == treeMax {
				want = []float64{-math.MaxFloat32, -math.MaxFloat32}
			}
			for _, l := range leaves[r] {
				switch agg {
				case treeSum:
					want[targets[l]] += weights[l]
				case treeAverage:
					want[targets[l]] += weights[l] / 2
				case treeMin:
					want[targets[l]] = math.Min(want[targets[l]], weights[l])
				case treeMax:
					want[targets[l]] = math.Max(want[targets[l]], weights[l])
				}
			}
			for c := range 2 {
				if got := res[0].Tensor.Float64At(2*r + c); got != float64(float32(want[c])) {
					t.Errorf("aggregate %d row %d target %d: %v, want %v", agg, r, c, got, want[c])
				}
			}
		}
	}
	// A tree leading back to its root never ends: refused.
	cyc := node("TreeEnsemble", []string{"x"}, []string{"y"},
		tensorAttr(t, "nodes_splits", FromFloat32s(Shape{1}, []float32{0})), tensorAttr(t, "nodes_modes", NewTensor(Uint8, Shape{1})),
		intsAttr("nodes_featureids", 0), intsAttr("nodes_truenodeids", 0), intsAttr("nodes_trueleafs", 0),
		intsAttr("nodes_falsenodeids", 0), intsAttr("nodes_falseleafs", 1), intsAttr("leaf_targetids", 0),
		tensorAttr(t, "leaf_weights", floats(1)), intsAttr("tree_roots", 0), intAttr("n_targets", 1))
	if _, err := interpretModelErr(mlModel([]*onnx.ValueInfo{valueInfo("x", onnx.Float, 1, 1)}, cyc, "y"), Bindings{}); err == nil || !strings.Contains(err.Error(), "cycle through node 0") {
		t.Errorf("cyclic tree: %v", err)
	}
}

// TestBinarizerAndArrayFeatureExtractor against their definitions.
func TestBinarizerAndArrayFeatureExtractor(t *testing.T) {
	x := floats(-1, 0.5, 0.6, float32(math.NaN()))
	res, _ := interpretComposite(t, mlModel([]*onnx.ValueInfo{valueInfo("x", onnx.Float, 4)},
		node("Binarizer", []string{"x"}, []string{"y"}, floatAttr("threshold", 0.5)), "y"),
		Bindings{Shapes: map[string]Shape{"x": {4}}}, map[string]*Tensor{"x": x})
	if got := res[0].Tensor.Float32s(); !slices.Equal(got, []float32{0, 0, 1, 0}) {
		t.Errorf("Binarizer %v, want [0 0 1 0]", got)
	}
	for _, tc := range []struct {
		x    *Tensor
		want *Tensor
	}{
		{FromFloat32s(Shape{2, 3}, []float32{0, 1, 2, 10, 11, 12}), FromFloat32s(Shape{2, 2}, []float32{2, 0, 12, 10})},
		{floats(5, 6, 7), FromFloat32s(Shape{1, 2}, []float32{7, 5})},
	} {
		dims := []any{}
		for _, d := range tc.x.Shape() {
			dims = append(dims, d)
		}
		m := mlModel([]*onnx.ValueInfo{valueInfo("x", onnx.Float, dims...), valueInfo("i", onnx.Int64, 2)},
			node("ArrayFeatureExtractor", []string{"x", "i"}, []string{"z"}), "z")
		res, _ := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"x": tc.x.Shape(), "i": {2}}}, map[string]*Tensor{"x": tc.x, "i": IntsTensor(2, 0)})
		if d := Compare(res[0].Tensor, tc.want, 0, 0); !d.OK() {
			t.Errorf("ArrayFeatureExtractor of %v: %v %v", tc.x, res[0].Tensor, res[0].Tensor.Float32s())
		}
	}
}
