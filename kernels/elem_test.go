package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// Test helpers shared by the element-wise and row kernel tests.

// ulp32 returns the spacing of float32 values at the magnitude of x.
func ulp32(x float64) float64 {
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

// ulpErr returns |got - want| in float32 ulps at want, 0 when both are the
// same infinity or both NaN, and +Inf when one is NaN or infinite and the
// other is not.
func ulpErr(got float32, want float64) float64 {
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
	return math.Abs(g-want) / ulp32(want)
}

// specialValues are the inputs every element-wise kernel must get right.
var specialValues = []float32{
	0, float32(math.Copysign(0, -1)), 1, -1, 0.5, -0.5, 2, -2,
	float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
	math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
	0x1p-126, -0x1p-126, 0x1p-130, -0x1p-130, 1e-20, -1e-20, 1e20, -1e20,
	88.72, 88.73, -87.33, -103.9, -104, -150, 89, 100, -100, 0.625, -0.625, 1.4142135, -1.4142135,
	3.9, -3.9, 9.5, -9.5, 10, -10, 15, -15, 15.5, -15.5, 0.75179, -0.75179,
}

// sweep returns float32 values spread over every exponent of both signs
// (every stride-th bit pattern) plus specialValues.
func sweep(stride uint32) []float32 {
	var out []float32
	for bits := uint64(0); bits < 1<<31; bits += uint64(stride) {
		v := math.Float32frombits(uint32(bits))
		out = append(out, v, -v)
	}
	return append(out, specialValues...)
}

// randSlice returns n values drawn from a mix of scales, with a few
// specials when specials is set.
func randSlice(rng *rand.Rand, n int, scale float64, specials bool) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64() * scale)
		if specials && rng.IntN(16) == 0 {
			s[i] = specialValues[rng.IntN(len(specialValues))]
		}
	}
	return s
}

// guarded returns a slice of n elements inside a larger buffer whose
// guard elements (before and after) hold a NaN payload that no kernel
// produces; checkGuards reports any that changed.
type guarded struct {
	buf []float32
	n   int
}

const guardWords = 16

var guardBits = uint32(0x7fc0dead)

func newGuarded(n int) *guarded {
	g := &guarded{buf: make([]float32, n+2*guardWords), n: n}
	for i := range g.buf {
		g.buf[i] = math.Float32frombits(guardBits)
	}
	return g
}

func (g *guarded) s() []float32 { return g.buf[guardWords : guardWords+g.n : guardWords+g.n] }

func (g *guarded) check(t *testing.T, what string) {
	t.Helper()
	for i, v := range g.buf {
		if i >= guardWords && i < guardWords+g.n {
			continue
		}
		if math.Float32bits(v) != guardBits {
			t.Fatalf("%s: guard word %d (slice of %d) overwritten with %v", what, i-guardWords, g.n, v)
		}
	}
}

// exhaustive reports whether the slow, complete checks were asked for.
func exhaustive() bool { return os.Getenv("DSTUNE_EXHAUSTIVE") == "1" }

func fmtISA(isa ISA) string { return fmt.Sprint(isa) }
