package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/train"
)

// TestMain lets a test run dstune as a child process (to kill it): with
// DSTUNE_TEST_MAIN set to a JSON list of arguments the test binary is
// dstune.
func TestMain(m *testing.M) {
	if args := os.Getenv("DSTUNE_TEST_MAIN"); args != "" {
		var list []string
		if err := json.Unmarshal([]byte(args), &list); err != nil {
			panic(err)
		}
		os.Exit(runMain(list, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// byteCorpus turns text into lm examples of UTF-8 bytes (the tiny models'
// vocabulary): windows of n bytes every stride bytes, as JSONL.
func byteCorpus(text []byte, n, stride int) []string {
	var lines []string
	for i := 0; i+n <= len(text); i += stride {
		toks, _ := json.Marshal(struct {
			Tokens []int `json:"tokens"`
		}{bytesToInts(text[i : i+n])})
		lines = append(lines, string(toks))
	}
	return lines
}

func bytesToInts(b []byte) []int {
	v := make([]int, len(b))
	for i, x := range b {
		v[i] = int(x)
	}
	return v
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTrainUsage(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, []string{`{"tokens":[1,2,3]}`})
	out := filepath.Join(dir, "run")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"train"}, 2, "want exactly one model file"},
		{[]string{"train", "m.onnx", "--task", "lm", "--steps", "3", "--out", out}, 2, "--data is required"},
		{[]string{"train", "m.onnx", "--data", data, "--steps", "3", "--out", out}, 2, "--task is required"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--out", out}, 2, "--steps is required"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3"}, 2, "--out RUN is required"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "words", "--steps", "3", "--out", out}, 2, `unknown task "words"`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--optimizer", "lion"}, 2, `unknown optimizer "lion"`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--schedule", "step"}, 2, `unknown schedule "step"`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--momentum", "0.9"}, 2, "--momentum is an SGD option"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--optimizer", "adafactor", "--lr", "0"}, 2, "--lr 0 with Adafactor"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--backend", "bogus"}, 2, `unknown backend "bogus" (have cpu, pjrt)`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--eps", "1e-2"}, 2, "--eps is an option of --method dst"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "dst", "--distance", "cosine"}, 2, `unknown distance "cosine"`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "dst", "--refine-steps", "0"}, 2, "refinement steps m = 0"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--rank", "4"}, 2, "--rank is an option of --method lora"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "dst", "--prompt-len", "4"}, 2, "--prompt-len is an option of --method prompt"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "prompt", "--alpha", "4"}, 2, "--alpha is an option of --method lora"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--eps", "0.1"}, 2, "--eps is an option of --method dst"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--rank", "0"}, 2, "lora: --rank 0, want ≥ 1"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--alpha", "0"}, 2, "lora: --alpha 0, want a finite number other than 0"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--lora-dropout", "1"}, 2, "lora: --lora-dropout 1, want a probability in [0, 1)"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "dst", "--eps", "nan"}, 2, "--eps NaN: want a finite number"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--threads", "100000"}, 2, "--threads 100000: at most"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--pad-id", "-1"}, 2, "--pad-id -1, want a token id ≥ 0"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "dst", "--eps", "0"}, 2, "--eps 0 keeps no entry"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--log-every", "-1"}, 2, "--log-every -1: want a step count"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "dst", "--refine-factor", "inf"}, 2, "--refine-factor +Inf: want a finite number"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--alpha", "-inf"}, 2, "--alpha -Inf: want a finite number"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--lora-dropout", "nan"}, 2, "--lora-dropout NaN: want a finite number"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--targets", "attn_q,ffn"}, 2, `lora: --targets: unknown module kind "ffn"`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--targets", "embedding"}, 2, "lora: --targets embedding: LoRA adapts linear layers"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "lora", "--targets", ","}, 2, "--targets names no module kind"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "prompt", "--prompt-len", "0"}, 2, "prompt: --prompt-len 0, want 1 to"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "prompt", "--prompt-at", "end"}, 2, `prompt: --prompt-at "end", want after-bos or start`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "prompt", "--prompt-init", "text"}, 2, `prompt: --prompt-init "text", want vocab or random`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--method", "adapter"}, 2, `unknown --method "adapter"`},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--grad-accum", "0"}, 2, "--grad-accum 0, want 1 to 65536"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--max-grad-norm", "-1"}, 2, "--max-grad-norm -1, want a norm ≥ 0 within float32's range"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--max-grad-norm", "1e39"}, 2, "--max-grad-norm 1e+39, want a norm ≥ 0 within float32's range"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--max-grad-norm", "nan"}, 2, "--max-grad-norm NaN: want a finite number"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--keep-best"}, 2, "--keep-best and --patience follow the validation: give --valid"},
		{[]string{"train", "m.onnx", "--data", data, "--valid", data, "--task", "lm", "--steps", "3", "--out", out, "--patience", "2", "--eval-every", "0"}, 2, "--patience counts the validations during the run"},
		{[]string{"train", "--resume", filepath.Join(dir, "none")}, 1, "config.json"},
		// Finite in float64, not in the float32 the update computes in.
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--lr", "1e39"}, 2, "lr is 1e+39, beyond float32's range"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--lr", "3e38", "--method", "dst"}, 2, "lr/(1−β1) is 3e+39"},
		{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--lr", "1e39", "--optimizer", "sgd"}, 2, "lr is 1e+39"},
	}
	// The model inside the run directory, where the fine-tuned model.onnx
	// would replace it.
	inRun := filepath.Join(dir, "inrun")
	if err := os.Mkdir(inRun, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join("..", "..", "demo", "base.onnx"), filepath.Join(inRun, "model.onnx"))
	cases = append(cases, struct {
		args []string
		code int
		want string
	}{[]string{"train", filepath.Join(inRun, "model.onnx"), "--data", data, "--task", "lm", "--steps", "3", "--out", inRun}, 1, "model.onnx is the model, which the run writes"},
		// Batches beyond the memory budget are refused before anything of
		// their size is allocated.
		struct {
			args []string
			code int
			want string
		}{[]string{"train", filepath.Join(inRun, "model.onnx"), "--data", data, "--task", "lm", "--steps", "3", "--out", filepath.Join(dir, "big"), "--batch", "1000000", "--max-memory", "1GiB"}, 1,
			"a step of batch 1000000×3 tokens needs about"},
		struct {
			args []string
			code int
			want string
		}{[]string{"train", filepath.Join(inRun, "model.onnx"), "--data", data, "--task", "lm", "--steps", "3", "--out", filepath.Join(dir, "huge"), "--batch", "100000000"}, 1,
			"exceed the 16384 MiB limit for one tensor"},
		// A step holds its batches at once.
		struct {
			args []string
			code int
			want string
		}{[]string{"train", filepath.Join(inRun, "model.onnx"), "--data", data, "--task", "lm", "--steps", "3", "--out", filepath.Join(dir, "accum"), "--grad-accum", "60000", "--batch", "4096", "--max-memory", "1GiB"}, 1,
			"a step of 60000 batches of 4096×3 tokens needs about"},
		struct {
			args []string
			code int
			want string
		}{[]string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "3", "--out", out, "--max-memory", "lots"}, 2, `--max-memory: "lots" is not a size`})
	for _, c := range cases {
		code, _, stderr := dstune(c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("dstune %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, stderr, c.code, c.want)
		}
	}
}

func TestTrainHelpListsFlags(t *testing.T) {
	code, stdout, _ := dstune("train", "-h")
	if code != 0 || !strings.Contains(stdout, "-checkpoint-every") || !strings.Contains(stdout, "-resume") {
		t.Errorf("exit %d, help:\n%s", code, stdout)
	}
}

// TestTrainReportsBatchesWithoutTargets: a step whose batch has no token
// that counts in the loss (all loss_mask 0) is reported, not silently
// taken as a step of weight decay; data with no target at all is refused.
func TestTrainReportsBatchesWithoutTargets(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "masked.jsonl")
	writeLines(t, data, []string{`{"tokens":[104,101,108,108,111],"loss_mask":[0,0,0,0,0]}`, `{"tokens":[119,111,114,108,100]}`})
	model := filepath.Join("..", "..", "demo", "base.onnx")
	code, stdout, stderr := dstune("train", model, "--data", data, "--task", "lm", "--steps", "2", "--batch", "1", "--threads", "1", "--out", filepath.Join(dir, "run"))
	if code != 0 || !strings.Contains(stdout, "1 of 2 examples have no token that counts in the loss") ||
		!strings.Contains(stdout, ": no token of the batch counts in the loss (one-token examples, or loss_mask 0): the step only decays the weights") {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
	writeLines(t, data, []string{`{"tokens":[104,101,108,108,111],"loss_mask":[1,0,0,0,0]}`})
	code, _, stderr = dstune("train", model, "--data", data, "--task", "lm", "--steps", "2", "--out", filepath.Join(dir, "none"))
	if code != 1 || !strings.Contains(stderr, "no example has a token that counts in the loss") {
		t.Errorf("no targets at all: exit %d, %s", code, stderr)
	}
}

// TestTrainResumeOfACompleteRun: resuming a run that is complete says so
// instead of printing a training loss of 0.
func TestTrainResumeOfACompleteRun(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, []string{`{"tokens":[104,101,108,108,111]}`, `{"tokens":[119,111,114,108,100]}`})
	run := filepath.Join(dir, "run")
	if code, _, stderr := dstune("train", filepath.Join("..", "..", "demo", "base.onnx"), "--data", data, "--task", "lm", "--steps", "2", "--batch", "1", "--threads", "1", "--out", run); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, stdout, stderr := dstune("train", "--resume", run)
	if code != 0 || !strings.Contains(stdout, "the run was already complete (step 2 of 2): nothing to train") || strings.Contains(stdout, "training loss") {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestTrainStopsOnDivergence: a DST run whose first update overflows (SGD
// with lr 3e38, finite in float32) stops naming the tensor, and writes
// neither a checkpoint nor a delta from the diverged state.
func TestTrainStopsOnDivergence(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, []string{`{"tokens":[104,101,108,108,111]}`, `{"tokens":[119,111,114,108,100]}`})
	run := filepath.Join(dir, "run")
	code, _, stderr := dstune("train", filepath.Join("..", "..", "demo", "base.onnx"), "--data", data, "--task", "lm", "--method", "dst",
		"--optimizer", "sgd", "--lr", "3e38", "--steps", "3", "--batch", "2", "--checkpoint-every", "1", "--threads", "1", "--out", run)
	if code != 1 || !strings.Contains(stderr, "step 1: the update made parameter ") || !strings.Contains(stderr, "non-finite") ||
		!strings.Contains(stderr, "no checkpoint was written yet") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	for _, name := range []string{"checkpoint", "delta.safetensors"} {
		if _, err := os.Stat(filepath.Join(run, name)); err == nil {
			t.Errorf("the diverged run wrote %s", name)
		}
	}
}

// TestTrainGradAccumAndClipping: --grad-accum and --max-grad-norm reach
// the run (config.json records them, a resume with others is refused),
// every metrics record has the gradients' norm, the memory report shows
// the gradient sum, and LoRA (dropout masks per batch) and DST train
// with them.
func TestTrainGradAccumAndClipping(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, []string{`{"tokens":[104,101,108,108,111,32,119]}`, `{"tokens":[97,32,108,111,110,103,101,114,32,108,105,110,101]}`,
		`{"tokens":[97,98,99]}`, `{"tokens":[116,104,101,32,101,110,100]}`})
	model := filepath.Join("..", "..", "demo", "base.onnx")
	for _, method := range [][]string{{"--method", "lora", "--lora-dropout", "0.1"}, {"--method", "dst"}} {
		run := filepath.Join(dir, method[1])
		args := append([]string{"train", model, "--data", data, "--task", "lm", "--steps", "3", "--batch", "1", "--grad-accum", "3",
			"--max-grad-norm", "0.25", "--threads", "1", "--memory-report", "--out", run}, method...)
		code, stdout, stderr := dstune(args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", method[1], code, stdout, stderr)
		}
		if !strings.Contains(stdout, "gradient sum") {
			t.Errorf("%s: the memory report shows no gradient sum:\n%s", method[1], stdout)
		}
		cfg, err := train.LoadConfig(run)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.GradAccum != 3 || cfg.MaxGradNorm != 0.25 {
			t.Errorf("%s: config.json records grad_accum %d, max_grad_norm %g", method[1], cfg.GradAccum, cfg.MaxGradNorm)
		}
		recs := sharedtest.ReadMetrics(t, run)
		steps := 0
		for _, r := range recs {
			if r.Loss == nil {
				continue
			}
			steps++
			if r.GradNorm == nil || !(*r.GradNorm > 0) {
				t.Errorf("%s step %d: grad_norm %v", method[1], r.Step, r.GradNorm)
			}
		}
		if steps != 3 {
			t.Errorf("%s: %d training records, want 3", method[1], steps)
		}
		code, _, stderr = dstune("train", "--resume", run, "--steps", "4", "--grad-accum", "2")
		if code == 0 || !strings.Contains(stderr, "grad_accum") {
			t.Errorf("%s: a resume with another --grad-accum: exit %d, %s", method[1], code, stderr)
		}
	}
}

// TestTrainKeepBest: RUN/best/delta.safetensors is the delta of the step
// best.json names — the same bytes as the delta of a run of that many
// steps (a constant learning rate makes the two runs' steps the same).
func TestTrainKeepBest(t *testing.T) {
	dir := t.TempDir()
	data, valid := filepath.Join(dir, "d.jsonl"), filepath.Join(dir, "v.jsonl")
	writeLines(t, data, []string{`{"tokens":[104,101,108,108,111,32,119]}`, `{"tokens":[97,32,108,111,110,103,101,114,32,108,105,110,101]}`,
		`{"tokens":[97,98,99]}`, `{"tokens":[116,104,101,32,101,110,100]}`})
	writeLines(t, valid, []string{`{"tokens":[120,121,122,32,97,98]}`, `{"tokens":[104,101,108,108,111]}`})
	model := filepath.Join("..", "..", "demo", "base.onnx")
	args := func(run string, steps int) []string {
		return []string{"train", model, "--data", data, "--valid", valid, "--task", "lm", "--method", "dst", "--eps", "0.01", "--lr", "3e-2",
			"--steps", strconv.Itoa(steps), "--batch", "2", "--eval-every", "2", "--threads", "1", "--keep-best", "--out", run}
	}
	long := filepath.Join(dir, "long")
	code, stdout, stderr := dstune(args(long, 10)...)
	if code != 0 || !strings.Contains(stdout, "best validation: step ") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	var best train.BestRecord
	if b, err := os.ReadFile(filepath.Join(long, train.BestDir, train.BestFile)); err != nil || json.Unmarshal(b, &best) != nil || best.Step < 1 {
		t.Fatalf("best.json: %v %+v", err, best)
	}
	short := filepath.Join(dir, "short")
	if code, stdout, stderr := dstune(args(short, int(best.Step))...); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	want, err := os.ReadFile(filepath.Join(short, "delta.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(long, train.BestDir, "delta.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("best/delta.safetensors (step %d of 10) differs from the delta of a %d-step run", best.Step, best.Step)
	}
}

// TestTrainStoppedFullRunWritesItsModel: a full fine-tuning that
// --patience stopped, resumed, writes its model.onnx again (a kill after
// the stop's checkpoint leaves none), and says it had stopped.
func TestTrainStoppedFullRunWritesItsModel(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, []string{`{"tokens":[104,101,108,108,111,32,119]}`, `{"tokens":[97,98,99,100]}`})
	run := filepath.Join(dir, "run")
	// With lr 0 every validation ties the first: patience 1 stops at step 2.
	args := []string{"train", filepath.Join("..", "..", "demo", "base.onnx"), "--data", data, "--valid", data, "--task", "lm", "--lr", "0",
		"--steps", "6", "--batch", "1", "--eval-every", "1", "--patience", "1", "--threads", "1", "--out", run}
	if code, stdout, stderr := dstune(args...); code != 0 || !strings.Contains(stdout, "stopped early after step 2 of 6") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	model := filepath.Join(run, "model.onnx")
	if err := os.Remove(model); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := dstune("train", "--resume", run)
	if code != 0 || !strings.Contains(stdout, "had stopped early after step 2 of 6") {
		t.Fatalf("resume: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(model); err != nil {
		t.Errorf("the resumed stopped run wrote no model.onnx: %v", err)
	}
}
