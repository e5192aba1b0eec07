package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/dstune/dstune/kernels"
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

// TestProfileGemmPrecisionAll runs `dstune profile gemm --precision all`
// (quick sizes) and checks that every shape gets an sgemm record and then
// an sbgemm record with its ratio to it and the bfloat16 peak.
func TestProfileGemmPrecisionAll(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"profile", "gemm", "--quick", "--json", "--precision", "all"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if want := 2 * len(gemmProfileShapes(true)); len(lines) != want {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), want, out.String())
	}
	for i := 0; i < len(lines); i += 2 {
		var fp32, bf16 map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &fp32); err != nil {
			t.Fatalf("line %q: %v", lines[i], err)
		}
		if err := json.Unmarshal([]byte(lines[i+1]), &bf16); err != nil {
			t.Fatalf("line %q: %v", lines[i+1], err)
		}
		if !strings.HasPrefix(fp32["kernel"].(string), "sgemm") || bf16["kernel"] != strings.Replace(fp32["kernel"].(string), "sgemm", "sbgemm", 1) {
			t.Fatalf("kernels %v then %v, want sgemm then sbgemm", fp32["kernel"], bf16["kernel"])
		}
		if bf16["shape"] != fp32["shape"] || bf16["trans"] != fp32["trans"] {
			t.Errorf("sbgemm record %v after sgemm record %v: another shape", bf16, fp32)
		}
		for _, key := range []string{"gflops", "peak_gflops", "vs_fp32"} {
			if v, _ := bf16[key].(float64); !(v > 0) {
				t.Errorf("line %q: %s = %v, want > 0", lines[i+1], key, bf16[key])
			}
		}
		// Where the bfloat16 products run on the float32 kernels, both
		// are shares of the one FMA peak (two measurements differed).
		if kernels.BF16PeakIsFMAPeak() && bf16["peak_gflops"] != fp32["peak_gflops"] {
			t.Errorf("sbgemm's peak %v, sgemm's %v: want the one FMA peak", bf16["peak_gflops"], fp32["peak_gflops"])
		}
		if _, ok := fp32["vs_fp32"]; ok {
			t.Errorf("sgemm record %q has vs_fp32", lines[i])
		}
	}
	if code := runMain([]string{"profile", "gemm", "--precision", "fp16"}, &out, &errb); code == 0 {
		t.Error("--precision fp16 accepted")
	}
}
