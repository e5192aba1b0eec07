package ir

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// col2imWindows: the first three are checked against onnxruntime, which
// (1.30) disagrees with ONNX's reference definition when a window of
// three or more spatial axes is dilated; the others only against the
// definition's consequences (adjointness, finite differences).
var col2imWindows = []BlockWindow{
	{Image: []int{5, 5}, Block: []int{2, 3}, Dilations: []int{1, 1}, Pads: []int{0, 0, 0, 0}, Strides: []int{1, 1}},
	{Image: []int{6, 5}, Block: []int{2, 2}, Dilations: []int{2, 1}, Pads: []int{1, 0, 1, 2}, Strides: []int{2, 3}},
	{Image: []int{4, 3, 5}, Block: []int{2, 1, 3}, Dilations: []int{1, 1, 1}, Pads: []int{1, 0, 0, 0, 1, 1}, Strides: []int{1, 2, 1}},
	{Image: []int{4, 3, 5}, Block: []int{2, 1, 3}, Dilations: []int{1, 1, 2}, Pads: []int{1, 0, 0, 0, 1, 1}, Strides: []int{1, 2, 1}},
	{Image: []int{7}, Block: []int{3}, Dilations: []int{2}, Pads: []int{2, 1}, Strides: []int{2}},
}

func TestCol2ImMatchesOnnxruntime(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 13))
	for _, w := range col2imWindows[:3] {
		counts, err := w.check()
		if err != nil {
			t.Fatal(err)
		}
		shape, _ := w.columnsShape(2, 3, counts)
		// Multiples of 1/8 sum exactly in any order.
		x := NewTensor(Float32, shape)
		for i := range x.Float32s() {
			x.Float32s()[i] = float32(rng.IntN(33)-16) / 8
		}
		checkAgainstORT(t, buildModel(18, []*onnx.ValueInfo{declareInput("x", x), declareInput("image", IntsTensor(w.Image...)), declareInput("block", IntsTensor(w.Block...))}, nil,
			[]*onnx.Node{node("Col2Im", []string{"x", "image", "block"}, []string{"y"}, intsAttr("dilations", toInt64s(w.Dilations)...),
				intsAttr("pads", toInt64s(w.Pads)...), intsAttr("strides", toInt64s(w.Strides)...))}, "y"), map[string]*Tensor{"x": x, "image": IntsTensor(w.Image...), "block": IntsTensor(w.Block...)}, 1e-6, 0)
	}
}

// TestCol2ImIsAdjointOfIm2Col: ⟨Im2Col(a), b⟩ = ⟨a, Col2Im(b)⟩ for random
// a and b, which pins Im2Col down given Col2Im (checked against
// onnxruntime above).
func TestCol2ImIsAdjointOfIm2Col(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 15))
	for _, w := range col2imWindows {
		counts, err := w.check()
		if err != nil {
			t.Fatal(err)
		}
		colShape, _ := w.columnsShape(2, 3, counts)
		a := randTensor(rng, Float64, append(Shape{2, 3}, w.Image...), -1, 1)
		b := randTensor(rng, Float64, colShape, -1, 1)
		ia, err := EvalOp(&Im2Col{BlockWindow: w}, a)
		if err != nil {
			t.Fatal(err)
		}
		cb, err := EvalOp(&Col2Im{BlockWindow: w}, b)
		if err != nil {
			t.Fatal(err)
		}
		dot := func(x, y *Tensor) float64 {
			s := 0.0
			for i, v := range x.Float64s() {
				s += v * y.Float64s()[i]
			}
			return s
		}
		if l, r := dot(ia[0], b), dot(a, cb[0]); math.Abs(l-r) > 1e-12*(1+math.Abs(l)) {
			t.Errorf("%+v: ⟨Im2Col(a), b⟩ = %v, ⟨a, Col2Im(b)⟩ = %v", w, l, r)
		}
	}
}

func TestCol2ImGradFiniteDifferences(t *testing.T) {
	for _, w := range col2imWindows[1:] {
		counts, _ := w.check()
		colShape, _ := w.columnsShape(1, 2, counts)
		runGradCase(t, gradCase{name: "Col2Im", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Col2Im{BlockWindow: w}, h.param(colShape, -1, 1))}
		}})
		runGradCase(t, gradCase{name: "Im2Col", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&Im2Col{BlockWindow: w}, h.param(append(Shape{1, 2}, w.Image...), -1, 1))}
		}})
	}
}

// TestCol2ImIntegers: integer columns sum exactly.
func TestCol2ImIntegers(t *testing.T) {
	w := BlockWindow{Image: []int{3}, Block: []int{2}, Dilations: []int{1}, Pads: []int{0, 0}, Strides: []int{1}}
	got, err := EvalOp(&Col2Im{BlockWindow: w}, FromInt64s(Shape{1, 2, 2}, []int64{1 << 40, 2, 3, 4}))
	if err != nil {
		t.Fatal(err)
	}
	if g := got[0].Int64s(); g[0] != 1<<40 || g[1] != 5 || g[2] != 4 {
		t.Errorf("got %v, want [2^40 5 4]", g)
	}
}

func TestCol2ImErrors(t *testing.T) {
	w := BlockWindow{Image: []int{4, 4}, Block: []int{2, 2}, Dilations: []int{1, 1}, Pads: []int{0, 0, 0, 0}, Strides: []int{1, 1}}
	bad := func(f func(w *BlockWindow)) BlockWindow {
		c := BlockWindow{Image: append([]int{}, w.Image...), Block: append([]int{}, w.Block...), Dilations: append([]int{}, w.Dilations...), Pads: append([]int{}, w.Pads...), Strides: append([]int{}, w.Strides...)}
		f(&c)
		return c
	}
	for _, tc := range []struct {
		w    BlockWindow
		in   Shape
		want string
	}{
		{w, Shape{1, 4, 8}, "input [1,4,8], want [1,4,9] columns"},
		{w, Shape{1, 6, 9}, "6 rows are not a multiple of the block size 4"},
		{w, Shape{4, 9}, "want rank 3"},
		{bad(func(w *BlockWindow) { w.Block[0] = 5 }), Shape{1, 10, 3}, "a block spanning 5 does not fit the padded image of 4"},
		{bad(func(w *BlockWindow) { w.Strides[1] = 0 }), Shape{1, 4, 9}, "want positive"},
		{bad(func(w *BlockWindow) { w.Pads = w.Pads[:3] }), Shape{1, 4, 9}, "want 2 of each"},
		{bad(func(w *BlockWindow) { w.Dilations[0] = 1 << 33; w.Block[0] = 1 << 30 }), Shape{1, 4, 9}, "spans more than any tensor"},
	} {
		_, err := (&Col2Im{BlockWindow: tc.w}).Infer([]Type{{Float32, tc.in}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v on %v: got %v, want an error containing %q", tc.w, tc.in, err, tc.want)
		}
	}
	m := buildModel(18, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 1, 4, 9)}, []*onnx.Tensor{initializer(t, "i", IntsTensor(4, 4)), initializer(t, "b", IntsTensor(2, 2))},
		[]*onnx.Node{node("Col2Im", []string{"x", "i", "b"}, []string{"y"}, intsAttr("strides", 1, 1, 1))}, "y")
	if _, err := FromONNX(m, nil); err == nil || !strings.Contains(err.Error(), "attribute strides has 3 elements, want 2") {
		t.Errorf("bad strides: got %v", err)
	}
}
