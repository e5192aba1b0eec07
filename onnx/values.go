package onnx

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Bytes returns the tensor's values as little-endian raw_data bytes: Raw
// itself when set (a view, not to be written to), otherwise a new buffer
// encoded from the typed field (float16/bfloat16 as their 16 bits, bool and
// 8-bit types as one byte each, 4-bit types packed two per byte).
func (t *Tensor) Bytes() ([]byte, error) {
	if t.Raw != nil {
		return t.Raw, nil
	}
	size, err := t.ByteSize()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	out := make([]byte, size)
	switch {
	case len(t.FloatData) > 0:
		for i, v := range t.FloatData {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case len(t.DoubleData) > 0:
		for i, v := range t.DoubleData {
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(v))
		}
	case len(t.Int64Data) > 0:
		for i, v := range t.Int64Data {
			binary.LittleEndian.PutUint64(out[8*i:], uint64(v))
		}
	case len(t.Uint64Data) > 0:
		if t.DataType == Uint32 {
			for i, v := range t.Uint64Data {
				binary.LittleEndian.PutUint32(out[4*i:], uint32(v))
			}
		} else {
			for i, v := range t.Uint64Data {
				binary.LittleEndian.PutUint64(out[8*i:], v)
			}
		}
	case len(t.Int32Data) > 0:
		switch t.DataType.Bits() {
		case 32:
			for i, v := range t.Int32Data {
				binary.LittleEndian.PutUint32(out[4*i:], uint32(v))
			}
		case 16:
			for i, v := range t.Int32Data {
				binary.LittleEndian.PutUint16(out[2*i:], uint16(v))
			}
		default: // 8 bits, or sub-byte types already packed per byte
			for i, v := range t.Int32Data {
				out[i] = byte(v)
			}
		}
	}
	return out, nil
}

// Float32s returns the values of a FLOAT, FLOAT16 or BFLOAT16 tensor as
// float32 (exact widening), in a new slice.
func (t *Tensor) Float32s() ([]float32, error) {
	switch t.DataType {
	case Float, Float16, BFloat16:
	default:
		return nil, fmt.Errorf("tensor %q: %s to float32: %w", t.Name, t.DataType, ErrNotSupported)
	}
	if t.Raw == nil && t.DataType == Float {
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return append([]float32{}, t.FloatData...), nil
	}
	raw, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	switch t.DataType {
	case Float:
		out := make([]float32, len(raw)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out, nil
	case Float16:
		out := make([]float32, len(raw)/2)
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		return out, nil
	default:
		out := make([]float32, len(raw)/2)
		for i := range out {
			out[i] = BFloat16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		return out, nil
	}
}

// Float64s returns the values of a floating-point tensor (FLOAT, FLOAT16,
// BFLOAT16, DOUBLE) as float64, in a new slice.
func (t *Tensor) Float64s() ([]float64, error) {
	if t.DataType == Double {
		raw, err := t.Bytes()
		if err != nil {
			return nil, err
		}
		out := make([]float64, len(raw)/8)
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
		}
		return out, nil
	}
	f32, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(f32))
	for i, v := range f32 {
		out[i] = float64(v)
	}
	return out, nil
}

// Int64s returns the values of an integer or BOOL tensor (INT8/16/32/64,
// UINT8/16/32, BOOL as 0/1) as int64, in a new slice. UINT64 is refused
// (values past MaxInt64 would not survive).
func (t *Tensor) Int64s() ([]int64, error) {
	if t.Raw == nil && t.DataType == Int64 {
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return append([]int64{}, t.Int64Data...), nil
	}
	var read func(b []byte) int64
	switch t.DataType {
	case Int8:
		read = func(b []byte) int64 { return int64(int8(b[0])) }
	case Uint8:
		read = func(b []byte) int64 { return int64(b[0]) }
	case Bool:
		read = func(b []byte) int64 {
			if b[0] != 0 {
				return 1
			}
			return 0
		}
	case Int16:
		read = func(b []byte) int64 { return int64(int16(binary.LittleEndian.Uint16(b))) }
	case Uint16:
		read = func(b []byte) int64 { return int64(binary.LittleEndian.Uint16(b)) }
	case Int32:
		read = func(b []byte) int64 { return int64(int32(binary.LittleEndian.Uint32(b))) }
	case Uint32:
		read = func(b []byte) int64 { return int64(binary.LittleEndian.Uint32(b)) }
	case Int64:
		read = func(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b)) }
	default:
		return nil, fmt.Errorf("tensor %q: %s to int64: %w", t.Name, t.DataType, ErrNotSupported)
	}
	raw, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	size := t.DataType.Size()
	out := make([]int64, len(raw)/size)
	for i := range out {
		out[i] = read(raw[size*i:])
	}
	return out, nil
}

// NewTensor returns a tensor holding raw (little-endian values, not
// copied) after checking that its length fits dt and dims.
func NewTensor(name string, dt DataType, dims []int64, raw []byte) (*Tensor, error) {
	if raw == nil {
		raw = []byte{}
	}
	t := &Tensor{Name: name, DataType: dt, Dims: dims, Raw: raw, RawOffset: -1}
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("onnx: tensor %q: %w", name, err)
	}
	return t, nil
}

// FromFloat32s returns a FLOAT tensor holding a little-endian copy of
// values.
func FromFloat32s(name string, dims []int64, values []float32) (*Tensor, error) {
	raw := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return NewTensor(name, Float, dims, raw)
}

// FromInt64s returns an INT64 tensor holding a little-endian copy of
// values.
func FromInt64s(name string, dims []int64, values []int64) (*Tensor, error) {
	raw := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return NewTensor(name, Int64, dims, raw)
}

// HalfToFloat32 converts IEEE 754 binary16 bits to float32 (exact).
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN (payload kept, quiet bit as is)
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: normalize into a float32 normal.
	e := uint32(127 - 15 + 1)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// Float32ToHalf converts f to binary16 bits, rounding to nearest even;
// out-of-range values become ±Inf, NaN stays NaN (quiet).
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal or zero in half precision: shift the full mantissa
		// (with the implicit bit) right and round to nearest even.
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rest := m & (1<<shift - 1)
		if rest > half || (rest == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rest := mant & 0x1fff
	if rest > 0x1000 || (rest == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to Inf: still correct
	}
	return sign | uint16(r)
}

// BFloat16ToFloat32 converts bfloat16 bits to float32 (exact).
func BFloat16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBFloat16 converts f to bfloat16 bits, rounding to nearest even;
// NaN stays NaN.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
