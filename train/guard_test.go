package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// gradSource is a model of one parameter w [4] whose loss is 0 (also
// where w is not finite) and whose gradient is a chosen function of w: 1/w (an
// infinite gradient where w is 0) or −w (SGD with lr 1 doubles w every
// step, until it overflows).
type gradSource struct {
	w    *ir.Param
	grad ir.UnaryFn // Reciprocal or Neg
}

func newGradSource(grad ir.UnaryFn) *gradSource {
	return &gradSource{w: &ir.Param{Name: "w", Tensor: ir.FromFloat32s(ir.Shape{4}, []float32{1, 2, 3, 4})}, grad: grad}
}

func (s *gradSource) Params() []*ir.Param { return []*ir.Param{s.w} }
func (s *gradSource) Inputs() InputNames  { return InputNames{Tokens: "tokens"} }

func (s *gradSource) build(shape BatchShape, grads bool) (*ir.Graph, error) {
	b := ir.NewBuilder("grad")
	b.Input("tokens", ir.Int64, ir.Shape{shape.B, shape.T})
	b.Input(TargetsInput, ir.Int64, ir.Shape{shape.B, shape.T})
	w := b.Param(s.w.Name, s.w.Tensor)
	zero := b.Const(ir.ScalarFloat32(0))
	zeros := b.Op1(&ir.Where{}, b.Op1(&ir.Binary{Fn: ir.Equal}, w, w), zero, zero)
	b.Output(ir.LossOutput, b.Op1(&ir.Reduce{Fn: ir.ReduceSum, Axes: []int{0}}, zeros))
	if grads {
		b.Output(ir.GradPrefix+s.w.Name, b.Op1(&ir.Unary{Fn: s.grad}, w))
	}
	return b.Graph()
}

func (s *gradSource) TrainingGraph(shape BatchShape) (*ir.Graph, error) { return s.build(shape, true) }
func (s *gradSource) LossGraph(shape BatchShape) (*ir.Graph, error)     { return s.build(shape, false) }

func gradConfig(t *testing.T, lr float64) Config {
	cfg := runConfig(t, update.OptimizerSGD, 8)
	cfg.Valid = ""
	cfg.Optimizer.SetLR(lr)
	cfg.Schedule = Schedule{Name: ScheduleConstant}
	return cfg
}

// setW writes v into w[0] after step at (the CPU backend trains the
// parameter's storage in place).
func setW(src *gradSource, at int64, v float32) func(int64) error {
	return func(step int64) error {
		if step == at {
			src.w.Tensor.Float32s()[0] = v
		}
		return nil
	}
}

func TestRunStopsOnNonFiniteGradient(t *testing.T) {
	cfg := gradConfig(t, 0.01)
	src := newGradSource(ir.Reciprocal)
	dir := filepath.Join(t.TempDir(), "run")
	// w[0] = 0 after step 7: step 8, a checkpoint step, has the gradient
	// +Inf at index 0 and a finite loss.
	var after7 []float32
	set := setW(src, 7, 0)
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: src, AfterStep: func(step int64) error {
		if step == 7 {
			after7 = slices.Clone(src.w.Tensor.Float32s())
		}
		return set(step)
	}})
	var ne *NonFiniteError
	if !errors.As(err, &ne) || ne.Step != 8 || ne.Tensor != "gradient" || ne.Index != 0 || !math.IsInf(float64(ne.Value), 1) || ne.Applied {
		t.Fatalf("got %v", err)
	}
	for _, want := range []string{`step 8: the gradient of "w" holds +Inf at index 0 (1 of 4 entries are not finite); the update was not applied`, "last good checkpoint (step 4)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	st, _, err := ReadCheckpoint(dir, []*ir.Param{src.w}, cfg.Optimizer, MethodFull)
	if err != nil || st.Step != 4 {
		t.Fatalf("checkpoint after the failed step: %v, %v", st, err)
	}
	if recs := readMetricSteps(t, dir); recs[len(recs)-1] != 7 {
		t.Errorf("metrics end at step %d, want 7 (nothing of step 8 is written)", recs[len(recs)-1])
	}
	// The update was not applied: w[1:] is what step 7 left.
	if got := src.w.Tensor.Float32s(); !slices.Equal(got[1:], after7[1:]) {
		t.Errorf("w = %v after the failed step, step 7 left %v", got, after7)
	}
}

func TestRunStopsWhenTheUpdateOverflows(t *testing.T) {
	// SGD with lr 1 on the gradient −w doubles w: 3e38 overflows.
	cfg := gradConfig(t, 1)
	src := newGradSource(ir.Neg)
	dir := filepath.Join(t.TempDir(), "run")
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: src, AfterStep: setW(src, 7, 3e38)})
	var ne *NonFiniteError
	if !errors.As(err, &ne) || ne.Step != 8 || ne.Tensor != "value" || !ne.Applied ||
		!strings.Contains(err.Error(), `step 8: the update made parameter "w" non-finite: +Inf at index 0`) ||
		!strings.Contains(err.Error(), "last good checkpoint (step 4)") {
		t.Fatalf("got %v", err)
	}
	st, _, err := ReadCheckpoint(dir, []*ir.Param{src.w}, cfg.Optimizer, MethodFull)
	if err != nil || st.Step != 4 || st.Params["w"][0] != 16 {
		t.Fatalf("checkpoint after the failed step: %+v, %v", st, err)
	}
}

func TestRunStopsOnNonFiniteOptimizerState(t *testing.T) {
	// AdamW on the gradient −w with w = 1e30: the second moment (1−β2)·g²
	// overflows while the parameter stays finite.
	cfg := gradConfig(t, 0.01)
	cfg.Optimizer = mustDefault(update.OptimizerAdamW)
	src := newGradSource(ir.Neg)
	_, err := Run(context.Background(), cfg, RunOptions{Dir: filepath.Join(t.TempDir(), "run"), Source: src, AfterStep: setW(src, 5, 1e30)})
	var ne *NonFiniteError
	if !errors.As(err, &ne) || ne.Step != 6 || ne.Tensor != "exp_avg_sq" ||
		!strings.Contains(err.Error(), `step 6: the update made the optimizer state exp_avg_sq of "w" non-finite: +Inf at index 0`) {
		t.Fatalf("got %v", err)
	}
}

// A backend that checks nothing per step (a device's, say): the state is
// checked before every checkpoint, and a bad one never replaces a good
// checkpoint.
func TestCheckpointRefusesNonFiniteState(t *testing.T) {
	cfg := gradConfig(t, 1)
	cfg.Backend = uncheckedBackend
	src := newGradSource(ir.Neg)
	dir := filepath.Join(t.TempDir(), "run")
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: src, AfterStep: setW(src, 6, 3e38)})
	var ne *NonFiniteError
	if !errors.As(err, &ne) || ne.Step != 8 || ne.Applied ||
		!strings.Contains(err.Error(), `step 8: parameter "w" holds +Inf at index 0 (1 of 4 entries are not finite)`) ||
		!strings.Contains(err.Error(), "last good checkpoint (step 4)") {
		t.Fatalf("got %v", err)
	}
	st, _, err := ReadCheckpoint(dir, []*ir.Param{src.w}, cfg.Optimizer, MethodFull)
	if err != nil || st.Step != 4 {
		t.Fatalf("checkpoint: %v, %v", st, err)
	}
	if recs := readMetricSteps(t, dir); recs[len(recs)-1] != 7 {
		t.Errorf("metrics end at step %d, want 7", recs[len(recs)-1])
	}
}

func TestConfigChecksFloat32Range(t *testing.T) {
	cases := []struct {
		opt  string
		lr   float64
		want string // "" accepted
	}{
		{update.OptimizerAdamW, 1e39, "lr is 1e+39, beyond float32's range"},
		{update.OptimizerAdamW, 3e38, "the first step's size lr/(1−β1) is 3e+39"},
		{update.OptimizerAdamW, 3e37, ""},
		{update.OptimizerSGD, 1e39, "lr is 1e+39"},
		{update.OptimizerSGD, 3e38, ""},
		{update.OptimizerAdafactor, 1e39, "lr is 1e+39"},
	}
	for _, c := range cases {
		cfg := runConfig(t, c.opt, 8)
		cfg.Optimizer.SetLR(c.lr)
		err := cfg.Check()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s lr %g: %v, want %q", c.opt, c.lr, err, c.want)
		}
	}
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	cfg.Optimizer.AdamW.WeightDecay = 1e10
	cfg.Optimizer.AdamW.LR = 1e30
	if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), "1 − lr·weight_decay") {
		t.Errorf("lr·weight_decay beyond float32: %v", err)
	}
}

func readMetricSteps(t *testing.T, dir string) []int64 {
	t.Helper()
	var steps []int64
	for _, r := range sharedtest.ReadMetrics(t, dir) {
		steps = append(steps, r.Step)
	}
	return steps
}

// uncheckedBackend is the CPU backend with its per-step checks hidden, as
// a backend that does not check behaves.
const uncheckedBackend = "cpu-unchecked (test)"

func init() {
	accel.Register(uncheckedBackend, func(accel.Settings) (accel.Backend, error) {
		return uncheckedCPU{cpu.New()}, nil
	})
}

type uncheckedCPU struct{ *cpu.Backend }

func (b uncheckedCPU) NewTrainer(params []*ir.Param, prog *update.Program, opts accel.Options) (accel.Trainer, error) {
	t, err := b.Backend.NewTrainer(params, prog, opts)
	return uncheckedTrainer{t}, err
}

type uncheckedTrainer struct{ accel.Trainer }

func (t uncheckedTrainer) Step(tg *ir.Graph, inputs []*ir.Tensor, info update.StepInfo) (*update.Result, error) {
	res, err := t.Trainer.Step(tg, inputs, info)
	if res != nil {
		res.NonFinite = nil
	}
	return res, err
}

// A run refuses data that is one of the files it writes (by any path).
func TestRunRefusesToOverwriteItsInputs(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cfg.Data)
	if err != nil {
		t.Fatal(err)
	}
	inRun := filepath.Join(dir, MetricsFile)
	if err := os.WriteFile(inRun, data, 0o644); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(t.TempDir(), "data.jsonl")
	if err := os.Link(inRun, hard); err != nil {
		t.Fatal(err)
	}
	// A file in RUN/best, which a new best replaces whole.
	if err := os.Mkdir(filepath.Join(dir, BestDir), 0o755); err != nil {
		t.Fatal(err)
	}
	inBest := filepath.Join(dir, BestDir, "data.jsonl")
	if err := os.WriteFile(inBest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{inRun, hard, inBest} {
		c := cfg
		c.Data = path
		_, err := Run(context.Background(), c, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)})
		if err == nil || !strings.Contains(err.Error(), "is the training data") || !strings.Contains(err.Error(), "choose another run directory") {
			t.Errorf("data %s: %v", path, err)
		}
	}
	for _, path := range []string{inRun, inBest} {
		if got, _ := os.ReadFile(path); string(got) != string(data) {
			t.Errorf("%s was written", path)
		}
	}
}

// While a run runs, its directory is locked: a resume or a fresh run on
// it fails at once naming the holder's pid; after it, a resume works.
func TestRunDirectoryIsLocked(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 6)
	dir := filepath.Join(t.TempDir(), "run")
	var during []error
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), AfterStep: func(step int64) error {
		if step == 5 {
			for _, resume := range []bool{true, false} {
				_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: resume, Source: newBigramSource(runVocab, 1)})
				during = append(during, err)
			}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("is in use by pid %d (", os.Getpid())
	for i, err := range during {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("second run %d while the first runs: %v, want %q", i, err, want)
		}
	}
	if len(during) != 2 {
		t.Fatalf("%d second runs", len(during))
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Errorf("resume after the run ended: %v", err)
	}
	if recs := sharedtest.ReadMetrics(t, dir); len(recs) != 7 {
		t.Errorf("%d metrics records, want 7: the refused runs wrote into the run", len(recs))
	}
}

// A batch beyond the memory budget is refused before the run writes
// anything (and before any array of the batch's size is allocated).
func TestRunRefusesBatchesBeyondTheMemoryBudget(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	dir := filepath.Join(t.TempDir(), "run")
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), MaxMemory: 4 << 10})
	var me *MemoryError
	if !errors.As(err, &me) || me.Shape != (BatchShape{4, 10}) || me.Estimate.total() <= 4<<10 ||
		!strings.Contains(err.Error(), "a step of batch 4×10 tokens needs about") || !strings.Contains(err.Error(), "more than --max-memory 4.0 KiB") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		t.Error("the refused run wrote config.json")
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), MaxMemory: 64 << 20}); err != nil {
		t.Errorf("within the budget: %v", err)
	}
}

// TestMemoryErrorAdvice: the refusal points at what takes the memory —
// the batch, or the parameters and their state, which no batch size
// changes.
func TestMemoryErrorAdvice(t *testing.T) {
	for _, c := range []struct {
		m    stepMemory
		want string
	}{
		{stepMemory{Activations: 900 << 20, Params: 50 << 20, State: 100 << 20}, "more than --max-memory 512.0 MiB: lower --batch or --max-len"},
		{stepMemory{Activations: 100 << 20, Params: 500 << 20, State: 1000 << 20}, "most of it is the parameters and their state, which --batch or --max-len does not change: train fewer parameters (--trainable, or a smaller LoRA --rank) or keep less state (--optimizer adafactor)"},
	} {
		err := &MemoryError{Shape: BatchShape{4, 10}, GradAccum: 1, Estimate: c.m, Limit: 512 << 20}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %q, want %q", c.m, err.Error(), c.want)
		}
	}
}
