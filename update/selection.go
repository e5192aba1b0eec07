package update

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Program is the update of one training step: the optimizer's step on
// every trainable parameter and, when Selection is set, Dynamic Subset
// Tuning's selection after it.
type Program struct {
	Optimizer Optimizer
	Selection *Selection // nil: every parameter keeps its optimizer step (full fine-tuning)
	// MaxGradNorm clips the gradients before the optimizer's step, as
	// torch.nn.utils.clip_grad_norm_ does: all of them are multiplied by
	// ClipFactor(their global L2 norm, MaxGradNorm). 0: no clipping.
	MaxGradNorm float64
	// Seeds may hold, by parameter name, values equal to the parameters'
	// when the trainer is made, stored where a host trainer may read
	// them as the selection's seed in place of a copy (the model file's
	// bytes, mapped); they must stay unchanged while the trainer lives.
	// A trainer checks them against the parameters and copies where
	// they differ or are missing.
	Seeds map[string][]float32
	// SeedPages, when set, says that Seeds are pages of files (mapped
	// read-only) that the process need not keep resident between steps: a
	// host trainer calls Fetch with a seed of Seeds before a step's
	// selection reads it and Release once it has, and meanwhile the
	// kernel keeps the pages in its page cache (or reads them from the
	// file again). Θ0 then costs the kernel's reclaimable cache instead
	// of the process's own memory.
	SeedPages SeedPager
}

// SeedPager maps seeds into a host trainer's resident memory and out of
// it (Program.SeedPages).
type SeedPager interface {
	Fetch(seed []float32)
	Release(seed []float32)
}

// Selection is DST's selection after every optimizer step (the paper's
// Algorithm 1): the optimizer takes its full step Θ̂ (its state is updated
// from it), then every unit keeps exactly min(K, its positive Δ) entries —
// the largest Δ(Θ̂, Θ0), ties at the lowest unit positions, never a Δ of
// 0 or NaN (Keeps) — and every
// other entry goes back to its seed Θ0 (the parameters' values when the
// trainer was made). Package dst makes the units (one per silo, or one
// over every parameter for a normalized run) and their K.
//
// How a unit finds its threshold decides nothing about which entries are
// kept, only what a step reports and carries (ReferenceSelect is the
// definition):
//
//   - exact (Exact, the first step, after a threshold that Algorithm 2
//     cannot start from, normalized runs): the K-th largest Δ, Q, and the
//     tie rule Δ > Q || (Δ == Q && position < the last kept tie + 1),
//     of positive Δ only;
//   - iterative: Algorithm 2 (Bisection) from the threshold carried from
//     the step before, counting its candidates as GridRun schedules; the
//     first counted candidate with exactly K entries above it is the
//     threshold, else the exact one is. A unit whose band between the
//     nearest counted candidates holds more than BandCap entries reports an
//     exact fallback (the CPU then selects over the whole unit rather than
//     the band).
//
// The threshold used is carried to the next step when Usable.
type Selection struct {
	Distance Distance
	Units    []Unit
	// Exact selects exactly every step instead of running Algorithm 2.
	Exact     bool
	Bisection Bisection // Algorithm 2's m and r (unused when Exact)
	BandCap   int64     // > 0
	Fixed     Fixing
	// Normalized is Appendix B's normalization instead of siloing: Units
	// holds one unit over every trainable parameter, each piece's Δ is
	// multiplied by its Scale before the one exact selection, Algorithm 2
	// runs on those scores only to be reported, and Groups names the
	// silos the pieces report their kept entries to (Piece.Group).
	Normalized bool
	Groups     []string
	// PaperAlg2 also runs Algorithm 2 as printed in every unit, carrying
	// its own threshold from step to step, and reports what it would keep
	// (a diagnostic: it changes nothing; one more counting pass a step on
	// the CPU; devices refuse it).
	PaperAlg2 bool
}

// Fixing says when a selection's subset stops changing.
type Fixing uint8

const (
	// FixNever selects every step.
	FixNever Fixing = iota
	// FixAfterFirst keeps the subset of the first selection (churn off).
	FixAfterFirst
	// FixFromStart keeps the subset the trainer's initial state holds
	// (the random mask) from the first step on; nothing is selected.
	FixFromStart
)

// Unit is one selection: pieces of parameters laid end to end, of which
// K entries keep their values.
type Unit struct {
	Name   string // the silo's name, or "all"
	Pieces []Piece
	K      int64
}

// Piece is one parameter's share of a unit.
type Piece struct {
	Param string
	// Scale multiplies the piece's Δ in a normalized run (fl32(1/c_S) of
	// its silo); 0 elsewhere.
	Scale float32
	// Group is the index in Selection.Groups of the silo the piece
	// belongs to (normalized runs).
	Group int
}

// Check reports what makes the selection unusable for parameters of the
// given sizes (entries by name): every parameter in exactly one unit, K
// within the unit, usable Algorithm 2 settings, scales in normalized runs.
func (s *Selection) Check(sizes map[string]int) error {
	if s.Distance > DistanceInvRel {
		return fmt.Errorf("update: unknown distance %d", s.Distance)
	}
	if !s.Exact || s.Normalized {
		if err := s.Bisection.Validate(); err != nil {
			return fmt.Errorf("update: %w", err)
		}
	}
	if s.BandCap <= 0 {
		return fmt.Errorf("update: band cap %d, want > 0", s.BandCap)
	}
	if s.Fixed > FixFromStart {
		return fmt.Errorf("update: unknown fixing %d", s.Fixed)
	}
	if s.Normalized && len(s.Units) != 1 {
		return fmt.Errorf("update: a normalized selection has one unit, not %d", len(s.Units))
	}
	if s.PaperAlg2 && s.Normalized {
		return errors.New("update: the printed Algorithm 2 runs per silo, not in a normalized selection")
	}
	seen := map[string]bool{}
	for _, u := range s.Units {
		var size int64
		for _, p := range u.Pieces {
			n, ok := sizes[p.Param]
			if !ok {
				return fmt.Errorf("update: unit %q: %q is not a trainable parameter", u.Name, p.Param)
			}
			if seen[p.Param] {
				return fmt.Errorf("update: parameter %q is in more than one unit", p.Param)
			}
			if n > math.MaxInt32 {
				return fmt.Errorf("update: parameter %q has %d entries; a selection handles tensors of fewer than 2^31", p.Param, n)
			}
			seen[p.Param] = true
			size += int64(n)
			if s.Normalized {
				if !(p.Scale > 0) || math.IsInf(float64(p.Scale), 0) {
					return fmt.Errorf("update: parameter %q: normalization scale %g, want a finite number > 0", p.Param, p.Scale)
				}
				if p.Group < 0 || p.Group >= len(s.Groups) {
					return fmt.Errorf("update: parameter %q: group %d of %d", p.Param, p.Group, len(s.Groups))
				}
			}
		}
		if u.K < 0 || u.K > size {
			return fmt.Errorf("update: unit %q keeps %d of %d entries", u.Name, u.K, size)
		}
	}
	for name := range sizes {
		if !seen[name] {
			return fmt.Errorf("update: trainable parameter %q is in no unit", name)
		}
	}
	return nil
}

// Distance is how a selection scores an entry's move from its seed; the
// score Δ is non-negative or NaN.
type Distance uint8

const (
	// DistanceAbs is |θ̂ − θ0|.
	DistanceAbs Distance = iota
	// DistanceRel is |(θ̂ − θ0) / θ0|, 0 where θ̂ − θ0 == 0 (so θ̂ = θ0 = 0
	// scores 0, not NaN); a seed of 0 with θ̂ ≠ 0 scores +Inf.
	DistanceRel
	// DistanceInvRel is |θ0 · (θ̂ − θ0)|.
	DistanceInvRel
)

func (d Distance) String() string {
	switch d {
	case DistanceAbs:
		return "abs"
	case DistanceRel:
		return "rel"
	case DistanceInvRel:
		return "inv-rel"
	}
	return "Distance(" + strconv.Itoa(int(d)) + ")"
}

// Score is the distance of one entry, in float32 arithmetic: every
// backend computes exactly these bits.
func (d Distance) Score(theta, seed float32) float32 {
	abs := func(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }
	switch d {
	case DistanceRel:
		diff := theta - seed
		if diff == 0 {
			return 0
		}
		return abs(diff / seed)
	case DistanceInvRel:
		return abs(seed * (theta - seed))
	}
	return abs(theta - seed)
}
