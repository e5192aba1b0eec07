package update

import (
	"math"
	"time"
)

// Result is what one training step reports.
type Result struct {
	Loss float32 // the batch's mean loss, before the update
	// GradNorm is the global L2 norm of the gradients the update read
	// (every trainable parameter's, after accumulation, before clipping);
	// 0 when the update was not applied.
	GradNorm float64
	// Selection is the selection's outcome (nil without one, or when the
	// loss was not finite and nothing was updated).
	Selection *SelectionResult
	// Host holds what only a backend updating in host memory measures
	// (nil on a device, whose update runs inside the compiled step).
	Host *HostStats
	// NonFinite is the first NaN or ±Inf a backend that checks found in
	// the step (nil: none, or a backend that does not check; the engine
	// checks the whole state before every checkpoint either way).
	NonFinite *NonFinite
}

// NonFinite locates NaN or ±Inf in one tensor of a step: a gradient
// (found before the update, which was then not applied) or, after the
// update, a parameter's new value or one of its optimizer slots.
type NonFinite struct {
	Param string // the parameter's name
	// Tensor is "gradient", "value" or the optimizer slot's name
	// (update.SlotSpec.Name).
	Tensor string
	Index  int     // flat position of the first non-finite entry
	Value  float32 // the entry
	Count  int     // non-finite entries in the tensor
	Size   int     // the tensor's entries
	// Applied is set when the update had been applied (a value or slot);
	// a non-finite gradient leaves every parameter and all state as they
	// were.
	Applied bool
}

// FindNonFinite returns the position of the first NaN or ±Inf in v and
// how many there are (-1, 0 when every entry is finite).
func FindNonFinite(v []float32) (first, count int) {
	first = -1
	for i, x := range v {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			if count == 0 {
				first = i
			}
			count++
		}
	}
	return first, count
}

// SelectionResult is one step's selection outcome.
type SelectionResult struct {
	// Selected is false when the fixed subset was applied instead.
	Selected bool
	Units    []UnitResult // per unit of the Selection
	// GroupKept holds, in a normalized run, the entries each group
	// (Selection.Groups) keeps.
	GroupKept []int64
}

// UnitResult is one unit's outcome.
type UnitResult struct {
	Size, K int64
	Kept    int64 // entries kept: min(K, the unit's positive Δ)
	Entered int64 // kept entries that were not kept the step before
	// Q is the threshold used (HasQ: a selection ran; Q may be ±Inf).
	Q    float32
	HasQ bool
	// Alg2 is set when Algorithm 2 ran; Alg2Count is #{Δ > q̃} for its own
	// answer q̃ (what the paper calls the realized ε, times the size).
	Alg2      bool
	Alg2Count int64
	// Exact is set when the threshold is the K-th largest Δ (K > 0 and no
	// counted candidate of Algorithm 2 had exactly K entries above it, or
	// it did not run), however a backend finds it; Fallback when an
	// iterative step's band between the nearest counted candidates held
	// more than BandCap entries.
	Exact, Fallback bool
	// Paper and PaperCount are the printed Algorithm 2's count
	// (Selection.PaperAlg2, from its second step).
	Paper      bool
	PaperCount int64
}

// HostStats are a host backend's timings of the update and the band
// entries its iterative selections captured.
type HostStats struct {
	// Optimizer is the optimizer's passes (fused with Algorithm 2's
	// counting), Selection everything else the selection did.
	Optimizer, Selection time.Duration
	BandEntries          int64
}

// ClipFactor is what gradients of global L2 norm norm are multiplied by
// when a program clips at maxNorm (Program.MaxGradNorm), as
// torch.nn.utils.clip_grad_norm_ computes it: min(1, maxNorm/(norm+1e-6));
// 1 when maxNorm is 0.
func ClipFactor(norm, maxNorm float64) float64 {
	if maxNorm <= 0 {
		return 1
	}
	return min(1, maxNorm/(norm+1e-6))
}
