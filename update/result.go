package update

import "time"

// Result is what one training step reports.
type Result struct {
	Loss float32 // the batch's mean loss, before the update
	// Selection is the selection's outcome (nil without one, or when the
	// loss was not finite and nothing was updated).
	Selection *SelectionResult
	// Host holds what only a backend updating in host memory measures
	// (nil on a device, whose update runs inside the compiled step).
	Host *HostStats
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
