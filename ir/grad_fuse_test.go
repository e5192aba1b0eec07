package ir

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// TestTrainingGraphFusesGelu checks that the GELU subgraphs of the test
// models are single ops in their training graphs (the erf form in the BERT
// and bench models, fused at import; the tanh form in the GPT-2 export,
// fused by TrainingGraph), that the attention's
// multiplications by 1 are gone, and that the fused loss graph computes
// the loss of the unfused model.
func TestTrainingGraphFusesGelu(t *testing.T) {
	root := sharedtest.Dir(t)
	for _, c := range []struct {
		path       string
		fn         UnaryFn
		count      int
		mulsByOne  bool
		noneLeft   string
		vocabInput string
	}{
		{"models/tiny_bert/model.onnx", Gelu, 2, false, "Erf", "tokens"},
		{"bench/bert_bench.onnx", Gelu, 4, false, "Erf", "tokens"},
		{"bench/gpt_bench.onnx", Gelu, 4, true, "Erf", "tokens"},
		{"models/exports/bert_like_op13.onnx", Gelu, 2, false, "Erf", "input_ids"},
		{"models/exports/gpt2_like_op13.onnx", GeluTanh, 2, false, "Tanh", "input_ids"},
	} {
		t.Run(filepath.Base(c.path), func(t *testing.T) {
			m, err := onnx.ReadFile(filepath.Join(root, c.path))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			model, err := NewModel(m)
			if err != nil {
				t.Fatal(err)
			}
			shapes := map[string]Shape{}
			inputs := map[string]*Tensor{}
			for _, in := range model.Inputs {
				shapes[in.Name] = Shape{2, 5}
				x := NewTensor(Int64, Shape{2, 5})
				for i := range x.Int64s() {
					x.Int64s()[i] = int64(i*13%50 + 1)
					if in.Name != c.vocabInput {
						x.Int64s()[i] = 1 // attention mask
					}
				}
				inputs[in.Name] = x
			}
			g, err := model.Specialize(Bindings{Shapes: shapes})
			if err != nil {
				t.Fatal(err)
			}
			spec := LossSpec{Kind: SoftmaxCrossEntropy, IgnoreIndex: -100}
			tg, err := TrainingGraph(g, spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			fused, left, mulsByOne := 0, 0, 0
			for _, n := range tg.Nodes {
				switch op := n.Op.(type) {
				case *Unary:
					if op.Fn == c.fn {
						fused++
					}
					if op.Name() == c.noneLeft {
						left++
					}
				case *Binary:
					if op.Fn == Mul && (isConstScalar(n.Inputs[0], 1) || isConstScalar(n.Inputs[1], 1)) {
						mulsByOne++
					}
				}
			}
			if fused != c.count || left != 0 || mulsByOne != 0 {
				t.Errorf("%d %s ops (want %d), %d %s left, %d multiplications by 1", fused, c.fn, c.count, left, c.noneLeft, mulsByOne)
			}
			if c.mulsByOne && g.OpCounts()["Mul"] == tg.OpCounts()["Mul"] {
				t.Error("the model's multiplications by 1 were not dropped")
			}

			// The loss of the fused graph against the unfused model's.
			logits, err := Interpret(g, inputs)
			if err != nil {
				t.Fatal(err)
			}
			out := logits[g.Outputs[0].Name]
			classes := out.Shape()[len(out.Shape())-1]
			targets := NewTensor(Int64, out.Shape()[:len(out.Shape())-1])
			for i := range targets.Int64s() {
				targets.Int64s()[i] = int64(i*7) % int64(classes)
			}
			want, err := EvalOp(&SoftmaxCELoss{IgnoreIndex: -100}, Convert(out, Float64), targets)
			if err != nil {
				t.Fatal(err)
			}
			lg, err := LossGraph(g, spec)
			if err != nil {
				t.Fatal(err)
			}
			inputs[TargetsInput] = targets
			got, err := Interpret(lg, inputs)
			if err != nil {
				t.Fatal(err)
			}
			l, w := got[LossOutput].Float64At(0), want[0].Float64At(0)
			if math.Abs(l-w) > 1e-6*math.Abs(w) {
				t.Errorf("fused loss %.9g, the model's %.9g", l, w)
			}
		})
	}
}

// TestFuseGeluTanhVariants checks the spellings the tanh-GELU fusion
// accepts and that it leaves a subgraph alone when an intermediate has
// another reader or a constant is off.
func TestFuseGeluTanhVariants(t *testing.T) {
	scalar := func(b *Builder, v float64) *Value { return b.Const(FromFloat32s(Shape{}, []float32{float32(v)})) }
	// inner builds 1 + tanh(√(2/π)·(x + 0.044715·x³)), with the cube's
	// coefficient c and the tanh output reported for reuse.
	inner := func(b *Builder, x *Value, c float64) (onePlus, th *Value) {
		cube := b.Op1(&Binary{Fn: Pow}, x, b.Const(ScalarInt64(3)))
		sum := b.Op1(&Binary{Fn: Add}, x, b.Op1(&Binary{Fn: Mul}, scalar(b, c), cube))
		th = b.Op1(&Unary{Fn: Tanh}, b.Op1(&Binary{Fn: Mul}, sum, scalar(b, math.Sqrt(2/math.Pi))))
		return b.Op1(&Binary{Fn: Add}, scalar(b, 1), th), th
	}
	for _, c := range []struct {
		name  string
		build func(b *Builder, x *Value) (y, extra *Value)
		fuse  bool
	}{
		{"half-first", func(b *Builder, x *Value) (*Value, *Value) {
			o, _ := inner(b, x, 0.044715)
			return b.Op1(&Binary{Fn: Mul}, b.Op1(&Binary{Fn: Mul}, x, scalar(b, 0.5)), o), nil
		}, true},
		{"half-last", func(b *Builder, x *Value) (*Value, *Value) {
			o, _ := inner(b, x, 0.044715)
			return b.Op1(&Binary{Fn: Mul}, scalar(b, 0.5), b.Op1(&Binary{Fn: Mul}, o, x)), nil
		}, true},
		{"tanh-read-elsewhere", func(b *Builder, x *Value) (*Value, *Value) {
			o, th := inner(b, x, 0.044715)
			return b.Op1(&Binary{Fn: Mul}, b.Op1(&Binary{Fn: Mul}, x, scalar(b, 0.5)), o), th
		}, false},
		{"wrong-constant", func(b *Builder, x *Value) (*Value, *Value) {
			o, _ := inner(b, x, 0.05)
			return b.Op1(&Binary{Fn: Mul}, b.Op1(&Binary{Fn: Mul}, x, scalar(b, 0.5)), o), nil
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := NewBuilder(c.name)
			w := b.Param("w", FromFloat32s(Shape{2, 3}, []float32{-2, -0.5, 0, 0.3, 1, 2.5}))
			y, extra := c.build(b, b.Op1(&Binary{Fn: Add}, w, scalar(b, 0.1)))
			b.Output("y", y)
			if extra != nil {
				b.Output("extra", extra)
			}
			g, err := b.Graph()
			if err != nil {
				t.Fatal(err)
			}
			lg, err := LossGraph(g, LossSpec{Kind: MeanSquaredError})
			if err != nil {
				t.Fatal(err)
			}
			if fused := lg.OpCounts()["GeluTanh"] == 1; fused != c.fuse {
				t.Fatalf("fused %v, want %v:\n%v", fused, c.fuse, lg)
			}
			want, err := Interpret(g, nil)
			if err != nil {
				t.Fatal(err)
			}
			zero := NewTensor(Float32, Shape{2, 3})
			got, err := Interpret(lg, map[string]*Tensor{TargetsInput: zero})
			if err != nil {
				t.Fatal(err)
			}
			var mse float64
			for i := range 6 {
				v := want["y"].Float64At(i)
				mse += v * v / 6
			}
			if l := got[LossOutput].Float64At(0); math.Abs(l-mse) > 1e-6*mse {
				t.Errorf("loss %.9g, want %.9g", l, mse)
			}
		})
	}
}
