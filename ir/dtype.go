package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// DType is the element type of a tensor. The set is ONNX's tensor types
// minus complex numbers. Every numeric type is stored unpacked, one
// element per Size() bytes: the 4- and 2-bit integer and float types take a
// byte per element in memory (ONNX packs them two or four to a byte in
// files; the conversion happens in TensorFromONNX). String tensors hold Go
// strings instead of bytes (Tensor.Strings); they exist only at import:
// every string value must be known there, string ops fold, and backends
// never see them.
type DType uint8

const (
	InvalidDType DType = iota
	Float32
	Float64
	Float16  // IEEE 754 binary16, stored as its uint16 bits
	BFloat16 // bfloat16, stored as its uint16 bits
	Int8
	Int16
	Int32
	Int64
	Uint8
	Uint16
	Uint32
	Uint64
	Bool // one byte, 0 or 1
	Float8E4M3FN
	Float8E4M3FNUZ
	Float8E5M2
	Float8E5M2FNUZ
	Float8E8M0
	Float4E2M1 // one element per byte (low 4 bits)
	Int4       // one element per byte, sign-extended
	Uint4      // one element per byte
	Int2       // one element per byte, sign-extended
	Uint2      // one element per byte
	String     // Go strings (UTF-8 bytes as ONNX stores them), not bytes
	numDTypes
)

var dtypeNames = [numDTypes]string{
	InvalidDType:   "invalid",
	Float32:        "float32",
	Float64:        "float64",
	Float16:        "float16",
	BFloat16:       "bfloat16",
	Int8:           "int8",
	Int16:          "int16",
	Int32:          "int32",
	Int64:          "int64",
	Uint8:          "uint8",
	Uint16:         "uint16",
	Uint32:         "uint32",
	Uint64:         "uint64",
	Bool:           "bool",
	Float8E4M3FN:   "float8e4m3fn",
	Float8E4M3FNUZ: "float8e4m3fnuz",
	Float8E5M2:     "float8e5m2",
	Float8E5M2FNUZ: "float8e5m2fnuz",
	Float8E8M0:     "float8e8m0",
	Float4E2M1:     "float4e2m1",
	Int4:           "int4",
	Uint4:          "uint4",
	Int2:           "int2",
	Uint2:          "uint2",
	String:         "string",
}

func (d DType) String() string {
	if d < numDTypes {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// ParseDType parses the names printed by DType.String.
func ParseDType(s string) (DType, error) {
	for d := Float32; d < numDTypes; d++ {
		if dtypeNames[d] == s {
			return d, nil
		}
	}
	return InvalidDType, fmt.Errorf("ir: unknown dtype %q", s)
}

// Size is the number of bytes one element takes in memory (for strings,
// the string header; their bytes are counted apart).
func (d DType) Size() int {
	switch d {
	case String:
		return 16
	case Float64, Int64, Uint64:
		return 8
	case Float32, Int32, Uint32:
		return 4
	case Float16, BFloat16, Int16, Uint16:
		return 2
	case InvalidDType:
		return 0
	}
	if d < numDTypes {
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point type (any width).
func (d DType) IsFloat() bool {
	switch d {
	case Float32, Float64, Float16, BFloat16, Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float8E8M0, Float4E2M1:
		return true
	}
	return false
}

// IsInt reports whether d is an integer type (signed or not, any width).
func (d DType) IsInt() bool {
	switch d {
	case Int8, Int16, Int32, Int64, Uint8, Uint16, Uint32, Uint64, Int4, Uint4, Int2, Uint2:
		return true
	}
	return false
}

// IsSigned reports whether d is a signed integer type.
func (d DType) IsSigned() bool {
	switch d {
	case Int8, Int16, Int32, Int64, Int4, Int2:
		return true
	}
	return false
}

// computable reports whether the arithmetic ops accept d directly (the
// narrow float types are computed in float32 and rounded back; the 8-bit
// floats and sub-byte types only take part in Cast and data movement).
func (d DType) computable() bool {
	switch d {
	case Float32, Float64, Float16, BFloat16, Int8, Int16, Int32, Int64, Uint8, Uint16, Uint32, Uint64:
		return true
	}
	return false
}

// narrowFloat reports whether d is computed by widening to float32.
func (d DType) narrowFloat() bool { return d == Float16 || d == BFloat16 }

var fromONNXType = map[onnx.DataType]DType{
	onnx.Float:          Float32,
	onnx.Double:         Float64,
	onnx.Float16:        Float16,
	onnx.BFloat16:       BFloat16,
	onnx.Int8:           Int8,
	onnx.Int16:          Int16,
	onnx.Int32:          Int32,
	onnx.Int64:          Int64,
	onnx.Uint8:          Uint8,
	onnx.Uint16:         Uint16,
	onnx.Uint32:         Uint32,
	onnx.Uint64:         Uint64,
	onnx.Bool:           Bool,
	onnx.Float8E4M3FN:   Float8E4M3FN,
	onnx.Float8E4M3FNUZ: Float8E4M3FNUZ,
	onnx.Float8E5M2:     Float8E5M2,
	onnx.Float8E5M2FNUZ: Float8E5M2FNUZ,
	onnx.Float8E8M0:     Float8E8M0,
	onnx.Float4E2M1:     Float4E2M1,
	onnx.Int4:           Int4,
	onnx.Uint4:          Uint4,
	onnx.Int2:           Int2,
	onnx.Uint2:          Uint2,
	onnx.String:         String,
}

var onnxTypeNames = map[onnx.DataType]string{
	onnx.Undefined: "UNDEFINED", onnx.Complex64: "COMPLEX64", onnx.Complex128: "COMPLEX128",
}

// DTypeFromONNX maps an ONNX data type to a DType, or says that it is not
// supported (complex numbers, unknown codes).
func DTypeFromONNX(t onnx.DataType) (DType, error) {
	if d, ok := fromONNXType[t]; ok {
		return d, nil
	}
	if n, ok := onnxTypeNames[t]; ok {
		return InvalidDType, fmt.Errorf("%s tensors are not supported", n)
	}
	return InvalidDType, fmt.Errorf("unknown ONNX data type %d", int32(t))
}

// ONNX returns the ONNX data type code of d.
func (d DType) ONNX() onnx.DataType {
	for k, v := range fromONNXType {
		if v == d {
			return k
		}
	}
	return onnx.Undefined
}
