package kernels

import (
	"github.com/dstune/dstune/update"

	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomThreshold picks a threshold whose Q ties with some scores and whose
// TieEnd falls inside, before or after the piece.
func randomThreshold(rng *rand.Rand, theta, seed []float32, d Distance, offset int64) Threshold {
	th := Threshold{Q: float32(rng.NormFloat64() * 1e-3)}
	if len(theta) > 0 && rng.IntN(4) != 0 {
		i := rng.IntN(len(theta))
		th.Q = refScore(theta[i], seed[i], d)
	}
	switch rng.IntN(4) {
	case 0:
		th.TieEnd = keepAll
	case 1:
		th.TieEnd = 0
	default:
		th.TieEnd = offset + int64(rng.IntN(len(theta)+2))
	}
	return th
}

func refMasked(theta, seed []float32, d Distance, th Threshold, offset int64) (out []float32, idx []int32) {
	out = slices.Clone(theta)
	for i := range theta {
		if th.Keep(refScore(theta[i], seed[i], d), offset+int64(i)) {
			idx = append(idx, int32(i))
		} else {
			out[i] = seed[i]
		}
	}
	return out, idx
}

func TestMaskedUpdateMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, kind := range dataKinds {
			for _, n := range sizes(t) {
				theta0, seed := makeData(rng, n, kind)
				for _, d := range allDistances {
					offset := int64(rng.IntN(1000))
					th := randomThreshold(rng, theta0, seed, d, offset)
					want, wantIdx := refMasked(theta0, seed, d, th, offset)

					theta, check := guarded(t, theta0)
					kept := MaskedUpdate(theta, seed, d, th, offset, 1+rng.IntN(3))
					check()
					if kept != int64(len(wantIdx)) {
						t.Fatalf("%v n=%d %v %+v: kept %d, want %d", kind, n, d, th, kept, len(wantIdx))
					}
					for i := range want {
						if !sameBits(theta[i], want[i]) {
							t.Fatalf("%v n=%d %v %+v: theta[%d] = %v, want %v", kind, n, d, th, i, theta[i], want[i])
						}
					}

					prefix := []int32{-5}
					sel := AppendSelected(prefix, theta0, seed, d, th, offset)
					if !slices.Equal(sel[1:], wantIdx) || sel[0] != -5 {
						t.Fatalf("%v n=%d %v %+v: AppendSelected = %v, want %v", kind, n, d, th, sel[1:], wantIdx)
					}

					theta, check = guarded(t, theta0)
					got := MaskedUpdateAppend(nil, theta, seed, d, th, offset)
					check()
					if !slices.Equal(got, wantIdx) {
						t.Fatalf("%v n=%d %v %+v: MaskedUpdateAppend indices = %v, want %v", kind, n, d, th, got, wantIdx)
					}
					for i := range want {
						if !sameBits(theta[i], want[i]) {
							t.Fatalf("%v n=%d %v: MaskedUpdateAppend theta[%d] = %v, want %v", kind, n, d, i, theta[i], want[i])
						}
					}
				}
			}
		}
	})
}

// TestSelectThenMask runs what a DST step does with an exact threshold on
// a silo of several pieces: select k, apply it piece by piece, and check
// that exactly k entries kept their new value, and that they are the ones
// the selection's indices name.
func TestSelectThenMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	var sel Selector
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, kind := range dataKinds {
			theta, seed := makeData(rng, 90_000, kind)
			pieces := splitPieces(rng, theta, seed, 4)
			k := int64(rng.IntN(len(theta) / 4))
			th, kept := sel.TopK(k, DistanceInvRel, pieces, 2)
			var total int64
			var offset int64
			for _, p := range pieces {
				idx := AppendSelected(nil, p.Theta, p.Seed, DistanceInvRel, th, offset)
				before := slices.Clone(p.Theta)
				got := MaskedUpdate(p.Theta, p.Seed, DistanceInvRel, th, offset, 2)
				if got != int64(len(idx)) {
					t.Fatalf("%v: piece kept %d, selected indices %d", kind, got, len(idx))
				}
				j := 0
				for i := range p.Theta {
					if j < len(idx) && int(idx[j]) == i {
						j++
						if !sameBits(p.Theta[i], before[i]) {
							t.Fatalf("%v: selected entry %d changed", kind, i)
						}
					} else if !sameBits(p.Theta[i], p.Seed[i]) {
						t.Fatalf("%v: unselected entry %d not reset", kind, i)
					}
				}
				total += got
				offset += int64(len(p.Theta))
			}
			if total != kept {
				t.Fatalf("%v: masked update kept %d, selection %d (k=%d)", kind, total, kept, k)
			}
		}
	})
}

func FuzzMaskedUpdate(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x7f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, uint8(1), float32(0), int64(3))
	f.Fuzz(func(t *testing.T, raw []byte, dist uint8, q float32, tieEnd int64) {
		theta, seed := fuzzFloats(raw)
		d := Distance(dist % 3)
		th := Threshold{Q: q, TieEnd: tieEnd}
		a, b := slices.Clone(theta), slices.Clone(theta)
		ka := MaskedUpdate(a, seed, d, th, 0, 1)
		ia := AppendSelected(nil, theta, seed, d, th, 0)
		restore := SetMaxISA(Generic)
		kb := MaskedUpdate(b, seed, d, th, 0, 1)
		ib := AppendSelected(nil, theta, seed, d, th, 0)
		restore()
		if ka != kb || !slices.Equal(ia, ib) {
			t.Fatalf("kept %d / %v, generic %d / %v", ka, ia, kb, ib)
		}
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("theta[%d] = %v, generic %v", i, a[i], b[i])
			}
		}
	})
}

// TestMaskedUpdateThreaded splits a large piece across workers with the
// tie cut falling inside one worker's range: results must equal the
// single-goroutine reference.
func TestMaskedUpdateThreaded(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	n := 3*minPerWorker + 77
	theta0, seed := makeData(rng, n, dataTies)
	th := Threshold{Q: refScore(theta0[5], seed[5], DistanceAbs), TieEnd: 1000 + int64(n/2)}
	want, wantIdx := refMasked(theta0, seed, DistanceAbs, th, 1000)
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, threads := range []int{2, 3} {
			theta := slices.Clone(theta0)
			if kept := MaskedUpdate(theta, seed, DistanceAbs, th, 1000, threads); kept != int64(len(wantIdx)) {
				t.Fatalf("threads=%d: kept %d, want %d", threads, kept, len(wantIdx))
			}
			checkBits(t, "theta", theta, want)
		}
	})
}

// TestIterativeStep composes the kernels as one iterative DST step does:
// the AdamW step counts Δ against Algorithm 2's candidate thresholds, and
// a masked update with any of those thresholds (no ties kept) keeps
// exactly the count that threshold got.
func TestIterativeStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	n := 2*minPerWorker + 1234
	seed, _ := makeData(rng, n, dataNormal)
	g := make([]float32, n)
	for i := range g {
		g[i] = float32(rng.NormFloat64() * 1e-2)
	}
	forISAs(t, func(t *testing.T, isa ISA) {
		// Mid-training state, so that the step sizes spread.
		p, m, v := slices.Clone(seed), make([]float32, n), make([]float32, n)
		for i := range m {
			m[i] = float32(rng.NormFloat64() * 1e-2)
			v[i] = float32(rng.Float64() * 1e-3)
		}
		h := adamwAt(update.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}, 50)
		q := float32(5e-4)
		ts := []float32{q / 2, q * 3 / 4, q, q * 5 / 4, q * 3 / 2, q * 7 / 4, 2 * q}
		counts := make([]int64, len(ts))
		AdamWStepCount(h, p, g, m, v, seed, DistanceAbs, ts, counts, 2)
		if counts[0] == 0 || counts[0] == int64(n) || counts[0] == counts[len(ts)-1] {
			t.Fatalf("counts %v do not split the data: the test would prove nothing", counts)
		}
		for j, qj := range ts {
			theta := slices.Clone(p)
			if kept := MaskedUpdate(theta, seed, DistanceAbs, Threshold{Q: qj}, 0, 2); kept != counts[j] {
				t.Fatalf("threshold %v: masked update kept %d, the fused count said %d", qj, kept, counts[j])
			}
		}
	})
}
