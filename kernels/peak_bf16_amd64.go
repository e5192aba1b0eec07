//go:build !purego

package kernels

// peakChainsBF16 is the number of independent chains in
// peakBF16AVX512BF16 (set by the generator, ../asm/sgemm): more than
// VDPBF16PS's latency × pipes (6 × 2 on Zen 5).
const peakChainsBF16 = 18

// peakBF16Loop returns the loop of what Sbgemm multiplies on at the
// active ISA and its flops per iteration: VDPBF16PS, the FMA loop where
// Sbgemm runs on the float32 kernels, or the portable emulation.
func peakBF16Loop() (loop func(iterations int), flopsPerIteration float64) {
	if BF16PeakIsFMAPeak() {
		return peakFMALoop()
	}
	switch {
	case useAVX512BF16():
		return peakBF16AVX512BF16, 4 * 16 * peakChainsBF16
	}
	return peakBF16Go, 4 * peakBF16GoChains
}

// BF16PeakIsFMAPeak reports whether Sbgemm runs on the float32 kernels at
// the active ISA (no AVX512_BF16, or the ISA capped below AVX-512), so that
// its peak is the float32 FMA peak (MeasurePeakGFLOPS's).
func BF16PeakIsFMAPeak() bool { return !useAVX512BF16() && sbgemmWideKernelForISA() != nil }
