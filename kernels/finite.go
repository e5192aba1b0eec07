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

// SquareSumChunk is how many entries each sum of SquareSums covers.
const SquareSumChunk = finiteChunk

// SquareSums writes the sums of squares of x's consecutive chunks of
// SquareSumChunk entries (the last may be shorter) into dst, which must
// hold one per chunk: each by the SIMD dot product in float32, or — when
// that overflowed — entry by entry in float64, where float32 squares
// cannot overflow. A sum is NaN or +Inf exactly when one of its entries
// is, so the sums also say whether x is all finite; chunks are fixed, so
// callers that split x at multiples of SquareSumChunk get the same sums.
// x's squared L2 norm is the float64 sum of dst, in order.
func SquareSums(dst []float64, x []float32) {
	for i := 0; len(x) > 0; i++ {
		run := x[:min(len(x), SquareSumChunk)]
		x = x[len(run):]
		s := dotF32(run, run)
		if finite32(s) {
			dst[i] = float64(s)
			continue
		}
		var s64 float64
		for _, v := range run {
			s64 += float64(v) * float64(v)
		}
		dst[i] = s64
	}
}

// SquareSumChunks is how many sums SquareSums writes for n entries.
func SquareSumChunks(n int) int { return (n + SquareSumChunk - 1) / SquareSumChunk }
