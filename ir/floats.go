package ir

import "math"

// Conversions between float32 and the narrow float formats. Each format is
// described by its mantissa bits, the exponent of its smallest normal
// number, its largest finite value and how it spells infinity and NaN;
// rounding is to nearest, ties to even, in every format.

// Float16ToFloat32 converts IEEE binary16 bits to float32 (exactly).
func Float16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: man·2^-24.
	f := float32(man) * (1.0 / (1 << 24))
	if sign != 0 {
		f = -f
	}
	return f
}

// Float32ToFloat16 rounds f to the nearest binary16 (ties to even);
// overflow gives ±Inf, NaN stays NaN.
func Float32ToFloat16(f float32) uint16 {
	return uint16(encodeNarrow(&fp16Format, float64(f), false))
}

// Float64ToFloat16 rounds f to binary16 directly (one rounding).
func Float64ToFloat16(f float64) uint16 { return uint16(encodeNarrow(&fp16Format, f, false)) }

// BFloat16ToFloat32 converts bfloat16 bits to float32 (exactly).
func BFloat16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Float32ToBFloat16 rounds f to the nearest bfloat16 (ties to even); NaN
// stays a quiet NaN.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// Float64ToBFloat16 rounds f to bfloat16 directly (one rounding).
func Float64ToBFloat16(f float64) uint16 { return uint16(encodeNarrow(&bf16Format, f, false)) }

// narrowFormat describes a small binary floating-point format.
type narrowFormat struct {
	manBits   int     // stored mantissa bits
	minExp    int     // exponent of the smallest normal number
	bias      int     // exponent bias
	expBits   int     // exponent field width
	maxFinite float64 // largest finite value
	hasInf    bool    // the all-ones exponent with zero mantissa is ±Inf (IEEE-like)
	ieeeNaN   bool    // NaN is the all-ones exponent with a nonzero mantissa
	nanCode   uint32  // the NaN encoding produced (positive)
	unsigned  bool    // no sign bit (e8m0)
	uz        bool    // no negative zero: the -0 code is NaN (the FNUZ formats)
	noNaN     bool    // no NaN at all (float4e2m1)
	width     int     // total bits
}

var (
	fp16Format = narrowFormat{manBits: 10, minExp: -14, bias: 15, expBits: 5, maxFinite: 65504, hasInf: true, ieeeNaN: true, nanCode: 0x7e00, width: 16}
	bf16Format = narrowFormat{manBits: 7, minExp: -126, bias: 127, expBits: 8, maxFinite: math.Float64frombits(0x47efe00000000000), hasInf: true, ieeeNaN: true, nanCode: 0x7fc0, width: 16}
	e4m3fn     = narrowFormat{manBits: 3, minExp: -6, bias: 7, expBits: 4, maxFinite: 448, nanCode: 0x7f, width: 8}
	e4m3fnuz   = narrowFormat{manBits: 3, minExp: -7, bias: 8, expBits: 4, maxFinite: 240, nanCode: 0x80, uz: true, width: 8}
	e5m2       = narrowFormat{manBits: 2, minExp: -14, bias: 15, expBits: 5, maxFinite: 57344, hasInf: true, ieeeNaN: true, nanCode: 0x7e, width: 8}
	e5m2fnuz   = narrowFormat{manBits: 2, minExp: -15, bias: 16, expBits: 5, maxFinite: 57344, nanCode: 0x80, uz: true, width: 8}
	e2m1       = narrowFormat{manBits: 1, minExp: 0, bias: 1, expBits: 2, maxFinite: 6, noNaN: true, width: 4}
)

func formatOf(dt DType) *narrowFormat {
	switch dt {
	case Float16:
		return &fp16Format
	case BFloat16:
		return &bf16Format
	case Float8E4M3FN:
		return &e4m3fn
	case Float8E4M3FNUZ:
		return &e4m3fnuz
	case Float8E5M2:
		return &e5m2
	case Float8E5M2FNUZ:
		return &e5m2fnuz
	case Float4E2M1:
		return &e2m1
	}
	return nil
}

// roundNarrow rounds |x| (finite, > 0) to the format's grid, ties to even.
func roundNarrow(f *narrowFormat, a float64) float64 {
	_, e := math.Frexp(a) // a = m·2^e, m in [0.5, 1)
	e--                   // a in [2^e, 2^(e+1))
	if e < f.minExp {
		e = f.minExp
	}
	quantum := math.Ldexp(1, e-f.manBits)
	return math.RoundToEven(a/quantum) * quantum
}

// encodeNarrow rounds x into the format. saturate makes out-of-range
// values (and infinities, for the formats without one) the largest finite
// value instead of Inf or NaN.
func encodeNarrow(f *narrowFormat, x float64, saturate bool) uint32 {
	signBit := uint32(1) << (f.width - 1)
	var sign uint32
	if math.Signbit(x) {
		sign = signBit
	}
	if math.IsNaN(x) {
		if f.noNaN {
			return 0
		}
		return f.nanCode
	}
	a := math.Abs(x)
	maxCode := f.encodeFinite(f.maxFinite)
	if math.IsInf(x, 0) {
		switch {
		case f.noNaN:
			return sign | maxCode
		case saturate:
			return sign | maxCode
		case f.hasInf:
			return sign | f.infCode()
		default:
			return f.nanCode
		}
	}
	r := 0.0
	if a != 0 {
		r = roundNarrow(f, a)
	}
	if r > f.maxFinite {
		switch {
		case saturate || f.noNaN:
			return sign | maxCode
		case f.hasInf:
			return sign | f.infCode()
		default:
			return f.nanCode
		}
	}
	if r == 0 {
		if f.uz {
			return 0
		}
		return sign
	}
	return sign | f.encodeFinite(r)
}

func (f *narrowFormat) infCode() uint32 {
	return ((1 << f.expBits) - 1) << f.manBits
}

// encodeFinite encodes a value that is exactly on the format's grid.
func (f *narrowFormat) encodeFinite(r float64) uint32 {
	_, e := math.Frexp(r)
	e--
	if e < f.minExp {
		return uint32(r / math.Ldexp(1, f.minExp-f.manBits))
	}
	man := uint32((r/math.Ldexp(1, e) - 1) * float64(uint32(1)<<f.manBits))
	return uint32(e+f.bias)<<f.manBits | man
}

// decodeNarrow is the exact value of a code of the format.
func (f *narrowFormat) decode(code uint32) float64 {
	signBit := uint32(1) << (f.width - 1)
	neg := code&signBit != 0
	mag := code &^ signBit
	if !f.noNaN {
		if f.uz && code == signBit {
			return math.NaN()
		}
		if !f.uz && !f.ieeeNaN && mag == signBit-1 {
			return math.NaN() // e4m3fn: S.1111.111
		}
	}
	exp := int(mag >> f.manBits)
	man := mag & (1<<f.manBits - 1)
	var v float64
	switch {
	case f.ieeeNaN && exp == 1<<f.expBits-1:
		if man != 0 {
			return math.NaN()
		}
		v = math.Inf(1)
	case exp == 0:
		v = math.Ldexp(float64(man), f.minExp-f.manBits)
	default:
		v = math.Ldexp(1+float64(man)/float64(uint32(1)<<f.manBits), exp-f.bias)
	}
	if neg {
		v = -v
	}
	return v
}

// byteFloatTables holds the float32 value of every code of the 1-byte
// float formats, for fast decoding.
var byteFloatTables = func() map[DType]*[256]float32 {
	m := map[DType]*[256]float32{}
	for _, dt := range []DType{Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float4E2M1} {
		f := formatOf(dt)
		var tab [256]float32
		for c := range 256 {
			if f.width == 4 && c >= 16 {
				tab[c] = float32(math.NaN())
				continue
			}
			tab[c] = float32(f.decode(uint32(c)))
		}
		m[dt] = &tab
	}
	var e8 [256]float32
	for c := range 256 {
		if c == 255 {
			e8[c] = float32(math.NaN())
		} else {
			e8[c] = float32(math.Ldexp(1, c-127))
		}
	}
	m[Float8E8M0] = &e8
	return m
}()

// smallFloatToFloat32 decodes a 1-byte float code.
func smallFloatToFloat32(dt DType, code byte) float32 {
	if t, ok := byteFloatTables[dt]; ok {
		return t[code]
	}
	panic("ir: smallFloatToFloat32 on " + dt.String())
}

// RoundMode is how a conversion to float8e8m0 rounds (Cast's round_mode).
type RoundMode uint8

const (
	RoundUp RoundMode = iota
	RoundDown
	RoundNearest
)

// float64ToSmallFloat encodes x in a 1-byte float format (or float4e2m1).
func float64ToSmallFloat(dt DType, x float64, saturate bool, mode RoundMode) byte {
	if dt == Float8E8M0 {
		return encodeE8M0(x, saturate, mode)
	}
	return byte(encodeNarrow(formatOf(dt), x, saturate))
}

// encodeE8M0 encodes x as a power of two 2^(code-127); the format has no
// sign, zero or infinity, and code 255 is NaN.
func encodeE8M0(x float64, saturate bool, mode RoundMode) byte {
	if math.IsNaN(x) {
		return 0xff
	}
	if math.IsInf(x, 0) {
		if saturate {
			return 0xfe
		}
		return 0xff
	}
	a := math.Abs(x)
	if a == 0 {
		return 0
	}
	frac, e := math.Frexp(a) // a = frac·2^e, frac in [0.5, 1)
	e--                      // a = (2·frac)·2^e with 2·frac in [1, 2)
	m := 2 * frac
	switch mode {
	case RoundUp:
		if m > 1 {
			e++
		}
	case RoundNearest:
		if m > 1.5 || (m == 1.5) {
			e++
		}
	}
	code := e + 127
	if code < 0 {
		return 0
	}
	if code > 254 {
		if saturate {
			return 0xfe
		}
		return 0xff
	}
	return byte(code)
}
