//go:build !amd64 || purego

package kernels

// peakFMALoop returns the FMA loop for the active ISA and its flops per
// iteration: on this build only the portable one.
func peakFMALoop() (loop func(iterations int), flopsPerIteration float64) {
	return peakFMAGo, 2 * peakChains
}
