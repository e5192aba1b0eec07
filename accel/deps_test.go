package accel_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/dstune/dstune/"

// deps lists the packages patterns depend on (go list -deps, not counting
// tests), the module's own without the module prefix.
func deps(t *testing.T, patterns ...string) map[string]bool {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(gobin, append([]string{"list", "-deps"}, patterns...)...)
	cmd.Dir = ".." // the module root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("go list: %v: %s", err, stderr.String())
	}
	got := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		got[strings.TrimPrefix(sc.Text(), module)] = true
	}
	return got
}

// TestDependenciesPointOneWay keeps the layering README.md's
// architecture section describes: backends lower the graph (ir) and the
// update program (update) and know nothing of the training loop or of
// the methods (DST, LoRA, prompt tuning); the update program and the kernels depend on nothing of dstune;
// no library package depends on the command.
func TestDependenciesPointOneWay(t *testing.T) {
	rules := []struct {
		pattern   string
		forbidden []string
	}{
		{"./accel/...", []string{"train", "dst", "peft", "cmd/dstune"}},
		{"./update", []string{"ir", "accel", "kernels", "train", "dst", "peft"}},
		{"./kernels", []string{"ir", "accel", "update", "train", "dst", "peft"}},
		{"./ir", []string{"accel", "update", "train", "dst", "peft"}},
		{"./train", []string{"dst", "peft", "accel/cpu", "accel/tpu", "cmd/dstune"}},
		{"./dst", []string{"peft", "accel/cpu", "accel/tpu", "cmd/dstune"}},
		{"./peft", []string{"accel/cpu", "accel/tpu", "cmd/dstune"}},
		{"./sweep", []string{"accel/cpu", "accel/tpu", "cmd/dstune"}},
	}
	for _, r := range rules {
		got := deps(t, r.pattern)
		for _, f := range r.forbidden {
			if got[f] {
				t.Errorf("%s depends on %s", r.pattern, f)
			}
		}
	}
}
