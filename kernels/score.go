package kernels

import (
	"math"
	"strconv"
)

// Distance selects how DST scores the distance Δ between a parameter's
// current value θ̂ (theta) and its seed θ0 (seed). Every distance is
// non-negative or NaN: NaN when theta or seed is NaN, or for abs and inv-rel
// when the difference is ±Inf − ±Inf.
type Distance uint8

const (
	// DistanceAbs is |θ̂ − θ0|.
	DistanceAbs Distance = iota
	// DistanceRel is |(θ̂ − θ0) / θ0|, with one definition added where the
	// quotient is 0/0: when θ̂ − θ0 == 0 the distance is 0 (so θ̂ = θ0 = 0
	// scores 0, not NaN). A seed of 0 and θ̂ ≠ 0 scores +Inf, as IEEE
	// division gives: an entry that left an exact zero of the seed ranks
	// above every finite relative change.
	DistanceRel
	// DistanceInvRel is |θ0 · (θ̂ − θ0)|.
	DistanceInvRel

	// distanceValue scores the values themselves (seed is not read):
	// the plain-float variants (CountAboveFloats, TopKFloats) use it.
	distanceValue
)

func (d Distance) String() string {
	switch d {
	case DistanceAbs:
		return "abs"
	case DistanceRel:
		return "rel"
	case DistanceInvRel:
		return "inv-rel"
	case distanceValue:
		return "value"
	}
	return "Distance(" + strconv.Itoa(int(d)) + ")"
}

func checkDistance(d Distance) {
	if d > DistanceInvRel {
		panic("kernels: unknown Distance")
	}
}

// abs32 clears the sign bit (of NaN too, as VANDPS does).
func abs32(x float32) float32 {
	return math.Float32frombits(math.Float32bits(x) &^ (1 << 31))
}

// score is the reference for one entry's distance; every kernel computes
// exactly these bits. distanceValue returns theta itself.
func score(theta, seed float32, d Distance) float32 {
	switch d {
	case DistanceAbs:
		return abs32(theta - seed)
	case DistanceRel:
		diff := theta - seed
		if diff == 0 {
			return 0
		}
		return abs32(diff / seed)
	case DistanceInvRel:
		return abs32(seed * (theta - seed))
	}
	return theta
}

// Score writes the distance of every entry: the equivalent Go loop is
//
//	for i := range dst {
//		dst[i] = Δ(theta[i], seed[i]) // as d defines it
//	}
//
// dst may alias theta or seed.
func Score(dst, theta, seed []float32, d Distance) {
	checkDistance(d)
	if len(theta) != len(dst) || len(seed) != len(dst) {
		panic("kernels: Score slices differ in length")
	}
	n := len(dst)
	done := scoreVector(dst, theta, seed, d)
	scoreGeneric(dst[done:n], theta[done:n], seed[done:n], d)
}

func scoreGeneric(dst, theta, seed []float32, d Distance) {
	seed = seed[:len(theta)]
	dst = dst[:len(theta)]
	switch d {
	case DistanceAbs:
		for i, t := range theta {
			dst[i] = abs32(t - seed[i])
		}
	case DistanceRel:
		for i, t := range theta {
			dst[i] = score(t, seed[i], DistanceRel)
		}
	case DistanceInvRel:
		for i, t := range theta {
			s := seed[i]
			dst[i] = abs32(s * (t - s))
		}
	}
}
