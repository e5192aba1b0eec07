//go:build !amd64 || purego

package kernels

// Without assembly every primitive is its generic version.

func addF32(dst, a, b []float32) { addF32Generic(dst, a, b) }

func subF32(dst, a, b []float32) { subF32Generic(dst, a, b) }

func mulF32(dst, a, b []float32) { mulF32Generic(dst, a, b) }

func divF32(dst, a, b []float32) { divF32Generic(dst, a, b) }

func scaleF32(dst []float32, alpha float32, src []float32) { scaleF32Generic(dst, alpha, src) }

func addScalarF32(dst []float32, v float32, src []float32) { addScalarF32Generic(dst, v, src) }

func sumF32(x []float32) float32 { return sumF32Generic(x) }

func dotF32(x, y []float32) float32 { return dotF32Generic(x, y) }

func maxF32(x []float32) float32 { return maxF32Generic(x) }

func sumSqDevF32(x []float32, mean float32) float32 { return sumSqDevF32Generic(x, mean) }

func expShiftSumF32(dst, src []float32, shift float32) float32 {
	return expShiftSumF32Generic(dst, src, shift)
}

func sumExpShiftF32(src []float32, shift float32) float32 { return sumExpShiftF32Generic(src, shift) }

func scaleMaxF32(dst, src []float32, scale float32) float32 {
	return scaleMaxF32Generic(dst, src, scale)
}

func scaleAddMaxF32(dst, src []float32, scale float32, mask []float32) float32 {
	return scaleAddMaxF32Generic(dst, src, scale, mask)
}

func expF32(dst, src []float32) { expF32Generic(dst, src) }

func sigmoidF32(dst, src []float32) { sigmoidF32Generic(dst, src) }

func tanhF32(dst, src []float32) { tanhF32Generic(dst, src) }

func erfF32(dst, src []float32) { erfF32Generic(dst, src) }

func geluF32(dst, src []float32) { geluF32Generic(dst, src) }

func geluBackwardF32(dx, x, dy []float32) { geluBackwardF32Generic(dx, x, dy) }

func geluTanhF32(dst, src []float32) { geluTanhF32Generic(dst, src) }

func geluTanhBackwardF32(dx, x, dy []float32) { geluTanhBackwardF32Generic(dx, x, dy) }

func tanhBackwardF32(dx, y, dy []float32) { tanhBackwardF32Generic(dx, y, dy) }

func sigmoidBackwardF32(dx, y, dy []float32) { sigmoidBackwardF32Generic(dx, y, dy) }

func softmaxBackwardF32(dx, y, dy []float32, s float32) { softmaxBackwardF32Generic(dx, y, dy, s) }

func logSoftmaxF32(dst, src []float32, max, logSum float32) {
	logSoftmaxF32Generic(dst, src, max, logSum)
}

func logSoftmaxBackwardF32(dx, y, dy []float32, s float32) {
	logSoftmaxBackwardF32Generic(dx, y, dy, s)
}

func layerNormF32(y, x, gamma, beta []float32, mean, rstd float32) {
	layerNormF32Generic(y, x, gamma, beta, mean, rstd)
}

func layerNormBackwardSumsF32(dy, x, gamma []float32, mean, rstd float32) (sumG, sumGX float32) {
	return layerNormBackwardSumsF32Generic(dy, x, gamma, mean, rstd)
}

func layerNormBackwardF32(dx, dy, x, gamma []float32, mean, rstd, a, b float32) {
	layerNormBackwardF32Generic(dx, dy, x, gamma, mean, rstd, a, b)
}

func layerNormGradAccumF32(dgamma, dbeta, dy, x []float32, mean, rstd float32) {
	layerNormGradAccumF32Generic(dgamma, dbeta, dy, x, mean, rstd)
}

func colSumsF64(acc []float64, x []float32, ld, rows int) { colSumsF64Generic(acc, x, ld, rows) }

func gemvAccF32(c, a, b []float32, ldb int) { gemvAccF32Generic(c, a, b, ldb) }

func gemvDotF32(c, x, b []float32, ldb int) { gemvDotF32Generic(c, x, b, ldb) }
