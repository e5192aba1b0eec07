package ir

import (
	"fmt"
	"unsafe"

	"github.com/dstune/dstune/onnx"
)

// TensorFromONNX converts an ONNX tensor (raw little-endian bytes, typed
// repeated fields, or external data already resolved by the reader) into a
// Tensor with its own aligned storage. Sub-byte types are unpacked to one
// element per byte and bools normalized to 0/1. The element count is
// checked against the bytes actually present, so a tensor claiming huge
// dimensions cannot make it allocate.
func TensorFromONNX(t *onnx.Tensor) (*Tensor, error) { return tensorFromONNX(t, false) }

// tensorFromONNX converts t; with share, the result views t's bytes where
// they can be used as they are (see NewModelShared).
func tensorFromONNX(t *onnx.Tensor, share bool) (*Tensor, error) {
	dt, err := DTypeFromONNX(t.DataType)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	shape := make(Shape, len(t.Dims))
	for i, d := range t.Dims {
		if d < 0 {
			return nil, fmt.Errorf("tensor %q: negative dimension %d in %v", t.Name, d, t.Dims)
		}
		shape[i] = int(d)
	}
	raw, err := t.Bytes()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	// Compare with the bytes present before trusting the dims.
	bits := t.DataType.Bits()
	perByte := 1
	if bits < 8 {
		perByte = 8 / bits
	}
	n, err := checkedSize(t.Dims, dt.Size())
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	wantBytes := (int64(n)*int64(bits) + 7) / 8
	if int64(len(raw)) != wantBytes {
		return nil, fmt.Errorf("tensor %q: %d bytes of data for %s%v, want %d", t.Name, len(raw), dt, shape, wantBytes)
	}
	if share && bits >= 8 && dt != Bool && (n == 0 || uintptr(unsafe.Pointer(&raw[0]))%uintptr(dt.Size()) == 0) {
		return &Tensor{dtype: dt, shape: shape, data: raw[:len(raw):len(raw)]}, nil
	}
	out := &Tensor{dtype: dt, shape: shape, data: AlignedBytes(n * dt.Size())}
	switch {
	case bits == 4 || bits == 2:
		mask := byte(1<<bits - 1)
		for i := range n {
			v := raw[i/perByte] >> (uint(i%perByte) * uint(bits)) & mask
			switch dt {
			case Int4:
				v = byte(int8(v<<4) >> 4)
			case Int2:
				v = byte(int8(v<<6) >> 6)
			}
			out.data[i] = v
		}
	case dt == Bool:
		for i, b := range raw {
			out.data[i] = b2u(b != 0)
		}
	default:
		copy(out.data, raw)
	}
	return out, nil
}

// TensorToONNX converts a tensor to an ONNX tensor named name, with its
// values as raw little-endian bytes (sub-byte types packed).
func TensorToONNX(name string, t *Tensor) (*onnx.Tensor, error) {
	odt := t.dtype.ONNX()
	if odt == onnx.Undefined {
		return nil, fmt.Errorf("tensor %q: dtype %s has no ONNX type", name, t.dtype)
	}
	dims := make([]int64, len(t.shape))
	for i, d := range t.shape {
		dims[i] = int64(d)
	}
	var raw []byte
	switch bits := odt.Bits(); bits {
	case 4, 2:
		perByte := 8 / bits
		n := t.Len()
		raw = make([]byte, (n+perByte-1)/perByte)
		mask := byte(1<<bits - 1)
		for i := range n {
			raw[i/perByte] |= (t.data[i] & mask) << (uint(i%perByte) * uint(bits))
		}
	default:
		raw = append([]byte{}, t.data...)
	}
	return onnx.NewTensor(name, odt, dims, raw)
}
