package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// bigramSource is a hand-differentiated model for testing the engine and
// the loop without autodiff: logits[b,t,:] = W[tokens[b,t], :], the mean
// softmax cross-entropy over non-ignored next-token targets, and its
// gradient dW = onehot(tokens)ᵀ · (softmax(logits) − onehot(targets))·valid/n
// written out as IR ops.
type bigramSource struct {
	vocab int
	w     *ir.Param
	// stepInput, when set, is a training graph input the graph does not
	// read, for a test's StepInputs.
	stepInput string
}

func newBigramSource(vocab int, seed uint64) *bigramSource {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := make([]float32, vocab*vocab)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.5)
	}
	return &bigramSource{vocab: vocab, w: &ir.Param{Name: "bigram.weight", Tensor: ir.FromFloat32s(ir.Shape{vocab, vocab}, w)}}
}

func (s *bigramSource) Params() []*ir.Param { return []*ir.Param{s.w} }
func (s *bigramSource) Inputs() InputNames  { return InputNames{Tokens: "tokens"} }

func (s *bigramSource) build(shape BatchShape, grads bool) (*ir.Graph, error) {
	V, n := s.vocab, shape.B*shape.T
	b := ir.NewBuilder("bigram")
	tokens := b.Input("tokens", ir.Int64, ir.Shape{shape.B, shape.T})
	targets := b.Input(TargetsInput, ir.Int64, ir.Shape{shape.B, shape.T})
	if s.stepInput != "" && grads {
		b.Input(s.stepInput, ir.Float32, ir.Shape{1})
	}
	w := b.Param(s.w.Name, s.w.Tensor)
	logits := b.Op1(&ir.Reshape{Shape: ir.Shape{n, V}}, b.Op1(&ir.Gather{Axis: 0}, w, tokens))
	flatTargets := b.Op1(&ir.Reshape{Shape: ir.Shape{n}}, targets)
	loss := b.Op(&ir.NLLLoss{Softmax: true, Reduction: ir.ReductionMean, IgnoreIndex: IgnoreIndex, HasIgnore: true}, logits, flatTargets)[0]
	b.Output(ir.LossOutput, loss)
	if !grads {
		return b.Graph()
	}
	eye := make([]float32, V*V)
	for i := range V {
		eye[i*V+i] = 1
	}
	identity := b.Const(ir.FromFloat32s(ir.Shape{V, V}, eye))
	ignored := b.Op1(&ir.Binary{Fn: ir.Equal}, flatTargets, b.Const(ir.ScalarInt64(IgnoreIndex)))
	valid := b.Op1(&ir.Where{}, ignored, b.Const(ir.ScalarFloat32(0)), b.Const(ir.ScalarFloat32(1)))
	safeTargets := b.Op1(&ir.Where{}, ignored, b.Const(ir.ScalarInt64(0)), flatTargets)
	count := b.Op1(&ir.Reduce{Fn: ir.ReduceSum, Axes: []int{0}}, valid)
	probs := b.Op1(&ir.Softmax{Axis: 1}, logits)
	diff := b.Op1(&ir.Binary{Fn: ir.Sub}, probs, b.Op1(&ir.Gather{Axis: 0}, identity, safeTargets))
	diff = b.Op1(&ir.Binary{Fn: ir.Mul}, diff, b.Op1(&ir.Reshape{Shape: ir.Shape{n, 1}}, valid))
	diff = b.Op1(&ir.Binary{Fn: ir.Div}, diff, count)
	tokenOnehot := b.Op1(&ir.Gather{Axis: 0}, identity, b.Op1(&ir.Reshape{Shape: ir.Shape{n}}, tokens))
	dw := b.Op1(&ir.MatMul{}, b.Op1(&ir.Transpose{Perm: []int{1, 0}}, tokenOnehot), diff)
	b.Output(ir.GradPrefix+s.w.Name, dw)
	return b.Graph()
}

func (s *bigramSource) TrainingGraph(shape BatchShape) (*ir.Graph, error) {
	return s.build(shape, true)
}
func (s *bigramSource) LossGraph(shape BatchShape) (*ir.Graph, error) { return s.build(shape, false) }

// markovText writes n lines of tokens from a fixed random Markov chain
// over vocab symbols (each symbol has two likely successors), as JSONL.
func markovText(vocab, lines, length int, seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 2))
	next := make([][2]int, vocab)
	for i := range next {
		next[i] = [2]int{rng.IntN(vocab), rng.IntN(vocab)}
	}
	var sb strings.Builder
	for range lines {
		tok := rng.IntN(vocab)
		sb.WriteString(`{"tokens":[`)
		for j := range length {
			if j > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprint(&sb, tok)
			if rng.IntN(10) == 0 {
				tok = rng.IntN(vocab)
			} else {
				tok = next[tok][rng.IntN(2)]
			}
		}
		sb.WriteString("]}\n")
	}
	return sb.String()
}

// cpuEngine is full fine-tuning of src's parameters on the CPU backend
// with optName's optimizer (learning rate 0.05), closed when the test
// ends.
func cpuEngine(t testing.TB, src GraphSource, optName string, threads int) *Engine {
	t.Helper()
	opt, err := update.DefaultOptimizer(optName)
	if err != nil {
		t.Fatal(err)
	}
	opt.SetLR(0.05)
	e, err := NewEngine(src, cpu.New(), opt, FullMethod{}, threads)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func bigramBatches(t testing.TB, vocab int) *TrainBatches {
	t.Helper()
	ds, err := ReadJSONL(strings.NewReader(markovText(vocab, 40, 12, 3)), "markov.jsonl", DataOptions{Task: TaskLM, VocabSize: int64(vocab)})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := NewTrainBatches(ds, BatchOptions{BatchSize: 4, MaxLen: 12, FixedLen: true}, 9, Position{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestEngineLearnsBigrams(t *testing.T) {
	const vocab = 12
	for _, optName := range []string{update.OptimizerSGD, update.OptimizerAdamW, update.OptimizerAdafactor} {
		t.Run(optName, func(t *testing.T) {
			src := newBigramSource(vocab, 1)
			e := cpuEngine(t, src, optName, 1)
			tb := bigramBatches(t, vocab)
			var b Batch
			tb.Next(&b)
			first, err := e.EvalLoss(&b)
			if err != nil {
				t.Fatal(err)
			}
			for range 150 {
				tb.Next(&b)
				lr := 1.0
				if optName == update.OptimizerSGD {
					lr = 20 // plain SGD on a softmax needs big steps
				}
				if _, err := e.TrainStep(&b, lr); err != nil {
					t.Fatal(err)
				}
			}
			if e.Step() != 150 {
				t.Errorf("Step() = %d after 150 steps", e.Step())
			}
			tb2 := bigramBatches(t, vocab)
			tb2.Next(&b)
			last, err := e.EvalLoss(&b)
			if err != nil {
				t.Fatal(err)
			}
			// The chain's entropy is about log 2 + a little; the random
			// initial weights score far worse.
			if !(last < first-0.5 && last < 1.2) {
				t.Errorf("loss %.3f before, %.3f after 150 steps: not learning", first, last)
			}
		})
	}
}

func TestEngineStateRestoreIsBitIdentical(t *testing.T) {
	const vocab = 10
	for _, optName := range []string{update.OptimizerSGD, update.OptimizerAdamW, update.OptimizerAdafactor} {
		t.Run(optName, func(t *testing.T) {
			src := newBigramSource(vocab, 2)
			seedW := slices.Clone(src.w.Tensor.Float32s())
			e := cpuEngine(t, src, optName, 2)
			tb := bigramBatches(t, vocab)
			var b Batch
			for range 4 {
				tb.Next(&b)
				if _, err := e.TrainStep(&b, 1); err != nil {
					t.Fatal(err)
				}
			}
			st, err := e.State()
			if err != nil {
				t.Fatal(err)
			}
			pos := tb.Position()
			for range 5 {
				tb.Next(&b)
				if _, err := e.TrainStep(&b, 0.5); err != nil {
					t.Fatal(err)
				}
			}
			want, _ := e.ParamValues("bigram.weight")

			// A second engine from the seed, restored from the state.
			src2 := newBigramSource(vocab, 2)
			if !slices.Equal(src2.w.Tensor.Float32s(), seedW) {
				t.Fatal("sources differ")
			}
			e2 := cpuEngine(t, src2, optName, 2)
			if err := e2.Restore(st); err != nil {
				t.Fatal(err)
			}
			if e2.Step() != 4 {
				t.Fatalf("restored step %d, want 4", e2.Step())
			}
			tb2, err := NewTrainBatches(tb.ds, tb.opts, tb.seed, pos)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				tb2.Next(&b)
				if _, err := e2.TrainStep(&b, 0.5); err != nil {
					t.Fatal(err)
				}
			}
			got, _ := e2.ParamValues("bigram.weight")
			if !slices.Equal(got, want) {
				t.Fatal("restored run's parameters differ from the uninterrupted run's")
			}
		})
	}
}

func TestEngineNonFiniteLossLeavesStateAlone(t *testing.T) {
	src := newBigramSource(8, 3)
	e := cpuEngine(t, src, update.OptimizerAdamW, 1)
	tb := bigramBatches(t, 8)
	var b Batch
	tb.Next(&b)
	if _, err := e.TrainStep(&b, 1); err != nil {
		t.Fatal(err)
	}
	w := src.w.Tensor.Float32s()
	w[b.Tokens[0]*8+b.Targets[0]] = float32(math.Inf(1)) // the target's logit: inf − inf in the softmax
	before := slices.Clone(w)
	stBefore, _ := e.State()
	_, err := e.TrainStep(&b, 1)
	var le *LossError
	if !errors.As(err, &le) || le.Step != 2 || !strings.Contains(err.Error(), "step 2: loss is") {
		t.Fatalf("got %v, want a LossError for step 2", err)
	}
	if !slices.Equal(w, before) && !sameBits(w, before) {
		t.Error("parameters changed by a step with a non-finite loss")
	}
	stAfter, _ := e.State()
	if e.Step() != 1 || !slices.Equal(stAfter.Optimizer["bigram.weight"][0].Data, stBefore.Optimizer["bigram.weight"][0].Data) {
		t.Error("step count or optimizer state changed by a step with a non-finite loss")
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestEngineRejectsBadSources(t *testing.T) {
	opt := update.Optimizer{Name: "sgd", SGD: &update.SGD{LR: 1}}
	half := &ir.Param{Name: "h", Tensor: ir.NewTensor(ir.Float16, ir.Shape{2})}
	_, err := NewEngine(&fixedSource{params: []*ir.Param{half}}, cpu.New(), opt, FullMethod{}, 0)
	if err == nil || !strings.Contains(err.Error(), `"h" is float16`) {
		t.Errorf("float16 parameter: %v", err)
	}
	// A source whose training graph does not follow the contract.
	src := newBigramSource(6, 1)
	wrong := &fixedSource{params: src.Params(), inputs: src.Inputs(), graph: func(s BatchShape) (*ir.Graph, error) { return src.LossGraph(s) }}
	e, err := NewEngine(wrong, cpu.New(), opt, FullMethod{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	bigramBatches(t, 6).Next(&b)
	if _, err := e.TrainStep(&b, 1); err == nil || !strings.Contains(err.Error(), "want the loss and 1 gradients") {
		t.Errorf("graph without gradients: %v", err)
	}
	// A model input the engine cannot feed.
	other := &fixedSource{params: src.Params(), inputs: InputNames{Tokens: "ids"}, graph: src.TrainingGraph}
	e, _ = NewEngine(other, cpu.New(), opt, FullMethod{}, 0)
	if _, err := e.TrainStep(&b, 1); err == nil || !strings.Contains(err.Error(), `input "tokens" is none of`) {
		t.Errorf("unknown input: %v", err)
	}
}

type fixedSource struct {
	params []*ir.Param
	inputs InputNames
	graph  func(BatchShape) (*ir.Graph, error)
}

func (s *fixedSource) Params() []*ir.Param                           { return s.params }
func (s *fixedSource) Inputs() InputNames                            { return s.inputs }
func (s *fixedSource) TrainingGraph(b BatchShape) (*ir.Graph, error) { return s.graph(b) }
func (s *fixedSource) LossGraph(b BatchShape) (*ir.Graph, error)     { return s.graph(b) }

func BenchmarkEngineStep(b *testing.B) {
	src := newBigramSource(64, 1)
	e := cpuEngine(b, src, update.OptimizerAdamW, 1)
	tb := bigramBatches(b, 64)
	var batch Batch
	tb.Next(&batch)
	if _, err := e.TrainStep(&batch, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.TrainStep(&batch, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// countingMethod is full fine-tuning that reports a metric of its own:
// how many step results it was given.
type countingMethod struct {
	FullMethod
	updates int
}

func (m *countingMethod) Name() string { return "counting" }

func (m *countingMethod) Metrics(step int64, res *update.Result) any {
	if res != nil && res.Host != nil {
		m.updates++
	}
	return map[string]int{"updates": m.updates}
}

func TestRegisteredMethodIsUsedAndAddsMetrics(t *testing.T) {
	RegisterMethod("counting", func(MethodEnv) (Method, error) { return &countingMethod{}, nil })
	cfg := runConfig(t, update.OptimizerAdamW, 3)
	cfg.Method = "counting"
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	recs := sharedtest.ReadMetrics(t, dir)
	if last := recs[len(recs)-1]; last.Fields["updates"] != float64(3) || last.Step != 3 {
		t.Errorf("last metrics record %v: want the method's updates = 3", last.Fields)
	}
}
