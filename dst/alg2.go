package dst

import "github.com/dstune/dstune/kernels"

// gridRun is one step of Algorithm 2 for one silo when counting passes
// measure at most kernels.MaxThresholds thresholds at a time: the first
// pass (fused with the optimizer step) counts the grid points the first
// three bisection levels can visit, and every further three levels (m > 3)
// cost one more counting pass over the silo. The result is exactly
// Bisection.Resolve's on the full grid's counts.
type gridRun struct {
	b      Bisection
	grid   []float32 // Candidates(q'): 2^m+1 thresholds, ascending
	counts []int64   // #{Δ > grid[j]}, or -1 where not counted yet

	pick       []int     // scratch: grid indices of one pass
	thresholds []float32 // scratch: their thresholds
	passCounts []int64   // scratch: their counts
}

// start prepares a run from the previous threshold and returns the
// thresholds of the first counting pass (owned by the run).
func (r *gridRun) start(b Bisection, prev float32) []float32 {
	r.b = b
	r.grid = b.Candidates(prev, r.grid)
	if cap(r.counts) < len(r.grid) {
		r.counts = make([]int64, len(r.grid))
	}
	r.counts = r.counts[:len(r.grid)]
	for i := range r.counts {
		r.counts[i] = -1
	}
	return r.passThresholds(0, len(r.grid)-1)
}

// passThresholds picks the up to MaxThresholds grid points one pass
// counts inside [lo, hi] (grid indices): both ends and the points between
// at an even stride, which the next bisection levels visit.
func (r *gridRun) passThresholds(lo, hi int) []float32 {
	stride := max(1, (hi-lo)/(kernels.MaxThresholds-1))
	r.pick, r.thresholds = r.pick[:0], r.thresholds[:0]
	for j := lo; j <= hi; j += stride {
		r.pick = append(r.pick, j)
		r.thresholds = append(r.thresholds, r.grid[j])
	}
	if cap(r.passCounts) < len(r.pick) {
		r.passCounts = make([]int64, kernels.MaxThresholds)
	}
	r.passCounts = r.passCounts[:len(r.pick)]
	clear(r.passCounts)
	return r.thresholds
}

// record stores the counts of the pass passThresholds last planned
// (r.passCounts, filled by the caller's counting).
func (r *gridRun) record() {
	for i, j := range r.pick {
		r.counts[j] = r.passCounts[i]
	}
}

// resolve runs the bisection for target k; more(thresholds, counts) must
// add to counts[i] the number of entries with Δ > thresholds[i] (one
// counting pass), and is called only when m > 3 levels need it.
func (r *gridRun) resolve(k int64, more func(thresholds []float32, counts []int64)) Resolution {
	n := len(r.grid) - 1
	lo, hi := 0, n
	mid := n / 2
	for range r.b.Steps {
		if r.counts[mid] < 0 {
			more(r.passThresholds(lo, hi), r.passCounts)
			r.record()
		}
		if r.counts[mid] > k {
			lo = mid
		} else {
			hi = mid
		}
		mid = (lo + hi) / 2
	}
	pick := hi
	if absDiff(r.counts[lo], k) < absDiff(r.counts[hi], k) {
		pick = lo
	}
	return Resolution{
		Q:             r.grid[pick],
		Count:         r.counts[pick],
		BracketMissed: r.counts[0] < k || r.counts[n] > k,
	}
}

// tightest returns, among the grid points counted, the ones closest to
// the target from either side: exact is a grid point with exactly k
// entries above it (ok set), else lo is the highest with more than k
// (-1: none) and hi the lowest with fewer (-1: none).
func (r *gridRun) tightest(k int64) (exact int, ok bool, lo, hi int) {
	lo, hi = -1, -1
	for j, c := range r.counts {
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
