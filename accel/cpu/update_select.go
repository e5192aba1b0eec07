package cpu

import (
	"math"
	"time"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/update"
)

// selection is an update.Selection lowered to package kernels, fused with
// the optimizer's passes so that a DST step reads the parameters as few
// times as it can:
//
//   - exact: the optimizer's pass, a radix selection (kernels.Selector.TopK)
//     that finds the threshold, then one masked pass applies it.
//   - iterative: the optimizer's pass also counts Δ against Algorithm 2's
//     candidates (update.GridRun's first pass; every 3 further levels of m
//     cost one more counting pass); Algorithm 2 resolves on those counts.
//     When a counted candidate has exactly k entries above it, it is the
//     threshold; otherwise the counts bracket the k-th largest Δ between
//     two candidates, one pass keeps the entries above the band, resets
//     those below and captures the band's (position, Δ)
//     (kernels.MaskedBandUpdate), and a selection among the band's entries
//     resets the losers. A band wider than Selection.BandCap falls back to
//     the exact selection over the whole unit.
//   - normalized runs store the scaled scores of every entry and select
//     over them (unfused passes); a fixed subset gathers the kept entries,
//     resets the parameter and scatters them back.
//
// update.ReferenceSelect defines the outcome; this is the same computed
// faster (tested bit for bit against it).
type selection struct {
	def    *update.Selection
	d      kernels.Distance
	params []*trainParam
	units  []*unitState
	fixed  bool
	// Normalized runs: per parameter, the Δ scale; every parameter's
	// scaled Δ end to end.
	scale  []float32
	scores []float32

	selector   kernels.Selector
	run        update.GridRun
	paperRun   update.GridRun
	pieces     []kernels.SiloPiece
	band       []int32
	bandScores []float32
	bandStart  []int
	bandPieces [1][]float32
	merged     []int32
	gathered   []float32

	res  update.SelectionResult
	host update.HostStats
	// pager maps the seeds read in place from files in and out
	// (update.Program.SeedPages; nil: none); mappedUnitBytes is the most
	// bytes of such seeds one unit has, resident while it is selected.
	pager           update.SeedPager
	mappedUnitBytes int
}

// unitState is one unit's selection state.
type unitState struct {
	name    string
	pieces  []int   // indices into selection.params, in unit order
	offsets []int64 // unit position of each piece's first entry
	size    int64
	k       int64
	group   []int // normalized runs: each piece's group
	// q and ready carry the threshold Algorithm 2 starts from.
	q     float32
	ready bool
	// The printed Algorithm 2's own threshold (Selection.PaperAlg2).
	paperQ     float32
	paperReady bool
	// kept[j] are the ascending positions piece j keeps; prev the previous
	// step's, for churn.
	kept, prev [][]int32
	res        *update.UnitResult
}

func newSelection(def *update.Selection, params []*trainParam) (*selection, error) {
	sizes := map[string]int{}
	index := map[string]int{}
	for i, p := range params {
		sizes[p.name], index[p.name] = len(p.value), i
	}
	if err := def.Check(sizes); err != nil {
		return nil, err
	}
	d, err := kernelDistance(def.Distance)
	if err != nil {
		return nil, err
	}
	s := &selection{def: def, d: d, params: params, fixed: def.Fixed == update.FixFromStart}
	s.res.Units = make([]update.UnitResult, len(def.Units))
	for i, u := range def.Units {
		st := &unitState{name: u.Name, k: u.K, res: &s.res.Units[i]}
		for _, p := range u.Pieces {
			j := index[p.Param]
			st.pieces = append(st.pieces, j)
			st.offsets = append(st.offsets, st.size)
			st.group = append(st.group, p.Group)
			st.size += int64(len(params[j].value))
		}
		st.kept = make([][]int32, len(st.pieces))
		st.prev = make([][]int32, len(st.pieces))
		s.units = append(s.units, st)
	}
	if def.Normalized {
		s.scale = make([]float32, len(params))
		for _, p := range def.Units[0].Pieces {
			s.scale[index[p.Param]] = p.Scale
		}
		s.scores = make([]float32, s.units[0].size)
		s.res.GroupKept = make([]int64, len(def.Groups))
	}
	return s, nil
}

// update takes step t: the optimizer's step on every parameter, then the
// selection of every unit.
func (s *selection) update(opt optimizer, t update.StepInfo, threads int) {
	start := time.Now()
	s.host = update.HostStats{}
	s.res.Selected = !s.fixed
	switch {
	case s.fixed:
		for _, u := range s.units {
			s.fetchUnit(u)
			s.fixedStep(u, opt, t, threads)
			s.releaseUnit(u)
		}
	case s.def.Normalized:
		s.fetchUnit(s.units[0])
		s.normalizedStep(opt, t, threads)
		s.releaseUnit(s.units[0])
	default:
		for _, u := range s.units {
			s.fetchUnit(u)
			switch {
			case u.k == 0 || u.size == 0:
				s.exactStep(u, opt, t, threads)
			case !s.def.Exact && u.ready:
				s.iterativeStep(u, opt, t, threads)
			default:
				s.exactStep(u, opt, t, threads)
			}
			s.releaseUnit(u)
		}
	}
	if s.def.Normalized {
		clear(s.res.GroupKept)
		u := s.units[0]
		for j := range u.pieces {
			s.res.GroupKept[u.group[j]] += int64(len(u.kept[j]))
		}
	}
	if s.def.Fixed == update.FixAfterFirst {
		s.fixed = true
	}
	s.host.Selection = time.Since(start) - s.host.Optimizer
}

// setPager takes update.Program.SeedPages.
func (s *selection) setPager(pager update.SeedPager) {
	s.pager, s.mappedUnitBytes = pager, 0
	if pager == nil {
		return
	}
	for _, u := range s.units {
		n := 0
		for _, i := range u.pieces {
			if p := s.params[i]; p.seedShared {
				n += 4 * len(p.seed)
			}
		}
		s.mappedUnitBytes = max(s.mappedUnitBytes, n)
	}
}

// fetchUnit maps the unit's seeds read in place from files before its
// selection reads them (in one call each, not a page fault at a time);
// releaseUnit lets the kernel drop them after: they are resident only
// while their unit is selected, not for the whole step.
func (s *selection) fetchUnit(u *unitState) {
	if s.pager == nil {
		return
	}
	for _, i := range u.pieces {
		if p := s.params[i]; p.seedShared {
			s.pager.Fetch(p.seed)
		}
	}
}

func (s *selection) releaseUnit(u *unitState) {
	for _, i := range u.pieces {
		s.releaseSeed(s.params[i])
	}
}

func (s *selection) releaseSeed(p *trainParam) {
	if s.pager != nil && p.seedShared {
		s.pager.Release(p.seed)
	}
}

// beginSelection rotates the kept lists (prev becomes the last step's)
// and clears the unit's report.
func beginSelection(u *unitState) {
	u.prev, u.kept = u.kept, u.prev
	for j := range u.kept {
		u.kept[j] = u.kept[j][:0]
	}
	*u.res = update.UnitResult{Size: u.size, K: u.k}
}

// endSelection counts the kept entries and those that entered.
func endSelection(u *unitState) {
	u.res.Kept, u.res.Entered = 0, 0
	for j := range u.kept {
		u.res.Kept += int64(len(u.kept[j]))
		u.res.Entered += int64(len(u.kept[j])) - countCommon32(u.kept[j], u.prev[j])
	}
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

// optimizerStep takes the optimizer's step on the unit's pieces, counting
// Δ against thresholds in the same pass when there are any.
func (s *selection) optimizerStep(u *unitState, opt optimizer, t update.StepInfo, threads int, thresholds []float32, counts []int64) {
	start := time.Now()
	for _, i := range u.pieces {
		p := s.params[i]
		if thresholds == nil {
			opt.step(p, t, threads)
		} else {
			opt.stepCount(p, t, s.d, thresholds, counts, threads)
		}
	}
	s.host.Optimizer += time.Since(start)
}

// countUnit adds the unit's counts of Δ above thresholds.
func (s *selection) countUnit(u *unitState, threads int) func(thresholds []float32, counts []int64) {
	return func(thresholds []float32, counts []int64) {
		for _, i := range u.pieces {
			kernels.CountAbove(counts, thresholds, s.params[i].value, s.params[i].seed, s.d, threads)
		}
	}
}

// siloPieces lays the unit's current values and seeds out for the
// selector.
func (s *selection) siloPieces(u *unitState) []kernels.SiloPiece {
	s.pieces = s.pieces[:0]
	for _, i := range u.pieces {
		s.pieces = append(s.pieces, kernels.SiloPiece{Theta: s.params[i].value, Seed: s.params[i].seed})
	}
	return s.pieces
}

// applyThreshold resets every entry th does not keep (nor any Δ of 0:
// update.Keeps) and records the kept positions.
func (s *selection) applyThreshold(u *unitState, th kernels.Threshold) {
	th = positive(th)
	for j, i := range u.pieces {
		u.kept[j] = kernels.MaskedUpdateAppend(u.kept[j], s.params[i].value, s.params[i].seed, s.d, th, u.offsets[j])
	}
}

// positive is the threshold that keeps what th keeps but a Δ of 0
// (update.PositiveThreshold): the masked kernels then apply the
// selection's whole rule.
func positive(th kernels.Threshold) kernels.Threshold {
	th.Q, th.TieEnd = update.PositiveThreshold(th.Q, th.TieEnd)
	return th
}

// setThreshold records the threshold used and carries it to the next
// step when Algorithm 2 can start from it.
func setThreshold(u *unitState, q float32) {
	u.res.Q, u.res.HasQ = q, true
	if update.Usable(q) {
		u.q, u.ready = q, true
	} else {
		u.ready = false
	}
}

// exactStep: the optimizer's step, an exact selection, a masked pass.
func (s *selection) exactStep(u *unitState, opt optimizer, t update.StepInfo, threads int) {
	s.optimizerStep(u, opt, t, threads, nil, nil)
	beginSelection(u)
	s.paperStep(u, threads)
	th := s.selectExact(u, threads)
	s.applyThreshold(u, th)
	setThreshold(u, th.Q)
	u.res.Exact = u.k > 0
	if s.def.PaperAlg2 && !u.paperReady && update.Usable(th.Q) {
		u.paperQ, u.paperReady = th.Q, true // the printed algorithm's warm start
	}
	endSelection(u)
}

// paperStep runs the printed Algorithm 2 on this step's Δ (before the
// masked pass) from its own previous threshold, when Selection.PaperAlg2.
func (s *selection) paperStep(u *unitState, threads int) {
	if !s.def.PaperAlg2 || !u.paperReady {
		return
	}
	r := &s.paperRun
	count := s.countUnit(u, threads)
	count(r.Start(s.def.Bisection, u.paperQ), r.PassCounts)
	r.Record()
	res := r.Resolve(u.k, count)
	u.paperQ = res.Q // the printed algorithm moves even when its bracket missed
	u.res.Paper, u.res.PaperCount = true, res.Count
}

func (s *selection) selectExact(u *unitState, threads int) kernels.Threshold {
	th, _ := s.selector.TopK(u.k, s.d, s.siloPieces(u), threads)
	clear(s.pieces)
	return th
}

// iterativeStep: the optimizer's step counting Δ against Algorithm 2's
// candidates, Algorithm 2, then the exact count from the band.
func (s *selection) iterativeStep(u *unitState, opt optimizer, t update.StepInfo, threads int) {
	r := &s.run
	first := r.Start(s.def.Bisection, u.q)
	s.optimizerStep(u, opt, t, threads, first, r.PassCounts)
	r.Record()
	res := r.Resolve(u.k, s.countUnit(u, threads))
	beginSelection(u)
	s.paperStep(u, threads)
	u.res.Alg2, u.res.Alg2Count = true, res.Count

	exact, ok, lo, hi := r.Tightest(u.k)
	if ok {
		// Keep Δ > q: a band pass with an empty band (lo = hi), which
		// runs on all threads.
		q := r.Grid[exact]
		for j, i := range u.pieces {
			u.kept[j], s.band, s.bandScores = kernels.MaskedBandUpdate(u.kept[j], s.band[:0], s.bandScores[:0],
				s.params[i].value, s.params[i].seed, s.d, q, q, threads)
		}
		setThreshold(u, q)
		endSelection(u)
		return
	}
	u.res.Exact = true
	loQ, countLo := float32(math.Inf(-1)), u.size
	if lo >= 0 {
		loQ, countLo = r.Grid[lo], r.Counts[lo]
	}
	hiQ, countHi := float32(math.Inf(1)), int64(0)
	if hi >= 0 {
		hiQ, countHi = r.Grid[hi], r.Counts[hi]
	}
	if countLo-countHi <= s.def.BandCap {
		s.bandSelect(u, loQ, hiQ, u.k-countHi, threads)
	} else {
		u.res.Fallback = true
		th := s.selectExact(u, threads)
		s.applyThreshold(u, th)
		setThreshold(u, th.Q)
	}
	endSelection(u)
}

// bandSelect keeps the entries above (lo, hi], resets those below, and
// keeps need of the band's entries: the largest Δ, ties at the lowest
// unit positions (the band is captured in unit order).
func (s *selection) bandSelect(u *unitState, lo, hi float32, need int64, threads int) {
	s.band, s.bandScores, s.bandStart = s.band[:0], s.bandScores[:0], s.bandStart[:0]
	for j, i := range u.pieces {
		s.bandStart = append(s.bandStart, len(s.band))
		u.kept[j], s.band, s.bandScores = kernels.MaskedBandUpdate(u.kept[j], s.band, s.bandScores,
			s.params[i].value, s.params[i].seed, s.d, lo, hi, threads)
	}
	s.bandStart = append(s.bandStart, len(s.band))
	s.host.BandEntries += int64(len(s.band))
	s.bandPieces[0] = s.bandScores
	th, _ := s.selector.TopKFloats(need, s.bandPieces[:], 1)
	s.bandPieces[0] = nil
	keep := positive(th)
	for j, i := range u.pieces {
		theta, seed := s.params[i].value, s.params[i].seed
		winners := s.merged[:0]
		for b := s.bandStart[j]; b < s.bandStart[j+1]; b++ {
			pos := s.band[b]
			if keep.Keep(s.bandScores[b], int64(b)) {
				winners = append(winners, pos)
			} else {
				theta[pos] = seed[pos]
			}
		}
		s.merged = winners
		u.kept[j] = mergeInto(u.kept[j], winners)
	}
	setThreshold(u, th.Q)
}

// mergeInto merges the ascending list add into the ascending list kept
// (disjoint) and returns the result in kept's storage.
func mergeInto(kept, add []int32) []int32 {
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
func (s *selection) fixedStep(u *unitState, opt optimizer, t update.StepInfo, threads int) {
	s.optimizerStep(u, opt, t, threads, nil, nil)
	*u.res = update.UnitResult{Size: u.size, K: u.k}
	for j, i := range u.pieces {
		theta, seed, idx := s.params[i].value, s.params[i].seed, u.kept[j]
		if cap(s.gathered) < len(idx) {
			s.gathered = make([]float32, len(idx))
		}
		g := s.gathered[:len(idx)]
		for n, pos := range idx {
			g[n] = theta[pos]
		}
		copy(theta, seed)
		for n, pos := range idx {
			theta[pos] = g[n]
		}
		u.prev[j] = append(u.prev[j][:0], idx...) // a fixed mask does not churn
		u.res.Kept += int64(len(idx))
	}
}

// normalizedStep: the optimizer's step on every parameter, the normalized
// scores Δ·(1/c_S) of every entry stored end to end, Algorithm 2 on them
// (reported, iterative mode), and one exact selection over all of them.
func (s *selection) normalizedStep(opt optimizer, t update.StepInfo, threads int) {
	g := s.units[0]
	s.optimizerStep(g, opt, t, threads, nil, nil)
	for j, i := range g.pieces {
		theta, seed := s.params[i].value, s.params[i].seed
		sc := s.scores[g.offsets[j] : g.offsets[j]+int64(len(theta))]
		kernels.Score(sc, theta, seed, s.d)
		a := s.scale[i]
		for n := range sc {
			sc[n] *= a
		}
	}
	beginSelection(g)
	s.bandPieces[0] = s.scores
	if !s.def.Exact && g.ready && g.k > 0 {
		r := &s.run
		count := func(thresholds []float32, counts []int64) {
			kernels.CountAboveFloats(counts, thresholds, s.scores, threads)
		}
		count(r.Start(s.def.Bisection, g.q), r.PassCounts)
		r.Record()
		g.res.Alg2, g.res.Alg2Count = true, r.Resolve(g.k, count).Count
	}
	th, _ := s.selector.TopKFloats(g.k, s.bandPieces[:], threads)
	s.bandPieces[0] = nil
	keep := positive(th)
	for j, i := range g.pieces {
		theta, seed := s.params[i].value, s.params[i].seed
		off := g.offsets[j]
		sc := s.scores[off : off+int64(len(theta))]
		kept := g.kept[j]
		for n, x := range sc {
			if keep.Keep(x, off+int64(n)) {
				kept = append(kept, int32(n))
			} else {
				theta[n] = seed[n]
			}
		}
		g.kept[j] = kept
	}
	setThreshold(g, th.Q)
	g.res.Exact = g.k > 0
	endSelection(g)
}

// state copies the selection's state.
func (s *selection) state() *update.SelectionState {
	st := update.NewSelectionState(s.def)
	st.Fixed = s.fixed
	for i, u := range s.units {
		st.Q[i], st.Ready[i] = u.q, u.ready
		if st.PaperQ != nil {
			st.PaperQ[i], st.PaperReady[i] = u.paperQ, u.paperReady
		}
		for j, p := range u.pieces {
			st.Kept[s.params[p].name] = append([]int32{}, u.kept[j]...)
		}
	}
	return st
}

// setState checks st against the selection, then takes it.
func (s *selection) setState(st *update.SelectionState) error {
	sizes := map[string]int{}
	for _, p := range s.params {
		sizes[p.name] = len(p.value)
	}
	if err := s.def.CheckState(st, sizes); err != nil {
		return err
	}
	s.fixed = st.Fixed
	for i, u := range s.units {
		u.q, u.ready = st.Q[i], st.Ready[i]
		if st.PaperQ != nil {
			u.paperQ, u.paperReady = st.PaperQ[i], st.PaperReady[i]
		}
		for j, p := range u.pieces {
			u.kept[j] = append(u.kept[j][:0], st.Kept[s.params[p].name]...)
			u.prev[j] = u.prev[j][:0]
		}
	}
	return nil
}
