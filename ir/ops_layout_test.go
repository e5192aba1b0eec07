package ir

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// tileByModulo is Tile's definition: out[i] = x[i mod n] on every axis.
func tileByModulo(x *Tensor, repeats []int) []float64 {
	out := make(Shape, len(x.shape))
	for d, n := range x.shape {
		out[d] = n * repeats[d]
	}
	xs := x.shape.Strides()
	res := make([]float64, out.Size())
	pos := make([]int, len(out))
	for i := range res {
		unflatten(i, out, pos)
		src := 0
		for d, p := range pos {
			src += (p % x.shape[d]) * xs[d]
		}
		res[i] = x.Float64At(src)
	}
	return res
}

func TestTile(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		shape   Shape
		repeats []int
	}{
		{Shape{3}, []int{4}},
		{Shape{2, 3}, []int{1, 2}},
		{Shape{2, 1, 3}, []int{3, 2, 1}},
		{Shape{2, 3}, []int{0, 2}},
		{Shape{1, 2, 2, 2}, []int{2, 1, 3, 1}},
	} {
		x := randTensor(rng, Float64, tc.shape, -1, 1)
		m := buildModel(13, []*onnx.ValueInfo{valueInfo("x", onnx.Double, anyDims(tc.shape)...)}, []*onnx.Tensor{initializer(t, "r", IntsTensor(tc.repeats...))},
			[]*onnx.Node{node("Tile", []string{"x", "r"}, []string{"y"})}, "y")
		out, g := runModel(t, m, map[string]*Tensor{"x": x})
		if got, want := values(out["y"]), tileByModulo(x, tc.repeats); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Tile %v by %v: got %v, want %v", tc.shape, tc.repeats, got, want)
		}
		for _, n := range g.Nodes {
			switch n.Op.(type) {
			case *Reshape, *Expand:
			default:
				t.Errorf("Tile imports as %s, want Reshape and Expand only", n.Op.Name())
			}
		}
	}
}

// TestTileOpset1: Tile-1 repeats along one axis given as an input.
func TestTileOpset1(t *testing.T) {
	x := FromFloat32s(Shape{2, 2}, []float32{1, 2, 3, 4})
	m := buildModel(1, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 2)},
		[]*onnx.Tensor{initializer(t, "tiles", ScalarInt64(3)), initializer(t, "axis", ScalarInt64(1))},
		[]*onnx.Node{node("Tile", []string{"x", "tiles", "axis"}, []string{"y"})}, "y")
	out, _ := runModel(t, m, map[string]*Tensor{"x": x})
	if got, want := values(out["y"]), tileByModulo(x, []int{1, 3}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestTileGradient: Tile's composition differentiates to the sum over the
// copies.
func TestTileGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	m := buildModel(13, nil, []*onnx.Tensor{initializer(t, "w", randTensor(rng, Float64, Shape{2, 3}, -1, 1)), initializer(t, "r", IntsTensor(3, 2))},
		[]*onnx.Node{node("Tile", []string{"w", "r"}, []string{"y"})}, "y")
	checkImportedGrad(t, m, nil, 1e-6)
}

func TestLayoutMatchesOnnxruntime(t *testing.T) {
	x := NewTensor(Float32, Shape{2, 8, 2, 4})
	for i := range x.Float32s() {
		x.Float32s()[i] = float32(i)
	}
	xi := Convert(x, Int64)
	in := func(x *Tensor) []*onnx.ValueInfo { return []*onnx.ValueInfo{declareInput("x", x)} }
	for _, tc := range []struct {
		name   string
		x      *Tensor
		node   *onnx.Node
		inputs map[string]*Tensor
	}{
		{"DepthToSpace/DCR", x, node("DepthToSpace", []string{"x"}, []string{"y"}, intAttr("blocksize", 2)), nil},
		{"DepthToSpace/CRD", Convert(x, Float64), node("DepthToSpace", []string{"x"}, []string{"y"}, intAttr("blocksize", 2), stringAttr("mode", "CRD")), nil},
		{"SpaceToDepth", x, node("SpaceToDepth", []string{"x"}, []string{"y"}, intAttr("blocksize", 2)), nil},
		{"Tile", xi, node("Tile", []string{"x", "r"}, []string{"y"}), map[string]*Tensor{"r": IntsTensor(2, 1, 3, 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inputs := map[string]*Tensor{"x": tc.x}
			infos := in(tc.x)
			for name, v := range tc.inputs {
				inputs[name] = v
				infos = append(infos, declareInput(name, v))
			}
			checkAgainstORT(t, buildModel(13, infos, nil, []*onnx.Node{tc.node}, "y"), inputs, 0, 0)
		})
	}
}

// TestDepthToSpaceInvertsSpaceToDepth: DCR DepthToSpace undoes
// SpaceToDepth.
func TestDepthToSpaceInvertsSpaceToDepth(t *testing.T) {
	x := NewTensor(Float32, Shape{2, 3, 6, 4})
	for i := range x.Float32s() {
		x.Float32s()[i] = float32(i)
	}
	m := buildModel(13, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3, 6, 4)}, nil, []*onnx.Node{
		node("SpaceToDepth", []string{"x"}, []string{"s"}, intAttr("blocksize", 2)),
		node("DepthToSpace", []string{"s"}, []string{"y"}, intAttr("blocksize", 2)),
	}, "y", "s")
	out, _ := runModel(t, m, map[string]*Tensor{"x": x})
	if !out["s"].Shape().Equal(Shape{2, 12, 3, 2}) {
		t.Errorf("SpaceToDepth gives %v, want [2,12,3,2]", out["s"].Shape())
	}
	if d := Compare(out["y"], x, 0, 0); !d.OK() {
		t.Errorf("round trip: %v", d)
	}
}

func TestLayoutImportErrors(t *testing.T) {
	x := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 1, 8, 2, 3)}
	one := func(n *onnx.Node, inits ...*onnx.Tensor) *onnx.Model {
		return buildModel(13, x, inits, []*onnx.Node{n}, "y")
	}
	for _, tc := range []struct {
		name  string
		model *onnx.Model
		want  string
	}{
		{"no blocksize", one(node("DepthToSpace", []string{"x"}, []string{"y"})), "attribute blocksize is required"},
		{"zero blocksize", one(node("DepthToSpace", []string{"x"}, []string{"y"}, intAttr("blocksize", 0))), "blocksize 0, want a positive size"},
		{"huge blocksize", one(node("SpaceToDepth", []string{"x"}, []string{"y"}, intAttr("blocksize", 1<<40))), "blocksize 1099511627776 is beyond any tensor's size"},
		{"channels", one(node("DepthToSpace", []string{"x"}, []string{"y"}, intAttr("blocksize", 3))), "8 channels do not split into blocks of 3×3"},
		{"spatial", one(node("SpaceToDepth", []string{"x"}, []string{"y"}, intAttr("blocksize", 2))), "spatial size 2×3 does not split into blocks of 2×2"},
		{"mode", one(node("DepthToSpace", []string{"x"}, []string{"y"}, intAttr("blocksize", 2), stringAttr("mode", "RCD"))), `DepthToSpace mode "RCD", want DCR or CRD`},
		{"repeats length", one(node("Tile", []string{"x", "r"}, []string{"y"}), initializer(t, "r", IntsTensor(1, 2))), "2 repeats for rank 4"},
		{"negative repeats", one(node("Tile", []string{"x", "r"}, []string{"y"}), initializer(t, "r", IntsTensor(1, -2, 1, 1))), "-2 for axis 1"},
		{"huge repeats", one(node("Tile", []string{"x", "r"}, []string{"y"}), initializer(t, "r", IntsTensor(1<<30, 1<<30, 1, 1))), "exceed the 16384 MiB limit"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantImportError(t, tc.model, nil, tc.want) })
	}
}
