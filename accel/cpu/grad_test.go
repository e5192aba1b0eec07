package cpu

import (
	"bytes"
	"fmt"
	"github.com/dstune/dstune/internal/sharedtest/models"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
)

// tinyTraining is a tiny model's training graph on its first data set,
// with PyTorch's loss and gradients (models/README.md).
type tinyTraining struct {
	graph  *ir.Graph
	inputs []*ir.Tensor // tokens, targets
	loss   float64
	grads  map[string]*ir.Tensor
}

func loadTinyTraining(t testing.TB, name string) tinyTraining {
	t.Helper()
	dir := sharedtest.Path(t, "models", name)
	model := models.Read(t, filepath.Join(dir, "model.onnx"))
	tokens := models.ReadTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	g, err := model.Specialize(ir.Bindings{Shapes: map[string]ir.Shape{"tokens": tokens.Shape()}})
	if err != nil {
		t.Fatal(err)
	}
	labels := models.ReadTensor(t, filepath.Join(dir, "grads", "labels.pb"))
	targets := labels
	if name == "tiny_gpt" {
		// Next-token targets, the last position ignored.
		b, s := tokens.Shape()[0], tokens.Shape()[1]
		targets = ir.NewTensor(ir.Int64, ir.Shape{b, s})
		for i := range b {
			for j := range s {
				v := int64(-100)
				if j < s-1 {
					v = labels.Int64At(i*(s-1) + j)
				}
				targets.Int64s()[i*s+j] = v
			}
		}
	}
	tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(dir, "grads", "loss.txt"))
	if err != nil {
		t.Fatal(err)
	}
	loss, err := strconv.ParseFloat(strings.TrimSpace(strings.SplitN(string(text), "\n", 2)[0]), 64)
	if err != nil {
		t.Fatal(err)
	}
	tt := tinyTraining{graph: tg, inputs: []*ir.Tensor{tokens, targets}, loss: loss, grads: map[string]*ir.Tensor{}}
	for _, p := range g.Params {
		tt.grads[p.Name] = models.ReadTensor(t, filepath.Join(dir, "grads", "grad_"+p.Name+".pb"))
	}
	return tt
}

// TestTrainingStepMatchesPyTorch runs the training graphs of tiny_gpt and
// tiny_bert on the CPU, on every ISA and on 1, 2 and 3 threads: the loss
// matches PyTorch's within 1e-5, every gradient element within 1e-4
// relative (absolute floor 1e-6 of the tensor's largest magnitude), and
// every thread count and repeated run gives the same bits.
func TestTrainingStepMatchesPyTorch(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		for _, name := range []string{"tiny_gpt", "tiny_bert"} {
			t.Run(name, func(t *testing.T) {
				tt := loadTinyTraining(t, name)
				var first [][]byte
				for _, threads := range []int{1, 2, 3} {
					exe, err := Compile(tt.graph, accel.Options{Threads: threads})
					if err != nil {
						t.Fatal(err)
					}
					for run := range 2 {
						out, err := exe.Run(tt.inputs)
						if err != nil {
							t.Fatal(err)
						}
						if first == nil {
							for _, o := range out {
								first = append(first, bytes.Clone(o.Bytes()))
							}
							checkAgainstPyTorch(t, tt, out)
							continue
						}
						for i, o := range out {
							if !bytes.Equal(o.Bytes(), first[i]) {
								t.Errorf("threads %d run %d: output %q differs from the first run's bits", threads, run, tt.graph.Outputs[i].Name)
							}
						}
					}
				}
			})
		}
	})
}

func checkAgainstPyTorch(t *testing.T, tt tinyTraining, out []*ir.Tensor) {
	t.Helper()
	worst, worstName := 0.0, ""
	for i, o := range tt.graph.Outputs {
		if o.Name == ir.LossOutput {
			if l := out[i].Float64At(0); math.Abs(l-tt.loss) > 1e-5 {
				t.Errorf("loss %.9g, PyTorch %.9g", l, tt.loss)
			}
			continue
		}
		want := tt.grads[strings.TrimPrefix(o.Name, ir.GradPrefix)]
		scale := 0.0
		for j := range want.Len() {
			scale = math.Max(scale, math.Abs(want.Float64At(j)))
		}
		d := ir.Compare(out[i], want, 1e-4, 1e-6*scale)
		if !d.OK() {
			t.Errorf("%s: %v (largest reference magnitude %.3g)", o.Name, d, scale)
		}
		if r := d.MaxAbs / scale; r > worst {
			worst, worstName = r, o.Name
		}
	}
	if len(tt.graph.Outputs) != len(tt.grads)+1 {
		t.Errorf("%d outputs for %d parameters", len(tt.graph.Outputs), len(tt.grads))
	}
	t.Logf("worst max|Δ|/max|ref| %.2e (%s)", worst, worstName)
}

// TestTrainingStepDoesNotAllocate: a compiled tiny_gpt training step runs
// without allocating.
func TestTrainingStepDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items: package kernels' pooled tasks are reallocated")
	}
	tt := loadTinyTraining(t, "tiny_gpt")
	exe, err := Compile(tt.graph, accel.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exe.Run(tt.inputs); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(5, func() {
		if _, err := exe.Run(tt.inputs); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		for _, s := range exe.steps {
			if m := testing.AllocsPerRun(2, func() { _ = s.k.run() }); m != 0 {
				t.Logf("%s (%T) allocates %v", s.node, s.k, m)
			}
		}
		t.Errorf("a training step allocates %v times, want 0", n)
	}
}

// TestExportTrainingMatchesReference differentiates every PyTorch export
// (GPT-2 and BERT at opset 13 with LayerNorm spelled out in ReduceMean,
// Pow, Sqrt, ...; an MLP with LogSoftmax; a CNN with Conv and pooling;
// the edge cases: a float16 weight, an int8 one, an If subgraph) with
// respect to all its parameters, and compares the CPU executor with the
// reference interpreter.
func TestExportTrainingMatchesReference(t *testing.T) {
	dir := sharedtest.Path(t, "models", "exports")
	files, err := filepath.Glob(filepath.Join(dir, "*.onnx"))
	edge, err2 := filepath.Glob(filepath.Join(dir, "edge", "*.onnx"))
	if err != nil || err2 != nil || len(files) < 5 || len(edge) < 3 {
		t.Fatalf("exports: %v %v %v %v", files, edge, err, err2)
	}
	for _, f := range append(files, edge...) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			model := models.Read(t, f)
			inputs := exportInputs(t, model)
			shapes := map[string]ir.Shape{}
			for n, x := range inputs {
				shapes[n] = x.Shape()
			}
			g, err := model.Specialize(ir.Bindings{Shapes: shapes})
			if err != nil {
				t.Fatal(err)
			}
			out := g.Outputs[0].Value
			var targets *ir.Tensor
			spec := ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}
			if len(out.Shape) >= 2 {
				targets = ir.NewTensor(ir.Int64, out.Shape[:len(out.Shape)-1])
				for i := range targets.Int64s() {
					targets.Int64s()[i] = int64(i*7) % int64(out.Shape[len(out.Shape)-1])
				}
				targets.Int64s()[0] = -100
			} else {
				spec = ir.LossSpec{Kind: ir.MeanSquaredError}
				targets = ir.NewTensor(ir.Float32, out.Shape)
			}
			tg, err := ir.TrainingGraph(g, spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			exe, err := Compile(tg, accel.Options{Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			named := map[string]*ir.Tensor{ir.TargetsInput: targets}
			for n, x := range inputs {
				named[n] = x
			}
			got, err := accel.RunNamed(exe, named)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ir.Interpret(tg, named)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range tg.Outputs {
				w := want[o.Name]
				scale := 0.0
				for j := range w.Len() {
					scale = math.Max(scale, math.Abs(w.Float64At(j)))
				}
				if d := ir.Compare(got[o.Name], w, 1e-3, 1e-5*scale+1e-9); !d.OK() {
					t.Errorf("%s: %v (largest magnitude %.3g)", o.Name, d, scale)
				}
			}
			t.Logf("%d parameters differentiated; loss %.6g", len(tg.Outputs)-1, got[ir.LossOutput].Float64At(0))
		})
	}
}

// TestGradKernels compares each training kernel with the op's reference
// Eval (float64 arithmetic, rounded once) on random inputs of awkward
// sizes, on every ISA and on 1, 2 and 3 threads.
func TestGradKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	type kcase struct {
		name   string
		op     ir.Op
		inputs []*ir.Tensor
		rtol   float64
	}
	// Reductions over axes that are not one block after dropping unit axes
	// run the reference (none in the models' backward passes).
	reference := map[string]bool{"ReduceSum/[2,3,4,5][0 2]": true, "ReduceMean/[2,3,4,5][0 2]": true}
	f32 := func(shape ir.Shape, lo, hi float64) *ir.Tensor { return randTensor(rng, ir.Float32, shape, lo, hi) }
	var cases []kcase
	for _, fn := range []ir.UnaryFn{ir.Tanh, ir.Sigmoid, ir.Relu, ir.Erf, ir.Gelu, ir.GeluTanh, ir.Sqrt, ir.Abs, ir.LeakyRelu, ir.Elu, ir.Softplus, ir.Reciprocal, ir.Exp, ir.Log} {
		lo := -3.0
		if fn == ir.Sqrt || fn == ir.Log || fn == ir.Reciprocal {
			lo = 0.2
		}
		cases = append(cases, kcase{"UnaryGrad/" + fn.String(), &ir.UnaryGrad{Fn: fn, Alpha: 0.2}, []*ir.Tensor{f32(ir.Shape{3, 50011}, -1, 1), f32(ir.Shape{3, 50011}, lo, 3)}, 1e-5})
	}
	for _, rows := range []int{1, 7, 1000} {
		for _, n := range []int{1, 13, 64} {
			s := ir.Shape{rows, n}
			sm := f32(s, -3, 3)
			y, _ := ir.EvalOp(&ir.Softmax{Axis: 1}, sm)
			ly, _ := ir.EvalOp(&ir.Softmax{Axis: 1, Log: true}, sm)
			cases = append(cases,
				kcase{fmt.Sprintf("SoftmaxGrad/%v", s), &ir.SoftmaxGrad{Axis: 1}, []*ir.Tensor{f32(s, -1, 1), y[0]}, 1e-4},
				kcase{fmt.Sprintf("LogSoftmaxGrad/%v", s), &ir.SoftmaxGrad{Axis: 1, Log: true}, []*ir.Tensor{f32(s, -1, 1), ly[0]}, 1e-4},
			)
			x := f32(s, -2, 2)
			ln, _ := ir.EvalOp(&ir.LayerNorm{Axis: 1, Epsilon: 1e-5}, x, f32(ir.Shape{n}, 0.5, 1.5))
			cases = append(cases, kcase{fmt.Sprintf("LayerNormGrad/%v", s), &ir.LayerNormGrad{Axis: 1},
				[]*ir.Tensor{f32(s, -1, 1), x, f32(ir.Shape{n}, 0.5, 1.5), ln[1], ln[2]}, 1e-3})
			targets := randTensor(rng, ir.Int64, ir.Shape{rows}, 0, float64(n))
			targets.Int64s()[0] = -100
			cases = append(cases, kcase{fmt.Sprintf("SoftmaxCELoss/%v", s), &ir.SoftmaxCELoss{IgnoreIndex: -100}, []*ir.Tensor{sm, targets}, 1e-6})
			// With a denominator other than the count (a step's targets
			// over several batches), and 0 (a step without any).
			for _, d := range []float32{float32(3*rows + 2), 0} {
				cases = append(cases, kcase{fmt.Sprintf("SoftmaxCELoss/%v/denominator=%v", s, d), &ir.SoftmaxCELoss{IgnoreIndex: -100}, []*ir.Tensor{sm, targets, ir.ScalarFloat32(d)}, 1e-6})
			}
		}
	}
	cases = append(cases,
		kcase{"LayerNormGrad/axis1-rank3", &ir.LayerNormGrad{Axis: 1}, func() []*ir.Tensor {
			x := f32(ir.Shape{37, 5, 7}, -2, 2)
			ln, _ := ir.EvalOp(&ir.LayerNorm{Axis: 1, Epsilon: 1e-5}, x, f32(ir.Shape{5, 7}, 0.5, 1.5))
			return []*ir.Tensor{f32(ir.Shape{37, 5, 7}, -1, 1), x, f32(ir.Shape{5, 7}, 0.5, 1.5), ln[1], ln[2]}
		}(), 1e-3},
		kcase{"ScatterAddRows/embedding", &ir.ScatterAddRows{Axis: 0, Rows: 50}, []*ir.Tensor{f32(ir.Shape{3, 9, 33}, -1, 1), randTensor(rng, ir.Int64, ir.Shape{3, 9}, -50, 50)}, 1e-6},
		kcase{"ScatterAddRows/axis1-int32-base", &ir.ScatterAddRows{Axis: 1, Rows: 6}, []*ir.Tensor{f32(ir.Shape{4, 11, 5}, -1, 1), randTensor(rng, ir.Int32, ir.Shape{11}, 0, 6), f32(ir.Shape{4, 6, 5}, -1, 1)}, 1e-6},
		// Large enough for several workers, each taking its rows of the
		// table; ids repeat, so rows get several terms.
		kcase{"ScatterAddRows/split", &ir.ScatterAddRows{Axis: 0, Rows: 300}, []*ir.Tensor{f32(ir.Shape{16, 128, 40}, -1, 1), randTensor(rng, ir.Int64, ir.Shape{16, 128}, -300, 300)}, 1e-6},
		kcase{"ScatterAddRows/split-base", &ir.ScatterAddRows{Axis: 0, Rows: 300}, []*ir.Tensor{f32(ir.Shape{16, 128, 40}, -1, 1), randTensor(rng, ir.Int32, ir.Shape{16, 128}, 0, 300), f32(ir.Shape{300, 40}, -1, 1)}, 1e-6},
		kcase{"SliceGrad/steps", &ir.SliceGrad{Starts: []int{1, 5, 0}, Steps: []int{2, -1, 1}, Shape: ir.Shape{6, 7, 3}}, []*ir.Tensor{f32(ir.Shape{3, 4, 3}, -1, 1)}, 0},
		kcase{"SliceGrad/base", &ir.SliceGrad{Starts: []int{0, 2}, Steps: []int{1, 1}, Shape: ir.Shape{5, 9}}, []*ir.Tensor{f32(ir.Shape{5, 4}, -1, 1), f32(ir.Shape{5, 9}, -1, 1)}, 1e-7},
		kcase{"Expand", &ir.Expand{Shape: ir.Shape{4, 3, 5}}, []*ir.Tensor{f32(ir.Shape{3, 1}, -1, 1)}, 0},
		kcase{"Slice", &ir.Slice{Starts: []int{1, 6}, Steps: []int{2, -3}, Sizes: []int{2, 3}}, []*ir.Tensor{f32(ir.Shape{5, 9}, -1, 1)}, 0},
	)
	for _, r := range []struct {
		shape ir.Shape
		axes  []int
	}{
		{ir.Shape{2048, 77}, []int{0}}, {ir.Shape{3, 1, 4000}, []int{0, 1}}, {ir.Shape{50, 3, 31}, []int{1}},
		{ir.Shape{333, 70}, []int{1}}, {ir.Shape{5, 6}, []int{0, 1}}, {ir.Shape{3, 1, 4}, []int{1}},
		// Reduced, kept, reduced (a convolution's bias gradient); and a
		// pattern no kernel takes.
		{ir.Shape{4, 5, 6}, []int{0, 2}}, {ir.Shape{8, 64, 256}, []int{0, 2}}, {ir.Shape{2, 3, 4, 5}, []int{0, 2, 3}},
		{ir.Shape{2, 1, 3, 1, 5}, []int{0, 1, 4}}, {ir.Shape{2, 3, 4, 5}, []int{0, 2}},
	} {
		for _, fn := range []ir.ReduceFn{ir.ReduceSum, ir.ReduceMean} {
			cases = append(cases, kcase{fmt.Sprintf("%s/%v%v", fn, r.shape, r.axes), &ir.Reduce{Fn: fn, Axes: r.axes}, []*ir.Tensor{f32(r.shape, -1, 1)}, 1e-6})
		}
	}
	forISAs(t, func(t *testing.T) {
		for _, c := range cases {
			for _, keep := range []bool{false, true} {
				// With keep, the inputs are graph outputs too, so no
				// output can take over an input's buffer; without, every
				// output the kernel allows runs in place.
				t.Run(fmt.Sprintf("%s/inputs-kept=%v", c.name, keep), func(t *testing.T) { runKernelCase(t, c.op, c.inputs, c.rtol, keep, reference[c.name]) })
			}
		}
	})
}

// TestCrossEntropyDenominatorBits: the cross-entropy kernel with a
// denominator equal to the count of targets gives the two-input form's
// bits (the gradient scale and the loss's division are the same), on
// every ISA, in place over the logits or not.
func TestCrossEntropyDenominatorBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	logits := randTensor(rng, ir.Float32, ir.Shape{3, 37, 201}, -4, 4)
	targets := randTensor(rng, ir.Int64, ir.Shape{3, 37}, 0, 201)
	n := 0
	for i := range targets.Int64s() {
		if i%5 == 2 {
			targets.Int64s()[i] = -100
		} else {
			n++
		}
	}
	build := func(denom, keepLogits bool) *Executable {
		b := ir.NewBuilder("ce")
		in := []*ir.Value{b.Input("logits", ir.Float32, logits.Shape()), b.Input("targets", ir.Int64, targets.Shape())}
		if denom {
			in = append(in, b.Input("d", ir.Float32, ir.Shape{}))
		}
		out := b.Op(&ir.SoftmaxCELoss{IgnoreIndex: -100}, in...)
		b.Output("loss", out[0])
		b.Output("dlogits", out[1])
		if keepLogits {
			b.Output("kept", in[0])
		}
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		exe, err := Compile(g, accel.Options{Threads: 3})
		if err != nil {
			t.Fatal(err)
		}
		return exe
	}
	forISAs(t, func(t *testing.T) {
		for _, keep := range []bool{false, true} {
			want, err := build(false, keep).Run([]*ir.Tensor{logits, targets})
			if err != nil {
				t.Fatal(err)
			}
			got, err := build(true, keep).Run([]*ir.Tensor{logits, targets, ir.ScalarFloat32(float32(n))})
			if err != nil {
				t.Fatal(err)
			}
			for i, name := range []string{"loss", "dlogits"} {
				if !bytes.Equal(got[i].Bytes(), want[i].Bytes()) {
					t.Errorf("logits kept %v: %s with D = N differs from the two-input form's", keep, name)
				}
			}
		}
	})
}

// runKernelCase compiles a graph of one op applied to graph inputs and
// compares the executor's outputs with the op's reference Eval, on 1, 2
// and 3 threads. With keepInputs the inputs are graph outputs too, so no
// output can take over an input's buffer.
func runKernelCase(t *testing.T, op ir.Op, inputs []*ir.Tensor, rtol float64, keepInputs, wantReference bool) {
	b := ir.NewBuilder("k")
	var in []*ir.Value
	for i, x := range inputs {
		in = append(in, b.Input(fmt.Sprintf("in%d", i), x.DType(), x.Shape()))
	}
	for i, v := range b.Op(op, in...) {
		b.Output(fmt.Sprintf("out%d", i), v)
	}
	if keepInputs {
		for i, v := range in {
			b.Output(fmt.Sprintf("kept%d", i), v)
		}
	}
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	want, err := ir.EvalOp(op, inputs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, threads := range []int{1, 2, 3} {
		exe, err := Compile(g, accel.Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := exe.steps[0].k.(*evalKernel); ok != wantReference {
			t.Fatalf("%s runs the reference: %v, want %v", op.Name(), ok, wantReference)
		}
		got, err := exe.Run(inputs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			scale := 0.0
			for j := range want[i].Len() {
				scale = math.Max(scale, math.Abs(want[i].Float64At(j)))
			}
			if d := ir.Compare(got[i], want[i], rtol, rtol*scale); !d.OK() {
				t.Errorf("threads %d, output %d: %v", threads, i, d)
			}
		}
		if keepInputs {
			for i, x := range inputs {
				if !bytes.Equal(got[len(want)+i].Bytes(), x.Bytes()) {
					t.Errorf("threads %d: input %d was modified", threads, i)
				}
			}
		}
	}
}

// TestTrainingKernelErrors: bad targets and indices are errors, not panics.
func TestTrainingKernelErrors(t *testing.T) {
	b := ir.NewBuilder("ce")
	x := b.Input("x", ir.Float32, ir.Shape{2, 3})
	tg := b.Input("t", ir.Int64, ir.Shape{2})
	loss := b.Op(&ir.SoftmaxCELoss{IgnoreIndex: -100}, x, tg)
	b.Output("loss", loss[0])
	b.Output("g", loss[1])
	idx := b.Input("i", ir.Int64, ir.Shape{2})
	b.Output("s", b.Op1(&ir.ScatterAddRows{Axis: 0, Rows: 2}, x, idx))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := Compile(g, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	xs := ir.NewTensor(ir.Float32, ir.Shape{2, 3})
	if _, err := exe.Run([]*ir.Tensor{xs, ir.FromInt64s(ir.Shape{2}, []int64{0, 3}), ir.FromInt64s(ir.Shape{2}, []int64{0, 1})}); err == nil || !strings.Contains(err.Error(), "target 3") {
		t.Errorf("target out of range: err = %v", err)
	}
	if _, err := exe.Run([]*ir.Tensor{xs, ir.FromInt64s(ir.Shape{2}, []int64{0, 1}), ir.FromInt64s(ir.Shape{2}, []int64{0, 2})}); err == nil || !strings.Contains(err.Error(), "index 2") {
		t.Errorf("index out of range: err = %v", err)
	}
}

// BenchmarkTrainingStep times one training step (forward, loss, backward:
// every parameter's gradient) of tiny_gpt on its test batch and of the
// bench models at batch 16×128 (next-token cross-entropy for the GPTs,
// class cross-entropy for BERT) on 1 and 2 threads. It reports allocs/op,
// the memory plan's arena (MB_arena: the peak of activations and
// gradients) and the GEMM work rate over the whole step. DSTUNE_PROFILE=1
// logs the time per op.
func BenchmarkTrainingStep(b *testing.B) {
	root := sharedtest.Dir(b)
	bench := ir.NewTensor(ir.Int64, ir.Shape{16, 128})
	for i := range bench.Int64s() {
		bench.Int64s()[i] = int64(i*7919%7999 + 1)
	}
	type model struct {
		name, path string
		tokens     *ir.Tensor
	}
	cases := []model{
		{"tiny_gpt", filepath.Join(root, "models", "tiny_gpt", "model.onnx"), models.ReadTensor(b, filepath.Join(root, "models", "tiny_gpt", "test_data_set_0", "input_0.pb"))},
		{"gpt_bench", filepath.Join(root, "bench", "gpt_bench.onnx"), bench},
		{"bert_bench", filepath.Join(root, "bench", "bert_bench.onnx"), bench},
	}
	for _, m := range cases {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("model=%s/batch=%v/threads=%d", m.name, m.tokens.Shape(), threads), func(b *testing.B) {
				model := models.Read(b, m.path)
				g, err := model.Specialize(ir.Bindings{Shapes: map[string]ir.Shape{"tokens": m.tokens.Shape()}})
				if err != nil {
					b.Fatal(err)
				}
				logits := g.Outputs[0].Value
				targets := ir.NewTensor(ir.Int64, logits.Shape[:len(logits.Shape)-1])
				classes := int64(logits.Shape[len(logits.Shape)-1])
				for i := range targets.Int64s() {
					targets.Int64s()[i] = int64(i*31) % classes
				}
				tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
				if err != nil {
					b.Fatal(err)
				}
				exe, err := Compile(tg, accel.Options{Threads: threads})
				if err != nil {
					b.Fatal(err)
				}
				in := []*ir.Tensor{m.tokens, targets}
				if _, err := exe.Run(in); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := exe.Run(in); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(matmulFLOPs(tg)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(float64(exe.ArenaBytes)/1e6, "MB_arena")
				if os.Getenv("DSTUNE_PROFILE") == "1" {
					prof, err := exe.Profile(in)
					if err != nil {
						b.Fatal(err)
					}
					for _, p := range prof {
						b.Logf("%-28s %4d calls %10.3f ms", p.Op, p.Calls, float64(p.Time.Microseconds())/1000)
					}
				}
			})
		}
	}
}

// TestTrainingInPlace checks that the memory plan runs the training
// step's big element-wise steps in place: the loss's gradient over the
// logits, the tied embedding's scatter over the LM head's gradient, the
// GELU backward over its upstream gradient.
func TestTrainingInPlace(t *testing.T) {
	tt := loadTinyTraining(t, "tiny_gpt")
	exe, err := Compile(tt.graph, accel.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	same := func(a, b []float32) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }
	found := map[string]bool{}
	for _, s := range exe.steps {
		switch k := s.k.(type) {
		case *crossEntropyKernel:
			found["loss gradient over the logits"] = same(k.dlogits, k.logits)
		case *scatterAddRowsKernel:
			if k.base != nil {
				found["embedding scatter over the head's gradient"] = same(k.y, k.base)
			}
		case *unaryGradKernel:
			found["tanh backward over its upstream gradient"] = found["tanh backward over its upstream gradient"] || same(k.dx, k.dy) || same(k.dx, k.t)
		}
	}
	for _, what := range []string{"loss gradient over the logits", "embedding scatter over the head's gradient", "tanh backward over its upstream gradient"} {
		if !found[what] {
			t.Errorf("not in place: %s", what)
		}
	}
	t.Logf("arena %d bytes for %d bytes of values", exe.ArenaBytes, exe.ValueBytes)
}

// TestLayerNormGradOutputs runs LayerNormGrad with every subset of its
// outputs read (a frozen input, scale or bias drops one), against the
// reference.
func TestLayerNormGradOutputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const rows, n = 300, 48
	x := randTensor(rng, ir.Float32, ir.Shape{rows, n}, -2, 2)
	scale := randTensor(rng, ir.Float32, ir.Shape{n}, 0.5, 1.5)
	ln, err := ir.EvalOp(&ir.LayerNorm{Axis: 1, Epsilon: 1e-5}, x, scale)
	if err != nil {
		t.Fatal(err)
	}
	inputs := []*ir.Tensor{randTensor(rng, ir.Float32, ir.Shape{rows, n}, -1, 1), x, scale, ln[1], ln[2]}
	op := &ir.LayerNormGrad{Axis: 1}
	want, err := ir.EvalOp(op, inputs...)
	if err != nil {
		t.Fatal(err)
	}
	for mask := 1; mask < 8; mask++ {
		b := ir.NewBuilder("lng")
		var in []*ir.Value
		for i, x := range inputs {
			in = append(in, b.Input(fmt.Sprintf("in%d", i), x.DType(), x.Shape()))
		}
		outs := b.Op(op, in...)
		var read []int
		for i := range 3 {
			if mask&(1<<i) != 0 {
				b.Output(fmt.Sprintf("out%d", i), outs[i])
				read = append(read, i)
			}
		}
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		for _, threads := range []int{1, 2} {
			exe, err := Compile(g, accel.Options{Threads: threads})
			if err != nil {
				t.Fatal(err)
			}
			got, err := exe.Run(inputs)
			if err != nil {
				t.Fatal(err)
			}
			for j, i := range read {
				if d := ir.Compare(got[j], want[i], 1e-4, 1e-5); !d.OK() {
					t.Errorf("outputs %v, threads %d: output %d: %v", read, threads, i, d)
				}
			}
		}
	}
}
