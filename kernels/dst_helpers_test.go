package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The DST kernel tests compare every dispatched path with independent
// references written here from the definitions (float64 arithmetic, sorts)
// over data full of the awkward cases: NaN, ±Inf, ±0, denormals, equal
// pairs (Δ = 0), zero seeds and many ties.

// dataKind names a way of filling theta/seed.
type dataKind int

const (
	dataNormal  dataKind = iota // N(0, 0.02) seeds, small moves
	dataSpecial                 // normal plus NaN, ±Inf, ±0, denormals, equal pairs, zero seeds
	dataTies                    // values from a tiny set: most scores tie
	dataUniform                 // values in [1, 2): few top-level radix buckets
)

var dataKinds = []dataKind{dataNormal, dataSpecial, dataTies, dataUniform}

func (k dataKind) String() string {
	return [...]string{"normal", "special", "ties", "uniform"}[k]
}

var specialValues = []float32{
	float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 0, float32(math.Copysign(0, -1)),
	math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 1e-40, -3e-39, math.MaxFloat32, -math.MaxFloat32, 1, -1,
}

func makeData(rng *rand.Rand, n int, kind dataKind) (theta, seed []float32) {
	theta, seed = make([]float32, n), make([]float32, n)
	for i := range n {
		switch kind {
		case dataNormal, dataSpecial:
			seed[i] = float32(rng.NormFloat64() * 0.02)
			theta[i] = seed[i] + float32(rng.NormFloat64()*1e-3)
			if kind == dataSpecial {
				switch rng.IntN(8) {
				case 0:
					theta[i] = specialValues[rng.IntN(len(specialValues))]
				case 1:
					seed[i] = specialValues[rng.IntN(len(specialValues))]
				case 2:
					theta[i] = seed[i]
				case 3:
					seed[i] = 0
				}
			}
		case dataTies:
			vals := []float32{0, 0.5, 1, -1, 2}
			seed[i] = vals[rng.IntN(2)]
			theta[i] = vals[rng.IntN(len(vals))]
		case dataUniform:
			seed[i] = 1 + rng.Float32()
			theta[i] = 1 + rng.Float32()
		}
	}
	return theta, seed
}

// refScore is Δ from its definition, in float64 (each float32 operation of
// the kernels is one correctly rounded operation, which float64 followed
// by rounding reproduces for +, −, ×, ÷).
func refScore(theta, seed float32, d Distance) float32 {
	t, s := float64(theta), float64(seed)
	diff := float64(float32(t - s))
	switch d {
	case DistanceAbs:
		return float32(math.Abs(diff))
	case DistanceRel:
		if diff == 0 {
			return 0
		}
		return float32(math.Abs(float64(float32(diff / s))))
	case DistanceInvRel:
		return float32(math.Abs(float64(float32(s * diff))))
	}
	return theta
}

// sameBits reports whether two float32 are identical, treating every NaN
// as equal to every NaN.
func sameBits(a, b float32) bool {
	if a != a && b != b {
		return true
	}
	return math.Float32bits(a) == math.Float32bits(b)
}

// sizes is every length 0..130 and a few larger ones.
func sizes(t *testing.T) []int {
	s := make([]int, 0, 140)
	for n := 0; n <= 130; n++ {
		s = append(s, n)
	}
	s = append(s, 255, 1000, 4099)
	if !testing.Short() {
		s = append(s, 70001)
	}
	return s
}

// guarded returns a copy of x followed by guard words, and a function that
// fails the test if a guard changed.
func guarded(t *testing.T, x []float32) ([]float32, func()) {
	t.Helper()
	const guards = 17
	buf := make([]float32, len(x)+guards)
	copy(buf, x)
	for i := len(x); i < len(buf); i++ {
		buf[i] = float32(math.Float32frombits(0x7fc0dead))
	}
	return buf[:len(x):len(x)], func() {
		t.Helper()
		for i := len(x); i < len(buf); i++ {
			if math.Float32bits(buf[i]) != 0x7fc0dead {
				t.Fatalf("guard word %d after %d entries overwritten", i-len(x), len(x))
			}
		}
	}
}

var allDistances = []Distance{DistanceAbs, DistanceRel, DistanceInvRel}
