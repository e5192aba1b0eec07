package dst

import (
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"strconv"

	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// The method's checkpoint state (method.safetensors and state.json's
// method_meta): per unit — a silo, or the one selection of a normalized
// run — the carried threshold and whether Algorithm 2 may start from it,
// the printed Algorithm 2's own ones with --paper-alg2, the subset as the
// kept positions of every parameter (in unit order), whether the subset is
// fixed, and the step.
const (
	stateThresholds      = "threshold:q"     // F32 [units]
	stateReady           = "threshold:ready" // U8 [units]: 0 or 1
	statePaperThresholds = "paper_alg2:q"
	statePaperReady      = "paper_alg2:ready"
	stateKeptPrefix      = "kept:" // I32 [kept]: ascending positions
	metaFixed            = "fixed"
	metaStep             = "step"
)

// State is the checkpoint form of the selection's state after step.
func (m *Method) State(sel *update.SelectionState, step int64) train.MethodState {
	st := train.MethodState{
		Meta:    map[string]string{metaFixed: strconv.FormatBool(sel.Fixed), metaStep: strconv.FormatInt(step, 10)},
		Tensors: thresholdTensors(stateThresholds, stateReady, sel.Q, sel.Ready),
	}
	if m.opts.PaperAlg2 {
		st.Tensors = append(st.Tensors, thresholdTensors(statePaperThresholds, statePaperReady, sel.PaperQ, sel.PaperReady)...)
	}
	for _, u := range m.sel.Units {
		for _, p := range u.Pieces {
			idx := sel.Kept[p.Param]
			data := make([]byte, 4*len(idx))
			for n, pos := range idx {
				binary.LittleEndian.PutUint32(data[4*n:], uint32(pos))
			}
			st.Tensors = append(st.Tensors, safetensors.Tensor{Name: stateKeptPrefix + p.Param, DType: safetensors.I32,
				Shape: []int64{int64(len(idx))}, Data: data})
		}
	}
	return st
}

func thresholdTensors(qName, readyName string, q []float32, ready []bool) []safetensors.Tensor {
	qb, rb := make([]byte, 4*len(q)), make([]byte, len(ready))
	for i := range q {
		binary.LittleEndian.PutUint32(qb[4*i:], math.Float32bits(q[i]))
		if ready[i] {
			rb[i] = 1
		}
	}
	return []safetensors.Tensor{
		{Name: qName, DType: safetensors.F32, Shape: []int64{int64(len(q))}, Data: qb},
		{Name: readyName, DType: safetensors.U8, Shape: []int64{int64(len(ready))}, Data: rb},
	}
}

// LoadState reads State back after Prepare, checking it against the
// selection.
func (m *Method) LoadState(st train.MethodState) (*update.SelectionState, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("dst checkpoint state: "+format, args...)
	}
	fixed, err := strconv.ParseBool(st.Meta[metaFixed])
	if err != nil {
		return nil, bad("%s is %q, want true or false", metaFixed, st.Meta[metaFixed])
	}
	if step, err := strconv.ParseInt(st.Meta[metaStep], 10, 64); err != nil || step < 0 {
		return nil, bad("%s is %q, want a step number", metaStep, st.Meta[metaStep])
	}
	byName := map[string]*safetensors.Tensor{}
	for i := range st.Tensors {
		byName[st.Tensors[i].Name] = &st.Tensors[i]
	}
	units := len(m.sel.Units)
	sel := update.NewSelectionState(m.sel)
	sel.Fixed = fixed
	thresholds := func(qName, readyName string, q []float32, ready []bool) error {
		qt, rt := byName[qName], byName[readyName]
		if qt == nil || rt == nil || qt.DType != safetensors.F32 || rt.DType != safetensors.U8 ||
			len(qt.Data) != 4*units || len(rt.Data) != units {
			return bad("want %s (F32) and %s (U8) with %d entries, one per silo", qName, readyName, units)
		}
		for n := range units {
			q[n] = math.Float32frombits(binary.LittleEndian.Uint32(qt.Data[4*n:]))
			switch rt.Data[n] {
			case 0, 1:
				ready[n] = rt.Data[n] == 1
			default:
				return bad("silo %q: ready flag %d, want 0 or 1", m.sel.Units[n].Name, rt.Data[n])
			}
		}
		return nil
	}
	if err := thresholds(stateThresholds, stateReady, sel.Q, sel.Ready); err != nil {
		return nil, err
	}
	tensors := 2
	if m.opts.PaperAlg2 {
		if err := thresholds(statePaperThresholds, statePaperReady, sel.PaperQ, sel.PaperReady); err != nil {
			return nil, err
		}
		tensors += 2
	}
	for _, u := range m.sel.Units {
		for _, p := range u.Pieces {
			name := stateKeptPrefix + p.Param
			t := byName[name]
			if t == nil || t.DType != safetensors.I32 || len(t.Data)%4 != 0 {
				return nil, bad("no I32 tensor %q", name)
			}
			tensors++
			idx := make([]int32, len(t.Data)/4)
			for k := range idx {
				idx[k] = int32(binary.LittleEndian.Uint32(t.Data[4*k:]))
			}
			sel.Kept[p.Param] = idx
		}
	}
	if tensors != len(st.Tensors) {
		return nil, bad("%d tensors, want %d (the run's parameters or silos differ)", len(st.Tensors), tensors)
	}
	if err := m.sel.CheckState(sel, m.pieces); err != nil {
		return nil, bad("%v", err)
	}
	return sel, nil
}

// Delta is the subset's delta of a state: per parameter with kept
// entries, their positions (ascending) and values, with the base model's
// hash and the method's settings in the metadata.
func (m *Method) Delta(st *train.EngineState) (*Delta, error) {
	o := m.opts
	d := &Delta{Meta: Metadata{BaseSHA256: m.baseHash, Method: train.MethodDST, Epsilon: o.Eps, Distance: o.Distance,
		Silo: o.Silo, Steps: st.Step, Extra: map[string]string{"threshold": o.Threshold, "churn": strconv.FormatBool(o.Churn)}}}
	if o.Normalize != NormalizeNone {
		d.Meta.Extra["normalize"] = o.Normalize
	}
	if st.Selection == nil {
		return nil, fmt.Errorf("dst: the engine's state has no subset")
	}
	shapes := map[string][]int{}
	for _, p := range m.params {
		shapes[p.Name] = []int(p.Tensor.Shape())
	}
	for _, u := range m.sel.Units {
		for _, p := range u.Pieces {
			idx := st.Selection.Kept[p.Param]
			if len(idx) == 0 {
				continue
			}
			values := st.Params[p.Param]
			shape := shapes[p.Param]
			td := TensorDelta{Name: p.Param, Dims: make([]int64, len(shape)), Indices: make([]int64, len(idx)), Values: make([]float32, len(idx))}
			for n, dim := range shape {
				td.Dims[n] = int64(dim)
			}
			for n, pos := range idx {
				td.Indices[n], td.Values[n] = int64(pos), values[pos]
			}
			if seed, half := m.halfSeeds[p.Param]; half {
				td.ValueDType = ValueDType(seed.DType)
				d.RoundedToSeed += roundedToSeed(&td, seed.Data)
			}
			d.Tensors = append(d.Tensors, td)
		}
	}
	if len(m.halfSeeds) > 0 {
		d.Meta.Extra["rounded_to_seed"] = strconv.Itoa(d.RoundedToSeed)
	}
	return d, nil
}

// roundedToSeed counts the entries of td whose value, rounded to the
// half-precision dtype td stores, equals the stored seed (seed: the
// initializer's little-endian 16-bit values): entries the subset keeps
// that a half-precision model cannot tell from unchanged.
func roundedToSeed(td *TensorDelta, seed []byte) int {
	enc, bad := td.encode(td.ValueDType)
	if bad >= 0 {
		return 0
	}
	n := 0
	for i, pos := range td.Indices {
		if enc[2*i] == seed[2*pos] && enc[2*i+1] == seed[2*pos+1] {
			n++
		}
	}
	return n
}

// WriteRunFiles writes RUN/delta.safetensors (atomically): the delta of
// the checkpoint's state.
func (m *Method) WriteRunFiles(dir string, st *train.EngineState) error {
	d, err := m.Delta(st)
	if err != nil {
		return err
	}
	return WriteDelta(filepath.Join(dir, DeltaFile), d)
}
