package train

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// NonFiniteError is NaN or ±Inf in a step's gradients, in the parameters
// or optimizer state a step left, or in the state a checkpoint would
// keep. The run stops at it; nothing of the step is saved.
type NonFiniteError struct {
	Step int64
	update.NonFinite
}

func (e *NonFiniteError) Error() string {
	where := fmt.Sprintf("%v at index %d (%d of %d entries are not finite)", e.Value, e.Index, e.Count, e.Size)
	switch {
	case e.Tensor == "gradient":
		return fmt.Sprintf("step %d: the gradient of %q holds %s; the update was not applied", e.Step, e.Param, where)
	case e.Tensor == "value" && e.Applied:
		return fmt.Sprintf("step %d: the update made parameter %q non-finite: %s", e.Step, e.Param, where)
	case e.Tensor == "value":
		return fmt.Sprintf("step %d: parameter %q holds %s", e.Step, e.Param, where)
	case e.Applied:
		return fmt.Sprintf("step %d: the update made the optimizer state %s of %q non-finite: %s", e.Step, e.Tensor, e.Param, where)
	}
	return fmt.Sprintf("step %d: the optimizer state %s of %q holds %s", e.Step, e.Tensor, e.Param, where)
}

// checkStateFinite looks for NaN and ±Inf in what a checkpoint of st
// keeps of the parameters (in params' order): their values and optimizer
// slots. (A method's own state may hold infinities, DST's thresholds do.)
func checkStateFinite(st *EngineState, params []*ir.Param) *NonFiniteError {
	found := func(param, tensor string, v []float32) *NonFiniteError {
		first, count := update.FindNonFinite(v)
		if count == 0 {
			return nil
		}
		return &NonFiniteError{Step: st.Step, NonFinite: update.NonFinite{Param: param, Tensor: tensor,
			Index: first, Value: v[first], Count: count, Size: len(v)}}
	}
	for _, p := range params {
		if err := found(p.Name, "value", st.Params[p.Name]); err != nil {
			return err
		}
		for _, s := range st.Optimizer[p.Name] {
			if err := found(p.Name, s.Name, s.Data); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkOptimizerPrecision reports hyper-parameters that are finite in
// float64, where flags and config.json hold them, but overflow the float32
// scalars every backend's update computes with (update.AdamWScalars …).
// The scalars are those of the first step at the full learning rate,
// the largest any step has (the schedule's factor is at most 1, AdamW's
// bias correction 1−β1^t is smallest at t = 1).
func checkOptimizerPrecision(o update.Optimizer) error {
	type scalar struct {
		what  string
		value float64
	}
	var scalars []scalar
	switch {
	case o.AdamW != nil:
		h := *o.AdamW
		scalars = []scalar{{"lr", h.LR}, {"the first step's size lr/(1−β1)", h.LR / (1 - h.Beta1)},
			{"the decay factor 1 − lr·weight_decay", 1 - h.LR*h.WeightDecay}, {"eps", h.Eps}}
	case o.SGD != nil:
		h := *o.SGD
		scalars = []scalar{{"lr", h.LR}, {"momentum", h.Momentum}, {"weight decay", h.WeightDecay}}
	case o.Adafactor != nil:
		h := *o.Adafactor
		scalars = []scalar{{"lr", h.LR}, {"clip threshold", h.ClipThreshold}, {"eps1", h.Eps1}, {"eps2", h.Eps2}}
	}
	for _, s := range scalars {
		if f := float32(s.value); math.IsInf(float64(f), 0) || math.IsInf(s.value, 0) {
			return fmt.Errorf("optimizer %s: %s is %.4g, beyond float32's range (±%.4g), the precision the update computes in", o.Name, s.what, s.value, math.MaxFloat32)
		}
	}
	return nil
}
