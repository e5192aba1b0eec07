package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestScoreDefinitions(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	negZero := float32(math.Copysign(0, -1))
	cases := []struct {
		theta, seed float32
		d           Distance
		want        float32
	}{
		{1.5, 1, DistanceAbs, 0.5},
		{1, 1.5, DistanceAbs, 0.5},
		{3, 2, DistanceRel, 0.5},
		{1, -2, DistanceRel, 1.5},
		{0, 0, DistanceRel, 0},       // 0/0 defined as 0
		{negZero, 0, DistanceRel, 0}, // -0 − 0 == 0
		{1e-30, 0, DistanceRel, inf}, // leaving a zero seed ranks above all
		{-2, 0, DistanceRel, inf},
		{3, 2, DistanceInvRel, 2},
		{1, -2, DistanceInvRel, 6},
		{5, 0, DistanceInvRel, 0},
		{nan, 1, DistanceAbs, nan},
		{1, nan, DistanceRel, nan},
		{inf, inf, DistanceAbs, nan},
		{inf, 1, DistanceInvRel, inf},
	}
	for _, c := range cases {
		forISAs(t, func(t *testing.T, isa ISA) {
			// Pad to a vector's length so the assembly computes it too.
			theta := make([]float32, 32)
			seed := make([]float32, 32)
			for i := range theta {
				theta[i], seed[i] = c.theta, c.seed
			}
			dst := make([]float32, 32)
			Score(dst, theta, seed, c.d)
			for i, got := range dst {
				if !sameBits(got, c.want) {
					t.Fatalf("Δ_%v(%v, %v)[%d] = %v, want %v", c.d, c.theta, c.seed, i, got, c.want)
				}
			}
		})
	}
}

func TestScoreMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, kind := range dataKinds {
			for _, n := range sizes(t) {
				theta, seed := makeData(rng, n, kind)
				for _, d := range allDistances {
					dst, check := guarded(t, make([]float32, n))
					Score(dst, theta, seed, d)
					check()
					for i := range dst {
						if want := refScore(theta[i], seed[i], d); !sameBits(dst[i], want) {
							t.Fatalf("%v n=%d %v: Δ[%d](%v, %v) = %v, want %v", kind, n, d, i, theta[i], seed[i], dst[i], want)
						}
					}
				}
			}
		}
	})
}

func TestScoreInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	forISAs(t, func(t *testing.T, isa ISA) {
		theta, seed := makeData(rng, 100, dataSpecial)
		want := make([]float32, 100)
		for i := range want {
			want[i] = refScore(theta[i], seed[i], DistanceInvRel)
		}
		Score(theta, theta, seed, DistanceInvRel)
		for i := range want {
			if !sameBits(theta[i], want[i]) {
				t.Fatalf("in place: Δ[%d] = %v, want %v", i, theta[i], want[i])
			}
		}
	})
}

func FuzzScore(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x7f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, uint8(1))
	f.Fuzz(func(t *testing.T, raw []byte, dist uint8) {
		theta, seed := fuzzFloats(raw)
		d := Distance(dist % 3)
		got := make([]float32, len(theta))
		Score(got, theta, seed, d)
		want := make([]float32, len(theta))
		restore := SetMaxISA(Generic)
		Score(want, theta, seed, d)
		restore()
		for i := range got {
			if !sameBits(got[i], want[i]) {
				t.Fatalf("Δ[%d] = %v, generic %v", i, got[i], want[i])
			}
		}
	})
}

// fuzzFloats turns fuzz bytes into theta and seed: 8 bytes per entry,
// repeated until there are enough entries for a few vectors.
func fuzzFloats(raw []byte) (theta, seed []float32) {
	n := len(raw) / 8
	if n == 0 {
		return nil, nil
	}
	reps := max(1, 70/n)
	for range reps {
		for i := range n {
			b := raw[8*i : 8*i+8]
			theta = append(theta, math.Float32frombits(uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16|uint32(b[3])<<24))
			seed = append(seed, math.Float32frombits(uint32(b[4])|uint32(b[5])<<8|uint32(b[6])<<16|uint32(b[7])<<24))
		}
	}
	return theta, seed
}
