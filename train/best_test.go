package train

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/update"
)

func readBest(t *testing.T, dir string) BestRecord {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, BestDir, BestFile))
	if err != nil {
		t.Fatal(err)
	}
	var b BestRecord
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRunPatienceStopsAtTies: with a learning rate of 0 every validation
// ties the first one after training began, which stays the best, so
// --patience 3 stops the run at the third validation after it — with a
// checkpoint of that step — and a resume of the stopped run trains
// nothing and says why.
func TestRunPatienceStopsAtTies(t *testing.T) {
	cfg := runConfig(t, update.OptimizerSGD, 20)
	cfg.Optimizer.SGD.LR = 0
	cfg.Schedule = Schedule{Name: ScheduleConstant}
	cfg.EvalEvery, cfg.CheckpointEvery, cfg.Patience, cfg.KeepBest = 2, 0, 3, true
	dir := filepath.Join(t.TempDir(), "run")
	res, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Step != 8 || res.BestStep != 2 || !strings.Contains(res.StoppedEarly, "has not improved for 3 validations (best") {
		t.Fatalf("stopped at step %d, best %d, %q; want step 8 (validations at 4, 6, 8 after the best at 2)", res.Step, res.BestStep, res.StoppedEarly)
	}
	if b := readBest(t, dir); b.Step != 2 || math.IsNaN(b.ValidLoss) {
		t.Errorf("best.json %+v, want step 2", b)
	}
	if _, pos, err := ReadCheckpoint(dir, bigramParams(runVocab, runVocab), cfg.Optimizer, MethodFull); err != nil || pos == (Position{}) {
		t.Fatalf("checkpoint at the stop: %v", err)
	}
	again, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(again.Loss) || again.Step != 8 || again.StoppedEarly == "" {
		t.Errorf("resumed stopped run: step %d, loss %v, %q; want no step taken and the stop reported", again.Step, again.Loss, again.StoppedEarly)
	}
	if recs := sharedtest.ReadMetrics(t, dir); recs[len(recs)-1].Step != 8 {
		t.Errorf("the resume wrote metrics past the stop: last record step %d", recs[len(recs)-1].Step)
	}
	// Given more steps, the stopped run goes on, its patience counted
	// again from the change: validations at 10, 12, 14 reach it at the
	// last step, which is no early stop.
	more := cfg
	more.Steps = 14
	res, err = Run(context.Background(), more, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if err != nil || res.Step != 14 || res.StoppedEarly != "" {
		t.Fatalf("the stopped run given 14 steps: %+v, %v", res, err)
	}
	// A run that reaches its patience at its last step did not stop early.
	last := cfg
	last.Steps = 8
	res, err = Run(context.Background(), last, RunOptions{Dir: filepath.Join(t.TempDir(), "last"), Source: newBigramSource(runVocab, 1)})
	if err != nil || res.Step != 8 || res.StoppedEarly != "" {
		t.Errorf("patience reached at the last step: %+v, %v", res, err)
	}
}

// TestRunKeepsTheBestValidation: validated on lines mostly of another
// Markov chain than the training data's, the loss falls, then rises as
// the model fits its own chain; RUN/best/best.json names the step of the
// lowest validation loss metrics.jsonl records after the first step,
// with its loss; --patience 3 stops the run at the third validation
// after it; a run interrupted and resumed keeps the same best;
// --keep-best without --valid is refused.
func TestRunKeepsTheBestValidation(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 24)
	cfg.Optimizer.AdamW.LR = 0.1
	cfg.Schedule = Schedule{Name: ScheduleConstant}
	cfg.Valid = filepath.Join(t.TempDir(), "other.jsonl")
	same := strings.SplitAfter(markovText(runVocab, 42, 10, 5), "\n")[30:33] // not training lines
	if err := os.WriteFile(cfg.Valid, []byte(strings.Join(same, "")+markovText(runVocab, 9, 10, 99)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.EvalEvery, cfg.KeepBest, cfg.Patience = 2, true, 3
	dir := filepath.Join(t.TempDir(), "run")
	res, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)})
	if err != nil {
		t.Fatal(err)
	}
	wantStep, wantLoss := int64(0), math.Inf(1)
	var last int64
	for _, r := range sharedtest.ReadMetrics(t, dir) {
		if r.Step >= 1 && r.ValidLoss != nil {
			last = r.Step
			if *r.ValidLoss < wantLoss {
				wantStep, wantLoss = r.Step, *r.ValidLoss
			}
		}
	}
	b := readBest(t, dir)
	if b.Step != wantStep || b.ValidLoss != wantLoss || res.BestStep != wantStep {
		t.Fatalf("best.json %+v (result: step %d); metrics.jsonl's lowest validation loss is %v at step %d", b, res.BestStep, wantLoss, wantStep)
	}
	if wantStep <= cfg.EvalEvery || last != wantStep+3*cfg.EvalEvery || res.Step != last || res.StoppedEarly == "" {
		t.Fatalf("best at step %d, last validation at %d, run ended at %d (%q): want a best after the first validation and a stop 3 validations later",
			wantStep, last, res.Step, res.StoppedEarly)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	part := filepath.Join(t.TempDir(), "part")
	opts := RunOptions{Dir: part, Source: newBigramSource(runVocab, 1), AfterStep: func(step int64) error {
		if step == 7 {
			cancel()
		}
		return nil
	}}
	if _, err := Run(ctx, cfg, opts); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: part, Resume: true, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	if got := readBest(t, part); got.Step != b.Step || got.ValidLoss != b.ValidLoss {
		t.Errorf("interrupted and resumed: best.json %+v, uninterrupted %+v", got, b)
	}

	cfg.Valid = ""
	if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), "give --valid") {
		t.Errorf("--keep-best without --valid: %v", err)
	}
}

// TestRunBestAfterACrash: a run killed after a best of a step its last
// checkpoint does not cover keeps the best its checkpoint covers beside
// it, and a resume puts that one back (the steps after the checkpoint
// may not find theirs again: other data, another schedule); a new run in
// the directory starts without the old run's best.
func TestRunBestAfterACrash(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 24)
	cfg.Optimizer.AdamW.LR = 0.1
	cfg.Schedule = Schedule{Name: ScheduleConstant}
	// The validation loss falls until step 8 (TestRunKeepsTheBestValidation).
	cfg.Valid = filepath.Join(t.TempDir(), "other.jsonl")
	same := strings.SplitAfter(markovText(runVocab, 42, 10, 5), "\n")[30:33]
	if err := os.WriteFile(cfg.Valid, []byte(strings.Join(same, "")+markovText(runVocab, 9, 10, 99)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.EvalEvery, cfg.CheckpointEvery, cfg.KeepBest = 2, 5, true
	dir := filepath.Join(t.TempDir(), "run")
	killed := errors.New("killed")
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), AfterStep: func(step int64) error {
		if step == 9 {
			return killed
		}
		return nil
	}})
	if !errors.Is(err, killed) {
		t.Fatal(err)
	}
	// Checkpoint at 5; bests at 2, 4, 6, 8: the one of step 4 is kept.
	if b := readBest(t, dir); b.Step != 8 {
		t.Fatalf("best after the crash: step %d, want 8", b.Step)
	}
	if s, ok := BestStepIn(filepath.Join(dir, bestKept)); !ok || s != 4 {
		t.Fatalf("kept best: step %d (%v), want 4", s, ok)
	}
	// Resumed, and stopped before its first step.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := func(int64) error { cancel(); return nil }
	if _, err := Run(ctx, cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1), AfterRestore: stop}); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("resume: %v", err)
	}
	if b := readBest(t, dir); b.Step != 4 {
		t.Errorf("best after the resume: step %d, want 4 (the checkpoint's)", b.Step)
	}
	if _, err := os.Stat(filepath.Join(dir, bestKept)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s left: %v", bestKept, err)
	}
	// Resumed to the end: the uninterrupted run's best.
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	if b := readBest(t, dir); b.Step != 8 {
		t.Errorf("best at the end: step %d, want 8", b.Step)
	}

	// Killed before its first checkpoint, the run is started over with
	// other settings: none of the old run's best is left.
	again := filepath.Join(t.TempDir(), "again")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: again, Source: newBigramSource(runVocab, 1), AfterStep: func(step int64) error {
		if step == 4 {
			return killed
		}
		return nil
	}}); !errors.Is(err, killed) {
		t.Fatal(err)
	}
	other := cfg
	other.KeepBest, other.Steps = false, 3
	if _, err := Run(context.Background(), other, RunOptions{Dir: again, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(again, BestDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the started-over run kept the old run's best: %v", err)
	}
}
