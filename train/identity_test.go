package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/update"
)

// copyRunDir copies a run directory (files and directories) to dst.
func copyRunDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// metricsSteps is a run's metrics.jsonl without the timing fields: step,
// epoch, loss and validation loss a line.
func metricsSteps(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for line := range bytes.Lines(data) {
		var rec struct {
			Step      int64    `json:"step"`
			Epoch     int64    `json:"epoch"`
			Loss      *float64 `json:"loss"`
			ValidLoss *float64 `json:"valid_loss"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("%s: %v", filepath.Join(dir, MetricsFile), err)
		}
		fmt.Fprintf(&b, "%d %d", rec.Step, rec.Epoch)
		for _, v := range []*float64{rec.Loss, rec.ValidLoss} {
			if v == nil {
				b.WriteString(" -")
			} else {
				fmt.Fprintf(&b, " %v", *v)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// sameRunFiles fails unless two finished runs hold the same bytes in
// every file of their checkpoint, checkpoint.json and config.json, and
// the same steps, epochs and losses in metrics.jsonl.
func sameRunFiles(t *testing.T, got, want string) {
	t.Helper()
	for _, name := range []string{"checkpoint/params.safetensors", "checkpoint/optimizer.safetensors", "checkpoint/state.json", checkpointRecord, ConfigFile} {
		a, errA := os.ReadFile(filepath.Join(got, name))
		b, errB := os.ReadFile(filepath.Join(want, name))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the uninterrupted run's (%v, %v)", name, errA, errB)
		}
	}
	if a, b := metricsSteps(t, got), metricsSteps(t, want); a != b {
		t.Errorf("metrics.jsonl (step, epoch, loss, validation loss):\n%s\nthe uninterrupted run's:\n%s", a, b)
	}
}

// A checkpoint of another run put in a run's place is refused, at any
// step (not only at the one checkpoint.json records), naming it and what
// it was written with; the run's files stay as they were.
func TestResumeRefusesAnotherRunsCheckpoint(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 12)
	other := cfg
	other.Seed++
	other.Optimizer = mustDefault(update.OptimizerAdamW)
	other.Optimizer.SetLR(0.1)
	for _, c := range []struct {
		name             string
		stopAt, otherAt  int64 // checkpoints every 4 steps
		dropRecord, want string
	}{
		{"newer", 6, 10, "", "comes from another run"},
		{"older", 10, 6, "", "comes from another run"},
		{"finished", 12, 6, "", "comes from another run"},
		{"no checkpoint.json", 6, 10, "drop", "was written under other settings than "},
	} {
		t.Run(c.name, func(t *testing.T) {
			var dir string
			if c.stopAt == cfg.Steps {
				dir = filepath.Join(t.TempDir(), "run")
				if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err != nil {
					t.Fatal(err)
				}
			} else {
				dir = crashedRun(t, cfg, c.stopAt)
			}
			otherDir := crashedRun(t, other, c.otherAt)
			ckpt := filepath.Join(dir, checkpointDir)
			if err := os.RemoveAll(ckpt); err != nil {
				t.Fatal(err)
			}
			copyRunDir(t, filepath.Join(otherDir, checkpointDir), ckpt)
			if c.dropRecord != "" {
				os.Remove(filepath.Join(dir, checkpointRecord))
			}
			metrics, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
			_, err := resume(cfg, dir, false)
			if err == nil || !strings.Contains(err.Error(), ckpt) || !strings.Contains(err.Error(), c.want) ||
				!strings.Contains(err.Error(), "seed is 11 in config.json, 12 in the checkpoint") || !strings.Contains(err.Error(), "optimizer.adamw.lr is 0.05 in config.json, 0.1 in the checkpoint") {
				t.Fatalf("another run's checkpoint: %v", err)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, MetricsFile)); !bytes.Equal(after, metrics) {
				t.Error("the refused resume changed metrics.jsonl")
			}
		})
	}
}

// Settings edited in config.json since the run started are refused on
// resume, naming config.json and the settings, as the same change given
// as a flag is; the thread count may change.
func TestResumeRefusesAnEditedConfig(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	dir := crashedRun(t, cfg, 6)
	path := filepath.Join(dir, ConfigFile)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to, want string }{
		{`"lr": 0.05`, `"lr": 0.1`, "optimizer.adamw.lr is 0.1 in config.json, 0.05 in the checkpoint"},
		{`"seed": 11`, `"seed": 7`, "seed is 7 in config.json, 11 in the checkpoint"},
		{`"batch": 4`, `"batch": 3`, "batch is 3 in config.json, 4 in the checkpoint"},
	} {
		edited := strings.Replace(string(orig), c.from, c.to, 1)
		if edited == string(orig) {
			t.Fatalf("config.json has no %s:\n%s", c.from, orig)
		}
		if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		stored, err := LoadConfig(dir) // as dstune train --resume reads it
		if err != nil {
			t.Fatal(err)
		}
		_, err = Run(context.Background(), stored, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
		if err == nil || !strings.Contains(err.Error(), path+" differs from the settings the checkpoint (step 4) and checkpoint.json record") || !strings.Contains(err.Error(), "config.json was edited since the run started") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config.json edited (%s → %s): %v", c.from, c.to, err)
		}
	}
	// The step count edited (fewer steps than the checkpoint's would read
	// as "already complete"; more, as a change --steps would record): a
	// resume changes it only with --steps.
	for _, steps := range []string{"2", "12"} {
		if err := os.WriteFile(path, []byte(strings.Replace(string(orig), `"steps": 8`, `"steps": `+steps, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if stored, err := LoadConfig(dir); err != nil {
			t.Fatal(err)
		} else if _, err := Run(context.Background(), stored, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)}); err == nil ||
			!strings.Contains(err.Error(), path+" asks for "+steps+" steps, but the run's checkpoint (step 4) was written for 8 and config.json records no such change") {
			t.Errorf("config.json edited to %s steps: %v", steps, err)
		}
	}
	// A method's options left under another method name config.json.
	withDST := strings.Replace(string(orig), `"method": "full",`, `"method": "full", "dst": {"eps": 0.1},`, 1)
	if err := os.WriteFile(path, []byte(withDST), 0o644); err != nil {
		t.Fatal(err)
	}
	stored, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), stored, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if err == nil || !strings.Contains(err.Error(), "resume: "+path+": the configuration has options of --method dst") {
		t.Errorf("config.json with another method's options: %v", err)
	}
	// Put back, the run resumes on another thread count.
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	threads := cfg
	threads.Threads = 1
	if res, err := resume(threads, dir, false); err != nil || res.Step != 8 {
		t.Errorf("resume with config.json restored, on 1 thread: %+v, %v", res, err)
	}
}

// A resume with --allow-data-change that records the change in
// config.json and then stops before its next checkpoint (killed, or
// failing after its setup) leaves the change pending: the next plain
// resume starts the new data's epoch, and the run ends bit-identical to
// one whose first resume went through.
func TestResumeAfterADataChangeThatSavedNothing(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 12)
	stopped := crashedRun(t, cfg, 6) // checkpoint of step 4
	f, err := os.OpenFile(cfg.Data, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"tokens":[1,2,3,4,5,6]}` + "\n")
	f.Close()
	whole := filepath.Join(t.TempDir(), "whole")
	copyRunDir(t, stopped, whole)
	if _, err := resume(cfg, whole, true); err != nil {
		t.Fatal(err)
	}

	t.Run("killed", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		copyRunDir(t, stopped, dir)
		crash := errors.New("killed")
		_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, AllowDataChange: true, Source: newBigramSource(runVocab, 1),
			AfterStep: func(step int64) error {
				if step == 5 {
					return crash
				}
				return nil
			}})
		if !errors.Is(err, crash) {
			t.Fatalf("resume: %v", err)
		}
		var out bytes.Buffer
		if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1), Progress: &out}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "the data change config.json records at step 4 had not taken effect") {
			t.Errorf("output:\n%s", out.String())
		}
		sameRunFiles(t, dir, whole)
	})
	t.Run("interrupted before its first step", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		copyRunDir(t, stopped, dir)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Ctrl-C as the resume's setup ends: it stops before its
		// first step, having recorded the change.
		_, err := Run(ctx, cfg, RunOptions{Dir: dir, Resume: true, AllowDataChange: true, Source: newBigramSource(runVocab, 1),
			AfterRestore: func(int64) error { cancel(); return nil }})
		if !errors.Is(err, ErrInterrupted) {
			t.Fatalf("interrupted resume: %v", err)
		}
		if stored, err := LoadConfig(dir); err != nil || len(stored.DataChanges) != 1 {
			t.Fatalf("config.json after the interrupted resume: %+v, %v", stored.DataChanges, err)
		}
		if _, err := resume(cfg, dir, false); err != nil {
			t.Fatal(err)
		}
		sameRunFiles(t, dir, whole)
	})
}

// The run's files that are not what they should be are named, with what
// is wrong and what to do.
func TestRunDirectoryMessages(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	src := func() *bigramSource { return newBigramSource(runVocab, 1) }
	check := func(what string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: accepted", what)
			return
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant %q in it", what, err, w)
			}
		}
	}
	edit := func(dir, name string, change func([]byte) []byte) {
		t.Helper()
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, change(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	dir := crashedRun(t, cfg, 6)
	config := filepath.Join(dir, ConfigFile)
	edit(dir, ConfigFile, func([]byte) []byte { return nil })
	_, err := LoadConfig(dir)
	check("empty config.json", err, config+": the file is empty")
	_, err = resume(cfg, dir, false)
	check("resume with an empty config.json", err, config+": the file is empty")

	dir = crashedRun(t, cfg, 6)
	config = filepath.Join(dir, ConfigFile)
	edit(dir, ConfigFile, func(b []byte) []byte { return append(b, "garbage\n"...) })
	_, err = LoadConfig(dir)
	check("config.json with text after its object", err, config+": line ", "text after the JSON object")
	edit(dir, ConfigFile, func(b []byte) []byte { return b[:len(b)/2] })
	_, err = LoadConfig(dir)
	check("config.json cut short", err, config+": the file is cut short")

	dir = crashedRun(t, cfg, 6)
	edit(dir, filepath.Join(checkpointDir, "state.json"), func([]byte) []byte { return nil })
	_, err = resume(cfg, dir, false)
	check("empty state.json", err, filepath.Join(dir, checkpointDir), "state.json: the file is empty")

	// Killed before it recorded its configuration: it never started.
	never := filepath.Join(t.TempDir(), "never")
	if err := os.Mkdir(never, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(never)
	check("--resume of a run that never started", err, filepath.Join(never, ConfigFile), "the run never started", "without --resume")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("not an fs.ErrNotExist: %v", err)
	}

	// A regular file where the checkpoint directory was.
	dir = crashedRun(t, cfg, 6)
	ckpt := filepath.Join(dir, checkpointDir)
	if err := os.RemoveAll(ckpt); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ckpt, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = resume(cfg, dir, false)
	check("a file in the checkpoint's place", err, ckpt+" is not a directory (a regular file is in its place, not the checkpoint of step 4")

	// A run directory that is a dangling symbolic link.
	parent := t.TempDir()
	link := filepath.Join(parent, "link")
	if err := os.Symlink(filepath.Join(parent, "gone"), link); err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), cfg, RunOptions{Dir: link, Source: src()})
	check("a dangling symbolic link as the run directory", err, link+" is a dangling symbolic link (to "+filepath.Join(parent, "gone"))
	if _, err := os.Lstat(link); err != nil {
		t.Errorf("the link is gone: %v", err)
	}
}
