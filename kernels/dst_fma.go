package kernels

import "math"

// fma32 returns a·b + c rounded once to float32, as an FMA instruction
// does. The product of two float32 is exact in float64; the sum is then
// exact as s + e (TwoSum), and rounding s to float32 is only wrong when s
// sits exactly halfway between two float32 while e is not zero.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	cc := float64(c)
	s := p + cc
	r := float32(s)
	if float64(r) == s || math.IsInf(s, 0) || s != s {
		return r
	}
	bv := s - p
	e := (p - (s - bv)) + (cc - bv)
	if e == 0 {
		return r
	}
	lo, hi := r, r
	if float64(r) < s {
		hi = math.Nextafter32(r, float32(math.Inf(1)))
	} else {
		lo = math.Nextafter32(r, float32(math.Inf(-1)))
	}
	var mid float64
	switch {
	case math.IsInf(float64(hi), 1):
		mid = math.MaxFloat32 + 0x1p103 // where float32 rounding overflows
	case math.IsInf(float64(lo), -1):
		mid = -math.MaxFloat32 - 0x1p103
	default:
		mid = (float64(lo) + float64(hi)) / 2
	}
	if s != mid {
		return r
	}
	if e > 0 {
		return hi
	}
	return lo
}

// sqrt32 is the correctly rounded float32 square root (rounding the
// float64 root again is exact for square roots: 53 ≥ 2·24+2).
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
