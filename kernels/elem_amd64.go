//go:build !purego

package kernels

import "unsafe"

// Dispatch for the element-wise and row primitives: best ISA first, from
// the predicates of isa.go. The race detector is told what the assembly
// reads and writes (elem_race.go; no-ops without -race). Every slice has
// been trimmed by the exported caller to the length the kernel uses, which
// is what the assembly trusts.

func addF32(dst, a, b []float32) {
	elemRaceRead(a, b)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		addF32AVX512(dst, a, b)
	case useAVX2():
		addF32AVX2(dst, a, b)
	default:
		addF32Generic(dst, a, b)
	}
}

func subF32(dst, a, b []float32) {
	elemRaceRead(a, b)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		subF32AVX512(dst, a, b)
	case useAVX2():
		subF32AVX2(dst, a, b)
	default:
		subF32Generic(dst, a, b)
	}
}

func mulF32(dst, a, b []float32) {
	elemRaceRead(a, b)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		mulF32AVX512(dst, a, b)
	case useAVX2():
		mulF32AVX2(dst, a, b)
	default:
		mulF32Generic(dst, a, b)
	}
}

func divF32(dst, a, b []float32) {
	elemRaceRead(a, b)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		divF32AVX512(dst, a, b)
	case useAVX2():
		divF32AVX2(dst, a, b)
	default:
		divF32Generic(dst, a, b)
	}
}

func scaleF32(dst []float32, alpha float32, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		scaleF32AVX512(dst, alpha, src)
	case useAVX2():
		scaleF32AVX2(dst, alpha, src)
	default:
		scaleF32Generic(dst, alpha, src)
	}
}

func addScalarF32(dst []float32, v float32, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		addScalarF32AVX512(dst, v, src)
	case useAVX2():
		addScalarF32AVX2(dst, v, src)
	default:
		addScalarF32Generic(dst, v, src)
	}
}

func sumF32(x []float32) float32 {
	elemRaceRead(x)
	switch {
	case useAVX512():
		return sumF32AVX512(x)
	case useAVX2():
		return sumF32AVX2(x)
	}
	return sumF32Generic(x)
}

func dotF32(x, y []float32) float32 {
	elemRaceRead(x, y)
	switch {
	case useAVX512():
		return dotF32AVX512(x, y)
	case useAVX2():
		return dotF32AVX2(x, y)
	}
	return dotF32Generic(x, y)
}

func maxF32(x []float32) float32 {
	elemRaceRead(x)
	switch {
	case useAVX512():
		return maxF32AVX512(x)
	case useAVX2():
		return maxF32AVX2(x)
	}
	return maxF32Generic(x)
}

func sumSqDevF32(x []float32, mean float32) float32 {
	elemRaceRead(x)
	switch {
	case useAVX512():
		return sumSqDevF32AVX512(x, mean)
	case useAVX2():
		return sumSqDevF32AVX2(x, mean)
	}
	return sumSqDevF32Generic(x, mean)
}

func expShiftSumF32(dst, src []float32, shift float32) float32 {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		return expShiftSumF32AVX512(dst, src, shift)
	case useAVX2():
		return expShiftSumF32AVX2(dst, src, shift)
	}
	return expShiftSumF32Generic(dst, src, shift)
}

func sumExpShiftF32(src []float32, shift float32) float32 {
	elemRaceRead(src)
	switch {
	case useAVX512():
		return sumExpShiftF32AVX512(src, shift)
	case useAVX2():
		return sumExpShiftF32AVX2(src, shift)
	}
	return sumExpShiftF32Generic(src, shift)
}

func scaleMaxF32(dst, src []float32, scale float32) float32 {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		return scaleMaxF32AVX512(dst, src, scale)
	case useAVX2():
		return scaleMaxF32AVX2(dst, src, scale)
	}
	return scaleMaxF32Generic(dst, src, scale)
}

func scaleAddMaxF32(dst, src []float32, scale float32, mask []float32) float32 {
	elemRaceRead(src, mask)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		return scaleAddMaxF32AVX512(dst, src, scale, mask)
	case useAVX2():
		return scaleAddMaxF32AVX2(dst, src, scale, mask)
	}
	return scaleAddMaxF32Generic(dst, src, scale, mask)
}

func expF32(dst, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		expF32AVX512(dst, src)
	case useAVX2():
		expF32AVX2(dst, src)
	default:
		expF32Generic(dst, src)
	}
}

func sigmoidF32(dst, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		sigmoidF32AVX512(dst, src)
	case useAVX2():
		sigmoidF32AVX2(dst, src)
	default:
		sigmoidF32Generic(dst, src)
	}
}

func tanhF32(dst, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		tanhF32AVX512(dst, src)
	case useAVX2():
		tanhF32AVX2(dst, src)
	default:
		tanhF32Generic(dst, src)
	}
}

func erfF32(dst, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		erfF32AVX512(dst, src)
	case useAVX2():
		erfF32AVX2(dst, src)
	default:
		erfF32Generic(dst, src)
	}
}

func geluF32(dst, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		geluF32AVX512(dst, src)
	case useAVX2():
		geluF32AVX2(dst, src)
	default:
		geluF32Generic(dst, src)
	}
}

func geluBackwardF32(dx, x, dy []float32) {
	elemRaceRead(x, dy)
	elemRaceWrite(dx)
	switch {
	case useAVX512():
		geluBackwardF32AVX512(dx, x, dy)
	case useAVX2():
		geluBackwardF32AVX2(dx, x, dy)
	default:
		geluBackwardF32Generic(dx, x, dy)
	}
}

func geluTanhF32(dst, src []float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		geluTanhF32AVX512(dst, src)
	case useAVX2():
		geluTanhF32AVX2(dst, src)
	default:
		geluTanhF32Generic(dst, src)
	}
}

func geluTanhBackwardF32(dx, x, dy []float32) {
	elemRaceRead(x, dy)
	elemRaceWrite(dx)
	switch {
	case useAVX512():
		geluTanhBackwardF32AVX512(dx, x, dy)
	case useAVX2():
		geluTanhBackwardF32AVX2(dx, x, dy)
	default:
		geluTanhBackwardF32Generic(dx, x, dy)
	}
}

func tanhBackwardF32(dx, y, dy []float32) {
	elemRaceRead(y, dy)
	elemRaceWrite(dx)
	switch {
	case useAVX512():
		tanhBackwardF32AVX512(dx, y, dy)
	case useAVX2():
		tanhBackwardF32AVX2(dx, y, dy)
	default:
		tanhBackwardF32Generic(dx, y, dy)
	}
}

func sigmoidBackwardF32(dx, y, dy []float32) {
	elemRaceRead(y, dy)
	elemRaceWrite(dx)
	switch {
	case useAVX512():
		sigmoidBackwardF32AVX512(dx, y, dy)
	case useAVX2():
		sigmoidBackwardF32AVX2(dx, y, dy)
	default:
		sigmoidBackwardF32Generic(dx, y, dy)
	}
}

func softmaxBackwardF32(dx, y, dy []float32, s float32) {
	elemRaceRead(y, dy)
	elemRaceWrite(dx)
	switch {
	case useAVX512():
		softmaxBackwardF32AVX512(dx, y, dy, s)
	case useAVX2():
		softmaxBackwardF32AVX2(dx, y, dy, s)
	default:
		softmaxBackwardF32Generic(dx, y, dy, s)
	}
}

func logSoftmaxF32(dst, src []float32, max, logSum float32) {
	elemRaceRead(src)
	elemRaceWrite(dst)
	switch {
	case useAVX512():
		logSoftmaxF32AVX512(dst, src, max, logSum)
	case useAVX2():
		logSoftmaxF32AVX2(dst, src, max, logSum)
	default:
		logSoftmaxF32Generic(dst, src, max, logSum)
	}
}

func logSoftmaxBackwardF32(dx, y, dy []float32, s float32) {
	elemRaceRead(y, dy)
	elemRaceWrite(dx)
	switch {
	case useAVX512():
		logSoftmaxBackwardF32AVX512(dx, y, dy, s)
	case useAVX2():
		logSoftmaxBackwardF32AVX2(dx, y, dy, s)
	default:
		logSoftmaxBackwardF32Generic(dx, y, dy, s)
	}
}

func layerNormF32(y, x, gamma, beta []float32, mean, rstd float32) {
	elemRaceRead(x, gamma, beta)
	elemRaceWrite(y)
	switch {
	case useAVX512():
		layerNormF32AVX512(y, x, gamma, beta, mean, rstd)
	case useAVX2():
		layerNormF32AVX2(y, x, gamma, beta, mean, rstd)
	default:
		layerNormF32Generic(y, x, gamma, beta, mean, rstd)
	}
}

func layerNormBackwardSumsF32(dy, x, gamma []float32, mean, rstd float32) (sumG, sumGX float32) {
	elemRaceRead(dy, x, gamma)
	switch {
	case useAVX512():
		return layerNormBackwardSumsF32AVX512(dy, x, gamma, mean, rstd)
	case useAVX2():
		return layerNormBackwardSumsF32AVX2(dy, x, gamma, mean, rstd)
	}
	return layerNormBackwardSumsF32Generic(dy, x, gamma, mean, rstd)
}

func layerNormBackwardF32(dx, dy, x, gamma []float32, mean, rstd, a, b float32) {
	elemRaceRead(dy, x, gamma)
	elemRaceWrite(dx)
	switch {
	case useAVX512():
		layerNormBackwardF32AVX512(dx, dy, x, gamma, mean, rstd, a, b)
	case useAVX2():
		layerNormBackwardF32AVX2(dx, dy, x, gamma, mean, rstd, a, b)
	default:
		layerNormBackwardF32Generic(dx, dy, x, gamma, mean, rstd, a, b)
	}
}

func layerNormGradAccumF32(dgamma, dbeta, dy, x []float32, mean, rstd float32) {
	elemRaceRead(dy, x)
	elemRaceWrite(dgamma, dbeta)
	switch {
	case useAVX512():
		layerNormGradAccumF32AVX512(dgamma, dbeta, dy, x, mean, rstd)
	case useAVX2():
		layerNormGradAccumF32AVX2(dgamma, dbeta, dy, x, mean, rstd)
	default:
		layerNormGradAccumF32Generic(dgamma, dbeta, dy, x, mean, rstd)
	}
}

func colSumsF64(acc []float64, x []float32, ld, rows int) {
	elemRaceRead(x)
	elemRaceWrite(unsafe.Slice((*float32)(unsafe.Pointer(&acc[0])), 2*len(acc)))
	v := 0
	switch {
	case useAVX512():
		v = len(acc) / 8 * 8
		colSumsF64AVX512(acc[:v], x, ld, rows)
	case useAVX2():
		v = len(acc) / 4 * 4
		colSumsF64AVX2(acc[:v], x, ld, rows)
	}
	if v < len(acc) {
		colSumsF64Generic(acc[v:], x[v:], ld, rows)
	}
}

func gemvAccF32(c, a, b []float32, ldb int) {
	elemRaceRead(a, b)
	elemRaceWrite(c)
	switch {
	case useAVX512():
		gemvAccF32AVX512(c, a, b, ldb)
	case useAVX2():
		gemvAccF32AVX2(c, a, b, ldb)
	default:
		gemvAccF32Generic(c, a, b, ldb)
	}
}

func gemvDotF32(c, x, b []float32, ldb int) {
	elemRaceRead(x, b)
	elemRaceWrite(c)
	switch {
	case useAVX512():
		gemvDotF32AVX512(c, x, b, ldb)
	case useAVX2():
		gemvDotF32AVX2(c, x, b, ldb)
	default:
		gemvDotF32Generic(c, x, b, ldb)
	}
}
