package dst

import (
	"math"

	"github.com/dstune/dstune/update"
)

// StepMetrics are DST's fields of a metrics.jsonl record (train adds them
// to the step's own):
//
//	eps              kept entries / trainable entries (the enforced ε)
//	kept             kept entries, all silos together
//	short_silos      silos that kept fewer than their k (fewer positive Δ than k: a Δ of 0 is never kept)
//	eps_alg2         Σ c̃ / Σ |S| over the silos where Algorithm 2 ran
//	eps_paper_alg2   the same for the printed Algorithm 2 (--paper-alg2)
//	churn            share of the kept entries that changed since the previous step (from step 2)
//	exact_fallbacks  iterative selections whose band exceeded the band cap
//	exact_selections selections whose threshold is the exact k-th largest Δ (no counted candidate had exactly k)
//	band_entries     entries captured in bands and selected among (a backend updating in host memory)
//	optimizer_ms     the optimizer's pass, fused with Algorithm 2's counting (idem)
//	dst_ms           everything else DST did: selection, masked pass, fix-up (idem)
//	q                the threshold (normalized runs: the one global selection's)
//	silos            {NAME: SiloMetrics} per silo (normalized runs: eps and k only)
type StepMetrics struct {
	Eps             *float64               `json:"eps,omitempty"`
	Kept            int64                  `json:"kept"`
	ShortSilos      int                    `json:"short_silos,omitempty"`
	EpsAlg2         *float64               `json:"eps_alg2,omitempty"`
	EpsPaperAlg2    *float64               `json:"eps_paper_alg2,omitempty"`
	Churn           *float64               `json:"churn,omitempty"`
	ExactFallbacks  int                    `json:"exact_fallbacks"`
	ExactSelections int                    `json:"exact_selections"`
	BandEntries     *int64                 `json:"band_entries,omitempty"`
	OptimizerMS     *float64               `json:"optimizer_ms,omitempty"`
	DSTMS           *float64               `json:"dst_ms,omitempty"`
	Q               *float64               `json:"q,omitempty"`
	Silos           map[string]SiloMetrics `json:"silos"`
}

// SiloMetrics are one silo's fields in a metrics.jsonl record ("silos":
// {NAME: {...}}).
type SiloMetrics struct {
	// Eps is the realized ε: kept entries / |S| (exactly k/|S| but for
	// silos whose positive Δ are fewer than k: an entry whose Δ is 0,
	// unchanged or a zero seed under inv-rel, is never kept).
	Eps float64 `json:"eps"`
	// K is the silo's k = SubsetSize(ε, |S|) (normalized runs: the
	// entries it keeps).
	K int64 `json:"k"`
	// Kept is the entries the silo kept when they are fewer than K
	// (absent otherwise).
	Kept *int64 `json:"kept,omitempty"`
	// EpsAlg2 is c̃/|S|, the share Algorithm 2's own threshold q̃ keeps
	// (iterative steps only): what the paper calls the realized ε.
	EpsAlg2 *float64 `json:"eps_alg2,omitempty"`
	// EpsPaperAlg2 is what the printed Algorithm 2, carrying its own
	// threshold, would keep (Options.PaperAlg2).
	EpsPaperAlg2 *float64 `json:"eps_paper_alg2,omitempty"`
	// Q is the threshold used (absent for a fixed mask, or when it is
	// infinite).
	Q *float64 `json:"q,omitempty"`
	// Churn is the share of the kept entries that were not kept the step
	// before (from the second step on).
	Churn *float64 `json:"churn,omitempty"`
}

// Metrics are step's DST fields, from what the backend reported
// (*StepMetrics; nil without a selection result).
func (m *Method) Metrics(step int64, res *update.Result) any {
	if res == nil || res.Selection == nil {
		return nil
	}
	sr := res.Selection
	out := &StepMetrics{Silos: make(map[string]SiloMetrics, len(m.silos))}
	churn := step > 1
	var kept, size, alg2, alg2Size, paper, paperSize, entered int64
	for _, u := range sr.Units {
		kept += u.Kept
		size += u.Size
		entered += u.Entered
		if u.Alg2 {
			alg2 += u.Alg2Count
			alg2Size += u.Size
		}
		if u.Paper {
			paper += u.PaperCount
			paperSize += u.Size
		}
		if u.Fallback {
			out.ExactFallbacks++
		}
		if u.Exact {
			out.ExactSelections++
		}
	}
	out.Kept = kept
	if size > 0 {
		out.Eps = ptr(fraction(kept, size))
	}
	if alg2Size > 0 {
		out.EpsAlg2 = ptr(fraction(alg2, alg2Size))
	}
	if paperSize > 0 {
		out.EpsPaperAlg2 = ptr(fraction(paper, paperSize))
	}
	if churn && kept > 0 {
		out.Churn = ptr(fraction(entered, kept))
	}
	if h := res.Host; h != nil {
		band := h.BandEntries
		out.BandEntries = &band
		out.OptimizerMS, out.DSTMS = ptr(msOf(h.Optimizer.Seconds())), ptr(msOf(h.Selection.Seconds()))
	}
	if m.sel.Normalized {
		if g := sr.Units[0]; g.HasQ && isFinite(g.Q) {
			out.Q = ptr(float64(g.Q))
		}
		for i, s := range m.silos {
			out.Silos[s.Name] = SiloMetrics{Eps: fraction(sr.GroupKept[i], m.sizes[i]), K: sr.GroupKept[i]}
		}
		return out
	}
	for i, s := range m.silos {
		u := sr.Units[i]
		sm := SiloMetrics{Eps: fraction(u.Kept, u.Size), K: u.K}
		if u.Kept < u.K && sr.Selected {
			n := u.Kept
			sm.Kept = &n
			out.ShortSilos++
		}
		if u.Alg2 {
			sm.EpsAlg2 = ptr(fraction(u.Alg2Count, u.Size))
		}
		if u.HasQ && isFinite(u.Q) {
			sm.Q = ptr(float64(u.Q))
		}
		if u.Paper {
			sm.EpsPaperAlg2 = ptr(fraction(u.PaperCount, u.Size))
		}
		if churn {
			sm.Churn = ptr(fraction(u.Entered, u.Kept))
		}
		out.Silos[s.Name] = sm
	}
	return out
}

func ptr(x float64) *float64 { return &x }

// isFinite: JSON has no infinities (an exact threshold is +Inf when the
// k-th largest Δ is, or when k = 0).
func isFinite(q float32) bool { return !math.IsInf(float64(q), 0) && q == q }

func msOf(seconds float64) float64 { return math.Round(seconds*1e6) / 1e3 }

func fraction(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
