//go:build cgo

package tpu

// Tests and benchmarks that run the lowered programs on a PJRT plugin.
// Without one they skip, saying what was searched; tests/device/run_pjrt.sh
// runs them on a GPU machine and prints their table.

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
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
			tokens := readTensor(t, filepath.Join(dir, set, "input_0.pb"))
			want := readTensor(t, filepath.Join(dir, set, "output_0.pb"))
			g := loadModel(t, "models/"+name+"/model.onnx", map[string]ir.Shape{"tokens": tokens.Shape()})
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

// TestDeviceStepMatchesHostReference runs the MLP step configurations on
// the device against the host reference; XLA may round differently
// (fused multiply-adds, reduction order), so values are compared within
// tolerances and exact selections must keep exactly k.
func TestDeviceStepMatchesHostReference(t *testing.T) {
	b := openDevice(t)
	adamw := Optimizer{Kind: AdamW, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	for _, c := range []struct {
		name string
		cfg  TrainConfig
	}{
		{"adamw-dst-iterative", TrainConfig{Optimizer: adamw, DST: &DST{Eps: 0.1, Distance: DistanceAbs, Bisection: dst.DefaultBisection}}},
		{"adamw-dst-exact", TrainConfig{Optimizer: adamw, DST: &DST{Eps: 0.05, Distance: DistanceRel, Exact: true}}},
		{"sgd-dst-fixed", TrainConfig{Optimizer: Optimizer{Kind: SGD, Momentum: 0.9}, DST: &DST{Eps: 0.2, Distance: DistanceInvRel, FixedSubset: true, Bisection: dst.DefaultBisection}}},
		{"adafactor", TrainConfig{Optimizer: Optimizer{Kind: Adafactor, Beta1: 0.9, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, RelativeStep: true, ScaleParameter: true}}},
	} {
		rng := rand.New(rand.NewPCG(9, 9))
		tg := mlp(t, rng)
		cfg := c.cfg
		if cfg.DST != nil {
			cfg.DST.Silos = allSilos(tg)
		}
		tr, err := b.NewTrainer(tg, cfg)
		if err != nil {
			t.Fatal(err)
		}
		host := newHostTrainer(t, tg, cfg)
		var worst float64
		for step := int64(1); step <= 8; step++ {
			batch := randBatch(rng)
			res, err := tr.Step(step, 0.01, batch)
			if err != nil {
				t.Fatal(err)
			}
			host.step(t, step, 0.01, batch)
			if rel := relDiff(float64(res.Loss), float64(host.lastRes.Loss)); rel > 1e-4 {
				t.Errorf("%s step %d: loss %g, host %g", c.name, step, res.Loss, host.lastRes.Loss)
			}
			for _, prm := range tg.Params {
				got, err := tr.Param(prm.Name)
				if err != nil {
					t.Fatal(err)
				}
				d := ir.Compare(got, ir.FromFloat32s(prm.Value.Shape, host.params[prm.Name]), 1e-3, 1e-5)
				worst = max(worst, d.MaxRel)
				if !d.OK() {
					t.Errorf("%s step %d %s: %v", c.name, step, prm.Name, d)
				}
			}
			for si, s := range res.Silos {
				if s.Exact && s.Kept != dst.SubsetSize(cfg.DST.Eps, s.Size) {
					t.Errorf("%s step %d silo %d: exact step kept %d of %d", c.name, step, si, s.Kept, s.Size)
				}
			}
		}
		fmt.Printf("TABLE step %-22s 8 steps, worst parameter rel diff %.2g\n", c.name, worst)
		tr.Close()
	}
}

func relDiff(a, b float64) float64 {
	return math.Abs(a-b) / max(math.Abs(b), 1e-12)
}

// cpuGrads computes loss and gradients with the CPU backend, for the
// host reference trainer.
func cpuGrads(t testing.TB, tg *ir.Graph) func(map[string][]float32, []*ir.Tensor) (float32, map[string][]float32) {
	exe, err := cpu.Compile(tg, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return func(params map[string][]float32, inputs []*ir.Tensor) (float32, map[string][]float32) {
		for name, v := range params {
			storage, err := exe.Param(name)
			if err != nil {
				t.Fatal(err)
			}
			copy(storage.Float32s(), v)
		}
		out, err := exe.Run(inputs)
		if err != nil {
			t.Fatal(err)
		}
		grads := map[string][]float32{}
		var loss float32
		for i, o := range tg.Outputs {
			if o.Name == ResultLoss {
				loss = out[i].Float32s()[0]
			} else {
				grads[o.Name[len("grad:"):]] = append([]float32(nil), out[i].Float32s()...)
			}
		}
		return loss, grads
	}
}

// TestDeviceTinyGPTDST trains tiny_gpt with DST for 20 steps on the
// device and on the CPU backend (its gradients, the reference optimizer
// and DST on the host) and compares the losses (within 1e-3 relative)
// and the subset sizes per silo (identical: exact selection keeps k on
// both). An Algorithm 2 run is reported alongside.
func TestDeviceTinyGPTDST(t *testing.T) {
	b := openDevice(t)
	for _, mode := range []string{"exact", "iterative"} {
		tg, inputs := trainingGraph(t, "tiny_gpt")
		batch := []*ir.Tensor{inputs["tokens"], inputs[ir.TargetsInput]}
		cfg := TrainConfig{
			Optimizer: Optimizer{Kind: AdamW, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
			DST:       &DST{Eps: 0.01, Distance: DistanceInvRel, Silos: allSilos(tg), Exact: mode == "exact", Bisection: dst.DefaultBisection},
		}
		// Seeds: the parameters' values before training (the host
		// reference copies them now, before the device trainer exists).
		host := newHostTrainer(t, tg, cfg)
		host.gradFn = cpuGrads(t, tg)
		tr, err := b.NewTrainer(tg, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var worstLoss float64
		sizeMismatch, exactSteps := 0, 0
		for step := int64(1); step <= 20; step++ {
			res, err := tr.Step(step, 1e-3, batch)
			if err != nil {
				t.Fatal(err)
			}
			host.step(t, step, 1e-3, batch)
			rel := relDiff(float64(res.Loss), float64(host.lastRes.Loss))
			worstLoss = max(worstLoss, rel)
			mismatch := 0
			var eps []float64
			for si, s := range res.Silos {
				if s.Kept != host.lastRes.Silos[si].Kept {
					mismatch++
				}
				if s.Exact {
					exactSteps++
				}
				eps = append(eps, s.RealizedEps())
			}
			sizeMismatch += mismatch
			sort.Float64s(eps)
			fmt.Printf("TABLE tiny_gpt-dst-%-9s step %2d loss pjrt %.6f cpu %.6f rel %.1e silos with other size %d realized eps median %.4f\n",
				mode, step, res.Loss, host.lastRes.Loss, rel, mismatch, eps[len(eps)/2])
			if mode == "exact" && rel > 1e-3 {
				t.Errorf("step %d: loss %g, CPU %g (rel %.2g > 1e-3)", step, res.Loss, host.lastRes.Loss, rel)
			}
		}
		// Validation through Eval reads the trained parameters in place.
		lg, err := ir.LossGraph(loadModel(t, "models/tiny_gpt/model.onnx", map[string]ir.Shape{"tokens": batch[0].Shape()}), ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := tr.Eval(lg, batch)
		if err != nil {
			t.Fatal(err)
		}
		hostLoss, _ := host.gradFn(host.params, batch)
		if rel := relDiff(float64(ev[0].Float32s()[0]), float64(hostLoss)); rel > 1e-3 {
			t.Errorf("validation loss after training %g, CPU %g", ev[0].Float32s()[0], hostLoss)
		}
		if mode == "exact" && sizeMismatch > 0 {
			t.Errorf("%d silo-steps kept a different number of entries than the CPU", sizeMismatch)
		}
		fmt.Printf("TABLE tiny_gpt-dst-%-9s 20 steps: worst loss rel diff %.2g, silo-steps with other sizes %d, exact selections %d\n", mode, worstLoss, sizeMismatch, exactSteps)
		tr.Close()
	}
}

// BenchmarkDeviceGPTBench times one training step of gpt_bench (batch
// 16×128, AdamW) on the device: full fine-tuning and DST (Algorithm 2,
// inv-rel, ε = 1e-3, one silo per tensor). b.N steps after 3 warm-up
// steps; ns/op is one step including the loss read-back.
func BenchmarkDeviceGPTBench(b *testing.B) {
	dev := openDevice(b)
	g := loadModel(b, "bench/gpt_bench.onnx", map[string]ir.Shape{"tokens": {16, 128}})
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
	adamw := Optimizer{Kind: AdamW, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	for _, method := range []string{"full", "dst"} {
		b.Run("method="+method, func(b *testing.B) {
			cfg := TrainConfig{Optimizer: adamw}
			if method == "dst" {
				cfg.DST = &DST{Eps: 1e-3, Distance: DistanceInvRel, Silos: allSilos(tg), Bisection: dst.DefaultBisection}
			}
			tr, err := dev.NewTrainer(tg, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			step := int64(1)
			for ; step <= 3; step++ {
				if _, err := tr.Step(step, 1e-4, batch); err != nil {
					b.Fatal(err)
				}
			}
			exact := 0
			for b.Loop() {
				res, err := tr.Step(step, 1e-4, batch)
				if err != nil {
					b.Fatal(err)
				}
				for _, s := range res.Silos {
					if s.Exact {
						exact++
					}
				}
				step++
			}
			b.ReportMetric(float64(exact)/float64(b.N), "exact-silos/op")
		})
	}
}
