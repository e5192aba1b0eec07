package update

import (
	"fmt"
	"math"
)

// Bisection is the paper's Algorithm 2 (Appendix C) with its m refinement
// steps and fluctuation factor r, rearranged so that a single counting
// pass over Δ suffices.
//
// Algorithm 2 brackets the new threshold by [q'/r, r·q'] around the
// previous one q', then m times counts c(Δ, q_mi) = #{Δ_i > q_mi},
// moves q_lo up to q_mi if the count exceeds the target (else q_hi down to
// q_mi), and sets q_mi to the midpoint (q_lo+q_hi)/2 (the printed
// algorithm's "(q_hi−q_lo)/2" is a typo). It returns whichever of q_lo,
// q_hi has a count closer to the target, q_hi on a tie.
//
// Every threshold it can visit lies on a fixed grid of 2^m+1 points
// determined by q', r and m alone, so a kernel can count Δ above all of
// them in one pass (Candidates), and Resolve then replays the algorithm
// from those counts, with the same result as running it sequentially.
type Bisection struct {
	Steps  int     // m ≥ 1, refinement steps
	Factor float32 // r > 1, the largest factor the threshold may move by in one step
}

// DefaultBisection is the paper's setting, m = 3 and r = 2.
var DefaultBisection = Bisection{Steps: 3, Factor: 2}

// MaxBisectionSteps keeps the grid (2^m+1 counts per pass) small.
const MaxBisectionSteps = 16

// Validate reports whether m and r are usable.
func (b Bisection) Validate() error {
	if b.Steps < 1 || b.Steps > MaxBisectionSteps {
		return fmt.Errorf("threshold refinement steps m = %d, want 1 to %d", b.Steps, MaxBisectionSteps)
	}
	if !(b.Factor > 1) || math.IsInf(float64(b.Factor), 0) {
		return fmt.Errorf("threshold fluctuation factor r = %g, want a finite number > 1", b.Factor)
	}
	return nil
}

// NumCandidates is 2^m+1, the number of thresholds Candidates returns.
func (b Bisection) NumCandidates() int { return 1<<b.Steps + 1 }

// midpoint is (lo+hi)/2 rounded once to float32 (the float64 sum of two
// float32 values is exact, so this is the correctly rounded midpoint and
// cannot overflow).
func midpoint(lo, hi float32) float32 {
	return float32((float64(lo) + float64(hi)) / 2)
}

// bracket is Algorithm 2's initial [q'/r, r·q'], each end rounded once to
// float32.
func (b Bisection) bracket(prev float32) (lo, hi float32) {
	return float32(float64(prev) / float64(b.Factor)), float32(float64(prev) * float64(b.Factor))
}

// Candidates appends to dst[:0] (allocating when it is too small) the
// 2^m+1 thresholds Algorithm 2 may count against, starting from the
// previous threshold prev, in ascending order:
//
//	c[0] = prev/r,  c[2^(m−1)] = prev,  c[2^m] = r·prev,
//	c[(a+b)/2] = (c[a]+c[b])/2 for every sub-interval [a, b] the bisection can reach
//
// i.e. each half of the bracket is split into 2^(m−1) equal parts
// (computed by repeated midpoints exactly as the sequential algorithm
// computes them). The two ends are included because the final choice and
// the bracket-miss test need their counts. prev must be finite and ≥ 0
// (prev = 0 gives all zeros).
func (b Bisection) Candidates(prev float32, dst []float32) []float32 {
	if err := b.Validate(); err != nil {
		panic("update: invalid Bisection parameters")
	}
	if !Usable(prev) {
		panic("update: previous threshold must be finite and non-negative")
	}
	n := b.NumCandidates()
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	c := dst[:n]
	top := n - 1
	c[0], c[top] = b.bracket(prev)
	c[top/2] = prev
	for span := top / 2; span >= 2; span /= 2 {
		for a := 0; a < top; a += span {
			c[a+span/2] = midpoint(c[a], c[a+span])
		}
	}
	return c
}

// Usable reports whether Algorithm 2 can start from threshold q: q is
// finite and ≥ 0. A step carries the threshold it used to the next one
// only when it is usable; otherwise the next step selects exactly.
func Usable(q float32) bool { return q >= 0 && !math.IsInf(float64(q), 0) }

// Resolution is the outcome of one Algorithm 2 run.
type Resolution struct {
	// Q is the threshold chosen (q_lo or q_hi of the final bracket).
	Q float32
	// Count is #{Δ_i > Q}, the entries Q keeps free.
	Count int64
	// BracketMissed is set when the target lies outside [prev/r, r·prev]:
	// more than k entries exceed r·prev, or fewer than k exceed prev/r.
	BracketMissed bool
}

// Resolve runs Algorithm 2 on the counts of one pass: counts[j] must be
// #{Δ_i > cands[j]} for the thresholds cands = Candidates(prev, …), and k
// the target count. Comparing counts with k is the paper's comparison of
// the fraction c(Δ, q) with ε, in whole entries. The result is exactly
// what the sequential algorithm returns given the same counting function.
func (b Bisection) Resolve(cands []float32, counts []int64, k int64) Resolution {
	n := b.NumCandidates()
	if len(cands) != n || len(counts) != n {
		panic("update: Resolve needs NumCandidates() thresholds and counts")
	}
	lo, hi := 0, n-1
	mid := hi / 2
	for range b.Steps {
		if counts[mid] > k {
			lo = mid
		} else {
			hi = mid
		}
		mid = (lo + hi) / 2
	}
	pick := hi
	if absDiff(counts[lo], k) < absDiff(counts[hi], k) {
		pick = lo
	}
	return Resolution{
		Q:             cands[pick],
		Count:         counts[pick],
		BracketMissed: counts[0] < k || counts[n-1] > k,
	}
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// ThresholdsPerPass is how many thresholds one counting pass counts Δ
// against (the CPU's fused kernels count 9 at a time). Algorithm 2's
// first pass counts 9 points of the grid at an even stride (all of it for
// m ≤ 3), and a bisection step whose midpoint was not counted yet counts
// its bracket in one more pass: GridRun. Which grid points were counted
// decides which threshold an iterative step uses (Selection), so the
// schedule is part of the definition, not only of the CPU's speed.
const ThresholdsPerPass = 9

// GridRun is one step of Algorithm 2 for one unit when counting passes
// count at most ThresholdsPerPass thresholds at a time. Its Resolve is
// exactly Bisection.Resolve's on the full grid's counts; Counts records
// which grid points were counted.
type GridRun struct {
	b      Bisection
	Grid   []float32 // Candidates(q'): 2^m+1 thresholds, ascending
	Counts []int64   // #{Δ > Grid[j]}, or -1 where not counted

	pick       []int     // grid indices of the pass planned last
	thresholds []float32 // their thresholds
	// PassCounts receives the counts of the pass planned last: the
	// caller's counting adds to it, then calls Record.
	PassCounts []int64
}

// Start prepares a run from the previous threshold and returns the
// thresholds of the first counting pass (owned by the run; count into
// PassCounts, then Record).
func (r *GridRun) Start(b Bisection, prev float32) []float32 {
	r.b = b
	r.Grid = b.Candidates(prev, r.Grid)
	if cap(r.Counts) < len(r.Grid) {
		r.Counts = make([]int64, len(r.Grid))
	}
	r.Counts = r.Counts[:len(r.Grid)]
	for i := range r.Counts {
		r.Counts[i] = -1
	}
	return r.passThresholds(0, len(r.Grid)-1)
}

// passThresholds picks the up to ThresholdsPerPass grid points one pass
// counts inside [lo, hi] (grid indices): both ends and the points between
// at an even stride, which the next bisection levels visit.
func (r *GridRun) passThresholds(lo, hi int) []float32 {
	stride := PassStride(lo, hi)
	r.pick, r.thresholds = r.pick[:0], r.thresholds[:0]
	for j := lo; j <= hi; j += stride {
		r.pick = append(r.pick, j)
		r.thresholds = append(r.thresholds, r.Grid[j])
	}
	if cap(r.PassCounts) < len(r.pick) {
		r.PassCounts = make([]int64, ThresholdsPerPass)
	}
	r.PassCounts = r.PassCounts[:len(r.pick)]
	clear(r.PassCounts)
	return r.thresholds
}

// PassStride is the stride at which a counting pass over the grid points
// lo…hi picks them (both ends included).
func PassStride(lo, hi int) int { return max(1, (hi-lo)/(ThresholdsPerPass-1)) }

// Record stores the counts of the pass planned last (PassCounts).
func (r *GridRun) Record() {
	for i, j := range r.pick {
		r.Counts[j] = r.PassCounts[i]
	}
}

// Resolve runs the bisection for target k; more(thresholds, counts) must
// add to counts[i] the number of entries with Δ > thresholds[i] (one
// counting pass), and is called only when m > 3 levels need it.
func (r *GridRun) Resolve(k int64, more func(thresholds []float32, counts []int64)) Resolution {
	n := len(r.Grid) - 1
	lo, hi := 0, n
	mid := n / 2
	for range r.b.Steps {
		if r.Counts[mid] < 0 {
			more(r.passThresholds(lo, hi), r.PassCounts)
			r.Record()
		}
		if r.Counts[mid] > k {
			lo = mid
		} else {
			hi = mid
		}
		mid = (lo + hi) / 2
	}
	pick := hi
	if absDiff(r.Counts[lo], k) < absDiff(r.Counts[hi], k) {
		pick = lo
	}
	return Resolution{
		Q:             r.Grid[pick],
		Count:         r.Counts[pick],
		BracketMissed: r.Counts[0] < k || r.Counts[n] > k,
	}
}

// Tightest returns, among the grid points counted, the ones closest to
// the target from either side: exact is the first with exactly k entries
// above it (ok set), else lo is the highest with more than k (-1: none)
// and hi the lowest with fewer (-1: none).
func (r *GridRun) Tightest(k int64) (exact int, ok bool, lo, hi int) {
	lo, hi = -1, -1
	for j, c := range r.Counts {
		switch {
		case c < 0:
		case c == k:
			return j, true, -1, -1
		case c > k:
			lo = j
		case hi < 0:
			hi = j
		}
	}
	return -1, false, lo, hi
}
