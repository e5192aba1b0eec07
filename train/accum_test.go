package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// ragged writes lines of token ids of lengths 2…10, so that batches hold
// different numbers of targets.
func ragged(t *testing.T, lines int) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 9))
	var sb strings.Builder
	for i := range lines {
		ids := make([]string, 2+(i*7)%9)
		tok := rng.IntN(runVocab)
		for j := range ids {
			ids[j] = fmt.Sprint(tok)
			tok = (tok*5 + 1 + rng.IntN(2)) % runVocab
		}
		fmt.Fprintf(&sb, "{\"tokens\":[%s]}\n", strings.Join(ids, ","))
	}
	path := filepath.Join(t.TempDir(), "ragged.jsonl")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunGradAccumStepsAsTheLargerBatch: --batch 4 --grad-accum 2 trains
// as --batch 8 does — the same examples a step, each batch's gradient
// weighted by its share of the step's targets (the examples have
// different lengths, so equal weights would not do; the bigram source's
// loss is no SoftmaxCELoss to take the step's number of targets, so the
// engine weights the gradients: TestRunGradAccumBF16StepsAsTheLargerBatch
// has the denominator) — the losses, the
// gradients' norms and the weights agree to float32 rounding; and a run
// with accumulation interrupted and resumed gives the uninterrupted
// run's bits.
func TestRunGradAccumStepsAsTheLargerBatch(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	cfg.Data = ragged(t, 37)
	cfg.CheckpointEvery = 3
	cfg.Batch = 8
	runs := map[string]Config{"batch 8": cfg}
	cfg.Batch, cfg.GradAccum = 4, 2
	runs["batch 4 × 2"] = cfg
	cfg.Batch, cfg.GradAccum = 2, 4
	runs["batch 2 × 4"] = cfg
	dirs := map[string]string{}
	for name, c := range runs {
		dirs[name] = filepath.Join(t.TempDir(), "run")
		if _, err := Run(context.Background(), c, RunOptions{Dir: dirs[name], Source: newBigramSource(runVocab, 1)}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	want := readCheckpointWeights(t, dirs["batch 8"], cfg)
	wantRecs := sharedtest.ReadMetrics(t, dirs["batch 8"])
	for _, name := range []string{"batch 4 × 2", "batch 2 × 4"} {
		recs := sharedtest.ReadMetrics(t, dirs[name])
		if len(recs) != len(wantRecs) {
			t.Fatalf("%s: %d metrics records, batch 8 has %d", name, len(recs), len(wantRecs))
		}
		for i, r := range recs {
			w := wantRecs[i]
			for _, f := range []struct {
				name      string
				got, want *float64
			}{{"loss", r.Loss, w.Loss}, {"grad_norm", r.GradNorm, w.GradNorm}, {"valid_loss", r.ValidLoss, w.ValidLoss}} {
				if (f.got == nil) != (f.want == nil) || (f.got != nil && math.Abs(*f.got-*f.want) > 1e-5*math.Abs(*f.want)) {
					t.Errorf("%s step %d: %s %v, batch 8 %v", name, r.Step, f.name, ptrString(f.got), ptrString(f.want))
				}
			}
			if r.Tokens != w.Tokens {
				t.Errorf("%s step %d: %d tokens, batch 8 %d", name, r.Step, r.Tokens, w.Tokens)
			}
		}
		got := readCheckpointWeights(t, dirs[name], cfg)
		worst := 0.0
		for i := range got {
			worst = max(worst, math.Abs(float64(got[i]-want[i])))
		}
		if worst > 1e-5 {
			t.Errorf("%s: weights differ from batch 8's by up to %.3g", name, worst)
		}
	}

	// Interrupted after step 4 (the checkpoint of step 3 holds the
	// stream's position after six batches), then resumed.
	c := runs["batch 4 × 2"]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "part")
	opts := RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), AfterStep: func(step int64) error {
		if step == 4 {
			cancel()
		}
		return nil
	}}
	if _, err := Run(ctx, c, opts); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	if _, err := Run(context.Background(), c, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	if !sameBits(readCheckpointWeights(t, dir, c), readCheckpointWeights(t, dirs["batch 4 × 2"], c)) {
		t.Error("the interrupted and resumed run with accumulation differs from the uninterrupted one")
	}
}

func ptrString(p *float64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

// TestRunClipsGradNorm: plain SGD's first step moves the weights by lr ×
// the gradient, so the distance the weights moved is lr × grad_norm
// without clipping — an independent check of the norm metrics.jsonl
// reports — and lr × --max-grad-norm when the norm is clipped to it.
func TestRunClipsGradNorm(t *testing.T) {
	for _, maxNorm := range []float64{0, 0.05} {
		cfg := runConfig(t, update.OptimizerSGD, 1)
		cfg.Optimizer.SGD.WeightDecay = 0
		cfg.Schedule = Schedule{Name: ScheduleConstant}
		cfg.MaxGradNorm = maxNorm
		dir := filepath.Join(t.TempDir(), "run")
		src := newBigramSource(runVocab, 1)
		seed := slices.Clone(src.w.Tensor.Float32s())
		if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: src}); err != nil {
			t.Fatal(err)
		}
		var moved float64
		for i, v := range readCheckpointWeights(t, dir, cfg) {
			d := float64(v - seed[i])
			moved += d * d
		}
		moved = math.Sqrt(moved)
		recs := sharedtest.ReadMetrics(t, dir)
		norm := *recs[len(recs)-1].GradNorm
		lr := cfg.Optimizer.SGD.LR
		want := lr * norm
		if maxNorm > 0 {
			if norm <= maxNorm {
				t.Fatalf("grad norm %g: the test needs one above %g", norm, maxNorm)
			}
			want = lr * maxNorm * norm / (norm + 1e-6)
		}
		if math.Abs(moved-want) > 1e-5*want {
			t.Errorf("max norm %g: the weights moved %.7g, want %.7g (lr %g, grad_norm %.7g)", maxNorm, moved, want, lr, norm)
		}
	}
}

// drawWatcher is a bigram source whose training graphs read a step input,
// so that the engine calls it before every batch: it cancels a context
// before batch draw.
type drawWatcher struct {
	*bigramSource
	draw   int64
	cancel func()
}

func (s *drawWatcher) HasStepInput(name string) bool { return name == s.stepInput }
func (s *drawWatcher) FillStepInput(_ string, draw int64, _ *ir.Tensor) {
	if draw == s.draw {
		s.cancel()
	}
}

// TestRunInterruptedInsideAnAccumulatedStep: an interruption between the
// batches of a step abandons the step at once (not after its last
// batch): the run stops after the step before, with a checkpoint whose
// data position is that step's, and resumed it gives the uninterrupted
// run's bits.
func TestRunInterruptedInsideAnAccumulatedStep(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 6)
	cfg.Data = ragged(t, 37)
	cfg.Batch, cfg.GradAccum, cfg.CheckpointEvery = 2, 5, 0
	// A source that cancels nothing unless told.
	source := func(draw int64, cancel func()) *drawWatcher {
		s := newBigramSource(runVocab, 1)
		s.stepInput = "draw"
		return &drawWatcher{s, draw, cancel}
	}
	whole := filepath.Join(t.TempDir(), "whole")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: whole, Source: source(0, nil)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "part")
	// Draw 18 is the third batch of step 4.
	var steps []int64
	_, err := Run(ctx, cfg, RunOptions{Dir: dir, Source: source(18, cancel), AfterStep: func(step int64) error {
		steps = append(steps, step)
		return nil
	}})
	if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "after step 3") || len(steps) != 3 {
		t.Fatalf("interrupted in step 4: %v (steps %v)", err, steps)
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: source(0, nil)}); err != nil {
		t.Fatal(err)
	}
	if !sameBits(readCheckpointWeights(t, dir, cfg), readCheckpointWeights(t, whole, cfg)) {
		t.Error("interrupted inside a step and resumed: the weights differ from the uninterrupted run's")
	}
}

// raggedBytes writes n examples of tiny_gpt's byte tokens of 3 to 40
// bytes of evalText, so that the batches of a step hold different numbers
// of targets.
func raggedBytes(t *testing.T, n int) string {
	t.Helper()
	var sb strings.Builder
	for i := range n {
		start, length := (i*13)%(len(evalText)-40), 3+(i*11)%38
		ids := make([]string, length)
		for j, c := range []byte(evalText[start : start+length]) {
			ids[j] = fmt.Sprint(c)
		}
		fmt.Fprintf(&sb, "{\"tokens\":[%s]}\n", strings.Join(ids, ","))
	}
	path := filepath.Join(t.TempDir(), "ragged.jsonl")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunGradAccumBF16StepsAsTheLargerBatch: with --precision bf16 too,
// --batch 4 --grad-accum 2, 2 × 4 and 1 × 8 take tiny_gpt's first step on
// ragged rows as --batch 8 does, to float32 rounding (grad_norm within
// 1e-6 relative, the weights within 1e-6 of how far they moved and 2
// ulps): each
// batch's loss divides by the step's number of targets, not its own, so
// that the backward's bfloat16 products round the same (p − y)/N as the
// larger batch's. (Dividing by the batch's own count and weighting its
// gradient afterwards rounds (p − y)/n_k instead: grad_norm then differs
// by 1e-4 relative.) Only the first step is held to float32 rounding: the
// gradient sums' own rounding leaves weights an ulp apart, and one of them
// rounding to another bfloat16 moves the next step by 1e-5. A run with
// accumulation interrupted and resumed gives the uninterrupted run's
// bits.
func TestRunGradAccumBF16StepsAsTheLargerBatch(t *testing.T) {
	modelPath := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	opt, err := update.DefaultOptimizer(update.OptimizerSGD)
	if err != nil {
		t.Fatal(err)
	}
	opt.SetLR(0.5)
	cfg := Config{Model: modelPath, Data: raggedBytes(t, 24), Task: TaskLM, Method: MethodFull,
		Optimizer: opt, Schedule: Schedule{Name: ScheduleConstant}, Steps: 1, Batch: 8, Seed: 3,
		Backend: "cpu", Threads: 2, Precision: "bf16"}
	src, err := NewModelSource(readEvalModel(t, modelPath), ModelSourceOptions{Task: TaskLM})
	if err != nil {
		t.Fatal(err)
	}
	seed := map[string][]float32{}
	for _, p := range src.Params() {
		seed[p.Name] = slices.Clone(p.Tensor.Float32s())
	}
	weights := func(dir string) map[string][]float32 {
		st, _, err := ReadCheckpoint(dir, src.Params(), cfg.Optimizer, MethodFull)
		if err != nil {
			t.Fatal(err)
		}
		return st.Params
	}
	run := func(c Config) (float64, map[string][]float32) {
		dir := filepath.Join(t.TempDir(), "run")
		if _, err := Run(context.Background(), c, RunOptions{Dir: dir}); err != nil {
			t.Fatalf("batch %d × %d: %v", c.Batch, c.GradAccum, err)
		}
		recs := sharedtest.ReadMetrics(t, dir)
		if len(recs) != 1 || recs[0].GradNorm == nil {
			t.Fatalf("batch %d × %d: metrics %v, want one step's", c.Batch, c.GradAccum, recs)
		}
		return *recs[0].GradNorm, weights(dir)
	}
	wantNorm, want := run(cfg)
	for _, split := range [][2]int{{4, 2}, {2, 4}, {1, 8}} {
		c := cfg
		c.Batch, c.GradAccum = split[0], split[1]
		norm, got := run(c)
		name := fmt.Sprintf("batch %d × %d", split[0], split[1])
		if d := relDiff(norm, wantNorm); d > 1e-6 {
			t.Errorf("%s: grad_norm %.9g, batch 8 %.9g (%.2g relative)", name, norm, wantNorm, d)
		}
		// A weight may differ by 1e-6 of the largest change, and by the
		// float32 rounding (2 ulps) of its own value.
		moved := 0.0
		for p, w := range want {
			for i := range w {
				moved = max(moved, math.Abs(float64(w[i]-seed[p][i])))
			}
		}
		worst, bad := 0.0, 0
		for p, w := range want {
			for i, v := range got[p] {
				d := math.Abs(float64(v - w[i]))
				worst = max(worst, d)
				if d > 1e-6*moved+0x1p-22*math.Abs(float64(w[i])) {
					bad++
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d weights differ from batch 8's by more than float32 rounding, up to %.3g (the largest change %.3g)", name, bad, worst, moved)
		}
		t.Logf("%s: grad_norm %.9g (batch 8 %.9g); weights within %.3g of batch 8's, which moved up to %.3g", name, norm, wantNorm, worst, moved)
	}

	// Four steps of 4 × 2, interrupted after step 3 (the checkpoint is
	// step 2's), then resumed.
	c := cfg
	c.Batch, c.GradAccum, c.Steps, c.CheckpointEvery = 4, 2, 4, 2
	whole := filepath.Join(t.TempDir(), "whole")
	if _, err := Run(context.Background(), c, RunOptions{Dir: whole}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "part")
	stop := func(step int64) error {
		if step == 3 {
			cancel()
		}
		return nil
	}
	if _, err := Run(ctx, c, RunOptions{Dir: dir, AfterStep: stop}); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	if _, err := Run(context.Background(), c, RunOptions{Dir: dir, Resume: true}); err != nil {
		t.Fatal(err)
	}
	got, want := weights(dir), weights(whole)
	for p, w := range want {
		if !sameBits(got[p], w) {
			t.Errorf("%s: the interrupted and resumed run differs from the uninterrupted one", p)
		}
	}
}
