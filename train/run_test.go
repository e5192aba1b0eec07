package train

import (
	"fmt"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"

	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

const runVocab = 12

func writeRunData(t *testing.T) (train, valid string) {
	t.Helper()
	dir := t.TempDir()
	train, valid = filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	if err := os.WriteFile(train, []byte(markovText(runVocab, 30, 10, 5)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Same chain (same seed), other lines: the first 30 lines repeat, so
	// take lines from a longer draw.
	lines := strings.SplitAfter(markovText(runVocab, 42, 10, 5), "\n")
	if err := os.WriteFile(valid, []byte(strings.Join(lines[30:], "")), 0o644); err != nil {
		t.Fatal(err)
	}
	return train, valid
}

func runConfig(t *testing.T, optName string, steps int64) Config {
	train, valid := writeRunData(t)
	opt, err := update.DefaultOptimizer(optName)
	if err != nil {
		t.Fatal(err)
	}
	opt.SetLR(0.05)
	return Config{Model: "bigram (test)", Data: train, Valid: valid, Task: TaskLM, Method: MethodFull,
		Optimizer: opt, Schedule: Schedule{Name: ScheduleCosine, Warmup: 2}, Steps: steps, Batch: 4,
		Seed: 11, Backend: "cpu", Threads: 2, EvalEvery: 5, CheckpointEvery: 4}
}

func TestRunWritesRunDirectory(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 30)
	dir := filepath.Join(t.TempDir(), "run")
	var out bytes.Buffer
	res, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), Progress: &out, LogEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.Step != 30 || !(res.ValidLoss < res.InitialValidLoss-0.5) {
		t.Errorf("result %+v: validation loss should drop clearly", res)
	}
	stored, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := configDiff(stored, cfg, "data_sha256", "data_size", "valid_sha256", "valid_size", "text_encoding"); diff != "" {
		t.Errorf("config.json differs from the run's config: %s", diff)
	}
	if stored.TextEncoding != TextJoined {
		t.Errorf("a new run records text encoding %d, want %d", stored.TextEncoding, TextJoined)
	}
	for path, rec := range map[string]struct {
		sum  string
		size int64
	}{cfg.Data: {stored.DataSHA256, stored.DataSize}, cfg.Valid: {stored.ValidSHA256, stored.ValidSize}} {
		data, _ := os.ReadFile(path)
		if want := fmt.Sprintf("%x", sha256.Sum256(data)); rec.sum != want || rec.size != int64(len(data)) {
			t.Errorf("config.json records %s as sha256 %s, %d bytes; want %s, %d", path, rec.sum, rec.size, want, len(data))
		}
	}
	recs := sharedtest.ReadMetrics(t, dir)
	if len(recs) != 31 {
		t.Fatalf("%d metrics records, want 31 (initial validation + 30 steps)", len(recs))
	}
	for i, r := range recs {
		if r.Step != int64(i) {
			t.Fatalf("record %d has step %v", i, r.Step)
		}
		if hasValid, wantValid := r.ValidLoss != nil, i == 0 || i%5 == 0; hasValid != wantValid {
			t.Errorf("step %d: valid_loss present %v, want %v", i, hasValid, wantValid)
		}
		if i > 0 {
			for _, k := range []string{"loss", "lr", "step_ms", "tokens_per_s", "tokens"} {
				if _, ok := r.Fields[k]; !ok {
					t.Errorf("step %d: no %q in %v", i, k, r.Fields)
				}
			}
		}
	}
	if lr1, lr2, lr3 := *recs[1].LR, *recs[2].LR, *recs[3].LR; lr1 != 0.025 || lr2 != 0.05 || lr3 != 0.05 {
		t.Errorf("warm-up then cosine: lr %v %v %v, want 0.025 0.05 0.05", lr1, lr2, lr3)
	}
	if !HasCheckpoint(dir) {
		t.Error("no checkpoint after the run")
	}
	if got := out.String(); !strings.Contains(got, "step 10/30  loss ") || !strings.Contains(got, "step 0: validation loss") || strings.Contains(got, "\r") {
		t.Errorf("plain progress output:\n%s", got)
	}
	// A second fresh run into the same directory is refused.
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Errorf("second run in the same directory: %v", err)
	}
}

func TestRunResumesBitIdentically(t *testing.T) {
	for _, optName := range []string{update.OptimizerAdamW, update.OptimizerAdafactor, update.OptimizerSGD} {
		t.Run(optName, func(t *testing.T) {
			cfg := runConfig(t, optName, 14)
			if optName == update.OptimizerSGD {
				cfg.Optimizer.SGD.Momentum = 0.9
			}
			fresh := func() RunOptions { return RunOptions{Source: newBigramSource(runVocab, 1)} }
			whole := fresh()
			whole.Dir = filepath.Join(t.TempDir(), "whole")
			if _, err := Run(context.Background(), cfg, whole); err != nil {
				t.Fatal(err)
			}
			want := readCheckpointWeights(t, whole.Dir, cfg)

			// Interrupted (Ctrl-C) after step 6, then resumed.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			part := fresh()
			part.Dir = filepath.Join(t.TempDir(), "part")
			part.AfterStep = func(step int64) error {
				if step == 6 {
					cancel()
				}
				return nil
			}
			if _, err := Run(ctx, cfg, part); !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "after step 6") {
				t.Fatalf("interrupted run: %v", err)
			}
			// Killed after step 9: steps 9 and 10... are lost, the
			// checkpoint of step 8 remains.
			again := fresh()
			again.Dir, again.Resume = part.Dir, true
			crash := errors.New("killed")
			again.AfterStep = func(step int64) error {
				if step == 9 {
					return crash
				}
				return nil
			}
			if _, err := Run(context.Background(), cfg, again); !errors.Is(err, crash) {
				t.Fatalf("crashed run: %v", err)
			}
			// The last part on another thread count: the same bits.
			last := fresh()
			last.Dir, last.Resume = part.Dir, true
			oneThread := cfg
			oneThread.Threads = 1
			res, err := Run(context.Background(), oneThread, last)
			if err != nil {
				t.Fatal(err)
			}
			if res.Step != 14 {
				t.Errorf("resumed run ended at step %d", res.Step)
			}
			if got := readCheckpointWeights(t, part.Dir, cfg); !sameBits(got, want) {
				t.Fatal("interrupted and resumed run's parameters differ from the uninterrupted run's")
			}
			recs := sharedtest.ReadMetrics(t, part.Dir)
			wholeRecs := sharedtest.ReadMetrics(t, whole.Dir)
			if len(recs) != len(wholeRecs) {
				t.Fatalf("%d metrics records after resuming, the uninterrupted run has %d", len(recs), len(wholeRecs))
			}
			for i := range recs {
				a, b := recs[i], wholeRecs[i]
				if a.Step != b.Step || fmt.Sprint(a.Fields["loss"], a.Fields["valid_loss"]) != fmt.Sprint(b.Fields["loss"], b.Fields["valid_loss"]) {
					t.Errorf("metrics record %d: %v, uninterrupted %v", i, a.Fields, b.Fields)
				}
			}
		})
	}
}

func readCheckpointWeights(t *testing.T, dir string, cfg Config) []float32 {
	t.Helper()
	st, _, err := ReadCheckpoint(dir, bigramParams(runVocab, runVocab), cfg.Optimizer, MethodFull)
	if err != nil {
		t.Fatal(err)
	}
	return st.Params["bigram.weight"]
}

// TestRunInterruptedBeforeTheFirstStep: an interruption that comes while
// the run is being set up ends it there, saying nothing was saved (it
// used to claim a checkpoint after step 0), and the same command starts
// the run over.
func TestRunInterruptedBeforeTheFirstStep(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	dir := filepath.Join(t.TempDir(), "run")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)})
	if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "before the first step: nothing to save") {
		t.Fatalf("got %v", err)
	}
	if HasCheckpoint(dir) {
		t.Errorf("a checkpoint was written")
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Errorf("starting it again: %v", err)
	}
	// A resume interrupted as early keeps its checkpoint, and says so.
	_, err = Run(ctx, cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "while resuming, before its next step") {
		t.Errorf("resume interrupted before its first step: %v", err)
	}
}

// TestRunFailedBeforeItBeganLeavesNothing: a new run that fails before
// it is recorded (its data file missing) removes the directory it made,
// or only its lock file from one that was there, and a run that failed
// after it was recorded stays as it was for the next start.
func TestRunFailedBeforeItBeganLeavesNothing(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	cfg.Data += ".missing"
	parent := t.TempDir()
	dir := filepath.Join(parent, "sub", "run")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err == nil {
		t.Fatal("a run on missing data started")
	}
	if _, err := os.Lstat(filepath.Join(parent, "sub")); !os.IsNotExist(err) {
		t.Errorf("the failed run left the directories it made: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err == nil {
		t.Fatal("a run on missing data started")
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("the failed run left %v in a directory it did not make (%v)", entries, err)
	}
	// A run recorded but stopped before its first checkpoint: a failed
	// start leaves its config.json for the next one to find.
	done := filepath.Join(parent, "done")
	if _, err := Run(context.Background(), runConfig(t, update.OptimizerAdamW, 2), RunOptions{Dir: done, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	recorded, err := os.ReadFile(filepath.Join(done, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), recorded, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err == nil {
		t.Fatal("a run on missing data started")
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err != nil {
		t.Errorf("a failed start removed the config.json of the run before it: %v", err)
	}
	// A run that saved a checkpoint but lost its config.json is neither
	// started over (its checkpoint written over) nor resumed blind.
	if err := os.Rename(filepath.Join(done, ConfigFile), filepath.Join(done, "config.saved")); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), runConfig(t, update.OptimizerAdamW, 2), RunOptions{Dir: done, Source: newBigramSource(runVocab, 1)}); err == nil ||
		!strings.Contains(err.Error(), "holds a checkpoint but no config.json, which a new run would write over") {
		t.Errorf("a new run over a checkpoint without config.json: %v", err)
	}
	if _, err := LoadConfig(done); err == nil || !strings.Contains(err.Error(), "holds a checkpoint: restore config.json") {
		t.Errorf("resuming a checkpoint without config.json: %v", err)
	}
}

// TestRunResumeNamesABadConfig: a resumed run whose config.json no longer
// checks (edited by hand) is refused naming the file.
func TestRunResumeNamesABadConfig(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	stored, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	stored.Steps = -1
	_, err = Run(context.Background(), stored, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if err == nil || !strings.Contains(err.Error(), "resume: "+filepath.Join(dir, ConfigFile)+": steps -1, want ≥ 1") {
		t.Errorf("got %v", err)
	}
}

// TestRunStopsOnNonFiniteValidationLoss: a model whose validation loss is
// NaN before any step (as after one) stops the run as a diverged loss
// does; nothing is written to metrics.jsonl, which JSON cannot hold it in.
func TestRunStopsOnNonFiniteValidationLoss(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	src := newBigramSource(runVocab, 1)
	w := src.w.Tensor.Float32s()
	for i := range w {
		w[i] = float32(math.NaN())
	}
	_, err := Run(context.Background(), cfg, RunOptions{Dir: filepath.Join(t.TempDir(), "run"), Source: src})
	var le *LossError
	if !errors.As(err, &le) || !le.Validation || le.Step != 0 || !strings.Contains(err.Error(), "step 0: validation loss is NaN") {
		t.Fatalf("got %v", err)
	}
}

func TestRunStopsOnNonFiniteLoss(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 20)
	src := newBigramSource(runVocab, 1)
	dir := filepath.Join(t.TempDir(), "run")
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: src, AfterStep: func(step int64) error {
		if step == 5 {
			w := src.w.Tensor.Float32s()
			for i := range w {
				w[i] = float32(math.NaN())
			}
		}
		return nil
	}})
	var le *LossError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "step 6: loss is NaN") || !strings.Contains(err.Error(), "last good checkpoint (step 4)") {
		t.Fatalf("got %v", err)
	}
	st, _, err := ReadCheckpoint(dir, bigramParams(runVocab, runVocab), cfg.Optimizer, MethodFull)
	if err != nil || st.Step != 4 {
		t.Fatalf("checkpoint after the NaN: step %v, %v", st, err)
	}
}

// bigramParams is the bigram model's parameter with the given shape.
func bigramParams(rows, cols int) []*ir.Param {
	return []*ir.Param{{Name: "bigram.weight", Tensor: ir.NewTensor(ir.Float32, ir.Shape{rows, cols})}}
}

func TestRunResumeChecks(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.Batch = 3
	other.Optimizer = mustDefault(update.OptimizerAdamW)
	_, err := Run(context.Background(), other, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if err == nil || !strings.Contains(err.Error(), "batch is 4 in config.json, 3 now") || !strings.Contains(err.Error(), "optimizer is") {
		t.Errorf("resume with other flags: %v", err)
	}
	// A crash between the renames of a checkpoint write leaves only
	// checkpoint.old: it is found.
	if err := os.Rename(filepath.Join(dir, checkpointDir), filepath.Join(dir, checkpointOld)); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if err != nil || res.Step != 8 {
		t.Errorf("resume from checkpoint.old: %v, %+v", err, res)
	}
	// A checkpoint whose tensors do not fit the model is rejected by name.
	_, _, err = ReadCheckpoint(dir, bigramParams(runVocab, runVocab+1), cfg.Optimizer, MethodFull)
	if err == nil || !strings.Contains(err.Error(), `tensor "bigram.weight" is F32[12 12], want F32[12 13]`) {
		t.Errorf("checkpoint of another shape: %v", err)
	}
	_, _, err = ReadCheckpoint(dir, bigramParams(runVocab, runVocab), runConfig(t, update.OptimizerSGD, 8).Optimizer, MethodFull)
	if err == nil || !strings.Contains(err.Error(), `written by optimizer "adamw"`) {
		t.Errorf("checkpoint of another optimizer: %v", err)
	}
}

func TestScheduleFactors(t *testing.T) {
	cases := []struct {
		s     Schedule
		total int64
		want  []float64 // steps 1..total
	}{
		{Schedule{Name: ScheduleConstant}, 3, []float64{1, 1, 1}},
		{Schedule{Name: ScheduleConstant, Warmup: 2}, 4, []float64{0.5, 1, 1, 1}},
		{Schedule{Name: ScheduleLinear}, 4, []float64{1, 0.75, 0.5, 0.25}},
		{Schedule{Name: ScheduleCosine, Warmup: 1}, 3, []float64{1, 1, 0.5}},
	}
	for _, c := range cases {
		for i, w := range c.want {
			if got := c.s.Factor(int64(i+1), c.total); math.Abs(got-w) > 1e-12 {
				t.Errorf("%+v step %d of %d: %g, want %g", c.s, i+1, c.total, got, w)
			}
		}
	}
	if err := (Schedule{Name: "step"}).Check(10); err == nil {
		t.Error("unknown schedule accepted")
	}
	if err := (Schedule{Name: ScheduleLinear, Warmup: 11}).Check(10); err == nil {
		t.Error("warm-up longer than the run accepted")
	}
}

func mustDefault(name string) update.Optimizer {
	c, err := update.DefaultOptimizer(name)
	if err != nil {
		panic(err)
	}
	return c
}

// A run that dies before its first checkpoint starts over when resumed,
// and its metrics hold every step once.
func TestRunResumeBeforeFirstCheckpoint(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 6)
	whole := filepath.Join(t.TempDir(), "whole")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: whole, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	crash := errors.New("killed")
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), AfterStep: func(step int64) error {
		if step == 2 {
			return crash
		}
		return nil
	}})
	if !errors.Is(err, crash) || HasCheckpoint(dir) {
		t.Fatalf("crashed run: %v, checkpoint %v", err, HasCheckpoint(dir))
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	if !sameBits(readCheckpointWeights(t, dir, cfg), readCheckpointWeights(t, whole, cfg)) {
		t.Error("parameters differ from the uninterrupted run's")
	}
	for i, r := range sharedtest.ReadMetrics(t, dir) {
		if r.Step != int64(i) {
			t.Fatalf("metrics record %d is step %v", i, r.Step)
		}
	}
}

// TestRunResumeWithMoreSteps: a finished run resumed with more steps
// goes on to them — with a constant learning rate, to the bits of a run
// that asked for as many from the start — and config.json records the
// change; a later resume finds the run complete, and fewer steps than
// the run has taken are refused.
func TestRunResumeWithMoreSteps(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 6)
	cfg.Schedule = Schedule{Name: ScheduleConstant}
	whole, dir := filepath.Join(t.TempDir(), "whole"), filepath.Join(t.TempDir(), "run")
	long := cfg
	long.Steps = 10
	if _, err := Run(context.Background(), long, RunOptions{Dir: whole, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := Run(context.Background(), long, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1), Progress: &out})
	if err != nil {
		t.Fatal(err)
	}
	if res.Step != 10 || !strings.Contains(out.String(), "continuing from step 6 to step 10, not 6") {
		t.Errorf("extended run: step %d\n%s", res.Step, out.String())
	}
	if !sameBits(readCheckpointWeights(t, dir, cfg), readCheckpointWeights(t, whole, cfg)) {
		t.Error("6 steps extended to 10 differ from 10 steps")
	}
	stored, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Steps != 10 || len(stored.StepsChanges) != 1 || stored.StepsChanges[0] != (StepsChange{Step: 6, Was: 6, Steps: 10}) {
		t.Errorf("config.json: steps %d, changes %+v", stored.Steps, stored.StepsChanges)
	}
	if res, err := Run(context.Background(), stored, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)}); err != nil || !math.IsNaN(res.Loss) {
		t.Errorf("resumed again: %+v, %v; want the run complete", res, err)
	}
	short := stored
	short.Steps = 4
	if _, err := Run(context.Background(), short, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)}); err == nil || !strings.Contains(err.Error(), "--steps 4: the run is at step 10 already") {
		t.Errorf("fewer steps than taken: %v", err)
	}
}
