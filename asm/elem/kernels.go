package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/reg"
)

// The kernels. Each doc comment names the Go loop the kernel computes; the
// generic versions in kernels/elem_generic.go are those loops.

// unrolled gives the vectors per main-loop iteration on each target: enough
// independent work to hide latencies, few enough for AVX2's 16 registers.
func unrolled(onAVX512, onAVX2 int) map[*target]int {
	return map[*target]int{avx512: onAVX512, avx2: onAVX2}
}

func genVectorArith(t *target) {
	for _, l := range []*loop{
		{
			name: "addF32", sig: "func(dst, a, b []float32)",
			doc: []string{"addF32 sets dst[i] = a[i] + b[i] for i < len(dst)."},
			n:   "dst", ins: []string{"a", "b"}, outs: []string{"dst"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.out[0] = c.add(c.in[0], c.in[1]) },
		},
		{
			name: "subF32", sig: "func(dst, a, b []float32)",
			doc: []string{"subF32 sets dst[i] = a[i] - b[i] for i < len(dst)."},
			n:   "dst", ins: []string{"a", "b"}, outs: []string{"dst"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.out[0] = c.sub(c.in[0], c.in[1]) },
		},
		{
			name: "mulF32", sig: "func(dst, a, b []float32)",
			doc: []string{"mulF32 sets dst[i] = a[i] * b[i] for i < len(dst)."},
			n:   "dst", ins: []string{"a", "b"}, outs: []string{"dst"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.out[0] = c.mul(c.in[0], c.in[1]) },
		},
		{
			name: "divF32", sig: "func(dst, a, b []float32)",
			doc: []string{"divF32 sets dst[i] = a[i] / b[i] for i < len(dst)."},
			n:   "dst", ins: []string{"a", "b"}, outs: []string{"dst"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				d := c.v()
				VDIVPS(c.in[1], c.in[0], d)
				c.out[0] = d
			},
		},
		{
			name: "scaleF32", sig: "func(dst []float32, alpha float32, src []float32)",
			doc: []string{"scaleF32 sets dst[i] = alpha * src[i] for i < len(dst)."},
			n:   "dst", ins: []string{"src"}, outs: []string{"dst"}, scals: []string{"alpha"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.out[0] = c.mul(c.in[0], c.scal[0]) },
		},
		{
			name: "addScalarF32", sig: "func(dst []float32, v float32, src []float32)",
			doc: []string{"addScalarF32 sets dst[i] = src[i] + v for i < len(dst)."},
			n:   "dst", ins: []string{"src"}, outs: []string{"dst"}, scals: []string{"v"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.out[0] = c.add(c.in[0], c.scal[0]) },
		},
	} {
		l.emit(t)
	}
}

func genReductions(t *target) {
	for _, l := range []*loop{
		{
			name: "sumF32", sig: "func(x []float32) (sum float32)",
			doc: []string{"sumF32 returns the sum of x, accumulated lane-wise in a fixed order."},
			n:   "x", ins: []string{"x"}, accs: []accKind{accSum}, rets: []string{"sum"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.accumulate(0, accSum, c.in[0]) },
		},
		{
			name: "dotF32", sig: "func(x, y []float32) (dot float32)",
			doc: []string{"dotF32 returns the sum of x[i]*y[i] for i < len(x), accumulated lane-wise in a fixed order."},
			n:   "x", ins: []string{"x", "y"}, accs: []accKind{accSum}, rets: []string{"dot"}, unroll: unrolled(4, 4),
			// Masked-off tail lanes load as zero on both ISAs, so the
			// product adds nothing there.
			body: func(c *ctx) { VFMADD231PS(c.in[1], c.in[0], c.acc[0]) },
		},
		{
			name: "maxF32", sig: "func(x []float32) (max float32)",
			doc: []string{"maxF32 returns the largest element of x (-Inf when x is empty; NaN elements may be skipped)."},
			n:   "x", ins: []string{"x"}, accs: []accKind{accMax}, rets: []string{"max"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.accumulate(0, accMax, c.in[0]) },
		},
		{
			name: "sumSqDevF32", sig: "func(x []float32, mean float32) (sum float32)",
			doc: []string{"sumSqDevF32 returns the sum of (x[i]-mean)² for i < len(x)."},
			n:   "x", ins: []string{"x"}, scals: []string{"mean"}, accs: []accKind{accSum}, rets: []string{"sum"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				d := c.sub(c.in[0], c.scal[0])
				c.accumulate(0, accSum, c.mul(d, d))
			},
		},
		{
			name: "expShiftSumF32", sig: "func(dst, src []float32, shift float32) (sum float32)",
			doc: []string{
				"expShiftSumF32 sets dst[i] = exp(src[i] - shift) for i < len(dst) and returns",
				"the sum of those values.",
			},
			n: "dst", ins: []string{"src"}, outs: []string{"dst"}, scals: []string{"shift"},
			accs: []accKind{accSum}, rets: []string{"sum"}, unroll: unrolled(4, 2),
			body: func(c *ctx) {
				e := c.exp(c.sub(c.in[0], c.scal[0]))
				c.out[0] = e
				c.accumulate(0, accSum, e)
			},
		},
		{
			name: "sumExpShiftF32", sig: "func(src []float32, shift float32) (sum float32)",
			doc: []string{"sumExpShiftF32 returns the sum of exp(src[i] - shift) for i < len(src)."},
			n:   "src", ins: []string{"src"}, scals: []string{"shift"},
			accs: []accKind{accSum}, rets: []string{"sum"}, unroll: unrolled(4, 2),
			body: func(c *ctx) { c.accumulate(0, accSum, c.exp(c.sub(c.in[0], c.scal[0]))) },
		},
		{
			name: "scaleMaxF32", sig: "func(dst, src []float32, scale float32) (max float32)",
			doc: []string{"scaleMaxF32 sets dst[i] = scale * src[i] for i < len(dst) and returns the largest."},
			n:   "dst", ins: []string{"src"}, outs: []string{"dst"}, scals: []string{"scale"},
			accs: []accKind{accMax}, rets: []string{"max"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				v := c.mul(c.in[0], c.scal[0])
				c.out[0] = v
				c.accumulate(0, accMax, v)
			},
		},
		{
			name: "scaleAddMaxF32", sig: "func(dst, src []float32, scale float32, mask []float32) (max float32)",
			doc: []string{
				"scaleAddMaxF32 sets dst[i] = scale*src[i] + mask[i] (one FMA) for i < len(dst)",
				"and returns the largest.",
			},
			n: "dst", ins: []string{"src", "mask"}, outs: []string{"dst"}, scals: []string{"scale"},
			accs: []accKind{accMax}, rets: []string{"max"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				v := c.fma(c.in[0], c.scal[0], c.in[1])
				c.out[0] = v
				c.accumulate(0, accMax, v)
			},
		},
	} {
		l.emit(t)
	}
}

func genMath(t *target) {
	unary := func(name, doc string, f func(c *ctx, x VecVirtual) VecVirtual, u map[*target]int) *loop {
		return &loop{
			name: name, sig: "func(dst, src []float32)", doc: []string{doc},
			n: "dst", ins: []string{"src"}, outs: []string{"dst"}, unroll: u,
			body: func(c *ctx) { c.out[0] = f(c, c.in[0]) },
		}
	}
	for _, l := range []*loop{
		unary("expF32", "expF32 sets dst[i] = exp(src[i]) for i < len(dst).",
			func(c *ctx, x VecVirtual) VecVirtual { return c.exp(x) }, unrolled(4, 2)),
		unary("sigmoidF32", "sigmoidF32 sets dst[i] = 1/(1+exp(-src[i])) for i < len(dst).",
			func(c *ctx, x VecVirtual) VecVirtual { return c.sigmoid(x) }, unrolled(2, 2)),
		unary("tanhF32", "tanhF32 sets dst[i] = tanh(src[i]) for i < len(dst).",
			func(c *ctx, x VecVirtual) VecVirtual { return c.tanh(x) }, unrolled(2, 1)),
		unary("erfF32", "erfF32 sets dst[i] = erf(src[i]) for i < len(dst).",
			func(c *ctx, x VecVirtual) VecVirtual { return c.erf(x) }, unrolled(2, 1)),
		unary("geluF32", "geluF32 sets dst[i] = x·Φ(x), x = src[i], Φ the standard normal CDF, for i < len(dst).",
			func(c *ctx, x VecVirtual) VecVirtual {
				phi, _ := c.geluPhi(c.clamp(x, -geluClamp, geluClamp))
				return c.mul(c.atLeast(x, -geluClamp), phi)
			}, unrolled(2, 1)),
		unary("geluTanhF32", "geluTanhF32 sets dst[i] = x·σ(2u), u = √(2/π)(x + 0.044715x³), x = src[i], for i < len(dst).",
			func(c *ctx, x VecVirtual) VecVirtual {
				sig, _, _ := c.geluTanhParts(c.clamp(x, -geluClamp, geluClamp))
				return c.mul(c.atLeast(x, -geluClamp), sig)
			}, unrolled(2, 1)),
		{
			name: "geluBackwardF32", sig: "func(dx, x, dy []float32)",
			doc: []string{"geluBackwardF32 sets dx[i] = dy[i]·(Φ(x[i]) + x[i]·φ(x[i])) for i < len(dx) (φ the normal density)."},
			n:   "dx", ins: []string{"x", "dy"}, outs: []string{"dx"}, unroll: unrolled(2, 1),
			body: func(c *ctx) {
				xc := c.clamp(c.in[0], -geluClamp, geluClamp)
				phi, gauss := c.geluPhi(xc)
				dens := c.mul(gauss, c.k(invSqrt2Pi))
				c.out[0] = c.mul(c.fma(xc, dens, phi), c.in[1])
			},
		},
		{
			name: "geluTanhBackwardF32", sig: "func(dx, x, dy []float32)",
			doc: []string{
				"geluTanhBackwardF32 sets dx[i] = dy[i]·d/dx[x·σ(2u)] = dy[i]·s·(1 + 2x·(1-s)·u'),",
				"s = σ(2u), u = √(2/π)(x + 0.044715x³), x = x[i], for i < len(dx).",
			},
			n: "dx", ins: []string{"x", "dy"}, outs: []string{"dx"}, unroll: unrolled(2, 1),
			body: func(c *ctx) {
				xc := c.clamp(c.in[0], -geluClamp, geluClamp)
				sig, sigNeg, du := c.geluTanhParts(xc)
				inner := c.mul(c.mul(xc, sigNeg), du)
				inner = c.fmaC(inner, 2, 1)
				c.out[0] = c.mul(c.mul(inner, sig), c.in[1])
			},
		},
	} {
		l.emit(t)
	}
}

func genRows(t *target) {
	for _, l := range []*loop{
		{
			name: "tanhBackwardF32", sig: "func(dx, y, dy []float32)",
			doc: []string{"tanhBackwardF32 sets dx[i] = dy[i] * (1 - y[i]*y[i]) (the bracket one FMA) for i < len(dx)."},
			n:   "dx", ins: []string{"y", "dy"}, outs: []string{"dx"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				c.out[0] = c.mul(c.fnma(c.in[0], c.in[0], c.load(c.k(1))), c.in[1])
			},
		},
		{
			name: "sigmoidBackwardF32", sig: "func(dx, y, dy []float32)",
			doc: []string{"sigmoidBackwardF32 sets dx[i] = dy[i] * y[i] * (1 - y[i]) for i < len(dx)."},
			n:   "dx", ins: []string{"y", "dy"}, outs: []string{"dx"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				c.out[0] = c.mul(c.mul(c.rsubC(1, c.in[0]), c.in[0]), c.in[1])
			},
		},
		{
			name: "softmaxBackwardF32", sig: "func(dx, y, dy []float32, s float32)",
			doc: []string{"softmaxBackwardF32 sets dx[i] = y[i] * (dy[i] - s) for i < len(dx)."},
			n:   "dx", ins: []string{"y", "dy"}, outs: []string{"dx"}, scals: []string{"s"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.out[0] = c.mul(c.sub(c.in[1], c.scal[0]), c.in[0]) },
		},
		{
			name: "logSoftmaxF32", sig: "func(dst, src []float32, max, logSum float32)",
			doc: []string{
				"logSoftmaxF32 sets dst[i] = (src[i] - max) - logSum for i < len(dst); subtracting",
				"max first keeps log-probabilities exact where |src| is large.",
			},
			n: "dst", ins: []string{"src"}, outs: []string{"dst"}, scals: []string{"max", "logSum"}, unroll: unrolled(4, 4),
			body: func(c *ctx) { c.out[0] = c.sub(c.sub(c.in[0], c.scal[0]), c.scal[1]) },
		},
		{
			name: "logSoftmaxBackwardF32", sig: "func(dx, y, dy []float32, s float32)",
			doc: []string{"logSoftmaxBackwardF32 sets dx[i] = dy[i] - exp(y[i])*s (one FMA) for i < len(dx)."},
			n:   "dx", ins: []string{"y", "dy"}, outs: []string{"dx"}, scals: []string{"s"},
			unroll: unrolled(4, 2),
			body:   func(c *ctx) { c.out[0] = c.fnma(c.exp(c.in[0]), c.scal[0], c.in[1]) },
		},
		{
			name: "layerNormF32", sig: "func(y, x, gamma, beta []float32, mean, rstd float32)",
			doc: []string{"layerNormF32 sets y[i] = (x[i]-mean)*rstd*gamma[i] + beta[i] (the last step one FMA) for i < len(y)."},
			n:   "y", ins: []string{"x", "gamma", "beta"}, outs: []string{"y"}, scals: []string{"mean", "rstd"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				xhat := c.mul(c.sub(c.in[0], c.scal[0]), c.scal[1])
				c.out[0] = c.fma(xhat, c.in[1], c.in[2])
			},
		},
		{
			name: "layerNormBackwardSumsF32", sig: "func(dy, x, gamma []float32, mean, rstd float32) (sumG, sumGX float32)",
			doc: []string{
				"layerNormBackwardSumsF32 returns the sums over i < len(dy) of g = dy[i]*gamma[i]",
				"and of g*(x[i]-mean)*rstd.",
			},
			n: "dy", ins: []string{"dy", "x", "gamma"}, scals: []string{"mean", "rstd"},
			accs: []accKind{accSum, accSum}, rets: []string{"sumG", "sumGX"}, unroll: unrolled(4, 4),
			// Masked-off tail lanes have dy = 0, so g and g·xhat are zero there.
			body: func(c *ctx) {
				g := c.mul(c.in[0], c.in[2])
				xhat := c.mul(c.sub(c.in[1], c.scal[0]), c.scal[1])
				VADDPS(g, c.acc[0], c.acc[0])
				VFMADD231PS(xhat, g, c.acc[1])
			},
		},
		{
			name: "layerNormBackwardF32", sig: "func(dx, dy, x, gamma []float32, mean, rstd, a, b float32)",
			doc: []string{
				"layerNormBackwardF32 sets dx[i] = rstd * (dy[i]*gamma[i] - a - (x[i]-mean)*rstd*b)",
				"for i < len(dx).",
			},
			n: "dx", ins: []string{"dy", "x", "gamma"}, outs: []string{"dx"}, scals: []string{"mean", "rstd", "a", "b"}, unroll: unrolled(4, 4),
			body: func(c *ctx) {
				g := c.mul(c.in[0], c.in[2])
				xhat := c.mul(c.sub(c.in[1], c.scal[0]), c.scal[1])
				d := c.fnma(xhat, c.scal[3], c.sub(g, c.scal[2]))
				c.out[0] = c.mul(d, c.scal[1])
			},
		},
		{
			name: "layerNormGradAccumF32", sig: "func(dgamma, dbeta, dy, x []float32, mean, rstd float32)",
			doc: []string{
				"layerNormGradAccumF32 sets dgamma[i] += dy[i]*(x[i]-mean)*rstd (the add one FMA)",
				"and dbeta[i] += dy[i] for i < len(dgamma).",
			},
			n: "dgamma", ins: []string{"dgamma", "dbeta", "dy", "x"}, outs: []string{"dgamma", "dbeta"},
			scals: []string{"mean", "rstd"}, unroll: unrolled(4, 2),
			body: func(c *ctx) {
				xhat := c.mul(c.sub(c.in[3], c.scal[0]), c.scal[1])
				c.out[0] = c.fma(c.in[2], xhat, c.in[0])
				c.out[1] = c.add(c.in[1], c.in[2])
			},
		},
	} {
		l.emit(t)
	}
}
