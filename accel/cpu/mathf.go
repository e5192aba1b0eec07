package cpu

import "math"

// Transcendental functions for the float32 kernels, computed in float64
// and rounded once, accurate to about 1e-9 absolute (erf) or relative
// (exp) — far below float32's half ulp of 3e-8 — and several times faster
// than the math package's general float64 versions, which carry precision
// float32 results cannot hold.

// erfStep is the spacing of the erf table: erf is expanded around the
// nearest grid point x0 = i/64, at most 1/128 away.
const erfStep = 64

// erfTable[i] = erf(i/64) and erfSlope[i] = erf'(i/64) = 2/√π·exp(-(i/64)²)
// for i in [0, 4·64]; beyond 4, erf(x) rounds to ±1 in float32.
var erfTable, erfSlope = func() (v, d [4*erfStep + 2]float64) {
	for i := range v {
		x := float64(i) / erfStep
		v[i] = math.Erf(x)
		d[i] = 2 / math.SqrtPi * math.Exp(-x*x)
	}
	return
}()

// erf64 is erf for arguments that come from float32 values. Around the
// grid point x0 with g = erf'(x0), erf(x0+d) = erf(x0) + g·(d - x0·d² +
// (2x0²-1)/3·d³ + x0(3-2x0²)/6·d⁴ + …); with |d| ≤ 1/128 the terms kept
// leave an error below 1e-11.
func erf64(x float64) float64 {
	a := math.Abs(x)
	if !(a < 4) { // also NaN
		if a != a {
			return x
		}
		return math.Copysign(1, x)
	}
	i := int(a*erfStep + 0.5)
	x0 := float64(i) * (1.0 / erfStep)
	d := a - x0
	x02 := x0 * x0
	p := d * (1 + d*(-x0+d*((2*x02-1)*(1.0/3)+d*(x0*(3-2*x02)*(1.0/6)))))
	return math.Copysign(erfTable[i]+erfSlope[i]*p, x)
}

// exp64 is e^x for arguments that come from float32 values: x = k·ln2 + r
// with |r| ≤ ln2/2, e^r by its degree-8 Taylor polynomial (relative error
// below 3e-10), scaled by 2^k through the exponent bits. Results below
// float32's range come out as 0 or subnormal once rounded, above it +Inf.
func exp64(x float64) float64 {
	switch {
	case x > 89:
		return math.Inf(1)
	case x < -104:
		return 0
	case x != x:
		return x
	}
	k := math.Floor(x*math.Log2E + 0.5)
	r := x - k*math.Ln2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040+r*(1.0/40320))))))))
	return p * math.Float64frombits(uint64(int64(k)+1023)<<52)
}

// tanh64 is tanh for arguments that come from float32 values: the odd
// series near 0 (where 1 - 2/(e^{2x}+1) would cancel), that formula with
// exp64 elsewhere, ±1 beyond 10.
func tanh64(x float64) float64 {
	a := math.Abs(x)
	switch {
	case a < 0.125:
		x2 := x * x
		// x - x³/3 + 2x⁵/15 - 17x⁷/315 + 62x⁹/2835: error below 2e-12·|x|
		return x * (1 + x2*(-1.0/3+x2*(2.0/15+x2*(-17.0/315+x2*(62.0/2835)))))
	case !(a < 10):
		if a != a {
			return x
		}
		return math.Copysign(1, x)
	}
	return math.Copysign(1-2/(exp64(2*a)+1), x)
}
