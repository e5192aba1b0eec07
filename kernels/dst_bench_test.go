package kernels

import (
	"github.com/dstune/dstune/update"

	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
)

// Benchmarks of the DST kernels on 10⁸ floats (the targets' size; skipped
// under -short, which uses 2²⁰) per ISA. The targets compare them with the
// read bandwidth: BenchmarkReadBandwidth is that figure in the same run
// (`dstune profile` interleaves the two and prints the ratio).

func benchSize() int {
	if testing.Short() {
		return 1 << 20
	}
	return 100_000_000
}

var (
	benchOnce                 sync.Once
	benchTheta, benchSeed     []float32
	benchGrad, benchM, benchV []float32
	benchScratch              []float32
)

func benchData(b *testing.B) {
	benchOnce.Do(func() {
		n := benchSize()
		rng := rand.New(rand.NewPCG(1, 2))
		for _, a := range []*[]float32{&benchTheta, &benchSeed, &benchGrad, &benchM, &benchV, &benchScratch} {
			*a = make([]float32, n)
		}
		for i := range n {
			benchSeed[i] = float32(rng.NormFloat64() * 0.02)
			benchTheta[i] = benchSeed[i] + float32(rng.NormFloat64()*1e-3)
			benchGrad[i] = float32(rng.NormFloat64() * 1e-2)
			benchM[i] = float32(rng.NormFloat64() * 1e-3)
			benchV[i] = float32(rng.Float64() * 1e-4)
		}
	})
}

// forBenchISAs runs a sub-benchmark per ISA.
func forBenchISAs(b *testing.B, f func(b *testing.B)) {
	for _, isa := range SupportedISAs() {
		b.Run("impl="+isa.String(), func(b *testing.B) {
			defer SetMaxISA(isa)()
			f(b)
		})
	}
}

func threadCounts() []int { return []int{1, 2} }

func BenchmarkReadBandwidth(b *testing.B) {
	p := NewBandwidthProbe(1, 0)
	for _, threads := range threadCounts() {
		b.Run("threads="+strconv.Itoa(threads), func(b *testing.B) {
			b.SetBytes(int64(4 * len(p.read)))
			for b.Loop() {
				p.Read(threads)
			}
		})
	}
}

func BenchmarkCountAbove(b *testing.B) {
	benchData(b)
	n := len(benchTheta)
	ts := []float32{1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5, 3.5e-5, 4e-5}
	counts := make([]int64, MaxThresholds)
	for _, d := range allDistancesBench {
		for _, threads := range threadCounts() {
			b.Run("d="+d.String()+"/n="+strconv.Itoa(n)+"/threads="+strconv.Itoa(threads), func(b *testing.B) {
				forBenchISAs(b, func(b *testing.B) {
					b.SetBytes(int64(8 * n))
					b.ReportAllocs()
					for b.Loop() {
						CountAbove(counts, ts, benchTheta, benchSeed, d, threads)
					}
				})
			})
		}
	}
}

var allDistancesBench = []Distance{DistanceInvRel, DistanceRel, DistanceAbs}

func BenchmarkAdamWStepCount(b *testing.B) {
	benchData(b)
	n := len(benchTheta)
	ts := []float32{1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5, 3.5e-5, 4e-5}
	counts := make([]int64, len(ts))
	h := adamwAt(update.AdamW{LR: 1e-6, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}, 10)
	for _, threads := range threadCounts() {
		b.Run("n="+strconv.Itoa(n)+"/threads="+strconv.Itoa(threads), func(b *testing.B) {
			forBenchISAs(b, func(b *testing.B) {
				b.SetBytes(int64(32 * n))
				b.ReportAllocs()
				for b.Loop() {
					AdamWStepCount(h, benchTheta, benchGrad, benchM, benchV, benchSeed, DistanceInvRel, ts, counts, threads)
				}
			})
		})
	}
}

// BenchmarkTopKFloats is the selection target: the top 10⁻⁴ of 10⁸
// normally distributed floats on one core.
func BenchmarkTopKFloats(b *testing.B) {
	benchData(b)
	n := len(benchGrad)
	k := int64(n / 10_000)
	xs := [][]float32{benchGrad}
	for _, threads := range threadCounts() {
		b.Run("n="+strconv.Itoa(n)+"/threads="+strconv.Itoa(threads), func(b *testing.B) {
			forBenchISAs(b, func(b *testing.B) {
				var sel Selector
				b.ReportAllocs()
				for b.Loop() {
					if _, kept := sel.TopKFloats(k, xs, threads); kept != k {
						b.Fatalf("kept %d of %d", kept, k)
					}
				}
				b.SetBytes(sel.BytesRead())
			})
		})
	}
}

func BenchmarkMaskedUpdate(b *testing.B) {
	benchData(b)
	n := len(benchTheta)
	var sel Selector
	th, _ := sel.TopK(int64(n/1000), DistanceInvRel, []SiloPiece{{benchTheta, benchSeed}}, 0)
	for _, threads := range threadCounts() {
		b.Run("n="+strconv.Itoa(n)+"/threads="+strconv.Itoa(threads), func(b *testing.B) {
			forBenchISAs(b, func(b *testing.B) {
				b.SetBytes(int64(12 * n))
				b.ReportAllocs()
				for b.Loop() {
					// Updating θ̂ in place makes later rounds reset
					// nothing new, but reads and writes every entry all
					// the same.
					MaskedUpdate(benchScratch, benchSeed, DistanceInvRel, th, 0, threads)
				}
			})
		})
	}
}

// BenchmarkOtherOptimizers measures the SGD and Adafactor steps fused
// with counting (generic element-wise code, vector counting of each block
// while it is in cache).
func BenchmarkOtherOptimizers(b *testing.B) {
	benchData(b)
	n := len(benchTheta)
	ts := []float32{1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5, 3.5e-5, 4e-5}
	counts := make([]int64, len(ts))
	hs := sgdAt(update.SGD{LR: 1e-6, Momentum: 0.9, Dampening: 0, WeightDecay: 0.01}, 10)
	b.Run("sgd-count/n="+strconv.Itoa(n), func(b *testing.B) {
		b.SetBytes(int64(24 * n))
		for b.Loop() {
			SGDStepCount(hs, benchTheta, benchGrad, benchM, benchSeed, DistanceInvRel, ts, counts, 1)
		}
	})
	rows := 10_000
	cols := n / rows
	rowScale, colScale := make([]float32, rows), make([]float32, cols)
	for i := range rowScale {
		rowScale[i] = 1
	}
	for j := range colScale {
		colScale[j] = 1
	}
	b.Run("adafactor-count/n="+strconv.Itoa(rows*cols), func(b *testing.B) {
		b.SetBytes(int64(24 * rows * cols))
		for b.Loop() {
			AdafactorApplyCount(benchTheta[:rows*cols], benchGrad[:rows*cols], rowScale, colScale, rows, cols, 1e-6, 0.9, benchM[:rows*cols], benchSeed[:rows*cols], DistanceInvRel, ts, counts, 1)
		}
	})
}
