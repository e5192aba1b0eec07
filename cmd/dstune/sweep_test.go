package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/sweep"
	"github.com/dstune/dstune/train"
)

// headLines writes the first n lines of src to dst.
func headLines(t *testing.T, src, dst string, n int) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) < n {
		t.Fatalf("%s has %d lines, want %d", src, len(lines), n)
	}
	if err := os.WriteFile(dst, []byte(strings.Join(lines[:n], "")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// miniSweep writes a sweep of seven tiny runs of stories260K on a few
// rows of the story tasks' names task: DST at two ε and two seeds, LoRA
// (the longest run), prompt tuning and full fine-tuning.
func miniSweep(t *testing.T) (specPath string) {
	t.Helper()
	dir := sharedtest.Path(t, "models", "stories260K")
	tmp := t.TempDir()
	headLines(t, "../../experiments/storytasks/data/names/train.jsonl", filepath.Join(tmp, "train.jsonl"), 32)
	headLines(t, "../../experiments/storytasks/data/names/valid.jsonl", filepath.Join(tmp, "valid.jsonl"), 12)
	spec := fmt.Sprintf(`{
  "title": "mini",
  "model": %q,
  "tokenizer": %q,
  "datasets": {"names": {"data": "train.jsonl", "valid": "valid.jsonl"}},
  "train": {"dataset": "names", "task": "lm", "metric": "token-accuracy", "steps": 6, "batch": 4, "checkpoint-every": 2, "lr": 1e-2, "seed": 1, "threads": 1},
  "grid": [
    {"method": "dst", "eps": [1e-2, 1e-1], "seed": [1, 2]},
    {"method": "lora", "rank": 2, "steps": 16},
    {"method": "prompt", "prompt-len": 2},
    {"method": "full", "lr": 1e-3}
  ],
  "plots": [
    {"kind": "budget", "file": "budget.png"},
    {"kind": "lr", "file": "lr.png"},
    {"kind": "bars", "file": "bars.png", "x": ["eps"], "where": {"method": "dst"}},
    {"kind": "modules", "file": "modules.png", "where": {"method": "dst"}, "group": ["eps"]},
    {"kind": "overlap-steps", "file": "steps.png", "where": {"method": "dst", "seed": 1}},
    {"kind": "overlap-runs", "file": "runs.png", "where": {"method": "dst"}, "group": ["eps"]}
  ],
  "tables": [{"title": "DST by ε", "rows": ["eps"], "where": {"method": "dst"}}]
}`, filepath.Join(dir, "stories260K.onnx"), filepath.Join(dir, "tok512.bin"))
	specPath = filepath.Join(tmp, "mini.json")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return specPath
}

// cancelOn is a progress writer that cancels a context once a line it
// is given appears.
type cancelOn struct {
	line   string
	cancel context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.line) {
		c.cancel()
	}
	return len(p), nil
}

func sweepOptions(dir string, progress *cancelOn) sweep.Options {
	opts := sweep.Options{Dir: dir, Jobs: 1, KeepDeltas: true, Configure: configureTrain}
	if progress != nil {
		opts.Progress = progress
	}
	return opts
}

// lastValidation reads a run's last validation record from its
// metrics.jsonl.
func lastValidation(t *testing.T, runDir string) (loss, acc float64) {
	t.Helper()
	f, err := os.Open(filepath.Join(runDir, train.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loss, acc = math.NaN(), math.NaN()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m struct {
			ValidLoss     *float64 `json:"valid_loss"`
			TokenAccuracy *float64 `json:"token_accuracy"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if m.ValidLoss != nil {
			loss, acc = *m.ValidLoss, *m.TokenAccuracy
		}
	}
	return loss, acc
}

func readResults(t *testing.T, path string) []sweep.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []sweep.Result
	for line := range bytes.Lines(data) {
		var r sweep.Result
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestSweepEndToEnd runs a miniature sweep, interrupting it twice: once
// as its second run starts (that run kept no checkpoint and starts over)
// and once while LoRA's run is past a checkpoint (it continues from it).
// Finished runs are not run again; the results equal an uninterrupted
// sweep's, and results.jsonl, results.md and the plots hold the runs' own
// numbers.
func TestSweepEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("trains seven tiny runs twice")
	}
	specPath := miniSweep(t)
	spec, err := sweep.LoadSpec(specPath, trainFlagNames())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "sweep")
	names := []string{"dst,eps=1e-2,seed=1", "dst,eps=1e-2,seed=2", "dst,eps=1e-1,seed=1", "dst,eps=1e-1,seed=2", "lora,seed=1", "prompt,seed=1", "full,seed=1"}
	runDir := func(i int) string { return filepath.Join(out, "runs", names[i]) }

	// First: stopped as the second run starts.
	ctx, cancel := context.WithCancel(context.Background())
	_, err = sweep.Execute(ctx, spec, sweepOptions(out, &cancelOn{"[1/7]", cancel}))
	cancel()
	if !errors.Is(err, sweep.ErrInterrupted) {
		t.Fatalf("first part: %v, want interrupted", err)
	}
	first, err := os.ReadFile(filepath.Join(runDir(0), sweep.ResultFile))
	if err != nil {
		t.Fatal(err)
	}
	firstLog, _ := os.ReadFile(filepath.Join(runDir(0), sweep.LogFile))
	if _, err := os.Stat(filepath.Join(runDir(1), sweep.ResultFile)); err == nil {
		t.Fatalf("run %s finished although the sweep was stopped as it started", names[1])
	}
	plan, err := sweep.Plan(spec, sweepOptions(out, nil))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{sweep.StateFinished, sweep.StateNew, sweep.StateNew} {
		if plan[i].Run.Name != names[i] || plan[i].State != want {
			t.Fatalf("after the first part, run %d is %s %s, want %s %s", i, plan[i].Run.Name, plan[i].State, names[i], want)
		}
	}

	// Second: stopped once LoRA's run has written a checkpoint.
	ctx, cancel = context.WithCancel(context.Background())
	stopLoRA := make(chan struct{})
	go func() {
		defer close(stopLoRA)
		for ctx.Err() == nil {
			if train.HasCheckpoint(runDir(4)) {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	outcome, err := sweep.Execute(ctx, spec, sweepOptions(out, nil))
	cancel()
	<-stopLoRA
	if !errors.Is(err, sweep.ErrInterrupted) {
		for _, r := range outcome.Runs {
			t.Log(r.Name)
		}
		t.Fatalf("second part: %v, want interrupted", err)
	}
	if outcome.Ran != 3 {
		t.Errorf("second part trained %d runs to the end, want 3 (runs 2-4)", outcome.Ran)
	}
	plan, err = sweep.Plan(spec, sweepOptions(out, nil))
	if err != nil {
		t.Fatal(err)
	}
	if plan[4].State != sweep.StateStopped {
		t.Fatalf("LoRA's run is %s, want %s", plan[4].State, sweep.StateStopped)
	}
	// The stopped run's settings changed in the spec (its name did not):
	// refused when the sweep is planned, not when the run's turn comes.
	data, _ := os.ReadFile(specPath)
	changedPath := filepath.Join(filepath.Dir(specPath), "changed.json")
	os.WriteFile(changedPath, bytes.Replace(data, []byte(`"rank": 2, "steps": 16`), []byte(`"rank": 2, "steps": 18`), 1), 0o644)
	changed, err := sweep.LoadSpec(changedPath, trainFlagNames())
	if err != nil {
		t.Fatal(err)
	}
	_, err = sweep.Plan(changed, sweepOptions(out, nil))
	if err == nil || !strings.Contains(err.Error(), "run "+names[4]) || !strings.Contains(err.Error(), "stopped with other settings") || !strings.Contains(err.Error(), "steps is 16 in config.json, 18 now") {
		t.Errorf("planning with the LoRA run's steps changed: %v", err)
	}

	// Third: the command finishes it.
	code, stdout, stderr := runCmd("sweep", specPath, "--out", out, "--keep-deltas")
	if code != 0 {
		t.Fatalf("dstune sweep: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "7 runs, 4 finished before, 3 to run") || !strings.Contains(stdout, "done: 7 runs (3 trained now)") {
		t.Errorf("dstune sweep's output:\n%s", stdout)
	}
	if again, _ := os.ReadFile(filepath.Join(runDir(0), sweep.ResultFile)); !bytes.Equal(again, first) {
		t.Errorf("the first run's result.json changed: it was run again")
	}
	if again, _ := os.ReadFile(filepath.Join(runDir(0), sweep.LogFile)); !bytes.Equal(again, firstLog) {
		t.Errorf("the first run's train.log changed: it was run again")
	}
	loraLog, _ := os.ReadFile(filepath.Join(runDir(4), sweep.LogFile))
	if !strings.Contains(string(loraLog), "sweep: resuming the run from its checkpoint at step ") {
		t.Errorf("LoRA's train.log does not show a resumed run:\n%s", loraLog)
	}

	got := readResults(t, filepath.Join(out, sweep.ResultsFile))
	if len(got) != 7 {
		t.Fatalf("results.jsonl holds %d runs, want 7", len(got))
	}
	// The two interrupted runs, trained without interruption, measure
	// the same.
	for _, i := range []int{1, 4} {
		ref := filepath.Join(t.TempDir(), "ref")
		if _, err := train.Run(context.Background(), plan[i].Config, train.RunOptions{Dir: ref}); err != nil {
			t.Fatal(err)
		}
		loss, acc := lastValidation(t, ref)
		if got[i].Final["valid_loss"] != loss || got[i].Final["token_accuracy"] != acc {
			t.Errorf("%s: interrupted and resumed %v, uninterrupted loss %v, token accuracy %v", names[i], got[i].Final, loss, acc)
		}
	}
	report, err := os.ReadFile(filepath.Join(out, sweep.ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if r.Run != names[i] || r.Status != sweep.StatusDone {
			t.Errorf("result %d: run %s status %s, want %s done", i, r.Run, r.Status, names[i])
		}
		loss, acc := lastValidation(t, runDir(i))
		if r.Final["valid_loss"] != loss || r.Final["token_accuracy"] != acc {
			t.Errorf("%s: results.jsonl has %v, its metrics.jsonl ends with loss %v, token accuracy %v", r.Run, r.Final, loss, acc)
		}
		if steps, _ := strconv.ParseInt(r.Params["steps"], 10, 64); r.Steps != steps {
			t.Errorf("%s: %d steps, want %d", r.Run, r.Steps, steps)
		}
		// Single-seed settings appear in the table of every learning
		// rate with their own numbers.
		if i >= 4 {
			cell := fmt.Sprintf("| %.1f | %.3f | 1 | 0 |", 100*acc, loss)
			if !strings.Contains(string(report), cell) {
				t.Errorf("results.md has no row %q for %s:\n%s", cell, r.Run, report)
			}
		}
	}
	if got[4].FreeParams != 5*(2*2*(64+64)+2*2*(64+32)+3*2*(64+172)) {
		t.Errorf("LoRA rank 2 trains %d parameters, want every attention and MLP layer's A and B", got[4].FreeParams)
	}
	if got[6].Fraction != 1 || !(got[0].Fraction > 0.009 && got[0].Fraction < 0.02) {
		t.Errorf("fractions: full %v, DST ε 1e-2 %v", got[6].Fraction, got[0].Fraction)
	}
	for _, name := range []string{"budget.png", "lr.png", "bars.png", "modules.png", "steps.png", "runs.png"} {
		f, err := os.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width < 300 || cfg.Height < 200 {
			t.Errorf("%s: %v, %dx%d", name, err, cfg.Width, cfg.Height)
		}
	}
	// --keep-deltas kept every checkpoint's delta or adapter, also those
	// of the resumed run before and after its interruption.
	for _, step := range []int64{2, 4, 6} {
		if _, err := os.Stat(filepath.Join(sweep.KeptStepDir(runDir(0), step), "delta.safetensors")); err != nil {
			t.Error(err)
		}
	}
	for step := int64(2); step <= 16; step += 2 {
		if _, err := os.Stat(filepath.Join(sweep.KeptStepDir(runDir(4), step), peft.AdapterFile)); err != nil {
			t.Error(err)
		}
	}
}

// TestSweepBadSpecCommand: dstune sweep names the file and the place of
// a bad spec's mistake, and a run's bad flag by its run.
func TestSweepBadSpecCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.json")
	os.WriteFile(path, []byte(`{"model": "m.onnx", "datasets": {"a": {"data": "d"}}, "train": {"dataset": "a", "lr": 1e-3, "epz": 1}}`), 0o644)
	code, _, stderr := runCmd("sweep", path)
	if code == 0 || !strings.Contains(stderr, path+": train.epz: unknown setting \"epz\"") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	specPath := miniSweep(t)
	data, _ := os.ReadFile(specPath)
	data = bytes.Replace(data, []byte(`"rank": 2`), []byte(`"rank": -2`), 1)
	os.WriteFile(specPath, data, 0o644)
	code, _, stderr = runCmd("sweep", specPath, "--out", filepath.Join(dir, "out"), "--keep-deltas")
	if code == 0 || !strings.Contains(stderr, "run lora") || !strings.Contains(stderr, "rank") {
		t.Errorf("bad --rank: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "runs")); err == nil {
		t.Errorf("a sweep with a bad run started")
	}
}

// TestSweepDiverged: a run whose update makes the parameters infinite is
// reported as diverged, without a quality, and the sweep goes on; its
// setting cannot be the best. The two runs train at once (--jobs 2).
func TestSweepDiverged(t *testing.T) {
	dir := sharedtest.Path(t, "models", "stories260K")
	tmp := t.TempDir()
	headLines(t, "../../experiments/storytasks/data/names/train.jsonl", filepath.Join(tmp, "train.jsonl"), 8)
	headLines(t, "../../experiments/storytasks/data/names/valid.jsonl", filepath.Join(tmp, "valid.jsonl"), 4)
	spec := fmt.Sprintf(`{
  "model": %q, "tokenizer": %q,
  "datasets": {"names": {"data": "train.jsonl", "valid": "valid.jsonl"}},
  "train": {"dataset": "names", "task": "lm", "steps": 2, "batch": 4, "optimizer": "sgd", "lr": [1e-2, 1e38], "threads": 1}
}`, filepath.Join(dir, "stories260K.onnx"), filepath.Join(dir, "tok512.bin"))
	path := filepath.Join(tmp, "s.json")
	os.WriteFile(path, []byte(spec), 0o644)
	out := filepath.Join(tmp, "out")
	code, stdout, stderr := runCmd("sweep", path, "--out", out, "--jobs", "2")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	res := readResults(t, filepath.Join(out, sweep.ResultsFile))
	if len(res) != 2 || res[0].Status != sweep.StatusDone || res[1].Status != sweep.StatusDiverged || len(res[1].Final) != 0 || res[1].Error == "" {
		t.Fatalf("results: %+v", res)
	}
	report, _ := os.ReadFile(filepath.Join(out, sweep.ReportFile))
	// Full fine-tuning's free parameters: every parameter of the model.
	best := fmt.Sprintf("| full | 264,128 | 1 | 1e-2 | %.3f | %.3f | 1 |", res[0].Final["valid_loss"], res[0].Initial["valid_loss"])
	if !strings.Contains(string(report), "2 runs (1 diverged)") || !strings.Contains(string(report), best) || !strings.Contains(string(report), "| 1e38 | — | 1 | 1 |") {
		t.Errorf("results.md has no row %q:\n%s", best, report)
	}
}

// tinySweepDir writes tiny_gpt token data into a temporary directory:
// good.jsonl, and bad.jsonl whose second line's tokens are not a list.
func tinySweepDir(t *testing.T) (dir, model string) {
	t.Helper()
	model = sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir = t.TempDir()
	good := strings.Repeat(`{"tokens": [1, 2, 3, 4, 5, 6, 7, 8]}`+"\n", 8)
	bad := `{"tokens": [1, 2, 3]}` + "\n" + `{"tokens": "x"}` + "\n"
	for name, data := range map[string]string{"good.jsonl": good, "bad.jsonl": bad} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, model
}

// TestSweepChecksDataFirst: every data file the runs use is read before
// the first run starts, so a bad line of the second run's data stops the
// sweep before the first run trains, naming the spec's place and the
// file's line.
func TestSweepChecksDataFirst(t *testing.T) {
	dir, model := tinySweepDir(t)
	for _, c := range []struct{ name, datasets, where string }{
		{"data", `"c": {"data": "bad.jsonl", "valid": "good.jsonl"}`, "datasets.c.data"},
		{"valid", `"c": {"data": "good.jsonl", "valid": "bad.jsonl"}`, "datasets.c.valid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := fmt.Sprintf(`{"model": %q,
  "datasets": {"a": {"data": "good.jsonl", "valid": "good.jsonl"}, %s},
  "train": {"task": "lm", "steps": 2, "batch": 2, "threads": 1},
  "grid": [{"method": "dst", "dataset": ["a", "c"]}]}`, model, c.datasets)
			path := filepath.Join(dir, c.name+".json")
			os.WriteFile(path, []byte(spec), 0o644)
			out := filepath.Join(dir, c.name+".out")
			code, _, stderr := runCmd("sweep", path, "--out", out)
			want := fmt.Sprintf("%s: %s: %s:2: \"tokens\" is not an array", path, c.where, filepath.Join(dir, "bad.jsonl"))
			if code == 0 || !strings.Contains(stderr, want) {
				t.Errorf("exit %d, stderr %q; want %q", code, stderr, want)
			}
			if _, err := os.Stat(filepath.Join(out, "runs")); err == nil {
				t.Errorf("a run trained before the bad data was found")
			}
		})
	}
}

// TestSweepSettingPlaces: a run's setting that dstune train refuses is
// an error naming the spec's place it comes from (the grid block's or
// train's), the run and dstune train's message.
func TestSweepSettingPlaces(t *testing.T) {
	dir, model := tinySweepDir(t)
	cases := []struct{ name, train, grid, want string }{
		{"not a number", `"batch": true`, `{"method": "full"}`,
			`train.batch: run full: invalid value "true" for flag -batch`},
		{"grid value", `"batch": 2`, `{"method": "full"}, {"method": "dst", "eps": [1e-3, 5]}`,
			`grid[1].eps: run dst,eps=5: dst: ε = 5`},
		// Without either setting the run is accepted: the one dstune
		// train names is to blame.
		{"option of another optimizer", `"optimizer": "sgd"`, `{"method": "full", "beta2": 0.9}`,
			`grid[0].beta2: run full: --beta2 is an AdamW option`},
		// Without it the run is no better: dstune train names it.
		{"required", `"steps": 0`, `{"method": "full"}`,
			`train.steps: run full: --steps is required`},
		{"option of another method", `"batch": 2`, `{"method": "lora", "eps": 1e-3}`,
			`grid[0].eps: run lora: --eps is an option of --method dst`},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			train := `"dataset": "a", "task": "lm", "steps": 2, "threads": 1`
			if strings.HasPrefix(c.train, `"steps"`) {
				train = `"dataset": "a", "task": "lm", "threads": 1`
			}
			spec := fmt.Sprintf(`{"model": %q, "datasets": {"a": {"data": "good.jsonl", "valid": "good.jsonl"}},
  "train": {%s, %s}, "grid": [%s]}`, model, train, c.train, c.grid)
			path := filepath.Join(dir, fmt.Sprintf("s%d.json", i))
			os.WriteFile(path, []byte(spec), 0o644)
			code, _, stderr := runCmd("sweep", path, "--dry-run")
			if want := path + ": " + c.want; code == 0 || !strings.Contains(stderr, want) {
				t.Errorf("exit %d, stderr %q; want %q", code, stderr, want)
			}
		})
	}
}

// TestShellJoin: listed command lines paste into a shell: words with
// shell syntax are single-quoted, quotes inside escaped; plain ones stay.
func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"--steps=150", "/tmp/a b.onnx", "--trainable=^(tok_embeddings|layers|norm)", "it's", ""})
	want := `--steps=150 '/tmp/a b.onnx' '--trainable=^(tok_embeddings|layers|norm)' 'it'\''s' ''`
	if got != want {
		t.Errorf("shellJoin = %s, want %s", got, want)
	}
}

// TestSweepDryRunLinesAreTheRuns: --dry-run lists every flag a run gets,
// the sweep's checkpoint cadence included, so a run trained by hand
// from its line is the sweep's own: the sweep then reports it without
// training it again.
func TestSweepDryRunLinesAreTheRuns(t *testing.T) {
	dir, model := tinySweepDir(t)
	spec := fmt.Sprintf(`{"model": %q, "datasets": {"a": {"data": "good.jsonl", "valid": "good.jsonl"}},
  "train": {"dataset": "a", "task": "lm", "steps": 10, "batch": 2, "threads": 1, "method": "dst", "eps": 0.05}}`, model)
	path := filepath.Join(dir, "s.json")
	os.WriteFile(path, []byte(spec), 0o644)
	code, stdout, stderr := runCmd("sweep", path, "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var line string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "dstune train ") {
			line = strings.TrimSpace(l)
		}
	}
	if !strings.Contains(line, " --checkpoint-every=1 --checkpoint-minutes=0") || !strings.Contains(stdout, "1 run, 0 finished") {
		t.Fatalf("dry run:\n%s", stdout)
	}
	args := strings.Fields(strings.TrimPrefix(line, "dstune train "))
	if code, out, stderr := runCmd(append([]string{"train"}, args...)...); code != 0 {
		t.Fatalf("dstune train %s: exit %d\n%s\n%s", line, code, out, stderr)
	}
	code, stdout, stderr = runCmd("sweep", path)
	if code != 0 || !strings.Contains(stdout, "done: 1 run (1 trained now)") {
		t.Errorf("the sweep after its run was trained by hand: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// TestSweepPipedSpecNeedsOut: a spec that is not a regular file (a
// FIFO, as <(…) gives) names no directory for the sweep: --out is
// required, a usage error without it.
func TestSweepPipedSpecNeedsOut(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "spec")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip(err)
	}
	code, _, stderr := runCmd("sweep", fifo, "--dry-run")
	if code != 2 || !strings.Contains(stderr, fifo+" is a FIFO, not a spec file whose name can name the sweep's directory: give --out DIR") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
