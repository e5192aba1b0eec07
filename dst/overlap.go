package dst

import (
	"fmt"
	"math"
	"slices"
)

// TensorOverlap counts, for one tensor (or in total), the entries subset A
// changes, those subset B changes, and those both change.
type TensorOverlap struct {
	Tensor string // "" for the total
	InA    int64  // |A|
	InB    int64  // |B|
	Both   int64  // |A ∩ B|
}

// Fraction is the subset overlap |A∩B| / |A| (the paper's eq. 9), NaN when
// A changes nothing here.
func (o TensorOverlap) Fraction() float64 {
	if o.InA == 0 {
		return math.NaN()
	}
	return float64(o.Both) / float64(o.InA)
}

// OverlapReport is the subset overlap between two deltas, per tensor and
// in total.
type OverlapReport struct {
	// Tensors lists every tensor either delta changes, sorted by name;
	// a tensor only B changes has InA = 0 (Fraction NaN).
	Tensors []TensorOverlap
	// Total sums the per-tensor counts, so Total.Fraction() is the overlap
	// of the whole subsets.
	Total TensorOverlap
}

// SubsetOverlap compares the subsets (changed positions, not values) of
// deltas a and b: per tensor |A∩B|/|A| and the same over all tensors (the
// paper's eq. 9). The overlap is not symmetric: |A| is the denominator. A
// tensor in both deltas must have the same dims in both.
func SubsetOverlap(a, b *Delta) (OverlapReport, error) {
	var r OverlapReport
	for _, d := range []*Delta{a, b} {
		if err := d.Validate(); err != nil {
			return r, err
		}
	}
	// Validate made the names unique within each delta; looking them up
	// by map keeps the comparison linear in the number of tensors.
	inA, inB := a.byName(), b.byName()
	names := make([]string, 0, len(inA)+len(inB))
	for name := range inA {
		names = append(names, name)
	}
	for name := range inB {
		if inA[name] == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		ta, tb := inA[name], inB[name]
		o := TensorOverlap{Tensor: name}
		if ta != nil {
			o.InA = int64(len(ta.Indices))
		}
		if tb != nil {
			o.InB = int64(len(tb.Indices))
		}
		if ta != nil && tb != nil {
			if !slices.Equal(ta.Dims, tb.Dims) {
				return r, fmt.Errorf("tensor %q: dims %v in the first delta, %v in the second", name, ta.Dims, tb.Dims)
			}
			o.Both = countCommon(ta.Indices, tb.Indices)
		}
		r.Tensors = append(r.Tensors, o)
		r.Total.InA += o.InA
		r.Total.InB += o.InB
		r.Total.Both += o.Both
	}
	return r, nil
}

// countCommon is |a ∩ b| for strictly ascending a and b.
func countCommon(a, b []int64) int64 {
	var n int64
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			n++
			i++
			j++
		}
	}
	return n
}

// byName indexes d's tensors by name (unique in a valid delta).
func (d *Delta) byName() map[string]*TensorDelta {
	m := make(map[string]*TensorDelta, len(d.Tensors))
	for i := range d.Tensors {
		m[d.Tensors[i].Name] = &d.Tensors[i]
	}
	return m
}
