package update

import (
	"fmt"
	"math"
	"slices"
)

// ReferenceSelect is the definition of one step's selection, in plain Go:
// theta holds every parameter's Θ̂ after the optimizer's step (entries the
// selection does not keep are set back to their seed in place), seeds
// their Θ0, and st the selection's state before the step, which it
// updates. It returns what the step reports. Backends keep the same
// entries, carry the same state and report the same outcome bit for bit
// given the same Θ̂ (HostStats aside).
//
// Per unit, in order:
//
//   - a fixed subset (st.Fixed): every entry outside it back to its seed;
//     nothing else (Selected is false);
//   - a normalized run: Δ·Scale of every entry, Algorithm 2 on them when
//     iterative and Ready (reported only), then the exact selection;
//   - K = 0, Exact, or not Ready: the exact selection;
//   - otherwise Algorithm 2 from Q, its candidates counted as GridRun
//     schedules: the first counted candidate with exactly K entries above
//     it is the threshold (Δ > it is kept), else the exact selection is,
//     and Fallback reports whether the band between the nearest counted
//     candidates exceeds BandCap.
//
// The exact selection keeps min(K, positive Δ) entries: every Δ above the
// K-th largest Q and, of those equal to it, the lowest positions (Q is
// +Inf for K = 0, -Inf when fewer than K Δ are numbers), but never a Δ of
// 0 (Keeps). The threshold used is carried when Usable. With PaperAlg2 the printed algorithm runs
// first on the same Δ from its own threshold (once it has one: the first
// exact selection's). With FixAfterFirst the subset is fixed after the
// step.
func ReferenceSelect(s *Selection, theta, seeds map[string][]float32, st *SelectionState) *SelectionResult {
	res := &SelectionResult{Selected: !st.Fixed, Units: make([]UnitResult, len(s.Units))}
	for i, u := range s.Units {
		ref := refUnit{s: s, u: u, theta: theta, seeds: seeds}
		ref.scores()
		r := &res.Units[i]
		r.Size, r.K = int64(len(ref.delta)), u.K
		prev := ref.kept(st)
		switch {
		case st.Fixed:
			ref.applyKept(prev)
			r.Kept = int64(len(prev))
			continue
		case s.Normalized:
			if !s.Exact && st.Ready[i] && u.K > 0 {
				var run GridRun
				r.Alg2, r.Alg2Count = true, ref.alg2(&run, st.Q[i])
			}
			ref.exact(r, st, i)
		case u.K == 0 || r.Size == 0 || s.Exact || !st.Ready[i]:
			ref.paper(r, st, i)
			ref.exact(r, st, i)
			if s.PaperAlg2 && !st.PaperReady[i] && Usable(r.Q) {
				st.PaperQ[i], st.PaperReady[i] = r.Q, true
			}
		default:
			var run GridRun
			count := ref.alg2(&run, st.Q[i])
			ref.paper(r, st, i)
			r.Alg2, r.Alg2Count = true, count
			if j, ok, lo, hi := run.Tightest(u.K); ok {
				ref.keepAbove(r, run.Grid[j])
			} else {
				countLo, countHi := r.Size, int64(0)
				if lo >= 0 {
					countLo = run.Counts[lo]
				}
				if hi >= 0 {
					countHi = run.Counts[hi]
				}
				r.Fallback = countLo-countHi > s.BandCap
				ref.exact(r, st, i)
			}
			if Usable(r.Q) {
				st.Q[i], st.Ready[i] = r.Q, true
			} else {
				st.Ready[i] = false
			}
		}
		kept := ref.keptPositions()
		r.Kept = 0
		for _, p := range u.Pieces {
			r.Kept += int64(len(kept[p.Param]))
			r.Entered += int64(len(kept[p.Param])) - common(kept[p.Param], st.Kept[p.Param])
			st.Kept[p.Param] = kept[p.Param]
		}
	}
	if s.Normalized {
		res.GroupKept = make([]int64, len(s.Groups))
		for _, p := range s.Units[0].Pieces {
			res.GroupKept[p.Group] += int64(len(st.Kept[p.Param]))
		}
	}
	if s.Fixed == FixAfterFirst {
		st.Fixed = true
	}
	return res
}

// refUnit is one unit's Δ during ReferenceSelect.
type refUnit struct {
	s            *Selection
	u            Unit
	theta, seeds map[string][]float32
	delta        []float32 // the unit's Δ end to end (scaled in a normalized run)
	keep         []bool    // after the selection
}

func (ref *refUnit) scores() {
	for _, p := range ref.u.Pieces {
		th, sd := ref.theta[p.Param], ref.seeds[p.Param]
		if len(th) != len(sd) {
			panic(fmt.Sprintf("update: ReferenceSelect: %q has %d values and %d seeds", p.Param, len(th), len(sd)))
		}
		for i := range th {
			d := ref.s.Distance.Score(th[i], sd[i])
			if ref.s.Normalized {
				d *= p.Scale
			}
			ref.delta = append(ref.delta, d)
		}
	}
	ref.keep = make([]bool, len(ref.delta))
}

// kept returns the unit's subset before the step as unit positions.
func (ref *refUnit) kept(st *SelectionState) []int64 {
	var out []int64
	off := int64(0)
	for _, p := range ref.u.Pieces {
		for _, pos := range st.Kept[p.Param] {
			out = append(out, off+int64(pos))
		}
		off += int64(len(ref.theta[p.Param]))
	}
	return out
}

// applyKept keeps exactly the given unit positions.
func (ref *refUnit) applyKept(kept []int64) {
	for _, pos := range kept {
		ref.keep[pos] = true
	}
	ref.reset()
}

// reset sets every entry not kept back to its seed.
func (ref *refUnit) reset() {
	off := 0
	for _, p := range ref.u.Pieces {
		th, sd := ref.theta[p.Param], ref.seeds[p.Param]
		for i := range th {
			if !ref.keep[off+i] {
				th[i] = sd[i]
			}
		}
		off += len(th)
	}
}

// keptPositions lists the kept positions per parameter.
func (ref *refUnit) keptPositions() map[string][]int32 {
	out := map[string][]int32{}
	off := 0
	for _, p := range ref.u.Pieces {
		kept := []int32{}
		for i := range ref.theta[p.Param] {
			if ref.keep[off+i] {
				kept = append(kept, int32(i))
			}
		}
		out[p.Param] = kept
		off += len(ref.theta[p.Param])
	}
	return out
}

// countAbove is #{Δ > q}.
func (ref *refUnit) countAbove(q float32) int64 {
	var n int64
	for _, d := range ref.delta {
		if d > q {
			n++
		}
	}
	return n
}

// alg2 runs Algorithm 2 from q with GridRun's counting schedule and
// returns its own count c̃.
func (ref *refUnit) alg2(run *GridRun, q float32) int64 {
	count := func(thresholds []float32, counts []int64) {
		for j, th := range thresholds {
			counts[j] += ref.countAbove(th)
		}
	}
	count(run.Start(ref.s.Bisection, q), run.PassCounts)
	run.Record()
	return run.Resolve(ref.u.K, count).Count
}

// paper runs the printed Algorithm 2 from its own threshold.
func (ref *refUnit) paper(r *UnitResult, st *SelectionState, i int) {
	if !ref.s.PaperAlg2 || !st.PaperReady[i] {
		return
	}
	var run GridRun
	count := func(thresholds []float32, counts []int64) {
		for j, th := range thresholds {
			counts[j] += ref.countAbove(th)
		}
	}
	count(run.Start(ref.s.Bisection, st.PaperQ[i]), run.PassCounts)
	run.Record()
	res := run.Resolve(ref.u.K, count)
	st.PaperQ[i] = res.Q // the printed algorithm moves even when its bracket missed
	r.Paper, r.PaperCount = true, res.Count
}

// keepAbove keeps Δ > q: an iterative step's counted candidate.
func (ref *refUnit) keepAbove(r *UnitResult, q float32) {
	for i, d := range ref.delta {
		ref.keep[i] = d > q
	}
	ref.reset()
	r.Q, r.HasQ = q, true
}

// exact makes the exact selection and, outside Algorithm 2's own steps,
// carries its threshold.
func (ref *refUnit) exact(r *UnitResult, st *SelectionState, i int) {
	q, tieEnd := ExactThreshold(ref.delta, ref.u.K)
	for j, d := range ref.delta {
		ref.keep[j] = Keeps(d, q, int64(j), tieEnd)
	}
	ref.reset()
	r.Q, r.HasQ, r.Exact = q, true, ref.u.K > 0 && r.Size > 0
	if Usable(q) {
		st.Q[i], st.Ready[i] = q, true
	} else {
		st.Ready[i] = false
	}
}

// Keeps is the selection's rule for the entry at unit position pos with
// score delta, given the threshold q and tie end of an exact selection:
// Δ > q, or Δ == q at a position before tieEnd — and never a Δ of 0 (nor
// a NaN). An entry whose Δ is 0 has not moved from its seed by this
// distance (unchanged, or a zero seed under inv-rel, whose Δ stays 0
// however far it moves): the paper's Δ > q keeps none of them, so a unit
// with fewer than K positive Δ keeps fewer than K entries rather than
// freeing zeros at the lowest positions.
func Keeps(delta, q float32, pos, tieEnd int64) bool {
	return delta > 0 && (delta > q || (delta == q && pos < tieEnd))
}

// PositiveThreshold returns a threshold and tie end that keep, under the
// plain rule Δ > Q || (Δ == Q && pos < tieEnd), exactly what Keeps keeps
// with q and tieEnd: for kernels that apply a threshold without the
// positivity test (Δ is never negative).
func PositiveThreshold(q float32, tieEnd int64) (float32, int64) {
	if q <= 0 {
		return 0, 0
	}
	return q, tieEnd
}

// ExactThreshold returns the exact selection of k entries of the scores
// delta: Q, the k-th largest (+Inf for k ≤ 0 or no scores, -Inf when fewer
// than k scores are numbers), and tieEnd such that
//
//	delta[i] > Q || (delta[i] == Q && i < tieEnd)
//
// keeps the k largest, ties at the lowest positions, never a NaN. It
// sorts, for reference; backends select faster.
func ExactThreshold(delta []float32, k int64) (q float32, tieEnd int64) {
	n := int64(len(delta))
	if k <= 0 || n == 0 {
		return float32(math.Inf(1)), 0
	}
	order := make([]int64, n)
	for i := range order {
		order[i] = int64(i)
	}
	// Largest first; a NaN below every number; equal scores in position
	// order (-0 equals +0).
	rank := func(x float32) float64 {
		if x != x {
			return math.Inf(-1)
		}
		return float64(x)
	}
	slices.SortStableFunc(order, func(a, b int64) int {
		ra, rb := rank(delta[a]), rank(delta[b])
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	kth := order[min(k, n)-1]
	if delta[kth] != delta[kth] {
		return float32(math.Inf(-1)), 0
	}
	return delta[kth], kth + 1
}

// common counts the values two ascending lists share.
func common(a, b []int32) int64 {
	var n int64
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			n++
			i++
			j++
		}
	}
	return n
}
