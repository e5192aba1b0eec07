package e2e

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// writeLM writes lm training data, one {"tokens": [...]} line per sequence.
func writeLM(t *testing.T, path string, seqs [][]int) {
	t.Helper()
	var b strings.Builder
	for _, s := range seqs {
		line, err := json.Marshal(map[string][]int{"tokens": s})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// stepLosses reads the training loss of every step from a run's
// metrics.jsonl.
func stepLosses(t *testing.T, run string) []float64 {
	t.Helper()
	f, err := os.Open(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var losses []float64
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var m struct {
			Step int      `json:"step"`
			Loss *float64 `json:"loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if m.Step > 0 && m.Loss != nil {
			losses = append(losses, *m.Loss)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return losses
}

// checkLossDecreases: the mean loss of the last k steps is below
// factor times that of the first k.
func checkLossDecreases(t *testing.T, run string, k int, factor float64) {
	t.Helper()
	losses := stepLosses(t, run)
	if len(losses) < 2*k {
		t.Fatalf("%d steps in metrics.jsonl, want at least %d", len(losses), 2*k)
	}
	mean := func(xs []float64) float64 {
		var s float64
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	first, last := mean(losses[:k]), mean(losses[len(losses)-k:])
	t.Logf("%s: mean loss of the first %d steps %.4f, of the last %d %.4f", filepath.Base(run), k, first, k, last)
	if !(last < factor*first) {
		t.Errorf("the loss did not decrease: %.4f → %.4f (want below %.2f×)", first, last, factor)
	}
}

// TestLlamaExportsTrain fine-tunes make_llama.py's torch.onnx exports
// (tests/llama/testdata) on arithmetic progressions of tokens with
// `dstune train --method full` and `--method dst`; the loss decreases.
// The DST run's delta is applied and checked bit for bit against the run
// and, in onnxruntime, against `dstune run --delta`.
func TestLlamaExportsTrain(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var seqs [][]int
	for range 256 {
		start, step := rng.IntN(96), []int{1, 2, 3, 5}[rng.IntN(4)]
		s := make([]int, 12)
		for j := range s {
			s[j] = (start + j*step) % 96
		}
		seqs = append(seqs, s)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "train.jsonl")
	writeLM(t, data, seqs)
	for _, c := range []struct {
		model, method string
		factor        float64
	}{
		{"swiglu_causal/opset14.onnx", "full", 0.6},
		{"geglu_sliding/opset17.onnx", "full", 0.6},
		{"swiglu_causal/opset14.onnx", "dst", 0.95},
		{"geglu_sliding/opset17.onnx", "dst", 0.95},
		{"swiglu_causal/functions.onnx", "dst", 0.95},
	} {
		t.Run(strings.TrimSuffix(c.model, ".onnx")+"/"+c.method, func(t *testing.T) {
			model := filepath.Join("..", "llama", "testdata", c.model)
			run := filepath.Join(t.TempDir(), "run")
			args := []string{"train", model, "--data", data, "--task", "lm", "--method", c.method,
				"--steps", "40", "--batch", "8", "--lr", "1e-2", "--threads", "2", "--out", run}
			if c.method == "dst" {
				args = append(args, "--eps", "0.05")
			}
			dstune(t, args...)
			checkLossDecreases(t, run, 5, c.factor)
			if c.method != "dst" {
				return
			}
			deltaPath := filepath.Join(run, "delta.safetensors")
			tuned := filepath.Join(t.TempDir(), "tuned.onnx")
			dstune(t, "apply", model, deltaPath, "-o", tuned)
			checkApplyIsTraining(t, model, tuned, run)
			tokens, err := onnx.ReadTensorFile(filepath.Join(filepath.Dir(model), "input_0.pb"))
			if err != nil {
				t.Fatal(err)
			}
			tokens.Name = "tokens"
			checkORT(t, model, tuned, deltaPath, tokens)
		})
	}
}

// TestStories260KTrainDST fine-tunes llama2.c's pretrained stories260K
// with DST on phrases of random tokens said twice (the second time is
// predictable from the first): the loss decreases within ten steps, and
// the delta applies as in TestTinyGPT.
func TestStories260KTrainDST(t *testing.T) {
	model := sharedtest.Path(t, "models", "stories260K", "stories260K.onnx")
	rng := rand.New(rand.NewPCG(7, 8))
	var seqs [][]int
	for range 128 {
		phrase := make([]int, 7)
		for j := range phrase {
			phrase[j] = 3 + rng.IntN(509)
		}
		s := append([]int{1}, phrase...)
		seqs = append(seqs, append(append(s, phrase...), phrase[0]))
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "train.jsonl")
	writeLM(t, data, seqs)
	run := filepath.Join(dir, "run")
	dstune(t, "train", model, "--data", data, "--task", "lm", "--method", "dst", "--eps", "0.01",
		"--steps", "10", "--batch", "8", "--lr", "1e-2", "--threads", "2", "--out", run)
	checkLossDecreases(t, run, 3, 0.95)
	deltaPath := filepath.Join(run, "delta.safetensors")
	tuned := filepath.Join(dir, "tuned.onnx")
	dstune(t, "apply", model, deltaPath, "-o", tuned)
	checkApplyIsTraining(t, model, tuned, run)
	tokens, err := onnx.ReadTensorFile(sharedtest.Path(t, "models", "stories260K", "test_data_set_0", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	tokens.Name = "tokens"
	checkORT(t, model, tuned, deltaPath, tokens)
}
