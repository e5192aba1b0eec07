package update

import "math"

// The per-step scalars of each optimizer: computed on the host in float64
// from the hyper-parameters and the step, as PyTorch's Python code computes
// them, and rounded once to float32 where its CPU kernels take a Python
// number. Every backend's step uses exactly these values (package kernels
// reads them on the CPU; accel/tpu feeds them to its compiled step).

// AdamWScalars are one AdamW step's float32 scalars; the step per entry is
//
//	p := param * Decay
//	m := grad*OneMinusBeta1 + expAvg*Beta1
//	v := (OneMinusBeta2*grad)*grad + expAvgSq*Beta2
//	param = p + (NegStepSize*m) / (sqrt(v)/BiasCorrection2Sqrt + Eps)
//
// (package kernels documents how its fused multiply-adds round).
type AdamWScalars struct {
	Decay               float32 // 1 − lr·weight_decay
	Beta1               float32
	OneMinusBeta1       float32
	Beta2               float32
	OneMinusBeta2       float32
	BiasCorrection2Sqrt float32 // sqrt(1 − β2^t)
	Eps                 float32
	NegStepSize         float32 // −lr / (1 − β1^t)
}

// Scalars are step t's scalars, lr being LR·t.LRScale. (Python's beta**step
// is C pow; math.Pow may differ from it in the last float64 bit, which
// reaches the float32 values with probability of order 1e-6 per step.)
func (h AdamW) Scalars(t StepInfo) AdamWScalars {
	if t.Step < 1 {
		panic("update: AdamW step < 1")
	}
	lr := h.LR * t.LRScale
	bc1 := 1 - math.Pow(h.Beta1, float64(t.Step))
	bc2 := 1 - math.Pow(h.Beta2, float64(t.Step))
	return AdamWScalars{
		Decay:               float32(1 - lr*h.WeightDecay),
		Beta1:               float32(h.Beta1),
		OneMinusBeta1:       float32(1 - h.Beta1),
		Beta2:               float32(h.Beta2),
		OneMinusBeta2:       float32(1 - h.Beta2),
		BiasCorrection2Sqrt: float32(math.Sqrt(bc2)),
		Eps:                 float32(h.Eps),
		NegStepSize:         float32(-(lr / bc1)),
	}
}

// SGDScalars are one SGD step's scalars; per entry
//
//	d := grad
//	if HasWeightDecay { d = param*WeightDecay + d }
//	if HasMomentum {
//		if First { buf = d } else { buf = d*OneMinusDampening + buf*Momentum }
//		if Nesterov { d = buf*Momentum + d } else { d = buf }
//	}
//	param = d*NegLR + param
type SGDScalars struct {
	WeightDecay, Momentum, OneMinusDampening, NegLR float32
	// The flags test the float64 hyper-parameters (a weight decay too
	// small for float32 still adds param·0, which matters for ±Inf).
	HasWeightDecay, HasMomentum, Nesterov bool
	First                                 bool // step 1: the momentum buffer starts as d
}

// Scalars are step t's scalars.
func (h SGD) Scalars(t StepInfo) SGDScalars {
	if t.Step < 1 {
		panic("update: SGD step < 1")
	}
	return SGDScalars{
		WeightDecay: float32(h.WeightDecay), Momentum: float32(h.Momentum),
		OneMinusDampening: float32(1 - h.Dampening), NegLR: float32(-(h.LR * t.LRScale)),
		HasWeightDecay: h.WeightDecay != 0, HasMomentum: h.Momentum != 0, Nesterov: h.Nesterov, First: t.Step == 1,
	}
}

// AdafactorScalars are one Adafactor step's scalars, in float64 (the CPU
// step computes its factors in float64; a device rounds them to float32).
type AdafactorScalars struct {
	// Alpha is α before the parameter scaling: LR·s, or the relative step
	// min(1e-2, 1/√t)·s when LR is 0 (s the schedule's factor). With
	// ScaleParameter the step multiplies it by max(Eps2, RMS(X)).
	Alpha          float64
	ScaleParameter bool
	Beta2          float64 // β̂2t = 1 − t^DecayRate
	Beta1          float64
	Eps1, Eps2     float64
	ClipThreshold  float64
}

// Scalars are step t's scalars.
func (h Adafactor) Scalars(t StepInfo) AdafactorScalars {
	if t.Step < 1 {
		panic("update: Adafactor step < 1")
	}
	return AdafactorScalars{
		Alpha: h.alpha(t), ScaleParameter: h.ScaleParameter,
		Beta2: 1 - math.Pow(float64(t.Step), h.DecayRate),
		Beta1: h.Beta1, Eps1: h.Eps1, Eps2: h.Eps2, ClipThreshold: h.ClipThreshold,
	}
}

func (h Adafactor) alpha(t StepInfo) float64 {
	if h.LR != 0 {
		return h.LR * t.LRScale
	}
	return min(1e-2, 1/math.Sqrt(float64(t.Step))) * t.LRScale
}
