package dst_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/dstune/dstune/accel/cpu" // the "cpu" backend
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/dst/experiments/tinytask/task"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// tinyRun is a DST run of tiny_gpt on the small task.
func tinyRun(t *testing.T, steps int64, dc dst.Options) train.Config {
	t.Helper()
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	tr, va := task.Split(1, 200, 16)
	data, valid := filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	if err := os.WriteFile(data, task.JSONL(tr), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(valid, task.JSONL(va), 0o644); err != nil {
		t.Fatal(err)
	}
	opt, _ := update.DefaultOptimizer(update.OptimizerAdamW)
	opt.SetLR(3e-3)
	return train.Config{Model: model, Data: data, Valid: valid, Task: train.TaskLM, Method: train.MethodDST, DST: dc.JSON(),
		Optimizer: opt, Schedule: train.Schedule{Name: train.ScheduleConstant}, Steps: steps, Batch: 8, Seed: 3,
		Backend: "cpu", Threads: 2, EvalEvery: steps, CheckpointEvery: 3}
}

// TestRunTinyGPT trains tiny_gpt with --method dst through train.Run: the
// metrics carry DST's fields every step, the delta in the run directory
// applied to the base model's initializers gives the checkpoint's
// parameters exactly, and its base hash is the model's.
func TestRunTinyGPT(t *testing.T) {
	c := dst.DefaultOptions()
	c.Eps = 1e-2
	cfg := tinyRun(t, 8, c)
	run := filepath.Join(t.TempDir(), "run")
	if _, err := train.Run(context.Background(), cfg, train.RunOptions{Dir: run}); err != nil {
		t.Fatal(err)
	}
	recs := sharedtest.StepRecords(sharedtest.ReadMetrics(t, run))
	if len(recs) != 8 {
		t.Fatalf("%d step records, want 8", len(recs))
	}
	for i, r := range recs {
		if r.Eps == nil || r.DSTMS == nil || r.OptimizerMS == nil || r.ExactSelections == nil || len(r.Silos) != 28 {
			t.Fatalf("step %d: record lacks DST fields: %v", i+1, r.Fields)
		}
		if ok := r.EpsAlg2 != nil; ok != (i > 0) {
			t.Fatalf("step %d: eps_alg2 present %v (Algorithm 2 runs from step 2)", i+1, ok)
		}
		if ok := r.Churn != nil; ok != (i > 0) {
			t.Fatalf("step %d: churn present %v", i+1, ok)
		}
	}

	d, err := dst.ReadDelta(filepath.Join(run, dst.DeltaFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.ReadFile(cfg.Model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	inits, err := dst.InitializersOf(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckBase(inits); err != nil {
		t.Fatal(err)
	}
	if d.Meta.Steps != 8 || d.Meta.Epsilon != 1e-2 || d.Meta.Silo != dst.SiloModuleLayer || d.Meta.Distance != dst.DistanceInvRel {
		t.Fatalf("delta metadata %+v", d.Meta)
	}
	params := map[string][]float32{}
	for _, it := range inits {
		if it.DType == "F32" {
			params[it.Name] = sharedtest.Float32s(it.Data)
		}
	}
	if err := d.ApplyTo(params); err != nil {
		t.Fatal(err)
	}
	ckpt, err := safetensors.ReadFile(filepath.Join(run, "checkpoint", "params.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tensor := range ckpt.Tensors {
		want := sharedtest.Float32s(tensor.Data)
		got := params[tensor.Name]
		var kept int64
		if td := d.Tensor(tensor.Name); td != nil {
			kept = int64(len(td.Indices))
		}
		if k := dst.SubsetSize(1e-2, int64(len(want))); kept != k {
			t.Fatalf("%s: delta changes %d entries, k = %d", tensor.Name, kept, k)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s[%d]: base+delta %v, trained %v", tensor.Name, i, got[i], want[i])
			}
		}
	}
}

var errCrash = errors.New("simulated crash")

// TestRunResumesBitIdentically: a DST run stopped after step 7 (last
// checkpoint at 6) and resumed ends with the same parameters, delta and
// metrics as an uninterrupted run, for the modes with state.
func TestRunResumesBitIdentically(t *testing.T) {
	for name, mod := range map[string]func(c *dst.Options){
		"iterative": func(c *dst.Options) {},
		"no-churn":  func(c *dst.Options) { c.Churn = false },
		"module":    func(c *dst.Options) { c.Silo = dst.SiloModule },
	} {
		t.Run(name, func(t *testing.T) {
			c := dst.DefaultOptions()
			c.Eps = 2e-2
			mod(&c)
			cfg := tinyRun(t, 10, c)
			whole := filepath.Join(t.TempDir(), "whole")
			if _, err := train.Run(context.Background(), cfg, train.RunOptions{Dir: whole}); err != nil {
				t.Fatal(err)
			}
			part := filepath.Join(t.TempDir(), "part")
			_, err := train.Run(context.Background(), cfg, train.RunOptions{Dir: part, AfterStep: func(step int64) error {
				if step == 7 {
					return errCrash
				}
				return nil
			}})
			if !errors.Is(err, errCrash) {
				t.Fatalf("first part: %v", err)
			}
			if _, err := train.Run(context.Background(), cfg, train.RunOptions{Dir: part, Resume: true}); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{dst.DeltaFile, "checkpoint/params.safetensors"} {
				a, _ := os.ReadFile(filepath.Join(whole, f))
				b, _ := os.ReadFile(filepath.Join(part, f))
				if len(a) == 0 || !bytes.Equal(a, b) {
					t.Fatalf("%s differs after resuming (%d and %d bytes)", f, len(a), len(b))
				}
			}
			ra, rb := sharedtest.StepRecords(sharedtest.ReadMetrics(t, whole)), sharedtest.StepRecords(sharedtest.ReadMetrics(t, part))
			if len(ra) != len(rb) {
				t.Fatalf("%d and %d records", len(ra), len(rb))
			}
			for i := range ra {
				for _, key := range []string{"loss", "eps", "eps_alg2", "churn"} {
					if ra[i].Fields[key] != rb[i].Fields[key] {
						t.Fatalf("step %d %s: %v uninterrupted, %v resumed", i+1, key, ra[i].Fields[key], rb[i].Fields[key])
					}
				}
			}
		})
	}
}

// TestRunSeedFile: a DST run whose Θ0 lives in a seed file (mapped only
// while each silo is selected, the training arena's dead pages dropped
// meanwhile) ends with the same bits as one holding Θ0 in memory, in the
// iterative, exact and normalized selections and with a fixed subset, and
// leaves no seed file behind.
func TestRunSeedFile(t *testing.T) {
	modes := map[string]func(*dst.Options){
		"iterative":  func(*dst.Options) {},
		"exact":      func(o *dst.Options) { o.Threshold = dst.ThresholdExact },
		"normalized": func(o *dst.Options) { o.Normalize = dst.NormalizeSize },
		"fixed":      func(o *dst.Options) { o.Churn = false },
	}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			c := dst.DefaultOptions()
			c.Eps = 1e-2
			mode(&c)
			checkSeedFiles(t, tinyRun(t, 5, c))
		})
	}
}

// checkSeedFiles runs cfg with Θ0 in memory and with Θ0 in files (the
// seed file forced at any size): the deltas must be the same bytes, and
// no seed file may stay in the run directory.
func checkSeedFiles(t *testing.T, cfg train.Config) {
	t.Helper()
	var deltas [2][]byte
	for i, fileMin := range []int64{-1, 1} {
		run := filepath.Join(t.TempDir(), "run")
		if _, err := train.Run(context.Background(), cfg, train.RunOptions{Dir: run, SeedFileMin: fileMin}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(run, dst.DeltaFile))
		if err != nil {
			t.Fatal(err)
		}
		deltas[i] = b
		left, _ := filepath.Glob(filepath.Join(run, ".seed-*"))
		if len(left) > 0 {
			t.Fatalf("seed files left behind: %v", left)
		}
	}
	if !bytes.Equal(deltas[0], deltas[1]) {
		t.Fatal("the delta with Θ0 in files differs from the one with Θ0 in memory")
	}
}

// TestRunSeedFileMapped: on gpt_bench (a 21 MB file the reader maps), a
// DST run with Θ0 in files — the float32 weights aligned in the mapped
// model read in place, the others in a seed file — ends with the same
// delta as one holding Θ0 in memory, and leaves no seed file.
func TestRunSeedFileMapped(t *testing.T) {
	model := sharedtest.Path(t, "bench", "gpt_bench.onnx")
	data := sharedtest.Path(t, "bench", "train_gpt.jsonl")
	c := dst.DefaultOptions()
	c.Eps = 1e-3
	opt, _ := update.DefaultOptimizer(update.OptimizerAdamW)
	cfg := train.Config{Model: model, Data: data, Task: train.TaskLM, Method: train.MethodDST, DST: c.JSON(),
		Optimizer: opt, Schedule: train.Schedule{Name: train.ScheduleConstant}, Steps: 3, Batch: 2, MaxLen: 32, Seed: 1,
		Backend: "cpu", Threads: 2}
	checkSeedFiles(t, cfg)
}
