package dst

import (
	"fmt"
	"math"
)

// SubsetSize is the number of entries k a silo of n parameters keeps free
// at fraction eps: k = round(eps·n), rounding halves away from zero, but at
// least 1 when eps > 0 (a silo never freezes entirely because it is small)
// and at most n. eps = 0 gives 0. eps must be in [0, 1] and n ≥ 0.
func SubsetSize(eps float64, n int64) int64 {
	if !(eps >= 0 && eps <= 1) || n < 0 {
		panic("dst: SubsetSize needs 0 ≤ eps ≤ 1 and n ≥ 0")
	}
	if eps == 0 || n == 0 {
		return 0
	}
	k := int64(math.Round(eps * float64(n)))
	return min(max(k, 1), n)
}

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

// maxBisectionSteps keeps the grid (2^m+1 counts per pass) small.
const maxBisectionSteps = 16

// Validate reports whether m and r are usable.
func (b Bisection) Validate() error {
	if b.Steps < 1 || b.Steps > maxBisectionSteps {
		return fmt.Errorf("threshold refinement steps m = %d, want 1 to %d", b.Steps, maxBisectionSteps)
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
		panic("dst: invalid Bisection parameters")
	}
	if !(prev >= 0) || math.IsInf(float64(prev), 0) {
		panic("dst: previous threshold must be finite and non-negative")
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

// Resolution is the outcome of one Algorithm 2 run.
type Resolution struct {
	// Q is the threshold chosen (q_lo or q_hi of the final bracket).
	Q float32
	// Count is #{Δ_i > Q}, the entries Q keeps free.
	Count int64
	// BracketMissed is set when the target lies outside [prev/r, r·prev]:
	// more than k entries exceed r·prev, or fewer than k exceed prev/r.
	// Q is then an end of the bracket and the caller should fall back to
	// an exact selection.
	BracketMissed bool
}

// Resolve runs Algorithm 2 on the counts of one pass: counts[j] must be
// #{Δ_i > cands[j]} for the thresholds cands = Candidates(prev, …), and k
// the target count (SubsetSize(ε, |S|)). Comparing counts with k is the
// paper's comparison of the fraction c(Δ, q) with ε, in whole entries.
// The result is exactly what the sequential algorithm returns given the
// same counting function.
func (b Bisection) Resolve(cands []float32, counts []int64, k int64) Resolution {
	n := b.NumCandidates()
	if len(cands) != n || len(counts) != n {
		panic("dst: Resolve needs NumCandidates() thresholds and counts")
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

// ThresholdTracker follows one silo's threshold from step to step with
// Algorithm 2. Its state (Q, Ready) is what a checkpoint saves.
//
// Each step: Candidates gives the thresholds to count Δ against in one
// pass; Update takes the counts and k and moves Q. Before the first step,
// and whenever Update reports BracketMissed, the caller selects the exact
// threshold instead and hands it to Reset.
type ThresholdTracker struct {
	Bisection
	Q     float32 // the current threshold, valid when Ready
	Ready bool    // false until the first exact selection

	cands []float32
}

// NewThresholdTracker returns a tracker with parameters b, not yet Ready.
func NewThresholdTracker(b Bisection) (*ThresholdTracker, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return &ThresholdTracker{Bisection: b}, nil
}

// Candidates returns the thresholds to count against this step (a buffer
// reused across calls). It panics when the tracker is not Ready.
func (t *ThresholdTracker) Candidates() []float32 {
	if !t.Ready {
		panic("dst: ThresholdTracker.Candidates before an exact threshold was set")
	}
	t.cands = t.Bisection.Candidates(t.Q, t.cands)
	return t.cands
}

// Update resolves this step's counts (against the thresholds Candidates
// returned) for target k and moves Q to the result. When the bracket was
// missed Q still moves (by the factor r towards the target), so that a
// caller without an exact fallback keeps converging.
func (t *ThresholdTracker) Update(counts []int64, k int64) Resolution {
	r := t.Bisection.Resolve(t.cands, counts, k)
	t.Q = r.Q
	return r
}

// Reset sets the threshold from an exact selection and makes the tracker
// Ready.
func (t *ThresholdTracker) Reset(q float32) {
	if !(q >= 0) || math.IsInf(float64(q), 0) {
		panic("dst: threshold must be finite and non-negative")
	}
	t.Q, t.Ready = q, true
}
