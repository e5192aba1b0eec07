package peft_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/dstune/dstune/accel/cpu" // the "cpu" backend
	"github.com/dstune/dstune/dst/experiments/tinytask/task"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// tinyRun is a run of tiny_gpt on the small task with the given method.
func tinyRun(t *testing.T, steps int64, method string) train.Config {
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
	opt.SetLR(1e-2)
	return train.Config{Model: model, Data: data, Valid: valid, Task: train.TaskLM, Method: method,
		Optimizer: opt, Schedule: train.Schedule{Name: train.ScheduleConstant}, Steps: steps, Batch: 8, Seed: 3,
		Backend: "cpu", Threads: 2, EvalEvery: steps, CheckpointEvery: 3, Metric: train.MetricTokenAccuracy}
}

func loraRun(t *testing.T, steps int64, o peft.LoRAOptions) train.Config {
	cfg := tinyRun(t, steps, train.MethodLoRA)
	cfg.LoRA = o.JSON()
	return cfg
}

func promptRun(t *testing.T, steps int64, o peft.PromptOptions) train.Config {
	cfg := tinyRun(t, steps, train.MethodPrompt)
	cfg.Prompt = o.JSON()
	return cfg
}

var errCrash = errors.New("simulated crash")

// TestRunsResumeBitIdentically: LoRA (with dropout, whose masks depend on
// the step) and prompt-tuning runs stopped after step 7 (last checkpoint
// at 6) and resumed end with the same adapter file, parameters, optimizer
// state and losses as uninterrupted runs.
func TestRunsResumeBitIdentically(t *testing.T) {
	for name, cfg := range map[string]func(t *testing.T) train.Config{
		"lora": func(t *testing.T) train.Config {
			return loraRun(t, 10, peft.LoRAOptions{Rank: 4, Alpha: 8, Dropout: 0.1})
		},
		"prompt": func(t *testing.T) train.Config {
			return promptRun(t, 10, peft.PromptOptions{Length: 4, At: peft.PromptAfterBOS, Init: peft.PromptInitVocab})
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := cfg(t)
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
			for _, f := range []string{peft.AdapterFile, peft.AdapterConfigFile, "checkpoint/params.safetensors", "checkpoint/optimizer.safetensors"} {
				a, _ := os.ReadFile(filepath.Join(whole, f))
				b, _ := os.ReadFile(filepath.Join(part, f))
				if len(a) == 0 || !bytes.Equal(a, b) {
					t.Fatalf("%s differs after resuming (%d and %d bytes)", f, len(a), len(b))
				}
			}
			ra, rb := sharedtest.StepRecords(sharedtest.ReadMetrics(t, whole)), sharedtest.StepRecords(sharedtest.ReadMetrics(t, part))
			if len(ra) != 10 || len(rb) != 10 {
				t.Fatalf("%d and %d records", len(ra), len(rb))
			}
			for i := range ra {
				for _, key := range []string{"loss", "valid_loss", "token_accuracy", "free_params", "eps"} {
					if ra[i].Fields[key] != rb[i].Fields[key] {
						t.Fatalf("step %d %s: %v uninterrupted, %v resumed", i+1, key, ra[i].Fields[key], rb[i].Fields[key])
					}
				}
			}
			if acc, ok := ra[9].Fields["token_accuracy"].(float64); !ok || acc < 0 || acc > 1 {
				t.Errorf("the last record's token_accuracy is %v", ra[9].Fields["token_accuracy"])
			}
			first, last := ra[0].Fields["loss"].(float64), ra[9].Fields["loss"].(float64)
			if !(last < first) {
				t.Errorf("the training loss went from %g to %g", first, last)
			}
		})
	}
}

// TestLoRAStartsFromTheModel: B starts at zero, so before the first step
// the model with adapters is the model itself — the validation loss of a
// LoRA run's step 0 is the full fine-tuning run's, bit for bit — and the
// run's budget is r·(in + out) per target.
func TestLoRAStartsFromTheModel(t *testing.T) {
	initial := func(cfg train.Config) (float64, []sharedtest.Record) {
		run := filepath.Join(t.TempDir(), "run")
		res, err := train.Run(context.Background(), cfg, train.RunOptions{Dir: run})
		if err != nil {
			t.Fatal(err)
		}
		return res.InitialValidLoss, sharedtest.StepRecords(sharedtest.ReadMetrics(t, run))
	}
	full, _ := initial(tinyRun(t, 1, train.MethodFull))
	lora, recs := initial(loraRun(t, 1, peft.LoRAOptions{Rank: 2, Alpha: 4}))
	if full != lora {
		t.Errorf("initial validation loss %v with adapters, %v without", lora, full)
	}
	// tiny_gpt's targets: c_attn 64→192, c_proj 64→64, mlp_fc 64→256,
	// mlp_proj 256→64, in two blocks; 120,576 parameters.
	free := 2 * 2 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))
	var got struct {
		Free int64   `json:"free_params"`
		Eps  float64 `json:"eps"`
	}
	data, _ := json.Marshal(recs[0].Fields)
	json.Unmarshal(data, &got)
	if got.Free != int64(free) || got.Eps != float64(free)/120576 {
		t.Errorf("budget %+v, want %d free parameters of 120,576", got, free)
	}
}
