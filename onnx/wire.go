package onnx

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Errors that decoding, resolving and patching wrap, for errors.Is.
var (
	// ErrMalformed: the bytes are not a valid encoding of the expected
	// message (truncated, wrong wire type, inconsistent sizes).
	ErrMalformed = errors.New("malformed")
	// ErrNotSupported: valid ONNX that dstune does not handle.
	ErrNotSupported = errors.New("not supported")
	// ErrUnsafePath: an external-data location that would read outside the
	// model's directory (absolute, "..", or a symlink leading out).
	ErrUnsafePath = errors.New("unsafe external data location")
)

// maxNesting bounds how deeply graphs (through GRAPH/GRAPHS attributes) and
// types (sequence of sequence of ...) may nest, so that hostile files cannot
// exhaust the stack.
const maxNesting = 64

// field is one decoded protobuf field: for varint, fixed32 and fixed64 wire
// types the value is in v, for the bytes wire type in b (a view of the
// input buffer).
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

var wireTypeNames = map[protowire.Type]string{
	protowire.VarintType:     "varint",
	protowire.Fixed32Type:    "fixed32",
	protowire.Fixed64Type:    "fixed64",
	protowire.BytesType:      "bytes",
	protowire.StartGroupType: "group start",
	protowire.EndGroupType:   "group end",
}

func wireTypeName(t protowire.Type) string {
	if n, ok := wireTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("wire type %d", t)
}

// reader walks the fields of one message, whose encoding may come in
// several parts (see mergedField): b is the unread rest of the current
// part, more the parts after it. base is the full input buffer the parts
// are views of, used only to report byte offsets in errors (views share
// base's backing array, so offset = cap(base) - cap(view)).
type reader struct {
	b    []byte
	more [][]byte
	base []byte
}

func (r *reader) offset() int64 { return int64(cap(r.base) - cap(r.b)) }

// done reports whether every part has been read, moving on to the next
// part when the current one is. A field never spans two parts: each part
// is a whole encoded message.
func (r *reader) done() bool {
	for len(r.b) == 0 && len(r.more) > 0 {
		r.b, r.more = r.more[0], r.more[1:]
	}
	return len(r.b) == 0
}

// mergedField gathers the encodings of a singular embedded-message field
// (ModelProto.graph, ValueInfoProto.type, AttributeProto.t, ...), one per
// occurrence in file order. Protobuf does not replace such a field when it
// occurs again: it merges the occurrences into one message (a later scalar
// overwrites an earlier one, repeated fields append, message fields merge
// in turn), and onnx, onnxruntime and every protobuf reader do so; a tool
// that appends "graph { doc_string: ... }" to a model relies on it.
// Reading the parts one after the other as one message (decoder.reader)
// is exactly that merge, so a parent collects the parts while it reads its
// own fields and decodes the child once, when it has them all. Decoding
// once keeps the checks made at the end of a message (tensor sizes,
// external data) and the nesting depth as for a message written whole.
type mergedField [][]byte

// add records one occurrence of the field, which must be length-delimited.
// The list doubles when full, so that a file made of many tiny occurrences
// allocates at most about twice what the list holds (append grows large
// slices by a quarter, which allocates about five times as much).
func (m *mergedField) add(f field, name string) error {
	b, err := f.bytes(name)
	if err != nil {
		return err
	}
	if len(*m) == cap(*m) {
		*m = grow(*m, len(*m)+1)
	}
	*m = append(*m, b)
	return nil
}

// present reports whether the field occurred at all (an occurrence may be
// empty: "graph {}" still sets the graph).
func (m mergedField) present() bool { return len(m) > 0 }

// next consumes one field. Groups (deprecated, never used by ONNX) are
// rejected rather than skipped.
func (r *reader) next() (field, error) {
	at := r.offset()
	num, typ, n := protowire.ConsumeTag(r.b)
	if n < 0 {
		return field{}, fmt.Errorf("%w: field tag at byte %d: %v", ErrMalformed, at, protowire.ParseError(n))
	}
	r.b = r.b[n:]
	f := field{num: num, typ: typ}
	switch typ {
	case protowire.VarintType:
		f.v, n = protowire.ConsumeVarint(r.b)
	case protowire.Fixed32Type:
		var v uint32
		v, n = protowire.ConsumeFixed32(r.b)
		f.v = uint64(v)
	case protowire.Fixed64Type:
		f.v, n = protowire.ConsumeFixed64(r.b)
	case protowire.BytesType:
		f.b, n = protowire.ConsumeBytes(r.b)
	default:
		return field{}, fmt.Errorf("%w: field %d at byte %d: unsupported %s", ErrMalformed, num, at, wireTypeName(typ))
	}
	if n < 0 {
		return field{}, fmt.Errorf("%w: field %d (%s) at byte %d: %v", ErrMalformed, num, wireTypeName(typ), at, protowire.ParseError(n))
	}
	r.b = r.b[n:]
	return f, nil
}

func wrongType(f field, name string, want protowire.Type) error {
	return fmt.Errorf("%w: field %d (%s): %s, want %s", ErrMalformed, f.num, name, wireTypeName(f.typ), wireTypeName(want))
}

func (f field) bytes(name string) ([]byte, error) {
	if f.typ != protowire.BytesType {
		return nil, wrongType(f, name, protowire.BytesType)
	}
	return f.b, nil
}

// copyBytes returns a copy of a bytes field that is not a tensor's data,
// so that such values stay valid after Model.Close.
func (f field) copyBytes(name string) ([]byte, error) {
	b, err := f.bytes(name)
	if err != nil {
		return nil, err
	}
	return append([]byte{}, b...), nil
}

func (f field) str(name string) (string, error) {
	if f.typ != protowire.BytesType {
		return "", wrongType(f, name, protowire.BytesType)
	}
	if !utf8.Valid(f.b) {
		return "", fmt.Errorf("%w: field %d (%s): invalid UTF-8", ErrMalformed, f.num, name)
	}
	return string(f.b), nil
}

func (f field) int64(name string) (int64, error) {
	if f.typ != protowire.VarintType {
		return 0, wrongType(f, name, protowire.VarintType)
	}
	return int64(f.v), nil
}

// int32 reads an int32 or enum field: protobuf sign-extends negative values
// to 64 bits, anything else outside the int32 range is malformed.
func (f field) int32(name string) (int32, error) {
	v, err := f.int64(name)
	if err != nil {
		return 0, err
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		return 0, fmt.Errorf("%w: field %d (%s): %d out of int32 range", ErrMalformed, f.num, name, v)
	}
	return int32(v), nil
}

func (f field) float32(name string) (float32, error) {
	if f.typ != protowire.Fixed32Type {
		return 0, wrongType(f, name, protowire.Fixed32Type)
	}
	return math.Float32frombits(uint32(f.v)), nil
}

// countVarints is the number of varints in a packed field: one per byte
// without the continuation bit. It never exceeds len(b), which is what
// bounds the allocation for packed repeated fields.
func countVarints(b []byte) int {
	n := 0
	for _, c := range b {
		if c < 0x80 {
			n++
		}
	}
	return n
}

// appendVarints appends a repeated varint field (int64, uint64, int32):
// either one unpacked element or a packed run.
func appendVarints[T int64 | uint64 | int32](dst []T, f field, name string) ([]T, error) {
	switch f.typ {
	case protowire.VarintType:
		v, err := convertVarint[T](f.v, f, name)
		if err != nil {
			return dst, err
		}
		return append(dst, v), nil
	case protowire.BytesType:
		b := f.b
		if len(b) > 0 && b[len(b)-1] >= 0x80 {
			return dst, fmt.Errorf("%w: field %d (%s): packed varints truncated", ErrMalformed, f.num, name)
		}
		dst = grow(dst, countVarints(b))
		for len(b) > 0 {
			u, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return dst, fmt.Errorf("%w: field %d (%s): packed varints: %v", ErrMalformed, f.num, name, protowire.ParseError(n))
			}
			b = b[n:]
			v, err := convertVarint[T](u, f, name)
			if err != nil {
				return dst, err
			}
			dst = append(dst, v)
		}
		return dst, nil
	}
	return dst, wrongType(f, name, protowire.VarintType)
}

func convertVarint[T int64 | uint64 | int32](u uint64, f field, name string) (T, error) {
	var zero T
	switch any(zero).(type) {
	case int32:
		v := int64(u)
		if v < math.MinInt32 || v > math.MaxInt32 {
			return zero, fmt.Errorf("%w: field %d (%s): %d out of int32 range", ErrMalformed, f.num, name, v)
		}
	}
	return T(u), nil
}

// appendFixed32s appends a repeated float field, packed or not.
func appendFloat32s(dst []float32, f field, name string) ([]float32, error) {
	switch f.typ {
	case protowire.Fixed32Type:
		return append(dst, math.Float32frombits(uint32(f.v))), nil
	case protowire.BytesType:
		if len(f.b)%4 != 0 {
			return dst, fmt.Errorf("%w: field %d (%s): packed length %d not a multiple of 4", ErrMalformed, f.num, name, len(f.b))
		}
		dst = grow(dst, len(f.b)/4)
		for b := f.b; len(b) > 0; b = b[4:] {
			v, _ := protowire.ConsumeFixed32(b)
			dst = append(dst, math.Float32frombits(v))
		}
		return dst, nil
	}
	return dst, wrongType(f, name, protowire.Fixed32Type)
}

// appendFloat64s appends a repeated double field, packed or not.
func appendFloat64s(dst []float64, f field, name string) ([]float64, error) {
	switch f.typ {
	case protowire.Fixed64Type:
		return append(dst, math.Float64frombits(f.v)), nil
	case protowire.BytesType:
		if len(f.b)%8 != 0 {
			return dst, fmt.Errorf("%w: field %d (%s): packed length %d not a multiple of 8", ErrMalformed, f.num, name, len(f.b))
		}
		dst = grow(dst, len(f.b)/8)
		for b := f.b; len(b) > 0; b = b[8:] {
			v, _ := protowire.ConsumeFixed64(b)
			dst = append(dst, math.Float64frombits(v))
		}
		return dst, nil
	}
	return dst, wrongType(f, name, protowire.Fixed64Type)
}

// grow makes room for n more elements; n is always bounded by the bytes
// of the field being decoded.
func grow[T any](s []T, n int) []T {
	if cap(s)-len(s) >= n {
		return s
	}
	g := make([]T, len(s), len(s)+n)
	copy(g, s)
	return g
}

// peekString returns the value of string field num in the message made of
// parts, or "" — used only to name things in error messages before they
// are decoded. Like decoding, it takes the last occurrence.
func peekString(num protowire.Number, parts ...[]byte) string {
	name := ""
	for _, msg := range parts {
		for len(msg) > 0 {
			n, typ, l := protowire.ConsumeTag(msg)
			if l < 0 {
				return name
			}
			msg = msg[l:]
			l = protowire.ConsumeFieldValue(n, typ, msg)
			if l < 0 {
				return name
			}
			if n == num && typ == protowire.BytesType {
				if v, _ := protowire.ConsumeBytes(msg); utf8.Valid(v) {
					name = string(v)
				}
			}
			msg = msg[l:]
		}
	}
	return name
}
