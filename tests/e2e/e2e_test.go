package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/dstune/dstune/demo"
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// dstuneBin is the dstune binary TestMain builds.
var dstuneBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dstune-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dstuneBin = filepath.Join(dir, "dstune")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"build", "-o", dstuneBin}
	if buildTags != "" {
		args = append(args, "-tags", buildTags)
	}
	cmd := exec.Command(goTool, append(args, "github.com/dstune/dstune/cmd/dstune")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building dstune: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// dstune runs the binary and returns its standard output; a non-zero exit
// fails the test.
func dstune(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(dstuneBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dstune %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// initializers reads a model file's top-level initializers as raw bytes
// (and their types).
func initializers(t *testing.T, path string) (map[string][]byte, map[string]onnx.DataType) {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	data, types := map[string][]byte{}, map[string]onnx.DataType{}
	for _, it := range m.Graph.Initializers {
		b, err := it.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		data[it.Name], types[it.Name] = bytes.Clone(b), it.DataType
	}
	return data, types
}

// checkApplyIsTraining: the model dstune apply wrote holds, bit for bit,
// the parameters the training run ended with (its last checkpoint), and
// the base model's bytes for everything else; the delta changes exactly
// the entries that differ from the base.
func checkApplyIsTraining(t *testing.T, base, tuned, run string) {
	t.Helper()
	ckpt, err := safetensors.ReadFile(filepath.Join(run, "checkpoint", "params.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	trained := map[string][]byte{}
	for _, tn := range ckpt.Tensors {
		trained[tn.Name] = tn.Data
	}
	baseInits, _ := initializers(t, base)
	tunedInits, types := initializers(t, tuned)
	if len(tunedInits) != len(baseInits) {
		t.Fatalf("%d initializers, the base has %d", len(tunedInits), len(baseInits))
	}
	delta, err := dst.ReadDelta(filepath.Join(run, "delta.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var differ int64
	for name, want := range baseInits {
		got := tunedInits[name]
		if tr, ok := trained[name]; ok {
			want = tr
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the applied model's values are not the run's final parameters", name)
			continue
		}
		if types[name] != onnx.Float {
			continue
		}
		b := baseInits[name]
		for i := 0; i < len(b); i += 4 {
			if !bytes.Equal(b[i:i+4], got[i:i+4]) {
				differ++
			}
		}
	}
	if differ == 0 || differ > delta.NumChanged() {
		t.Errorf("%d entries differ from the base, the delta changes %d", differ, delta.NumChanged())
	}
	t.Logf("%d trained tensors; the delta changes %d entries (%d differ from the base)", len(trained), delta.NumChanged(), differ)
}

// checkORT: onnxruntime runs the applied model and gives the logits of
// dstune's executor running the base model with the delta applied in
// memory (`dstune run --delta`); dstune on the applied file gives those
// bit for bit; and the base model's logits are clearly different.
func checkORT(t *testing.T, base, tuned, deltaPath string, tokens *onnx.Tensor) {
	t.Helper()
	dir := t.TempDir()
	input := filepath.Join(dir, "input_0.pb")
	if err := onnx.WriteTensorFile(input, tokens); err != nil {
		t.Fatal(err)
	}
	withDelta := filepath.Join(dir, "with_delta")
	dstune(t, "run", base, "--delta", deltaPath, "--input", "tokens="+input, "--output-dir", withDelta, "--threads", "1")
	if err := os.Rename(input, filepath.Join(withDelta, "input_0.pb")); err != nil {
		t.Fatal(err)
	}
	dstune(t, "run", tuned, "--check", withDelta, "--rtol", "0", "--atol", "0", "--threads", "1")
	want, err := onnx.ReadTensorFile(filepath.Join(withDelta, "output_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	wantF, _ := want.Float32s()

	ort.Need(t)
	for _, c := range []struct {
		model   string
		applied bool
	}{{tuned, true}, {base, false}} {
		outs, err := ort.Run(c.model, map[string]*onnx.Tensor{"tokens": tokens})
		if err != nil {
			t.Fatalf("onnxruntime on %s: %v", c.model, err)
		}
		got, err := outs["logits"].Float32s()
		if err != nil || len(got) != len(wantF) {
			t.Fatalf("onnxruntime logits of %s: %d values (%v), dstune %d", c.model, len(got), err, len(wantF))
		}
		var maxAbs, maxScale float64
		off := 0
		for i := range got {
			d := math.Abs(float64(got[i]) - float64(wantF[i]))
			maxAbs = max(maxAbs, d)
			maxScale = max(maxScale, math.Abs(float64(wantF[i])))
			if d > 1e-5+1e-4*math.Abs(float64(wantF[i])) {
				off++
			}
		}
		if c.applied {
			t.Logf("onnxruntime on the applied model vs dstune run --delta: max abs error %.2g (logits up to %.3g)", maxAbs, maxScale)
			if off > 0 {
				t.Errorf("%d of %d logits off (|ort − dstune| > 1e-5 + 1e-4·|dstune|), max abs error %g", off, len(got), maxAbs)
			}
		} else if maxAbs < 1e-3 {
			t.Errorf("the base model's logits are within %g of the fine-tuned ones: the delta changed nothing", maxAbs)
		}
	}
}

// byteWindows writes lm data of 64-byte windows of the repository's README.
func byteWindows(t *testing.T, dir string) (trainPath, validPath string) {
	t.Helper()
	text, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := 0; i+64 <= len(text); i += 48 {
		toks := make([]int, 64)
		for j := range toks {
			toks[j] = int(text[i+j])
		}
		js, _ := json.Marshal(map[string][]int{"tokens": toks})
		lines = append(lines, string(js))
	}
	if len(lines) < 40 {
		t.Fatalf("only %d windows of README.md", len(lines))
	}
	trainPath, validPath = filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	n := len(lines) - 16
	for path, part := range map[string][]string{trainPath: lines[:n], validPath: lines[n:]} {
		if err := os.WriteFile(path, []byte(strings.Join(part, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return trainPath, validPath
}

// TestTinyGPT: tiny_gpt (a PyTorch export) fine-tuned with DST on text,
// its delta applied, checked bit for bit and in onnxruntime.
func TestTinyGPT(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	trainPath, validPath := byteWindows(t, dir)
	run := filepath.Join(dir, "run")
	dstune(t, "train", model, "--data", trainPath, "--valid", validPath, "--task", "lm", "--method", "dst", "--eps", "1e-2",
		"--steps", "20", "--batch", "4", "--lr", "3e-3", "--threads", "2", "--out", run)
	deltaPath := filepath.Join(run, "delta.safetensors")
	tuned := filepath.Join(dir, "tuned.onnx")
	out := dstune(t, "apply", model, deltaPath, "-o", tuned)
	if !strings.Contains(out, "patched in place") {
		t.Errorf("apply:\n%s", out)
	}
	checkApplyIsTraining(t, model, tuned, run)
	tokens, err := onnx.ReadTensorFile(sharedtest.Path(t, "models", "tiny_gpt", "test_data_set_0", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	tokens.Name = "tokens"
	checkORT(t, model, tuned, deltaPath, tokens)
}

// TestDemo: `dstune demo`'s files pass the same checks (a short run).
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	dstune(t, "demo", "--out", dir, "--steps", "30")
	base, tuned, run := filepath.Join(dir, demo.BaseModelFile), filepath.Join(dir, "tuned.onnx"), filepath.Join(dir, "run")
	checkApplyIsTraining(t, base, tuned, run)
	_, valid := demo.TaskData(demo.ReverseUpper, 0, 8, 3)
	var toks []int64
	for _, e := range valid {
		toks = append(toks, e.Tokens()...)
	}
	tokens, err := onnx.FromInt64s("tokens", []int64{int64(len(valid)), int64(len(toks) / len(valid))}, toks)
	if err != nil {
		t.Fatal(err)
	}
	checkORT(t, base, tuned, filepath.Join(run, "delta.safetensors"), tokens)
}

// TestFloat16: a delta applied to a float16 initializer is rounded to
// float16, and onnxruntime computes with exactly those values: y = x·W16
// of the edge-case export, checked against a float64 product of the
// rounded weights.
func TestFloat16(t *testing.T) {
	model := sharedtest.Path(t, "models", "exports", "edge", "fp16_init.onnx")
	dir := t.TempDir()
	m, err := onnx.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	inits, err := dst.InitializersOf(m)
	if err != nil {
		t.Fatal(err)
	}
	w16, err := m.Graph.Initializer("w16").Float32s()
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := dst.BaseHash(inits)
	if err != nil {
		t.Fatal(err)
	}
	values := []float32{0.1, 1.0 / 3, -7.77, 2049}
	d := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash, Method: "dst"}, Tensors: []dst.TensorDelta{
		{Name: "w16", Dims: []int64{4, 4}, Indices: []int64{0, 5, 10, 15}, Values: values},
	}}
	deltaPath := filepath.Join(dir, "d.safetensors")
	if err := dst.WriteDelta(deltaPath, d); err != nil {
		t.Fatal(err)
	}
	tuned := filepath.Join(dir, "tuned.onnx")
	dstune(t, "apply", model, deltaPath, "-o", tuned)
	for i, x := range d.Tensors[0].Indices {
		w16[x] = onnx.HalfToFloat32(onnx.Float32ToHalf(values[i]))
	}
	xs := []float32{1, -2, 0.5, 3, 0.25, 4, -1, 2}
	x, err := onnx.FromFloat32s("x", []int64{2, 4}, xs)
	if err != nil {
		t.Fatal(err)
	}
	ort.Need(t)
	outs, err := ort.Run(tuned, map[string]*onnx.Tensor{"x": x})
	if err != nil {
		t.Fatalf("onnxruntime on %s: %v", tuned, err)
	}
	got, err := outs["y"].Float32s()
	if err != nil || len(got) != 8 {
		t.Fatalf("y: %v (%d values)", err, len(got))
	}
	for r := range 2 {
		for c := range 4 {
			var want float64
			for k := range 4 {
				want += float64(xs[r*4+k]) * float64(w16[k*4+c])
			}
			if math.Abs(float64(got[r*4+c])-want) > 1e-5*math.Max(1, math.Abs(want)) {
				t.Errorf("y[%d,%d] = %g, want %g", r, c, got[r*4+c], want)
			}
		}
	}
}
