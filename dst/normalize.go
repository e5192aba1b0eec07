package dst

import (
	"math"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
)

// prepareNormalized makes the one global selection and the per-parameter
// scale factors 1/c_S: c_S is the silo's parameter count (size) or the
// mean |Θ0| of its entries (mean; a silo of zero seeds takes the mean
// over all trainable parameters instead, 1 if that is 0 too).
func (m *Method) prepareNormalized(names []string, index map[string]int) {
	m.global = m.newSiloState(Silo{Name: "all", Params: names}, index)
	var absSum float64
	for _, seed := range m.seeds {
		for _, x := range seed {
			absSum += math.Abs(float64(x))
		}
	}
	overallMean := 1.0
	if m.global.size > 0 && absSum > 0 {
		overallMean = absSum / float64(m.global.size)
	}
	m.scale = make([]float32, len(m.params))
	for _, s := range m.silos {
		c := float64(s.size)
		if m.opts.Normalize == NormalizeMean {
			var sum float64
			for _, i := range s.pieces {
				for _, x := range m.seeds[i] {
					sum += math.Abs(float64(x))
				}
			}
			c = overallMean
			if sum > 0 {
				c = sum / float64(s.size)
			}
		}
		for _, i := range s.pieces {
			m.scale[i] = float32(1 / c)
		}
	}
	m.scores = make([]float32, m.global.size)
}

// normalizedStep: the optimizer's step on every parameter, the normalized
// scores Δ·(1/c_S) of every entry stored end to end, Algorithm 2 on them
// (reported, iterative mode), and one exact selection over all of them.
func (m *Method) normalizedStep(opt train.Optimizer, t train.StepInfo, threads int) {
	g := m.global
	m.optimizerStep(g, opt, t, threads, nil, nil)
	for j, i := range g.pieces {
		theta, seed := m.params[i].Value, m.seeds[i]
		sc := m.scores[g.offsets[j] : g.offsets[j]+int64(len(theta))]
		kernels.Score(sc, theta, seed, m.opts.Distance)
		a := m.scale[i]
		for n := range sc {
			sc[n] *= a
		}
	}
	beginSelection(g)
	m.bandPieces[0] = m.scores
	if !m.opts.Exact && g.tracker.Ready && g.k > 0 {
		r := &m.run
		count := func(thresholds []float32, counts []int64) {
			kernels.CountAboveFloats(counts, thresholds, m.scores, threads)
		}
		count(r.start(m.opts.Bisection, g.tracker.Q), r.passCounts)
		r.record()
		g.alg2, g.hasAlg2 = r.resolve(g.k, count).Count, true
	}
	th, _ := m.selector.TopKFloats(g.k, m.bandPieces[:], threads)
	m.bandPieces[0] = nil
	for j, i := range g.pieces {
		theta, seed := m.params[i].Value, m.seeds[i]
		off := g.offsets[j]
		sc := m.scores[off : off+int64(len(theta))]
		kept := g.kept[j]
		for n, s := range sc {
			if th.Keep(s, off+int64(n)) {
				kept = append(kept, int32(n))
			} else {
				theta[n] = seed[n]
			}
		}
		g.kept[j] = kept
	}
	setThreshold(g, th.Q)
	m.endSelection(g)
}
