package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
)

func TestParseArgsInterleaved(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	check := fs.String("check", "", "")
	js := fs.Bool("json", false, "")
	pos, err := parseArgs(fs, []string{"model.onnx", "--check", "dir", "extra", "--json", "--", "--literal"})
	if err != nil {
		t.Fatal(err)
	}
	if *check != "dir" || !*js {
		t.Errorf("flags: check=%q json=%v", *check, *js)
	}
	if want := []string{"model.onnx", "extra", "--literal"}; strings.Join(pos, "|") != strings.Join(want, "|") {
		t.Errorf("positional = %q, want %q", pos, want)
	}
}

func TestUnknownCommandExits2(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("stderr = %q", errb.String())
	}
}

func TestBadFlagIsUsageError(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"profile", "--threads", "0"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2 (stderr %q)", code, errb.String())
	}
}

// TestOutputWriteFailureFails: a command whose output cannot be written
// (stdout on a full disk) fails with status 1 and says so, though it
// printed without looking at the errors; one that fails otherwise keeps
// its status and message.
func TestOutputWriteFailureFails(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full here: %v", err)
	}
	defer full.Close()
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := filepath.Join(dir, "model.onnx")
	d := &dst.Delta{Meta: dst.Metadata{BaseSHA256: strings.Repeat("0f", 32), Method: "dst"}, Tensors: []dst.TensorDelta{
		{Name: "w", Dims: []int64{4}, Indices: []int64{1, 2}, Values: []float32{1, 1}}}}
	delta := writeDelta(t, t.TempDir(), "d.safetensors", d)
	for _, args := range [][]string{
		{"version"},
		{"help", "inspect"},
		{"inspect", "-h"},
		{"inspect", model},
		{"run", model, "--check", filepath.Join(dir, "test_data_set_0"), "--threads", "1"},
		{"overlap", delta, delta},
	} {
		var errb bytes.Buffer
		code := runMain(args, full, &errb)
		if want := "dstune " + args[0] + ": writing the output: no space left on device\n"; code != 1 || !strings.HasSuffix(errb.String(), want) {
			t.Errorf("%q to a full disk: exit %d, stderr %q; want 1 and %q", args, code, errb.String(), want)
		}
	}
	var errb bytes.Buffer
	if code := runMain([]string{"inspect", filepath.Join(dir, "missing.onnx")}, full, &errb); code != 1 || strings.Contains(errb.String(), "writing the output") {
		t.Errorf("a missing model with stdout on a full disk: exit %d, stderr %q", code, errb.String())
	}
	if code := runMain([]string{"inspect"}, full, &errb); code != 2 {
		t.Errorf("bad usage with stdout on a full disk: exit %d, want 2", code)
	}
}

// failAfter takes n bytes, then fails every write.
type failAfter struct {
	n     int
	tries int
	got   bytes.Buffer
}

func (w *failAfter) Write(p []byte) (int, error) {
	w.tries++
	if w.got.Len()+len(p) > w.n {
		return 0, syscall.EPIPE
	}
	return w.got.Write(p)
}

// TestOutputStopsAtFirstFailure: once a write to stdout has failed the
// later ones are not tried, so what arrived has no gap, and the first
// error is the one reported.
func TestOutputStopsAtFirstFailure(t *testing.T) {
	w := &failAfter{n: 10}
	out := &outputWriter{w: w}
	for _, s := range []string{"12345", "123456", "1"} {
		out.Write([]byte(s))
	}
	if w.got.String() != "12345" || w.tries != 2 || !errors.Is(out.failed(), syscall.EPIPE) {
		t.Errorf("wrote %q in %d tries, error %v", w.got.String(), w.tries, out.failed())
	}
}
