package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel/tpu"
)

// TestTrainPJRTWithoutPlugin: dstune train --backend pjrt on a machine
// without a PJRT plugin fails at once — before reading data or creating
// the run directory — with the discovery error listing what was searched
// (or, in a build without cgo, saying that the backend needs cgo).
func TestTrainPJRTWithoutPlugin(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	writeLines(t, data, []string{`{"tokens":[1,2,3]}`})
	libs := filepath.Join(dir, "lib")
	if err := os.Mkdir(libs, 0o755); err != nil {
		t.Fatal(err)
	}
	// Only the fixed system paths remain besides the ones set here.
	t.Setenv(tpu.PluginEnv, "")
	t.Setenv("PJRT_PLUGIN_LIBRARY_PATH", libs)
	t.Setenv("LD_LIBRARY_PATH", "")
	t.Setenv("VIRTUAL_ENV", "")
	t.Setenv("PYTHONPATH", "")
	t.Setenv("HOME", dir)
	if p, err := tpu.FindPlugin(tpu.DefaultSearchPaths("")); err == nil {
		t.Skipf("this machine has a PJRT plugin (%s)", p.Path)
	}
	run := filepath.Join(dir, "run")
	base := []string{"train", "m.onnx", "--data", data, "--task", "lm", "--steps", "2", "--backend", "pjrt", "--out", run}

	code, _, stderr := dstune(base...)
	_, cgoErr := tpu.CheckRuntime("")
	switch {
	case errors.Is(cgoErr, tpu.ErrNeedsCgo):
		if code != 1 || !strings.Contains(stderr, "needs a cgo build") {
			t.Errorf("without cgo: exit %d, stderr %q", code, stderr)
		}
	case code != 1 || !strings.Contains(stderr, "no PJRT plugin found") || !strings.Contains(stderr, filepath.Join(libs, "libtpu.so")) ||
		!strings.Contains(stderr, "--pjrt-plugin"):
		t.Errorf("exit %d, stderr %q; want exit 1 and the search list (with %s)", code, stderr, libs)
	}
	if _, err := os.Stat(run); err == nil {
		t.Errorf("the run directory was created")
	}

	missing := filepath.Join(dir, "nonexistent", "pjrt_plugin.so")
	code, _, stderr = dstune(append(base, "--pjrt-plugin", missing)...)
	if code != 1 || !(strings.Contains(stderr, missing) || errors.Is(cgoErr, tpu.ErrNeedsCgo)) {
		t.Errorf("--pjrt-plugin %s: exit %d, stderr %q", missing, code, stderr)
	}
	code, _, stderr = dstune("train", "m.onnx", "--data", data, "--task", "lm", "--steps", "2", "--out", run, "--pjrt-plugin", missing)
	if code != 2 || !strings.Contains(stderr, "--pjrt-plugin is for --backend pjrt") {
		t.Errorf("--pjrt-plugin with the cpu backend: exit %d, stderr %q", code, stderr)
	}
}
