package train

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/kernels"
)

// OptimizerConfig names an optimizer and holds its hyper-parameters: the
// field matching Name is set, the others are nil. It is plain data (stored
// in config.json) so that every engine can implement the same step: the
// CPU engine with the element-wise kernels, a device engine inside its
// compiled program.
type OptimizerConfig struct {
	Name      string           `json:"name"` // "sgd", "adamw" or "adafactor"
	SGD       *SGDConfig       `json:"sgd,omitempty"`
	AdamW     *AdamWConfig     `json:"adamw,omitempty"`
	Adafactor *AdafactorConfig `json:"adafactor,omitempty"`
}

// SGDConfig is torch.optim.SGD's step (kernels.SGDStep has the exact
// arithmetic). State: "momentum_buffer", one float32 per entry, only when
// Momentum ≠ 0.
type SGDConfig struct {
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum"`
	Dampening   float64 `json:"dampening"`
	Nesterov    bool    `json:"nesterov"`
	WeightDecay float64 `json:"weight_decay"` // L2 (added to the gradient), as torch.optim.SGD
}

// AdamWConfig is torch.optim.AdamW's step (kernels.AdamWStep has the exact
// arithmetic; bias-corrected, decoupled weight decay). State: "exp_avg"
// and "exp_avg_sq", one float32 per entry each.
type AdamWConfig struct {
	LR          float64 `json:"lr"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"`
}

// AdafactorConfig is Adafactor (Shazeer & Stern 2018, Algorithm 4 with the
// relative step size of section 8 and update clipping of section 6), as
// the DST paper trains with it. For a parameter X with gradient G at step
// t:
//
//	β̂2t = 1 − t^DecayRate
//	second moments of G²+Eps1: factored (rows R, columns C) for every
//	    matrix (a tensor of rank ≥ 2 is a stack of matrices over its last
//	    two axes), one per entry for vectors and scalars
//	U = G / sqrt(V̂),  V̂ = R·Cᵀ / ΣR (factored)
//	Û = U / max(1, RMS(U)/ClipThreshold)      RMS over the whole tensor
//	α = LR·s, or ρ_t·s with ρ_t = min(1e-2, 1/√t) when LR is 0 (relative
//	    step); s is the schedule's factor; with ScaleParameter α is also
//	    multiplied by max(Eps2, RMS(X))
//	with Beta1 ≠ 0: M = Beta1·M + (1−Beta1)·αÛ, X ← X − M; else X ← X − αÛ
//
// State per parameter: "exp_avg_sq_row" [stack…, rows] and "exp_avg_sq_col"
// [stack…, cols] for a factored one, "exp_avg_sq" (one per entry) for an
// unfactored one, and "exp_avg" (one per entry) when Beta1 ≠ 0; float32,
// zero before the first step. There is no weight decay.
type AdafactorConfig struct {
	LR             float64 `json:"lr"` // 0: relative step size
	ScaleParameter bool    `json:"scale_parameter"`
	Beta1          float64 `json:"beta1"`
	DecayRate      float64 `json:"decay_rate"`
	ClipThreshold  float64 `json:"clip_threshold"`
	Eps1           float64 `json:"eps1"`
	Eps2           float64 `json:"eps2"`
}

// Optimizer names.
const (
	OptimizerSGD       = "sgd"
	OptimizerAdamW     = "adamw"
	OptimizerAdafactor = "adafactor"
)

// DefaultOptimizer returns an optimizer's default hyper-parameters:
// PyTorch's for SGD (lr 1e-3, no momentum) and AdamW (lr 1e-3, betas 0.9
// and 0.999, eps 1e-8, weight decay 0.01), the paper's for Adafactor
// (relative step with parameter scaling, no first moment, decay rate −0.8,
// clipping threshold 1, eps 1e-30 and 1e-3).
func DefaultOptimizer(name string) (OptimizerConfig, error) {
	c := OptimizerConfig{Name: name}
	switch name {
	case OptimizerSGD:
		c.SGD = &SGDConfig{LR: 1e-3}
	case OptimizerAdamW:
		c.AdamW = &AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	case OptimizerAdafactor:
		c.Adafactor = &AdafactorConfig{ScaleParameter: true, DecayRate: -0.8, ClipThreshold: 1, Eps1: 1e-30, Eps2: 1e-3}
	default:
		return c, fmt.Errorf("unknown optimizer %q (want %s, %s or %s)", name, OptimizerSGD, OptimizerAdamW, OptimizerAdafactor)
	}
	return c, nil
}

// SetLR sets the base learning rate. For Adafactor it turns the relative
// step size off: the step is lr itself (times the schedule), not scaled by
// the parameter's RMS.
func (c *OptimizerConfig) SetLR(lr float64) {
	switch {
	case c.SGD != nil:
		c.SGD.LR = lr
	case c.AdamW != nil:
		c.AdamW.LR = lr
	case c.Adafactor != nil:
		c.Adafactor.LR = lr
		c.Adafactor.ScaleParameter = false
	}
}

// StepInfo says which step an update is.
type StepInfo struct {
	Step    int64   // 1 for the first step
	LRScale float64 // the learning-rate schedule's factor for this step
}

// SlotSpec describes one array of a parameter's optimizer state.
type SlotSpec struct {
	Name  string
	Shape []int
}

// Slot is one array of a parameter's optimizer state.
type Slot struct {
	Name  string
	Shape []int
	Data  []float32
}

// ParamState is one parameter's optimizer state: the persistent slots the
// optimizer's config documents (saved in checkpoints) and scratch space
// the step reuses, so that a step allocates nothing.
type ParamState struct {
	Shape   []int
	Slots   []Slot
	scratch []float32
}

// Slot returns the named slot's data, or nil.
func (s *ParamState) Slot(name string) []float32 {
	for i := range s.Slots {
		if s.Slots[i].Name == name {
			return s.Slots[i].Data
		}
	}
	return nil
}

// Optimizer takes steps on float32 parameters in place.
type Optimizer interface {
	Config() OptimizerConfig
	// NewState allocates the zero state of a parameter of this shape.
	NewState(shape []int) *ParamState
	// Step updates param from grad, reading and writing st.
	Step(param, grad []float32, st *ParamState, t StepInfo, threads int)
	// StepCount is Step fused with DST's counting pass: it also adds to
	// counts[j] how many entries of the new param have a distance d to
	// seed above thresholds[j] (kernels.CountAbove), in the same pass.
	StepCount(param, grad []float32, st *ParamState, t StepInfo, seed []float32, d kernels.Distance, thresholds []float32, counts []int64, threads int)
	// LR is the step size reported for step t (Adafactor: before the
	// per-parameter RMS scaling).
	LR(t StepInfo) float64
}

// NewOptimizer checks c and returns its optimizer.
func NewOptimizer(c OptimizerConfig) (Optimizer, error) {
	set := 0
	for _, p := range []bool{c.SGD != nil, c.AdamW != nil, c.Adafactor != nil} {
		if p {
			set++
		}
	}
	bad := func(format string, args ...any) (Optimizer, error) {
		return nil, fmt.Errorf("optimizer %s: "+format, append([]any{c.Name}, args...)...)
	}
	if set != 1 {
		return bad("want exactly one hyper-parameter block, found %d", set)
	}
	finite := func(vals ...float64) bool {
		for _, v := range vals {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return false
			}
		}
		return true
	}
	switch {
	case c.Name == OptimizerSGD && c.SGD != nil:
		h := *c.SGD
		switch {
		case !finite(h.LR, h.Momentum, h.Dampening, h.WeightDecay):
			return bad("hyper-parameters must be finite")
		case h.LR < 0 || h.Momentum < 0 || h.WeightDecay < 0:
			return bad("lr, momentum and weight decay must not be negative")
		case h.Nesterov && (h.Momentum == 0 || h.Dampening != 0):
			return bad("Nesterov momentum needs momentum > 0 and dampening 0")
		}
		return sgdOptimizer{h}, nil
	case c.Name == OptimizerAdamW && c.AdamW != nil:
		h := *c.AdamW
		switch {
		case !finite(h.LR, h.Beta1, h.Beta2, h.Eps, h.WeightDecay):
			return bad("hyper-parameters must be finite")
		case h.LR < 0 || h.Eps < 0 || h.WeightDecay < 0:
			return bad("lr, eps and weight decay must not be negative")
		case h.Beta1 < 0 || h.Beta1 >= 1 || h.Beta2 < 0 || h.Beta2 >= 1:
			return bad("betas must be in [0, 1), got %g and %g", h.Beta1, h.Beta2)
		}
		return adamWOptimizer{h}, nil
	case c.Name == OptimizerAdafactor && c.Adafactor != nil:
		h := *c.Adafactor
		switch {
		case !finite(h.LR, h.Beta1, h.DecayRate, h.ClipThreshold, h.Eps1, h.Eps2):
			return bad("hyper-parameters must be finite")
		case h.LR < 0 || h.Eps1 < 0 || h.Eps2 < 0:
			return bad("lr and eps must not be negative")
		case h.Beta1 < 0 || h.Beta1 >= 1:
			return bad("beta1 must be in [0, 1), got %g", h.Beta1)
		case h.DecayRate >= 0:
			return bad("decay rate must be negative (the paper's is -0.8), got %g", h.DecayRate)
		case h.ClipThreshold <= 0:
			return bad("clip threshold must be positive, got %g", h.ClipThreshold)
		}
		return adafactorOptimizer{h}, nil
	}
	return bad("unknown optimizer or hyper-parameters for another one (want %s, %s or %s)", OptimizerSGD, OptimizerAdamW, OptimizerAdafactor)
}

func newSlot(name string, shape ...int) Slot {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return Slot{Name: name, Shape: shape, Data: make([]float32, n)}
}

func numElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// ---- SGD ----

type sgdOptimizer struct{ h SGDConfig }

func (o sgdOptimizer) Config() OptimizerConfig {
	h := o.h
	return OptimizerConfig{Name: OptimizerSGD, SGD: &h}
}

func (o sgdOptimizer) NewState(shape []int) *ParamState {
	st := &ParamState{Shape: append([]int(nil), shape...)}
	if o.h.Momentum != 0 {
		st.Slots = []Slot{newSlot("momentum_buffer", numElements(shape))}
	}
	return st
}

func (o sgdOptimizer) kernelArgs(st *ParamState, t StepInfo) (kernels.SGD, []float32) {
	h := kernels.SGD{LR: o.h.LR * t.LRScale, Momentum: o.h.Momentum, Dampening: o.h.Dampening,
		WeightDecay: o.h.WeightDecay, Nesterov: o.h.Nesterov, Step: t.Step}
	return h, st.Slot("momentum_buffer")
}

func (o sgdOptimizer) Step(param, grad []float32, st *ParamState, t StepInfo, threads int) {
	h, buf := o.kernelArgs(st, t)
	kernels.SGDStep(h, param, grad, buf, threads)
}

func (o sgdOptimizer) StepCount(param, grad []float32, st *ParamState, t StepInfo, seed []float32, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	h, buf := o.kernelArgs(st, t)
	kernels.SGDStepCount(h, param, grad, buf, seed, d, thresholds, counts, threads)
}

func (o sgdOptimizer) LR(t StepInfo) float64 { return o.h.LR * t.LRScale }

// ---- AdamW ----

type adamWOptimizer struct{ h AdamWConfig }

func (o adamWOptimizer) Config() OptimizerConfig {
	h := o.h
	return OptimizerConfig{Name: OptimizerAdamW, AdamW: &h}
}

func (o adamWOptimizer) NewState(shape []int) *ParamState {
	n := numElements(shape)
	return &ParamState{Shape: append([]int(nil), shape...),
		Slots: []Slot{newSlot("exp_avg", n), newSlot("exp_avg_sq", n)}}
}

func (o adamWOptimizer) kernelArgs(t StepInfo) kernels.AdamW {
	return kernels.AdamW{LR: o.h.LR * t.LRScale, Beta1: o.h.Beta1, Beta2: o.h.Beta2, Eps: o.h.Eps,
		WeightDecay: o.h.WeightDecay, Step: t.Step}
}

func (o adamWOptimizer) Step(param, grad []float32, st *ParamState, t StepInfo, threads int) {
	kernels.AdamWStep(o.kernelArgs(t), param, grad, st.Slots[0].Data, st.Slots[1].Data, threads)
}

func (o adamWOptimizer) StepCount(param, grad []float32, st *ParamState, t StepInfo, seed []float32, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	kernels.AdamWStepCount(o.kernelArgs(t), param, grad, st.Slots[0].Data, st.Slots[1].Data, seed, d, thresholds, counts, threads)
}

func (o adamWOptimizer) LR(t StepInfo) float64 { return o.h.LR * t.LRScale }

// ---- Adafactor ----

type adafactorOptimizer struct{ h AdafactorConfig }

func (o adafactorOptimizer) Config() OptimizerConfig {
	h := o.h
	return OptimizerConfig{Name: OptimizerAdafactor, Adafactor: &h}
}

// adafactorLayout is how Adafactor sees a parameter: stack matrices of
// rows × cols (stack 1, rows 1 and cols = n for an unfactored one).
type adafactorLayout struct {
	factored          bool
	stack, rows, cols int
}

func layoutOf(shape []int) adafactorLayout {
	if len(shape) < 2 {
		return adafactorLayout{stack: 1, rows: 1, cols: numElements(shape)}
	}
	r := len(shape)
	return adafactorLayout{factored: true, stack: numElements(shape[:r-2]), rows: shape[r-2], cols: shape[r-1]}
}

func (o adafactorOptimizer) NewState(shape []int) *ParamState {
	l := layoutOf(shape)
	st := &ParamState{Shape: append([]int(nil), shape...)}
	if l.factored {
		lead := shape[:len(shape)-2]
		st.Slots = []Slot{
			newSlot("exp_avg_sq_row", append(append([]int{}, lead...), l.rows)...),
			newSlot("exp_avg_sq_col", append(append([]int{}, lead...), l.cols)...),
		}
	} else {
		st.Slots = []Slot{newSlot("exp_avg_sq", shape...)}
	}
	if o.h.Beta1 != 0 {
		st.Slots = append(st.Slots, newSlot("exp_avg", shape...))
	}
	// Scratch: the row and column sums of one matrix, and the row and
	// column scales of every matrix (the clipping needs them all before
	// the first matrix is updated).
	st.scratch = make([]float32, (l.rows+l.cols)*(1+l.stack))
	return st
}

// stepSize is α before the clipping: the base step (absolute or relative)
// times the schedule, times max(Eps2, RMS(param)) with ScaleParameter.
func (o adafactorOptimizer) stepSize(param []float32, t StepInfo) float64 {
	alpha := o.LR(t)
	if o.h.ScaleParameter {
		var sum float64
		for _, x := range param {
			sum += float64(x) * float64(x)
		}
		rms := 0.0
		if len(param) > 0 {
			rms = math.Sqrt(sum / float64(len(param)))
		}
		alpha *= max(o.h.Eps2, rms)
	}
	return alpha
}

func (o adafactorOptimizer) LR(t StepInfo) float64 {
	if o.h.LR != 0 {
		return o.h.LR * t.LRScale
	}
	return min(1e-2, 1/math.Sqrt(float64(t.Step))) * t.LRScale
}

func (o adafactorOptimizer) Step(param, grad []float32, st *ParamState, t StepInfo, threads int) {
	o.step(param, grad, st, t, nil, 0, nil, nil, threads)
}

func (o adafactorOptimizer) StepCount(param, grad []float32, st *ParamState, t StepInfo, seed []float32, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	if seed == nil {
		panic("train: Adafactor StepCount without a seed")
	}
	o.step(param, grad, st, t, seed, d, thresholds, counts, threads)
}

func (o adafactorOptimizer) step(param, grad []float32, st *ParamState, t StepInfo, seed []float32, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	if t.Step < 1 {
		panic("train: Adafactor step < 1")
	}
	n := len(param)
	if len(grad) != n {
		panic("train: Adafactor param and grad lengths differ")
	}
	if n == 0 {
		return
	}
	l := layoutOf(st.Shape)
	beta2 := 1 - math.Pow(float64(t.Step), o.h.DecayRate)
	alpha := o.stepSize(param, t)
	eps1 := float32(o.h.Eps1)
	mat := l.rows * l.cols
	rowSums := st.scratch[:l.rows]
	colSums := st.scratch[l.rows : l.rows+l.cols]
	scales := st.scratch[l.rows+l.cols:]
	rowScales, colScales := scales[:l.stack*l.rows], scales[l.stack*l.rows:]
	var sumSq float64
	for k := range l.stack {
		g := grad[k*mat : (k+1)*mat]
		rowScale, colScale := rowScales[k*l.rows:(k+1)*l.rows], colScales[k*l.cols:(k+1)*l.cols]
		kernels.AdafactorSquareSums(rowSums, colSums, g, l.rows, l.cols, eps1)
		if l.factored {
			r := st.Slots[0].Data[k*l.rows : (k+1)*l.rows]
			c := st.Slots[1].Data[k*l.cols : (k+1)*l.cols]
			kernels.AdafactorUpdateFactors(r, rowSums, beta2)
			kernels.AdafactorUpdateFactors(c, colSums, beta2)
			kernels.AdafactorScales(rowScale, colScale, r, c)
		} else {
			v := st.Slots[0].Data
			kernels.AdafactorUpdateFactors(v, colSums, beta2)
			one := [1]float32{1}
			kernels.AdafactorScales(rowScale, colScale, one[:], v)
		}
		sumSq += kernels.AdafactorUpdateSquares(g, rowScale, colScale, l.rows, l.cols)
	}
	rmsU := math.Sqrt(sumSq / float64(n))
	scale := float32(alpha / max(1, rmsU/o.h.ClipThreshold))
	var expAvg []float32
	if o.h.Beta1 != 0 {
		expAvg = st.Slot("exp_avg")
	}
	for k := range l.stack {
		lo, hi := k*mat, (k+1)*mat
		rowScale, colScale := rowScales[k*l.rows:(k+1)*l.rows], colScales[k*l.cols:(k+1)*l.cols]
		var m []float32
		if expAvg != nil {
			m = expAvg[lo:hi]
		}
		if seed == nil {
			kernels.AdafactorApply(param[lo:hi], grad[lo:hi], rowScale, colScale, l.rows, l.cols, scale, float32(o.h.Beta1), m, threads)
		} else {
			kernels.AdafactorApplyCount(param[lo:hi], grad[lo:hi], rowScale, colScale, l.rows, l.cols, scale, float32(o.h.Beta1), m,
				seed[lo:hi], d, thresholds, counts, threads)
		}
	}
}
