package train

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/update"
)

// evalText is the byte text the tests' examples are cut from.
const evalText = "Dynamic Subset Tuning trains a small subset of a model's parameters, " +
	"chosen anew as training goes, and ships the change as a sparse delta. " +
	"A delta applies to the model it was made from, which its base hash names."

// byteExamples writes n examples of tiny_gpt's byte tokens, the i-th
// evalText[i·stride:i·stride+length], with fields added by extra (nil: none).
func byteExamples(t *testing.T, path string, n, stride, length int, extra func(i int, row map[string]any)) [][]int64 {
	t.Helper()
	var lines []string
	var rows [][]int64
	for i := range n {
		ids := make([]int64, 0, length)
		for _, c := range []byte(evalText[i*stride : i*stride+length]) {
			ids = append(ids, int64(c))
		}
		row := map[string]any{"tokens": ids}
		if extra != nil {
			extra(i, row)
		}
		b, err := json.Marshal(row)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
		rows = append(rows, ids)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return rows
}

func readEvalModel(t *testing.T, path string) *ir.Model {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return model
}

func relDiff(a, b float64) float64 { return math.Abs(a-b) / math.Max(math.Abs(b), 1e-30) }

// tunedTinyGPT trains tiny_gpt for 4 steps on byte text, validating on 6
// rows with token accuracy, and returns the run's directory, its result
// and its validation file.
func tunedTinyGPT(t *testing.T) (run string, res *Result, validPath string) {
	t.Helper()
	modelPath := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	trainPath, validPath := filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	byteExamples(t, trainPath, 12, 9, 40, nil)
	byteExamples(t, validPath, 6, 17, 40, nil) // 6 rows: the last batch of 4 has filler rows
	opt, err := update.DefaultOptimizer(update.OptimizerAdamW)
	if err != nil {
		t.Fatal(err)
	}
	opt.SetLR(3e-3)
	cfg := Config{Model: modelPath, Data: trainPath, Valid: validPath, Task: TaskLM, Method: MethodFull,
		Optimizer: opt, Schedule: Schedule{Name: ScheduleConstant}, Steps: 4, Batch: 4, Seed: 3,
		Backend: "cpu", Threads: 2, Metric: MetricTokenAccuracy}
	run = filepath.Join(dir, "run")
	if res, err = Run(context.Background(), cfg, RunOptions{Dir: run}); err != nil {
		t.Fatal(err)
	}
	return run, res, validPath
}

// TestEvalModelIsTheRunsValidation: EvalModel of the base model gives the
// validation loss a run of it records before its first step, and of the
// run's model.onnx the one it records after its last, to float32
// rounding, with the metric too.
func TestEvalModelIsTheRunsValidation(t *testing.T) {
	modelPath := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	run, res, validPath := tunedTinyGPT(t)
	opts := EvalOptions{Task: TaskLM, Metric: MetricTokenAccuracy, Batch: 4, Threads: 2}
	for _, c := range []struct {
		model          string
		loss, accuracy float64
	}{
		{modelPath, res.InitialValidLoss, res.InitialValidMetric},
		{filepath.Join(run, ModelFile), res.ValidLoss, res.ValidMetric},
	} {
		got, err := EvalModel(context.Background(), readEvalModel(t, c.model), c.model, validPath, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: loss %.7f (run %.7f), token accuracy %.4f", filepath.Base(c.model), got.Loss, c.loss, got.Metric)
		if relDiff(got.Loss, c.loss) > 1e-6 || got.Metric != c.accuracy {
			t.Errorf("%s: loss %v, token accuracy %v; the run's validation: %v, %v", c.model, got.Loss, got.Metric, c.loss, c.accuracy)
		}
		if got.Examples != 6 || got.Targets != 6*39 || got.Batch != 4 || got.SeqLen != 40 {
			t.Errorf("%s: %+v, want 6 examples, %d targets, batches 4×40", c.model, got, 6*39)
		}
	}
	if !(res.ValidLoss < res.InitialValidLoss) {
		t.Errorf("the run did not lower the validation loss (%v → %v): the two evaluations compare nothing", res.InitialValidLoss, res.ValidLoss)
	}
}

// TestEvalModelMatchesORT: on a briefly tuned tiny_gpt, the loss is the mean over the counted targets
// of −log softmax(logits)[target], with the logits onnxruntime computes
// for each example alone and the log-softmax in float64; token accuracy
// counts the targets that are their position's most likely token. The
// examples differ in length and mask some targets out, and batches of 2
// pad and fill.
func TestEvalModelMatchesORT(t *testing.T) {
	ort.Need(t)
	run, _, _ := tunedTinyGPT(t) // a model whose predictions are right now and then
	modelPath := filepath.Join(run, ModelFile)
	dataPath := filepath.Join(t.TempDir(), "test.jsonl")
	masks := map[int][]int{}
	rows := byteExamples(t, dataPath, 3, 23, 30, func(i int, row map[string]any) {
		if i == 1 { // only the second half counts
			mask := make([]int, 30)
			for j := 15; j < 30; j++ {
				mask[j] = 1
			}
			row["loss_mask"], masks[i] = mask, mask
		}
	})
	// A fourth, shorter example: the batch pads it.
	short := rows[0][:11]
	f, err := os.OpenFile(dataPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"tokens": short})
	f.Write(append(b, '\n'))
	f.Close()
	rows = append(rows, short)

	var sum float64
	var targets, correct int
	for i, ids := range rows {
		n := int64(len(ids))
		in, err := onnx.FromInt64s("", []int64{1, n}, ids)
		if err != nil {
			t.Fatal(err)
		}
		out, err := ort.Run(modelPath, map[string]*onnx.Tensor{"tokens": in})
		if err != nil {
			t.Fatal(err)
		}
		var logits []float32
		for _, o := range out {
			if logits, err = o.Float32s(); err != nil {
				t.Fatal(err)
			}
		}
		vocab := len(logits) / len(ids)
		for pos := 0; pos+1 < len(ids); pos++ {
			if m := masks[i]; m != nil && m[pos+1] == 0 {
				continue
			}
			row := logits[pos*vocab : (pos+1)*vocab]
			top, best := math.Inf(-1), 0
			for j, x := range row {
				if float64(x) > top {
					top, best = float64(x), j
				}
			}
			var z float64
			for _, x := range row {
				z += math.Exp(float64(x) - top)
			}
			target := ids[pos+1]
			sum -= float64(row[target]) - top - math.Log(z)
			targets++
			if int64(best) == target {
				correct++
			}
		}
	}
	want := sum / float64(targets)
	got, err := EvalModel(context.Background(), readEvalModel(t, modelPath), modelPath, dataPath,
		EvalOptions{Task: TaskLM, Metric: MetricTokenAccuracy, Batch: 2, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.7f, onnxruntime + float64 log-softmax %.7f; token accuracy %d/%d", got.Loss, want, correct, targets)
	if got.Targets != targets || relDiff(got.Loss, want) > 1e-5 {
		t.Errorf("loss %v over %d targets, want %v over %d", got.Loss, got.Targets, want, targets)
	}
	if wantAcc := float64(correct) / float64(targets); got.Metric != wantAcc {
		t.Errorf("token accuracy %v, want %v", got.Metric, wantAcc)
	}
}

// TestEvalModelRefuses: a metric the task cannot have, a bad line (named
// FILE:LINE), data with no counted target, a missing file and an
// interrupted pass are errors.
func TestEvalModelRefuses(t *testing.T) {
	modelPath := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	model := readEvalModel(t, modelPath)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	byteExamples(t, good, 3, 5, 12, nil)
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.jsonl", "{\"tokens\":[1,2,3]}\n{\"tokens\":[1,2,\"x\"]}\n")
	outside := write("outside.jsonl", "{\"tokens\":[1,2,300]}\n")
	masked := write("masked.jsonl", "{\"tokens\":[1,2,3],\"loss_mask\":[1,0,0]}\n")
	lm := EvalOptions{Task: TaskLM, Batch: 2}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		data string
		opts EvalOptions
		want string
	}{
		{"accuracy for lm", nil, good, EvalOptions{Task: TaskLM, Batch: 2, Metric: MetricAccuracy}, "--metric accuracy is for --task classify"},
		{"token accuracy for classify", nil, good, EvalOptions{Task: TaskClassify, Batch: 2, Metric: MetricTokenAccuracy}, "--metric token-accuracy is for --task lm"},
		{"unknown metric", nil, good, EvalOptions{Task: TaskLM, Batch: 2, Metric: "bleu"}, `unknown --metric "bleu"`},
		{"exact match without prompts", nil, good, EvalOptions{Task: TaskLM, Batch: 2, Metric: MetricExactMatch}, `"prompt"/"completion" rows`},
		{"bad line", nil, bad, lm, "bad.jsonl:2"},
		{"token outside the vocabulary", nil, outside, lm, "outside.jsonl:1"},
		{"no counted target", nil, masked, lm, "no example has a target that counts"},
		{"missing file", nil, filepath.Join(dir, "none.jsonl"), lm, "none.jsonl"},
		{"no batch", nil, good, EvalOptions{Task: TaskLM}, "--batch 0"},
		{"interrupted", cancelled, good, lm, "interrupted"},
	} {
		ctx := c.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		_, err := EvalModel(ctx, model, modelPath, c.data, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
		if c.ctx != nil && !errors.Is(err, ErrInterrupted) {
			t.Errorf("%s: %v does not wrap ErrInterrupted", c.name, err)
		}
	}
}
