package dst

import (
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"strconv"

	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/train"
)

// SiloMetrics are one silo's fields in a metrics.jsonl record ("silos":
// {NAME: {...}}).
type SiloMetrics struct {
	// Eps is the realized ε: kept entries / |S| (exactly k/|S| but for
	// silos whose non-NaN Δ are fewer than k).
	Eps float64 `json:"eps"`
	// K is the silo's k = SubsetSize(ε, |S|).
	K int64 `json:"k"`
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

func ptr(x float64) *float64 { return &x }

// Metrics adds the last step's DST fields to a metrics record:
//
//	eps              kept entries / trainable entries (the enforced ε)
//	eps_alg2         Σ c̃ / Σ |S| over the silos where Algorithm 2 ran
//	churn            share of the kept entries that changed since the previous step
//	exact_fallbacks  silos that needed an exact selection pass (iterative mode, after the first step)
//	band_entries     entries captured in bands and selected among
//	optimizer_ms     the optimizer's pass (fused with Algorithm 2's counting)
//	dst_ms           everything else DST did (selection, masked pass, fix-up)
//	q                the threshold (normalized runs: the one global selection's)
//	silos            {NAME: SiloMetrics} per silo (normalized runs: eps only)
func (m *Method) Metrics(rec map[string]any) {
	var kept, size, alg2, alg2Size, paper, paperSize, entered int64
	churn := false
	for _, s := range m.selections() {
		k := keptCount(s)
		kept += k
		size += s.size
		if s.hasAlg2 {
			alg2 += s.alg2
			alg2Size += s.size
		}
		if s.hasPaper {
			paper += s.paperCount
			paperSize += s.size
		}
		if s.hasChurn {
			entered += s.entered
			churn = true
		}
	}
	if size > 0 {
		rec["eps"] = float64(kept) / float64(size)
	}
	if alg2Size > 0 {
		rec["eps_alg2"] = float64(alg2) / float64(alg2Size)
	}
	if paperSize > 0 {
		rec["eps_paper_alg2"] = float64(paper) / float64(paperSize)
	}
	if churn && kept > 0 {
		rec["churn"] = float64(entered) / float64(kept)
	}
	rec["exact_fallbacks"] = m.fallbacks
	rec["band_entries"] = m.bandEntries
	rec["optimizer_ms"] = msOf(m.optimizerTime.Seconds())
	rec["dst_ms"] = msOf(m.dstTime.Seconds())
	silos := make(map[string]SiloMetrics, len(m.silos))
	if g := m.global; g != nil {
		if g.hasQ && isFinite(g.q) {
			rec["q"] = float64(g.q)
		}
		for _, s := range m.silos {
			var k int64
			for _, i := range s.pieces {
				k += int64(len(g.kept[i]))
			}
			silos[s.Name] = SiloMetrics{Eps: fraction(k, s.size), K: k}
		}
	} else {
		for _, s := range m.silos {
			sm := SiloMetrics{Eps: fraction(keptCount(s), s.size), K: s.k}
			if s.hasAlg2 {
				sm.EpsAlg2 = ptr(fraction(s.alg2, s.size))
			}
			if s.hasQ && isFinite(s.q) {
				sm.Q = ptr(float64(s.q))
			}
			if s.hasPaper {
				sm.EpsPaperAlg2 = ptr(fraction(s.paperCount, s.size))
			}
			if s.hasChurn {
				sm.Churn = ptr(fraction(s.entered, keptCount(s)))
			}
			silos[s.Name] = sm
		}
	}
	rec["silos"] = silos
}

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

func keptCount(s *siloState) int64 {
	var n int64
	for _, k := range s.kept {
		n += int64(len(k))
	}
	return n
}

// Kept returns the ascending positions of the named parameter that the
// subset holds (nil when it has none or is not trained).
func (m *Method) Kept(name string) []int32 {
	for _, s := range m.selections() {
		for j, i := range s.pieces {
			if m.params[i].Name == name {
				return s.kept[j]
			}
		}
	}
	return nil
}

// Names of the method's checkpoint state.
const (
	stateThresholds = "threshold:q"
	stateReady      = "threshold:ready"
	// Options.PaperAlg2's thresholds.
	statePaperThresholds = "paper_alg2:q"
	statePaperReady      = "paper_alg2:ready"
	stateKeptPrefix      = "kept:"
	metaFixed            = "fixed"
	metaStep             = "step"
)

// State is what a checkpoint keeps: every selection's threshold and
// whether Algorithm 2 may start from it, the subset (kept positions per
// parameter), whether the mask is fixed, and the step.
func (m *Method) State() train.MethodState {
	sel := m.selections()
	q := make([]byte, 4*len(sel))
	ready := make([]byte, len(sel))
	for i, s := range sel {
		binary.LittleEndian.PutUint32(q[4*i:], math.Float32bits(s.tracker.Q))
		if s.tracker.Ready {
			ready[i] = 1
		}
	}
	var paper []safetensors.Tensor
	if m.opts.PaperAlg2 {
		pq, pr := make([]byte, 4*len(sel)), make([]byte, len(sel))
		for i, s := range sel {
			binary.LittleEndian.PutUint32(pq[4*i:], math.Float32bits(s.paper.Q))
			if s.paper.Ready {
				pr[i] = 1
			}
		}
		paper = []safetensors.Tensor{
			{Name: statePaperThresholds, DType: safetensors.F32, Shape: []int64{int64(len(sel))}, Data: pq},
			{Name: statePaperReady, DType: safetensors.U8, Shape: []int64{int64(len(sel))}, Data: pr},
		}
	}
	st := train.MethodState{
		Meta: map[string]string{metaFixed: strconv.FormatBool(m.fixed), metaStep: strconv.FormatInt(m.step, 10)},
		Tensors: []safetensors.Tensor{
			{Name: stateThresholds, DType: safetensors.F32, Shape: []int64{int64(len(sel))}, Data: q},
			{Name: stateReady, DType: safetensors.U8, Shape: []int64{int64(len(sel))}, Data: ready},
		},
	}
	st.Tensors = append(st.Tensors, paper...)
	for _, s := range sel {
		for j, i := range s.pieces {
			idx := s.kept[j]
			data := make([]byte, 4*len(idx))
			for n, pos := range idx {
				binary.LittleEndian.PutUint32(data[4*n:], uint32(pos))
			}
			st.Tensors = append(st.Tensors, safetensors.Tensor{Name: stateKeptPrefix + m.params[i].Name, DType: safetensors.I32,
				Shape: []int64{int64(len(idx))}, Data: data})
		}
	}
	return st
}

// LoadState restores State after Prepare, checking it against the silos.
func (m *Method) LoadState(st train.MethodState) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("dst checkpoint state: "+format, args...)
	}
	fixed, err := strconv.ParseBool(st.Meta[metaFixed])
	if err != nil {
		return bad("%s is %q, want true or false", metaFixed, st.Meta[metaFixed])
	}
	step, err := strconv.ParseInt(st.Meta[metaStep], 10, 64)
	if err != nil || step < 0 {
		return bad("%s is %q, want a step number", metaStep, st.Meta[metaStep])
	}
	byName := map[string]*safetensors.Tensor{}
	for i := range st.Tensors {
		byName[st.Tensors[i].Name] = &st.Tensors[i]
	}
	sel := m.selections()
	trackers := func(qName, readyName string, tracker func(s *siloState) *ThresholdTracker) error {
		qt, rt := byName[qName], byName[readyName]
		if qt == nil || rt == nil || qt.DType != safetensors.F32 || rt.DType != safetensors.U8 ||
			len(qt.Data) != 4*len(sel) || len(rt.Data) != len(sel) {
			return bad("want %s (F32) and %s (U8) with %d entries, one per silo", qName, readyName, len(sel))
		}
		for n, s := range sel {
			q := math.Float32frombits(binary.LittleEndian.Uint32(qt.Data[4*n:]))
			switch rt.Data[n] {
			case 0:
				tracker(s).Ready = false
			case 1:
				if !(q >= 0) || math.IsInf(float64(q), 0) {
					return bad("silo %q: threshold %v, want a finite number ≥ 0", s.Name, q)
				}
				tracker(s).Reset(q)
			default:
				return bad("silo %q: ready flag %d, want 0 or 1", s.Name, rt.Data[n])
			}
		}
		return nil
	}
	if err := trackers(stateThresholds, stateReady, func(s *siloState) *ThresholdTracker { return &s.tracker }); err != nil {
		return err
	}
	tensors := 2
	if m.opts.PaperAlg2 {
		if err := trackers(statePaperThresholds, statePaperReady, func(s *siloState) *ThresholdTracker { return &s.paper }); err != nil {
			return err
		}
		tensors += 2
	}
	for _, s := range sel {
		var total int64
		for j, i := range s.pieces {
			name := stateKeptPrefix + m.params[i].Name
			t := byName[name]
			if t == nil || t.DType != safetensors.I32 || len(t.Data)%4 != 0 {
				return bad("no I32 tensor %q", name)
			}
			tensors++
			idx := make([]int32, len(t.Data)/4)
			prev := int32(-1)
			for k := range idx {
				idx[k] = int32(binary.LittleEndian.Uint32(t.Data[4*k:]))
				if idx[k] <= prev || int(idx[k]) >= len(m.params[i].Value) {
					return bad("%q: position %d is %d after %d in a tensor of %d entries (want ascending positions inside it)",
						name, k, idx[k], prev, len(m.params[i].Value))
				}
				prev = idx[k]
			}
			s.kept[j] = idx
			s.prev[j] = s.prev[j][:0]
			total += int64(len(idx))
		}
		if total > s.k {
			return bad("silo %q keeps %d entries, more than its k = %d", s.Name, total, s.k)
		}
	}
	if tensors != len(st.Tensors) {
		return bad("%d tensors, want %d (the run's parameters or silos differ)", len(st.Tensors), tensors)
	}
	if m.fixed && !fixed {
		return bad("the mask is fixed from the start (random distance), the checkpoint says it is not")
	}
	m.fixed, m.step = fixed, step
	return nil
}

// Delta is the subset's delta after step: per parameter with kept
// entries, their positions (ascending) and current values, with the base
// model's hash and the method's settings in the metadata.
func (m *Method) Delta(step int64) *Delta {
	o := m.opts
	d := &Delta{Meta: Metadata{BaseSHA256: m.baseHash, Method: train.MethodDST, Epsilon: o.Eps, Distance: o.DistanceName,
		Silo: o.Silo, Steps: step, Extra: map[string]string{"threshold": o.Config().Threshold, "churn": strconv.FormatBool(o.Churn)}}}
	if o.Normalize != NormalizeNone {
		d.Meta.Extra["normalize"] = o.Normalize
	}
	for _, s := range m.selections() {
		for j, i := range s.pieces {
			idx := s.kept[j]
			if len(idx) == 0 {
				continue
			}
			p := m.params[i]
			td := TensorDelta{Name: p.Name, Dims: make([]int64, len(p.Shape)), Indices: make([]int64, len(idx)), Values: make([]float32, len(idx))}
			for n, dim := range p.Shape {
				td.Dims[n] = int64(dim)
			}
			for n, pos := range idx {
				td.Indices[n], td.Values[n] = int64(pos), p.Value[pos]
			}
			d.Tensors = append(d.Tensors, td)
		}
	}
	return d
}

// WriteRunFiles writes RUN/delta.safetensors (atomically), the delta after
// the checkpoint's step.
func (m *Method) WriteRunFiles(dir string, step int64) error {
	return WriteDelta(filepath.Join(dir, DeltaFile), m.Delta(step))
}
