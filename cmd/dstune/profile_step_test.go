package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// TestProfileStep profiles tiny_gpt's full fine-tuning step: the tables
// add up to the profiled nodes, the layers are grouped, the matrix
// products of a step are three times the forward graph's (each product's
// two operands get gradients, one product each; a bias folded into a
// product is listed as MatMul+Add but not counted as product
// arithmetic), the slowest nodes are
// listed slowest first, the roofline PNG is written; flags profile step does not take are refused.
func TestProfileStep(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, byteCorpus([]byte(strings.Repeat("the quick brown fox jumps over the lazy dog. ", 8)), 32, 16))
	roof := filepath.Join(dir, "roofline.png")
	code, out, errOut := dstune("profile", "step", model, "--data", data, "--task", "lm", "--batch", "2", "--max-len", "32",
		"--steps", "2", "--runs", "2", "--threads", "1", "--json", "--roofline", roof)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var p stepProfile
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for what, rows := range map[string][]*profRow{"op kinds": p.Kinds, "node groups": p.Groups} {
		var ms, fb float64
		for _, r := range rows {
			ms += r.MS
			fb += r.ForwardMS + r.BackwardMS
		}
		if math.Abs(ms-p.NodesMS) > 1e-6*p.NodesMS || math.Abs(fb-p.NodesMS) > 1e-6*p.NodesMS {
			t.Errorf("%s add up to %.4f ms (forward + backward %.4f), the nodes to %.4f", what, ms, fb, p.NodesMS)
		}
	}
	layered, folded := false, false
	for _, g := range p.Groups {
		layered = layered || strings.Contains(g.Name, ".*")
	}
	for _, k := range p.Kinds {
		folded = folded || k.Name == "MatMul+Add" // a bias in the product's epilogue
	}
	// Ops that only move data do no arithmetic, and a reshape (a view of
	// its input) moves no bytes either: no impossible rates.
	for _, k := range p.Kinds {
		switch k.Name {
		case "Reshape":
			if k.GFLOP != 0 || k.GB != 0 || k.Roofline != 0 {
				t.Errorf("Reshape: %g GFLOP, %g GB, roofline %g: a view moves nothing", k.GFLOP, k.GB, k.Roofline)
			}
		case "Transpose", "Gather", "Slice", "Concat":
			if k.GFLOP != 0 || k.GB <= 0 {
				t.Errorf("%s: %g GFLOP, %g GB: data movement, no arithmetic", k.Name, k.GFLOP, k.GB)
			}
		}
	}
	if !folded {
		t.Errorf("no MatMul+Add kind (tiny_gpt's biases run in the products' epilogues): %v", groupNames(p.Kinds))
	}
	if !layered {
		t.Errorf("no group adds up layers: %v", groupNames(p.Groups))
	}
	if want := 3 * forwardProductGFLOP(t, model, 2, 32); math.Abs(p.ProductGFLOP-want) > 1e-9*want {
		t.Errorf("product GFLOP %.9f, want three times the forward's: %.9f", p.ProductGFLOP, want)
	}
	// The slowest nodes: --top of them, slowest first, none faster than
	// the average node of any op kind can be slower than its slowest.
	if len(p.Slowest) != 12 {
		t.Errorf("%d slowest nodes, want --top's 12", len(p.Slowest))
	}
	for i, s := range p.Slowest {
		if i > 0 && s.MS > p.Slowest[i-1].MS || !strings.Contains(s.Shapes, "→") || s.Name == "" {
			t.Errorf("slowest node %d: %+v (after %+v)", i, s, p.Slowest[max(i-1, 0)])
		}
	}
	for _, r := range p.Kinds {
		if len(p.Slowest) > 0 && r.MS/float64(r.Calls) > p.Slowest[0].MS*(1+1e-9) {
			t.Errorf("op kind %s averages %.4f ms a node, above the slowest node's %.4f", r.Name, r.MS/float64(r.Calls), p.Slowest[0].MS)
		}
	}
	if p.StepMS <= 0 || p.PeakFLOPS <= 0 || p.PeakBW <= 0 || !(p.MFU > 0 && p.MFU < 1.5) {
		t.Errorf("step %.3f ms, peaks %.1f GFLOP/s %.1f GB/s, MFU %.3f", p.StepMS, p.PeakFLOPS, p.PeakBW, p.MFU)
	}
	f, err := os.Open(roof)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if img, err := png.Decode(f); err != nil || img.Bounds().Dx() < 500 {
		t.Errorf("roofline: %v", err)
	}

	for _, args := range [][]string{
		{"--out", filepath.Join(dir, "run")},
		{"--resume", filepath.Join(dir, "run")},
		{"--runs", "0"},
		{"--roofline", roof},                               // exists: --force overwrites it
		{"--roofline", filepath.Join(dir, "roofline.txt")}, // the roofline is a PNG
		{"--force"}, // for --roofline
		{"--roofline", filepath.Join(dir, "none", "r.png")}, // refused before the profiling
	} {
		code, _, errOut := dstune(append([]string{"profile", "step", model, "--data", data, "--task", "lm"}, args...)...)
		if code != 2 || !strings.Contains(errOut, args[0]) {
			t.Errorf("%v: exit %d, %s", args, code, errOut)
		}
	}
	// With --force the existing roofline is written again.
	if err := os.WriteFile(roof, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = dstune("profile", "step", model, "--data", data, "--task", "lm", "--batch", "2", "--max-len", "32",
		"--steps", "1", "--runs", "1", "--threads", "1", "--roofline", roof, "--force")
	if png, _ := os.ReadFile(roof); code != 0 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("--roofline over an existing file with --force: exit %d, %s", code, errOut)
	}
}

// TestProfileStepInterruptedWhileTiming: Ctrl-C during the node timing
// stops it after the node being timed, exits with 130 and prints no
// profile, as one before it does.
func TestProfileStepInterruptedWhileTiming(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	data := filepath.Join(t.TempDir(), "d.jsonl")
	writeLines(t, data, byteCorpus([]byte(strings.Repeat("the quick brown fox jumps over the lazy dog. ", 8)), 32, 16))
	// A step of tiny_gpt takes milliseconds: a million timed runs, hours.
	js, _ := json.Marshal([]string{"profile", "step", model, "--data", data, "--task", "lm", "--batch", "2", "--max-len", "32",
		"--steps", "2", "--runs", "1000000", "--threads", "1"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DSTUNE_TEST_MAIN="+string(js))
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var log strings.Builder
	lines := bufio.NewScanner(stderr)
	for lines.Scan() && !strings.HasPrefix(lines.Text(), "step 1/2") {
		log.WriteString(lines.Text() + "\n")
	}
	time.Sleep(200 * time.Millisecond) // the last step, then into the timing
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	// Were the timing not stopped, it would run for hours.
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	for lines.Scan() {
		log.WriteString(lines.Text() + "\n")
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || stdout.Len() != 0 || !strings.Contains(log.String(), "interrupted: nothing profiled") {
		t.Errorf("exit %d, stdout %q, stderr:\n%s", code, stdout.String(), log.String())
	}
}

func groupNames(rows []*profRow) []string {
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
	}
	return names
}

// forwardProductGFLOP is 2·m·n·k summed over the MatMul and Gemm nodes of
// the model's forward graph for a batch of b×t tokens.
func forwardProductGFLOP(t *testing.T, path string, b, tokens int) float64 {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g, err := ir.FromONNX(m, map[string]ir.Shape{"tokens": {b, tokens}})
	if err != nil {
		t.Fatal(err)
	}
	var flop float64
	for _, n := range g.Nodes {
		switch n.Op.(type) {
		case *ir.MatMul:
			a, w := n.Inputs[0].Shape, n.Inputs[1].Shape
			batch := 1
			for _, d := range a[:len(a)-2] {
				batch *= d
			}
			flop += 2 * float64(batch*a[len(a)-2]*a[len(a)-1]*w[len(w)-1])
		case *ir.Gemm:
			t.Fatalf("tiny_gpt has a Gemm: extend the count")
		}
	}
	return flop / 1e9
}

// TestProfileStepBF16: with --precision bf16 the step's products, counted
// from tiny_gpt's architecture (2 layers of width 64, MLP 4·64,
// vocabulary 256: three times the forward products), are measured against
// the bfloat16 peak.
func TestProfileStepBF16(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, byteCorpus([]byte(strings.Repeat("the quick brown fox jumps over the lazy dog. ", 8)), 32, 16))
	code, out, errOut := dstune("profile", "step", model, "--data", data, "--task", "lm", "--batch", "2", "--max-len", "32",
		"--steps", "2", "--runs", "1", "--threads", "1", "--precision", "bf16", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var p stepProfile
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	const B, T, d, layers, vocab = 2, 32, 64, 2, 256
	n := float64(B * T)
	forward := layers*(2*n*d*3*d+2*n*d*d+2*(2*n*d*4*d)+2*(2*B*T*T*d)) + 2*n*d*vocab
	if p.Precision != "bf16" || math.Abs(p.ProductGFLOP-3*forward/1e9) > 1e-12 || !(p.MFU > 0) || !(p.PeakFLOPS > 0) {
		t.Errorf("precision %q, %v GFLOP of products (want %v), MFU %v, peak %v", p.Precision, p.ProductGFLOP, 3*forward/1e9, p.MFU, p.PeakFLOPS)
	}
}

// TestProfileStepPrompt: with --method prompt the header counts the
// virtual tokens the model sees besides the text's positions.
func TestProfileStepPrompt(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, byteCorpus([]byte(strings.Repeat("the quick brown fox jumps over the lazy dog. ", 8)), 32, 16))
	args := []string{"profile", "step", model, "--data", data, "--task", "lm", "--method", "prompt", "--batch", "2", "--max-len", "32",
		"--steps", "1", "--runs", "1", "--threads", "1"}
	code, out, errOut := dstune(args...)
	if code != 0 || !strings.Contains(out, "batch 2×32 (+10 virtual tokens)") {
		t.Errorf("exit %d, header %q\n%s", code, strings.SplitN(out, "\n", 2)[0], errOut)
	}
	code, out, errOut = dstune(append(args, "--json")...)
	var p stepProfile
	if err := json.Unmarshal([]byte(out), &p); code != 0 || err != nil || p.Virtual != 10 || p.Batch != [2]int{2, 32} {
		t.Errorf("exit %d, %v: virtual %d, batch %v\n%s", code, err, p.Virtual, p.Batch, errOut)
	}
}
