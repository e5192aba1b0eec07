//go:build !purego

package kernels

// peakChainsBF16 is the number of independent chains in
// peakBF16AVX512BF16 (set by the generator, ../asm/sgemm): more than
// VDPBF16PS's latency × pipes (6 × 2 on Zen 5).
const peakChainsBF16 = 18

// peakBF16Loop returns the bfloat16 dot-product loop for the active ISA
// and its flops per iteration.
func peakBF16Loop() (loop func(iterations int), flopsPerIteration float64) {
	if useAVX512BF16() {
		return peakBF16AVX512BF16, 4 * 16 * peakChainsBF16
	}
	return peakBF16Go, 4 * peakBF16GoChains
}
