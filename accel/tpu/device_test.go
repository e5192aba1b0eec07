//go:build cgo

package tpu

// Tests and benchmarks that run the lowered programs on a PJRT plugin.
// Without one they skip, saying what was searched; tests/device/run_pjrt.sh
// runs them on a GPU machine and prints their table.

import (
	"errors"
	"fmt"
	"github.com/dstune/dstune/internal/sharedtest/models"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// openDevice opens the plugin FindPlugin finds, or skips when there is
// none. A plugin that is found but does not load is a failure.
func openDevice(t testing.TB) *Backend {
	t.Helper()
	b, err := Open(Options{})
	if errors.Is(err, ErrNoPlugin) {
		t.Skipf("no PJRT plugin on this machine (pass $%s): %v", PluginEnv, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeviceModelsMatchPyTorch(t *testing.T) {
	b := openDevice(t)
	t.Logf("PJRT plugin %s (%s), platform %s", b.Plugin().Path, b.Plugin().How, b.Platform())
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		for _, set := range []string{"test_data_set_0", "test_data_set_1"} {
			dir := sharedtest.Path(t, "models", name)
			tokens := models.ReadTensor(t, filepath.Join(dir, set, "input_0.pb"))
			want := models.ReadTensor(t, filepath.Join(dir, set, "output_0.pb"))
			g := models.Specialize(t, "models/"+name+"/model.onnx", map[string]ir.Shape{"tokens": tokens.Shape()})
			exe, err := b.Compile(g, accel.Options{})
			if err != nil {
				t.Fatal(err)
			}
			out, err := exe.Run([]*ir.Tensor{tokens})
			if err != nil {
				t.Fatal(err)
			}
			d := ir.Compare(out[0], want, 1e-4, 1e-5)
			fmt.Printf("TABLE forward %-9s %-15s %s\n", name, set, d)
			if !d.OK() {
				t.Errorf("%s %s logits: %v", name, set, d)
			}
			exe.Close()
		}
	}
}

func TestDeviceTrainingGraphs(t *testing.T) {
	b := openDevice(t)
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		tg, inputs := trainingGraph(t, name)
		want, err := ir.Interpret(tg, inputs)
		if err != nil {
			t.Fatal(err)
		}
		exe, err := b.Compile(tg, accel.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := accel.RunNamed(exe, inputs)
		if err != nil {
			t.Fatal(err)
		}
		worst := ir.Diff{}
		for _, o := range tg.Outputs {
			d := ir.Compare(got[o.Name], want[o.Name], 1e-3, 1e-6)
			if !d.OK() {
				t.Errorf("%s %s: %v", name, o.Name, d)
			}
			if d.MaxRel > worst.MaxRel {
				worst = d
			}
		}
		fmt.Printf("TABLE gradients %-9s loss+%d grads, worst %s\n", name, len(tg.Outputs)-1, worst)
		exe.Close()
	}
}

// TestDeviceStepMatchesHostReference runs the MLP step configurations
// on the device against the host reference (stepsWithinTolerance), and
// some of them with gradient accumulation.
func TestDeviceStepMatchesHostReference(t *testing.T) {
	b := openDevice(t)
	cases := stepCases()
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		worst, otherSets, otherEntries := stepsWithinTolerance(t, pjrtDevice{b}, name, cases[name])
		fmt.Printf("TABLE step %-28s 12 steps, worst parameter rel diff %.2g, tensor-steps with another subset than the CPU method %d (%d entries)\n",
			name, worst, otherSets, otherEntries)
	}
	for _, name := range accumulateCases {
		worst, otherSets, otherEntries := updatesWithinTolerance(t, pjrtDevice{b}, name, cases[name], true)
		fmt.Printf("TABLE accumulate %-22s 12 updates of 2 batches, worst parameter rel diff %.2g, tensor-steps with another subset %d (%d entries)\n",
			name, worst, otherSets, otherEntries)
	}
}

// TestDeviceTinyGPTDST trains tiny_gpt with DST for 20 steps through
// train.Run on the device's engine and on the CPU engine, in both
// threshold modes, and compares them as TestEngineTinyGPTMatchesCPU does
// with the evaluator: losses within 1e-3 relative, identical subset sizes
// per silo and step; it reports how many kept index sets differ.
func TestDeviceTinyGPTDST(t *testing.T) {
	b := openDevice(t)
	t.Logf("PJRT plugin %s, platform %s", b.Plugin().Path, b.Platform())
	for _, threshold := range []string{dst.ThresholdIterative, dst.ThresholdExact} {
		cpuDir, devDir := filepath.Join(t.TempDir(), "cpu"), filepath.Join(t.TempDir(), "pjrt")
		cfg := tinyRun(t, "cpu", threshold, 20)
		cpuSubsets := runWithDeltas(t, cfg, cpuDir)
		cfg.Backend = "pjrt"
		devSubsets := runWithDeltas(t, cfg, devDir)
		c, err := compareRuns(t, cpuDir, devDir)
		if err != nil {
			t.Fatal(err)
		}
		otherSets, siloSteps := 0, 0
		for i := range cpuSubsets {
			for name, idx := range cpuSubsets[i] {
				siloSteps++
				if !slices.Equal(idx, devSubsets[i][name]) {
					otherSets++
				}
			}
		}
		for _, l := range c.lines {
			fmt.Printf("TABLE tiny_gpt-dst-%-9s %s\n", threshold, l)
		}
		fmt.Printf("TABLE tiny_gpt-dst-%-9s 20 steps: worst loss rel diff %.2g, silo-steps with another k %d of %d, with another index set %d of %d\n",
			threshold, c.worstLossRel, c.siloStepsOtherK, c.siloSteps, otherSets, siloSteps)
		if c.worstLossRel > 1e-3 {
			t.Errorf("%s: losses differ by up to %.2g relative", threshold, c.worstLossRel)
		}
		if c.siloStepsOtherK > 0 {
			t.Errorf("%s: %d silo-steps kept another number of entries", threshold, c.siloStepsOtherK)
		}
	}
}

// BenchmarkDeviceGPTBench times one training step of gpt_bench (batch
// 16×128, AdamW) on the device: full fine-tuning and DST (Algorithm 2,
// inv-rel, ε = 1e-3, one silo per tensor). b.N steps after 3 warm-up
// steps; ns/op is one step including the loss read-back.
func BenchmarkDeviceGPTBench(b *testing.B) {
	dev := openDevice(b)
	g := models.Specialize(b, "bench/gpt_bench.onnx", map[string]ir.Shape{"tokens": {16, 128}})
	tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tok := make([]int64, 16*128)
	tgt := make([]int64, 16*128)
	for i := range tok {
		tok[i] = int64(rng.IntN(8000))
	}
	for i := range tgt {
		tgt[i] = -100
		if (i+1)%128 != 0 {
			tgt[i] = tok[i+1]
		}
	}
	batch := []*ir.Tensor{ir.FromInt64s(ir.Shape{16, 128}, tok), ir.FromInt64s(ir.Shape{16, 128}, tgt)}
	adamw := update.Optimizer{Name: update.OptimizerAdamW, AdamW: &update.AdamW{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}
	for _, method := range []string{"full", "dst"} {
		b.Run("method="+method, func(b *testing.B) {
			prog := &update.Program{Optimizer: adamw}
			if method == "dst" {
				prog.Selection = perParamSelection(tg, 1e-3, update.DistanceInvRel)
			}
			tr, err := dev.NewTrainer(trainables(tg), prog, accel.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			step := int64(1)
			for ; step <= 3; step++ {
				if _, err := tr.Step(tg, batch, update.StepInfo{Step: step, LRScale: 1}); err != nil {
					b.Fatal(err)
				}
			}
			exact, exactSteps := 0, 0
			for b.Loop() {
				res, err := tr.Step(tg, batch, update.StepInfo{Step: step, LRScale: 1})
				if err != nil {
					b.Fatal(err)
				}
				any := false
				var units []update.UnitResult
				if res.Selection != nil {
					units = res.Selection.Units
				}
				for _, u := range units {
					if u.Exact {
						exact++
						any = true
					}
					if u.Kept != u.K {
						b.Fatalf("step %d: a silo kept %d, want k = %d", step, u.Kept, u.K)
					}
				}
				if any {
					exactSteps++
				}
				step++
			}
			b.ReportMetric(float64(exact)/float64(b.N), "exact-silos/op")
			b.ReportMetric(float64(exactSteps)/float64(b.N), "exact-steps/op")
		})
	}
}
