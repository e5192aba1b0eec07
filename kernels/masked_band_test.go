package kernels

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// refBand is MaskedBandUpdate from its definition, scores in float64.
func refBand(theta, seed []float32, d Distance, lo, hi float32) (out []float32, kept, band []int32, scores []float32) {
	out = slices.Clone(theta)
	for i := range theta {
		s := refScore(theta[i], seed[i], d)
		switch {
		case s > hi:
			kept = append(kept, int32(i))
		case s > lo:
			band = append(band, int32(i))
			scores = append(scores, s)
		default:
			out[i] = seed[i]
		}
	}
	return out, kept, band, scores
}

// randomBand picks band edges that tie with scores of the data, reach to
// ±Inf, or coincide.
func randomBand(rng *rand.Rand, theta, seed []float32, d Distance) (lo, hi float32) {
	pick := func() float32 {
		switch {
		case len(theta) > 0 && rng.IntN(3) != 0:
			i := rng.IntN(len(theta))
			if s := refScore(theta[i], seed[i], d); s == s {
				return s
			}
			return 0
		case rng.IntN(4) == 0:
			return float32(math.Inf(2*rng.IntN(2) - 1))
		}
		return float32(rng.Float64() * 2e-3)
	}
	lo, hi = pick(), pick()
	if lo > hi {
		lo, hi = hi, lo
	}
	if rng.IntN(5) == 0 {
		hi = lo
	}
	return lo, hi
}

func TestMaskedBandUpdateMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, kind := range dataKinds {
			for _, n := range sizes(t) {
				theta0, seed := makeData(rng, n, kind)
				for _, d := range allDistances {
					lo, hi := randomBand(rng, theta0, seed, d)
					want, wantKept, wantBand, wantScores := refBand(theta0, seed, d, lo, hi)
					theta, check := guarded(t, theta0)
					// Outputs start non-empty: the kernel appends.
					kept, band, scores := MaskedBandUpdate([]int32{-1}, []int32{-2}, []float32{-3}, theta, seed, d, lo, hi, 1+rng.IntN(3))
					check()
					if kept[0] != -1 || band[0] != -2 || scores[0] != -3 {
						t.Fatalf("%v n=%d %v: the slices' first entries were overwritten", kind, n, d)
					}
					if !slices.Equal(kept[1:], wantKept) || !slices.Equal(band[1:], wantBand) {
						t.Fatalf("%v n=%d %v band (%v, %v]: kept %v band %v, want %v %v", kind, n, d, lo, hi, kept[1:], band[1:], wantKept, wantBand)
					}
					checkBits(t, "scores", scores[1:], wantScores)
					checkBits(t, "theta", theta, want)
				}
			}
		}
	})
}

// TestMaskedBandUpdateThreaded runs a piece large enough for several
// workers: the result must not depend on the thread count.
func TestMaskedBandUpdateThreaded(t *testing.T) {
	rng := rand.New(rand.NewPCG(63, 64))
	n := 3*minPerWorker + 555
	for _, kind := range []dataKind{dataNormal, dataTies, dataSpecial} {
		theta0, seed := makeData(rng, n, kind)
		lo, hi := refScore(theta0[7], seed[7], DistanceAbs), refScore(theta0[9], seed[9], DistanceAbs)
		if lo != lo || hi != hi {
			lo, hi = 5e-4, 1e-3
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		want, wantKept, wantBand, wantScores := refBand(theta0, seed, DistanceAbs, lo, hi)
		forISAs(t, func(t *testing.T, isa ISA) {
			for _, threads := range []int{1, 2, 3} {
				theta := slices.Clone(theta0)
				kept, band, scores := MaskedBandUpdate(nil, nil, nil, theta, seed, DistanceAbs, lo, hi, threads)
				if !slices.Equal(kept, wantKept) || !slices.Equal(band, wantBand) {
					t.Fatalf("%v threads=%d: %d kept, %d in the band; want %d, %d", kind, threads, len(kept), len(band), len(wantKept), len(wantBand))
				}
				checkBits(t, "scores", scores, wantScores)
				checkBits(t, "theta", theta, want)
			}
		})
	}
}

func TestMaskedBandUpdateRejects(t *testing.T) {
	nan := float32(math.NaN())
	for _, c := range []struct {
		name   string
		lo, hi float32
		n      int
	}{{"lo>hi", 2, 1, 4}, {"NaN lo", nan, 1, 4}, {"NaN hi", 0, nan, 4}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", c.name)
				}
			}()
			MaskedBandUpdate(nil, nil, nil, make([]float32, c.n), make([]float32, c.n), DistanceAbs, c.lo, c.hi, 1)
		}()
	}
}

func FuzzMaskedBandUpdate(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x7f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, uint8(1), float32(0), float32(1e-3))
	f.Fuzz(func(t *testing.T, raw []byte, dist uint8, lo, hi float32) {
		if !(lo <= hi) {
			return
		}
		theta, seed := fuzzFloats(raw)
		d := Distance(dist % 3)
		a, b := slices.Clone(theta), slices.Clone(theta)
		ka, ba, sa := MaskedBandUpdate(nil, nil, nil, a, seed, d, lo, hi, 1)
		restore := SetMaxISA(Generic)
		kb, bb, sb := MaskedBandUpdate(nil, nil, nil, b, seed, d, lo, hi, 1)
		restore()
		if !slices.Equal(ka, kb) || !slices.Equal(ba, bb) {
			t.Fatalf("kept %v band %v, generic %v %v", ka, ba, kb, bb)
		}
		checkBits(t, "scores", sa, sb)
		checkBits(t, "theta", a, b)
	})
}
