package sweep

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "github.com/dstune/dstune/accel/cpu" // the "cpu" backend
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// configureTest stands for dstune train's parser: the few flags these
// tests' specs give.
func configureTest(args []string) (train.Config, error) {
	if len(args) < 1 {
		return train.Config{}, errors.New("no model")
	}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	var (
		data, valid, task, method = fs.String("data", "", ""), fs.String("valid", "", ""), fs.String("task", "lm", ""), fs.String("method", "full", "")
		lr, eps                   = fs.Float64("lr", 1e-2, ""), fs.Float64("eps", 1e-2, "")
		steps, every              = fs.Int64("steps", 4, ""), fs.Int64("checkpoint-every", 0, "")
		minutes                   = fs.Float64("checkpoint-minutes", 10, "")
		batch, rank, threads      = fs.Int("batch", 4, ""), fs.Int("rank", 2, ""), fs.Int("threads", 1, "")
		seed                      = fs.Uint64("seed", 1, "")
	)
	fs.String("out", "", "") // the run's directory: not part of its configuration
	if err := fs.Parse(args[1:]); err != nil {
		return train.Config{}, err
	}
	opt, err := update.DefaultOptimizer(update.OptimizerAdamW)
	if err != nil {
		return train.Config{}, err
	}
	opt.SetLR(*lr)
	cfg := train.Config{Model: args[0], Data: *data, Valid: *valid, Task: train.Task(*task), Method: *method, Optimizer: opt,
		Schedule: train.Schedule{Name: train.ScheduleConstant}, Steps: *steps, Batch: *batch, Seed: *seed, Backend: "cpu",
		Threads: *threads, EvalEvery: *steps, CheckpointEvery: *every, CheckpointMinutes: *minutes}
	switch *method {
	case train.MethodDST:
		o := dst.DefaultOptions()
		o.Eps = *eps
		cfg.DST = o.JSON()
	case train.MethodLoRA:
		o := peft.DefaultLoRAOptions()
		o.Rank = *rank
		cfg.LoRA = o.JSON()
	}
	return cfg, cfg.Check()
}

// sweepFixture writes token data for the demo's model into a directory
// and returns it with the model's path.
func sweepFixture(t *testing.T) (dir, model string) {
	t.Helper()
	model, err := filepath.Abs(filepath.Join("..", "demo", "base.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	var data, valid strings.Builder
	for i := range 24 {
		line := fmt.Sprintf(`{"tokens": [%d, %d, %d, %d, %d, %d, %d, %d]}`+"\n", 1+i%7, 2+i%5, 3+i%11, 4+i%3, 5+i%13, 6+i%2, 7+i%9, 8+i%4)
		if i < 20 {
			data.WriteString(line)
		} else {
			valid.WriteString(line)
		}
	}
	for name, text := range map[string]string{"train.jsonl": data.String(), "valid.jsonl": valid.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, model
}

// writeSpec writes a spec over the fixture's files with the given grid
// (and train settings) and reads it.
func writeSpec(t *testing.T, dir, model, name, trainSettings, grid string) *Spec {
	t.Helper()
	text := fmt.Sprintf(`{"model": %q,
  "datasets": {"d": {"data": "train.jsonl", "valid": "valid.jsonl"}},
  "train": {"dataset": "d", "task": "lm", "batch": 4, "seed": 1, "threads": 1%s},
  "grid": [%s]}`, model, trainSettings, grid)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSpec(path, []string{"method", "lr", "seed", "steps", "eps", "rank", "task", "batch", "threads", "checkpoint-every"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testOptions(dir string, keepDeltas bool) Options {
	return Options{Dir: dir, Jobs: 1, KeepDeltas: keepDeltas, Configure: configureTest}
}

func runNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, runsDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestKeptDeltaAfterACrashBeforeTheDeltaWrite: a run killed after a
// checkpoint was in place but before the delta of that step was written
// (and copied) keeps, once the sweep resumes it, the delta of that step,
// not the one of the checkpoint before.
func TestKeptDeltaAfterACrashBeforeTheDeltaWrite(t *testing.T) {
	dir, model := sweepFixture(t)
	s := writeSpec(t, dir, model, "spec.json", `, "steps": 12, "checkpoint-every": 4`, `{"method": "dst", "eps": 0.05}`)
	ref := filepath.Join(dir, "ref")
	if _, err := Execute(context.Background(), s, testOptions(ref, true)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	plan, err := Plan(s, testOptions(out, true))
	if err != nil {
		t.Fatal(err)
	}
	p := plan[0]
	refRun := filepath.Join(ref, runsDir, p.Run.Name)
	// Killed after step 8's checkpoint, as if before its delta's write:
	// the delta on disk is still step 4's, copied at step 4.
	crash := errors.New("killed")
	_, err = train.Run(context.Background(), p.Config, train.RunOptions{Dir: p.Dir, AfterStep: func(step int64) error {
		if step == 8 {
			return crash
		}
		return nil
	}})
	if !errors.Is(err, crash) {
		t.Fatal(err)
	}
	step4, err := os.ReadFile(filepath.Join(KeptStepDir(refRun, 4), dst.DeltaFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.Dir, dst.DeltaFile), step4, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(KeptStepDir(p.Dir, 4), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(KeptStepDir(p.Dir, 4), dst.DeltaFile), step4, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(context.Background(), s, testOptions(out, true)); err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{4, 8, 12} {
		got, err := os.ReadFile(filepath.Join(KeptStepDir(p.Dir, step), dst.DeltaFile))
		want, err2 := os.ReadFile(filepath.Join(KeptStepDir(refRun, step), dst.DeltaFile))
		if err != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Errorf("the delta kept of step %d differs from the uninterrupted sweep's (%v, %v)", step, err, err2)
		}
	}
	if a, b := mustRead(t, filepath.Join(p.Dir, dst.DeltaFile)), mustRead(t, filepath.Join(refRun, dst.DeltaFile)); !bytes.Equal(a, b) {
		t.Error("the final delta differs from the uninterrupted sweep's")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPlanRefusesRunsOfChangedFiles: a finished or stopped run whose
// config.json records other data than the spec's file holds now is
// refused before anything trains, naming the run and the file.
func TestPlanRefusesRunsOfChangedFiles(t *testing.T) {
	dir, model := sweepFixture(t)
	s := writeSpec(t, dir, model, "spec.json", `, "steps": 4`, `{"method": "dst", "eps": [0.05, 0.1]}`)
	out := filepath.Join(dir, "out")
	plan, err := Plan(s, testOptions(out, false))
	if err != nil {
		t.Fatal(err)
	}
	// The first run finished; the second is as if stopped after its
	// last checkpoint.
	if _, err := Execute(context.Background(), s, testOptions(out, false)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(plan[1].Dir, ResultFile)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, what string }{{"train.jsonl", "other training data"}, {"valid.jsonl", "other validation data"}} {
		path := filepath.Join(dir, c.file)
		orig := mustRead(t, path)
		if err := os.WriteFile(path, append(slices.Clone(orig), `{"tokens": [1, 2, 3]}`+"\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		grown := writeSpec(t, dir, model, "grown.json", `, "steps": 4`, `{"method": "dst", "eps": [0.05, 0.1, 0.2]}`)
		_, err := Execute(context.Background(), grown, testOptions(out, false))
		var re *RunError
		if !errors.As(err, &re) || re.Run != plan[0].Run.Name || !strings.Contains(err.Error(), plan[0].Dir+" finished on "+c.what+": the spec's "+path+" is not the file the run read") {
			t.Errorf("%s changed: %v", c.file, err)
		}
		if _, err := os.Stat(filepath.Join(out, runsDir, "dst,eps=0.2")); err == nil {
			t.Errorf("%s changed: a run trained", c.file)
		}
		// The stopped run alone is refused as well.
		only := writeSpec(t, dir, model, "only.json", `, "steps": 4`, `{"method": "dst", "eps": [0.1, 0.2]}`)
		_, err = Plan(only, testOptions(out, false))
		if !errors.As(err, &re) || !strings.Contains(err.Error(), plan[1].Dir+" was stopped on "+c.what+": the spec's "+path) {
			t.Errorf("%s changed, stopped run: %v", c.file, err)
		}
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Plan(s, testOptions(out, false)); err != nil {
		t.Errorf("with the files restored: %v", err)
	}
}

// TestPlanFindsRunsUnderTheirEarlierNames: a run whose name changes
// because an axis no longer varies (or varies now) is found in the
// directory it ran in, finished or stopped, and not trained again.
func TestPlanFindsRunsUnderTheirEarlierNames(t *testing.T) {
	dir, model := sweepFixture(t)
	out := filepath.Join(dir, "out")
	two := writeSpec(t, dir, model, "two.json", `, "steps": 4`, `{"method": "dst", "eps": [0.05, 0.1]}, {"method": "lora", "rank": [2, 4]}`)
	if _, err := Execute(context.Background(), two, testOptions(out, false)); err != nil {
		t.Fatal(err)
	}
	before := runNames(t, out)
	results := mustRead(t, filepath.Join(out, ResultsFile))

	// Values removed: dst,eps=0.05 and lora,rank=2 would be "dst" and
	// "lora" now.
	one := writeSpec(t, dir, model, "one.json", `, "steps": 4`, `{"method": "dst", "eps": [0.05]}, {"method": "lora", "rank": [2]}`)
	var progress bytes.Buffer
	opts := testOptions(out, false)
	opts.Progress = &progress
	o, err := Execute(context.Background(), one, opts)
	if err != nil {
		t.Fatal(err)
	}
	if o.Ran != 0 || !slices.Equal(runNames(t, out), before) {
		t.Errorf("ran %d runs; runs/ holds %v, held %v", o.Ran, runNames(t, out), before)
	}
	var names []string
	for _, r := range o.Results {
		names = append(names, r.Run)
	}
	if !slices.Equal(names, []string{"dst,eps=0.05", "lora,rank=2"}) {
		t.Errorf("results of %v", names)
	}
	if lines := bytes.SplitAfter(results, []byte("\n")); !bytes.Equal(mustRead(t, filepath.Join(out, ResultsFile)), slices.Concat(lines[0], lines[2])) {
		t.Errorf("results.jsonl:\n%s\nwant the lines of the runs before:\n%s", mustRead(t, filepath.Join(out, ResultsFile)), results)
	}
	if !strings.Contains(progress.String(), "run dst (as the spec names it now) is dst,eps=0.05, the name it finished under") {
		t.Errorf("progress:\n%s", progress.String())
	}

	// Values added to an axis that did not vary: the run named "dst"
	// before is dst,eps=0.05's.
	fresh := filepath.Join(dir, "fresh")
	if _, err := Execute(context.Background(), one, testOptions(fresh, false)); err != nil {
		t.Fatal(err)
	}
	grown := writeSpec(t, dir, model, "grown.json", `, "steps": 4`, `{"method": "dst", "eps": [0.05, 0.2]}, {"method": "lora", "rank": [2]}`)
	o, err = Execute(context.Background(), grown, testOptions(fresh, false))
	if err != nil {
		t.Fatal(err)
	}
	if got := runNames(t, fresh); o.Ran != 1 || !slices.Equal(got, []string{"dst", "dst,eps=0.2", "lora"}) {
		t.Errorf("ran %d runs; runs/ holds %v", o.Ran, got)
	}

	// A stopped run is found too, and continues in its directory.
	stopped := filepath.Join(dir, "stopped")
	plan, err := Plan(two, testOptions(stopped, false))
	if err != nil {
		t.Fatal(err)
	}
	crash := errors.New("killed")
	_, err = train.Run(context.Background(), plan[0].Config, train.RunOptions{Dir: plan[0].Dir, AfterStep: func(step int64) error {
		if step == 2 {
			return crash
		}
		return nil
	}})
	if !errors.Is(err, crash) {
		t.Fatal(err)
	}
	plan, err = Plan(one, testOptions(stopped, false))
	if err != nil {
		t.Fatal(err)
	}
	if p := plan[0]; p.Run.Name != "dst,eps=0.05" || p.SpecName != "dst" || p.State != StateStopped || p.Dir != filepath.Join(stopped, runsDir, "dst,eps=0.05") {
		t.Errorf("the stopped run planned as %s (spec's name %q), %s, in %s", p.Run.Name, p.SpecName, p.State, p.Dir)
	}
}

// TestEarlierRunsPreferFinished: of two earlier directories holding a
// run of the same settings, a stopped one and a finished one (an older
// dstune gave a renamed run a new directory each time), the finished one
// is found, whatever the order the directory lists them in; the stopped
// one is found when no finished one is left.
func TestEarlierRunsPreferFinished(t *testing.T) {
	cfg := train.Config{Method: train.MethodFull, Seed: 1, Steps: 10}
	r := Run{Name: "full", Params: Params{{Key: KeyMethod, Value: "full"}}}
	e := &earlierRuns{scanned: true, runs: []earlierRun{
		{name: "full,lr=0.01", config: cfg},
		{name: "full,seed=1", config: cfg, result: &Result{Params: r.Params.Map()}},
	}}
	for _, want := range []string{"full,seed=1", "full,lr=0.01", ""} {
		if got, err := e.find(r, cfg); err != nil || got != want {
			t.Errorf("find = %q, %v; want %q", got, err, want)
		}
	}
}

// TestFailedRunLeavesAPartialReport: when a run fails (its data holds a
// token id past the model's vocabulary, found as it starts), the runs
// that finished are still reported, marked partial, and the error says
// so.
func TestFailedRunLeavesAPartialReport(t *testing.T) {
	dir, model := sweepFixture(t)
	good, err := os.ReadFile(filepath.Join(dir, "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), "[1, ", "[99999, ", 1)
	if err := os.WriteFile(filepath.Join(dir, "bad.jsonl"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(`{"model": %q,
  "datasets": {"a": {"data": "train.jsonl", "valid": "valid.jsonl"}, "b": {"data": "bad.jsonl", "valid": "valid.jsonl"}},
  "train": {"task": "lm", "batch": 4, "seed": 1, "threads": 1, "steps": 2},
  "grid": [{"method": "full", "dataset": ["a", "b"]}]}`, model)
	path := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSpec(path, []string{"method", "lr", "seed", "steps", "task", "batch", "threads"})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	_, err = Execute(context.Background(), s, testOptions(out, false))
	if err == nil || !strings.Contains(err.Error(), "results.jsonl and results.md report the runs that finished") {
		t.Fatalf("err = %v", err)
	}
	md, rerr := os.ReadFile(filepath.Join(out, ReportFile))
	if rerr != nil || !strings.Contains(string(md), "**Partial: 1 of the spec's 2 runs has not finished.**") {
		t.Errorf("results.md (%v):\n%s", rerr, md)
	}
}

// TestPlanRefusesAFinishedRunTrainedOn: a finished run that dstune train
// --resume --steps then trained on (config.json asks for more steps than
// the spec) is refused when the sweep is planned: its result.json no
// longer describes it.
func TestPlanRefusesAFinishedRunTrainedOn(t *testing.T) {
	dir, model := sweepFixture(t)
	s := writeSpec(t, dir, model, "spec.json", `, "steps": 4`, `{"method": "dst", "eps": [0.05]}`)
	out := filepath.Join(dir, "out")
	if _, err := Execute(context.Background(), s, testOptions(out, false)); err != nil {
		t.Fatal(err)
	}
	plan, err := Plan(s, testOptions(out, false))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := train.LoadConfig(plan[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Steps, cfg.StepsChanges = 6, []train.StepsChange{{Step: 4, Was: 4, Steps: 6}}
	if err := writeJSON(filepath.Join(plan[0].Dir, train.ConfigFile), cfg); err != nil {
		t.Fatal(err)
	}
	_, err = Plan(s, testOptions(out, false))
	var re *RunError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), plan[0].Dir+" finished, and was then trained on to 6 steps (config.json), not the 4 the spec asks for") {
		t.Errorf("a finished run trained on: %v", err)
	}
}
