package dst

import "math"

// float32ToFloat16 rounds f to the nearest IEEE 754 binary16 value, ties to
// even; values beyond the largest half overflow to ±Inf, NaN stays NaN.
func float32ToFloat16(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int(bits>>23) & 0xff
	mant := bits & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	// e is the half-precision biased exponent f would have.
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): the value is m·2^(exp−150) with the
		// implicit bit in m, and a subnormal half counts units of 2^−24,
		// so the half's mantissa is m >> (14 − e), rounded.
		if e < -10 {
			return sign // below half the smallest subnormal: rounds to ±0
		}
		m := mant | 0x800000
		shift := uint(14 - e)
		h := m >> shift
		rest := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || rest == half && h&1 == 1 {
			h++ // may carry into the smallest normal, which is right
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | mant>>13
	rest := mant & 0x1fff
	if rest > 0x1000 || rest == 0x1000 && h&1 == 1 {
		h++ // a carry out of the mantissa bumps the exponent, up to Inf
	}
	return sign | uint16(h)
}

// float16ToFloat32 converts a binary16 value to float32 exactly.
func float16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0:
		// Subnormal: mant·2^−24, exact in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// float32ToBFloat16 rounds f to the nearest bfloat16 (the top 16 bits of a
// float32), ties to even; NaN stays NaN.
func float32ToBFloat16(f float32) uint16 {
	bits := math.Float32bits(f)
	if bits&0x7fffffff > 0x7f800000 {
		return uint16(bits>>16) | 0x40
	}
	bits += 0x7fff + (bits>>16)&1
	return uint16(bits >> 16)
}

// float32RoundToOdd rounds v to float32 "to odd": toward zero, then, when
// that was inexact, to the neighbour whose last significand bit is 1. The
// result keeps which side of every narrower type's rounding boundary v
// lies on, so rounding it on to float16 or bfloat16 rounds v once: that
// holds for types of at least 2 significand bits fewer than float32's 24
// (float16 has 11, bfloat16 8, and so in their subnormal ranges), whereas
// float32(v) could land on a tie the second rounding breaks the wrong
// way. A v beyond float32's range gives ±Inf or ±MaxFloat32 as float32(v)
// does.
func float32RoundToOdd(v float64) float32 {
	f := float32(v)
	if float64(f) == v || math.IsInf(float64(f), 0) {
		return f
	}
	bits := math.Float32bits(f)
	if bits&1 == 1 {
		return f // the odd neighbour already
	}
	// f is the even neighbour; the odd one is a step toward v, and steps
	// of the bits move the magnitude (they are sign and magnitude).
	if math.Abs(v) > math.Abs(float64(f)) {
		return math.Float32frombits(bits + 1)
	}
	return math.Float32frombits(bits - 1)
}
