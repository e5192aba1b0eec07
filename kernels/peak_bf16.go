package kernels

// MeasurePeakBF16GFLOPS measures this machine's bfloat16 dot-product
// throughput in GFLOP/s at the active ISA with threads goroutines (threads
// <= 0 means DefaultThreads()), counting 4 flops per float32 lane of
// VDPBF16PS (two products and two sums), as Sbgemm's 2·m·n·k counts them.
// Like MeasurePeakGFLOPS it runs independent chains on registers only and
// reports the best of a few runs. Without the AVX512_BF16 instructions (or
// below the AVX512 ISA) it measures what Sbgemm then runs on: the float32
// FMA peak (MeasurePeakGFLOPS) from AVX2 on, the portable emulation below.
// It takes about a tenth of a second.
func MeasurePeakBF16GFLOPS(threads int) float64 {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	loop, flopsPerIter := peakBF16Loop()
	return measurePeak(threads, loop, flopsPerIter)
}

// peakBF16Go is the portable loop: chains of bf16Dot, the step of the
// portable bfloat16 kernel (x and y are bfloat16 pairs of 1 and 0, so the
// values stay 0):
//
//	for range iterations {
//		for i := range acc {
//			acc[i] = bf16Dot(acc[i], x, y)
//		}
//	}
func peakBF16Go(iterations int) {
	x, y := peakOneBF16, peakZeroBF16
	var a0, a1, a2, a3, a4, a5, a6, a7 float32
	for range iterations {
		a0 = bf16Dot(a0, x, y)
		a1 = bf16Dot(a1, x, y)
		a2 = bf16Dot(a2, x, y)
		a3 = bf16Dot(a3, x, y)
		a4 = bf16Dot(a4, x, y)
		a5 = bf16Dot(a5, x, y)
		a6 = bf16Dot(a6, x, y)
		a7 = bf16Dot(a7, x, y)
	}
	peakSink = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7
}

// peakBF16GoChains is the number of chains in peakBF16Go.
const peakBF16GoChains = 8

// peakOneBF16 and peakZeroBF16 are variables so the compiler cannot fold
// the portable loop away.
var peakOneBF16, peakZeroBF16 = bf16Pair(1, 1), bf16Pair(0, 0)
