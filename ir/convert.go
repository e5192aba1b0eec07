package ir

import (
	"math"
)

// convertInto writes src's elements, converted to dst's dtype, into dst
// (same element count). Floats become integers by truncation toward zero
// (saturating at the integer type's range; NaN becomes 0), numbers become
// bools by != 0, and every narrowing float conversion rounds to nearest
// even; saturate and mode only matter for the 8-bit float targets.
func convertInto(dst, src *Tensor, saturate bool, mode RoundMode) {
	n := src.Len()
	switch {
	case src.dtype == dst.dtype:
		copy(dst.data, src.data)
	case src.dtype == Float32 && dst.dtype == Float16:
		s, d := view[float32](src), view[uint16](dst)
		for i := range n {
			d[i] = Float32ToFloat16(s[i])
		}
	case src.dtype == Float32 && dst.dtype == BFloat16:
		s, d := view[float32](src), view[uint16](dst)
		for i := range n {
			d[i] = Float32ToBFloat16(s[i])
		}
	case src.dtype == Float16 && dst.dtype == Float32:
		s, d := view[uint16](src), view[float32](dst)
		for i := range n {
			d[i] = Float16ToFloat32(s[i])
		}
	case src.dtype == BFloat16 && dst.dtype == Float32:
		s, d := view[uint16](src), view[float32](dst)
		for i := range n {
			d[i] = BFloat16ToFloat32(s[i])
		}
	case src.dtype.IsFloat():
		for i := range n {
			storeFloat(dst, i, src.Float64At(i), saturate, mode)
		}
	case src.dtype == Uint64:
		s := view[uint64](src)
		for i := range n {
			storeUint(dst, i, s[i], saturate, mode)
		}
	default: // signed and small unsigned integers, bool
		for i := range n {
			storeInt(dst, i, src.Int64At(i), saturate, mode)
		}
	}
}

// intRange is the range of an integer dtype.
func intRange(dt DType) (lo, hi float64) {
	switch dt {
	case Int8:
		return math.MinInt8, math.MaxInt8
	case Int16:
		return math.MinInt16, math.MaxInt16
	case Int32:
		return math.MinInt32, math.MaxInt32
	case Int64:
		return math.MinInt64, math.MaxInt64
	case Uint8:
		return 0, math.MaxUint8
	case Uint16:
		return 0, math.MaxUint16
	case Uint32:
		return 0, math.MaxUint32
	case Uint64:
		return 0, math.MaxUint64
	case Int4:
		return -8, 7
	case Uint4:
		return 0, 15
	case Int2:
		return -2, 1
	case Uint2:
		return 0, 3
	}
	return 0, 0
}

func storeFloat(dst *Tensor, i int, v float64, saturate bool, mode RoundMode) {
	switch dst.dtype {
	case Float32:
		view[float32](dst)[i] = float32(v)
	case Float64:
		view[float64](dst)[i] = v
	case Float16:
		view[uint16](dst)[i] = Float64ToFloat16(v)
	case BFloat16:
		view[uint16](dst)[i] = Float64ToBFloat16(v)
	case Bool:
		dst.data[i] = b2u(v != 0)
	case Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float8E8M0, Float4E2M1:
		dst.data[i] = float64ToSmallFloat(dst.dtype, v, saturate, mode)
	case Int4, Uint4, Int2, Uint2:
		// The sub-byte integer types truncate and wrap (keep the low
		// bits), as ONNX's reference outputs do.
		if math.IsNaN(v) || math.IsInf(v, 0) {
			v = 0
		}
		storeInt(dst, i, int64(math.Trunc(v)), saturate, mode)
	default:
		lo, hi := intRange(dst.dtype)
		t := math.Trunc(v)
		switch {
		case math.IsNaN(t):
			t = 0
		case t < lo:
			t = lo
		case t >= hi:
			if dst.dtype == Uint64 {
				view[uint64](dst)[i] = math.MaxUint64
				return
			}
			if dst.dtype == Int64 {
				view[int64](dst)[i] = math.MaxInt64
				return
			}
			t = hi
		}
		if dst.dtype == Uint64 {
			view[uint64](dst)[i] = uint64(t)
			return
		}
		storeInt(dst, i, int64(t), saturate, mode)
	}
}

// storeInt stores an integer value, wrapping to the target's width like a
// C cast (the sub-byte types keep their low bits, sign-extended for the
// signed ones).
func storeInt(dst *Tensor, i int, v int64, saturate bool, mode RoundMode) {
	switch dst.dtype {
	case Int8:
		view[int8](dst)[i] = int8(v)
	case Int16:
		view[int16](dst)[i] = int16(v)
	case Int32:
		view[int32](dst)[i] = int32(v)
	case Int64:
		view[int64](dst)[i] = v
	case Uint8:
		dst.data[i] = uint8(v)
	case Uint16:
		view[uint16](dst)[i] = uint16(v)
	case Uint32:
		view[uint32](dst)[i] = uint32(v)
	case Uint64:
		view[uint64](dst)[i] = uint64(v)
	case Bool:
		dst.data[i] = b2u(v != 0)
	case Int4:
		dst.data[i] = byte(int8(v<<4) >> 4)
	case Uint4:
		dst.data[i] = byte(v & 0xf)
	case Int2:
		dst.data[i] = byte(int8(v<<6) >> 6)
	case Uint2:
		dst.data[i] = byte(v & 3)
	default:
		storeFloat(dst, i, float64(v), saturate, mode)
	}
}

func storeUint(dst *Tensor, i int, v uint64, saturate bool, mode RoundMode) {
	switch dst.dtype {
	case Float32:
		view[float32](dst)[i] = float32(v)
	case Float64:
		view[float64](dst)[i] = float64(v)
	case Uint64:
		view[uint64](dst)[i] = v
	default:
		if dst.dtype.IsFloat() {
			storeFloat(dst, i, float64(v), saturate, mode)
			return
		}
		storeInt(dst, i, int64(v), saturate, mode)
	}
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// Convert returns t converted to dt (a new tensor; t itself when the dtype
// already matches).
func Convert(t *Tensor, dt DType) *Tensor {
	if t.dtype == dt {
		return t
	}
	out := NewTensor(dt, t.shape)
	convertInto(out, t, true, RoundUp)
	return out
}
