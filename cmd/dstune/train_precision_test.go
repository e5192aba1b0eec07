package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/kernels"
)

// TestTrainBF16FollowsFP32 trains tiny_gpt for 300 steps with float32
// products and with bfloat16 operands (--precision bf16): every
// validation loss and the mean training loss of every 30 steps agree
// within 2 %, the parameters do differ (the products were rounded), and a
// bfloat16 run repeated with another thread count ends on the same bits.
// Where Sbgemm runs portable Go (purego builds), 90 steps: its bits are
// the assembly paths' (kernels' TestSbgemmPathsAgree), 300 steps of it take
// minutes.
func TestTrainBF16FollowsFP32(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, validPath := tinyGPTData(t)
	dir := t.TempDir()
	steps := "300"
	if kernels.SbgemmPath() == "go" {
		steps = "90"
	}
	run := func(precision, threads string) string {
		out := filepath.Join(dir, precision+"-"+threads)
		code, stdout, stderr := dstune("train", model, "--data", trainPath, "--valid", validPath, "--task", "lm",
			"--steps", steps, "--batch", "8", "--lr", "2e-3", "--eval-every", "50", "--seed", "3",
			"--precision", precision, "--threads", threads, "--log-every", "100", "--out", out)
		if code != 0 {
			t.Fatalf("--precision %s: exit %d: %s", precision, code, stderr)
		}
		if !strings.Contains(stdout, "MFU ") {
			t.Errorf("--precision %s: no MFU in the progress lines:\n%s", precision, stdout)
		}
		// Without bfloat16 dot products the run says what bf16 costs there.
		noted := strings.Contains(stderr, "bfloat16 dot products (AVX512_BF16)")
		if want := precision == "bf16" && !kernels.SbgemmAccelerated(); noted != want {
			t.Errorf("--precision %s on a CPU whose bf16 path is %s: note on stderr %v, want %v:\n%s", precision, kernels.SbgemmPath(), noted, want, stderr)
		}
		return out
	}
	fp, bf := run("fp32", "2"), run("bf16", "2")
	compareLossCurves(t, fp, bf, 30, 0.02)

	fpParams, bfParams := sharedtest.CheckpointParams(t, fp), sharedtest.CheckpointParams(t, bf)
	differ := false
	for name, w := range fpParams {
		for i := range w {
			differ = differ || w[i] != bfParams[name][i]
		}
	}
	if !differ {
		t.Error("bf16 training ended on the float32 run's bits: the products were not rounded")
	}
	again := sharedtest.CheckpointParams(t, run("bf16", "1"))
	for name, w := range bfParams {
		for i := range w {
			if math.Float32bits(w[i]) != math.Float32bits(again[name][i]) {
				t.Fatalf("%s[%d]: %v with 2 threads, %v with 1: bf16 training is not deterministic", name, i, w[i], again[name][i])
			}
		}
	}
	var cfg struct{ Precision string }
	data, err := os.ReadFile(filepath.Join(bf, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.Precision != "bf16" {
		t.Errorf("config.json records precision %q (%v), want bf16", cfg.Precision, err)
	}
	// A resumed run keeps its precision; fp32, the default, may be named.
	code, _, stderr := dstune("train", "--resume", bf, "--precision", "fp32")
	if code == 0 || !strings.Contains(stderr, "precision") {
		t.Errorf("resuming a bf16 run with --precision fp32: exit %d, %s", code, stderr)
	}
	if code, _, stderr := dstune("train", "--resume", fp, "--precision", "fp32"); code != 0 {
		t.Errorf("resuming a float32 run with --precision fp32: exit %d, %s", code, stderr)
	}
}

// TestTrainBF16FollowsFP32Stories260K is TestTrainBF16FollowsFP32's
// comparison on llama2.c's pretrained stories260K, fine-tuned on the
// README's text through its tokenizer: 100 steps here (README.md gives the
// figures of 300), 25 where Sbgemm runs portable Go (one window; that
// path's bits are the assembly paths').
func TestTrainBF16FollowsFP32Stories260K(t *testing.T) {
	steps := "100"
	if kernels.SbgemmPath() == "go" {
		steps = "25"
	}
	model := sharedtest.Path(t, "models", "stories260K", "stories260K.onnx")
	tok := sharedtest.Path(t, "models", "stories260K", "tok512.bin")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	text := strings.Join(strings.Fields(string(readme)), " ")
	for i := 0; i+200 <= len(text); i += 200 {
		line, _ := json.Marshal(map[string]string{"text": text[i : i+200]})
		lines = append(lines, string(line))
	}
	dir := t.TempDir()
	trainPath, validPath := filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	writeLines(t, trainPath, lines[:len(lines)-32])
	writeLines(t, validPath, lines[len(lines)-32:])
	run := func(precision string) string {
		out := filepath.Join(dir, precision)
		code, _, stderr := dstune("train", model, "--tokenizer", tok, "--data", trainPath, "--valid", validPath, "--task", "lm",
			"--steps", steps, "--batch", "8", "--max-len", "64", "--lr", "2e-3", "--eval-every", "25",
			"--precision", precision, "--threads", "2", "--out", out)
		if code != 0 {
			t.Fatalf("--precision %s: exit %d: %s", precision, code, stderr)
		}
		return out
	}
	compareLossCurves(t, run("fp32"), run("bf16"), 25, 0.02)
}

// compareLossCurves checks that run b's validation losses and its mean
// training loss over every window of steps are within rel of run a's.
func compareLossCurves(t *testing.T, a, b string, window int, rel float64) {
	t.Helper()
	ra, rb := sharedtest.ReadMetrics(t, a), sharedtest.ReadMetrics(t, b)
	if len(ra) != len(rb) {
		t.Fatalf("%d metrics records against %d", len(rb), len(ra))
	}
	check := func(what string, x, y float64) {
		t.Helper()
		if d := math.Abs(y/x - 1); !(d <= rel) {
			t.Errorf("%s: %.4f (%s) against %.4f (%s): %.2f %% apart, want ≤ %.0f %%", what, y, filepath.Base(b), x, filepath.Base(a), 100*d, 100*rel)
		}
	}
	var sa, sb float64
	n := 0
	for i := range ra {
		if ra[i].Step != rb[i].Step {
			t.Fatalf("record %d: step %d against %d", i, rb[i].Step, ra[i].Step)
		}
		if ra[i].ValidLoss != nil && rb[i].ValidLoss != nil {
			check("validation loss at step "+itoa(ra[i].Step), *ra[i].ValidLoss, *rb[i].ValidLoss)
		}
		if ra[i].Loss == nil || rb[i].Loss == nil {
			continue
		}
		if ra[i].MFU <= 0 || rb[i].MFU <= 0 {
			t.Errorf("step %d: MFU %v and %v, want > 0", ra[i].Step, ra[i].MFU, rb[i].MFU)
		}
		sa, sb, n = sa+*ra[i].Loss, sb+*rb[i].Loss, n+1
		if n == window {
			check("mean training loss of the steps to "+itoa(ra[i].Step), sa/float64(n), sb/float64(n))
			sa, sb, n = 0, 0, 0
		}
	}
	t.Logf("final validation loss %.4f (%s), %.4f (%s)", *ra[len(ra)-1].ValidLoss, filepath.Base(a), *rb[len(rb)-1].ValidLoss, filepath.Base(b))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestTrainMemoryReport: --memory-report prints, after the first step,
// the parts of a DST run's step — the gradients one float32 per
// trainable weight, AdamW's state two, counted from the checkpoint, and
// DST's seed one, copied or read in place from the model file — and the
// peak resident memory at the end.
func TestTrainMemoryReport(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, _ := tinyGPTData(t)
	run := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := dstune("train", model, "--data", trainPath, "--task", "lm", "--method", "dst", "--eps", "0.01",
		"--steps", "3", "--batch", "4", "--threads", "1", "--memory-report", "--out", run)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var n int64
	for _, w := range sharedtest.CheckpointParams(t, run) {
		n += int64(len(w))
	}
	parts := map[string]string{}
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		for _, name := range []string{"parameters", "gradients", "activations", "workspace", "total"} {
			if len(f) >= 3 && f[0] == name {
				parts[name] = f[1] + " " + f[2]
			}
		}
		if len(f) >= 4 && f[0] == "seed" && f[1] == "(Θ0)" {
			parts["seed"] = f[2] + " " + f[3]
			if _, inPlace, ok := strings.Cut(line, "values ("); ok && strings.Contains(inPlace, "read in place") {
				g := strings.Fields(inPlace)
				parts["seed in place"] = g[0] + " " + g[1]
			}
		}
		if len(f) >= 4 && f[0] == "optimizer" && f[1] == "state" {
			parts["optimizer"] = f[2] + " " + f[3]
		}
	}
	want := map[string]string{"gradients": sysmem.Format(4 * n), "optimizer": sysmem.Format(8 * n)}
	for name, w := range want {
		if parts[name] != w {
			t.Errorf("%s: %q, want %q (%d trainable weights)\n%s", name, parts[name], w, n, stdout)
		}
	}
	var seed int64
	for _, name := range []string{"seed", "seed in place"} {
		if v := parts[name]; v != "" {
			b, err := sysmem.ParseSize(strings.ReplaceAll(v, " ", ""))
			if err != nil && v != "0 B" {
				t.Fatalf("%s: %q: %v", name, v, err)
			}
			seed += b
		}
	}
	if d := seed - 4*n; d < -200 || d > 200 { // the figures are rounded to 0.1 KiB
		t.Errorf("seed: %q copied and %q in place, want %s in all\n%s", parts["seed"], parts["seed in place"], sysmem.Format(4*n), stdout)
	}
	for _, name := range []string{"parameters", "activations", "workspace", "total"} {
		if v := parts[name]; v == "" || strings.HasPrefix(v, "0 ") {
			t.Errorf("%s: %q\n%s", name, v, stdout)
		}
	}
	if !strings.Contains(stdout, "memory of a training step of batch 4×64 (as the CPU backend holds them)") ||
		!strings.Contains(stdout, "peak resident memory of the run: ") {
		t.Errorf("output:\n%s", stdout)
	}
}
