package dst

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/train"
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
// (ε = 1e-3, module-layer silos) with the iterative and the exact
// threshold, after 20 steps so that the threshold tracking is in steady
// state. The difference is what DST adds to a training step.
func BenchmarkUpdate(b *testing.B) {
	opt, _ := train.NewOptimizer(adamwReal)
	for _, mode := range []string{"full", ThresholdIterative, ThresholdExact} {
		b.Run("method="+mode, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			var ps []*train.TrainParam
			var n int64
			for i, shape := range gptBenchShapes() {
				size := 1
				for _, d := range shape {
					size *= d
				}
				v := make([]float32, size)
				for j := range v {
					v[j] = float32(rng.NormFloat64() * 0.02)
				}
				ps = append(ps, &train.TrainParam{Name: fmt.Sprint("p", i), Shape: shape, Value: v, State: opt.NewState(shape)})
				n += int64(size)
			}
			grads := make([][]float32, 4)
			for g := range grads {
				grads[g] = make([]float32, n)
				for j := range grads[g] {
					grads[g][j] = float32(rng.NormFloat64() * 1e-3)
				}
			}
			setGrads := func(step int) {
				g := grads[step%len(grads)]
				var off int
				for _, p := range ps {
					p.Grad = g[off : off+len(p.Value)]
					off += len(p.Value)
				}
			}
			var method train.Method = train.FullMethod{}
			if mode != "full" {
				o := dstOptions(1e-3, 0, mode == ThresholdExact, 3)
				o.Distance, o.DistanceName, o.Silo = 2, DistanceInvRel, SiloModuleLayer // inv-rel
				m, err := NewMethod(o, nil, "")
				if err != nil {
					b.Fatal(err)
				}
				method = m
			}
			if err := method.Prepare(ps); err != nil {
				b.Fatal(err)
			}
			step := 1
			for ; step <= 20; step++ {
				setGrads(step)
				method.Update(ps, opt, train.StepInfo{Step: int64(step), LRScale: 1}, 2)
			}
			b.SetBytes(4 * n)
			b.ReportAllocs()
			for b.Loop() {
				setGrads(step)
				method.Update(ps, opt, train.StepInfo{Step: int64(step), LRScale: 1}, 2)
				step++
			}
		})
	}
}
