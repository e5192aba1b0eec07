package cpu

import (
	"math"
	"slices"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// accumRig is tiny_gpt's training graph with two batches (PyTorch's
// test batch and the same tokens shifted by one in the vocabulary) and
// their gradients, run once through the executable: the references the
// trainer's accumulated and clipped updates are checked against.
type accumRig struct {
	batches [2][]*ir.Tensor
	seeds   map[string][]float32    // the parameters before training
	grads   [2]map[string][]float32 // each batch's gradients
}

func newAccumRig(t *testing.T) accumRig {
	t.Helper()
	tt := loadTinyTraining(t, "tiny_gpt")
	second := tt.inputs[0].Clone()
	vocab := tt.graph.Params[0].Tensor.Shape()[0] // the embedding table's rows
	for i, v := range second.Int64s() {
		second.Int64s()[i] = (v + 1) % int64(vocab)
	}
	r := accumRig{batches: [2][]*ir.Tensor{tt.inputs, {second, tt.inputs[1]}}, seeds: map[string][]float32{}}
	for _, p := range tt.graph.Params {
		r.seeds[p.Name] = slices.Clone(p.Tensor.Float32s())
	}
	exe, err := Compile(tt.graph, accel.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	for b, in := range r.batches {
		out, err := exe.Run(in)
		if err != nil {
			t.Fatal(err)
		}
		r.grads[b] = map[string][]float32{}
		for i, o := range tt.graph.Outputs {
			if name, ok := cutPrefix(o.Name, ir.GradPrefix); ok {
				r.grads[b][name] = slices.Clone(out[i].Float32s())
			}
		}
	}
	return r
}

// trainer returns a trainer of a fresh copy of tiny_gpt (the parameters
// at their seeds) and its training graph.
func (r accumRig) trainer(t *testing.T, prog *update.Program, threads int) (*trainer, *ir.Graph) {
	t.Helper()
	tg := loadTinyTraining(t, "tiny_gpt").graph
	var params []*ir.Param
	for _, p := range tg.Params {
		if p.Tensor.DType() == ir.Float32 {
			params = append(params, p)
		}
	}
	tr, err := New().NewTrainer(params, prog, accel.Options{Threads: threads})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr.(*trainer), tg
}

// reference returns the parameters after one optimizer step from the
// gradient w0·g0 + w1·g1, clipped at maxNorm, all in float64, and the
// gradient's norm.
func (r accumRig) reference(o update.Optimizer, w [2]float64, maxNorm float64) (map[string][]float64, float64) {
	sum := map[string][]float64{}
	var sq float64
	for name, g0 := range r.grads[0] {
		g := make([]float64, len(g0))
		for i := range g {
			g[i] = w[0]*float64(g0[i]) + w[1]*float64(r.grads[1][name][i])
			sq += g[i] * g[i]
		}
		sum[name] = g
	}
	norm := math.Sqrt(sq)
	c := update.ClipFactor(norm, maxNorm)
	out := map[string][]float64{}
	for name, g := range sum {
		for i := range g {
			g[i] *= c
		}
		p := make([]float64, len(g))
		for i, v := range r.seeds[name] {
			p[i] = float64(v)
		}
		shape := []int{len(p)}
		var slots [][]float64
		for _, s := range o.Slots(shape) {
			slots = append(slots, make([]float64, update.NumElements(s.Shape)))
		}
		o.Reference(shape, p, g, slots, update.StepInfo{Step: 1, LRScale: 1})
		out[name] = p
	}
	return out, norm
}

// TestTrainerAccumulatesAndClips: Accumulate over two batches with
// weights, then Apply, updates the parameters as the optimizer's float64
// reference does from the weighted sum of the batches' gradients, clipped
// to --max-grad-norm as torch.nn.utils.clip_grad_norm_ clips (SGD and
// AdamW; a limit below the norm and one above it), reports the sum's
// norm, gives the same bits on 1 and 3 threads, and drops an earlier sum
// when first is set; one batch accumulated with weight 1 and applied is
// Step's update, bit for bit.
func TestTrainerAccumulatesAndClips(t *testing.T) {
	r := newAccumRig(t)
	w := [2]float64{0.375, 0.625}
	opts := map[string]update.Optimizer{
		"sgd":   {Name: update.OptimizerSGD, SGD: &update.SGD{LR: 0.5}},
		"adamw": {Name: update.OptimizerAdamW, AdamW: &update.AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}},
	}
	// AdamW divides by the gradients' own size, so an entry whose
	// gradient is near zero moves by a larger share of lr for a rounding.
	tol := map[string]float64{"sgd": 5e-5, "adamw": 5e-3}
	_, norm := r.reference(opts["sgd"], w, 0)
	for oname, o := range opts {
		for _, maxNorm := range []float64{0, norm / 4, norm * 4} {
			want, wantNorm := r.reference(o, w, maxNorm)
			var first map[string][]float32
			for _, threads := range []int{1, 3} {
				tr, tg := r.trainer(t, &update.Program{Optimizer: o, MaxGradNorm: maxNorm}, threads)
				// A stale sum that first must drop.
				if _, err := tr.Accumulate(tg, r.batches[1], 7, true); err != nil {
					t.Fatal(err)
				}
				for b := range 2 {
					res, err := tr.Accumulate(tg, r.batches[b], float32(w[b]), b == 0)
					if err != nil {
						t.Fatal(err)
					}
					if l := float64(res.Loss); math.IsNaN(l) || l <= 0 {
						t.Fatalf("batch %d: loss %v", b, l)
					}
				}
				res, err := tr.Apply(update.StepInfo{Step: 1, LRScale: 1})
				if err != nil {
					t.Fatal(err)
				}
				if res.NonFinite != nil {
					t.Fatalf("non-finite: %+v", *res.NonFinite)
				}
				if d := math.Abs(res.GradNorm-wantNorm) / wantNorm; d > 1e-5 {
					t.Errorf("%s max %g: grad norm %.9g, float64 %.9g", oname, maxNorm, res.GradNorm, wantNorm)
				}
				got := map[string][]float32{}
				for _, p := range tr.params {
					got[p.name] = slices.Clone(p.value)
					// Off by a share of the tensor's largest step: float32
					// rounding of the gradients, the sum and the update.
					worst, step := 0.0, 0.0
					for i, v := range p.value {
						ref := want[p.name][i]
						step = max(step, math.Abs(ref-float64(r.seeds[p.name][i])))
						worst = max(worst, math.Abs(float64(v)-ref))
					}
					worst /= step
					if worst > tol[oname] {
						t.Errorf("%s max %g threads %d: %s off the float64 reference by %.3g of the step", oname, maxNorm, threads, p.name, worst)
					}
				}
				if first == nil {
					first = got
				} else {
					for name, v := range got {
						if !sameBits(v, first[name]) {
							t.Errorf("%s max %g: %s differs between 1 and 3 threads", oname, maxNorm, name)
						}
					}
				}
				if mu := tr.MemoryUse(); mu.GradientSum != 4*int64(entries(tr)) {
					t.Errorf("MemoryUse: gradient sum %d bytes, want %d", mu.GradientSum, 4*entries(tr))
				}
			}
		}
	}

	// One batch, weight 1: Step's update.
	o := update.Program{Optimizer: opts["adamw"], MaxGradNorm: norm / 4}
	stepped, tg := r.trainer(t, &o, 2)
	sres, err := stepped.Step(tg, r.batches[0], update.StepInfo{Step: 1, LRScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	summed, tg2 := r.trainer(t, &o, 2)
	// Without first: a new trainer holds no sum, so the batch starts one.
	if _, err := summed.Accumulate(tg2, r.batches[0], 1, false); err != nil {
		t.Fatal(err)
	}
	ares, err := summed.Apply(update.StepInfo{Step: 1, LRScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sres.GradNorm != ares.GradNorm || sres.GradNorm == 0 {
		t.Errorf("grad norm: Step %v, Accumulate+Apply %v", sres.GradNorm, ares.GradNorm)
	}
	for i, p := range stepped.params {
		if !sameBits(p.value, summed.params[i].value) {
			t.Errorf("%s: Accumulate(weight 1) + Apply differs from Step", p.name)
		}
	}
}

func entries(tr *trainer) int {
	n := 0
	for _, p := range tr.params {
		n += len(p.value)
	}
	return n
}

// TestTrainerAccumulateMisuse: Apply without a sum is an error; a NaN in
// an accumulated gradient stops Apply before anything changes; after a
// batch with a non-finite loss Apply updates nothing.
func TestTrainerAccumulateMisuse(t *testing.T) {
	r := newAccumRig(t)
	tr, tg := r.trainer(t, &update.Program{Optimizer: update.Optimizer{Name: update.OptimizerSGD, SGD: &update.SGD{LR: 0.5}}}, 1)
	if _, err := tr.Apply(update.StepInfo{Step: 1, LRScale: 1}); err == nil {
		t.Error("Apply without Accumulate: no error")
	}
	// A batch whose loss is NaN (an embedding row of NaN), then a good one.
	emb := tr.params[0]
	saved := slices.Clone(emb.value)
	for i := range emb.value {
		emb.value[i] = float32(math.NaN())
	}
	if res, err := tr.Accumulate(tg, r.batches[0], 1, true); err != nil || !math.IsNaN(float64(res.Loss)) {
		t.Fatalf("a NaN batch: %+v, %v", res, err)
	}
	copy(emb.value, saved)
	if _, err := tr.Accumulate(tg, r.batches[1], 1, false); err != nil {
		t.Fatal(err)
	}
	if res, err := tr.Apply(update.StepInfo{Step: 1, LRScale: 1}); err != nil || res.GradNorm != 0 {
		t.Fatalf("Apply after a NaN batch: %+v, %v; want no update", res, err)
	}
	for _, q := range tr.params {
		if !sameBits(q.value, r.seeds[q.name]) {
			t.Errorf("%s changed although a batch of the sum had a NaN loss", q.name)
		}
	}
	if _, err := tr.Accumulate(tg, r.batches[0], 1, true); err != nil {
		t.Fatal(err)
	}
	p := tr.params[len(tr.params)/2]
	p.sum[3] = float32(math.NaN())
	res, err := tr.Apply(update.StepInfo{Step: 1, LRScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if nf := res.NonFinite; nf == nil || nf.Param != p.name || nf.Index != 3 || nf.Applied {
		t.Fatalf("NaN in %s's sum: non-finite report %+v", p.name, res.NonFinite)
	}
	for _, q := range tr.params {
		if !sameBits(q.value, r.seeds[q.name]) {
			t.Errorf("%s changed although the gradient held a NaN", q.name)
		}
	}
	if _, err := tr.Apply(update.StepInfo{Step: 1, LRScale: 1}); err == nil {
		t.Error("a second Apply of the same sum: no error")
	}
}
