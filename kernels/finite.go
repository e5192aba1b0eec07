package kernels

import "math"

// finiteChunk is how many entries AllFinite sums at a time: a sum that
// overflowed is checked again entry by entry over one chunk only.
const finiteChunk = 1 << 14

// AllFinite reports whether x holds no NaN and no ±Inf, at the speed of a
// SIMD sum rather than a test and branch an entry: the float32 sum of a
// run of entries is NaN or ±Inf whenever one of them is (∞ + finite = ∞,
// ∞ − ∞ = NaN, NaN + anything = NaN), so a finite sum clears the run; a
// non-finite one (a run of large finite entries can overflow) is
// checked entry by entry.
func AllFinite(x []float32) bool {
	for len(x) > 0 {
		run := x[:min(len(x), finiteChunk)]
		x = x[len(run):]
		if finite32(sumF32(run)) {
			continue
		}
		for _, v := range run {
			if !finite32(v) {
				return false
			}
		}
	}
	return true
}

func finite32(v float32) bool { return math.Float32bits(v)&0x7f800000 != 0x7f800000 }
