package kernels

import (
	"math"
	"testing"
)

// mathFunc is one element-wise function with its float64 reference and the
// error bound the package documents for it.
type mathFunc struct {
	name string
	run  func(dst, src []float32)
	ref  func(x float64) float64
	// maxUlp bounds the error in ulps of the result, or of scale(x) when
	// scale is set (for derivatives that cross zero by cancellation of
	// terms of size scale).
	maxUlp float64
	scale  func(x float64) float64
	// inputUlps, when set, also accepts a result within maxUlp of
	// ref(x') for some x' within inputUlps ulps of x: where the function
	// amplifies relative changes of x (GELU-tanh for negative x, through
	// the three roundings of 2u = x(2c₁ + 2c₂x²) that e^{2u} magnifies by
	// |2u|), that is the accuracy float32 arithmetic allows.
	inputUlps float64
	// Results below tiny in magnitude may be off by up to tinyErr: they
	// pass through subnormal intermediates.
	tiny, tinyErr float64
}

// accept reports whether got is within f's bounds for input x, and the
// error in ulps when the ulp criterion decided it (or -1 when another did).
func (f *mathFunc) accept(x, got float32) (ok bool, ulps float64) {
	return f.acceptTimes(x, 1, got, 0)
}

// acceptTimes is accept for got = dy·f(x) (dy finite, exact), with extra
// ulps of slack for the final product's rounding.
func (f *mathFunc) acceptTimes(x float32, dy float64, got float32, extra float64) (ok bool, ulps float64) {
	ref := func(x float64) float64 { return dy * f.ref(x) }
	want := ref(float64(x))
	maxUlp := f.maxUlp + extra
	e := elemULPErr(got, want)
	if f.scale != nil && !math.IsInf(e, 0) && e != 0 {
		e = math.Abs(float64(got)-want) / elemULP(math.Abs(dy)*f.scale(float64(x)))
	}
	if e <= maxUlp {
		return true, e
	}
	g := float64(got)
	if f.tiny > 0 && math.Abs(want) < f.tiny*math.Abs(dy) && math.Abs(g-want) <= f.tinyErr*math.Max(1, math.Abs(dy)) {
		return true, -1
	}
	if f.inputUlps > 0 && !math.IsNaN(g) && !math.IsInf(g, 0) {
		d := f.inputUlps * elemULP(float64(x))
		a, b := ref(float64(x)-d), ref(float64(x)+d)
		lo, hi := min(a, b, want), max(a, b, want)
		slack := maxUlp * elemULP(max(math.Abs(lo), math.Abs(hi)))
		if g >= lo-slack && g <= hi+slack {
			return true, -1
		}
	}
	return false, e
}

// Independent float64 references (not the generic versions).
func refSigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	return math.Exp(x) / (1 + math.Exp(x))
}

func refGelu(x float64) float64 {
	if math.IsInf(x, -1) {
		return math.Copysign(0, -1)
	}
	return 0.5 * x * math.Erfc(-x/math.Sqrt2)
}

func refGeluGrad(x float64) float64 {
	if math.IsInf(x, 0) {
		if x > 0 {
			return 1
		}
		return 0
	}
	return 0.5*math.Erfc(-x/math.Sqrt2) + x*math.Exp(-x*x/2)/math.Sqrt(2*math.Pi)
}

const sqrt2OverPi = 0.7978845608028654

func refGeluTanh(x float64) float64 {
	if math.IsInf(x, -1) {
		return math.Copysign(0, -1)
	}
	u := sqrt2OverPi * (x + 0.044715*x*x*x)
	if u > 0 {
		return 0.5 * x * (1 + math.Tanh(u))
	}
	// 1 + tanh(u) = 2e^{2u}/(1+e^{2u}), without the cancellation.
	e := math.Exp(2 * u)
	return x * e / (1 + e)
}

func refGeluTanhGrad(x float64) float64 {
	if math.IsInf(x, 0) {
		if x > 0 {
			return 1
		}
		return 0
	}
	u := sqrt2OverPi * (x + 0.044715*x*x*x)
	du := sqrt2OverPi * (1 + 3*0.044715*x*x)
	// d/dx ½x(1+tanh u) = ½(1+tanh u) + ½x·sech²(u)·u'
	sech := 1 / math.Cosh(u)
	var half float64 // ½(1+tanh u)
	if u > 0 {
		half = 0.5 * (1 + math.Tanh(u))
	} else {
		e := math.Exp(2 * u)
		half = e / (1 + e)
	}
	return half + 0.5*x*sech*sech*du
}

// The sizes of the two terms of each GELU derivative (Φ + xφ), whose sum
// crosses zero near x = -0.75.
func geluGradScale(x float64) float64 {
	return 0.5*math.Erfc(-x/math.Sqrt2) + math.Abs(x)*math.Exp(-x*x/2)/math.Sqrt(2*math.Pi)
}

func geluTanhGradScale(x float64) float64 {
	u := sqrt2OverPi * (x + 0.044715*x*x*x)
	du := sqrt2OverPi * (1 + 3*0.044715*x*x)
	s := refSigmoid(2 * u)
	return s + math.Abs(2*x*s*refSigmoid(-2*u)*du)
}

// Subnormal-range slack: results below 1e-37 may be off by 1e-42 (about
// 700 subnormal steps).
const elemTiny, elemTinyErr = 1e-37, 1e-42

var mathFuncs = []mathFunc{
	{name: "Exp", run: ExpF32, ref: math.Exp, maxUlp: 1.02},
	{name: "Sigmoid", run: SigmoidF32, ref: refSigmoid, maxUlp: 2.5},
	{name: "Tanh", run: TanhF32, ref: math.Tanh, maxUlp: 1.5},
	{name: "Erf", run: ErfF32, ref: math.Erf, maxUlp: 1.5},
	{name: "Gelu", run: GeluF32, ref: refGelu, maxUlp: 7, tiny: elemTiny, tinyErr: elemTinyErr},
	{
		name: "GeluGrad", run: func(dst, src []float32) { GeluBackwardF32(dst, src, elemOnes(len(dst))) },
		ref: refGeluGrad, maxUlp: 4, scale: geluGradScale, tiny: elemTiny, tinyErr: elemTinyErr,
	},
	{name: "GeluTanh", run: GeluTanhF32, ref: refGeluTanh, maxUlp: 6, inputUlps: 2, tiny: elemTiny, tinyErr: elemTinyErr},
	{
		name: "GeluTanhGrad", run: func(dst, src []float32) { GeluTanhBackwardF32(dst, src, elemOnes(len(dst))) },
		ref: refGeluTanhGrad, maxUlp: 6, scale: geluTanhGradScale, inputUlps: 2, tiny: elemTiny, tinyErr: elemTinyErr,
	},
}

func elemOnes(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// TestMathAccuracy measures each function against its float64 reference
// over a sweep of bit patterns covering every exponent of both signs
// (about 2·10⁶ values; every float32 with DSTUNE_EXHAUSTIVE=1).
func TestMathAccuracy(t *testing.T) {
	stride := uint32(1021)
	if testing.Short() {
		stride = 16381
	}
	if elemExhaustive() {
		stride = 1
	}
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, f := range mathFuncs {
			t.Run(f.name, func(t *testing.T) {
				worst, worstX := 0.0, float32(0)
				var bad []float32
				others := 0
				const chunk = 1 << 16
				src := make([]float32, 0, chunk)
				dst := make([]float32, chunk)
				check := func() {
					f.run(dst[:len(src)], src)
					for i, x := range src {
						ok, e := f.accept(x, dst[i])
						switch {
						case !ok:
							bad = append(bad, x)
						case e < 0:
							others++
						case e > worst && math.Abs(f.ref(float64(x))) > 1e-30:
							worst, worstX = e, x
						}
					}
					src = src[:0]
				}
				for bits := uint64(0); bits < 1<<31; bits += uint64(stride) {
					v := math.Float32frombits(uint32(bits))
					src = append(src, v, -v)
					if len(src) >= chunk-1 {
						check()
					}
				}
				src = append(src, elemSpecials...)
				check()
				t.Logf("max %.3g ulp at x=%g among results above 1e-30; %d results accepted by the input-ulp or subnormal criteria", worst, worstX, others)
				for i, x := range bad {
					if i == 10 {
						t.Errorf("... %d more", len(bad)-10)
						break
					}
					got := make([]float32, 1)
					f.run(got, []float32{x})
					_, e := f.accept(x, got[0])
					t.Errorf("%s(%g) [%#x] = %g, want %g: %.3g ulp, bound %g", f.name, x, math.Float32bits(x), got[0], f.ref(float64(x)), e, f.maxUlp)
				}
			})
		}
	})
}
