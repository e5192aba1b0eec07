package ir

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unsafe"
)

// Shape is a tensor's dimensions, outermost first; an empty Shape is a
// scalar.
type Shape []int

// Size is the number of elements, the product of the dimensions (1 for a
// scalar).
func (s Shape) Size() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Rank is len(s).
func (s Shape) Rank() int { return len(s) }

// Equal reports whether s and t have the same dimensions.
func (s Shape) Equal(t Shape) bool {
	if len(s) != len(t) {
		return false
	}
	for i := range s {
		if s[i] != t[i] {
			return false
		}
	}
	return true
}

// Clone returns a copy of s that does not share memory with it.
func (s Shape) Clone() Shape {
	if s == nil {
		return Shape{}
	}
	return append(Shape{}, s...)
}

// Strides returns the row-major element strides of s.
func (s Shape) Strides() []int {
	st := make([]int, len(s))
	n := 1
	for i := len(s) - 1; i >= 0; i-- {
		st[i] = n
		n *= s[i]
	}
	return st
}

func (s Shape) String() string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(d))
	}
	b.WriteByte(']')
	return b.String()
}

// maxTensorBytes bounds any single value of a graph (dims times element
// size), so that a hostile file cannot make import or the executor ask for
// unbounded memory: 16 GiB.
const maxTensorBytes = 16 << 30

// maxFoldBytes bounds a constant import computes by folding (a
// ConstantOfShape, Range or Expand on constants): 1 GiB.
const maxFoldBytes = 1 << 30

// checkedSize returns the element count of dims, or an error when a
// dimension is negative or the byte size exceeds maxTensorBytes.
func checkedSize(dims []int64, elemSize int) (int, error) {
	return checkedSizeLimit(dims, elemSize, maxTensorBytes)
}

func checkedSizeLimit(dims []int64, elemSize int, limit int64) (int, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in %v", d, dims)
		}
	}
	for _, d := range dims {
		if d == 0 {
			return 0, nil
		}
	}
	for _, d := range dims {
		if n > (limit/int64(max(elemSize, 1)))/d {
			return 0, fmt.Errorf("dimensions %v exceed the %d MiB limit for one tensor", dims, limit>>20)
		}
		n *= d
	}
	return int(n), nil
}

// checkShape applies checkedSize to a Shape.
func checkShape(s Shape, elemSize int, limit int64) error {
	dims := make([]int64, len(s))
	for i, d := range s {
		dims[i] = int64(d)
	}
	_, err := checkedSizeLimit(dims, elemSize, limit)
	return err
}

// Tensor is a dense row-major array of one DType. Its bytes are aligned to
// 8 bytes so that they can be viewed as any element type. A Tensor is a
// view: several tensors may share bytes (the executor's memory plan, reshapes
// of parameters), so writing through one is seen by the others.
type Tensor struct {
	dtype DType
	shape Shape
	data  []byte
	strs  []string // String tensors: the elements (data is empty)
}

// NewTensor allocates a zeroed tensor (empty strings for String).
func NewTensor(dt DType, shape Shape) *Tensor {
	if dt == InvalidDType || dt >= numDTypes {
		panic("ir: NewTensor with an invalid dtype")
	}
	for _, d := range shape {
		if d < 0 {
			panic("ir: NewTensor with a negative dimension")
		}
	}
	if dt == String {
		return &Tensor{dtype: dt, shape: shape.Clone(), data: []byte{}, strs: make([]string, shape.Size())}
	}
	return &Tensor{dtype: dt, shape: shape.Clone(), data: AlignedBytes(shape.Size() * dt.Size())}
}

// FromStrings returns a String tensor holding a copy of v.
func FromStrings(shape Shape, v []string) *Tensor {
	t := NewTensor(String, shape)
	if len(v) != t.Len() {
		panic("ir: FromStrings: len(v) does not match the shape")
	}
	copy(t.strs, v)
	return t
}

// Strings returns the elements of a String tensor, sharing its memory.
func (t *Tensor) Strings() []string { t.must(String); return t.strs }

// AlignedBytes returns n zero bytes whose start is 64-byte aligned (a
// cache line, and what vector loads like best).
func AlignedBytes(n int) []byte {
	if n == 0 {
		return []byte{}
	}
	words := make([]uint64, (n+63+64)/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
	off := int((64 - uintptr(unsafe.Pointer(&b[0]))%64) % 64)
	return b[off : off+n : off+n]
}

// TensorOn makes a tensor view of buf, which must hold exactly
// shape.Size()*dt.Size() bytes starting at an 8-byte aligned address. It
// is how backends place tensors in their own memory.
func TensorOn(dt DType, shape Shape, buf []byte) (*Tensor, error) {
	if dt == InvalidDType || dt >= numDTypes || dt == String {
		return nil, fmt.Errorf("ir: TensorOn with dtype %s", dt)
	}
	if n := shape.Size() * dt.Size(); len(buf) != n {
		return nil, fmt.Errorf("ir: TensorOn: %d bytes for %s%v, want %d", len(buf), dt, shape, n)
	}
	if len(buf) > 0 && uintptr(unsafe.Pointer(&buf[0]))%8 != 0 {
		return nil, fmt.Errorf("ir: TensorOn: buffer not 8-byte aligned")
	}
	return &Tensor{dtype: dt, shape: shape.Clone(), data: buf}, nil
}

// DType is the element type.
func (t *Tensor) DType() DType { return t.dtype }

// Shape is the dimensions; callers must not modify it.
func (t *Tensor) Shape() Shape { return t.shape }

// Len is the number of elements.
func (t *Tensor) Len() int { return t.shape.Size() }

// Bytes is the raw little-endian storage (Len()*DType().Size() bytes;
// empty for String tensors, whose elements are Strings).
func (t *Tensor) Bytes() []byte { return t.data }

// Reshaped returns a view of t with another shape of the same size.
func (t *Tensor) Reshaped(shape Shape) *Tensor {
	if shape.Size() != t.shape.Size() {
		panic("ir: Reshaped to a shape of another size")
	}
	return &Tensor{dtype: t.dtype, shape: shape.Clone(), data: t.data, strs: t.strs}
}

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	c := NewTensor(t.dtype, t.shape)
	copy(c.data, t.data)
	copy(c.strs, t.strs)
	return c
}

// CopyFrom copies src's elements into t; dtype and shape must match.
func (t *Tensor) CopyFrom(src *Tensor) error {
	if src.dtype != t.dtype || !src.shape.Equal(t.shape) {
		return fmt.Errorf("ir: copy %s%v into %s%v", src.dtype, src.shape, t.dtype, t.shape)
	}
	copy(t.data, src.data)
	copy(t.strs, src.strs)
	return nil
}

func (t *Tensor) String() string {
	return fmt.Sprintf("%s%v", t.dtype, t.shape)
}

// view reinterprets t's bytes as a slice of E; the caller has checked that
// E matches the dtype's storage.
func view[E any](t *Tensor) []E {
	var z E
	n := len(t.data) / int(unsafe.Sizeof(z))
	if n == 0 {
		return []E{}
	}
	return unsafe.Slice((*E)(unsafe.Pointer(&t.data[0])), n)
}

func (t *Tensor) must(dts ...DType) {
	for _, d := range dts {
		if t.dtype == d {
			return
		}
	}
	panic("ir: tensor accessor does not match the tensor's dtype " + t.dtype.String())
}

// The typed accessors return the elements as a slice sharing t's memory.
// They panic when the accessor does not match the dtype (a programming
// error): float16 and bfloat16 are read with Uint16s, the 1-byte float8,
// float4 and sub-byte integer types with Uint8s or Int8s.

func (t *Tensor) Float32s() []float32 { t.must(Float32); return view[float32](t) }
func (t *Tensor) Float64s() []float64 { t.must(Float64); return view[float64](t) }
func (t *Tensor) Int8s() []int8       { t.must(Int8, Int4, Int2); return view[int8](t) }
func (t *Tensor) Int16s() []int16     { t.must(Int16); return view[int16](t) }
func (t *Tensor) Int32s() []int32     { t.must(Int32); return view[int32](t) }
func (t *Tensor) Int64s() []int64     { t.must(Int64); return view[int64](t) }
func (t *Tensor) Uint16s() []uint16   { t.must(Uint16, Float16, BFloat16); return view[uint16](t) }
func (t *Tensor) Uint32s() []uint32   { t.must(Uint32); return view[uint32](t) }
func (t *Tensor) Uint64s() []uint64   { t.must(Uint64); return view[uint64](t) }
func (t *Tensor) Bools() []bool       { t.must(Bool); return view[bool](t) }
func (t *Tensor) Uint8s() []uint8 {
	t.must(Uint8, Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float8E8M0, Float4E2M1, Uint4, Uint2)
	return t.data
}

// Float64At returns element i (flat index) converted to float64, whatever
// the dtype; integers convert exactly up to 2^53.
func (t *Tensor) Float64At(i int) float64 {
	switch t.dtype {
	case Float32:
		return float64(view[float32](t)[i])
	case Float64:
		return view[float64](t)[i]
	case Float16:
		return float64(Float16ToFloat32(view[uint16](t)[i]))
	case BFloat16:
		return float64(BFloat16ToFloat32(view[uint16](t)[i]))
	case Int8, Int4, Int2:
		return float64(view[int8](t)[i])
	case Int16:
		return float64(view[int16](t)[i])
	case Int32:
		return float64(view[int32](t)[i])
	case Int64:
		return float64(view[int64](t)[i])
	case Uint8, Uint4, Uint2:
		return float64(t.data[i])
	case Uint16:
		return float64(view[uint16](t)[i])
	case Uint32:
		return float64(view[uint32](t)[i])
	case Uint64:
		return float64(view[uint64](t)[i])
	case Bool:
		if t.data[i] != 0 {
			return 1
		}
		return 0
	case String:
		panic("ir: Float64At on a string tensor")
	}
	return float64(smallFloatToFloat32(t.dtype, t.data[i]))
}

// Int64At returns element i converted to int64 (floats truncate toward
// zero; NaN gives 0).
func (t *Tensor) Int64At(i int) int64 {
	switch t.dtype {
	case Int8, Int4, Int2:
		return int64(view[int8](t)[i])
	case Int16:
		return int64(view[int16](t)[i])
	case Int32:
		return int64(view[int32](t)[i])
	case Int64:
		return view[int64](t)[i]
	case Uint8, Uint4, Uint2, Bool:
		return int64(t.data[i])
	case Uint16:
		return int64(view[uint16](t)[i])
	case Uint32:
		return int64(view[uint32](t)[i])
	case Uint64:
		return int64(view[uint64](t)[i])
	}
	f := t.Float64At(i)
	if math.IsNaN(f) {
		return 0
	}
	return int64(f)
}

// Ints returns the elements of an integer tensor as ints (shape operands:
// Reshape's shape, Slice's starts, and so on).
func (t *Tensor) Ints() []int {
	out := make([]int, t.Len())
	for i := range out {
		out[i] = int(t.Int64At(i))
	}
	return out
}

// Scalar tensors and small constants, mostly for tests and folding.

// ScalarFloat32 returns a rank-0 float32 tensor.
func ScalarFloat32(v float32) *Tensor {
	t := NewTensor(Float32, nil)
	t.Float32s()[0] = v
	return t
}

// ScalarInt64 returns a rank-0 int64 tensor.
func ScalarInt64(v int64) *Tensor {
	t := NewTensor(Int64, nil)
	t.Int64s()[0] = v
	return t
}

// FromFloat32s returns a float32 tensor holding a copy of v.
func FromFloat32s(shape Shape, v []float32) *Tensor {
	t := NewTensor(Float32, shape)
	if len(v) != t.Len() {
		panic("ir: FromFloat32s: len(v) does not match the shape")
	}
	copy(t.Float32s(), v)
	return t
}

// FromFloat64s returns a float64 tensor holding a copy of v.
func FromFloat64s(shape Shape, v []float64) *Tensor {
	t := NewTensor(Float64, shape)
	if len(v) != t.Len() {
		panic("ir: FromFloat64s: len(v) does not match the shape")
	}
	copy(t.Float64s(), v)
	return t
}

// FromInt64s returns an int64 tensor holding a copy of v.
func FromInt64s(shape Shape, v []int64) *Tensor {
	t := NewTensor(Int64, shape)
	if len(v) != t.Len() {
		panic("ir: FromInt64s: len(v) does not match the shape")
	}
	copy(t.Int64s(), v)
	return t
}

// FromInt32s returns an int32 tensor holding a copy of v.
func FromInt32s(shape Shape, v []int32) *Tensor {
	t := NewTensor(Int32, shape)
	if len(v) != t.Len() {
		panic("ir: FromInt32s: len(v) does not match the shape")
	}
	copy(t.Int32s(), v)
	return t
}

// FromBools returns a bool tensor holding a copy of v.
func FromBools(shape Shape, v []bool) *Tensor {
	t := NewTensor(Bool, shape)
	if len(v) != t.Len() {
		panic("ir: FromBools: len(v) does not match the shape")
	}
	copy(t.Bools(), v)
	return t
}

// IntsTensor returns a 1-D int64 tensor of v.
func IntsTensor(v ...int) *Tensor {
	t := NewTensor(Int64, Shape{len(v)})
	for i, x := range v {
		t.Int64s()[i] = int64(x)
	}
	return t
}
