//go:build !amd64 || purego

package kernels

// peakBF16Loop returns the bfloat16 dot-product loop: on this build only
// the portable one.
func peakBF16Loop() (loop func(iterations int), flopsPerIteration float64) {
	return peakBF16Go, 4 * peakBF16GoChains
}

// BF16PeakIsFMAPeak reports whether Sbgemm runs on the float32 kernels,
// so that its peak is MeasurePeakGFLOPS's: never on this build (it runs
// the portable bfloat16 loop).
func BF16PeakIsFMAPeak() bool { return false }
