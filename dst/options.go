package dst

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
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

// DefaultBandCap is the most band entries (Δ between the two grid
// thresholds around the exact one) the iterative path captures and
// selects among; a wider band falls back to an exact selection pass.
const DefaultBandCap = 64 << 10

// Options configure a DST method (see train.DSTConfig for the file form).
type Options struct {
	Eps      float64
	Distance kernels.Distance // unused when Random
	Random   bool             // a random mask chosen once (the distance "random")
	// DistanceName is the --distance the options came from, for the
	// delta file's metadata.
	DistanceName string
	Silo         string
	Normalize    string
	Exact        bool // exact selection every step instead of Algorithm 2
	Churn        bool // false: the subset chosen at the first step is fixed
	Bisection    Bisection
	Seed         uint64 // the random mask's seed
	BandCap      int64  // 0: DefaultBandCap
	// PaperAlg2 also tracks each silo's threshold with Algorithm 2 as
	// printed (carrying its own q̃, not the exact threshold) and reports
	// the share it would keep as eps_paper_alg2: a diagnostic that costs
	// one more counting pass per step.
	PaperAlg2 bool
}

// ParseConfig checks a DST configuration and turns it into Options; seed
// seeds the random mask.
func ParseConfig(c train.DSTConfig, seed uint64) (Options, error) {
	o := Options{Eps: c.Eps, DistanceName: c.Distance, Silo: c.Silo, Normalize: c.Normalize, Churn: c.Churn, Seed: seed, PaperAlg2: c.PaperAlg2,
		Bisection: Bisection{Steps: c.RefineSteps, Factor: float32(c.Factor)}}
	if !(c.Eps >= 0 && c.Eps <= 1) {
		return o, fmt.Errorf("dst: ε = %g, want a fraction in [0, 1]", c.Eps)
	}
	switch c.Distance {
	case DistanceInvRel:
		o.Distance = kernels.DistanceInvRel
	case DistanceRel:
		o.Distance = kernels.DistanceRel
	case DistanceAbs:
		o.Distance = kernels.DistanceAbs
	case DistanceRandom:
		o.Random = true
	default:
		return o, fmt.Errorf("dst: unknown distance %q (want %s, %s, %s or %s)", c.Distance, DistanceInvRel, DistanceRel, DistanceAbs, DistanceRandom)
	}
	switch c.Silo {
	case SiloModuleLayer, SiloModule, SiloNone:
	default:
		return o, fmt.Errorf("dst: unknown silo mode %q (want %s, %s or %s)", c.Silo, SiloModuleLayer, SiloModule, SiloNone)
	}
	switch c.Normalize {
	case NormalizeNone, NormalizeSize, NormalizeMean:
	default:
		return o, fmt.Errorf("dst: unknown normalization %q (want size or mean, or none)", c.Normalize)
	}
	if o.Random && c.Normalize != NormalizeNone {
		return o, fmt.Errorf("dst: normalization scales distances; the random mask has none")
	}
	if c.PaperAlg2 && (o.Random || c.Normalize != NormalizeNone) {
		return o, fmt.Errorf("dst: the paper's Algorithm 2 runs per silo: not with the random mask or normalization")
	}
	switch c.Threshold {
	case ThresholdIterative:
	case ThresholdExact:
		o.Exact = true
	default:
		return o, fmt.Errorf("dst: unknown threshold mode %q (want %s or %s)", c.Threshold, ThresholdIterative, ThresholdExact)
	}
	if math.IsNaN(c.Factor) || c.Factor > math.MaxFloat32 {
		return o, fmt.Errorf("dst: threshold factor r = %g, want a finite number > 1", c.Factor)
	}
	if err := o.Bisection.Validate(); err != nil {
		return o, fmt.Errorf("dst: %w", err)
	}
	return o, nil
}

// Config is the file form of the options (Seed and BandCap excepted).
func (o Options) Config() train.DSTConfig {
	c := train.DSTConfig{Eps: o.Eps, Distance: o.DistanceName, Silo: o.Silo, Normalize: o.Normalize, Churn: o.Churn,
		Threshold: ThresholdIterative, RefineSteps: o.Bisection.Steps, Factor: float64(o.Bisection.Factor), PaperAlg2: o.PaperAlg2}
	if o.Exact {
		c.Threshold = ThresholdExact
	}
	return c
}
