package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// tinyGPTData writes training and validation text for tiny_gpt (a byte
// LM): the repository's own README and DEVELOPERS notes, 64-byte windows,
// the last 32 windows held out for validation.
func tinyGPTData(t *testing.T) (trainPath, validPath string) {
	t.Helper()
	var text []byte
	for _, f := range []string{"../../README.md", "../../DEVELOPERS.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text = append(text, b...)
	}
	lines := byteCorpus(text, 64, 48)
	if len(lines) < 100 {
		t.Fatalf("only %d windows of text", len(lines))
	}
	dir := t.TempDir()
	trainPath, validPath = filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	writeLines(t, trainPath, lines[:len(lines)-32])
	writeLines(t, validPath, lines[len(lines)-32:])
	return trainPath, validPath
}

func TestTrainTinyGPTLowersValidationLoss(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, validPath := tinyGPTData(t)
	run := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := dstune("train", model, "--data", trainPath, "--valid", validPath, "--task", "lm",
		"--steps", "30", "--batch", "8", "--lr", "2e-3", "--eval-every", "10", "--threads", "2", "--out", run)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	recs := sharedtest.ReadMetrics(t, run)
	first, last := *recs[0].ValidLoss, *recs[len(recs)-1].ValidLoss
	t.Logf("tiny_gpt, 30 AdamW steps of 8×64 bytes: validation loss %.4f → %.4f", first, last)
	if !(last < first-1.0) {
		t.Errorf("validation loss %.4f → %.4f: not clearly lower\n%s", first, last, stdout)
	}
	if !strings.Contains(stdout, "step 30/30") || !strings.Contains(stdout, "fine-tuned model: ") {
		t.Errorf("output:\n%s", stdout)
	}
	// The fine-tuned model is the original file with new weights: it
	// loads, and runs.
	tuned := filepath.Join(run, "model.onnx")
	orig, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(tuned)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(orig) || bytes.Equal(got, orig) {
		t.Errorf("model.onnx: %d bytes (original %d), identical %v", len(got), len(orig), bytes.Equal(got, orig))
	}
	if m, err := onnx.ReadFile(tuned); err != nil {
		t.Error(err)
	} else {
		m.Close()
	}
}

// startTrain runs dstune train as a child process (this test binary).
func startTrain(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	js, _ := json.Marshal(append([]string{"train"}, args...))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DSTUNE_TEST_MAIN="+string(js))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// waitForStep waits until metrics.jsonl records step ≥ step.
func waitForStep(t *testing.T, run string, step int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		f, err := os.Open(filepath.Join(run, "metrics.jsonl"))
		if err == nil {
			sc := bufio.NewScanner(f)
			n := int64(0)
			for sc.Scan() {
				var rec struct{ Step int64 }
				if json.Unmarshal(sc.Bytes(), &rec) == nil {
					n = max(n, rec.Step)
				}
			}
			f.Close()
			if n >= step {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("step %d not reached", step)
}

// TestTrainDivergedValidationLoss: a step whose parameters are finite
// but whose validation loss is not (SGD at a learning rate of 1e38) stops
// the run as a diverged loss does, naming the step and what was kept.
func TestTrainDivergedValidationLoss(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, validPath := tinyGPTData(t)
	run := filepath.Join(t.TempDir(), "run")
	code, _, stderr := dstune("train", model, "--data", trainPath, "--valid", validPath, "--task", "lm",
		"--steps", "3", "--batch", "2", "--optimizer", "sgd", "--lr", "1e38", "--eval-every", "1", "--threads", "1", "--out", run)
	if code != 1 || !strings.Contains(stderr, "step 1: validation loss is NaN; no checkpoint was written yet") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

// TestTrainPadIDOutsideVocabulary: --pad-id past the model's vocabulary
// is refused naming it, before any step (it failed inside the embedding's
// Gather, blamed on the batch's shape).
func TestTrainPadIDOutsideVocabulary(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, _ := tinyGPTData(t)
	code, _, stderr := dstune("train", model, "--data", trainPath, "--task", "lm", "--steps", "2", "--batch", "2",
		"--pad-id", "999", "--threads", "1", "--out", filepath.Join(t.TempDir(), "run"))
	if code != 1 || !strings.Contains(stderr, "--pad-id 999 is outside the model's vocabulary [0, 256)") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

// TestTrainKilledAndResumedIsBitIdentical kills a tiny_gpt run mid-way
// (SIGKILL: steps after the last checkpoint are lost; SIGINT, and SIGHUP
// from a terminal closing: the run saves a checkpoint and exits with
// 130), resumes it, and compares the final parameters bit for bit with an
// uninterrupted run.
func TestTrainKilledAndResumedIsBitIdentical(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, validPath := tinyGPTData(t)
	args := func(run string) []string {
		return []string{model, "--data", trainPath, "--valid", validPath, "--task", "lm", "--steps", "60", "--batch", "4",
			"--optimizer", "adafactor", "--schedule", "linear", "--warmup", "3", "--seed", "5",
			"--eval-every", "20", "--checkpoint-every", "7", "--threads", "2", "--out", run}
	}
	whole := filepath.Join(t.TempDir(), "whole")
	if code, _, stderr := dstune(append([]string{"train"}, args(whole)...)...); code != 0 {
		t.Fatalf("uninterrupted run: exit %d: %s", code, stderr)
	}
	want := sharedtest.CheckpointParams(t, whole)
	wantModel, err := os.ReadFile(filepath.Join(whole, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}

	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			if sig == syscall.SIGHUP && signal.Ignored(sig) {
				t.Skip("SIGHUP is ignored here (nohup), and so in the run, which keeps it so")
			}
			run := filepath.Join(t.TempDir(), "run")
			cmd, out := startTrain(t, args(run)...)
			waitForStep(t, run, 5)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			code := cmd.ProcessState.ExitCode()
			if sig != syscall.SIGKILL {
				if code != 130 || !strings.Contains(out.String(), "interrupted after step") || !strings.Contains(out.String(), "--resume") {
					t.Fatalf("after %v: exit %d (%v), output:\n%s", sig, code, err, out)
				}
			} else if code == 0 {
				t.Fatalf("the run finished before it was killed:\n%s", out)
			}
			code, stdout, stderr := dstune("train", "--resume", run, "--threads", "1") // results do not depend on the thread count
			if code != 0 {
				t.Fatalf("resume: exit %d: %s", code, stderr)
			}
			if !strings.Contains(stdout, "done: step 60") {
				t.Errorf("resume output:\n%s", stdout)
			}
			got := sharedtest.CheckpointParams(t, run)
			if len(got) != len(want) {
				t.Fatalf("%d parameters, uninterrupted run %d", len(got), len(want))
			}
			for name, w := range want {
				if !slices.Equal(got[name], w) {
					t.Errorf("parameter %q differs from the uninterrupted run's", name)
				}
			}
			gotModel, err := os.ReadFile(filepath.Join(run, "model.onnx"))
			if err != nil || !bytes.Equal(gotModel, wantModel) {
				t.Errorf("model.onnx differs from the uninterrupted run's (%v)", err)
			}
			for i, r := range sharedtest.ReadMetrics(t, run) {
				if r.Step != int64(i) {
					t.Fatalf("metrics record %d is step %v: a step is missing or repeated", i, r.Step)
				}
			}
		})
	}
}

// TestTrainTerminalClosed: a closing terminal sends SIGHUP twice (the
// shell passes its own on); the second, arriving while the run finishes
// its step, must not end it before its checkpoint.
func TestTrainTerminalClosed(t *testing.T) {
	if signal.Ignored(syscall.SIGHUP) {
		t.Skip("SIGHUP is ignored here (nohup), and so in the run, which keeps it so")
	}
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, _ := tinyGPTData(t)
	run := filepath.Join(t.TempDir(), "run")
	js, _ := json.Marshal([]string{"train", model, "--data", trainPath, "--task", "lm", "--steps", "100000", "--batch", "4",
		"--threads", "1", "--out", run})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DSTUNE_TEST_MAIN="+string(js))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	waitForStep(t, run, 3)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "interrupted:") {
			cmd.Process.Signal(syscall.SIGHUP) // the second, while the step finishes
		}
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(out.String(), "--resume") {
		t.Fatalf("after two SIGHUPs: exit %d, output:\n%s", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(run, "checkpoint")); err != nil {
		t.Errorf("no checkpoint after two SIGHUPs: %v", err)
	}
}

// TestTrainOutputPipeClosed: a run whose stdout is a pipe nobody reads
// (`dstune train … | head`, the reader gone) is not killed by SIGPIPE at
// its first progress line: it trains to the end and saves its checkpoint,
// then exits with status 1 saying its output was lost.
func TestTrainOutputPipeClosed(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, _ := tinyGPTData(t)
	run := filepath.Join(t.TempDir(), "run")
	js, _ := json.Marshal([]string{"train", model, "--data", trainPath, "--task", "lm", "--steps", "10", "--batch", "2",
		"--log-every", "1", "--threads", "1", "--out", run})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DSTUNE_TEST_MAIN="+string(js))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // before the run writes anything: its every write fails
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	err = cmd.Run()
	w.Close()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "dstune train: writing the output: broken pipe") {
		t.Fatalf("exit %d (%v), stderr:\n%s", code, err, stderr.String())
	}
	code, stdout, stderrResume := dstune("train", "--resume", run)
	if code != 0 || !strings.Contains(stdout, "already complete (step 10 of 10)") {
		t.Errorf("the run's checkpoint is not its last step's: resume: exit %d\n%s%s", code, stdout, stderrResume)
	}
}

func TestTrainErrorsNameTheLine(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	data := filepath.Join(dir, "bad.jsonl")
	writeLines(t, data, []string{`{"tokens":[1,2,3]}`, `{"tokens":[1,300]}`})
	code, _, stderr := dstune("train", model, "--data", data, "--task", "lm", "--steps", "2", "--out", filepath.Join(dir, "run"))
	if code != 1 || !strings.Contains(stderr, "bad.jsonl:2: tokens element 1 is 300, outside the vocabulary [0, 256)") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// Examples longer than the model's 64 positions: refused before the
	// run is recorded, with a hint; --max-len then works in the same
	// directory.
	long := filepath.Join(dir, "long.jsonl")
	writeLines(t, long, []string{`{"tokens":[` + strings.Repeat("65,", 99) + `65]}`, `{"tokens":[1,2,3]}`})
	longRun := filepath.Join(dir, "long")
	code, _, stderr = dstune("train", model, "--data", long, "--task", "lm", "--steps", "1", "--batch", "2", "--out", longRun)
	if code != 1 || !strings.Contains(stderr, "cannot take batches of 2×100 tokens (the longest example; --max-len truncates examples)") {
		t.Errorf("too long examples: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr = dstune("train", model, "--data", long, "--task", "lm", "--steps", "1", "--batch", "2", "--max-len", "64", "--out", longRun); code != 0 {
		t.Errorf("with --max-len 64: exit %d, stderr %q", code, stderr)
	}
	// A soft prompt takes positions too: the hint names it.
	code, _, stderr = dstune("train", model, "--data", long, "--task", "lm", "--steps", "1", "--batch", "2", "--max-len", "3",
		"--method", "prompt", "--prompt-len", "62", "--out", filepath.Join(dir, "prompt"))
	if code != 1 || !strings.Contains(stderr, "cannot take batches of 2×3 tokens after a soft prompt of 62 (--max-len; --max-len truncates examples, --prompt-len sets the prompt's)") {
		t.Errorf("soft prompt past the positions: exit %d, stderr %q", code, stderr)
	}
	// stories260K's graph fails to import past its 512 positions (its
	// rotary tables): the same hint.
	stories := sharedtest.Path(t, "models", "stories260K", "stories260K.onnx")
	writeLines(t, long, []string{`{"tokens":[` + strings.Repeat("65,", 599) + `65]}`})
	code, _, stderr = dstune("train", stories, "--data", long, "--task", "lm", "--steps", "1", "--batch", "2", "--out", filepath.Join(dir, "long2"))
	if code != 1 || !strings.Contains(stderr, "cannot take batches of 2×600 tokens (the longest example; --max-len truncates examples)") {
		t.Errorf("too long examples for stories260K: exit %d, stderr %q", code, stderr)
	}
	// A soft prompt that leaves no room for even the 2 tokens of the
	// model's first import: the error names the prompt, not a batch of
	// the run's.
	code, _, stderr = dstune("train", stories, "--data", long, "--task", "lm", "--steps", "1", "--batch", "2", "--max-len", "3",
		"--method", "prompt", "--prompt-len", "511", "--out", filepath.Join(dir, "prompt2"))
	if code != 1 || !strings.Contains(stderr, "the model with a soft prompt of 511 virtual tokens (--prompt-len): the model does not import even for a batch of 1×2 tokens") {
		t.Errorf("soft prompt filling the positions: exit %d, stderr %q", code, stderr)
	}
	// Resuming with a flag that disagrees with config.json.
	good := filepath.Join(dir, "good.jsonl")
	writeLines(t, good, []string{`{"tokens":[1,2,3]}`, `{"tokens":[4,5,6,7]}`})
	run := filepath.Join(dir, "run2")
	if code, _, stderr := dstune("train", model, "--data", good, "--task", "lm", "--steps", "2", "--batch", "2", "--out", run); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, _, stderr = dstune("train", "--resume", run, "--lr", "0.5")
	if code != 1 || !strings.Contains(stderr, "configured differently: optimizer is") {
		t.Errorf("resume with another --lr: exit %d, %q", code, stderr)
	}
}

// TestTrainTinyBERTClassify trains tiny_bert's classifier to tell whether
// a string of the letters a–h contains an x.
func TestTrainTinyBERTClassify(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_bert", "model.onnx")
	rng := rand.New(rand.NewPCG(3, 4))
	example := func() string {
		toks := make([]int, 12)
		for i := range toks {
			toks[i] = int("abcdefgh"[rng.IntN(8)])
		}
		label := rng.IntN(2)
		if label == 1 {
			toks[rng.IntN(len(toks))] = 'x'
		}
		b, _ := json.Marshal(struct {
			Tokens []int `json:"tokens"`
			Label  int   `json:"label"`
		}{toks, label})
		return string(b)
	}
	var train, valid []string
	for range 256 {
		train = append(train, example())
	}
	for range 64 {
		valid = append(valid, example())
	}
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "train.jsonl"), train)
	writeLines(t, filepath.Join(dir, "valid.jsonl"), valid)
	run := filepath.Join(dir, "run")
	code, _, stderr := dstune("train", model, "--data", filepath.Join(dir, "train.jsonl"), "--valid", filepath.Join(dir, "valid.jsonl"),
		"--task", "classify", "--steps", "100", "--batch", "16", "--lr", "1e-3", "--threads", "2", "--out", run)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	recs := sharedtest.ReadMetrics(t, run)
	first, last := *recs[0].ValidLoss, *recs[len(recs)-1].ValidLoss
	t.Logf("tiny_bert, 100 AdamW steps: validation loss %.4f → %.4f", first, last)
	if !(last < 0.5*first) {
		t.Errorf("validation loss %.4f → %.4f: not learning the task", first, last)
	}
}

// TestTrainModelWithExternalData trains a model whose weights live in an
// external-data file (the fine-tuned model is re-encoded, not patched)
// and with an attention-mask input, and checks that model.onnx holds the
// checkpoint's parameters and the original values of everything else.
func TestTrainModelWithExternalData(t *testing.T) {
	model := sharedtest.Path(t, "models", "exports", "gpt2_like_op17_extdata.onnx")
	rng := rand.New(rand.NewPCG(5, 6))
	var lines []string
	for range 24 {
		toks := make([]int, 4+rng.IntN(12))
		for i := range toks {
			toks[i] = rng.IntN(1000)
		}
		b, _ := json.Marshal(struct {
			Tokens []int `json:"tokens"`
		}{toks})
		lines = append(lines, string(b))
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, lines)
	run := filepath.Join(dir, "run")
	if code, _, stderr := dstune("train", model, "--data", data, "--task", "lm", "--steps", "3", "--batch", "4", "--out", run); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	params := sharedtest.CheckpointParams(t, run)
	orig, err := onnx.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	tuned, err := onnx.ReadFile(filepath.Join(run, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer tuned.Close()
	if len(tuned.Graph.Initializers) != len(orig.Graph.Initializers) {
		t.Fatalf("%d initializers, the original has %d", len(tuned.Graph.Initializers), len(orig.Graph.Initializers))
	}
	changed := 0
	for i, ot := range orig.Graph.Initializers {
		tt := tuned.Graph.Initializers[i]
		got, err := tt.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		want, err := ot.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if p, trained := params[ot.Name]; trained {
			want = nil
			for _, x := range p {
				want = binary.LittleEndian.AppendUint32(want, math.Float32bits(x))
			}
			changed++
		}
		if tt.Name != ot.Name || !bytes.Equal(got, want) {
			t.Errorf("initializer %q in model.onnx is not the trained or original value", ot.Name)
		}
	}
	if changed != len(params) || changed == 0 {
		t.Errorf("%d of %d trained parameters found in model.onnx", changed, len(params))
	}
}
