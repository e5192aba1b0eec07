//go:build !amd64 || purego

package kernels

// Without assembly every DST kernel runs its generic loop: the vector
// halves handle nothing.

func vectorWidth() int { return 0 }

func scoreVector(dst, theta, seed []float32, d Distance) int { return 0 }

func countVector(c *countSet, ts *thresholdSet, theta, seed []float32, d Distance) int { return 0 }

func maskedVector(theta, seed []float32, d Distance, q float32, keepEq bool) (int, int64) {
	return 0, 0
}

func maskedIndicesVector(idx []int32, theta, seed []float32, d Distance, q float32, keepEq, write bool, base int) (int, int) {
	return 0, 0
}

func histogramVector(hist *[histCopies * histBuckets]uint32, theta, seed []float32, d Distance, shift uint) int {
	return 0
}

func histogramPrefixVector(hist *[histCopies * histBuckets]uint32, theta, seed []float32, d Distance, shift uint, prefixMask, prefix uint32) int {
	return 0
}

func collectVector(out []uint32, theta, seed []float32, d Distance, prefixMask, prefix uint32) (int, int) {
	return 0, 0
}

func adamwVector(c *adamwConstants, p, g, m, v, seed []float32, d Distance, ts *thresholdSet, counts *countSet) int {
	return 0
}

func readStreamVector(a []float32) bool { return false }

func readStreams3Vector(a, b, c []float32) bool { return false }

func copyStreamVector(dst, src []float32) bool { return false }

func sgdVector(c *sgdConstants, p, g, buf []float32) int { return 0 }

func adafactorRowVector(p, g, colScale, m []float32, rowScale, scale, beta1, oneMinusBeta1 float32) int {
	return 0
}

func collectRangeVector(out []uint32, theta, seed []float32, d Distance, lo, hi uint32) (int, int, int64) {
	return 0, 0, 0
}

func squareSumsVector(rowSums, colSums, g []float32, rows, cols int, eps1 float32) bool {
	return false
}

func updateSquaresVector(lanes *[17]float64, g, rowScale, colScale []float32, rows, cols int) bool {
	return false
}
