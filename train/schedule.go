package train

import (
	"fmt"
	"math"
)

// Schedule is the learning-rate schedule: a factor on the optimizer's
// base step size for every step t = 1…total.
//
//	warm-up (t ≤ Warmup):   t / Warmup
//	afterwards, with p = (t − Warmup − 1) / (total − Warmup) ∈ [0, 1):
//	  constant: 1
//	  linear:   1 − p
//	  cosine:   (1 + cos(π·p)) / 2
type Schedule struct {
	Name   string `json:"name"` // "constant", "linear" or "cosine"
	Warmup int64  `json:"warmup"`
}

// Schedule names.
const (
	ScheduleConstant = "constant"
	ScheduleLinear   = "linear"
	ScheduleCosine   = "cosine"
)

// Check reports a schedule that cannot run for total steps.
func (s Schedule) Check(total int64) error {
	switch s.Name {
	case ScheduleConstant, ScheduleLinear, ScheduleCosine:
	default:
		return fmt.Errorf("unknown schedule %q (want %s, %s or %s)", s.Name, ScheduleConstant, ScheduleLinear, ScheduleCosine)
	}
	if s.Warmup < 0 {
		return fmt.Errorf("warm-up of %d steps, want ≥ 0", s.Warmup)
	}
	if s.Warmup > total {
		return fmt.Errorf("warm-up of %d steps is longer than the run's %d steps", s.Warmup, total)
	}
	return nil
}

// Factor is the learning-rate factor of step t (1-based) of total.
func (s Schedule) Factor(t, total int64) float64 {
	if t <= s.Warmup {
		return float64(t) / float64(s.Warmup)
	}
	if s.Name == ScheduleConstant || total <= s.Warmup {
		return 1
	}
	p := float64(t-s.Warmup-1) / float64(total-s.Warmup)
	if s.Name == ScheduleLinear {
		return 1 - p
	}
	return (1 + math.Cos(math.Pi*p)) / 2
}
