package tpu

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"

	"github.com/dstune/dstune/dst"
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

// Distance is DST's score of a parameter's move from its seed (the
// definitions of kernels.Distance).
type Distance uint8

const (
	DistanceAbs    Distance = iota // |θ̂ − θ0|
	DistanceRel                    // |(θ̂ − θ0)/θ0|, 0 where θ̂ = θ0
	DistanceInvRel                 // |θ0·(θ̂ − θ0)|
)

// DST configures Dynamic Subset Tuning inside the step.
type DST struct {
	Eps      float64  // fraction of each silo kept free; k = dst.SubsetSize(Eps, |S|)
	Distance Distance //
	// Silos lists each silo's parameters (trainable ones, by ONNX name),
	// in silo order: a silo's positions run through its pieces in this
	// order, which the exact-count tie rule sees.
	Silos [][]string
	// Exact selects the exact threshold every step; otherwise Algorithm 2
	// tracks it (Bisection), with an exact selection on the first step
	// and whenever the bracket misses.
	Exact     bool
	Bisection dst.Bisection
	// FixedSubset turns churn off: the subset chosen at the first step
	// is kept for the whole run.
	FixedSubset bool
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

// Names of the step program's results besides the new parameters and
// state.
const (
	ResultLoss      = "loss"
	ResultKept      = "dst:kept"      // int64[S]: entries each silo keeps free
	ResultChanged   = "dst:changed"   // int64[S]: kept entries not kept the step before
	ResultThreshold = "dst:threshold" // float32[S]: the threshold q used
	ResultExact     = "dst:exact"     // bool[S]: whether q came from an exact selection
)

// State names: "<param>/<state>" for per-parameter state, "dst:q" and
// "dst:ready" for the per-silo thresholds.
const (
	stateQ     = "dst:q"
	stateReady = "dst:ready"
)

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
	// DST state.
	var silos []siloLayout
	if d := s.cfg.DST; d != nil {
		var err error
		if silos, err = s.layoutSilos(d, trainable); err != nil {
			return nil, err
		}
	}
	seeds, masks := map[string]value{}, map[string]value{}
	var qState, readyState value
	if len(silos) > 0 {
		for _, sl := range silos {
			for _, p := range sl.pieces {
				seeds[p.name] = s.arg(ArgSeed, p.name, ir.Type{DType: ir.Float32, Shape: p.shape}, "")
			}
		}
		for _, sl := range silos {
			for _, p := range sl.pieces {
				name := p.name + "/mask"
				masks[p.name] = s.arg(ArgState, name, ir.Type{DType: ir.Bool, Shape: p.shape}, name)
			}
		}
		ns := len(silos)
		qState = s.arg(ArgState, stateQ, ir.Type{DType: ir.Float32, Shape: ir.Shape{ns}}, stateQ)
		readyState = s.arg(ArgState, stateReady, ir.Type{DType: ir.Bool, Shape: ir.Shape{ns}}, stateReady)
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

	// DST: scores, threshold, masked update.
	newMasks := map[string]value{}
	var kept, changed []value
	var thresholds, exact, newReady value
	if len(silos) > 0 {
		res := s.dstUpdate(silos, updated, seeds, masks, qState, readyState)
		for name, v := range res.params {
			updated[name] = v
		}
		newMasks = res.masks
		kept, changed, thresholds, exact, newReady = res.kept, res.changed, res.q, res.exact, res.ready
		if err := f.Err(); err != nil {
			return nil, fmt.Errorf("tpu: DST update: %w", err)
		}
	}

	for _, p := range trainable {
		s.result(p.Name, updated[p.Name])
	}
	for _, p := range trainable {
		for _, st := range optimizerState(opt, p.Value.Shape) {
			name := p.Name + "/" + st.name
			s.result(name, newState[name])
		}
	}
	if len(silos) > 0 {
		for _, sl := range silos {
			for _, p := range sl.pieces {
				s.result(p.name+"/mask", newMasks[p.name])
			}
		}
		s.result(stateQ, thresholds)
		s.result(stateReady, newReady)
	}
	s.result(ResultLoss, f.reshape(loss, ir.Shape{}))
	if len(silos) > 0 {
		s.result(ResultKept, f.concatenate(0, reshapeAll(f, kept, ir.Shape{1})))
		s.result(ResultChanged, f.concatenate(0, reshapeAll(f, changed, ir.Shape{1})))
		s.result(ResultThreshold, thresholds)
		s.result(ResultExact, exact)
	}
	if err := f.Err(); err != nil {
		return nil, fmt.Errorf("tpu: step results: %w", err)
	}
	p := &Program{Results: s.rnames}
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

// ---------------------------------------------------------------- DST

type pieceLayout struct {
	name   string
	shape  ir.Shape
	offset int // silo position of the first entry
}

type siloLayout struct {
	pieces []pieceLayout
	n      int
	k      int64
}

func (s *stepLowering) layoutSilos(d *DST, trainable []*ir.Param) ([]siloLayout, error) {
	if !(d.Eps >= 0 && d.Eps <= 1) {
		return nil, fmt.Errorf("tpu: DST eps %g, want [0, 1]", d.Eps)
	}
	if d.Distance > DistanceInvRel {
		return nil, fmt.Errorf("tpu: unknown DST distance %d", d.Distance)
	}
	if !d.Exact {
		if err := d.Bisection.Validate(); err != nil {
			return nil, fmt.Errorf("tpu: %w", err)
		}
	}
	byName := map[string]*ir.Param{}
	for _, p := range trainable {
		byName[p.Name] = p
	}
	seen := map[string]bool{}
	var silos []siloLayout
	for i, names := range d.Silos {
		var sl siloLayout
		for _, name := range names {
			p := byName[name]
			if p == nil {
				return nil, fmt.Errorf("tpu: silo %d: %q is not a trainable parameter of the graph", i, name)
			}
			if seen[name] {
				return nil, fmt.Errorf("tpu: silo %d: parameter %q is in more than one silo", i, name)
			}
			seen[name] = true
			sl.pieces = append(sl.pieces, pieceLayout{name: name, shape: p.Value.Shape.Clone(), offset: sl.n})
			sl.n += p.Value.Shape.Size()
		}
		if sl.n == 0 {
			continue
		}
		sl.k = dst.SubsetSize(d.Eps, int64(sl.n))
		silos = append(silos, sl)
	}
	if len(silos) == 0 {
		return nil, errors.New("tpu: DST needs at least one non-empty silo")
	}
	return silos, nil
}

// score emits Δ = d(θ̂, θ0) as kernels' score defines it.
func score(f *fn, d Distance, theta, seed value) value {
	diff := f.sub(theta, seed)
	abs := func(v value) value { return f.unary("stablehlo.abs", v) }
	switch d {
	case DistanceRel:
		q := abs(f.div(diff, seed))
		return f.selectOp(f.compare("EQ", diff, f.splat(diff.t, 0)), f.splat(diff.t, 0), q)
	case DistanceInvRel:
		return abs(f.mul(seed, diff))
	}
	return abs(diff)
}

type dstResult struct {
	params, masks   map[string]value
	kept, changed   []value // int64 scalars, one per silo
	q, exact, ready value   // [S] vectors
}

// dstUpdate emits the threshold choice and masked update of every silo.
// Algorithm 2's bookkeeping runs on [S] vectors (one entry per silo), so
// its cost in ops does not grow with the number of silos; only the
// counting passes are per silo.
func (s *stepLowering) dstUpdate(silos []siloLayout, updated, seeds, masks map[string]value, qState, readyState value) dstResult {
	f := s.f
	d := s.cfg.DST
	ns := len(silos)
	vec := func(dt ir.DType) ir.Type { return ir.Type{DType: dt, Shape: ir.Shape{ns}} }
	res := dstResult{params: map[string]value{}, masks: map[string]value{}}
	deltas, prevMasks, positions := make([]value, ns), make([]value, ns), make([]value, ns)
	for i, sl := range silos {
		var ds, prev []value
		for _, p := range sl.pieces {
			flat := ir.Shape{p.shape.Size()}
			ds = append(ds, f.reshape(score(f, d.Distance, updated[p.name], seeds[p.name]), flat))
			prev = append(prev, f.reshape(masks[p.name], flat))
		}
		deltas[i] = f.concatenate(0, ds)
		prevMasks[i] = f.concatenate(0, prev)
		positions[i] = f.iota(ir.Type{DType: ir.Int64, Shape: ir.Shape{sl.n}}, 0)
	}
	notReady := f.unary("stablehlo.not", readyState)
	qIter, needExact := qState, notReady
	if !d.FixedSubset && !d.Exact {
		var missed value
		qIter, missed = algorithm2(f, d.Bisection, deltas, qState, silos)
		needExact = f.or(missed, notReady)
	}
	exactAll := func(r *fn) (value, value) {
		qs, tes := make([]value, ns), make([]value, ns)
		for i, sl := range silos {
			q, te := exactThreshold(r, deltas[i], positions[i], sl.k)
			qs[i], tes[i] = r.reshape(q, ir.Shape{1}), r.reshape(te, ir.Shape{1})
		}
		return r.concatenate(0, qs), r.concatenate(0, tes)
	}
	// Thresholds: exact every step, or Algorithm 2 with one exact
	// fallback for the silos that need it, inside a single conditional so
	// that steady-state steps skip the selection work.
	var qVec, tieEndVec value
	if d.Exact && !d.FixedSubset {
		qVec, tieEndVec = exactAll(f)
		needExact = f.splat(vec(ir.Bool), 1)
	} else {
		anyExact := f.reduce(needExact, f.scalarConst(ir.Bool, 0), reduceOr, []int{0})
		out := f.ifOp(anyExact, []ir.Type{vec(ir.Float32), vec(ir.Int64)}, func(r *fn) []value {
			q, te := exactAll(r)
			return []value{r.selectOp(needExact, q, qIter), r.selectOp(needExact, te, r.splat(vec(ir.Int64), 0))}
		}, func(r *fn) []value {
			return []value{qIter, r.splat(vec(ir.Int64), 0)}
		})
		qVec, tieEndVec = out[0], out[1]
	}
	scalarAt := func(v value, i int) value {
		return f.reshape(f.slice(v, []int{i}, []int{i + 1}, []int{1}), ir.Shape{})
	}
	for i, sl := range silos {
		n := ir.Shape{sl.n}
		q, tieEnd := f.broadcastTo(scalarAt(qVec, i), n), f.broadcastTo(scalarAt(tieEndVec, i), n)
		above := f.compare("GT", deltas[i], q)
		tie := f.and(f.compare("EQ", deltas[i], q), f.compare("LT", positions[i], tieEnd))
		keep := f.or(above, tie)
		if d.FixedSubset {
			keep = f.selectOp(scalarAt(readyState, i), prevMasks[i], keep)
		}
		for _, p := range sl.pieces {
			size := p.shape.Size()
			km := f.reshape(f.slice(keep, []int{p.offset}, []int{p.offset + size}, []int{1}), p.shape)
			res.params[p.name] = f.selectOp(km, updated[p.name], seeds[p.name])
			res.masks[p.name] = km
		}
		i64 := func(b value) value {
			return f.reduce(f.convert(b, ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
		}
		res.kept = append(res.kept, i64(keep))
		res.changed = append(res.changed, i64(f.and(keep, f.unary("stablehlo.not", prevMasks[i]))))
	}
	res.q, res.exact, res.ready = qVec, needExact, f.splat(vec(ir.Bool), 1)
	return res
}

// countAbove emits counts[j] = #{x_i > c_j} (or ≥ with dir "GE",
// unsigned for ui32) for a vector x [n] and candidates c [J], as one
// broadcast compare and reduction.
func countCompare(f *fn, dir string, x, c value) value {
	n, j := x.shape()[0], c.shape()[0]
	grid := ir.Shape{n, j}
	cmp := f.compare(dir, f.broadcastInDim(x, grid, []int{0}), f.broadcastInDim(c, grid, []int{1}))
	return f.reduce(f.convert(cmp, ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
}

// algorithm2 emits the paper's Algorithm 2 for every silo at once from
// the previous thresholds q [S]: the 2^m+1 candidates of
// dst.Bisection.Candidates (each rounded once to float32 as there: q/r and
// q·r are single float32 operations, which equal the float64 result
// rounded once; midpoints are a/2 + b/2, exact halving then one
// rounding), each silo's counts in one pass over its scores, the m
// bisection steps on the counts, and the pick (q_lo or q_hi, whichever
// count is closer to k, q_hi on a tie). It returns the picks [S] and
// whether each silo's bracket missed [S].
func algorithm2(f *fn, b dst.Bisection, deltas []value, q value, silos []siloLayout) (value, value) {
	ns := len(silos)
	nc := b.NumCandidates()
	top := nc - 1
	vf := ir.Type{DType: ir.Float32, Shape: ir.Shape{ns}}
	c := make([]value, nc)
	c[0], c[top], c[top/2] = f.div(q, f.splat(vf, float64(b.Factor))), f.mul(q, f.splat(vf, float64(b.Factor))), q
	half := f.splat(vf, 0.5)
	for span := top / 2; span >= 2; span /= 2 {
		for a := 0; a < top; a += span {
			c[a+span/2] = f.add(f.mul(c[a], half), f.mul(c[a+span], half))
		}
	}
	grid := ir.Shape{ns, nc}
	cands := f.concatenate(1, reshapeAll(f, c, ir.Shape{ns, 1})) // [S, J]
	rows := make([]value, ns)
	ks := ir.NewTensor(ir.Int64, ir.Shape{ns})
	for i, sl := range silos {
		row := f.reshape(f.slice(cands, []int{i, 0}, []int{i + 1, nc}, []int{1, 1}), ir.Shape{nc})
		rows[i] = f.reshape(countCompare(f, "GT", deltas[i], row), ir.Shape{1, nc})
		ks.Int64s()[i] = sl.k
	}
	counts := f.concatenate(0, rows) // [S, J]
	k := f.constant(ks)
	column := f.iota(ir.Type{DType: ir.Int32, Shape: grid}, 1)
	// at picks mat[s, idx[s]] for every silo (a one-hot sum: exact).
	at := func(mat, idx value) value {
		hit := f.compare("EQ", column, f.broadcastInDim(idx, grid, []int{0}))
		return f.reduce(f.selectOp(hit, mat, f.splat(mat.t, 0)), f.scalarConst(mat.dtype(), 0), reduceAdd, []int{1})
	}
	vi := ir.Type{DType: ir.Int32, Shape: ir.Shape{ns}}
	lo, hi, mid := f.splat(vi, 0), f.splat(vi, float64(top)), f.splat(vi, float64(top/2))
	for range b.Steps {
		gt := f.compare("GT", at(counts, mid), k)
		lo, hi = f.selectOp(gt, mid, lo), f.selectOp(gt, hi, mid)
		mid = f.div(f.add(lo, hi), f.splat(vi, 2))
	}
	dist := func(i value) value { return f.unary("stablehlo.abs", f.sub(at(counts, i), k)) }
	pick := f.selectOp(f.compare("LT", dist(lo), dist(hi)), lo, hi)
	first := f.reshape(f.slice(counts, []int{0, 0}, []int{ns, 1}, []int{1, 1}), ir.Shape{ns})
	last := f.reshape(f.slice(counts, []int{0, top}, []int{ns, nc}, []int{1, 1}), ir.Shape{ns})
	missed := f.or(f.compare("LT", first, k), f.compare("GT", last, k))
	return at(cands, pick), missed
}

// exactThreshold emits an exact selection of k entries of delta [n] with
// kernels' tie rule: Q is the k-th largest score and ties at Q are kept
// from the lowest position up to tieEnd (exclusive). NaN scores are never
// kept; with fewer than k non-NaN scores all of those are kept, and k = 0
// keeps nothing (Q = +Inf).
//
// It is a radix search on the ordered bits of the scores, four bits a
// round with the 16 candidate prefixes counted in one broadcast compare
// (8 rounds), then the same search on positions for the last kept tie.
// Straight-line code: no sort, no loop.
func exactThreshold(f *fn, delta, pos value, k int64) (value, value) {
	n := delta.shape()[0]
	vec := ir.Shape{n}
	u32 := func(v uint32) value { return f.scalarConst(ir.Uint32, float64(v)) }
	// key = 0 for NaN, else the bits with the sign bit set (Δ ≥ 0, never -0).
	isNaN := f.compare("NE", delta, delta)
	key := f.selectOp(isNaN, f.splat(ir.Type{DType: ir.Uint32, Shape: vec}, 0), f.or(f.bitcast(delta, ir.Uint32), f.splat(ir.Type{DType: ir.Uint32, Shape: vec}, 0x80000000)))
	valid := f.reduce(f.convert(f.unary("stablehlo.not", isNaN), ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
	kEff := f.min(f.scalarConst(ir.Int64, float64(k)), valid)
	digits := func(shift int) value {
		t := ir.NewTensor(ir.Uint32, ir.Shape{16})
		v := t.Uint32s()
		for d := range v {
			v[d] = uint32(d) << shift
		}
		return f.constant(t)
	}
	countSatisfying := func(counts value, dir string, bound value) value {
		ok := f.compare(dir, counts, f.broadcastTo(bound, counts.shape()))
		return f.reduce(f.convert(ok, ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
	}
	one := f.scalarConst(ir.Int64, 1)
	prefix := u32(0)
	for shift := 28; shift >= 0; shift -= 4 {
		cands := f.add(f.broadcastTo(prefix, ir.Shape{16}), digits(shift))
		counts := countCompare(f, "GE", key, cands)
		best := f.sub(countSatisfying(counts, "GE", kEff), one) // the largest digit keeping ≥ k
		prefix = f.add(prefix, f.mul(f.convert(best, ir.Uint32), u32(1<<shift)))
	}
	keyQ := prefix
	q := f.bitcast(f.and(keyQ, u32(0x7fffffff)), ir.Float32)
	above := f.reduce(f.convert(f.compare("GT", key, f.broadcastTo(keyQ, vec)), ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
	need := f.sub(kEff, above)
	tie := f.compare("EQ", key, f.broadcastTo(keyQ, vec))
	// The largest T with #{ties at positions < T} < need is the position
	// of the need-th tie.
	posBits := max(4, (bits.Len(uint(max(n-1, 1)))+3)/4*4)
	t := f.scalarConst(ir.Int64, 0)
	for shift := posBits - 4; shift >= 0; shift -= 4 {
		ds := ir.NewTensor(ir.Int64, ir.Shape{16})
		dv := ds.Int64s()
		for d := range dv {
			dv[d] = int64(d) << shift
		}
		cands := f.add(f.broadcastTo(t, ir.Shape{16}), f.constant(ds))
		grid := ir.Shape{n, 16}
		before := f.compare("LT", f.broadcastInDim(pos, grid, []int{0}), f.broadcastInDim(cands, grid, []int{1}))
		hits := f.and(before, f.broadcastInDim(tie, grid, []int{0}))
		counts := f.reduce(f.convert(hits, ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
		best := f.sub(countSatisfying(counts, "LT", need), one)
		t = f.add(t, f.mul(best, f.scalarConst(ir.Int64, float64(int64(1)<<shift))))
	}
	tieEnd := f.add(t, one)
	none := f.compare("EQ", kEff, f.scalarConst(ir.Int64, 0))
	q = f.selectOp(none, f.scalarConst(ir.Float32, math.Inf(1)), q)
	tieEnd = f.selectOp(none, f.scalarConst(ir.Int64, 0), tieEnd)
	return q, tieEnd
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
