package onnx

import (
	"fmt"
	"math"
	"math/bits"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

const dataLocationExternal = 1

// tensor decodes a TensorProto written in parts (one, or every occurrence
// of a merged field), checking its values once all parts are read.
func (d *decoder) tensor(parts ...[]byte) (*Tensor, error) {
	t := &Tensor{RawOffset: -1}
	var (
		external     []StringPair
		dataLocation int32
	)
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		switch f.num {
		case 1:
			t.Dims, err = appendVarints(t.Dims, f, "dims")
		case 2:
			var v int32
			v, err = f.int32("data_type")
			t.DataType = DataType(v)
		case 3:
			if _, err = f.bytes("segment"); err == nil {
				err = fmt.Errorf("segmented tensor: %w", ErrNotSupported)
			}
		case 4:
			t.FloatData, err = appendFloat32s(t.FloatData, f, "float_data")
		case 5:
			t.Int32Data, err = appendVarints(t.Int32Data, f, "int32_data")
		case 6:
			var b []byte
			if b, err = f.copyBytes("string_data"); err == nil {
				t.StringData = append(t.StringData, b)
			}
		case 7:
			t.Int64Data, err = appendVarints(t.Int64Data, f, "int64_data")
		case 8:
			t.Name, err = f.str("name")
		case 12:
			t.DocString, err = f.str("doc_string")
		case 9:
			if t.Raw, err = f.bytes("raw_data"); err == nil {
				t.RawOffset = int64(cap(d.base) - cap(t.Raw))
			}
		case 13:
			var p StringPair
			if p, err = d.stringPair(f, "external_data"); err == nil {
				external = append(external, p)
			}
		case 14:
			dataLocation, err = f.int32("data_location")
		case 10:
			t.DoubleData, err = appendFloat64s(t.DoubleData, f, "double_data")
		case 11:
			t.Uint64Data, err = appendVarints(t.Uint64Data, f, "uint64_data")
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case dataLocation == dataLocationExternal:
		if err := d.resolveExternal(t, external); err != nil {
			return nil, err
		}
	case dataLocation != 0:
		return nil, fmt.Errorf("%w: data_location %d, want 0 (DEFAULT) or 1 (EXTERNAL)", ErrMalformed, dataLocation)
	case len(external) > 0:
		return nil, fmt.Errorf("%w: external_data set but data_location is not EXTERNAL", ErrMalformed)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}

// NumElements is the product of Dims (1 for a scalar), with an error for
// negative dimensions or a product that overflows int64.
func (t *Tensor) NumElements() (int64, error) {
	return numElements(t.Dims)
}

func numElements(dims []int64) (int64, error) {
	n := int64(1)
	for i, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("%w: dimension %d is %d (negative)", ErrMalformed, i, d)
		}
	}
	for _, d := range dims {
		if d == 0 {
			return 0, nil
		}
	}
	for _, d := range dims {
		hi, lo := bits.Mul64(uint64(n), uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("%w: dims %v: element count overflows int64", ErrMalformed, dims)
		}
		n = int64(lo)
	}
	return n, nil
}

// ByteSize is the size of the tensor's values in raw_data form: elements ×
// DataType.Size, rounded up to whole bytes for 4- and 2-bit types. STRING
// and unknown types have no raw form (error).
func (t *Tensor) ByteSize() (int64, error) {
	n, err := t.NumElements()
	if err != nil {
		return 0, err
	}
	return rawSize(t.DataType, n)
}

func rawSize(dt DataType, n int64) (int64, error) {
	b := int64(dt.Bits())
	if b == 0 {
		return 0, fmt.Errorf("%w: %s tensors have no raw byte form", ErrNotSupported, dt)
	}
	if n > math.MaxInt64/b {
		return 0, fmt.Errorf("%w: %d elements of %s overflow int64 bytes", ErrMalformed, n, dt)
	}
	return (n*b + 7) / 8, nil
}

// check verifies that exactly one representation holds the values and
// that it holds as many as Dims say. Because it compares with the bytes
// actually present, huge claimed dims never cause an allocation.
func (t *Tensor) check() error {
	if t.DataType <= Undefined || int(t.DataType) >= len(dataTypeNames) {
		return fmt.Errorf("%w: data_type %s", ErrMalformed, t.DataType)
	}
	n, err := t.NumElements()
	if err != nil {
		return err
	}
	type repr struct {
		name  string
		count int
		ok    bool // the field may hold this data type
		want  int64
	}
	dt := t.DataType
	complexFactor := int64(1)
	if dt == Complex64 || dt == Complex128 {
		complexFactor = 2
	}
	int32Count := n
	if dt.Bits() < 8 {
		int32Count, _ = rawSize(dt, n)
	}
	reprs := []repr{
		{"float_data", len(t.FloatData), dt == Float || dt == Complex64, n * complexFactor},
		{"int32_data", len(t.Int32Data), dt != Float && dt != Complex64 && dt != String && dt != Int64 && dt != Double && dt != Complex128 && dt != Uint32 && dt != Uint64, int32Count},
		{"string_data", len(t.StringData), dt == String, n},
		{"int64_data", len(t.Int64Data), dt == Int64, n},
		{"double_data", len(t.DoubleData), dt == Double || dt == Complex128, n * complexFactor},
		{"uint64_data", len(t.Uint64Data), dt == Uint32 || dt == Uint64, n},
	}
	used := ""
	if t.Raw != nil {
		used = "raw_data"
		if t.External != nil {
			used = "external data"
		}
		if dt == String {
			return fmt.Errorf("%w: STRING tensor stored as raw bytes", ErrMalformed)
		}
		want, err := rawSize(dt, n)
		if err != nil {
			return err
		}
		if int64(len(t.Raw)) != want {
			return fmt.Errorf("%w: %s has %d bytes, want %d for %s %v", ErrMalformed, used, len(t.Raw), want, dt, t.Dims)
		}
	}
	for _, r := range reprs {
		if r.count == 0 {
			continue
		}
		if used != "" {
			return fmt.Errorf("%w: values in both %s and %s", ErrMalformed, used, r.name)
		}
		used = r.name
		if !r.ok {
			return fmt.Errorf("%w: %s cannot hold %s values", ErrMalformed, r.name, dt)
		}
		if int64(r.count) != r.want {
			return fmt.Errorf("%w: %s has %d entries, want %d for %s %v", ErrMalformed, r.name, r.count, r.want, dt, t.Dims)
		}
	}
	if used == "" && n != 0 {
		return fmt.Errorf("%w: no values for %d elements of %s %v", ErrMalformed, n, dt, t.Dims)
	}
	return nil
}

// DecodeTensor decodes a serialized TensorProto (an ONNX test-data .pb
// file). Raw is a view of buf. External data is refused. A SequenceProto
// or OptionalProto file is reported as ErrNotSupported.
func DecodeTensor(buf []byte) (*Tensor, error) {
	d := &decoder{base: buf, ext: newExternalFiles("")}
	t, err := d.tensor(buf)
	if err != nil {
		// Only on failure: a valid TensorProto is never a container.
		if elem := sniffContainer(buf); elem != "" {
			return nil, fmt.Errorf("onnx: file holds a SequenceProto or OptionalProto of %s, not a TensorProto: %w", elem, ErrNotSupported)
		}
		return nil, fmt.Errorf("onnx: tensor %q: %w", peekString(8, buf), err)
	}
	return t, nil
}

// containerElemTypes names SequenceProto.DataType / OptionalProto.DataType;
// both messages keep the value of elem_type k in field k+2.
var containerElemTypes = []string{1: "TENSOR", 2: "SPARSE_TENSOR", 3: "SEQUENCE", 4: "MAP", 5: "OPTIONAL"}

// sniffContainer reports whether buf has the shape of a SequenceProto or
// OptionalProto (onnx-data.proto: name = 1, elem_type = 2, the values in
// field elem_type+2) and returns the element type's name, or "".
func sniffContainer(buf []byte) string {
	r := &reader{b: buf, base: buf}
	var elemType uint64
	var valueFields []protowire.Number
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return ""
		}
		switch {
		case f.num == 1 && f.typ == protowire.BytesType:
			if !utf8.Valid(f.b) {
				return ""
			}
		case f.num == 2 && f.typ == protowire.VarintType:
			elemType = f.v
		case f.num >= 3 && f.num <= 7 && f.typ == protowire.BytesType:
			valueFields = append(valueFields, f.num)
		default:
			return ""
		}
	}
	if elemType < 1 || elemType >= uint64(len(containerElemTypes)) {
		return ""
	}
	for _, num := range valueFields {
		if uint64(num) != elemType+2 {
			return ""
		}
	}
	return containerElemTypes[elemType]
}
