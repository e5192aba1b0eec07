package dst

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/dstune/dstune/update"
)

// Distance names (--distance); DistanceRandom is the paper's random
// baseline: a random mask chosen once.
const (
	DistanceInvRel = "inv-rel"
	DistanceRel    = "rel"
	DistanceAbs    = "abs"
	DistanceRandom = "random"
)

// Threshold modes (--threshold).
const (
	ThresholdIterative = "iterative"
	ThresholdExact     = "exact"
)

// Normalizations (--normalize), Appendix B's alternatives to siloing:
// Δ of every entry is divided by a per-silo constant and one selection
// runs over all parameters.
const (
	NormalizeNone = ""
	NormalizeSize = "size" // divide by the silo's parameter count
	NormalizeMean = "mean" // divide by the mean |Θ0| of the silo
)

// DefaultBandCap is the most band entries (Δ between the two counted
// candidates around the exact threshold) an iterative step captures and
// selects among; a wider band falls back to an exact selection.
const DefaultBandCap = 64 << 10

// Options configure --method dst. A run's config.json stores them as its
// "dst" object (the fields with JSON names); Seed and BandCap come from
// elsewhere.
type Options struct {
	Eps       float64 `json:"eps"`                 // fraction of each silo's entries that may differ from the seed
	Distance  string  `json:"distance"`            // inv-rel | rel | abs | random
	Silo      string  `json:"silo"`                // module-layer | module | none
	Normalize string  `json:"normalize,omitempty"` // "" | size | mean: Appendix B's normalization instead of siloing
	Threshold string  `json:"threshold"`           // iterative | exact
	Churn     bool    `json:"churn"`               // false: the subset chosen at the first step stays fixed
	// RefineSteps (m) and Factor (r) are Algorithm 2's parameters.
	RefineSteps int     `json:"refine_steps"`
	Factor      float64 `json:"factor"`
	// PaperAlg2 also tracks each silo's threshold with Algorithm 2 as
	// printed (carrying its own q̃, not the exact threshold) and reports
	// the share it would keep as eps_paper_alg2: a diagnostic that costs
	// one more counting pass per step.
	PaperAlg2 bool `json:"paper_alg2,omitempty"`

	Seed    uint64 `json:"-"` // the random mask's seed (the run's --seed)
	BandCap int64  `json:"-"` // 0: DefaultBandCap
}

// DefaultOptions is the paper's setting: ε = 1e-3, inverse-relative
// distance, per-module-and-layer silos, the iterative threshold with m = 3
// and r = 2, churn on.
func DefaultOptions() Options {
	return Options{Eps: 1e-3, Distance: DistanceInvRel, Silo: SiloModuleLayer, Threshold: ThresholdIterative, Churn: true, RefineSteps: 3, Factor: 2}
}

// ParseOptions reads the options a run's configuration holds (its "dst"
// object; the defaults when there is none) and checks them; seed seeds
// the random mask.
func ParseOptions(raw json.RawMessage, seed uint64) (Options, error) {
	o := DefaultOptions()
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return o, fmt.Errorf("dst options: %w", err)
		}
	}
	o.Seed = seed
	return o, o.Check()
}

// JSON is the options' configuration form (what ParseOptions reads).
func (o Options) JSON() json.RawMessage {
	data, err := json.Marshal(o)
	if err != nil {
		panic("dst: options do not encode: " + err.Error())
	}
	return data
}

// Check reports what makes the options unusable.
func (o Options) Check() error {
	if !(o.Eps >= 0 && o.Eps <= 1) {
		return fmt.Errorf("dst: ε = %g, want a fraction in [0, 1]", o.Eps)
	}
	switch o.Distance {
	case DistanceInvRel, DistanceRel, DistanceAbs, DistanceRandom:
	default:
		return fmt.Errorf("dst: unknown distance %q (want %s, %s, %s or %s)", o.Distance, DistanceInvRel, DistanceRel, DistanceAbs, DistanceRandom)
	}
	switch o.Silo {
	case SiloModuleLayer, SiloModule, SiloNone:
	default:
		return fmt.Errorf("dst: unknown silo mode %q (want %s, %s or %s)", o.Silo, SiloModuleLayer, SiloModule, SiloNone)
	}
	switch o.Normalize {
	case NormalizeNone, NormalizeSize, NormalizeMean:
	default:
		return fmt.Errorf("dst: unknown normalization %q (want size or mean, or none)", o.Normalize)
	}
	random := o.Distance == DistanceRandom
	if random && o.Normalize != NormalizeNone {
		return fmt.Errorf("dst: normalization scales distances; the random mask has none")
	}
	if o.PaperAlg2 && (random || o.Normalize != NormalizeNone) {
		return fmt.Errorf("dst: the paper's Algorithm 2 runs per silo: not with the random mask or normalization")
	}
	switch o.Threshold {
	case ThresholdIterative, ThresholdExact:
	default:
		return fmt.Errorf("dst: unknown threshold mode %q (want %s or %s)", o.Threshold, ThresholdIterative, ThresholdExact)
	}
	if math.IsNaN(o.Factor) || o.Factor > math.MaxFloat32 {
		return fmt.Errorf("dst: threshold factor r = %g, want a finite number > 1", o.Factor)
	}
	if err := o.Bisection().Validate(); err != nil {
		return fmt.Errorf("dst: %w", err)
	}
	if o.BandCap < 0 {
		return fmt.Errorf("dst: band cap %d", o.BandCap)
	}
	return nil
}

// Bisection is Algorithm 2's m and r.
func (o Options) Bisection() update.Bisection {
	return update.Bisection{Steps: o.RefineSteps, Factor: float32(o.Factor)}
}

// distance is the selection's distance (abs for the random mask, which
// scores nothing).
func (o Options) distance() update.Distance {
	switch o.Distance {
	case DistanceRel:
		return update.DistanceRel
	case DistanceInvRel:
		return update.DistanceInvRel
	}
	return update.DistanceAbs
}

// fixing says when the subset stops changing.
func (o Options) fixing() update.Fixing {
	switch {
	case o.Distance == DistanceRandom:
		return update.FixFromStart
	case !o.Churn:
		return update.FixAfterFirst
	}
	return update.FixNever
}

// SubsetSize is the number of entries k a silo of n parameters keeps free
// at fraction eps: k = round(eps·n), rounding halves away from zero, but at
// least 1 when eps > 0 (a silo never freezes entirely because it is small)
// and at most n. eps = 0 gives 0. eps must be in [0, 1] and n ≥ 0.
func SubsetSize(eps float64, n int64) int64 {
	if !(eps >= 0 && eps <= 1) || n < 0 {
		panic("dst: SubsetSize needs 0 ≤ eps ≤ 1 and n ≥ 0")
	}
	if eps == 0 || n == 0 {
		return 0
	}
	k := int64(math.Round(eps * float64(n)))
	return min(max(k, 1), n)
}
