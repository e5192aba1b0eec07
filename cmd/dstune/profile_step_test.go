package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

// TestProfileStep profiles tiny_gpt's training step (2 layers of width
// 64, MLP 4·64, vocabulary 256) at batch 2×16: the products' FLOPs are
// three times the forward pass's, counted from the architecture; every
// op kind reports a time, and the step an MFU.
func TestProfileStep(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	for _, precision := range []string{"fp32", "bf16"} {
		code, stdout, stderr := dstune("profile", "step", model, "--batch", "2", "--seq", "16", "--precision", precision, "--json", "--quick")
		if code != 0 {
			t.Fatalf("--precision %s: exit %d: %s", precision, code, stderr)
		}
		recs := map[string]stepOpRecord{}
		var shares float64
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			var r stepOpRecord
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			recs[r.Op] = r
			if r.Op != "step" && r.Op != "optimizer" {
				shares += r.Share
				if r.Calls < 1 || r.MS < 0 {
					t.Errorf("%s: %+v", r.Op, r)
				}
			}
		}
		const B, T, d, layers, vocab = 2, 16, 64, 2, 256
		n := float64(B * T)
		forward := layers*(2*n*d*3*d+2*n*d*d+2*(2*n*d*4*d)+2*(2*B*T*T*d)) + 2*n*d*vocab
		if got := recs["MatMul"].GFLOP + recs["Gemm"].GFLOP; math.Abs(got-3*forward/1e9) > 1e-12 {
			t.Errorf("%s: products %v GFLOP, want %v", precision, got, 3*forward/1e9)
		}
		step := recs["step"]
		if math.Abs(step.GFLOP-3*forward/1e9) > 1e-12 || !(step.MFU > 0 && step.MFU < 1) || step.MS <= 0 {
			t.Errorf("%s: step %+v", precision, step)
		}
		if shares < 0.5 || shares > 1.5 {
			t.Errorf("%s: the op kinds' shares sum to %v", precision, shares)
		}
		if _, ok := recs["optimizer"]; !ok {
			t.Errorf("%s: no optimizer record", precision)
		}
	}
	for _, args := range [][]string{{"profile", "step"}, {"profile", "step", model, "--precision", "all"}, {"profile", "step", model, "--task", "seq2seq"}} {
		if code, _, _ := dstune(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)", args, code)
		}
	}
}
