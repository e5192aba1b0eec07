package update

import (
	"fmt"
	"math"
)

// Optimizer names an optimizer and holds its hyper-parameters: the field
// matching Name is set, the others are nil. It is plain data (a run's
// config.json stores it); Scalars, Slots and the reference steps define
// what every backend computes from it.
type Optimizer struct {
	Name      string     `json:"name"` // "sgd", "adamw" or "adafactor"
	SGD       *SGD       `json:"sgd,omitempty"`
	AdamW     *AdamW     `json:"adamw,omitempty"`
	Adafactor *Adafactor `json:"adafactor,omitempty"`
}

// SGD is torch.optim.SGD's step. State: "momentum_buffer", one float32
// per entry, only when Momentum ≠ 0.
type SGD struct {
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum"`
	Dampening   float64 `json:"dampening"`
	Nesterov    bool    `json:"nesterov"`
	WeightDecay float64 `json:"weight_decay"` // L2 (added to the gradient), as torch.optim.SGD
}

// AdamW is torch.optim.AdamW's step (bias-corrected, decoupled weight
// decay). State: "exp_avg" and "exp_avg_sq", one float32 per entry each.
type AdamW struct {
	LR          float64 `json:"lr"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"`
}

// Adafactor is Adafactor (Shazeer & Stern 2018, Algorithm 4 with the
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
type Adafactor struct {
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
func DefaultOptimizer(name string) (Optimizer, error) {
	o := Optimizer{Name: name}
	switch name {
	case OptimizerSGD:
		o.SGD = &SGD{LR: 1e-3}
	case OptimizerAdamW:
		o.AdamW = &AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	case OptimizerAdafactor:
		o.Adafactor = &Adafactor{ScaleParameter: true, DecayRate: -0.8, ClipThreshold: 1, Eps1: 1e-30, Eps2: 1e-3}
	default:
		return o, fmt.Errorf("unknown optimizer %q (want %s, %s or %s)", name, OptimizerSGD, OptimizerAdamW, OptimizerAdafactor)
	}
	return o, nil
}

// SetLR sets the base learning rate. For Adafactor it turns the relative
// step size off: the step is lr itself (times the schedule), not scaled by
// the parameter's RMS.
func (o *Optimizer) SetLR(lr float64) {
	switch {
	case o.SGD != nil:
		o.SGD.LR = lr
	case o.AdamW != nil:
		o.AdamW.LR = lr
	case o.Adafactor != nil:
		o.Adafactor.LR = lr
		o.Adafactor.ScaleParameter = false
	}
}

// Check reports what makes the optimizer unusable: not exactly one
// hyper-parameter block, one for another optimizer, or values out of
// range.
func (o Optimizer) Check() error {
	set := 0
	for _, p := range []bool{o.SGD != nil, o.AdamW != nil, o.Adafactor != nil} {
		if p {
			set++
		}
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("optimizer %s: "+format, append([]any{o.Name}, args...)...)
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
	case o.Name == OptimizerSGD && o.SGD != nil:
		h := *o.SGD
		switch {
		case !finite(h.LR, h.Momentum, h.Dampening, h.WeightDecay):
			return bad("hyper-parameters must be finite")
		case h.LR < 0 || h.Momentum < 0 || h.WeightDecay < 0:
			return bad("lr, momentum and weight decay must not be negative")
		case h.Nesterov && (h.Momentum == 0 || h.Dampening != 0):
			return bad("Nesterov momentum needs momentum > 0 and dampening 0")
		}
		return nil
	case o.Name == OptimizerAdamW && o.AdamW != nil:
		h := *o.AdamW
		switch {
		case !finite(h.LR, h.Beta1, h.Beta2, h.Eps, h.WeightDecay):
			return bad("hyper-parameters must be finite")
		case h.LR < 0 || h.Eps < 0 || h.WeightDecay < 0:
			return bad("lr, eps and weight decay must not be negative")
		case h.Beta1 < 0 || h.Beta1 >= 1 || h.Beta2 < 0 || h.Beta2 >= 1:
			return bad("betas must be in [0, 1), got %g and %g", h.Beta1, h.Beta2)
		}
		return nil
	case o.Name == OptimizerAdafactor && o.Adafactor != nil:
		h := *o.Adafactor
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
		return nil
	}
	return bad("unknown optimizer or hyper-parameters for another one (want %s, %s or %s)", OptimizerSGD, OptimizerAdamW, OptimizerAdafactor)
}

// StepInfo says which step an update is.
type StepInfo struct {
	Step    int64   // 1 for the first
	LRScale float64 // the learning-rate schedule's factor for this step
}

// LR is the step size reported for step t: the base learning rate times
// the schedule's factor (Adafactor's relative step: ρ_t times the factor,
// before the per-parameter RMS scaling).
func (o Optimizer) LR(t StepInfo) float64 {
	switch {
	case o.SGD != nil:
		return o.SGD.LR * t.LRScale
	case o.AdamW != nil:
		return o.AdamW.LR * t.LRScale
	case o.Adafactor != nil:
		return o.Adafactor.alpha(t)
	}
	return 0
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

// Slots lists the state the optimizer keeps for a parameter of the given
// shape, in order (float32, zero before the first step): AdamW's and SGD's
// are vectors of one entry per parameter entry (in row-major order),
// Adafactor's as type Adafactor describes. Slot names have no '/' or ':'.
func (o Optimizer) Slots(shape []int) []SlotSpec {
	clone := func(s []int) []int { return append([]int{}, s...) }
	n := NumElements(shape)
	switch {
	case o.AdamW != nil:
		return []SlotSpec{{"exp_avg", []int{n}}, {"exp_avg_sq", []int{n}}}
	case o.SGD != nil:
		if o.SGD.Momentum != 0 {
			return []SlotSpec{{"momentum_buffer", []int{n}}}
		}
		return nil
	case o.Adafactor != nil:
		var slots []SlotSpec
		if r := len(shape); r >= 2 {
			lead := shape[:r-2]
			slots = append(slots,
				SlotSpec{"exp_avg_sq_row", append(clone(lead), shape[r-2])},
				SlotSpec{"exp_avg_sq_col", append(clone(lead), shape[r-1])})
		} else {
			slots = append(slots, SlotSpec{"exp_avg_sq", clone(shape)})
		}
		if o.Adafactor.Beta1 != 0 {
			slots = append(slots, SlotSpec{"exp_avg", clone(shape)})
		}
		return slots
	}
	return nil
}

// NewSlots allocates the zero state of a parameter of this shape.
func (o Optimizer) NewSlots(shape []int) []Slot {
	specs := o.Slots(shape)
	slots := make([]Slot, len(specs))
	for i, s := range specs {
		slots[i] = Slot{Name: s.Name, Shape: s.Shape, Data: make([]float32, NumElements(s.Shape))}
	}
	return slots
}

// NumElements is the product of a shape's dimensions (1 for a scalar).
func NumElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// AdafactorLayout is how Adafactor sees a parameter: Stack matrices of
// Rows × Cols, factored; or, for a vector or scalar, one unfactored row
// (Stack 1, Rows 1, Cols = the entries).
type AdafactorLayout struct {
	Factored          bool
	Stack, Rows, Cols int
}

// LayoutOf returns Adafactor's layout of a parameter of this shape.
func LayoutOf(shape []int) AdafactorLayout {
	if len(shape) < 2 {
		return AdafactorLayout{Stack: 1, Rows: 1, Cols: NumElements(shape)}
	}
	r := len(shape)
	return AdafactorLayout{Factored: true, Stack: NumElements(shape[:r-2]), Rows: shape[r-2], Cols: shape[r-1]}
}
