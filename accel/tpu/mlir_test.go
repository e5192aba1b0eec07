package tpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/update"
)

// mlirOpt finds LLVM's mlir-opt (Debian: apt-get install mlir-19-tools).
func mlirOpt() string {
	for _, name := range []string{"mlir-opt", "mlir-opt-22", "mlir-opt-19", "mlir-opt-16", "mlir-opt-15"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestMLIRParses hands emitted programs to MLIR's own parser (mlir-opt
// with StableHLO as an unregistered dialect: it checks the generic op
// syntax, SSA names and scoping, regions, types and dense literals, not
// StableHLO's attribute contents, which the plugin checks). It covers the
// golden programs, a tiny_gpt DST step and the ops that use regions or
// rarer attributes (sort, reduce_window, convolution, gather, scatter).
func TestMLIRParses(t *testing.T) {
	opt := mlirOpt()
	if opt == "" {
		t.Skip("mlir-opt is not installed (Debian: apt-get install mlir-19-tools)")
	}
	texts := map[string]string{}
	goldens, _ := filepath.Glob(filepath.Join("testdata", "*.golden"))
	for _, g := range goldens {
		b, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		texts[filepath.Base(g)] = string(b)
	}
	tg, _ := trainingGraph(t, "tiny_gpt")
	step, err := LowerTrainStep(tg, &update.Program{
		Optimizer: update.Optimizer{Name: update.OptimizerAdafactor, Adafactor: &update.Adafactor{Beta1: 0.9, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, DecayRate: -0.8, ScaleParameter: true}},
		Selection: perParamSelection(tg, 0.01, update.DistanceRel)})
	if err != nil {
		t.Fatal(err)
	}
	texts["tiny_gpt_dst_step"] = step.Text
	for _, name := range []string{"test_top_k", "test_basic_conv_with_padding", "test_averagepool_2d_pads", "test_maxpool_2d_default",
		"test_cumsum_1d_reverse_exclusive", "test_gather_elements_0", "test_einsum_batch_matmul", "test_sce_NCd1_mean_weight_negative_ii", "test_slice_neg_steps"} {
		p, err := lowerNodeDir(sharedtest.Path(t, "onnx-backend", "node", name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		texts[name] = p.Text
	}
	dir := t.TempDir()
	for name, text := range texts {
		path := filepath.Join(dir, name+".mlir")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(opt, "--allow-unregistered-dialect", path, "-o", os.DevNull).CombinedOutput(); err != nil {
			t.Errorf("%s does not parse: %v\n%s", name, err, out)
		}
	}
}
