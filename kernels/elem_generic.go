package kernels

import "math"

// The generic element-wise and row primitives: the reference every
// assembly version is tested against, and what runs without assembly. Each
// is the Go loop that the doc comment of its assembly counterpart (in
// elem_stubs_amd64.go) names. Where float32 arithmetic would lose accuracy
// for no speed here (sums, exp, erf, tanh), they work in float64 and round
// once, so they are also the accuracy reference.
//
// Callers (the exported kernels) have already checked and trimmed lengths:
// every slice argument is at least as long as the first.

func addF32Generic(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

func subF32Generic(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] - b[i]
	}
}

func mulF32Generic(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] * b[i]
	}
}

func divF32Generic(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] / b[i]
	}
}

func scaleF32Generic(dst []float32, alpha float32, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = alpha * src[i]
	}
}

func addScalarF32Generic(dst []float32, v float32, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = src[i] + v
	}
}

// elemFMA returns a*b + c rounded once to float32 (the product of two
// float32 values is exact in float64, so only the sum rounds twice, which
// the tests' tolerances absorb).
func elemFMA(a, b, c float32) float32 {
	return float32(float64(a)*float64(b) + float64(c))
}

func sumF32Generic(x []float32) float32 {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return float32(s)
}

func dotF32Generic(x, y []float32) float32 {
	y = y[:len(x)]
	var s float64
	for i, v := range x {
		s += float64(v) * float64(y[i])
	}
	return float32(s)
}

func maxF32Generic(x []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	return m
}

func sumSqDevF32Generic(x []float32, mean float32) float32 {
	var s float64
	for _, v := range x {
		d := float64(v) - float64(mean)
		s += d * d
	}
	return float32(s)
}

func expShiftSumF32Generic(dst, src []float32, shift float32) float32 {
	src = src[:len(dst)]
	var s float64
	for i := range dst {
		e := math.Exp(float64(src[i]) - float64(shift))
		dst[i] = float32(e)
		s += e
	}
	return float32(s)
}

func sumExpShiftF32Generic(src []float32, shift float32) float32 {
	var s float64
	for _, v := range src {
		s += math.Exp(float64(v) - float64(shift))
	}
	return float32(s)
}

func scaleMaxF32Generic(dst, src []float32, scale float32) float32 {
	src = src[:len(dst)]
	m := float32(math.Inf(-1))
	for i := range dst {
		v := scale * src[i]
		dst[i] = v
		if v > m {
			m = v
		}
	}
	return m
}

func scaleAddMaxF32Generic(dst, src []float32, scale float32, mask []float32) float32 {
	src, mask = src[:len(dst)], mask[:len(dst)]
	m := float32(math.Inf(-1))
	for i := range dst {
		v := elemFMA(scale, src[i], mask[i])
		dst[i] = v
		if v > m {
			m = v
		}
	}
	return m
}

func expF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = float32(math.Exp(float64(src[i])))
	}
}

func sigmoidF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = float32(sigmoid64(float64(src[i])))
	}
}

func sigmoid64(x float64) float64 {
	if x < 0 {
		e := math.Exp(x)
		return e / (1 + e)
	}
	return 1 / (1 + math.Exp(-x))
}

func tanhF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = float32(math.Tanh(float64(src[i])))
	}
}

func erfF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = float32(math.Erf(float64(src[i])))
	}
}

// geluClamp bounds x where GELU's value and slope have settled in float32
// (x·Φ(x) underflows below -15, Φ(15) rounds to 1); clamping keeps ±Inf out
// of products with zero, so GELU(-Inf) = -0 and its slope at ±Inf is 0 or 1.
const geluClamp = 15

// gelu64 returns x·Φ(x) and its derivative Φ(x) + x·φ(x).
func gelu64(x float64) (y, dy float64) {
	xc := max(-geluClamp, min(x, geluClamp)) // NaN stays NaN
	phi := 0.5 * math.Erfc(-xc/math.Sqrt2)
	dens := math.Exp(-0.5*xc*xc) / math.Sqrt(2*math.Pi)
	if x > geluClamp {
		return x, 1
	}
	return xc * phi, phi + xc*dens
}

func geluF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		y, _ := gelu64(float64(src[i]))
		dst[i] = float32(y)
	}
}

func geluBackwardF32Generic(dx, x, dy []float32) {
	x, dy = x[:len(dx)], dy[:len(dx)]
	for i := range dx {
		_, d := gelu64(float64(x[i]))
		dx[i] = float32(float64(dy[i]) * d)
	}
}

// geluTanh64 returns x·σ(2u), u = √(2/π)(x + 0.044715x³) (which equals
// ½x(1 + tanh u) without its cancellation for negative x), and its
// derivative.
func geluTanh64(x float64) (y, dy float64) {
	xc := max(-geluClamp, min(x, geluClamp))
	const k = 0.7978845608028654 // √(2/π)
	u := k * (xc + 0.044715*xc*xc*xc)
	du := k * (1 + 3*0.044715*xc*xc)
	s := sigmoid64(2 * u)
	oneMinus := sigmoid64(-2 * u)
	if x > geluClamp {
		return x, 1
	}
	return xc * s, s + 2*xc*s*oneMinus*du
}

func geluTanhF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		y, _ := geluTanh64(float64(src[i]))
		dst[i] = float32(y)
	}
}

func geluTanhBackwardF32Generic(dx, x, dy []float32) {
	x, dy = x[:len(dx)], dy[:len(dx)]
	for i := range dx {
		_, d := geluTanh64(float64(x[i]))
		dx[i] = float32(float64(dy[i]) * d)
	}
}

func tanhBackwardF32Generic(dx, y, dy []float32) {
	y, dy = y[:len(dx)], dy[:len(dx)]
	for i := range dx {
		dx[i] = float32(float64(dy[i]) * (1 - float64(y[i])*float64(y[i])))
	}
}

func sigmoidBackwardF32Generic(dx, y, dy []float32) {
	y, dy = y[:len(dx)], dy[:len(dx)]
	for i := range dx {
		dx[i] = float32(float64(dy[i]) * float64(y[i]) * (1 - float64(y[i])))
	}
}

func softmaxBackwardF32Generic(dx, y, dy []float32, s float32) {
	y, dy = y[:len(dx)], dy[:len(dx)]
	for i := range dx {
		dx[i] = y[i] * (dy[i] - s)
	}
}

func logSoftmaxF32Generic(dst, src []float32, max, logSum float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = (src[i] - max) - logSum
	}
}

func logSoftmaxBackwardF32Generic(dx, y, dy []float32, s float32) {
	y, dy = y[:len(dx)], dy[:len(dx)]
	for i := range dx {
		dx[i] = float32(float64(dy[i]) - math.Exp(float64(y[i]))*float64(s))
	}
}

func layerNormF32Generic(y, x, gamma, beta []float32, mean, rstd float32) {
	x, gamma, beta = x[:len(y)], gamma[:len(y)], beta[:len(y)]
	for i := range y {
		xhat := (x[i] - mean) * rstd
		y[i] = elemFMA(xhat, gamma[i], beta[i])
	}
}

func layerNormBackwardSumsF32Generic(dy, x, gamma []float32, mean, rstd float32) (sumG, sumGX float32) {
	x, gamma = x[:len(dy)], gamma[:len(dy)]
	var sg, sgx float64
	for i := range dy {
		g := float64(dy[i]) * float64(gamma[i])
		sg += g
		sgx += g * (float64(x[i]) - float64(mean)) * float64(rstd)
	}
	return float32(sg), float32(sgx)
}

func layerNormBackwardF32Generic(dx, dy, x, gamma []float32, mean, rstd, a, b float32) {
	dy, x, gamma = dy[:len(dx)], x[:len(dx)], gamma[:len(dx)]
	for i := range dx {
		xhat := (x[i] - mean) * rstd
		dx[i] = rstd * elemFMA(-xhat, b, dy[i]*gamma[i]-a)
	}
}

func layerNormGradAccumF32Generic(dgamma, dbeta, dy, x []float32, mean, rstd float32) {
	dbeta, dy, x = dbeta[:len(dgamma)], dy[:len(dgamma)], x[:len(dgamma)]
	for i := range dgamma {
		xhat := (x[i] - mean) * rstd
		dgamma[i] = elemFMA(dy[i], xhat, dgamma[i])
		dbeta[i] += dy[i]
	}
}

// gemvAccF32Generic and gemvDotF32Generic take b trimmed to the rows they
// read: (len(a)-1)*ldb + len(c) and (len(c)-1)*ldb + len(x) elements.

func gemvAccF32Generic(c, a, b []float32, ldb int) {
	for p, ap := range a {
		row := b[p*ldb:][:len(c)]
		for j := range c {
			c[j] = elemFMA(ap, row[j], c[j])
		}
	}
}

func gemvDotF32Generic(c, x, b []float32, ldb int) {
	for j := range c {
		c[j] = dotF32Generic(x, b[j*ldb:][:len(x)])
	}
}
