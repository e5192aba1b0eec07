package tpu

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/dstune/dstune/ir"
)

// OptimizerKind names an optimizer.
type OptimizerKind uint8

const (
	AdamW OptimizerKind = iota
	Adafactor
	SGD
)

func (k OptimizerKind) String() string {
	switch k {
	case AdamW:
		return "adamw"
	case Adafactor:
		return "adafactor"
	case SGD:
		return "sgd"
	}
	return fmt.Sprintf("OptimizerKind(%d)", k)
}

// Optimizer holds an optimizer's hyperparameters; the learning rate and
// step number come with every step. The element-wise math is package
// kernels' (AdamWStep, SGDStep, Adafactor*), written as StableHLO; the
// step-dependent scalars are computed on the host in float64 exactly as
// those kernels compute them.
type Optimizer struct {
	Kind OptimizerKind
	// AdamW (torch.optim.AdamW): Beta1, Beta2, Eps, WeightDecay.
	// SGD (torch.optim.SGD): Momentum, Dampening, Nesterov, WeightDecay.
	// Adafactor (train.AdafactorConfig's definition): Beta1 (0: no first
	// moment), DecayRate (β̂2t = 1 − t^DecayRate; 0 means −0.8), Eps1
	// (added to squared gradients), Eps2 (floor of the parameter RMS),
	// ClipThreshold (d), RelativeStep (α = min(1e-2, 1/√t)·lr, lr then
	// being the schedule's factor, instead of α = lr), ScaleParameter (α
	// also multiplied by max(Eps2, RMS(X))).
	Beta1, Beta2, Eps, WeightDecay float64
	Momentum, Dampening            float64
	Nesterov                       bool
	Eps1, Eps2, ClipThreshold      float64
	DecayRate                      float64
	RelativeStep, ScaleParameter   bool
}

// TrainConfig describes a compiled training step.
type TrainConfig struct {
	Optimizer Optimizer
	DST       *DST // nil: full fine-tuning
}

// Step-scalar layout: one float32 vector fed every step (StepScalars
// computes it).
const (
	// AdamW, the constants of kernels.AdamW in its order.
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
	// SGD.
	scLR = iota
	scMomentum
	scOneMinusDampening
	scWeightDecay
	scFirstStep
)

const (
	// Adafactor.
	scAlphaBase = iota // min(1e-2, 1/√t)·lr or lr
	scDecay2           // β̂2t = 1 − t^(−0.8)
	scOneMinusDecay2
	scAFBeta1
	scAFOneMinusBeta1
	scEps1
	scEps2
	scClip
)

// StepScalars computes the step program's per-step scalars for step (1
// for the first) at learning rate lr: the optimizer's and DST's factor r.
func (c TrainConfig) StepScalars(step int64, lr float64) ([]float32, error) {
	s, err := c.Optimizer.StepScalars(step, lr)
	if err == nil && c.DST != nil {
		s[scFactor] = c.DST.Bisection.Factor
	}
	return s, err
}

// StepScalars computes the per-step scalars of step (1 for the first)
// with learning rate lr, in float64 and rounded once to float32 as the
// CPU kernels round them.
func (o Optimizer) StepScalars(step int64, lr float64) ([]float32, error) {
	if step < 1 {
		return nil, fmt.Errorf("tpu: optimizer step %d, want ≥ 1", step)
	}
	s := make([]float32, numStepScalars)
	t := float64(step)
	switch o.Kind {
	case AdamW:
		bc1 := 1 - math.Pow(o.Beta1, t)
		bc2 := 1 - math.Pow(o.Beta2, t)
		s[scDecay] = float32(1 - lr*o.WeightDecay)
		s[scBeta1] = float32(o.Beta1)
		s[scOneMinusBeta1] = float32(1 - o.Beta1)
		s[scBeta2] = float32(o.Beta2)
		s[scOneMinusBeta2] = float32(1 - o.Beta2)
		s[scBiasCorrection2Sqrt] = float32(math.Sqrt(bc2))
		s[scEps] = float32(o.Eps)
		s[scNegStepSize] = float32(-(lr / bc1))
	case SGD:
		s[scLR] = float32(lr)
		s[scMomentum] = float32(o.Momentum)
		s[scOneMinusDampening] = float32(1 - o.Dampening)
		s[scWeightDecay] = float32(o.WeightDecay)
		if step == 1 {
			s[scFirstStep] = 1
		}
	case Adafactor:
		base := lr
		if o.RelativeStep {
			base = min(1e-2, 1/math.Sqrt(t)) * lr
		}
		rate := o.DecayRate
		if rate == 0 {
			rate = -0.8
		}
		decay := 1 - math.Pow(t, rate)
		s[scAlphaBase] = float32(base)
		s[scDecay2] = float32(decay)
		s[scOneMinusDecay2] = float32(1 - decay)
		s[scAFBeta1] = float32(o.Beta1)
		s[scAFOneMinusBeta1] = float32(1 - o.Beta1)
		s[scEps1] = float32(o.Eps1)
		s[scEps2] = float32(o.Eps2)
		s[scClip] = float32(o.ClipThreshold)
	default:
		return nil, fmt.Errorf("tpu: unknown optimizer %v", o.Kind)
	}
	return s, nil
}

// ResultLoss is the step program's mean loss result.
const ResultLoss = "loss"

// GradOutput is the name of a training graph's gradient output for a
// parameter (ir.TrainingGraph's convention).
func GradOutput(param string) string { return "grad:" + param }

// LowerTrainStep lowers one training step of tg, a graph with outputs
// "loss" and "grad:NAME" for each trainable parameter NAME (what
// ir.TrainingGraph produces), with the optimizer and DST of cfg.
//
// Arguments, in order: trainable parameters (aliased to their updated
// results), frozen parameters, optimizer state per trainable parameter
// ("NAME/exp_avg", ...; aliased), DST state (seeds "NAME" as ArgSeed,
// masks "NAME/mask", dst:q, dst:ready; all but the seeds aliased), the
// step scalars, then tg's inputs. Results: the updated parameters and
// state (same names), then "loss" and, with DST, the per-silo metrics.
func LowerTrainStep(tg *ir.Graph, cfg TrainConfig) (*Program, error) {
	if err := tg.Validate(); err != nil {
		return nil, fmt.Errorf("tpu: %w", err)
	}
	outputs := map[string]*ir.Value{}
	for _, o := range tg.Outputs {
		outputs[o.Name] = o.Value
	}
	lossV := outputs[ResultLoss]
	if lossV == nil || lossV.DType != ir.Float32 || lossV.Shape.Size() != 1 {
		return nil, errors.New(`tpu: the training graph needs a float32 scalar output "loss"`)
	}
	var trainable, frozen []*ir.Param
	for _, p := range tg.Params {
		g := outputs[GradOutput(p.Name)]
		if g == nil {
			frozen = append(frozen, p)
			continue
		}
		if p.Value.DType != ir.Float32 || g.DType != ir.Float32 || !g.Shape.Equal(p.Value.Shape) {
			return nil, fmt.Errorf("tpu: %w: parameter %q is %v with gradient %v; training needs float32 of the same shape", ir.ErrNotSupported, p.Name, p.Value.Type, g.Type)
		}
		trainable = append(trainable, p)
	}
	if len(trainable) == 0 {
		return nil, errors.New(`tpu: the training graph has no "grad:NAME" output for any parameter`)
	}
	s := &stepLowering{cfg: cfg, f: newFn("    "), vals: map[*ir.Value]value{}}
	return s.lower(tg, trainable, frozen, outputs)
}

type stepLowering struct {
	cfg     TrainConfig
	f       *fn
	vals    map[*ir.Value]value
	args    []Arg
	results []value
	rnames  []Result
	// aliasTo maps an argument index to the name of the result that
	// reuses its buffer; resolved once the results are known.
	aliasTo map[int]string
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

func (s *stepLowering) lower(tg *ir.Graph, trainable, frozen []*ir.Param, outputs map[string]*ir.Value) (*Program, error) {
	f := s.f
	opt := s.cfg.Optimizer
	params := map[string]value{}
	for _, p := range trainable {
		v := s.arg(ArgParam, p.Name, p.Value.Type, p.Name)
		params[p.Name] = v
		s.vals[p.Value] = v
	}
	for _, p := range frozen {
		if _, ok := elemType(p.Value.DType); !ok {
			return nil, fmt.Errorf("tpu: %w: parameter %q is %s", ir.ErrNotSupported, p.Name, p.Value.DType)
		}
		s.vals[p.Value] = s.arg(ArgParam, p.Name, p.Value.Type, "")
	}
	// Optimizer state.
	state := map[string]value{}
	for _, p := range trainable {
		for _, st := range optimizerState(opt, p.Value.Shape) {
			name := p.Name + "/" + st.name
			state[name] = s.arg(ArgState, name, ir.Type{DType: ir.Float32, Shape: st.shape}, name)
		}
	}
	// DST state: seeds, masks, the carried thresholds, the fixed flag.
	var layout *dstLayout
	var ds dstState
	if d := s.cfg.DST; d != nil {
		var err error
		if layout, err = layoutDST(d, trainable); err != nil {
			return nil, err
		}
		ds.seeds, ds.masks = map[string]value{}, map[string]value{}
		for _, u := range layout.units {
			for _, p := range u.pieces {
				ds.seeds[p.name] = s.arg(ArgSeed, p.name, ir.Type{DType: ir.Float32, Shape: p.shape}, "")
			}
		}
		for _, u := range layout.units {
			for _, p := range u.pieces {
				name := p.name + "/mask"
				ds.masks[p.name] = s.arg(ArgState, name, ir.Type{DType: ir.Bool, Shape: p.shape}, name)
			}
		}
		nu := len(layout.units)
		ds.q = s.arg(ArgState, stateQ, ir.Type{DType: ir.Float32, Shape: ir.Shape{nu}}, stateQ)
		ds.ready = s.arg(ArgState, stateReady, ir.Type{DType: ir.Bool, Shape: ir.Shape{nu}}, stateReady)
		ds.fixed = s.arg(ArgState, stateFixed, ir.Type{DType: ir.Bool, Shape: ir.Shape{}}, stateFixed)
	}
	scalars := s.arg(ArgStepScalars, "step", ir.Type{DType: ir.Float32, Shape: ir.Shape{numStepScalars}}, "")
	for _, v := range tg.Inputs {
		if _, ok := elemType(v.DType); !ok {
			return nil, fmt.Errorf("tpu: %w: input %q is %s", ir.ErrNotSupported, v.Name, v.DType)
		}
		s.vals[v] = s.arg(ArgInput, v.Name, v.Type, "")
	}

	// Forward and backward.
	l := &graphLowering{f: f, vals: s.vals}
	if err := l.lowerNodes(tg); err != nil {
		return nil, err
	}
	loss, err := l.get(outputs[ResultLoss])
	if err != nil {
		return nil, err
	}
	loss = f.reshape(loss, ir.Shape{})

	// Optimizer: Θ̂ and the new state from the full step.
	sc := func(i int) value {
		return f.reshape(f.slice(scalars, []int{i}, []int{i + 1}, []int{1}), ir.Shape{})
	}
	updated := map[string]value{}
	newState := map[string]value{}
	for _, p := range trainable {
		g, err := l.get(outputs[GradOutput(p.Name)])
		if err != nil {
			return nil, err
		}
		updated[p.Name] = s.optimizerStep(opt, p.Name, params[p.Name], g, state, newState, sc)
	}
	if err := f.Err(); err != nil {
		return nil, fmt.Errorf("tpu: optimizer: %w", err)
	}

	// DST: scores, thresholds, masked update, metrics.
	var dr dstResult
	if layout != nil {
		ds.factor = sc(scFactor)
		dr = s.dstUpdate(layout, updated, ds)
		for name, v := range dr.params {
			updated[name] = v
		}
		if err := f.Err(); err != nil {
			return nil, fmt.Errorf("tpu: DST update: %w", err)
		}
	}

	// A non-finite loss leaves every parameter and all state as they were
	// (the step is not taken), as the CPU engine does.
	finite := f.compare("LT", f.unary("stablehlo.abs", loss), f.scalarConst(ir.Float32, math.Inf(1)))
	keep := func(v, old value) value { return f.selectOp(finite, v, old) }
	for _, p := range trainable {
		s.result(p.Name, keep(updated[p.Name], params[p.Name]))
	}
	for _, p := range trainable {
		for _, st := range optimizerState(opt, p.Value.Shape) {
			name := p.Name + "/" + st.name
			s.result(name, keep(newState[name], state[name]))
		}
	}
	if layout != nil {
		for _, u := range layout.units {
			for _, p := range u.pieces {
				s.result(p.name+"/mask", keep(dr.masks[p.name], ds.masks[p.name]))
			}
		}
		s.result(stateQ, keep(dr.q, ds.q))
		s.result(stateReady, keep(dr.ready, ds.ready))
		s.result(stateFixed, keep(dr.fixed, ds.fixed))
	}
	s.result(ResultLoss, loss)
	for _, r := range dr.results {
		s.result(r.name, r.v)
	}
	if err := f.Err(); err != nil {
		return nil, fmt.Errorf("tpu: step results: %w", err)
	}
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
	p.Text = module(p.Args, f, s.results)
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

type stateSpec struct {
	name  string
	shape ir.Shape
}

// optimizerState lists the float32 state an optimizer keeps for a
// parameter of the given shape (kernels' layouts).
func optimizerState(o Optimizer, shape ir.Shape) []stateSpec {
	switch o.Kind {
	case AdamW:
		return []stateSpec{{"exp_avg", shape.Clone()}, {"exp_avg_sq", shape.Clone()}}
	case SGD:
		if o.Momentum != 0 {
			return []stateSpec{{"momentum_buffer", shape.Clone()}}
		}
		return nil
	case Adafactor:
		var st []stateSpec
		if r := len(shape); r >= 2 {
			st = append(st, stateSpec{"exp_avg_sq_row", shape[:r-1].Clone()}, stateSpec{"exp_avg_sq_col", append(shape[:r-2].Clone(), shape[r-1])})
		} else {
			st = append(st, stateSpec{"exp_avg_sq", shape.Clone()})
		}
		if o.Beta1 != 0 {
			st = append(st, stateSpec{"exp_avg", shape.Clone()})
		}
		return st
	}
	return nil
}

// optimizerStep emits one optimizer step for parameter name and returns
// Θ̂; the new state goes into newState.
func (s *stepLowering) optimizerStep(o Optimizer, name string, p, g value, state, newState map[string]value, sc func(int) value) value {
	f := s.f
	b := func(v value) value { return f.broadcastTo(v, p.shape()) }
	switch o.Kind {
	case AdamW:
		m, v := state[name+"/exp_avg"], state[name+"/exp_avg_sq"]
		pd := f.mul(p, b(sc(scDecay)))
		m2 := f.add(f.mul(g, b(sc(scOneMinusBeta1))), f.mul(m, b(sc(scBeta1))))
		v2 := f.add(f.mul(f.mul(b(sc(scOneMinusBeta2)), g), g), f.mul(v, b(sc(scBeta2))))
		den := f.add(f.div(f.unary("stablehlo.sqrt", v2), b(sc(scBiasCorrection2Sqrt))), b(sc(scEps)))
		newState[name+"/exp_avg"], newState[name+"/exp_avg_sq"] = m2, v2
		return f.add(pd, f.div(f.mul(b(sc(scNegStepSize)), m2), den))
	case SGD:
		d := g
		if o.WeightDecay != 0 {
			d = f.add(f.mul(p, b(sc(scWeightDecay))), d)
		}
		if o.Momentum != 0 {
			buf := state[name+"/momentum_buffer"]
			first := f.compare("NE", sc(scFirstStep), f.scalarConst(ir.Float32, 0))
			decayed := f.add(f.mul(d, b(sc(scOneMinusDampening))), f.mul(buf, b(sc(scMomentum))))
			buf2 := f.selectOp(first, d, decayed)
			newState[name+"/momentum_buffer"] = buf2
			if o.Nesterov {
				d = f.add(f.mul(buf2, b(sc(scMomentum))), d)
			} else {
				d = buf2
			}
		}
		return f.add(f.mul(d, f.unary("stablehlo.negate", b(sc(scLR)))), p)
	case Adafactor:
		return s.adafactorStep(o, name, p, g, state, newState, sc)
	}
	f.fail("unknown optimizer %v", o.Kind)
	return p
}

// adafactorStep follows kernels' Adafactor: factored second moments over
// the last two axes (one matrix per leading index), update clipping by
// RMS(U)/d over the whole tensor, relative step size.
func (s *stepLowering) adafactorStep(o Optimizer, name string, p, g value, state, newState map[string]value, sc func(int) value) value {
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
