package llama

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// TestOptimumStyleDecodersMatchORT: the decoders internal/llamagen writes
// the way Optimum exports Llama (input_ids, attention_mask, position_ids;
// the causal and padding mask built from attention_mask; with a cache,
// past_key_values inputs and present outputs; the merged decoder's If on
// use_cache_branch; a tied head) give onnxruntime's outputs on dstune's
// CPU backend, with a padded row in the batch.
func TestOptimumStyleDecodersMatchORT(t *testing.T) {
	ort.Need(t)
	base := llamagen.Config{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 48, Seed: 3}
	const batch, seq, past = 2, 5, 3
	for _, c := range []struct {
		name                  string
		kvCache, merged, tied bool
	}{
		{"plain", false, false, false},
		{"tied", false, false, true},
		{"with-past", true, false, false},
		{"merged", true, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			cfg.KVCache, cfg.Merged, cfg.Tied = c.kvCache, c.merged, c.tied
			dir := t.TempDir()
			if err := llamagen.Write(dir, cfg); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "model.onnx")
			rng := rand.New(rand.NewPCG(1, 2))
			total := seq
			if c.kvCache {
				total += past
			}
			ids, mask, pos := ir.NewTensor(ir.Int64, ir.Shape{batch, seq}), ir.NewTensor(ir.Int64, ir.Shape{batch, total}), ir.NewTensor(ir.Int64, ir.Shape{batch, seq})
			for i := range ids.Int64s() {
				ids.Int64s()[i] = int64(rng.IntN(cfg.Vocab))
			}
			for b := range batch {
				for j := range total {
					// Row 1 is left-padded by one position.
					if b == 0 || j > 0 {
						mask.Int64s()[b*total+j] = 1
					}
				}
				for s := range seq {
					pos.Int64s()[b*seq+s] = int64(total - seq + s - b)
				}
			}
			inputs := map[string]*ir.Tensor{"input_ids": ids, "attention_mask": mask, "position_ids": pos}
			if c.kvCache {
				hd := cfg.Dim / cfg.Heads
				for l := range cfg.Layers {
					for _, kind := range []string{"key", "value"} {
						x := ir.NewTensor(ir.Float32, ir.Shape{batch, cfg.KVHeads, past, hd})
						for i := range x.Float32s() {
							x.Float32s()[i] = float32(rng.NormFloat64())
						}
						inputs[fmt.Sprintf("past_key_values.%d.%s", l, kind)] = x
					}
				}
			}
			if c.merged {
				inputs["use_cache_branch"] = ir.FromBools(ir.Shape{1}, []bool{true})
			}
			m, err := onnx.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			model, err := ir.NewModel(m)
			if err != nil {
				t.Fatal(err)
			}
			b := ir.Bindings{Shapes: map[string]ir.Shape{}, Values: map[string]*ir.Tensor{}}
			fed := map[string]*ir.Tensor{}
			values := map[string]bool{}
			for _, name := range model.ValueInputs() {
				values[name] = true
			}
			for name, x := range inputs {
				if values[name] {
					b.Values[name] = x
				} else {
					b.Shapes[name] = x.Shape()
					fed[name] = x
				}
			}
			g, err := model.Specialize(b)
			if err != nil {
				t.Fatal(err)
			}
			got := runCPU(t, g, fed)
			ortIn := map[string]*onnx.Tensor{}
			for name, x := range inputs {
				if ortIn[name], err = ir.TensorToONNX(name, x); err != nil {
					t.Fatal(err)
				}
			}
			want, err := ort.Run(path, ortIn)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range model.Outputs {
				w, err := ir.TensorFromONNX(want[o])
				if err != nil {
					t.Fatal(err)
				}
				d := ir.Compare(got[o], w, 1e-4, 1e-5)
				if !d.OK() {
					t.Errorf("%s: %v", o, d)
				}
				if o == "logits" {
					t.Logf("logits: max abs error %.2e against onnxruntime", d.MaxAbs)
				}
			}
			checkDirectionalDerivative(t, g, fed, ids)
		})
	}
}

// checkDirectionalDerivative builds the next-token training graph of g
// and compares the loss's derivative along the gradient g itself (|g|²)
// with a central difference of the loss along it (float32: a step of
// 1e-3/|g|, within 0.1 %).
func checkDirectionalDerivative(t *testing.T, g *ir.Graph, inputs map[string]*ir.Tensor, ids *ir.Tensor) {
	t.Helper()
	spec := ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100, Output: "logits"}
	tg, err := ir.TrainingGraph(g, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := ir.LossGraph(g, spec)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]*ir.Tensor{ir.TargetsInput: nextTokenTargets(ids)}
	for k, v := range inputs {
		in[k] = v
	}
	grads := runCPU(t, tg, in)
	exe, err := cpu.Compile(lg, accel.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	dirs := map[string][]float32{}
	var normSq float64
	for _, p := range lg.Params {
		grad := grads[ir.GradPrefix+p.Name].Float32s()
		dirs[p.Name] = append([]float32(nil), grad...)
		for _, v := range grad {
			normSq += float64(v) * float64(v)
		}
	}
	step := float32(1e-3 / math.Sqrt(normSq))
	loss := func(sign float32) float64 {
		for _, p := range lg.Params {
			x, err := exe.Param(p.Name)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range dirs[p.Name] {
				x.Float32s()[i] += sign * step * v
			}
		}
		out, err := accel.RunNamed(exe, in)
		if err != nil {
			t.Fatal(err)
		}
		return out[ir.LossOutput].Float64At(0)
	}
	up := loss(1)
	down := loss(-2)
	loss(1)
	along := (up - down) / (2 * float64(step))
	if math.Abs(along-normSq) > 1e-3*normSq {
		t.Errorf("derivative of the loss along its gradient: autodiff |g|² = %.6g, central difference %.6g", normSq, along)
	}
	t.Logf("derivative along the gradient over %d parameters: |g|² = %.6g, central difference %.6g", len(lg.Params), normSq, along)
}
