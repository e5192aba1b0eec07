package kernels

import (
	"github.com/dstune/dstune/update"

	"math"
	"math/rand/v2"
	"testing"
)

// pickThresholds draws thresholds from the data's own scores (so that many
// scores tie with a threshold) plus NaN, ±Inf and ±0.
func pickThresholds(rng *rand.Rand, theta, seed []float32, d Distance, count int) []float32 {
	ts := make([]float32, 0, count)
	for len(ts) < count {
		switch r := rng.IntN(6); {
		case r == 0:
			ts = append(ts, specialValues[rng.IntN(len(specialValues))])
		case len(theta) > 0:
			i := rng.IntN(len(theta))
			if seed == nil {
				ts = append(ts, theta[i])
			} else {
				ts = append(ts, refScore(theta[i], seed[i], d))
			}
		default:
			ts = append(ts, float32(rng.NormFloat64()*1e-3))
		}
	}
	return ts
}

func refCounts(theta, seed []float32, d Distance, ts []float32) []int64 {
	c := make([]int64, len(ts))
	for i := range theta {
		var s float32
		if seed == nil {
			s = theta[i]
		} else {
			s = refScore(theta[i], seed[i], d)
		}
		for j, q := range ts {
			if float64(s) > float64(q) {
				c[j]++
			}
		}
	}
	return c
}

func TestCountAboveMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, kind := range dataKinds {
			for _, n := range sizes(t) {
				theta, seed := makeData(rng, n, kind)
				for _, d := range allDistances {
					ts := pickThresholds(rng, theta, seed, d, 1+rng.IntN(MaxThresholds))
					want := refCounts(theta, seed, d, ts)
					for _, threads := range []int{1, 3} {
						// Counts accumulate: start from a non-zero value.
						got := make([]int64, len(ts)+1)
						for j := range got {
							got[j] = 7
						}
						CountAbove(got, ts, theta, seed, d, threads)
						for j := range ts {
							if got[j]-7 != want[j] {
								t.Fatalf("%v n=%d %v threads=%d: count above %v = %d, want %d", kind, n, d, threads, ts[j], got[j]-7, want[j])
							}
						}
						if got[len(ts)] != 7 {
							t.Fatalf("count past the thresholds changed")
						}
					}
				}
				ts := pickThresholds(rng, theta, nil, 0, MaxThresholds)
				want := refCounts(theta, nil, 0, ts)
				got := make([]int64, len(ts))
				CountAboveFloats(got, ts, theta, 2)
				for j := range ts {
					if got[j] != want[j] {
						t.Fatalf("%v n=%d floats: count above %v = %d, want %d", kind, n, ts[j], got[j], want[j])
					}
				}
			}
		}
	})
}

func TestCountAboveLargeThreaded(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	n := 3*minPerWorker + 37
	if testing.Short() {
		n = minPerWorker + 5
	}
	theta, seed := makeData(rng, n, dataSpecial)
	ts := pickThresholds(rng, theta, seed, DistanceRel, MaxThresholds)
	want := refCounts(theta, seed, DistanceRel, ts)
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, threads := range []int{1, 2, 3, 4} {
			got := make([]int64, len(ts))
			CountAbove(got, ts, theta, seed, DistanceRel, threads)
			for j := range ts {
				if got[j] != want[j] {
					t.Fatalf("threads=%d: count above %v = %d, want %d", threads, ts[j], got[j], want[j])
				}
			}
		}
	})
}

func TestCountAbovePanics(t *testing.T) {
	mustPanic(t, "too many thresholds", func() {
		CountAbove(make([]int64, 10), make([]float32, 10), nil, nil, DistanceAbs, 1)
	})
	mustPanic(t, "short counts", func() {
		CountAbove(make([]int64, 1), make([]float32, 2), nil, nil, DistanceAbs, 1)
	})
	mustPanic(t, "length mismatch", func() {
		CountAbove(make([]int64, 1), make([]float32, 1), make([]float32, 3), make([]float32, 2), DistanceAbs, 1)
	})
	mustPanic(t, "bad distance", func() {
		CountAbove(nil, nil, nil, nil, Distance(9), 1)
	})
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Errorf("%s: no panic", what)
			return
		}
		if s, ok := r.(string); !ok || len(s) < 9 || s[:9] != "kernels: " {
			t.Errorf("%s: panic %v, want a constant \"kernels: ...\" message", what, r)
		}
	}()
	f()
}

func FuzzCountAbove(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x7f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, uint8(2), float32(0.5), float32(0))
	f.Fuzz(func(t *testing.T, raw []byte, dist uint8, q1, q2 float32) {
		theta, seed := fuzzFloats(raw)
		d := Distance(dist % 3)
		ts := []float32{q1, q2, 0, float32(math.Inf(1))}
		if len(theta) > 0 {
			ts = append(ts, refScore(theta[0], seed[0], d))
		}
		got := make([]int64, len(ts))
		CountAbove(got, ts, theta, seed, d, 1)
		want := make([]int64, len(ts))
		restore := SetMaxISA(Generic)
		CountAbove(want, ts, theta, seed, d, 1)
		restore()
		for j := range ts {
			if got[j] != want[j] {
				t.Fatalf("count above %v = %d, generic %d", ts[j], got[j], want[j])
			}
		}
	})
}

// TestStreamingKernelsDoNotAllocate checks the "no per-call allocation"
// promise of the streaming kernels, threaded or not, once warm.
func TestStreamingKernelsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so pooled tasks are reallocated")
	}
	rng := rand.New(rand.NewPCG(25, 26))
	n := 2*minPerWorker + 100
	theta, seed := makeData(rng, n, dataNormal)
	g, m, v := make([]float32, n), make([]float32, n), make([]float32, n)
	counts := make([]int64, 7)
	ts := []float32{1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4}
	h := adamwAt(update.AdamW{LR: 1e-6, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, 3)
	hs := sgdAt(update.SGD{LR: 1e-6, Momentum: 0.9}, 3)
	th := Threshold{Q: 1e-3, TieEnd: 17}
	idx := make([]int32, 0, n)
	for _, threads := range []int{1, 2} {
		for name, f := range map[string]func(){
			"CountAbove":     func() { CountAbove(counts, ts, theta, seed, DistanceInvRel, threads) },
			"AdamWStepCount": func() { AdamWStepCount(h, theta, g, m, v, seed, DistanceAbs, ts, counts, threads) },
			"SGDStepCount":   func() { SGDStepCount(hs, theta, g, m, seed, DistanceAbs, ts, counts, threads) },
			"MaskedUpdate":   func() { MaskedUpdate(theta, seed, DistanceRel, th, 0, threads) },
			"AppendSelected": func() { idx = AppendSelected(idx[:0], theta, seed, DistanceRel, th, 0) },
		} {
			f()
			if a := testing.AllocsPerRun(5, f); a > 0 {
				t.Errorf("%s threads=%d: %v allocations per call", name, threads, a)
			}
		}
	}
}
