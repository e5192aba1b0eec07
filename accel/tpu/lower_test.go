package tpu

import (
	"fmt"
	"github.com/dstune/dstune/internal/sharedtest/models"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
)

// args lays out a program's arguments from inputs and the graph's
// parameter tensors.
func graphArgs(t testing.TB, p *Program, g *ir.Graph, inputs map[string]*ir.Tensor) []*ir.Tensor {
	t.Helper()
	var args []*ir.Tensor
	for _, a := range p.Args {
		switch a.Kind {
		case ArgInput:
			x, ok := inputs[a.Name]
			if !ok {
				t.Fatalf("no input %q", a.Name)
			}
			args = append(args, x)
		case ArgParam:
			args = append(args, g.Param(a.Name).Tensor)
		default:
			t.Fatalf("argument %q of kind %d in an inference program", a.Name, a.Kind)
		}
	}
	return args
}

// TestModelsMatchPyTorch lowers tiny_gpt and tiny_bert for both of their
// test data sets, evaluates the StableHLO and compares the logits with
// PyTorch's within 1e-4 relative (1e-5 absolute).
func TestModelsMatchPyTorch(t *testing.T) {
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		for _, set := range []string{"test_data_set_0", "test_data_set_1"} {
			t.Run(name+"/"+set, func(t *testing.T) {
				dir := sharedtest.Path(t, "models", name)
				tokens := models.ReadTensor(t, filepath.Join(dir, set, "input_0.pb"))
				want := models.ReadTensor(t, filepath.Join(dir, set, "output_0.pb"))
				g := models.Specialize(t, "models/"+name+"/model.onnx", map[string]ir.Shape{"tokens": tokens.Shape()})
				p, err := LowerGraph(g)
				if err != nil {
					t.Fatal(err)
				}
				out, err := runProgram(p, graphArgs(t, p, g, map[string]*ir.Tensor{"tokens": tokens}))
				if err != nil {
					t.Fatal(err)
				}
				if d := ir.Compare(out[0], want, 1e-4, 1e-5); !d.OK() {
					t.Fatalf("logits: %v", d)
				}
			})
		}
	}
}

// trainingGraph is tiny_gpt's or tiny_bert's training graph for its
// test_data_set_0 batch, with the targets the model README defines.
func trainingGraph(t testing.TB, name string) (*ir.Graph, map[string]*ir.Tensor) {
	t.Helper()
	dir := sharedtest.Path(t, "models", name)
	tokens := models.ReadTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	g := models.Specialize(t, "models/"+name+"/model.onnx", map[string]ir.Shape{"tokens": tokens.Shape()})
	tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var targets *ir.Tensor
	if name == "tiny_gpt" {
		// Next tokens; the last position has none.
		tok := tokens.Int64s()
		b, s := tokens.Shape()[0], tokens.Shape()[1]
		next := make([]int64, len(tok))
		for i := range b {
			for j := range s {
				next[i*s+j] = -100
				if j+1 < s {
					next[i*s+j] = tok[i*s+j+1]
				}
			}
		}
		targets = ir.FromInt64s(ir.Shape{b, s}, next)
	} else {
		targets = models.ReadTensor(t, filepath.Join(dir, "grads", "labels.pb"))
	}
	return tg, map[string]*ir.Tensor{"tokens": tokens, ir.TargetsInput: targets}
}

// TestTrainingGraphsMatchInterpreter lowers the training graphs (loss and
// the gradient of every parameter: the gradient ops, the fused loss and
// its backward) and compares them with ir.Interpret, which package ir
// checks against PyTorch's gradients.
func TestTrainingGraphsMatchInterpreter(t *testing.T) {
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		t.Run(name, func(t *testing.T) {
			tg, inputs := trainingGraph(t, name)
			want, err := ir.Interpret(tg, inputs)
			if err != nil {
				t.Fatal(err)
			}
			p, err := LowerGraph(tg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := runProgram(p, graphArgs(t, p, tg, inputs))
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range p.Results {
				if d := ir.Compare(got[i], want[r.Name], 1e-4, 1e-6); !d.OK() {
					t.Errorf("%s: %v", r.Name, d)
				}
			}
			if len(p.Results) < 20 {
				t.Fatalf("only %d results", len(p.Results))
			}
		})
	}
}

// TestSoftmaxCELossDenominatorLowered: the lowered SoftmaxCELoss with its
// denominator input (D other than the count of targets, equal to it, and
// 0) gives the reference's loss and dlogits on the evaluator, and so does
// tiny_gpt's training graph made for gradient accumulation
// (ir.WithLossDenominator) on every gradient.
func TestSoftmaxCELossDenominatorLowered(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	logits := ir.NewTensor(ir.Float32, ir.Shape{2, 5, 7})
	for i := range logits.Float32s() {
		logits.Float32s()[i] = float32(rng.Float64()*6 - 3)
	}
	targets := ir.FromInt64s(ir.Shape{2, 5}, []int64{3, -100, 0, 6, 2, -100, -100, 1, 5, 4})
	b := ir.NewBuilder("ce")
	out := b.Op(&ir.SoftmaxCELoss{IgnoreIndex: -100}, b.Input("logits", ir.Float32, logits.Shape()),
		b.Input("targets", ir.Int64, targets.Shape()), b.Input("d", ir.Float32, ir.Shape{}))
	b.Output("loss", out[0])
	b.Output("dlogits", out[1])
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	p, err := LowerGraph(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []float32{23, 7, 0} {
		in := map[string]*ir.Tensor{"logits": logits, "targets": targets, "d": ir.ScalarFloat32(d)}
		want, err := ir.Interpret(g, in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := runProgram(p, graphArgs(t, p, g, in))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range p.Results {
			if cmp := ir.Compare(got[i], want[r.Name], 1e-6, 1e-7); !cmp.OK() {
				t.Errorf("D = %v: %s: %v", d, r.Name, cmp)
			}
			if d == 0 && slices.ContainsFunc(got[i].Float32s(), func(v float32) bool { return v != 0 }) {
				t.Errorf("D = 0: %s is not 0", r.Name)
			}
		}
	}

	tg, inputs := trainingGraph(t, "tiny_gpt")
	ag, ok, err := ir.WithLossDenominator(tg)
	if err != nil || !ok {
		t.Fatalf("WithLossDenominator: %v, %v", ok, err)
	}
	n := 0
	for _, v := range inputs[ir.TargetsInput].Int64s() {
		if v != -100 {
			n++
		}
	}
	inputs[ir.LossDenominatorInput] = ir.ScalarFloat32(float32(3 * n))
	want, err := ir.Interpret(ag, inputs)
	if err != nil {
		t.Fatal(err)
	}
	p, err = LowerGraph(ag)
	if err != nil {
		t.Fatal(err)
	}
	got, err := runProgram(p, graphArgs(t, p, ag, inputs))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range p.Results {
		if d := ir.Compare(got[i], want[r.Name], 1e-4, 1e-6/3); !d.OK() {
			t.Errorf("tiny_gpt %s: %v", r.Name, d)
		}
	}
	if len(p.Results) < 20 {
		t.Fatalf("only %d results", len(p.Results))
	}
}

// TestEmitterRejectsIllTyped checks that type errors are caught when the
// op is emitted, not by a plugin later.
func TestEmitterRejectsIllTyped(t *testing.T) {
	f32 := func(dims ...int) ir.Type { return ir.Type{DType: ir.Float32, Shape: dims} }
	cases := map[string]func(f *fn){
		"add of different shapes": func(f *fn) { f.add(f.splat(f32(2), 1), f.splat(f32(3), 1)) },
		"add of different dtypes": func(f *fn) {
			f.add(f.splat(f32(2), 1), f.splat(ir.Type{DType: ir.Int32, Shape: ir.Shape{2}}, 1))
		},
		"reshape to another size":   func(f *fn) { f.reshape(f.splat(f32(2, 3), 1), ir.Shape{5}) },
		"broadcast a non-unit axis": func(f *fn) { f.broadcastInDim(f.splat(f32(3), 1), ir.Shape{2, 4}, []int{1}) },
		"dot with unequal contraction": func(f *fn) {
			f.dotGeneral(f.splat(f32(2, 3), 1), f.splat(f32(4, 5), 1), nil, nil, []int{1}, []int{0})
		},
		"select with a float predicate": func(f *fn) { f.selectOp(f.splat(f32(2), 1), f.splat(f32(2), 1), f.splat(f32(2), 1)) },
		"slice past the end":            func(f *fn) { f.slice(f.splat(f32(4), 1), []int{2}, []int{5}, []int{1}) },
		"reduce over a missing axis":    func(f *fn) { f.reduce(f.splat(f32(4), 1), f.scalarConst(ir.Float32, 0), reduceAdd, []int{1}) },
		"if branches of other types": func(f *fn) {
			f.ifOp(f.scalarConst(ir.Bool, 1), []ir.Type{f32()}, func(r *fn) []value { return []value{r.scalarConst(ir.Float32, 1)} },
				func(r *fn) []value { return []value{r.scalarConst(ir.Int32, 1)} })
		},
	}
	for name, emit := range cases {
		f := newFn("")
		emit(f)
		if f.Err() == nil {
			t.Errorf("%s: no error", name)
		}
	}
	f := newFn("")
	f.add(f.splat(f32(2), 1), f.splat(f32(2), 1))
	if f.Err() != nil {
		t.Errorf("a well-typed add: %v", f.Err())
	}
}

// TestConstantsKeepEveryBit round-trips random constants of every dtype
// through the emitted text and the evaluator.
func TestConstantsKeepEveryBit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dt := range []ir.DType{ir.Float32, ir.Float64, ir.Float16, ir.BFloat16, ir.Int8, ir.Int16, ir.Int32, ir.Int64, ir.Uint8, ir.Uint16, ir.Uint32, ir.Bool} {
		x := ir.NewTensor(dt, ir.Shape{3, 5})
		b := x.Bytes()
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		switch dt {
		case ir.Bool:
			for i := range b {
				b[i] &= 1
			}
		case ir.Int64: // the evaluator holds integers exactly below 2⁵³
			for i := 6; i < len(b); i += 8 {
				b[i], b[i+1] = b[i]&0x0f, 0
			}
		}
		if dt.IsFloat() { // no NaNs: they do not compare equal
			x = ir.Convert(ir.Convert(x, ir.Float64), dt)
			for i := range x.Len() {
				if v := x.Float64At(i); v != v {
					x = ir.Convert(ir.FromFloat64s(x.Shape(), make([]float64, x.Len())), dt)
					break
				}
			}
		}
		f := newFn("    ")
		c := f.constant(x)
		text := module(nil, f, []value{c})
		got, err := runProgram(&Program{Text: text}, nil)
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		if !strings.EqualFold(fmt.Sprint(got[0].Bytes()), fmt.Sprint(x.Bytes())) {
			t.Errorf("%s: constant changed:\n got %v\nwant %v", dt, got[0].Bytes(), x.Bytes())
		}
	}
}

// TestTopKNaNOrder: the lowered TopK ranks a NaN above every number, ties
// to the lower index, as the reference does (a float comparison alone
// would leave NaNs anywhere), checked on the HLO evaluator.
func TestTopKNaNOrder(t *testing.T) {
	nan := float32(math.NaN())
	x := ir.FromFloat32s(ir.Shape{2, 6}, []float32{1, nan, 3, 3, nan, -2, nan, 0, 5, -1, 5, nan})
	for _, largest := range []bool{true, false} {
		b := ir.NewBuilder("topk")
		in := b.Input("x", ir.Float32, x.Shape())
		outs := b.Op(&ir.TopK{Axis: 1, K: 5, Largest: largest}, in)
		b.Output("values", outs[0])
		b.Output("indices", outs[1])
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		want, err := ir.Interpret(g, map[string]*ir.Tensor{"x": x})
		if err != nil {
			t.Fatal(err)
		}
		p, err := LowerGraph(g)
		if err != nil {
			t.Fatal(err)
		}
		got, err := runProgram(p, graphArgs(t, p, g, map[string]*ir.Tensor{"x": x}))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range p.Results {
			if r.Name == "indices" && !slices.Equal(got[i].Int64s(), want["indices"].Int64s()) {
				t.Errorf("largest %v: indices %v, the reference's %v", largest, got[i].Int64s(), want["indices"].Int64s())
			}
		}
	}
}
