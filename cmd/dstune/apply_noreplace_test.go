package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// Without --force, apply replaces no file, also one another process
// makes between apply's check and its write: two applies to one new -o
// at once leave one model, and the other says the file exists.
func TestApplyWithoutForceReplacesNothing(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	tmp := t.TempDir()
	a, b, _ := tinyGPTDeltas(initializerHash(t, model))
	deltaA, deltaB := writeDelta(t, tmp, "a.safetensors", a), writeDelta(t, tmp, "b.safetensors", b)

	// The file made after the check: the write itself refuses it.
	m, err := onnx.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := filepath.Join(tmp, "late.onnx")
	for _, reencode := range [][]string{nil, {"re-encoded"}} {
		if err := os.WriteFile(out, []byte("another writer's"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := writtenOutput("-o", writeApplied(io.Discard, model, out, m, nil, reencode, true))
		if err == nil || !strings.Contains(err.Error(), out+" exists (--force overwrites it)") {
			t.Errorf("re-encode %v: %v", reencode != nil, err)
		}
		if got, _ := os.ReadFile(out); string(got) != "another writer's" {
			t.Errorf("re-encode %v: the file made meanwhile was replaced", reencode != nil)
		}
	}

	for round := range 8 {
		out := filepath.Join(tmp, "race.onnx")
		os.Remove(out)
		var wg sync.WaitGroup
		codes, errs := make([]int, 2), make([]string, 2)
		for i, d := range []string{deltaA, deltaB} {
			wg.Go(func() { codes[i], _, errs[i] = dstune("apply", model, d, "-o", out) })
		}
		wg.Wait()
		if (codes[0] == 0) == (codes[1] == 0) {
			t.Fatalf("round %d: exit %d and %d: %s%s", round, codes[0], codes[1], errs[0], errs[1])
		}
		for i := range codes {
			if codes[i] != 0 && !strings.Contains(errs[i], "exists (--force overwrites it)") {
				t.Errorf("round %d: the apply that lost says %s", round, errs[i])
			}
		}
	}
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
