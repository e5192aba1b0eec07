package update

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestExactThresholdKeepsTheTopK checks the exact selection's rule by
// brute force on scores with ties, NaNs and infinities: min(k, numbers)
// entries kept, none below an unkept one, ties at the lowest positions.
func TestExactThresholdKeepsTheTopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for trial := range 2000 {
		n := rng.IntN(40)
		d := make([]float32, n)
		numbers := 0
		for i := range d {
			switch rng.IntN(8) {
			case 0:
				d[i] = nan
			case 1:
				d[i] = inf
			default:
				d[i] = float32(rng.IntN(5)) / 2
			}
			if d[i] == d[i] {
				numbers++
			}
		}
		k := int64(rng.IntN(n + 2))
		q, tieEnd := ExactThreshold(d, k)
		var kept []int
		for i, x := range d {
			if x > q || (x == q && int64(i) < tieEnd) {
				kept = append(kept, i)
			}
		}
		if want := min(int(max(k, 0)), numbers); len(kept) != want {
			t.Fatalf("trial %d: %v k=%d: kept %d, want %d", trial, d, k, len(kept), want)
		}
		for i, x := range d {
			if slices.Contains(kept, i) || x != x {
				continue
			}
			for _, j := range kept {
				if d[j] < x || (d[j] == x && j > i) {
					t.Fatalf("trial %d: %v k=%d: %d (%g) kept over %d (%g)", trial, d, k, j, d[j], i, x)
				}
			}
		}
	}
}

// units splits n parameters of random sizes into silos.
func randomSelection(rng *rand.Rand, exact bool, fixing Fixing) (*Selection, map[string][]float32, map[string]int) {
	s := &Selection{Distance: Distance(rng.IntN(3)), Exact: exact, Bisection: Bisection{Steps: 1 + rng.IntN(5), Factor: 1.5 + 2*rng.Float32()},
		BandCap: int64(1 + rng.IntN(40)), Fixed: fixing}
	seeds := map[string][]float32{}
	sizes := map[string]int{}
	for u := range 1 + rng.IntN(3) {
		unit := Unit{Name: string(rune('a' + u))}
		size := 0
		for p := range 1 + rng.IntN(3) {
			name := unit.Name + string(rune('0'+p))
			n := rng.IntN(60)
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
				if rng.IntN(10) == 0 {
					v[i] = 0
				}
			}
			seeds[name], sizes[name] = v, n
			unit.Pieces = append(unit.Pieces, Piece{Param: name})
			size += n
		}
		unit.K = int64(rng.IntN(size + 1))
		s.Units = append(s.Units, unit)
	}
	return s, seeds, sizes
}

// TestReferenceSelectModesAgree: iterative and exact selections keep the
// same entries step after step (only thresholds and reports differ), every
// unit keeps min(K, numbers), and a fixed subset stays.
func TestReferenceSelectModesAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 200 {
		seedRNG := rng.Uint64()
		fixing := Fixing(rng.IntN(2))
		iter, seeds, sizes := randomSelection(rand.New(rand.NewPCG(seedRNG, 1)), false, fixing)
		exact, _, _ := randomSelection(rand.New(rand.NewPCG(seedRNG, 1)), true, fixing)
		if err := iter.Check(sizes); err != nil {
			t.Fatal(err)
		}
		thetaI, thetaE := map[string][]float32{}, map[string][]float32{}
		for name, v := range seeds {
			thetaI[name], thetaE[name] = slices.Clone(v), slices.Clone(v)
		}
		stI, stE := NewSelectionState(iter), NewSelectionState(exact)
		walk := rand.New(rand.NewPCG(seedRNG, 2))
		for step := 1; step <= 8; step++ {
			for name := range thetaI {
				for i := range thetaI[name] {
					d := float32(walk.NormFloat64() * 0.01)
					thetaI[name][i] += d
					thetaE[name][i] += d
				}
			}
			ri := ReferenceSelect(iter, thetaI, seeds, stI)
			re := ReferenceSelect(exact, thetaE, seeds, stE)
			for name := range thetaI {
				if !slices.Equal(thetaI[name], thetaE[name]) || !slices.Equal(stI.Kept[name], stE.Kept[name]) {
					t.Fatalf("trial %d step %d: %s differs between the modes", trial, step, name)
				}
			}
			for u, r := range ri.Units {
				if r.Kept != re.Units[u].Kept || r.Kept > r.K {
					t.Fatalf("trial %d step %d unit %d: kept %d and %d of K = %d", trial, step, u, r.Kept, re.Units[u].Kept, r.K)
				}
				if fixing == FixAfterFirst && step > 1 && (ri.Selected || r.Entered != 0) {
					t.Fatalf("trial %d step %d: a fixed subset changed", trial, step)
				}
			}
		}
	}
}

// TestPaperAlg2 checks the diagnostic: each unit's printed-Algorithm-2
// count is what the algorithm as printed (alg2_test.go's sequential
// algorithm2), carrying its own threshold from the first step's exact
// one, keeps of that step's Δ before the selection.
func TestPaperAlg2(t *testing.T) {
	for _, m := range []int{3, 5} {
		rng := rand.New(rand.NewPCG(41, uint64(m)))
		seeds := map[string][]float32{"a": randomFloats(rng, 2400), "b": randomFloats(rng, 300)}
		s := &Selection{Distance: DistanceInvRel, Bisection: Bisection{Steps: m, Factor: 2}, BandCap: 1 << 16, PaperAlg2: true,
			Units: []Unit{{Name: "a", Pieces: []Piece{{Param: "a"}}, K: 120}, {Name: "b", Pieces: []Piece{{Param: "b"}}, K: 15}}}
		theta := map[string][]float32{"a": slices.Clone(seeds["a"]), "b": slices.Clone(seeds["b"])}
		st := NewSelectionState(s)
		prev := make([]float32, 2)
		for step := 1; step <= 30; step++ {
			deltas := make([][]float32, 2)
			for i, name := range []string{"a", "b"} {
				for j := range theta[name] {
					theta[name][j] += float32(rng.NormFloat64() * 1e-3)
				}
				for j, v := range theta[name] {
					deltas[i] = append(deltas[i], s.Distance.Score(v, seeds[name][j]))
				}
			}
			res := ReferenceSelect(s, theta, seeds, st)
			for i, u := range s.Units {
				delta := deltas[i]
				r := res.Units[i]
				if step == 1 {
					if r.Paper {
						t.Fatal("the printed algorithm ran without a warm start")
					}
					prev[i], _ = ExactThreshold(delta, u.K)
					continue
				}
				q := algorithm2(prev[i], m, 2, u.K, func(q float32) int64 { return countAbove(delta, q) })
				prev[i] = q
				if !r.Paper || r.PaperCount != countAbove(delta, q) {
					t.Fatalf("m=%d step %d unit %d: paper count %d (reported %v), printed algorithm %d", m, step, i, r.PaperCount, r.Paper, countAbove(delta, q))
				}
			}
		}
	}
}

func randomFloats(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.05)
	}
	return v
}

// TestZeroDistanceNeverKept: an entry whose Δ is 0 — a zero seed under
// inv-rel, whose Δ stays 0 however it moves, or an entry that did not
// move — is never kept, in either threshold mode, so a unit with fewer
// than K positive Δ keeps fewer than K entries (and reports how many);
// a unit with enough positive Δ still keeps exactly K.
func TestZeroDistanceNeverKept(t *testing.T) {
	for _, exact := range []bool{true, false} {
		rng := rand.New(rand.NewPCG(17, 18))
		seeds := map[string][]float32{"zeros": randomFloats(rng, 200), "plenty": randomFloats(rng, 200)}
		for i := range 150 {
			seeds["zeros"][i] = 0 // 150 zero seeds: at most 50 positive Δ
		}
		s := &Selection{Distance: DistanceInvRel, Exact: exact, Bisection: DefaultBisection, BandCap: 1 << 16,
			Units: []Unit{{Name: "zeros", Pieces: []Piece{{Param: "zeros"}}, K: 80}, {Name: "plenty", Pieces: []Piece{{Param: "plenty"}}, K: 80}}}
		theta := map[string][]float32{"zeros": slices.Clone(seeds["zeros"]), "plenty": slices.Clone(seeds["plenty"])}
		st := NewSelectionState(s)
		for step := 1; step <= 10; step++ {
			for _, name := range []string{"zeros", "plenty"} {
				for i := range theta[name] {
					if i%7 != 3 { // every 7th entry never moves: Δ = 0
						theta[name][i] += float32(rng.NormFloat64() * 1e-2)
					}
				}
			}
			positive := map[string]int64{}
			for name, v := range theta {
				for i, x := range v {
					if s.Distance.Score(x, seeds[name][i]) > 0 {
						positive[name]++
					}
				}
			}
			res := ReferenceSelect(s, theta, seeds, st)
			for u, unit := range s.Units {
				name := unit.Name
				r := res.Units[u]
				if want := min(unit.K, positive[name]); r.Kept != want {
					t.Fatalf("exact=%v step %d: unit %s kept %d, want %d (K %d, %d positive Δ)", exact, step, name, r.Kept, want, unit.K, positive[name])
				}
				for _, pos := range st.Kept[name] {
					if s.Distance.Score(theta[name][pos], seeds[name][pos]) <= 0 {
						t.Fatalf("exact=%v step %d: unit %s keeps position %d, whose Δ is 0", exact, step, name, pos)
					}
				}
				for i, x := range theta[name] {
					if !slices.Contains(st.Kept[name], int32(i)) && x != seeds[name][i] {
						t.Fatalf("exact=%v step %d: unit %s position %d is not kept but moved", exact, step, name, i)
					}
				}
			}
			if res.Units[0].Kept >= s.Units[0].K || res.Units[1].Kept != s.Units[1].K {
				t.Fatalf("exact=%v step %d: kept %d and %d, want fewer than K in the zero-seed unit and K in the other", exact, step, res.Units[0].Kept, res.Units[1].Kept)
			}
		}
	}
}

// TestKeepsMatchesPositiveThreshold: the threshold PositiveThreshold
// gives keeps, under the plain rule, exactly what Keeps keeps.
func TestKeepsMatchesPositiveThreshold(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	values := []float32{0, float32(math.Copysign(0, -1)), 1e-30, 0.5, 1, inf, nan}
	for _, q := range append(slices.Clone(values), float32(math.Inf(-1))) {
		for _, tieEnd := range []int64{0, 2, 5} {
			pq, pt := PositiveThreshold(q, tieEnd)
			for pos := range int64(6) {
				for _, d := range values {
					plain := d > pq || (d == pq && pos < pt)
					if got := Keeps(d, q, pos, tieEnd); got != plain {
						t.Fatalf("q %v tieEnd %d: Δ %v at %d: Keeps %v, plain rule on (%v, %d) %v", q, tieEnd, d, pos, got, pq, pt, plain)
					}
				}
			}
		}
	}
}
