//go:build !purego

package kernels

// peakFMALoop returns the FMA loop for the active ISA and its flops per
// iteration.
func peakFMALoop() (loop func(iterations int), flopsPerIteration float64) {
	switch {
	case useAVX512():
		return peakFMAAVX512, 2 * 16 * peakChains
	case useAVX2():
		return peakFMAAVX2, 2 * 8 * peakChains
	}
	return peakFMAGo, 2 * peakChains
}
