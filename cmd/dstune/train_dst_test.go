package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/train"
)

// TestTrainDST runs dstune train --method dst on tiny_gpt: the options
// land in config.json (a note says --refine-steps does nothing for the
// exact threshold), the delta is written and named, metrics carry DST's
// fields, and a resume with other DST options is refused.
func TestTrainDST(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	trainPath, validPath := tinyGPTData(t)
	run := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := dstune("train", model, "--data", trainPath, "--valid", validPath, "--task", "lm", "--steps", "4",
		"--batch", "4", "--method", "dst", "--eps", "0.01", "--silo", "module", "--threshold", "exact", "--refine-steps", "4", "--out", run)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "note: --refine-steps and --refine-factor drive --threshold iterative (and --paper-alg2); --threshold exact selects without them") {
		t.Errorf("--refine-steps with --threshold exact: no note that it changes nothing:\n%s", stderr)
	}
	if !strings.Contains(stdout, filepath.Join(run, dst.DeltaFile)) {
		t.Fatalf("the output does not name the delta:\n%s", stdout)
	}
	cfg, err := train.LoadConfig(run)
	if err != nil {
		t.Fatal(err)
	}
	want := dst.Options{Eps: 0.01, Distance: dst.DistanceInvRel, Silo: dst.SiloModule, Threshold: dst.ThresholdExact, Churn: true, RefineSteps: 4, Factor: 2}
	got, err := dst.ParseOptions(cfg.DST, 0)
	if cfg.Method != train.MethodDST || err != nil || got != want {
		t.Fatalf("config.json: method %q, dst %s (%v)", cfg.Method, cfg.DST, err)
	}
	d, err := dst.ReadDelta(filepath.Join(run, dst.DeltaFile))
	if err != nil {
		t.Fatal(err)
	}
	if d.Meta.Silo != dst.SiloModule || d.Meta.Steps != 4 || d.Meta.Extra["threshold"] != dst.ThresholdExact {
		t.Fatalf("delta metadata %+v", d.Meta)
	}
	recs := sharedtest.ReadMetrics(t, run)
	last := recs[len(recs)-1]
	if last.Silos == nil || last.Eps == nil || last.DSTMS == nil {
		t.Fatalf("last metrics record lacks DST fields: %v", last.Fields)
	}
	if _, ok := last.Silos["attn_qkv.weight"]; !ok {
		t.Fatalf("module silos not named by kind: %v", last.Silos)
	}
	code, _, stderr = dstune("train", "--resume", run, "--eps", "0.02")
	if code == 0 || !strings.Contains(stderr, "dst") {
		t.Fatalf("resume with another ε: exit %d, %s", code, stderr)
	}
	code, _, stderr = dstune("train", model, "--data", trainPath, "--task", "lm", "--steps", "2", "--method", "dst",
		"--silo", "module", "--normalize", "size", "--distance", "random", "--out", filepath.Join(t.TempDir(), "r"))
	if code != 2 || !strings.Contains(stderr, "random mask") {
		t.Fatalf("random with normalization: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(run, "checkpoint")); err != nil {
		t.Fatal(err)
	}
}
