package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/update"
)

// gptBenchShapes are the parameter shapes of testdata/bench/gpt_bench.onnx
// (5,240,320 entries in 52 tensors).
func gptBenchShapes() [][]int {
	shapes := [][]int{{8000, 256}, {128, 256}}
	for range 4 {
		shapes = append(shapes, []int{768, 256}, []int{768}, []int{256, 256}, []int{256}, []int{1024, 256}, []int{1024},
			[]int{256, 1024}, []int{256}, []int{256}, []int{256}, []int{256}, []int{256})
	}
	return append(shapes, []int{256}, []int{256})
}

// BenchmarkUpdate times one update of the gpt_bench-sized parameters
// (AdamW, 2 threads): full fine-tuning's optimizer step against DST's
// (ε = 1e-3, one unit per tensor, inv-rel distance) with the iterative and
// the exact threshold, after 20 steps so that the threshold tracking is
// in steady state. The difference is what DST adds to a training step.
func BenchmarkUpdate(b *testing.B) {
	opt, _ := lowerOptimizer(adamwReal)
	for _, mode := range []string{"full", "iterative", "exact"} {
		b.Run("method="+mode, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			var ps []*trainParam
			var n int64
			for i, shape := range gptBenchShapes() {
				p := newParam(fmt.Sprint("p", i), shape, randFloats(rng, update.NumElements(shape), 0.02), adamwReal)
				ps = append(ps, p)
				n += int64(len(p.value))
			}
			grads := make([][]float32, 4)
			for g := range grads {
				grads[g] = randFloats(rng, int(n), 1e-3)
			}
			setGrads := func(step int) {
				g := grads[step%len(grads)]
				var off int
				for _, p := range ps {
					p.grad = g[off : off+len(p.value)]
					off += len(p.value)
				}
			}
			var sel *selection
			if mode != "full" {
				def := &update.Selection{Distance: update.DistanceInvRel, Exact: mode == "exact", Bisection: update.DefaultBisection, BandCap: 64 << 10}
				for _, p := range ps {
					p.seed = append([]float32(nil), p.value...)
					k := min(max(int64(math.Round(1e-3*float64(len(p.value)))), 1), int64(len(p.value)))
					def.Units = append(def.Units, update.Unit{Name: p.name, Pieces: []update.Piece{{Param: p.name}}, K: k})
				}
				var err error
				if sel, err = newSelection(def, ps); err != nil {
					b.Fatal(err)
				}
			}
			run := func(step int) {
				setGrads(step)
				info := update.StepInfo{Step: int64(step), LRScale: 1}
				if sel != nil {
					sel.update(opt, info, 2)
					return
				}
				for _, p := range ps {
					opt.step(p, info, 2)
				}
			}
			step := 1
			for ; step <= 20; step++ {
				run(step)
			}
			b.SetBytes(4 * n)
			b.ReportAllocs()
			for b.Loop() {
				run(step)
				step++
			}
		})
	}
}
