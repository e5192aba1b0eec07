//go:build !amd64 || purego

package kernels

// peakBF16Loop returns the bfloat16 dot-product loop: on this build only
// the portable one.
func peakBF16Loop() (loop func(iterations int), flopsPerIteration float64) {
	return peakBF16Go, 4 * peakBF16GoChains
}
