package main

import (
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Polynomial coefficients, lowest degree first, printed by fit_coeffs.py.
var (
	// exp(r) = 1 + r + r²·q(r) for |r| <= ln2/2.
	expPoly = []float32{0.4999999403953552, 0.1666652113199234, 0.04166838899254799, 0.008368715643882751, 0.0013814602280035615}
	// erf(x) = x + x·Q(x²) for |x| < 1.
	erfSmallPoly = []float32{0.12837916612625122, -0.3761262595653534, 0.1128358542919159, -0.026853812858462334, 0.005188329610973597, -0.0008010208257474005, 7.853906572563574e-05}
	// erfc(z) = t·Q(t)·exp(-z²) with t = 1/(1 + erfcTailP·z), for 0.5 <= z <= 10.
	erfcTailPoly = []float32{0.22567883133888245, 0.22557394206523895, 0.20900020003318787, 0.16145047545433044, 0.16597913205623627, -0.05555851384997368, 0.22819434106349945, -0.22048655152320862, 0.06018013879656792}
	// tanh(x) = x + x³·P(x²) for |x| < 0.625.
	tanhSmallPoly = []float32{-0.3333333134651184, 0.1333320587873459, -0.05394676327705383, 0.021700702607631683, -0.008177398703992367, 0.0021429620683193207}
)

const (
	erfcTailP     = 0.4
	tanhSmallEdge = 0.625

	// exp clamps its argument to [expLo, expHi]: below expLo the result
	// rounds to zero, above expHi to +Inf, and in between 2^n stays within
	// what the AVX2 two-factor scaling can form.
	expLo = -104
	expHi = 88.8

	log2e    = math.Log2E
	ln2Hi    = float32(math.Ln2)
	expMagic = 12582912 // 1.5·2²³: adding it rounds |v| < 2²² to an integer held in the low mantissa bits

	// Past ±geluClamp GELU is x or -0 and its derivative 1 or 0 in float32;
	// clamping there keeps Inf out of the intermediate products.
	geluClamp = 15

	sqrtHalf     = math.Sqrt2 / 2
	invSqrt2Pi   = 0.3989422804014327   // 1/√(2π)
	geluTanhK    = 0.7978845608028654   // √(2/π)
	geluTanhCube = 0.044715 * geluTanhK // √(2/π)·0.044715
)

// ln2Lo is the part of ln 2 that ln2Hi misses.
var ln2Lo = float32(math.Ln2 - float64(ln2Hi))

// exp returns e^x in every lane, within about 1 ulp: x = n·ln2 + r with
// |r| <= ln2/2 (Cody–Waite with FMA), e^r by expPoly, and the result scaled
// by 2^n (VSCALEFPS on AVX-512; two exponent-field multiplies on AVX2 so
// that subnormal results round once). NaN stays NaN.
func (c *ctx) exp(x VecVirtual) VecVirtual {
	xc := c.clamp(x, expLo, expHi)
	t := c.load(c.k(expMagic))
	VFMADD231PS(c.k(log2e), xc, t) // t = xc·log2e + magic
	n := c.sub(t, c.k(expMagic))
	r := c.fnma(n, c.k(ln2Hi), xc)
	VFNMADD231PS(c.k(ln2Lo), n, r)
	q := c.horner(r, expPoly)
	r2 := c.mul(r, r)
	VFMADD213PS(r, r2, q) // q = r²·q + r
	VADDPS(c.k(1), q, q)
	y := c.v()
	if c.t.avx512 {
		VSCALEFPS(n, q, y)
		return y
	}
	// n sits in the low bits of t; 2^n = 2^n1 · 2^n2 with n1 = n>>1.
	ni := c.v()
	VPSUBD(c.kb(math.Float32bits(expMagic)), t, ni)
	n1 := c.v()
	VPSRAD(U8(1), ni, n1)
	n2 := c.v()
	VPSUBD(n1, ni, n2)
	VPADDD(c.kb(127), n1, n1)
	VPSLLD(U8(23), n1, n1)
	VPADDD(c.kb(127), n2, n2)
	VPSLLD(U8(23), n2, n2)
	VMULPS(n1, q, y)
	VMULPS(n2, y, y)
	return y
}

// expNeg returns e^(-x).
func (c *ctx) expNeg(x VecVirtual) VecVirtual {
	nx := c.v()
	VXORPS(c.kb(0x80000000), x, nx)
	return c.exp(nx)
}

// squareSplit returns s and e with s + e = x·x exactly (e from an FMA).
func (c *ctx) squareSplit(x VecVirtual) (s, e VecVirtual) {
	s = c.mul(x, x)
	e = c.v()
	VMOVAPS(x, e)
	VFMSUB213PS(s, x, e) // e = x·x - s
	return s, e
}

// expNegSquare returns e^-(s+e) for the split square s+e: e^-s·(1-e).
func (c *ctx) expNegSquare(s, e VecVirtual) VecVirtual {
	es := c.expNeg(s)
	return c.fnma(e, es, es)
}

// erfcTail returns erfc(z) for 0.5 <= z <= 10, given exp(-z²) (computed from
// an exact square by the caller, since z² rounded would cost up to z²·2⁻²⁴
// in relative error).
func (c *ctx) erfcTail(z, expNegZ2 VecVirtual) VecVirtual {
	den := c.fmaC(z, erfcTailP, 1)
	t := c.recip(den)
	q := c.horner(t, erfcTailPoly)
	y := c.mul(q, t)
	VMULPS(expNegZ2, y, y)
	return y
}

// erfSmall returns erf(x) for |x| < 1 as x + x·Q(x²): the final FMA adds x
// exactly, so the rounding of Q's coefficients costs only a tenth of an ulp.
func (c *ctx) erfSmall(x VecVirtual) VecVirtual {
	x2 := c.mul(x, x)
	return c.fma(c.horner(x2, erfSmallPoly), x, x)
}

// erf returns erf(x): erfSmall below 1 in magnitude, 1 - erfc(|x|) with
// the sign of x above.
func (c *ctx) erf(x VecVirtual) VecVirtual {
	a := c.abs(x)
	small := c.erfSmall(x)
	ac := c.v()
	VMINPS(c.k(10), a, ac) // erfc(10) is far below float32 resolution of 1
	s, e := c.squareSplit(ac)
	large := c.copySign(c.rsubC(1, c.erfcTail(ac, c.expNegSquare(s, e))), x)
	return c.blend(c.cmp(cmpNGE, a, c.k(1)), small, large) // NaN takes the small path
}

// tanh returns tanh(x): x + x³·P(x²) below tanhSmallEdge in magnitude,
// ±(1 - 2/(e^{2|x|}+1)) above.
func (c *ctx) tanh(x VecVirtual) VecVirtual {
	a := c.abs(x)
	x2 := c.mul(x, x)
	p := c.horner(x2, tanhSmallPoly)
	small := c.fma(c.mul(x, x2), p, x)
	e2 := c.exp(c.add(a, a))
	q := c.v()
	VDIVPS(c.add(e2, c.k(1)), c.creg(2), q)
	large := c.copySign(c.rsubC(1, q), x)
	return c.blend(c.cmp(cmpNGE, a, c.k(tanhSmallEdge)), small, large)
}

// sigmoidPair returns σ(x) and σ(-x) = 1-σ(x), each from e = e^-|x| by
// one division (1/(1+e) on one side of zero, e/(1+e) on the other), so
// neither overflows nor cancels, and tiny results of large |x| keep their
// relative accuracy.
func (c *ctx) sigmoidPair(x VecVirtual) (sig, sigNeg VecVirtual) {
	e := c.expNeg(c.abs(x))
	den := c.add(e, c.k(1))
	big := c.recip(den) // σ(|x|)
	small := c.v()      // σ(-|x|)
	VDIVPS(den, e, small)
	neg := c.cmp(cmpLT, x, c.k(0))
	return c.blend(neg, small, big), c.blend(neg, big, small)
}

// sigmoid returns σ(x) = 1/(1+e^-x) (see sigmoidPair).
func (c *ctx) sigmoid(x VecVirtual) VecVirtual {
	s, _ := c.sigmoidPair(x)
	return s
}

// geluPhi returns the standard normal CDF Φ(xc) = ½·erfc(-xc/√2) and
// e^(-xc²/2) for xc already clamped to ±geluClamp: ½ + ½·erf(xc/√2) near
// zero, erfcTail for |xc/√2| >= 0.5 (early, because for negative xc
// ½ + ½·erf cancels: Φ(-√2) = 0.08).
func (c *ctx) geluPhi(xc VecVirtual) (phi, gauss VecVirtual) {
	z := c.mul(xc, c.k(sqrtHalf))
	az := c.abs(z)
	small := c.fmaC(c.erfSmall(z), 0.5, 0.5)

	s, e := c.squareSplit(xc)
	VMULPS(c.k(0.5), s, s) // halving is exact
	VMULPS(c.k(0.5), e, e)
	gauss = c.expNegSquare(s, e)
	halfErfc := c.mul(c.erfcTail(az, gauss), c.k(0.5))
	large := c.blend(c.cmp(cmpLT, xc, c.k(0)), halfErfc, c.rsubC(1, halfErfc))
	phi = c.blend(c.cmp(cmpNGE, az, c.k(0.5)), small, large)
	return phi, gauss
}

// geluTanhParts returns σ(2u), 1-σ(2u) and u' for
// u = √(2/π)(xc + 0.044715·xc³), xc clamped to ±geluClamp.
func (c *ctx) geluTanhParts(xc VecVirtual) (sig, sigNeg, du VecVirtual) {
	x2 := c.mul(xc, xc)
	u2 := c.mul(c.fmaC(x2, 2*geluTanhCube, 2*geluTanhK), xc) // 2u
	sig, sigNeg = c.sigmoidPair(u2)
	du = c.fmaC(x2, 3*geluTanhCube, geluTanhK)
	return sig, sigNeg, du
}
