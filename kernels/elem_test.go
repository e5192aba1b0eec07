package kernels

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// Test helpers shared by the element-wise and row kernel tests.

// elemULP returns the spacing of float32 values at the magnitude of x.
func elemULP(x float64) float64 {
	a := math.Abs(x)
	if a < 0x1p-126 {
		return 0x1p-149
	}
	if a >= math.MaxFloat32 {
		return 0x1p104
	}
	_, e := math.Frexp(a) // a = f·2^e, f in [0.5, 1)
	return math.Ldexp(1, e-24)
}

// elemULPErr returns |got - want| in float32 ulps at want, 0 when both are the
// same infinity or both NaN, and +Inf when one is NaN or infinite and the
// other is not.
func elemULPErr(got float32, want float64) float64 {
	g := float64(got)
	switch {
	case math.IsNaN(want) || math.IsNaN(g):
		if math.IsNaN(want) && math.IsNaN(g) {
			return 0
		}
		return math.Inf(1)
	case math.IsInf(want, 0) || math.IsInf(g, 0) || math.Abs(want) > math.MaxFloat32:
		if float32(want) == got {
			return 0
		}
		return math.Inf(1)
	}
	return math.Abs(g-want) / elemULP(want)
}

// elemSpecials are the inputs every element-wise kernel must get right.
var elemSpecials = []float32{
	0, float32(math.Copysign(0, -1)), 1, -1, 0.5, -0.5, 2, -2,
	float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
	math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
	0x1p-126, -0x1p-126, 0x1p-130, -0x1p-130, 1e-20, -1e-20, 1e20, -1e20,
	88.72, 88.73, -87.33, -103.9, -104, -150, 89, 100, -100, 0.625, -0.625, 1.4142135, -1.4142135,
	3.9, -3.9, 9.5, -9.5, 10, -10, 15, -15, 15.5, -15.5, 0.75179, -0.75179,
}

// elemSweep returns float32 values spread over every exponent of both signs
// (every stride-th bit pattern) plus specialValues.
func elemSweep(stride uint32) []float32 {
	var out []float32
	for bits := uint64(0); bits < 1<<31; bits += uint64(stride) {
		v := math.Float32frombits(uint32(bits))
		out = append(out, v, -v)
	}
	return append(out, elemSpecials...)
}

// elemRandSlice returns n values drawn from a mix of scales, with a few
// specials when specials is set.
func elemRandSlice(rng *rand.Rand, n int, scale float64, specials bool) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64() * scale)
		if specials && rng.IntN(16) == 0 {
			s[i] = elemSpecials[rng.IntN(len(elemSpecials))]
		}
	}
	return s
}

// elemGuarded returns a slice of n elements inside a larger buffer whose
// guard elements (before and after) hold a NaN payload that no kernel
// produces; checkGuards reports any that changed.
type elemGuarded struct {
	buf []float32
	n   int
}

const elemGuardWords = 16

var elemGuardBits = uint32(0x7fc0dead)

func newElemGuarded(n int) *elemGuarded {
	g := &elemGuarded{buf: make([]float32, n+2*elemGuardWords), n: n}
	for i := range g.buf {
		g.buf[i] = math.Float32frombits(elemGuardBits)
	}
	return g
}

func (g *elemGuarded) s() []float32 {
	return g.buf[elemGuardWords : elemGuardWords+g.n : elemGuardWords+g.n]
}

func (g *elemGuarded) check(t *testing.T, what string) {
	t.Helper()
	for i, v := range g.buf {
		if i >= elemGuardWords && i < elemGuardWords+g.n {
			continue
		}
		if math.Float32bits(v) != elemGuardBits {
			t.Fatalf("%s: guard word %d (slice of %d) overwritten with %v", what, i-elemGuardWords, g.n, v)
		}
	}
}

// elemExhaustive reports whether the slow, complete checks were asked for.
func elemExhaustive() bool { return os.Getenv("DSTUNE_EXHAUSTIVE") == "1" }
