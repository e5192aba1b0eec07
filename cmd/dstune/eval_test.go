package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/train"
)

// evalJSON runs dstune eval --json and decodes its report.
func evalJSON(t *testing.T, args ...string) evalReport {
	t.Helper()
	code, stdout, stderr := dstune(append(append([]string{"eval"}, args...), "--json")...)
	if code != 0 {
		t.Fatalf("eval %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	var rep evalReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("eval --json printed %q: %v", stdout, err)
	}
	return rep
}

// TestEvalIsTheRunsValidation: dstune eval of the base model gives the
// validation loss a run records at step 0, of a full run's model.onnx and
// of the base with a DST run's delta the one the run records after its
// last step (to float32 rounding; with --precision bf16, a bf16 run's),
// and a delta given to another model than
// its base is refused, naming the delta.
func TestEvalIsTheRunsValidation(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, validPath := tinyGPTData(t)
	dir := t.TempDir()
	runs := map[string]string{train.MethodFull: filepath.Join(dir, "full"), train.MethodDST: filepath.Join(dir, "dst")}
	valid := map[string][]float64{} // the run's first and last validation loss
	methodArgs := map[string][]string{train.MethodFull: nil, train.MethodDST: {"--eps", "0.05"}}
	for method, run := range runs {
		args := []string{"train", model, "--data", trainPath, "--valid", validPath, "--task", "lm", "--steps", "3",
			"--batch", "4", "--lr", "3e-3", "--method", method, "--threads", "2", "--out", run}
		code, _, stderr := dstune(append(args, methodArgs[method]...)...)
		if code != 0 {
			t.Fatalf("train --method %s: exit %d: %s", method, code, stderr)
		}
		recs := sharedtest.ReadMetrics(t, run)
		if recs[0].Step != 0 || recs[0].ValidLoss == nil || recs[len(recs)-1].ValidLoss == nil {
			t.Fatalf("%s: metrics.jsonl lacks the step-0 or last validation", run)
		}
		valid[method] = []float64{*recs[0].ValidLoss, *recs[len(recs)-1].ValidLoss}
	}
	check := func(what string, got evalReport, want float64) {
		t.Helper()
		if got.Loss == nil {
			t.Fatalf("%s: loss null, the run's validation loss %v", what, want)
		}
		loss := *got.Loss
		t.Logf("%s: eval %.7f, the run %.7f", what, loss, want)
		if math.Abs(loss-want) > 1e-6*math.Abs(want) {
			t.Errorf("%s: eval's loss %v, the run's validation loss %v", what, loss, want)
		}
		if got.Examples != 32 || got.Targets != 32*63 || got.Perplexity == nil || math.Abs(*got.Perplexity-math.Exp(loss)) > 1e-9**got.Perplexity {
			t.Errorf("%s: %+v, want 32 examples, %d targets and the perplexity", what, got, 32*63)
		}
	}
	base := evalJSON(t, model, "--data", validPath, "--task", "lm", "--batch", "4", "--threads", "2")
	check("the base model (full run, step 0)", base, valid[train.MethodFull][0])
	check("the base model (dst run, step 0)", base, valid[train.MethodDST][0])
	tuned := filepath.Join(runs[train.MethodFull], train.ModelFile)
	check("the full run's model.onnx", evalJSON(t, tuned, "--data", validPath, "--task", "lm", "--batch", "4"), valid[train.MethodFull][1])
	delta := filepath.Join(runs[train.MethodDST], dst.DeltaFile)
	withDelta := evalJSON(t, model, "--delta", delta, "--data", validPath, "--task", "lm", "--batch", "4")
	check("the base with the dst run's delta", withDelta, valid[train.MethodDST][1])
	if len(withDelta.Deltas) != 1 || withDelta.Deltas[0] != delta || withDelta.Model != model {
		t.Errorf("the report names model %q and deltas %q", withDelta.Model, withDelta.Deltas)
	}

	// A run with bfloat16 products validates with them: eval
	// --precision bf16 gives its losses.
	bf16Run := filepath.Join(dir, "dst-bf16")
	if code, _, stderr := dstune("train", model, "--data", trainPath, "--valid", validPath, "--task", "lm", "--steps", "3",
		"--batch", "4", "--lr", "3e-3", "--method", "dst", "--eps", "0.05", "--precision", "bf16", "--threads", "2", "--out", bf16Run); code != 0 {
		t.Fatalf("train --precision bf16: exit %d: %s", code, stderr)
	}
	recs := sharedtest.ReadMetrics(t, bf16Run)
	if recs[0].ValidLoss == nil || recs[len(recs)-1].ValidLoss == nil {
		t.Fatalf("%s: metrics.jsonl lacks the step-0 or last validation", bf16Run)
	}
	check("the base model in bf16 (step 0)", evalJSON(t, model, "--data", validPath, "--task", "lm", "--batch", "4", "--precision", "bf16"), *recs[0].ValidLoss)
	check("the base with the bf16 run's delta, in bf16", evalJSON(t, model, "--delta", filepath.Join(bf16Run, dst.DeltaFile), "--data", validPath, "--task", "lm", "--batch", "4", "--precision", "bf16"),
		*recs[len(recs)-1].ValidLoss)

	// The delta was made from the base model, not the full run's.
	code, _, stderr := dstune("eval", tuned, "--delta", delta, "--data", validPath, "--task", "lm")
	if code != 1 || !strings.Contains(stderr, delta) || !strings.Contains(stderr, "different base model") {
		t.Errorf("a delta on another model: exit %d, %s", code, stderr)
	}
	// The human-readable report says the same.
	code, stdout, stderr := dstune("eval", model, "--delta", delta, "--data", validPath, "--task", "lm", "--batch", "4", "--metric", "token-accuracy")
	if code != 0 || !strings.Contains(stdout, "32 examples, 2016 target tokens (batches of 4×64)") ||
		!strings.Contains(stdout, "perplexity") || !strings.Contains(stdout, "token accuracy") || !strings.Contains(stderr, "applied "+delta) {
		t.Errorf("eval: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// TestEvalRefuses: usage errors exit 2 with the synopsis, missing files
// and bad data 1, each naming what is wrong.
func TestEvalRefuses(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	good := filepath.Join(dir, "test.jsonl")
	bad := filepath.Join(dir, "bad.jsonl")
	writeLines(t, good, []string{`{"tokens":[72,101,108,108,111]}`})
	writeLines(t, bad, []string{`{"tokens":[72,101,108]}`, `{"tokens":[72,"e"]}`})
	single := filepath.Join(dir, "single.jsonl")
	writeLines(t, single, []string{`{"tokens":[72]}`, `{"tokens":[101]}`})
	long := filepath.Join(dir, "long.jsonl") // past tiny_gpt's 64 positions
	writeLines(t, long, byteCorpus([]byte(strings.Repeat("the quick brown fox jumps over the lazy dog. ", 4)), 80, 40))
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{model, "--task", "lm"}, 2, "--data TEST.jsonl is required"},
		{[]string{model, "--data", good}, 2, "--task is required"},
		{[]string{"--data", good, "--task", "lm"}, 2, "want exactly one model file"},
		{[]string{model, "--data", good, "--task", "lm", "--metric", "accuracy"}, 2, "--metric accuracy is for --task classify"},
		{[]string{model, "--data", good, "--task", "classify", "--metric", "exact-match"}, 2, "--metric exact-match is for --task lm"},
		{[]string{model, "--data", good, "--task", "regress"}, 2, `unknown --task "regress"`},
		{[]string{model, "--data", good, "--task", "lm", "--batch", "0"}, 2, "--batch 0"},
		{[]string{model, "--data", good, "--task", "lm", "--precision", "fp16"}, 2, `--precision: unknown precision "fp16" (want fp32 or bf16)`},
		{[]string{model, "--data", filepath.Join(dir, "none.jsonl"), "--task", "lm"}, 1, "none.jsonl: no such file"},
		{[]string{filepath.Join(dir, "none.onnx"), "--data", good, "--task", "lm"}, 1, "none.onnx"},
		{[]string{model, "--data", good, "--task", "lm", "--delta", filepath.Join(dir, "none.safetensors")}, 1, "none.safetensors"},
		{[]string{model, "--data", bad, "--task", "lm"}, 1, "bad.jsonl:2"},
		{[]string{model, "--data", single, "--task", "lm"}, 1, "single.jsonl: every example has one token"},
		{[]string{model, "--data", long, "--task", "lm"}, 1, "80 tokens): the model fails on it (are the sequences, with any soft prompt, longer than its positions? --max-len truncates examples)"},
	} {
		code, stdout, stderr := dstune(append([]string{"eval"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("eval %s: exit %d (want %d), stderr %q (want %q), stdout %q", strings.Join(c.args, " "), code, c.code, stderr, c.want, stdout)
		}
		if c.code == 2 && !strings.Contains(stderr, "usage: dstune eval MODEL.onnx") {
			t.Errorf("eval %s: no synopsis in %q", strings.Join(c.args, " "), stderr)
		}
	}
}

// TestEvalClassify: on tiny_bert's classifier, dstune eval of the base
// model and of a full run's model.onnx gives the run's step-0 and last
// validation loss and accuracy; a classifier has no perplexity.
func TestEvalClassify(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_bert", "model.onnx")
	var lines []string
	for i := range 40 {
		toks := make([]int, 10)
		for j := range toks {
			toks[j] = int("abcdefgh"[(i*7+j*3)%8])
		}
		if i%2 == 1 {
			toks[i%10] = 'x'
		}
		b, _ := json.Marshal(map[string]any{"tokens": toks, "label": i % 2})
		lines = append(lines, string(b))
	}
	dir := t.TempDir()
	trainPath, validPath := filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	writeLines(t, trainPath, lines[:28])
	writeLines(t, validPath, lines[28:]) // 12 rows: batches of 8 and 4 (and 4 filler rows)
	run := filepath.Join(dir, "run")
	code, _, stderr := dstune("train", model, "--data", trainPath, "--valid", validPath, "--task", "classify", "--metric", "accuracy",
		"--steps", "6", "--batch", "8", "--lr", "1e-3", "--threads", "2", "--out", run)
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr)
	}
	recs := sharedtest.ReadMetrics(t, run)
	first, last := recs[0], recs[len(recs)-1]
	for _, c := range []struct {
		model string
		rec   sharedtest.Record
	}{{model, first}, {filepath.Join(run, train.ModelFile), last}} {
		got := evalJSON(t, c.model, "--data", validPath, "--task", "classify", "--metric", "accuracy")
		loss, acc := *c.rec.ValidLoss, c.rec.Fields["accuracy"]
		if got.Accuracy == nil || acc == nil || got.Loss == nil {
			t.Fatalf("%s: eval's accuracy %v and loss %v, the run's %v", c.model, got.Accuracy, got.Loss, acc)
		}
		t.Logf("%s: eval loss %.7f, accuracy %v; the run %.7f, %v", c.model, *got.Loss, *got.Accuracy, loss, acc)
		if math.Abs(*got.Loss-loss) > 1e-6*math.Abs(loss) || *got.Accuracy != acc {
			t.Errorf("%s: eval %+v, the run's validation loss %v, accuracy %v", c.model, got, loss, acc)
		}
		if got.Examples != 12 || got.Targets != 12 || got.Perplexity != nil {
			t.Errorf("%s: %+v, want 12 examples, 12 targets, no perplexity", c.model, got)
		}
	}
}

// TestEvalReportNonFinite: a diverged model's NaN loss, or a loss whose
// perplexity overflows, is still a report: null where JSON holds no
// number (encoding/json refuses NaN and ±Inf).
func TestEvalReportNonFinite(t *testing.T) {
	for _, loss := range []float64{math.NaN(), 800, math.Inf(1)} {
		rep := evalReport{Task: "lm", Deltas: []string{}, Loss: finite(loss), Perplexity: finite(math.Exp(loss))}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatalf("loss %v: %v", loss, err)
		}
		var back map[string]any
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if _, ok := back["perplexity"]; ok {
			t.Errorf("loss %v: perplexity %v, want it left out", loss, back["perplexity"])
		}
		if v, ok := back["loss"]; !ok || (math.IsNaN(loss) || math.IsInf(loss, 0)) != (v == nil) || (v != nil && v.(float64) != loss) {
			t.Errorf("loss %v: JSON loss %v (present %v)", loss, v, ok)
		}
	}
}
