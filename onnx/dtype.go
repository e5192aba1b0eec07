package onnx

import "strconv"

var dataTypeNames = [...]string{
	Undefined:      "UNDEFINED",
	Float:          "FLOAT",
	Uint8:          "UINT8",
	Int8:           "INT8",
	Uint16:         "UINT16",
	Int16:          "INT16",
	Int32:          "INT32",
	Int64:          "INT64",
	String:         "STRING",
	Bool:           "BOOL",
	Float16:        "FLOAT16",
	Double:         "DOUBLE",
	Uint32:         "UINT32",
	Uint64:         "UINT64",
	Complex64:      "COMPLEX64",
	Complex128:     "COMPLEX128",
	BFloat16:       "BFLOAT16",
	Float8E4M3FN:   "FLOAT8E4M3FN",
	Float8E4M3FNUZ: "FLOAT8E4M3FNUZ",
	Float8E5M2:     "FLOAT8E5M2",
	Float8E5M2FNUZ: "FLOAT8E5M2FNUZ",
	Uint4:          "UINT4",
	Int4:           "INT4",
	Float4E2M1:     "FLOAT4E2M1",
	Float8E8M0:     "FLOAT8E8M0",
	Uint2:          "UINT2",
	Int2:           "INT2",
}

// String returns the proto enum name (FLOAT, FLOAT16, ...), or
// DataType(N) for values outside the enum.
func (dt DataType) String() string {
	if dt >= 0 && int(dt) < len(dataTypeNames) {
		return dataTypeNames[dt]
	}
	return "DataType(" + strconv.Itoa(int(dt)) + ")"
}

// Bits is the size of one element in bits as raw_data stores it (bool: 8,
// int4: 4), or 0 for STRING, UNDEFINED and unknown types.
func (dt DataType) Bits() int {
	switch dt {
	case Float, Int32, Uint32:
		return 32
	case Int64, Uint64, Double, Complex64:
		return 64
	case Complex128:
		return 128
	case Uint16, Int16, Float16, BFloat16:
		return 16
	case Uint8, Int8, Bool, Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float8E8M0:
		return 8
	case Uint4, Int4, Float4E2M1:
		return 4
	case Uint2, Int2:
		return 2
	}
	return 0
}

// Size is the number of bytes per element in raw_data (bool: 1), or 0 when
// elements are not whole bytes (4- and 2-bit types, packed) or have no fixed
// size (STRING, UNDEFINED, unknown types).
func (dt DataType) Size() int {
	if b := dt.Bits(); b >= 8 {
		return b / 8
	}
	return 0
}

// Supported reports whether dstune computes with this element type:
// float32, float16, bfloat16, float64, int8/16/32/64, uint8 and bool. Other
// types still load (their tensors keep their bytes); converting their
// values reports ErrNotSupported.
func (dt DataType) Supported() bool {
	switch dt {
	case Float, Float16, BFloat16, Double, Int8, Int16, Int32, Int64, Uint8, Bool:
		return true
	}
	return false
}

// IsFloat reports whether dt is a floating-point type (of any width).
func (dt DataType) IsFloat() bool {
	switch dt {
	case Float, Float16, BFloat16, Double, Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float4E2M1, Float8E8M0:
		return true
	}
	return false
}
