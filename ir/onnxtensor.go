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
	if dt == String {
		return stringTensorFromONNX(t, shape)
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

// stringTensorFromONNX converts a STRING tensor; the element count is
// checked against the strings present before anything is allocated.
func stringTensorFromONNX(t *onnx.Tensor, shape Shape) (*Tensor, error) {
	n, err := checkedSize(t.Dims, 1)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.Raw != nil || len(t.StringData) != n {
		return nil, fmt.Errorf("tensor %q: %d strings for string%v, want %d in string_data", t.Name, len(t.StringData), shape, n)
	}
	out := NewTensor(String, shape)
	for i, b := range t.StringData {
		out.strs[i] = string(b)
	}
	return out, nil
}

// TensorToONNX converts a tensor to an ONNX tensor named name, with its
// values as raw little-endian bytes (sub-byte types packed; strings in
// string_data).
func TensorToONNX(name string, t *Tensor) (*onnx.Tensor, error) {
	odt := t.dtype.ONNX()
	if odt == onnx.Undefined {
		return nil, fmt.Errorf("tensor %q: dtype %s has no ONNX type", name, t.dtype)
	}
	dims := make([]int64, len(t.shape))
	for i, d := range t.shape {
		dims[i] = int64(d)
	}
	if t.dtype == String {
		out := &onnx.Tensor{Name: name, DataType: onnx.String, Dims: dims, RawOffset: -1, StringData: make([][]byte, len(t.strs))}
		for i, s := range t.strs {
			out.StringData[i] = []byte(s)
		}
		return out, nil
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

// DatumFromONNX converts a test-data value: a tensor, or a sequence or
// optional of them (maps and sparse tensors are not supported).
func DatumFromONNX(v *onnx.Value) (*Datum, error) {
	switch v.Kind {
	case onnx.TypeTensor:
		t, err := TensorFromONNX(v.Tensor)
		if err != nil {
			return nil, err
		}
		return TensorOf(t), nil
	case onnx.TypeSequence, onnx.TypeOptional:
		d := &Datum{Kind: SequenceDatum, Elems: make([]*Datum, len(v.Elems))}
		if v.Kind == onnx.TypeOptional {
			d.Kind = OptionalDatum
			if len(v.Elems) > 1 {
				return nil, fmt.Errorf("optional %q holds %d values", v.Name, len(v.Elems))
			}
		}
		for i, e := range v.Elems {
			var err error
			if d.Elems[i], err = DatumFromONNX(e); err != nil {
				return nil, fmt.Errorf("%s %q element %d: %w", d.Kind, v.Name, i, err)
			}
		}
		return d, nil
	}
	return nil, fmt.Errorf("value %q: %w: maps and sparse tensors", v.Name, ErrNotSupported)
}

// DatumToONNX converts d to a test-data value named name (its tensors'
// values as raw bytes, strings in string_data).
func DatumToONNX(name string, d *Datum) (*onnx.Value, error) {
	switch d.Kind {
	case TensorDatum:
		if d.Tensor == nil {
			return nil, fmt.Errorf("tensor %q has no value", name)
		}
		t, err := TensorToONNX(name, d.Tensor)
		if err != nil {
			return nil, err
		}
		return &onnx.Value{Name: name, Kind: onnx.TypeTensor, Tensor: t}, nil
	case SequenceDatum, OptionalDatum:
		v := &onnx.Value{Name: name, Kind: onnx.TypeSequence, Elems: make([]*onnx.Value, len(d.Elems))}
		if d.Kind == OptionalDatum {
			v.Kind = onnx.TypeOptional
		}
		for i, e := range d.Elems {
			var err error
			if v.Elems[i], err = DatumToONNX("", e); err != nil {
				return nil, err
			}
		}
		return v, nil
	}
	return nil, fmt.Errorf("datum %q of kind %s", name, d.Kind)
}
