package tpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/train"
)

// dstPlan runs package dst's method on the device. The CPU method itself
// (a *dst.Method, prepared on host copies of the seeds) is the planner: it
// makes the silos, the random mask and the normalization's groups, checks
// checkpoint state and writes the delta files, so both backends share
// those definitions and file formats; the device step does the rest with
// the same semantics (tested against it).
type dstPlan struct {
	planner *dst.Method
	opts    dst.Options
	params  []*train.TrainParam // the planner's: seeds at Prepare, the device's values after sync
	silos   []dst.Silo
	cfg     *DST

	units      []SelectionUnit // the step's, once compiled
	unitOfSilo []int           // non-normalized runs: silo → unit, -1 for an empty silo
	sizes      []int64         // entries per silo

	last     StepResult
	lastStep int64
	synced   int64 // the step whose device state the planner holds (-1: none)
}

// The planner's checkpoint state names (dst.Method.State's format).
const (
	methodStateQ     = "threshold:q"
	methodStateReady = "threshold:ready"
	methodStateKept  = "kept:"
	methodMetaFixed  = "fixed"
	methodMetaStep   = "step"
)

func newDSTPlan(m train.Method, params []train.ParamInfo, seedValues func(name string) []float32) (*dstPlan, error) {
	planner, ok := m.(*dst.Method)
	if !ok {
		return nil, fmt.Errorf("tpu: --method dst on pjrt needs package dst's method, got %T", m)
	}
	opts := planner.Options()
	if opts.PaperAlg2 {
		return nil, errors.New("--paper-alg2 is not supported on the pjrt backend (a CPU diagnostic)")
	}
	p := &dstPlan{planner: planner, opts: opts, synced: -1}
	for _, info := range params {
		seed := append([]float32(nil), seedValues(info.Name)...)
		p.params = append(p.params, &train.TrainParam{Name: info.Name, Shape: info.Shape, Value: seed})
	}
	if err := planner.Prepare(p.params); err != nil {
		return nil, err
	}
	p.silos = planner.Silos()
	cfg := &DST{Eps: opts.Eps, Exact: opts.Exact, Bisection: opts.Bisection, FixedSubset: !opts.Churn || opts.Random, BandCap: opts.BandCap}
	if !opts.Random {
		var err error
		if cfg.Distance, err = toDistance(opts.Distance); err != nil {
			return nil, err
		}
	}
	index := map[string]int{}
	for i, prm := range p.params {
		index[prm.Name] = i
	}
	for _, s := range p.silos {
		cfg.Silos = append(cfg.Silos, s.Params)
		var n int64
		for _, name := range s.Params {
			n += int64(len(p.params[index[name]].Value))
		}
		p.sizes = append(p.sizes, n)
	}
	if opts.Normalize != dst.NormalizeNone {
		order := make([]string, len(p.params))
		for i, prm := range p.params {
			order[i] = prm.Name
		}
		cfg.Normalize = &Normalization{Order: order, Scales: normalizationScales(opts.Normalize, p.silos, p.params, index)}
	}
	p.cfg = cfg
	return p, nil
}

// normalizationScales are dst's normalized-run factors fl32(1/c_S): c_S
// is the silo's size, or the mean |Θ0| of its entries (a silo of zero
// seeds takes the mean over all trainable entries, 1 if that is 0 too),
// summed in float64 in the same order as package dst sums them.
func normalizationScales(mode string, silos []dst.Silo, params []*train.TrainParam, index map[string]int) []float32 {
	var absSum float64
	var total int64
	for _, p := range params {
		for _, x := range p.Value {
			absSum += math.Abs(float64(x))
		}
		total += int64(len(p.Value))
	}
	overallMean := 1.0
	if total > 0 && absSum > 0 {
		overallMean = absSum / float64(total)
	}
	scales := make([]float32, len(silos))
	for i, s := range silos {
		var size int64
		var sum float64
		for _, name := range s.Params {
			v := params[index[name]].Value
			size += int64(len(v))
			for _, x := range v {
				sum += math.Abs(float64(x))
			}
		}
		c := float64(size)
		if mode == dst.NormalizeMean {
			c = overallMean
			if sum > 0 {
				c = sum / float64(size)
			}
		}
		if size == 0 {
			c = 1 // no entries to scale
		}
		scales[i] = float32(1 / c)
	}
	return scales
}

// start maps silos to the compiled step's units and sets the random
// baseline's mask (chosen by the planner, fixed from the first step).
func (p *dstPlan) start(t *Trainer) error {
	p.units = t.Units()
	p.unitOfSilo = make([]int, len(p.silos))
	for i := range p.unitOfSilo {
		p.unitOfSilo[i] = -1
	}
	for u, unit := range p.units {
		if unit.Silo >= 0 {
			p.unitOfSilo[unit.Silo] = u
		}
	}
	if !p.opts.Random {
		return nil
	}
	if err := p.setMasks(t); err != nil {
		return err
	}
	return t.SetState(ArgState, stateFixed, ir.FromBools(ir.Shape{}, []bool{true}))
}

// setMasks uploads the planner's subset as the device's masks.
func (p *dstPlan) setMasks(t *Trainer) error {
	for _, prm := range p.params {
		mask := make([]bool, len(prm.Value))
		for _, pos := range p.planner.Kept(prm.Name) {
			mask[pos] = true
		}
		if err := t.SetState(ArgState, prm.Name+"/mask", ir.FromBools(ir.Shape(prm.Shape), mask)); err != nil {
			return err
		}
	}
	return nil
}

// record keeps a step's outcome for Metrics.
func (p *dstPlan) record(res StepResult, step int64) { p.last, p.lastStep = res, step }

// metrics adds the last step's DST fields to a metrics record, as
// dst.Method.Metrics does (same names and meanings) — except the CPU's
// timings and band_entries, which have no device counterpart — plus
// exact_selections: how many selections the device ran exactly.
func (p *dstPlan) metrics(rec map[string]any) {
	res := p.last
	if p.lastStep == 0 {
		return
	}
	churn := p.lastStep > 1 // the CPU method reports churn from its second step
	var kept, size, alg2, alg2Size, entered int64
	var fallbacks, exact int
	for _, u := range res.Units {
		kept += u.Kept
		size += u.Size
		if u.Alg2 {
			alg2 += u.Alg2Count
			alg2Size += u.Size
		}
		entered += u.Changed
		if u.Fallback {
			fallbacks++
		}
		if u.Exact {
			exact++
		}
	}
	if size > 0 {
		rec["eps"] = float64(kept) / float64(size)
	}
	if alg2Size > 0 {
		rec["eps_alg2"] = float64(alg2) / float64(alg2Size)
	}
	if churn && kept > 0 {
		rec["churn"] = float64(entered) / float64(kept)
	}
	rec["exact_fallbacks"] = fallbacks
	rec["exact_selections"] = exact
	finite := func(q float32) bool { return !math.IsInf(float64(q), 0) && q == q }
	ptr := func(x float64) *float64 { return &x }
	frac := func(a, b int64) float64 {
		if b == 0 {
			return 0
		}
		return float64(a) / float64(b)
	}
	silos := make(map[string]dst.SiloMetrics, len(p.silos))
	if p.cfg.Normalize != nil {
		if g := res.Units[0]; res.Selected && finite(g.Threshold) {
			rec["q"] = float64(g.Threshold)
		}
		for i, s := range p.silos {
			silos[s.Name] = dst.SiloMetrics{Eps: frac(res.SiloKept[i], p.sizes[i]), K: res.SiloKept[i]}
		}
	} else {
		for i, s := range p.silos {
			var sm dst.SiloMetrics
			if u := p.unitOfSilo[i]; u >= 0 {
				r := res.Units[u]
				sm = dst.SiloMetrics{Eps: frac(r.Kept, r.Size), K: r.K}
				if r.Alg2 {
					sm.EpsAlg2 = ptr(frac(r.Alg2Count, r.Size))
				}
				if res.Selected && finite(r.Threshold) {
					sm.Q = ptr(float64(r.Threshold))
				}
				if churn {
					sm.Churn = ptr(frac(r.Changed, r.Kept))
				}
			} else if churn {
				sm.Churn = ptr(0)
			}
			silos[s.Name] = sm
		}
	}
	rec["silos"] = silos
}

// selections are the planner's selections' state rows: the units of the
// silos (an empty silo has none), or the global unit.
func (p *dstPlan) selectionUnits() []int {
	if p.cfg.Normalize != nil {
		return []int{0}
	}
	return p.unitOfSilo
}

// selectionParams lists each selection's parameters, in order.
func (p *dstPlan) selectionParams() [][]string {
	if p.cfg.Normalize != nil {
		return [][]string{p.cfg.Normalize.Order}
	}
	return p.cfg.Silos
}

// sync downloads the DST state (thresholds, masks, fixed flag) and the
// parameters after step, gives them to the planner — which checks them as
// it checks a checkpoint — and returns them in dst.Method.State's format.
func (p *dstPlan) sync(t *Trainer, step int64) (train.MethodState, error) {
	var st train.MethodState
	q, err := t.State(ArgState, stateQ)
	if err != nil {
		return st, err
	}
	ready, err := t.State(ArgState, stateReady)
	if err != nil {
		return st, err
	}
	fixed, err := t.State(ArgState, stateFixed)
	if err != nil {
		return st, err
	}
	sel := p.selectionUnits()
	qb, rb := make([]byte, 4*len(sel)), make([]byte, len(sel))
	for i, u := range sel {
		if u >= 0 {
			binary.LittleEndian.PutUint32(qb[4*i:], math.Float32bits(q.Float32s()[u]))
			if ready.Bools()[u] {
				rb[i] = 1
			}
		}
	}
	st.Meta = map[string]string{methodMetaFixed: strconv.FormatBool(fixed.Bools()[0]), methodMetaStep: strconv.FormatInt(step, 10)}
	st.Tensors = []safetensors.Tensor{
		{Name: methodStateQ, DType: safetensors.F32, Shape: []int64{int64(len(sel))}, Data: qb},
		{Name: methodStateReady, DType: safetensors.U8, Shape: []int64{int64(len(sel))}, Data: rb},
	}
	index := map[string]*train.TrainParam{}
	for _, prm := range p.params {
		index[prm.Name] = prm
	}
	for _, names := range p.selectionParams() {
		for _, name := range names {
			mask, err := t.State(ArgState, name+"/mask")
			if err != nil {
				return st, err
			}
			var data []byte
			for pos, k := range mask.Bools() {
				if k {
					data = binary.LittleEndian.AppendUint32(data, uint32(pos))
				}
			}
			st.Tensors = append(st.Tensors, safetensors.Tensor{Name: methodStateKept + name, DType: safetensors.I32,
				Shape: []int64{int64(len(data) / 4)}, Data: data})
			v, err := t.Param(name)
			if err != nil {
				return st, err
			}
			copy(index[name].Value, v.Float32s())
		}
	}
	if err := p.planner.LoadState(st); err != nil {
		return st, fmt.Errorf("tpu: the device's DST state: %w", err)
	}
	p.synced = step
	return st, nil
}

// check validates a checkpoint's method state (the planner's own check).
func (p *dstPlan) check(st train.MethodState) error {
	p.synced = -1
	return p.planner.LoadState(st)
}

// load uploads a checked method state: thresholds, masks, fixed flag.
func (p *dstPlan) load(t *Trainer, st train.MethodState) error {
	if err := p.planner.LoadState(st); err != nil {
		return err
	}
	var qt, rt *safetensors.Tensor
	for i := range st.Tensors {
		switch st.Tensors[i].Name {
		case methodStateQ:
			qt = &st.Tensors[i]
		case methodStateReady:
			rt = &st.Tensors[i]
		}
	}
	nu := len(p.units)
	q, ready := make([]float32, nu), make([]bool, nu)
	for i, u := range p.selectionUnits() {
		if u >= 0 {
			q[u] = math.Float32frombits(binary.LittleEndian.Uint32(qt.Data[4*i:]))
			ready[u] = rt.Data[i] == 1
		}
	}
	if err := t.SetState(ArgState, stateQ, ir.FromFloat32s(ir.Shape{nu}, q)); err != nil {
		return err
	}
	if err := t.SetState(ArgState, stateReady, ir.FromBools(ir.Shape{nu}, ready)); err != nil {
		return err
	}
	fixed, _ := strconv.ParseBool(st.Meta[methodMetaFixed])
	if err := t.SetState(ArgState, stateFixed, ir.FromBools(ir.Shape{}, []bool{fixed})); err != nil {
		return err
	}
	p.synced = -1
	return p.setMasks(t)
}

// deviceDST is the train.Method a run reports DST through when the
// device engine runs it: the step's metrics, the checkpoint state and the
// delta file, as package dst's method gives them on the CPU.
type deviceDST struct{ e *Engine }

var (
	_ train.Method        = (*deviceDST)(nil)
	_ train.RunFileWriter = (*deviceDST)(nil)
)

func (m *deviceDST) Name() string { return train.MethodDST }

// Prepare does nothing: the engine prepared the method.
func (m *deviceDST) Prepare([]*train.TrainParam) error { return nil }

// Update is not called: the update runs inside the device step.
func (m *deviceDST) Update([]*train.TrainParam, train.Optimizer, train.StepInfo, int) error {
	return errors.New("tpu: DST runs inside the device step")
}

func (m *deviceDST) Metrics(rec map[string]any) { m.e.dst.metrics(rec) }

// State is the state the last checkpoint synced (the engine's State
// returns it too).
func (m *deviceDST) State() train.MethodState {
	st, err := m.e.State()
	if err != nil {
		return train.MethodState{}
	}
	return st.Method
}

// LoadState is done by the engine's Restore.
func (m *deviceDST) LoadState(st train.MethodState) error { return m.e.dst.check(st) }

// WriteRunFiles writes the delta after step, from the device's subset and
// values (synced at the checkpoint that precedes this call).
func (m *deviceDST) WriteRunFiles(dir string, step int64) error {
	p := m.e.dst
	if p.synced != step {
		if m.e.trainer == nil {
			return errors.New("tpu: no step has run: no delta to write")
		}
		if _, err := p.sync(m.e.trainer, step); err != nil {
			return err
		}
	}
	return p.planner.WriteRunFiles(dir, step)
}
