package onnx

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// Crafted onnx-data.proto messages: SequenceProto and OptionalProto keep
// name in 1, elem_type in 2 and the values of elem_type k in field k+2;
// MapProto keeps key_type in 2, keys in 3, string_keys in 4, values (a
// SequenceProto) in 5.

func seqMsg(name string, elemType uint64, values ...[]byte) []byte {
	parts := [][]byte{fString(1, name), fVarint(2, elemType)}
	for _, v := range values {
		parts = append(parts, fBytes(protowire.Number(elemType+2), v))
	}
	return cat(parts...)
}

func stringTensorMsg(name string, s ...string) []byte {
	parts := [][]byte{fVarint(1, uint64(len(s))), fVarint(2, uint64(String))}
	for _, x := range s {
		parts = append(parts, fString(6, x))
	}
	return cat(append(parts, fString(8, name))...)
}

func TestDecodeValues(t *testing.T) {
	a := tensorMsg("a", []int64{2}, float32Raw(2))
	b := stringTensorMsg("b", "x", "yz")
	for _, tc := range []struct {
		name  string
		kind  TypeKind
		buf   []byte
		check func(*Value) bool
	}{
		{"sequence", TypeSequence, seqMsg("s", elemTensor, a, b), func(v *Value) bool {
			return v.Name == "s" && len(v.Elems) == 2 && v.Elems[0].Tensor.Name == "a" && string(v.Elems[1].Tensor.StringData[1]) == "yz"
		}},
		{"empty sequence", TypeSequence, seqMsg("e", elemTensor), func(v *Value) bool { return len(v.Elems) == 0 }},
		{"optional none", TypeOptional, seqMsg("o", elemUndefined), func(v *Value) bool { return len(v.Elems) == 0 }},
		{"optional of sequence", TypeOptional, seqMsg("o", elemSequence, seqMsg("", elemTensor, a)), func(v *Value) bool {
			return len(v.Elems) == 1 && v.Elems[0].Kind == TypeSequence && len(v.Elems[0].Elems) == 1
		}},
		{"map", TypeMap, cat(fString(1, "m"), fVarint(2, uint64(Int64)), fBytes(3, []byte{1, 2}), fBytes(5, seqMsg("", elemTensor, a, a))), func(v *Value) bool {
			return v.KeyType == Int64 && len(v.Keys) == 2 && v.Keys[1] == 2 && len(v.MapValues.Elems) == 2
		}},
		{"string map", TypeMap, cat(fVarint(2, uint64(String)), fString(4, "k"), fBytes(5, seqMsg("", elemTensor, b))), func(v *Value) bool {
			return string(v.StringKeys[0]) == "k" && len(v.MapValues.Elems) == 1
		}},
	} {
		v, err := DecodeValue(tc.buf, tc.kind)
		if err != nil || !tc.check(v) {
			t.Errorf("%s: %+v, %v", tc.name, v, err)
			continue
		}
		// Encoding and decoding again gives the same value, and the
		// encoding is then stable.
		enc, err := EncodeValue(v)
		if err != nil {
			t.Errorf("%s: encode: %v", tc.name, err)
			continue
		}
		back, err := DecodeValue(enc, tc.kind)
		if err != nil || !tc.check(back) {
			t.Errorf("%s: decoding the encoding: %+v, %v", tc.name, back, err)
			continue
		}
		if again, err := EncodeValue(back); err != nil || !bytes.Equal(again, enc) {
			t.Errorf("%s: encoding is not stable: %v", tc.name, err)
		}
	}
}

func TestMalformedValueFiles(t *testing.T) {
	good := tensorMsg("t", []int64{2}, float32Raw(2))
	deep := good
	for range maxNesting + 2 {
		deep = seqMsg("", elemSequence, deep)
	}
	for _, tc := range []struct {
		name string
		kind TypeKind
		buf  []byte
		want string
		is   error
	}{
		{"truncated", TypeSequence, seqMsg("s", elemTensor, good)[:10], "malformed", ErrMalformed},
		// Two occurrences of tensor_value are one value (merged); a
		// tensor_value and a sequence_value are two.
		{"two optional values", TypeOptional, cat(seqMsg("o", elemTensor, good), fBytes(5, seqMsg("", elemTensor))), "an optional with 2 values", ErrMalformed},
		{"value in the wrong field", TypeSequence, cat(fVarint(2, elemTensor), fBytes(5, good)), "elem_type 1 keeps its values in field 3", ErrMalformed},
		{"unknown elem_type", TypeSequence, cat(fVarint(2, 9)), "elem_type 9", ErrMalformed},
		{"bad element", TypeSequence, seqMsg("s", elemTensor, tensorMsg("t", []int64{3}, float32Raw(2))), `sequence "s": element 0: malformed: raw_data has 8 bytes, want 12`, ErrMalformed},
		{"nested too deep", TypeSequence, deep, "nested more than 64 deep", ErrMalformed},
		{"sparse elements", TypeSequence, seqMsg("s", elemSparseTensor, []byte{}), "sparse tensor values", ErrNotSupported},
		{"keys without values", TypeMap, cat(fVarint(2, uint64(Int64)), fBytes(3, []byte{1, 2}), fBytes(5, seqMsg("", elemTensor, good))), "2 keys and 1 values", ErrMalformed},
		{"float keys", TypeMap, cat(fVarint(2, uint64(Float))), "map key type FLOAT", ErrMalformed},
		{"string keys for int64", TypeMap, cat(fVarint(2, uint64(Int64)), fString(4, "k")), "INT64 map with string keys", ErrMalformed},
		{"tensor file read as a sequence", TypeSequence, good, "field 8 is not a field of a sequence", ErrMalformed},
	} {
		_, err := DecodeValue(tc.buf, tc.kind)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "onnx: ") || !errors.Is(err, tc.is) {
			t.Errorf("%s: got %v, want an error containing %q wrapping %v", tc.name, err, tc.want, tc.is)
		}
	}
}

// FuzzDecodeValue: value files of every kind decode or fail cleanly, and
// what decodes encodes to bytes that decode to the same encoding.
func FuzzDecodeValue(f *testing.F) {
	good := tensorMsg("t", []int64{2}, float32Raw(2))
	f.Add(uint8(TypeSequence), seqMsg("s", elemTensor, good, stringTensorMsg("u", "a")))
	f.Add(uint8(TypeOptional), seqMsg("o", elemSequence, seqMsg("", elemTensor, good)))
	f.Add(uint8(TypeOptional), seqMsg("o", elemUndefined))
	f.Add(uint8(TypeMap), cat(fVarint(2, uint64(Int64)), fBytes(3, []byte{1}), fBytes(5, seqMsg("", elemTensor, good))))
	f.Add(uint8(TypeTensor), good)
	f.Fuzz(func(t *testing.T, kind uint8, buf []byte) {
		k := TypeKind(kind % 6)
		v, err := DecodeValue(buf, k)
		if err != nil {
			return
		}
		enc, err := EncodeValue(v)
		if err != nil {
			return // e.g. a sequence mixing element kinds cannot be written
		}
		back, err := DecodeValue(enc, k)
		if err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
		again, err := EncodeValue(back)
		if err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("encoding is not stable: %v", err)
		}
	})
}
