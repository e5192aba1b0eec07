package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstune/dstune/demo"
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/onnx"
)

func TestDemoUsage(t *testing.T) {
	for _, args := range [][]string{{"demo", "extra"}, {"demo", "--steps", "0"}, {"demo", "--eps", "0"}, {"demo", "--eps", "2"}, {"demo", "--threads", "0"}, {"demo", "--lr", "-1"}, {"demo", "--regenerate="}} {
		if code, _, stderr := dstune(args...); code != 2 || !strings.Contains(stderr, "usage: dstune demo") {
			t.Errorf("%v: exit %d, %s", args, code, stderr)
		}
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := dstune("demo", "--out", dir); code != 2 || !strings.Contains(stderr, "already exists") {
		t.Errorf("existing run: exit %d, %s", code, stderr)
	}
	// Any file the demo writes, already there, is left alone: nothing is
	// written.
	mine := t.TempDir()
	for _, name := range []string{"train.jsonl", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(mine, name), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, stderr := dstune("demo", "--out", mine); code != 2 || !strings.Contains(stderr, filepath.Join(mine, "train.jsonl")+" already exists") {
		t.Errorf("existing train.jsonl: exit %d, %s", code, stderr)
	}
	entries, _ := os.ReadDir(mine)
	if data, _ := os.ReadFile(filepath.Join(mine, "train.jsonl")); len(entries) != 2 || string(data) != "mine" {
		t.Errorf("the demo wrote into a directory holding its files: %d entries, train.jsonl %q", len(entries), data)
	}
}

// demoRow parses a row of the demo's quality table: validation loss and
// exact match (a fraction).
func demoRow(t *testing.T, out, name string) (loss, exact float64) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + ` +([0-9.]+) +([0-9.]+) %`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no row %q in\n%s", name, out)
	}
	loss, _ = strconv.ParseFloat(m[1], 64)
	exact, _ = strconv.ParseFloat(m[2], 64)
	return loss, exact / 100
}

// withoutTimes drops the lines of the demo's output that differ between
// identical runs: the time taken and the directory.
func withoutTimes(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "time ") && !strings.HasPrefix(line, "files in ") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// TestDemoShort: a 30-step demo runs, writes its files, prints the same
// numbers twice, and its tuned.onnx is what `dstune apply` makes of its
// delta.
func TestDemoShort(t *testing.T) {
	var outs []string
	var dirs []string
	for i := range 2 {
		dir := filepath.Join(t.TempDir(), "demo")
		if i == 1 {
			// A full.log of an earlier --full run is in the way only of
			// another --full run.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "full.log"), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		code, stdout, stderr := dstune("demo", "--out", dir, "--steps", "30", "--full=false", "--threads", "1")
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		outs, dirs = append(outs, stdout), append(dirs, dir)
	}
	out, dir := outs[0], dirs[0]
	if withoutTimes(outs[0]) != withoutTimes(outs[1]) {
		t.Errorf("two runs printed different results:\n%s\n---\n%s", outs[0], outs[1])
	}
	for _, want := range []string{"base model", "after DST (ε = 0.01)", "hello! → OLLEH.", "118,528 parameters", "run/delta.safetensors: ", "files in " + dir,
		"dstune train base.onnx --data train.jsonl", "--method dst", "--out run", "dstune apply base.onnx run/delta.safetensors -o tuned.onnx"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "full fine-tuning") {
		t.Errorf("--full=false ran full fine-tuning:\n%s", out)
	}
	if !strings.Contains(out, "examples, 1 thread\n") {
		t.Errorf("output lacks the thread count, singular:\n%s", out)
	}
	if data, _ := os.ReadFile(filepath.Join(dirs[1], "full.log")); string(data) != "mine" {
		t.Errorf("--full=false wrote full.log: %q", data)
	}
	loss, exact := demoRow(t, out, "base model")
	if exact > 0.05 || loss < 3 {
		t.Errorf("base model: loss %g, exact match %g: the task is not new to it", loss, exact)
	}
	for _, f := range []string{"base.onnx", "train.jsonl", "valid.jsonl", "run/delta.safetensors", "run/metrics.jsonl", "run/checkpoint/params.safetensors", "tuned.onnx", "train.log", "apply.log"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	base, err := os.ReadFile(filepath.Join(dir, "base.onnx"))
	if err != nil || !bytes.Equal(base, demo.BaseModel) {
		t.Errorf("base.onnx is not the shipped model (%v)", err)
	}
	again := filepath.Join(t.TempDir(), "again.onnx")
	if code, _, stderr := dstune("apply", filepath.Join(dir, "base.onnx"), filepath.Join(dir, "run", "delta.safetensors"), "-o", again); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	a, _ := os.ReadFile(again)
	b, _ := os.ReadFile(filepath.Join(dir, "tuned.onnx"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("tuned.onnx differs from dstune apply's output")
	}
}

// TestDemo: the demo as the README shows it (≈ 7 s; skipped with -short
// and with pure Go kernels):
// DST learns the new task, about as well as full fine-tuning, changing
// round(ε·n) entries of every tensor.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the full demo is skipped (TestDemoShort runs a short one)")
	}
	if kernels.ActiveISA() == kernels.Generic {
		t.Skip("pure Go kernels (-tags purego or no SIMD): the full demo takes about a minute; TestDemoShort runs a short one")
	}
	dir := filepath.Join(t.TempDir(), "demo")
	code, out, stderr := dstune("demo", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("\n%s", out)
	baseLoss, baseExact := demoRow(t, out, "base model")
	loss, exact := demoRow(t, out, "after DST (ε = 0.01)")
	fullLoss, fullExact := demoRow(t, out, "full fine-tuning, for reference")
	if baseExact > 0.05 || exact < 0.9 || fullExact < 0.9 || loss > baseLoss/20 || fullLoss > baseLoss/20 {
		t.Errorf("exact match %.3f → %.3f (full %.3f), loss %.4f → %.4f (full %.4f)", baseExact, exact, fullExact, baseLoss, loss, fullLoss)
	}

	m, err := onnx.ReadFile(filepath.Join(dir, "base.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d, err := dst.ReadDelta(filepath.Join(dir, "run", "delta.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var want, params int64
	for _, it := range m.Graph.Initializers {
		if it.DataType != onnx.Float {
			continue
		}
		n, _ := it.NumElements()
		params += n
		k := dst.SubsetSize(0.01, n)
		want += k
		if td := d.Tensor(it.Name); td == nil || int64(len(td.Indices)) != k {
			t.Errorf("%s: the delta changes %v entries, want round(ε·%d) = %d", it.Name, td, n, k)
		}
	}
	if d.NumChanged() != want || !strings.Contains(out, groupThousands(want)+" (") || !strings.Contains(out, "exactly "+groupThousands(want)+" entries") {
		t.Errorf("delta changes %d entries, want %d", d.NumChanged(), want)
	}
	if d.Meta.Epsilon != 0.01 || d.Meta.Method != "dst" || d.Meta.Silo != "module-layer" || d.Meta.Distance != "inv-rel" || d.Meta.Steps != 300 {
		t.Errorf("delta metadata %+v", d.Meta)
	}
}

// TestDemoInterrupted: the first Ctrl-C during the fine-tuning is said on
// the terminal (the run's own notice goes into its log), the run writes
// its checkpoint and the demo stops with status 130 instead of applying
// and evaluating; nothing after it starts.
func TestDemoInterrupted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	js, _ := json.Marshal([]string{"demo", "--out", dir, "--steps", "1000000", "--threads", "1"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DSTUNE_TEST_MAIN="+string(js))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The run's log shows its first validation once it trains.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		log, _ := os.ReadFile(filepath.Join(dir, "train.log"))
		if bytes.Contains(log, []byte("step 0: validation loss")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no training step within 2 minutes; train.log:\n%s\nstderr: %s", log, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(stderr.String(), "interrupted: the demo stops") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "checkpoint", "params.safetensors")); err != nil {
		t.Errorf("the interrupted run wrote no checkpoint: %v", err)
	}
	for _, name := range []string{"apply.log", "tuned.onnx", "full.log"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s written after the interruption", name)
		}
	}
}
