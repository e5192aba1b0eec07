package cpu

import "math"

// exp for the float32 kernels that compute in float64 (erf's derivative),
// accurate to about 3e-10 relative — far below float32's half ulp of
// 3e-8 — and several times faster than the math package's general float64
// version, which carries precision float32 results cannot hold.

// exp64 is e^x for arguments that come from float32 values: x = k·ln2 + r
// with |r| ≤ ln2/2, e^r by its degree-8 Taylor polynomial (relative error
// below 3e-10), scaled by 2^k through the exponent bits. Results below
// float32's range come out as 0 or subnormal once rounded, above it +Inf.
func exp64(x float64) float64 {
	switch {
	case x > 89:
		return math.Inf(1)
	case x < -104:
		return 0
	case x != x:
		return x
	}
	k := math.Floor(x*math.Log2E + 0.5)
	r := x - k*math.Ln2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040+r*(1.0/40320))))))))
	return p * math.Float64frombits(uint64(int64(k)+1023)<<52)
}
