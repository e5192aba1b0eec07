package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Benchmarks on the shapes of the bench models' training step
// (testdata/bench: batch 16×128 tokens, d 256, 4 heads, FFN 1024, vocab
// 8000). SetBytes counts the bytes each call must read and write once, so
// MB/s compares with the machine's streaming bandwidth. Run e.g.
//
//	go test -run NONE -bench 'SoftmaxCrossEntropy|LayerNorm|Gelu|AttentionSoftmax' -count 5 ./kernels

// elemBenchISAs runs f as a sub-benchmark per supported ISA, named impl=ISA.
func elemBenchISAs(b *testing.B, f func(b *testing.B)) {
	for _, isa := range SupportedISAs() {
		b.Run("impl="+isa.String(), func(b *testing.B) {
			defer SetMaxISA(isa)()
			b.ReportAllocs()
			f(b)
		})
	}
}

func elemBenchThreads(b *testing.B, f func(b *testing.B, threads int)) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) { f(b, threads) })
	}
}

func elemBenchData(n int, scale float64) []float32 {
	rng := rand.New(rand.NewPCG(99, uint64(n)))
	return elemRandSlice(rng, n, scale, false)
}

// The LM head: logits [16·128, 8000].
func BenchmarkSoftmaxCrossEntropy(b *testing.B) {
	const rows, cols = 2048, 8000
	logits := elemBenchData(rows*cols, 2)
	rng := rand.New(rand.NewPCG(5, 5))
	targets := randTargets(rng, rows, cols)
	dlogits := make([]float32, rows*cols)
	b.Run("grad", func(b *testing.B) {
		elemBenchThreads(b, func(b *testing.B, threads int) {
			elemBenchISAs(b, func(b *testing.B) {
				b.SetBytes(2 * 4 * rows * cols)
				for b.Loop() {
					SoftmaxCrossEntropy(threads, rows, cols, logits, cols, targets, ignoreTarget, dlogits, cols, 1.0/rows)
				}
			})
		})
	})
	b.Run("grad-in-place", func(b *testing.B) {
		elemBenchThreads(b, func(b *testing.B, threads int) {
			elemBenchISAs(b, func(b *testing.B) {
				work := make([]float32, rows*cols)
				b.SetBytes(2 * 4 * rows * cols)
				for b.Loop() {
					b.StopTimer()
					copy(work, logits)
					b.StartTimer()
					SoftmaxCrossEntropy(threads, rows, cols, work, cols, targets, ignoreTarget, work, cols, 1.0/rows)
				}
			})
		})
	})
	b.Run("loss", func(b *testing.B) {
		elemBenchThreads(b, func(b *testing.B, threads int) {
			elemBenchISAs(b, func(b *testing.B) {
				b.SetBytes(4 * rows * cols)
				for b.Loop() {
					SoftmaxCrossEntropy(threads, rows, cols, logits, cols, targets, ignoreTarget, nil, 0, 1.0/rows)
				}
			})
		})
	})
}

// Attention probabilities: [16·4·128, 128], causal (gpt) and unmasked (bert).
func BenchmarkAttentionSoftmax(b *testing.B) {
	const batch, rows, cols = 64, 128, 128
	src := elemBenchData(batch*rows*cols, 3)
	dst := make([]float32, len(src))
	for _, causal := range []bool{false, true} {
		b.Run(fmt.Sprintf("causal=%v", causal), func(b *testing.B) {
			elemBenchISAs(b, func(b *testing.B) {
				b.SetBytes(2 * 4 * batch * rows * cols)
				for b.Loop() {
					AttentionSoftmax(1, batch, rows, cols, dst, cols, src, cols, 0.125, nil, 0, causal)
				}
			})
		})
	}
	b.Run("backward", func(b *testing.B) {
		dy := elemBenchData(len(src), 1)
		AttentionSoftmax(1, batch, rows, cols, dst, cols, src, cols, 0.125, nil, 0, false)
		dx := make([]float32, len(src))
		elemBenchISAs(b, func(b *testing.B) {
			b.SetBytes(3 * 4 * batch * rows * cols)
			for b.Loop() {
				SoftmaxBackward(1, batch*rows, cols, dx, cols, dst, cols, dy, cols)
			}
		})
	})
}

// LayerNorm over [16·128, 256].
func BenchmarkLayerNorm(b *testing.B) {
	const rows, cols = 2048, 256
	x := elemBenchData(rows*cols, 1)
	dy := elemBenchData(rows*cols, 1)
	y := make([]float32, rows*cols)
	gamma, beta := elemBenchData(cols, 1), elemBenchData(cols, 1)
	mean, rstd := make([]float32, rows), make([]float32, rows)
	dgamma, dbeta := make([]float32, cols), make([]float32, cols)
	b.Run("forward", func(b *testing.B) {
		elemBenchISAs(b, func(b *testing.B) {
			b.SetBytes(2 * 4 * rows * cols)
			for b.Loop() {
				LayerNorm(1, rows, cols, y, cols, x, cols, gamma, beta, 1e-5, mean, rstd)
			}
		})
	})
	b.Run("backward", func(b *testing.B) {
		elemBenchISAs(b, func(b *testing.B) {
			b.SetBytes(3 * 4 * rows * cols)
			for b.Loop() {
				LayerNormBackward(1, rows, cols, y, cols, dy, cols, x, cols, gamma, mean, rstd, dgamma, dbeta)
			}
		})
	})
}

// GELU over the FFN activations [16·128, 1024].
func BenchmarkGelu(b *testing.B) {
	const n = 2048 * 1024
	x := elemBenchData(n, 1.5)
	dy := elemBenchData(n, 1)
	y := make([]float32, n)
	for _, k := range []struct {
		name  string
		run   func()
		bytes int64
	}{
		{"erf", func() { GeluF32(y, x) }, 2 * 4 * n},
		{"erf-backward", func() { GeluBackwardF32(y, x, dy) }, 3 * 4 * n},
		{"tanh", func() { GeluTanhF32(y, x) }, 2 * 4 * n},
		{"tanh-backward", func() { GeluTanhBackwardF32(y, x, dy) }, 3 * 4 * n},
	} {
		b.Run(k.name, func(b *testing.B) {
			elemBenchISAs(b, func(b *testing.B) {
				b.SetBytes(k.bytes)
				for b.Loop() {
					k.run()
				}
			})
		})
	}
}

// The vector math functions and simple ops on 64 Ki elements (in L2).
func BenchmarkVectorMath(b *testing.B) {
	const n = 1 << 16
	x := elemBenchData(n, 3)
	y := make([]float32, n)
	for _, k := range []struct {
		name string
		run  func()
	}{
		{"exp", func() { ExpF32(y, x) }},
		{"erf", func() { ErfF32(y, x) }},
		{"tanh", func() { TanhF32(y, x) }},
		{"sigmoid", func() { SigmoidF32(y, x) }},
		{"add", func() { AddF32(y, x, y) }},
	} {
		b.Run(k.name, func(b *testing.B) {
			elemBenchISAs(b, func(b *testing.B) {
				b.SetBytes(2 * 4 * n)
				for b.Loop() {
					k.run()
				}
			})
		})
	}
}

// References for the figures above, measured in the same run: streaming
// 256 MiB through sumF32 (read only) and through copy (read + write), so
// that MB/s of the kernels can be read as a fraction of what memory gives.
func BenchmarkMemoryReference(b *testing.B) {
	const n = 64 << 20
	x := elemBenchData(n, 1)
	y := make([]float32, n)
	b.Run("read", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			sumF32(x)
		}
	})
	b.Run("copy", func(b *testing.B) {
		b.SetBytes(2 * 4 * n)
		for b.Loop() {
			copy(y, x)
		}
	})
}
