package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestProfileGemmJSON runs `dstune profile gemm --quick --json` and checks
// that every line is a profile record (README.md) with sane figures.
func TestProfileGemmJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"profile", "gemm", "--quick", "--json", "--threads", "2"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if want := len(gemmProfileShapes(true)); len(lines) != want {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), want, out.String())
	}
	seen := map[string]bool{}
	for _, line := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		for _, key := range []string{"kernel", "shape", "trans", "threads", "isa", "ms", "gflops", "gbps", "peak_gflops", "peak_gbps"} {
			if _, ok := r[key]; !ok {
				t.Errorf("line %q lacks %q", line, key)
			}
		}
		if r["threads"] != float64(2) {
			t.Errorf("line %q: threads %v, want 2", line, r["threads"])
		}
		for _, key := range []string{"ms", "gflops", "peak_gflops"} {
			if v, _ := r[key].(float64); !(v > 0) {
				t.Errorf("line %q: %s = %v, want > 0", line, key, r[key])
			}
		}
		seen[r["kernel"].(string)+" "+r["trans"].(string)] = true
	}
	for _, want := range []string{"sgemm NN", "sgemm NT", "sgemm TN", "sgemm-batched NT", "sgemm-batched NN"} {
		if !seen[want] {
			t.Errorf("no %s record", want)
		}
	}
}
