package tpu

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// Step-scalar layout: one float32 vector fed every step (StepScalars
// computes it from package update's per-step scalars).
const (
	// AdamW, update.AdamWScalars in its order.
	scDecay = iota
	scBeta1
	scOneMinusBeta1
	scBeta2
	scOneMinusBeta2
	scBiasCorrection2Sqrt
	scEps
	scNegStepSize
	// scFactor is DST's Algorithm 2 factor r (after every optimizer's
	// scalars).
	scFactor
	numStepScalars
)

const (
	// SGD, update.SGDScalars.
	scNegLR = iota
	scMomentum
	scOneMinusDampening
	scWeightDecay
	scFirstStep
)

const (
	// Adafactor, update.AdafactorScalars rounded to float32.
	scAlphaBase = iota // α before the parameter scaling
	scDecay2           // β̂2t
	scOneMinusDecay2
	scAFBeta1
	scAFOneMinusBeta1
	scEps1
	scEps2
	scClip
)

// StepScalars computes the step program's per-step scalars of step t:
// the optimizer's (package update's, as the CPU's kernels take them) and
// the selection's Algorithm 2 factor r.
func StepScalars(prog *update.Program, t update.StepInfo) ([]float32, error) {
	if t.Step < 1 {
		return nil, fmt.Errorf("tpu: optimizer step %d, want ≥ 1", t.Step)
	}
	s := make([]float32, numStepScalars)
	o := prog.Optimizer
	switch {
	case o.AdamW != nil:
		c := o.AdamW.Scalars(t)
		s[scDecay], s[scBeta1], s[scOneMinusBeta1] = c.Decay, c.Beta1, c.OneMinusBeta1
		s[scBeta2], s[scOneMinusBeta2], s[scBiasCorrection2Sqrt] = c.Beta2, c.OneMinusBeta2, c.BiasCorrection2Sqrt
		s[scEps], s[scNegStepSize] = c.Eps, c.NegStepSize
	case o.SGD != nil:
		c := o.SGD.Scalars(t)
		s[scNegLR], s[scMomentum], s[scOneMinusDampening], s[scWeightDecay] = c.NegLR, c.Momentum, c.OneMinusDampening, c.WeightDecay
		if c.First {
			s[scFirstStep] = 1
		}
	case o.Adafactor != nil:
		c := o.Adafactor.Scalars(t)
		s[scAlphaBase] = float32(c.Alpha)
		s[scDecay2], s[scOneMinusDecay2] = float32(c.Beta2), float32(1-c.Beta2)
		s[scAFBeta1], s[scAFOneMinusBeta1] = float32(c.Beta1), float32(1-c.Beta1)
		s[scEps1], s[scEps2], s[scClip] = float32(c.Eps1), float32(c.Eps2), float32(c.ClipThreshold)
	default:
		return nil, fmt.Errorf("tpu: unknown optimizer %q", o.Name)
	}
	if prog.Selection != nil {
		s[scFactor] = prog.Selection.Bisection.Factor
	}
	return s, nil
}

// Result names of the step programs: the batch's mean loss and the
// global L2 norm of the gradients the update read (float32 scalars).
const (
	ResultLoss     = "loss"
	ResultGradNorm = "grad_norm"
)

// LowerTrainStep lowers one training step of tg, a graph with outputs
// "loss" and "grad:NAME" for each trainable parameter NAME (what
// ir.TrainingGraph produces), followed by the update program prog (the
// gradients' global norm and, with prog.MaxGradNorm, their clipping; the
// optimizer; with a selection, DST).
//
// Arguments, in order: trainable parameters (aliased to their updated
// results), frozen parameters, optimizer state per trainable parameter
// ("NAME/exp_avg", ...; aliased), DST state (seeds "NAME" as ArgSeed,
// masks "NAME/mask", dst:q, dst:ready; all but the seeds aliased), the
// step scalars, then tg's inputs. Results: the updated parameters and
// state (same names), then "loss", "grad_norm" and, with DST, the
// per-silo metrics.
func LowerTrainStep(tg *ir.Graph, prog *update.Program) (*Program, error) {
	tr, err := splitTraining(tg)
	if err != nil {
		return nil, err
	}
	if err := prog.Optimizer.Check(); err != nil {
		return nil, fmt.Errorf("tpu: %w", err)
	}
	return newStepLowering(prog).lowerStep(tg, tr)
}

// trainingParts are a training graph's loss, its trainable parameters
// (those with a gradient output) with their gradients, and its frozen
// parameters.
type trainingParts struct {
	loss              *ir.Value
	grads             map[string]*ir.Value
	trainable, frozen []*ir.Param
}

// splitTraining checks a training graph and splits it into its parts.
func splitTraining(tg *ir.Graph) (*trainingParts, error) {
	if err := tg.Validate(); err != nil {
		return nil, fmt.Errorf("tpu: %w", err)
	}
	outputs := map[string]*ir.Value{}
	for _, o := range tg.Outputs {
		outputs[o.Name] = o.Value
	}
	tr := &trainingParts{loss: outputs[ResultLoss], grads: map[string]*ir.Value{}}
	if v := tr.loss; v == nil || v.DType != ir.Float32 || v.Shape.Size() != 1 {
		return nil, errors.New(`tpu: the training graph needs a float32 scalar output "loss"`)
	}
	for _, p := range tg.Params {
		g := outputs[ir.GradPrefix+p.Name]
		if g == nil {
			tr.frozen = append(tr.frozen, p)
			continue
		}
		if p.Value.DType != ir.Float32 || g.DType != ir.Float32 || !g.Shape.Equal(p.Value.Shape) {
			return nil, fmt.Errorf("tpu: %w: parameter %q is %v with gradient %v; training needs float32 of the same shape", ir.ErrNotSupported, p.Name, p.Value.Type, g.Type)
		}
		tr.trainable = append(tr.trainable, p)
		tr.grads[p.Name] = g
	}
	if len(tr.trainable) == 0 {
		return nil, errors.New(`tpu: the training graph has no "grad:NAME" output for any parameter`)
	}
	return tr, nil
}

// trained is a trainable parameter as the update program sees it.
type trained struct {
	name  string
	shape ir.Shape
}

func (tr *trainingParts) trained() []trained {
	ps := make([]trained, len(tr.trainable))
	for i, p := range tr.trainable {
		ps[i] = trained{p.Name, p.Value.Shape}
	}
	return ps
}

type stepLowering struct {
	prog    *update.Program
	f       *fn
	vals    map[*ir.Value]value
	args    []Arg
	results []value
	rnames  []Result
	// aliasTo maps an argument index to the name of the result that
	// reuses its buffer; resolved once the results are known.
	aliasTo map[int]string
}

func newStepLowering(prog *update.Program) *stepLowering {
	return &stepLowering{prog: prog, f: newFn("    "), vals: map[*ir.Value]value{}}
}

func (s *stepLowering) arg(kind ArgKind, name string, t ir.Type, aliasName string) value {
	i := len(s.args)
	s.args = append(s.args, Arg{Kind: kind, Name: name, Type: t, AliasOf: -1})
	if aliasName != "" {
		if s.aliasTo == nil {
			s.aliasTo = map[int]string{}
		}
		s.aliasTo[i] = aliasName
	}
	return argValue(i, t)
}

func (s *stepLowering) result(name string, v value) {
	s.results = append(s.results, v)
	s.rnames = append(s.rnames, Result{Name: name, Type: v.t})
}

// stepArgs are the values of an update's arguments.
type stepArgs struct {
	params  map[string]value // trainable parameters
	state   map[string]value // optimizer slots, "NAME/SLOT"
	layout  *dstLayout       // nil without DST
	dst     dstState
	scalars value
}

// lowerStep lowers a training step: the forward and backward graph, the
// update from its gradients, and the results.
func (s *stepLowering) lowerStep(tg *ir.Graph, tr *trainingParts) (*Program, error) {
	ps := tr.trained()
	a := &stepArgs{params: s.declareParams(ps)}
	for _, p := range tr.trainable {
		s.vals[p.Value] = a.params[p.Name]
	}
	if err := s.declareFrozen(tr.frozen); err != nil {
		return nil, err
	}
	if err := s.declareState(ps, a); err != nil {
		return nil, err
	}
	a.scalars = s.arg(ArgStepScalars, "step", ir.Type{DType: ir.Float32, Shape: ir.Shape{numStepScalars}}, "")
	if err := s.declareInputs(tg); err != nil {
		return nil, err
	}
	// Forward and backward.
	f := s.f
	l := &graphLowering{f: f, vals: s.vals}
	if err := l.lowerNodes(tg); err != nil {
		return nil, err
	}
	loss, err := l.get(tr.loss)
	if err != nil {
		return nil, err
	}
	loss = f.reshape(loss, ir.Shape{})
	grads := map[string]value{}
	for _, p := range ps {
		if grads[p.name], err = l.get(tr.grads[p.name]); err != nil {
			return nil, err
		}
	}
	u, err := s.update(ps, grads, a)
	if err != nil {
		return nil, err
	}
	// A non-finite loss leaves every parameter and all state as they were
	// (the step is not taken), as the CPU engine does.
	finite := isFinite(f, loss)
	s.updateResults(ps, a, u, func(v, old value) value { return f.selectOp(finite, v, old) })
	s.result(ResultLoss, loss)
	s.result(ResultGradNorm, u.norm)
	for _, r := range u.dst.results {
		s.result(r.name, r.v)
	}
	if err := f.Err(); err != nil {
		return nil, fmt.Errorf("tpu: step results: %w", err)
	}
	return s.program(a.layout)
}

// isFinite emits |x| < +Inf for a float32 scalar (false for NaN).
func isFinite(f *fn, x value) value {
	return f.compare("LT", f.unary("stablehlo.abs", x), f.scalarConst(ir.Float32, math.Inf(1)))
}

// declareParams declares the trainable parameters' arguments, each
// aliased to its updated result.
func (s *stepLowering) declareParams(ps []trained) map[string]value {
	params := map[string]value{}
	for _, p := range ps {
		params[p.name] = s.arg(ArgParam, p.name, ir.Type{DType: ir.Float32, Shape: p.shape}, p.name)
	}
	return params
}

// declareFrozen declares the frozen parameters' arguments (read only).
func (s *stepLowering) declareFrozen(frozen []*ir.Param) error {
	for _, p := range frozen {
		if _, ok := elemType(p.Value.DType); !ok {
			return fmt.Errorf("tpu: %w: parameter %q is %s", ir.ErrNotSupported, p.Name, p.Value.DType)
		}
		s.vals[p.Value] = s.arg(ArgParam, p.Name, p.Value.Type, "")
	}
	return nil
}

// declareState declares the update's state: the optimizer's slots, then
// DST's seeds, masks, thresholds and fixed flag (all but the seeds aliased
// to their results).
func (s *stepLowering) declareState(ps []trained, a *stepArgs) error {
	a.state = map[string]value{}
	for _, p := range ps {
		for _, st := range s.prog.Optimizer.Slots(p.shape) {
			name := p.name + "/" + st.Name
			a.state[name] = s.arg(ArgState, name, ir.Type{DType: ir.Float32, Shape: st.Shape}, name)
		}
	}
	d := s.prog.Selection
	if d == nil {
		return nil
	}
	shapes := make(map[string]ir.Shape, len(ps))
	for _, p := range ps {
		shapes[p.name] = p.shape
	}
	var err error
	if a.layout, err = layoutDST(d, shapes); err != nil {
		return err
	}
	ds := &a.dst
	ds.seeds, ds.masks = map[string]value{}, map[string]value{}
	for _, u := range a.layout.units {
		for _, p := range u.pieces {
			ds.seeds[p.name] = s.arg(ArgSeed, p.name, ir.Type{DType: ir.Float32, Shape: p.shape}, "")
		}
	}
	for _, u := range a.layout.units {
		for _, p := range u.pieces {
			name := p.name + "/mask"
			ds.masks[p.name] = s.arg(ArgState, name, ir.Type{DType: ir.Bool, Shape: p.shape}, name)
		}
	}
	nu := len(a.layout.units)
	ds.q = s.arg(ArgState, stateQ, ir.Type{DType: ir.Float32, Shape: ir.Shape{nu}}, stateQ)
	ds.ready = s.arg(ArgState, stateReady, ir.Type{DType: ir.Bool, Shape: ir.Shape{nu}}, stateReady)
	ds.fixed = s.arg(ArgState, stateFixed, ir.Type{DType: ir.Bool, Shape: ir.Shape{}}, stateFixed)
	return nil
}

// declareInputs declares the graph's inputs, fed every run.
func (s *stepLowering) declareInputs(tg *ir.Graph) error {
	for _, v := range tg.Inputs {
		if _, ok := elemType(v.DType); !ok {
			return fmt.Errorf("tpu: %w: input %q is %s", ir.ErrNotSupported, v.Name, v.DType)
		}
		s.vals[v] = s.arg(ArgInput, v.Name, v.Type, "")
	}
	return nil
}

// updateOut is what the update program computes.
type updateOut struct {
	updated, state map[string]value // Θ (after DST's selection) and the optimizer's new state
	dst            dstResult
	norm           value // the gradients' global L2 norm, before clipping
}

// update emits the update program: the gradients' global norm and, with
// Program.MaxGradNorm, their clipping; the optimizer's step Θ̂ and new
// state from them; then DST's selection on Θ̂.
func (s *stepLowering) update(ps []trained, grads map[string]value, a *stepArgs) (u updateOut, err error) {
	f := s.f
	sc := func(i int) value { return scalarAt(f, a.scalars, i) }
	var clip func(value) value
	u.norm, clip = s.clipGradients(ps, grads)
	u.updated, u.state = map[string]value{}, map[string]value{}
	for _, p := range ps {
		u.updated[p.name] = s.optimizerStep(s.prog.Optimizer, p.name, a.params[p.name], clip(grads[p.name]), a.state, u.state, sc)
	}
	if err := f.Err(); err != nil {
		return u, fmt.Errorf("tpu: optimizer: %w", err)
	}
	if a.layout == nil {
		return u, nil
	}
	a.dst.factor = sc(scFactor)
	u.dst = s.dstUpdate(a.layout, u.updated, a.dst)
	for name, v := range u.dst.params {
		u.updated[name] = v
	}
	if err := f.Err(); err != nil {
		return u, fmt.Errorf("tpu: DST update: %w", err)
	}
	return u, nil
}

// clipGradients emits the gradients' global L2 norm and what clips a
// gradient: g·min(1, max/(norm+1e-6)) as torch.nn.utils.clip_grad_norm_
// computes it (update.ClipFactor), or g itself when the program does not
// clip. The norm is computed in float32, as torch does for float32
// gradients (a device's f64 is slow or missing): each parameter's sum of
// squares, those sums added in the order of the parameters' names (so
// that every program over the same parameters adds them alike), the
// square root.
func (s *stepLowering) clipGradients(ps []trained, grads map[string]value) (norm value, clip func(value) value) {
	f := s.f
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.name
	}
	slices.Sort(names)
	zero := f.scalarConst(ir.Float32, 0)
	var total value
	for i, name := range names {
		g := grads[name]
		sq := f.reduce(f.mul(g, g), zero, reduceAdd, allAxes(g.rank()))
		if i == 0 {
			total = sq
		} else {
			total = f.add(total, sq)
		}
	}
	norm = f.unary("stablehlo.sqrt", total)
	if !(s.prog.MaxGradNorm > 0) {
		return norm, func(g value) value { return g }
	}
	factor := f.min(f.scalarConst(ir.Float32, 1),
		f.div(f.scalarConst(ir.Float32, s.prog.MaxGradNorm), f.add(norm, f.scalarConst(ir.Float32, 1e-6))))
	return norm, func(g value) value { return f.mul(g, f.broadcastTo(factor, g.shape())) }
}

// updateResults emits the updated parameters, optimizer state and DST
// state as results (named as the arguments they are aliased to), each
// through keep(new, old).
func (s *stepLowering) updateResults(ps []trained, a *stepArgs, u updateOut, keep func(v, old value) value) {
	for _, p := range ps {
		s.result(p.name, keep(u.updated[p.name], a.params[p.name]))
	}
	for _, p := range ps {
		for _, st := range s.prog.Optimizer.Slots(p.shape) {
			name := p.name + "/" + st.Name
			s.result(name, keep(u.state[name], a.state[name]))
		}
	}
	if a.layout == nil {
		return
	}
	ds, dr := a.dst, u.dst
	for _, unit := range a.layout.units {
		for _, p := range unit.pieces {
			s.result(p.name+"/mask", keep(dr.masks[p.name], ds.masks[p.name]))
		}
	}
	s.result(stateQ, keep(dr.q, ds.q))
	s.result(stateReady, keep(dr.ready, ds.ready))
	s.result(stateFixed, keep(dr.fixed, ds.fixed))
}

// program resolves the arguments' aliases to their results and renders
// the module.
func (s *stepLowering) program(layout *dstLayout) (*Program, error) {
	p := &Program{Results: s.rnames}
	if layout != nil {
		for _, u := range layout.units {
			p.Units = append(p.Units, u.SelectionUnit)
		}
	}
	for i, a := range s.args {
		if name, ok := s.aliasTo[i]; ok {
			a.AliasOf = p.ResultIndex(name)
			if a.AliasOf < 0 || !p.Results[a.AliasOf].Type.Shape.Equal(a.Type.Shape) || p.Results[a.AliasOf].Type.DType != a.Type.DType {
				return nil, fmt.Errorf("tpu: internal error: argument %q has no matching result to alias", a.Name)
			}
		}
		p.Args = append(p.Args, a)
	}
	p.Text = module(p.Args, s.f, s.results)
	return p, nil
}

func reshapeAll(f *fn, vs []value, shape ir.Shape) []value {
	out := make([]value, len(vs))
	for i, v := range vs {
		out[i] = f.reshape(v, shape)
	}
	return out
}

// ---------------------------------------------------------------- optimizers

// optimizerStep emits one optimizer step for parameter name and returns
// Θ̂; the new state goes into newState. The formulas are package update's
// (update.AdamWScalars, update.SGDScalars document them), each operation
// rounded to float32.
func (s *stepLowering) optimizerStep(o update.Optimizer, name string, p, g value, state, newState map[string]value, sc func(int) value) value {
	f := s.f
	b := func(v value) value { return f.broadcastTo(v, p.shape()) }
	// AdamW's and SGD's slots are vectors of the parameter's entries.
	shaped := func(slot string) value { return f.reshape(state[name+"/"+slot], p.shape()) }
	flat := func(v value) value { return f.reshape(v, ir.Shape{p.shape().Size()}) }
	switch {
	case o.AdamW != nil:
		m, v := shaped("exp_avg"), shaped("exp_avg_sq")
		pd := f.mul(p, b(sc(scDecay)))
		m2 := f.add(f.mul(g, b(sc(scOneMinusBeta1))), f.mul(m, b(sc(scBeta1))))
		v2 := f.add(f.mul(f.mul(b(sc(scOneMinusBeta2)), g), g), f.mul(v, b(sc(scBeta2))))
		den := f.add(f.div(f.unary("stablehlo.sqrt", v2), b(sc(scBiasCorrection2Sqrt))), b(sc(scEps)))
		newState[name+"/exp_avg"], newState[name+"/exp_avg_sq"] = flat(m2), flat(v2)
		return f.add(pd, f.div(f.mul(b(sc(scNegStepSize)), m2), den))
	case o.SGD != nil:
		h := o.SGD
		d := g
		if h.WeightDecay != 0 {
			d = f.add(f.mul(p, b(sc(scWeightDecay))), d)
		}
		if h.Momentum != 0 {
			buf := shaped("momentum_buffer")
			first := f.compare("NE", sc(scFirstStep), f.scalarConst(ir.Float32, 0))
			decayed := f.add(f.mul(d, b(sc(scOneMinusDampening))), f.mul(buf, b(sc(scMomentum))))
			buf2 := f.selectOp(first, d, decayed)
			newState[name+"/momentum_buffer"] = flat(buf2)
			if h.Nesterov {
				d = f.add(f.mul(buf2, b(sc(scMomentum))), d)
			} else {
				d = buf2
			}
		}
		return f.add(f.mul(d, b(sc(scNegLR))), p)
	case o.Adafactor != nil:
		return s.adafactorStep(*o.Adafactor, name, p, g, state, newState, sc)
	}
	f.fail("unknown optimizer %q", o.Name)
	return p
}

// adafactorStep is update.Adafactor: factored second moments over the
// last two axes (one matrix per leading index), update clipping by
// RMS(U)/d over the whole tensor, the step size α (relative or absolute)
// scaled by the parameter's RMS, all in float32 (the CPU computes the
// factors and the RMS in float64).
func (s *stepLowering) adafactorStep(o update.Adafactor, name string, p, g value, state, newState map[string]value, sc func(int) value) value {
	f := s.f
	shape := p.shape()
	r := len(shape)
	full := func(v value) value { return f.broadcastTo(v, shape) }
	decay, oneMinus := sc(scDecay2), sc(scOneMinusDecay2)
	sq := f.add(f.mul(g, g), full(sc(scEps1)))
	zero := f.scalarConst(ir.Float32, 0)
	var u value
	if r >= 2 {
		R, C := state[name+"/exp_avg_sq_row"], state[name+"/exp_avg_sq_col"]
		rowSums := f.reduce(sq, zero, reduceAdd, []int{r - 1})
		colSums := f.reduce(sq, zero, reduceAdd, []int{r - 2})
		R2 := f.add(f.mul(f.broadcastTo(decay, R.shape()), R), f.mul(f.broadcastTo(oneMinus, R.shape()), rowSums))
		C2 := f.add(f.mul(f.broadcastTo(decay, C.shape()), C), f.mul(f.broadcastTo(oneMinus, C.shape()), colSums))
		newState[name+"/exp_avg_sq_row"], newState[name+"/exp_avg_sq_col"] = R2, C2
		// rowScale = 1/sqrt(R/ΣR) per matrix, colScale = 1/sqrt(C).
		lead := make([]int, r-2)
		for i := range lead {
			lead[i] = i
		}
		sumR := f.reduce(R2, zero, reduceAdd, []int{r - 2})
		rowScale := f.unary("stablehlo.rsqrt", f.div(R2, f.broadcastInDim(sumR, R2.shape(), lead)))
		colScale := f.unary("stablehlo.rsqrt", C2)
		rs := f.broadcastInDim(rowScale, shape, append(append([]int{}, lead...), r-2))
		cs := f.broadcastInDim(colScale, shape, append(append([]int{}, lead...), r-1))
		u = f.mul(f.mul(rs, cs), g)
	} else {
		V := state[name+"/exp_avg_sq"]
		V2 := f.add(f.mul(full(decay), V), f.mul(full(oneMinus), sq))
		newState[name+"/exp_avg_sq"] = V2
		u = f.mul(f.unary("stablehlo.rsqrt", V2), g)
	}
	all := make([]int, r)
	for i := range all {
		all[i] = i
	}
	n := f.scalarConst(ir.Float32, float64(max(shape.Size(), 1)))
	rmsU := f.unary("stablehlo.sqrt", f.div(f.reduce(f.mul(u, u), zero, reduceAdd, all), n))
	rmsX := f.unary("stablehlo.sqrt", f.div(f.reduce(f.mul(p, p), zero, reduceAdd, all), n))
	alpha := sc(scAlphaBase)
	if o.ScaleParameter {
		alpha = f.mul(alpha, f.max(sc(scEps2), rmsX))
	}
	scale := f.div(alpha, f.max(f.scalarConst(ir.Float32, 1), f.div(rmsU, sc(scClip))))
	u = f.mul(u, full(scale))
	if o.Beta1 != 0 {
		m := state[name+"/exp_avg"]
		m2 := f.add(f.mul(u, full(sc(scAFOneMinusBeta1))), f.mul(m, full(sc(scAFBeta1))))
		newState[name+"/exp_avg"] = m2
		u = m2
	}
	return f.sub(p, u)
}

// describe lists a program's arguments and results (for errors and
// debugging).
func (p *Program) describe() string {
	var b strings.Builder
	for i, a := range p.Args {
		fmt.Fprintf(&b, "arg %d %v %q %v alias %d\n", i, a.Kind, a.Name, a.Type, a.AliasOf)
	}
	for i, r := range p.Results {
		fmt.Fprintf(&b, "result %d %q %v\n", i, r.Name, r.Type)
	}
	return b.String()
}
