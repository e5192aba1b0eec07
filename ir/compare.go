package ir

import (
	"fmt"
	"math"
)

// Diff summarizes how a computed tensor differs from the expected one.
type Diff struct {
	// Mismatch is set when dtypes or shapes differ (nothing else is then
	// compared).
	Mismatch string
	// MaxAbs is max |got - want| over the elements where both are finite;
	// MaxRel is max |got - want| / |want| over those with want != 0.
	MaxAbs, MaxRel float64
	// Finite counts the float elements where got and want are both
	// finite (those MaxAbs and MaxRel are over), NonFinite those where
	// either is NaN or ±Inf.
	Finite, NonFinite int
	// Off counts the elements that are off: |got - want| > atol + rtol·|want|
	// for floats, got != want for integers and bools, and for floats any
	// NaN or infinity not matched by the same in the other tensor.
	Off int
	// FirstOff is the flat index of the first element that is off (-1).
	FirstOff int
}

// OK reports whether no element is off and the types match.
func (d Diff) OK() bool { return d.Mismatch == "" && d.Off == 0 }

func (d Diff) String() string {
	if d.Mismatch != "" {
		return d.Mismatch
	}
	return fmt.Sprintf("max abs %.3g, max rel %.3g, %d off", d.MaxAbs, d.MaxRel, d.Off)
}

// Compare compares got with want: exactly for integers, bools and strings, with
// tolerance atol + rtol·|want| for floats (NaN and infinities must match).
func Compare(got, want *Tensor, rtol, atol float64) Diff {
	d := Diff{FirstOff: -1}
	if got.dtype != want.dtype || !got.shape.Equal(want.shape) {
		d.Mismatch = fmt.Sprintf("got %s%v, want %s%v", got.dtype, got.shape, want.dtype, want.shape)
		return d
	}
	off := func(i int) {
		if d.Off == 0 {
			d.FirstOff = i
		}
		d.Off++
	}
	if got.dtype == String {
		for i, g := range got.strs {
			if g != want.strs[i] {
				off(i)
			}
		}
		return d
	}
	if !got.dtype.IsFloat() {
		es := got.dtype.Size()
		for i := range got.Len() {
			a, b := got.data[i*es:(i+1)*es], want.data[i*es:(i+1)*es]
			if string(a) != string(b) {
				off(i)
				// Exact in integers: through float64, 2⁶⁴−1 and 2⁶⁴−2
				// would differ by 0.
				diff := float64(intDistance(a, b, got.dtype.IsSigned()))
				d.MaxAbs = math.Max(d.MaxAbs, diff)
				if w := math.Abs(want.Float64At(i)); w != 0 {
					d.MaxRel = math.Max(d.MaxRel, diff/w)
				}
			}
		}
		return d
	}
	for i := range got.Len() {
		g, w := got.Float64At(i), want.Float64At(i)
		switch {
		case math.IsNaN(g) || math.IsNaN(w):
			d.NonFinite++
			if math.IsNaN(g) != math.IsNaN(w) {
				off(i)
			}
			continue
		case math.IsInf(g, 0) || math.IsInf(w, 0):
			d.NonFinite++
			if g != w {
				off(i)
			}
			continue
		}
		d.Finite++
		diff := math.Abs(g - w)
		d.MaxAbs = math.Max(d.MaxAbs, diff)
		if w != 0 {
			d.MaxRel = math.Max(d.MaxRel, diff/math.Abs(w))
		}
		if diff > atol+rtol*math.Abs(w) {
			off(i)
		}
	}
	return d
}

// intDistance is |a − b| of two integers of len(a) little-endian bytes
// (signed: two's complement), exact.
func intDistance(a, b []byte, signed bool) uint64 {
	x, y := leUint64(a, signed), leUint64(b, signed)
	if signed && int64(x) < int64(y) || !signed && x < y {
		x, y = y, x
	}
	return x - y
}

// leUint64 reads little-endian bytes as a uint64, sign-extended when
// signed (so that the int64 of it is the value).
func leUint64(b []byte, signed bool) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if signed && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
		v |= ^uint64(0) << (8 * len(b))
	}
	return v
}
