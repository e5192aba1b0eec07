package ir

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// TestGradThroughImportedOps differentiates a small float64 ONNX model
// written with the ONNX spellings import normalizes — Identity (an alias
// of a weight that is also used directly, so both uses accumulate into the
// one initializer), Unsqueeze, Squeeze, Flatten, a Where whose mask comes
// from the data, LayerNormalization, Gemm with transB, Gather, Concat,
// Split and Slice — and checks every initializer's gradient against
// central differences of the loss graph.
func TestGradThroughImportedOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	rnd := func(shape Shape, lo, hi float64) *Tensor { return randTensor(rng, Float64, shape, lo, hi) }
	inits := []*onnx.Tensor{
		initializer(t, "emb", rnd(Shape{7, 4}, -1, 1)),
		initializer(t, "w", rnd(Shape{4, 4}, -1, 1)),
		initializer(t, "ln_scale", rnd(Shape{4}, 0.5, 1.5)),
		initializer(t, "ln_bias", rnd(Shape{4}, -0.5, 0.5)),
		initializer(t, "head", rnd(Shape{3, 8}, -1, 1)),
		initializer(t, "head_bias", rnd(Shape{3}, -0.5, 0.5)),
	}
	nodes := []*onnx.Node{
		node("Gather", []string{"emb", "ids"}, []string{"e"}, intAttr("axis", 0)), // [2,3,4]
		node("Identity", []string{"w"}, []string{"w_alias"}),
		node("MatMul", []string{"e", "w"}, []string{"a"}),
		node("Transpose", []string{"w_alias"}, []string{"wt"}, intsAttr("perm", 1, 0)),
		node("MatMul", []string{"e", "wt"}, []string{"b"}),
		constNode(t, "zero", FromFloat64s(Shape{}, []float64{0})),
		node("Greater", []string{"a", "zero"}, []string{"mask"}),
		node("Where", []string{"mask", "a", "b"}, []string{"sel"}),
		node("LayerNormalization", []string{"sel", "ln_scale", "ln_bias"}, []string{"ln"}, intAttr("axis", -1)),
		constNode(t, "ax1", IntsTensor(1)),
		node("Unsqueeze", []string{"ln", "ax1"}, []string{"u"}), // [2,1,3,4]
		node("Squeeze", []string{"u", "ax1"}, []string{"sq"}),   // [2,3,4]
		constNode(t, "split", IntsTensor(1, 2)),
		node("Split", []string{"sq", "split"}, []string{"s0", "s1"}, intAttr("axis", 1)), // [2,1,4], [2,2,4]
		constNode(t, "starts", IntsTensor(1)),
		constNode(t, "ends", IntsTensor(2)),
		constNode(t, "axes", IntsTensor(1)),
		node("Slice", []string{"s1", "starts", "ends", "axes"}, []string{"s1b"}), // [2,1,4]
		node("Concat", []string{"s0", "s1b"}, []string{"c"}, intAttr("axis", 2)), // [2,1,8]
		node("Flatten", []string{"c"}, []string{"f"}, intAttr("axis", 1)),        // [2,8]
		node("Gemm", []string{"f", "head", "head_bias"}, []string{"y"}, intAttr("transB", 1)),
	}
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("ids", onnx.Int64, 2, 3)}, inits, nodes, "y")
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.Specialize(Bindings{})
	if err != nil {
		t.Fatal(err)
	}
	if w := g.Param("w"); w == nil || len(w.Uses) != 2 || len(w.Aliases) != 1 {
		t.Fatalf("w: %+v, want two uses and the alias w_alias", w)
	}
	in := map[string]*Tensor{"ids": FromInt64s(Shape{2, 3}, []int64{1, 6, 1, 0, 3, 5}), TargetsInput: rnd(Shape{2, 3}, -1, 1)}
	if res := checkTrainingGrad(t, g, in); len(res) != 1+len(inits) {
		t.Errorf("outputs %v, want the loss and %d gradients", slices.Sorted(maps.Keys(res)), len(inits))
	}
}

// TestGradThroughTrainingOps differentiates an ONNX model of the
// operators fine-tuning exports add: an Einsum linear layer, batch
// normalization in training mode, SoftmaxCrossEntropyLoss with weights
// and an ignored class, CumProd, ReduceProd and NegativeLogLikelihoodLoss,
// checking every initializer's gradient against central differences.
func TestGradThroughTrainingOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	rnd := func(shape Shape, lo, hi float64) *Tensor { return randTensor(rng, Float64, shape, lo, hi) }
	inits := []*onnx.Tensor{
		initializer(t, "w", rnd(Shape{5, 4}, -1, 1)),
		initializer(t, "bn_scale", rnd(Shape{3}, 0.5, 1.5)),
		initializer(t, "bn_bias", rnd(Shape{3}, -0.5, 0.5)),
		initializer(t, "class_weight", rnd(Shape{3}, 0.5, 1.5)),
		initializer(t, "p", rnd(Shape{2, 3, 4}, 0.5, 1.5)),
		initializer(t, "labels", FromInt64s(Shape{2, 5}, []int64{0, 2, 1, -1, 2, 1, 1, 0, 2, -1})),
		initializer(t, "classes", FromInt64s(Shape{2}, []int64{3, 1})),
		initializer(t, "axis", ScalarInt64(2)),
		initializer(t, "axes", IntsTensor(1)),
	}
	nodes := []*onnx.Node{
		node("Einsum", []string{"x", "w"}, []string{"h"}, stringAttr("equation", "bci,oi->bco")), // [2,3,5]
		constNode(t, "running_mean", FromFloat64s(Shape{3}, []float64{0, 0.1, -0.1})),
		constNode(t, "running_var", FromFloat64s(Shape{3}, []float64{1, 0.5, 2})),
		node("BatchNormalization", []string{"h", "bn_scale", "bn_bias", "running_mean", "running_var"}, []string{"bn"}, intAttr("training_mode", 1)),
		node("SoftmaxCrossEntropyLoss", []string{"bn", "labels", "class_weight"}, []string{"ce"}, intAttr("ignore_index", -1)),
		node("CumProd", []string{"p", "axis"}, []string{"cp"}),
		node("ReduceProd", []string{"cp", "axes"}, []string{"rp"}, intAttr("keepdims", 0)), // [2,4]
		node("NegativeLogLikelihoodLoss", []string{"rp", "classes"}, []string{"nll"}, stringAttr("reduction", "sum")),
	}
	m := buildModel(26, []*onnx.ValueInfo{valueInfo("x", onnx.Double, 2, 3, 4)}, inits, nodes, "ce", "nll")
	checkImportedGrad(t, m, map[string]*Tensor{"x": rnd(Shape{2, 3, 4}, -1, 1)}, 1e-6)
}
