package dst

import (
	"fmt"
	"math"
	"time"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
)

// Method is --method dst, a train.Method: after every optimizer step it
// keeps, in each silo S, exactly k = SubsetSize(ε, |S|) entries whose
// distance Δ from the seed is largest and resets the others to the seed
// (the paper's Algorithm 1). The optimizer's state is updated from the
// full step Θ̂, as the paper does.
//
// Which k: the k largest Δ of the silo; among entries whose Δ equals the
// k-th largest, those at the lowest silo positions (kernels.Threshold's
// tie rule), so the count is exact even among ties. A NaN Δ is never kept.
// Both threshold modes keep this same set, bit for bit:
//
//   - exact: each step, a radix selection (kernels.Selector.TopK) finds
//     the threshold, then one masked pass applies it.
//   - iterative (default): Algorithm 2 from the previous step's threshold
//     q'. The optimizer step counts Δ against Algorithm 2's candidate
//     thresholds in the same memory pass (2^m+1 ≤ 9 of them for m ≤ 3;
//     every 3 further levels add one counting pass), and Algorithm 2's
//     own answer q̃, c̃ = #{Δ > q̃} is reported as eps_alg2 = c̃/|S|. The
//     count is then made exact: when a counted candidate has exactly k
//     entries above it, it is the threshold; otherwise the counts bracket
//     the k-th largest Δ between two candidates, one pass keeps the
//     entries above the band, resets those below and captures the band's
//     (position, Δ) (kernels.MaskedBandUpdate), and a selection among the
//     band's entries resets the losers. A band wider than the cap
//     (Options.BandCap), or a missing bracket too wide to capture, falls
//     back to the exact selection (counted as exact_fallbacks). The first
//     step has no q' and selects exactly.
//
// The threshold carried to the next step is the one used: the counted
// candidate, or the exact k-th largest Δ. (It must be finite; after a
// step whose k-th largest Δ is +Inf — rel distance at a zero seed — the
// next step selects exactly.)
//
// With --normalize, the silos only group parameters: Δ of each is divided
// by its silo's size or mean |Θ0| (a mean of 0 is replaced by the mean
// over all trainable parameters), and one selection of SubsetSize(ε, n)
// runs over all n trainable entries, on stored normalized scores (an
// ablation of the paper's Appendix B; unfused passes). With the random
// distance the mask is chosen once per silo, seeded; with churn off the
// subset chosen at the first step is kept; both then apply the fixed mask
// after every optimizer step.
type Method struct {
	opts     Options
	modules  map[string]Module
	baseHash string

	params []*train.TrainParam
	seeds  [][]float32
	silos  []*siloState
	global *siloState // the one selection of a normalized run
	scale  []float32  // normalized runs: per parameter, 1 / its silo's normalizer
	scores []float32  // normalized runs: every parameter's normalized Δ, end to end
	fixed  bool       // the mask no longer changes
	step   int64      // steps taken

	selector   kernels.Selector
	run        gridRun
	paperRun   gridRun
	pieces     []kernels.SiloPiece
	band       []int32
	bandScores []float32
	bandStart  []int
	bandPieces [1][]float32
	merged     []int32
	gathered   []float32

	// The last step's totals, for Metrics.
	optimizerTime, dstTime time.Duration
	fallbacks              int
	bandEntries            int64
	// paths counts how the selections of all steps so far were made.
	paths struct{ exact, candidate, band, fallback int }
}

// siloState is one silo's selection state.
type siloState struct {
	Silo
	pieces  []int   // indices into Method.params, in silo order
	offsets []int64 // silo position of each piece's first entry
	size    int64
	k       int64
	tracker ThresholdTracker
	// kept[j] are the ascending positions piece j keeps; prev the previous
	// step's, for churn.
	kept, prev [][]int32

	// The last step's outcome.
	q       float32
	hasQ    bool
	alg2    int64 // Algorithm 2's c̃
	hasAlg2 bool
	// Options.PaperAlg2: the printed algorithm's own threshold and count.
	paper      ThresholdTracker
	paperCount int64
	hasPaper   bool
	entered    int64 // kept entries that were not kept the step before
	hasChurn   bool
}

var _ train.Method = (*Method)(nil)
var _ train.RunFileWriter = (*Method)(nil)

// NewMethod returns a DST method. modules (Modules of the model's graph)
// is needed for module silos only; baseHash (BaseHash of the base model's
// initializers, "" when unknown) goes into the delta files.
func NewMethod(opts Options, modules map[string]Module, baseHash string) (*Method, error) {
	if err := opts.Bisection.Validate(); err != nil {
		return nil, fmt.Errorf("dst: %w", err)
	}
	if !(opts.Eps >= 0 && opts.Eps <= 1) {
		return nil, fmt.Errorf("dst: ε = %g, want a fraction in [0, 1]", opts.Eps)
	}
	if opts.Silo == SiloModule && modules == nil {
		return nil, fmt.Errorf("dst: --silo module needs the model's graph to tell module kinds apart")
	}
	if opts.BandCap <= 0 {
		opts.BandCap = DefaultBandCap
	}
	return &Method{opts: opts, modules: modules, baseHash: baseHash}, nil
}

// Name is "dst".
func (m *Method) Name() string { return train.MethodDST }

// Options returns the method's options.
func (m *Method) Options() Options { return m.opts }

// Silos lists the method's silos (after Prepare).
func (m *Method) Silos() []Silo {
	out := make([]Silo, len(m.silos))
	for i, s := range m.silos {
		out[i] = s.Silo
	}
	return out
}

// Prepare builds the silos of the trainable parameters and keeps a copy
// of their seed values.
func (m *Method) Prepare(params []*train.TrainParam) error {
	m.params = params
	m.seeds = make([][]float32, len(params))
	names := make([]string, len(params))
	index := map[string]int{}
	for i, p := range params {
		if int64(len(p.Value)) > math.MaxInt32 {
			return fmt.Errorf("dst: parameter %q has %d entries; DST handles tensors of fewer than 2^31", p.Name, len(p.Value))
		}
		m.seeds[i] = append([]float32(nil), p.Value...)
		names[i] = p.Name
		index[p.Name] = i
	}
	silos, err := MakeSilos(m.opts.Silo, names, m.modules)
	if err != nil {
		return fmt.Errorf("dst: %w", err)
	}
	m.silos = nil
	for _, s := range silos {
		st := m.newSiloState(s, index)
		m.silos = append(m.silos, st)
	}
	if m.opts.Normalize != NormalizeNone {
		m.prepareNormalized(names, index)
	}
	if m.opts.Random {
		for _, s := range m.silos {
			m.randomMask(s)
		}
		m.fixed = true
	}
	return nil
}

func (m *Method) newSiloState(s Silo, index map[string]int) *siloState {
	st := &siloState{Silo: s, tracker: ThresholdTracker{Bisection: m.opts.Bisection}, paper: ThresholdTracker{Bisection: m.opts.Bisection}}
	for _, name := range s.Params {
		i := index[name]
		st.pieces = append(st.pieces, i)
		st.offsets = append(st.offsets, st.size)
		st.size += int64(len(m.params[i].Value))
	}
	st.k = SubsetSize(m.opts.Eps, st.size)
	st.kept = make([][]int32, len(st.pieces))
	st.prev = make([][]int32, len(st.pieces))
	return st
}

// Update takes step t: the optimizer's step on every parameter, then the
// selection of every silo.
func (m *Method) Update(params []*train.TrainParam, opt train.Optimizer, t train.StepInfo, threads int) error {
	if len(params) != len(m.params) {
		return fmt.Errorf("dst: %d parameters, prepared for %d", len(params), len(m.params))
	}
	start := time.Now()
	m.optimizerTime, m.fallbacks, m.bandEntries = 0, 0, 0
	switch {
	case m.fixed:
		for _, s := range m.selections() {
			m.fixedStep(s, opt, t, threads)
		}
	case m.global != nil:
		m.normalizedStep(opt, t, threads)
	default:
		for _, s := range m.silos {
			switch {
			case s.k == 0 || s.size == 0:
				m.exactStep(s, opt, t, threads)
			case !m.opts.Exact && s.tracker.Ready:
				m.iterativeStep(s, opt, t, threads)
			default:
				m.exactStep(s, opt, t, threads)
			}
		}
	}
	if !m.opts.Churn {
		m.fixed = true
	}
	m.step = t.Step
	m.dstTime = time.Since(start) - m.optimizerTime
	return nil
}

// selections are the units that keep exactly k entries each: the silos,
// or the one global selection of a normalized run.
func (m *Method) selections() []*siloState {
	if m.global != nil {
		return []*siloState{m.global}
	}
	return m.silos
}

// beginSelection rotates the kept lists: prev becomes the last step's.
func beginSelection(s *siloState) {
	s.prev, s.kept = s.kept, s.prev
	for j := range s.kept {
		s.kept[j] = s.kept[j][:0]
	}
	s.hasQ, s.hasAlg2 = false, false
}

// endSelection computes churn against the previous step's subset.
func (m *Method) endSelection(s *siloState) {
	s.entered = 0
	for j := range s.kept {
		s.entered += int64(len(s.kept[j])) - countCommon32(s.kept[j], s.prev[j])
	}
	s.hasChurn = m.step > 0
}

// countCommon32 counts the values two ascending lists share.
func countCommon32(a, b []int32) int64 {
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

// optimizerStep takes the optimizer's step on the silo's pieces, counting
// Δ against thresholds in the same pass when there are any.
func (m *Method) optimizerStep(s *siloState, opt train.Optimizer, t train.StepInfo, threads int, thresholds []float32, counts []int64) {
	start := time.Now()
	for _, i := range s.pieces {
		p := m.params[i]
		if thresholds == nil {
			opt.Step(p.Value, p.Grad, p.State, t, threads)
		} else {
			opt.StepCount(p.Value, p.Grad, p.State, t, m.seeds[i], m.opts.Distance, thresholds, counts, threads)
		}
	}
	m.optimizerTime += time.Since(start)
}

// siloPieces lays the silo's current values and seeds out for the
// selector.
func (m *Method) siloPieces(s *siloState) []kernels.SiloPiece {
	m.pieces = m.pieces[:0]
	for _, i := range s.pieces {
		m.pieces = append(m.pieces, kernels.SiloPiece{Theta: m.params[i].Value, Seed: m.seeds[i]})
	}
	return m.pieces
}

// applyThreshold resets every entry th does not keep and records the
// kept positions.
func (m *Method) applyThreshold(s *siloState, th kernels.Threshold) {
	for j, i := range s.pieces {
		s.kept[j] = kernels.MaskedUpdateAppend(s.kept[j], m.params[i].Value, m.seeds[i], m.opts.Distance, th, s.offsets[j])
	}
}

// setThreshold records the threshold used and carries it to the next
// step when Algorithm 2 can start from it.
func setThreshold(s *siloState, q float32) {
	s.q, s.hasQ = q, true
	if q >= 0 && !math.IsInf(float64(q), 0) {
		s.tracker.Reset(q)
	} else {
		s.tracker.Ready = false
	}
}

// exactStep: the optimizer's step, an exact selection, a masked pass.
func (m *Method) exactStep(s *siloState, opt train.Optimizer, t train.StepInfo, threads int) {
	m.optimizerStep(s, opt, t, threads, nil, nil)
	beginSelection(s)
	m.paperStep(s, threads)
	m.paths.exact++
	th := m.selectExact(s, threads)
	m.applyThreshold(s, th)
	setThreshold(s, th.Q)
	m.paperStart(s)
	m.endSelection(s)
}

// paperStep runs the printed Algorithm 2 on this step's Δ (before the
// masked pass) from its own previous threshold, when Options.PaperAlg2.
func (m *Method) paperStep(s *siloState, threads int) {
	s.hasPaper = false
	if !m.opts.PaperAlg2 || !s.paper.Ready {
		return
	}
	r := &m.paperRun
	count := func(thresholds []float32, counts []int64) {
		for _, i := range s.pieces {
			kernels.CountAbove(counts, thresholds, m.params[i].Value, m.seeds[i], m.opts.Distance, threads)
		}
	}
	count(r.start(m.opts.Bisection, s.paper.Q), r.passCounts)
	r.record()
	res := r.resolve(s.k, count)
	s.paper.Q = res.Q // the printed algorithm moves even when its bracket missed
	s.paperCount, s.hasPaper = res.Count, true
}

// paperStart gives the printed Algorithm 2 its warm start, the exact
// threshold of the first step.
func (m *Method) paperStart(s *siloState) {
	if m.opts.PaperAlg2 && !s.paper.Ready && s.hasQ && s.q >= 0 && !math.IsInf(float64(s.q), 0) {
		s.paper.Reset(s.q)
	}
}

func (m *Method) selectExact(s *siloState, threads int) kernels.Threshold {
	th, _ := m.selector.TopK(s.k, m.opts.Distance, m.siloPieces(s), threads)
	clear(m.pieces)
	return th
}

// iterativeStep: the optimizer's step counting Δ against Algorithm 2's
// candidates, Algorithm 2, then the exact count from the band.
func (m *Method) iterativeStep(s *siloState, opt train.Optimizer, t train.StepInfo, threads int) {
	r := &m.run
	first := r.start(m.opts.Bisection, s.tracker.Q)
	m.optimizerStep(s, opt, t, threads, first, r.passCounts)
	r.record()
	res := r.resolve(s.k, func(thresholds []float32, counts []int64) {
		for _, i := range s.pieces {
			kernels.CountAbove(counts, thresholds, m.params[i].Value, m.seeds[i], m.opts.Distance, threads)
		}
	})
	beginSelection(s)
	m.paperStep(s, threads)
	s.alg2, s.hasAlg2 = res.Count, true

	exact, ok, lo, hi := r.tightest(s.k)
	if ok {
		// Keep Δ > q: a band pass with an empty band (lo = hi), which
		// runs on all threads.
		m.paths.candidate++
		q := r.grid[exact]
		for j, i := range s.pieces {
			s.kept[j], m.band, m.bandScores = kernels.MaskedBandUpdate(s.kept[j], m.band[:0], m.bandScores[:0],
				m.params[i].Value, m.seeds[i], m.opts.Distance, q, q, threads)
		}
		setThreshold(s, q)
		m.endSelection(s)
		return
	}
	loQ, countLo := float32(math.Inf(-1)), s.size
	if lo >= 0 {
		loQ, countLo = r.grid[lo], r.counts[lo]
	}
	hiQ, countHi := float32(math.Inf(1)), int64(0)
	if hi >= 0 {
		hiQ, countHi = r.grid[hi], r.counts[hi]
	}
	if countLo-countHi <= m.opts.BandCap {
		m.paths.band++
		m.bandSelect(s, loQ, hiQ, s.k-countHi, threads)
	} else {
		m.paths.fallback++
		m.fallbacks++
		th := m.selectExact(s, threads)
		m.applyThreshold(s, th)
		setThreshold(s, th.Q)
	}
	m.endSelection(s)
}

// bandSelect keeps the entries above (lo, hi], resets those below, and
// keeps need of the band's entries: the largest Δ, ties at the lowest
// silo positions (the band is captured in silo order).
func (m *Method) bandSelect(s *siloState, lo, hi float32, need int64, threads int) {
	m.band, m.bandScores, m.bandStart = m.band[:0], m.bandScores[:0], m.bandStart[:0]
	for j, i := range s.pieces {
		m.bandStart = append(m.bandStart, len(m.band))
		s.kept[j], m.band, m.bandScores = kernels.MaskedBandUpdate(s.kept[j], m.band, m.bandScores,
			m.params[i].Value, m.seeds[i], m.opts.Distance, lo, hi, threads)
	}
	m.bandStart = append(m.bandStart, len(m.band))
	m.bandEntries += int64(len(m.band))
	m.bandPieces[0] = m.bandScores
	th, _ := m.selector.TopKFloats(need, m.bandPieces[:], 1)
	m.bandPieces[0] = nil
	for j, i := range s.pieces {
		theta, seed := m.params[i].Value, m.seeds[i]
		winners := m.merged[:0]
		for b := m.bandStart[j]; b < m.bandStart[j+1]; b++ {
			pos := m.band[b]
			if th.Keep(m.bandScores[b], int64(b)) {
				winners = append(winners, pos)
			} else {
				theta[pos] = seed[pos]
			}
		}
		m.merged = winners
		s.kept[j] = m.mergeInto(s.kept[j], winners)
	}
	setThreshold(s, th.Q)
}

// mergeInto merges the ascending list add into the ascending list kept
// (disjoint) and returns the result in kept's storage.
func (m *Method) mergeInto(kept, add []int32) []int32 {
	if len(add) == 0 {
		return kept
	}
	n := len(kept)
	kept = append(kept, add...) // room for the result
	// Merge from the back so that nothing is overwritten before it is read.
	i, j, w := n-1, len(add)-1, len(kept)-1
	for j >= 0 {
		if i >= 0 && kept[i] > add[j] {
			kept[w] = kept[i]
			i--
		} else {
			kept[w] = add[j]
			j--
		}
		w--
	}
	return kept
}

// fixedStep: the optimizer's step, then the fixed mask: everything but
// the kept positions back to the seed.
func (m *Method) fixedStep(s *siloState, opt train.Optimizer, t train.StepInfo, threads int) {
	m.optimizerStep(s, opt, t, threads, nil, nil)
	for j, i := range s.pieces {
		theta, seed, idx := m.params[i].Value, m.seeds[i], s.kept[j]
		if cap(m.gathered) < len(idx) {
			m.gathered = make([]float32, len(idx))
		}
		g := m.gathered[:len(idx)]
		for n, pos := range idx {
			g[n] = theta[pos]
		}
		copy(theta, seed)
		for n, pos := range idx {
			theta[pos] = g[n]
		}
	}
	s.hasQ, s.hasAlg2, s.entered, s.hasChurn = false, false, 0, m.step > 0
	copyKept(s)
}

// copyKept makes prev equal to kept (a fixed mask does not churn).
func copyKept(s *siloState) {
	for j := range s.kept {
		s.prev[j] = append(s.prev[j][:0], s.kept[j]...)
	}
}
