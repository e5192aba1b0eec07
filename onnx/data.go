package onnx

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/internal/atomicfile"
	"google.golang.org/protobuf/encoding/protowire"
)

// Value is a value of any ONNX type as test-data files hold it
// (onnx-data.proto): a TensorProto, or a SequenceProto, OptionalProto or
// MapProto. Which message a file holds is not written in it; the reader
// takes it from the type the model declares for the input or output.
type Value struct {
	Name string
	// Kind is TypeTensor, TypeSequence, TypeOptional or TypeMap.
	Kind TypeKind
	// Tensor is a tensor's value.
	Tensor *Tensor
	// Elems are a sequence's elements, or an optional's value (none or
	// one); their kinds are what the sequence or optional declares.
	Elems []*Value
	// KeyType, Keys (integer key types) or StringKeys (STRING) and
	// MapValues (a sequence with one element per key) hold a map.
	KeyType    DataType
	Keys       []int64
	StringKeys [][]byte
	MapValues  *Value
}

// The element types SequenceProto and OptionalProto name (their
// DataType enums); the values of elem_type k are in field k+2.
const (
	elemUndefined    = 0
	elemTensor       = 1
	elemSparseTensor = 2
	elemSequence     = 3
	elemMap          = 4
	elemOptional     = 5
)

var elemKinds = map[int32]TypeKind{elemTensor: TypeTensor, elemSparseTensor: TypeSparseTensor, elemSequence: TypeSequence, elemMap: TypeMap, elemOptional: TypeOptional}

func elemTypeOf(k TypeKind) int32 {
	for e, kind := range elemKinds {
		if kind == k {
			return e
		}
	}
	return elemUndefined
}

// DecodeValue decodes a serialized value of the given kind: a TensorProto
// (TypeTensor), SequenceProto, OptionalProto or MapProto. Tensor.Raw of
// the tensors inside are views of buf. External data is refused, sparse
// tensors are not supported.
func DecodeValue(buf []byte, kind TypeKind) (*Value, error) {
	if kind == TypeTensor {
		t, err := DecodeTensor(buf)
		if err != nil {
			return nil, err
		}
		return &Value{Name: t.Name, Kind: TypeTensor, Tensor: t}, nil
	}
	d := &decoder{base: buf, ext: newExternalFiles("")}
	v, err := d.value(kind, buf)
	if err != nil {
		return nil, fmt.Errorf("onnx: %s %q: %w", kindName(kind), peekString(1, buf), err)
	}
	return v, nil
}

func kindName(k TypeKind) string {
	switch k {
	case TypeTensor:
		return "tensor"
	case TypeSequence:
		return "sequence"
	case TypeMap:
		return "map"
	case TypeOptional:
		return "optional"
	case TypeSparseTensor:
		return "sparse tensor"
	}
	return "value of unknown type"
}

// value decodes a value of the given kind written in parts (one, or every
// occurrence of a merged field).
func (d *decoder) value(kind TypeKind, parts ...[]byte) (*Value, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	switch kind {
	case TypeTensor:
		t, err := d.tensor(parts...)
		if err != nil {
			return nil, err
		}
		return &Value{Name: t.Name, Kind: TypeTensor, Tensor: t}, nil
	case TypeSequence, TypeOptional:
		return d.container(kind, parts)
	case TypeMap:
		return d.mapValue(parts)
	case TypeSparseTensor:
		return nil, fmt.Errorf("sparse tensor values: %w", ErrNotSupported)
	}
	return nil, fmt.Errorf("%w: value of unknown kind %d", ErrMalformed, kind)
}

// container reads a SequenceProto or OptionalProto written in parts:
// name = 1, elem_type = 2, the values of elem_type k in field k+2. A
// sequence's value fields are repeated, one element per occurrence; an
// optional's are singular, so the occurrences of one field are one value,
// merged (mergedField).
func (d *decoder) container(kind TypeKind, parts [][]byte) (*Value, error) {
	v := &Value{Kind: kind}
	var elemType int32
	type pending struct {
		num   protowire.Number
		parts mergedField
	}
	var values []pending
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		switch {
		case f.num == 1:
			v.Name, err = f.str("name")
		case f.num == 2:
			elemType, err = f.int32("elem_type")
		case f.num >= 3 && f.num <= 7:
			i := len(values)
			if kind == TypeOptional {
				if j := slices.IndexFunc(values, func(p pending) bool { return p.num == f.num }); j >= 0 {
					i = j
				}
			}
			if i == len(values) {
				values = append(values, pending{num: f.num})
			}
			err = values[i].parts.add(f, "values")
		default:
			// Strict, unlike messages of models: a file of another kind
			// (a TensorProto) must not read as an empty sequence.
			err = fmt.Errorf("%w: field %d is not a field of a %s", ErrMalformed, f.num, kindName(kind))
		}
		if err != nil {
			return nil, err
		}
	}
	elemKind, ok := elemKinds[elemType]
	if !ok && elemType != elemUndefined {
		return nil, fmt.Errorf("%w: elem_type %d", ErrMalformed, elemType)
	}
	if kind == TypeOptional && len(values) > 1 {
		return nil, fmt.Errorf("%w: an optional with %d values", ErrMalformed, len(values))
	}
	for i, p := range values {
		if int32(p.num) != elemType+2 {
			return nil, fmt.Errorf("%w: value in field %d, but elem_type %d keeps its values in field %d", ErrMalformed, p.num, elemType, elemType+2)
		}
		e, err := d.value(elemKind, p.parts...)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		v.Elems = append(v.Elems, e)
	}
	return v, nil
}

// mapValue reads a MapProto written in parts: name = 1, key_type = 2,
// keys = 3 (integers), string_keys = 4, values = 5 (a SequenceProto, one
// element per key; a singular field, so its occurrences merge).
func (d *decoder) mapValue(parts [][]byte) (*Value, error) {
	v := &Value{Kind: TypeMap}
	r := d.reader(parts...)
	var values mergedField
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		switch f.num {
		case 1:
			v.Name, err = f.str("name")
		case 2:
			var k int32
			k, err = f.int32("key_type")
			v.KeyType = DataType(k)
		case 3:
			v.Keys, err = appendVarints(v.Keys, f, "keys")
		case 4:
			var b []byte
			if b, err = f.copyBytes("string_keys"); err == nil {
				v.StringKeys = append(v.StringKeys, b)
			}
		case 5:
			err = values.add(f, "values")
		}
		if err != nil {
			return nil, err
		}
	}
	switch v.KeyType {
	case String:
		if len(v.Keys) != 0 {
			return nil, fmt.Errorf("%w: string map with integer keys", ErrMalformed)
		}
	case Int8, Int16, Int32, Int64, Uint8, Uint16, Uint32, Uint64:
		if len(v.StringKeys) != 0 {
			return nil, fmt.Errorf("%w: %s map with string keys", ErrMalformed, v.KeyType)
		}
	default:
		return nil, fmt.Errorf("%w: map key type %s", ErrMalformed, v.KeyType)
	}
	n := len(v.Keys) + len(v.StringKeys)
	if values.present() {
		seq, err := d.value(TypeSequence, values...)
		if err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
		v.MapValues = seq
	}
	if got := 0; v.MapValues != nil || n > 0 {
		if v.MapValues != nil {
			got = len(v.MapValues.Elems)
		}
		if got != n {
			return nil, fmt.Errorf("%w: %d keys and %d values", ErrMalformed, n, got)
		}
	}
	return v, nil
}

// EncodeValue serializes v as the message of its kind (the reverse of
// DecodeValue).
func EncodeValue(v *Value) ([]byte, error) {
	if v == nil {
		return nil, fmt.Errorf("onnx: encode value: nil value")
	}
	if v.Kind == TypeTensor {
		return EncodeTensor(v.Tensor)
	}
	w := &writer{enc: &encoder{place: map[*Tensor]*ExternalData{}}}
	w.value(v, 0)
	if w.err != nil {
		return nil, fmt.Errorf("onnx: encode %s %q: %w", kindName(v.Kind), v.Name, w.err)
	}
	return w.buf, nil
}

func (w *writer) value(v *Value, depth int) {
	if depth > maxNesting {
		w.fail(fmt.Errorf("values nested more than %d deep", maxNesting))
		return
	}
	switch v.Kind {
	case TypeTensor:
		if v.Tensor != nil && v.Tensor.External != nil {
			w.enc.place[v.Tensor] = nil
		}
		w.tensor(v.Tensor)
	case TypeSequence, TypeOptional:
		w.optString(1, v.Name)
		if v.Kind == TypeOptional && len(v.Elems) > 1 {
			w.fail(fmt.Errorf("an optional with %d values", len(v.Elems)))
			return
		}
		if len(v.Elems) == 0 {
			if v.Kind == TypeSequence {
				w.varint(2, elemTensor)
			}
			return
		}
		kind := v.Elems[0].Kind
		elemType := elemTypeOf(kind)
		if elemType == elemUndefined || kind == TypeSparseTensor {
			w.fail(fmt.Errorf("elements of kind %s", kindName(kind)))
			return
		}
		w.varint(2, uint64(elemType))
		for i, e := range v.Elems {
			if e == nil || e.Kind != kind {
				w.fail(fmt.Errorf("element %d is not a %s like element 0", i, kindName(kind)))
				return
			}
			w.message(protowire.Number(elemType+2), func(w *writer) { w.value(e, depth+1) })
		}
	case TypeMap:
		w.optString(1, v.Name)
		w.varint(2, uint64(v.KeyType))
		packedVarints(w, 3, v.Keys)
		for _, k := range v.StringKeys {
			w.bytes(4, k)
		}
		if v.MapValues != nil {
			w.message(5, func(w *writer) { w.value(v.MapValues, depth+1) })
		}
	default:
		w.fail(fmt.Errorf("value of kind %s", kindName(v.Kind)))
	}
}

// ReadValueFile reads a test-data file holding a value of the given kind
// (ReadTensorFile for TypeTensor).
func ReadValueFile(path string, kind TypeKind) (*Value, error) {
	buf, release, err := loadFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	if release != nil {
		buf = append([]byte(nil), buf...)
		_ = release()
	}
	v, err := DecodeValue(buf, kind)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return v, nil
}

// WriteValueFile writes v to path as its serialized message, atomically.
func WriteValueFile(path string, v *Value) error {
	buf, err := EncodeValue(v)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, buf); err != nil {
		return fmt.Errorf("onnx: write %s: %w", path, err)
	}
	return nil
}
