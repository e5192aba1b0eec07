package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Protobuf merges the occurrences of a singular embedded-message field
// (https://protobuf.dev/programming-guides/encoding/#last-one-wins): a
// later scalar overwrites, repeated fields append, message fields merge in
// turn, and setting another member of a oneof clears the one before. The
// tests below write each message twice, once split over several
// occurrences and once as the single message protobuf merges them into,
// and require both to decode to the same model.

// typeMsg builds a TypeProto with tensor_type{elem_type, shape{dims}};
// dims nil leaves the shape out.
func typeMsg(elem DataType, dims []int64) []byte {
	tensorType := fVarint(1, uint64(elem))
	if dims != nil {
		var shape []byte
		for _, d := range dims {
			shape = append(shape, fBytes(1, fVarint(1, uint64(d)))...)
		}
		tensorType = cat(tensorType, fBytes(2, shape))
	}
	return fBytes(1, tensorType)
}

// modelWithGraph builds a model (ir_version 8, opset 17) around graph
// fields, written as one graph field per argument.
func modelWithGraph(graphs ...[]byte) []byte {
	parts := [][]byte{fVarint(1, 8), fBytes(8, fVarint(2, 17))}
	for _, g := range graphs {
		parts = append(parts, fBytes(7, g))
	}
	return cat(parts...)
}

func TestSingularMessagesMerge(t *testing.T) {
	idNode := cat(fString(1, "x"), fString(2, "y"), fString(3, "id0"), fString(4, "Identity"))
	xIn := fBytes(11, cat(fString(1, "x"), fBytes(2, typeMsg(Float, []int64{2, 3}))))
	yOut := fBytes(12, cat(fString(1, "y"), fBytes(2, typeMsg(Float, []int64{2, 3}))))
	init := fBytes(5, tensorMsg("w", []int64{2}, float32Raw(2)))
	fullGraph := cat(fBytes(1, idNode), fString(2, "main"), xIn, yOut, init)

	// A value info whose type is written in the pieces given.
	splitInput := func(types ...[]byte) []byte {
		vi := fString(1, "x")
		for _, t := range types {
			vi = cat(vi, fBytes(2, t))
		}
		return modelWithGraph(cat(fBytes(1, idNode), fString(2, "main"), fBytes(11, vi), yOut))
	}
	tensorAttr := func(tensors ...[]byte) []byte {
		attr := cat(fString(1, "value"), fVarint(20, uint64(AttrTensor)))
		for _, t := range tensors {
			attr = cat(attr, fBytes(5, t))
		}
		return modelWithAttribute(attr)
	}
	seqOf := func(elem []byte) []byte { return fBytes(4, fBytes(1, elem)) }
	sparse := func(valuesName string) []byte {
		values := tensorMsg(valuesName, []int64{2}, float32Raw(2))
		indices := cat(fBytes(1, []byte{2}), fVarint(2, uint64(Int64)), fBytes(9, make([]byte, 16)))
		return cat(fBytes(1, values), fBytes(2, indices), fBytes(3, []byte{4}))
	}

	tests := []struct {
		name         string
		split, whole []byte
		check        func(m *Model) string // what onnx reads, independent of whole
	}{
		{
			// What a tool appending metadata writes; onnx.checker accepts
			// it and onnx reads one node and the new doc_string.
			name:  "graph, then graph{doc_string}",
			split: modelWithGraph(fullGraph, fString(10, "edited")),
			whole: modelWithGraph(cat(fullGraph, fString(10, "edited"))),
			check: func(m *Model) string {
				if g := m.Graph; len(g.Nodes) != 1 || len(g.Inputs) != 1 || len(g.Outputs) != 1 || len(g.Initializers) != 1 || g.DocString != "edited" {
					return fmt.Sprintf("%d nodes, %d inputs, %d outputs, %d initializers, doc %q; want 1, 1, 1, 1, \"edited\"", len(g.Nodes), len(g.Inputs), len(g.Outputs), len(g.Initializers), g.DocString)
				}
				return ""
			},
		},
		{
			name:  "graph split in two, name overwritten",
			split: modelWithGraph(cat(fString(2, "first"), fBytes(1, idNode), xIn), cat(yOut, fString(2, "main"), init)),
			whole: modelWithGraph(cat(fString(2, "first"), fBytes(1, idNode), xIn, yOut, fString(2, "main"), init)),
			check: func(m *Model) string {
				if g := m.Graph; g.Name != "main" || len(g.Nodes) != 1 || len(g.Outputs) != 1 {
					return fmt.Sprintf("graph %q with %d nodes and %d outputs, want \"main\", 1, 1", g.Name, len(g.Nodes), len(g.Outputs))
				}
				return ""
			},
		},
		{
			name:  "empty second graph",
			split: modelWithGraph(fullGraph, nil),
			whole: modelWithGraph(fullGraph),
		},
		{
			name:  "value_info type split: elem_type, then shape",
			split: splitInput(typeMsg(Float, nil), fBytes(1, fBytes(2, cat(fBytes(1, fVarint(1, 2)), fBytes(1, fVarint(1, 3)))))),
			whole: splitInput(typeMsg(Float, []int64{2, 3})),
			check: func(m *Model) string {
				typ := m.Graph.Inputs[0].Type
				if typ.Kind != TypeTensor || typ.ElemType != Float || !typ.HasShape || len(typ.Shape) != 2 || typ.Shape[1].Value != 3 {
					return fmt.Sprintf("input type %+v, want FLOAT [2 3]", typ)
				}
				return ""
			},
		},
		{
			// Two shape fields are one shape: the dimensions append.
			name:  "tensor_type and shape split",
			split: splitInput(cat(fBytes(1, fBytes(2, fBytes(1, fVarint(1, 2)))), fBytes(1, cat(fVarint(1, uint64(Float)), fBytes(2, fBytes(1, fVarint(1, 3))))))),
			whole: splitInput(typeMsg(Float, []int64{2, 3})),
		},
		{
			// A scalar inside the merged message is overwritten.
			name:  "elem_type overwritten",
			split: splitInput(typeMsg(Int64, []int64{2, 3}), fBytes(1, fVarint(1, uint64(Float)))),
			whole: splitInput(typeMsg(Float, []int64{2, 3})),
		},
		{
			// In one TypeProto, another member of the value oneof clears
			// the tensor_type before it; the tensor_type after that starts
			// afresh (as the onnx package reads it).
			name:  "oneof: tensor, sequence, tensor",
			split: splitInput(cat(typeMsg(Float, []int64{3}), seqOf(typeMsg(Int64, nil)), fBytes(1, fBytes(2, fBytes(1, fVarint(1, 5)))))),
			whole: splitInput(fBytes(1, fBytes(2, fBytes(1, fVarint(1, 5))))),
			check: func(m *Model) string {
				typ := m.Graph.Inputs[0].Type
				if typ.Kind != TypeTensor || typ.ElemType != Undefined || typ.Elem != nil || len(typ.Shape) != 1 || typ.Shape[0].Value != 5 {
					return fmt.Sprintf("input type %+v, want a tensor of undefined type, shape [5]", typ)
				}
				return ""
			},
		},
		{
			name:  "oneof: tensor, then opaque_type",
			split: splitInput(cat(typeMsg(Float, []int64{3}), fBytes(7, nil))),
			whole: splitInput(fBytes(7, nil)),
		},
		{
			name:  "sequence elem_type split",
			split: splitInput(seqOf(typeMsg(Float, nil)), seqOf(fBytes(1, fBytes(2, fBytes(1, fVarint(1, 4)))))),
			whole: splitInput(seqOf(typeMsg(Float, []int64{4}))),
			check: func(m *Model) string {
				typ := m.Graph.Inputs[0].Type
				if typ.Kind != TypeSequence || typ.Elem == nil || typ.Elem.ElemType != Float || len(typ.Elem.Shape) != 1 {
					return fmt.Sprintf("input type %+v, want a sequence of FLOAT [4]", typ)
				}
				return ""
			},
		},
		{
			name:  "optional_type split",
			split: splitInput(fBytes(9, fBytes(1, typeMsg(Float, nil))), fBytes(9, fBytes(1, fBytes(1, fBytes(2, nil))))),
			whole: splitInput(fBytes(9, fBytes(1, typeMsg(Float, []int64{})))),
		},
		{
			name:  "map_type value_type split",
			split: splitInput(fBytes(5, cat(fVarint(1, uint64(Int64)), fBytes(2, typeMsg(Float, nil)))), fBytes(5, fBytes(2, fBytes(1, fBytes(2, nil))))),
			whole: splitInput(fBytes(5, cat(fVarint(1, uint64(Int64)), fBytes(2, typeMsg(Float, []int64{}))))),
		},
		{
			// Alone, the first part (dims, no values) is not a valid
			// tensor: the values are checked once the parts are merged.
			name:  "attribute t split",
			split: tensorAttr(cat(fBytes(1, []byte{2}), fVarint(2, uint64(Float))), cat(fString(8, "c"), float32Raw(2))),
			whole: tensorAttr(tensorMsg("c", []int64{2}, float32Raw(2))),
			check: func(m *Model) string {
				if c := m.Graph.Nodes[0].Attributes[0].T; c == nil || c.Name != "c" || len(c.Raw) != 8 || len(c.Dims) != 1 {
					return fmt.Sprintf("tensor %+v, want c FLOAT [2] with 8 raw bytes", c)
				}
				return ""
			},
		},
		{
			name:  "attribute g split",
			split: modelWithAttribute(cat(fString(1, "body"), fVarint(20, uint64(AttrGraph)), fBytes(6, fBytes(1, idNode)), fBytes(6, fString(2, "sub")))),
			whole: modelWithAttribute(cat(fString(1, "body"), fVarint(20, uint64(AttrGraph)), fBytes(6, cat(fBytes(1, idNode), fString(2, "sub"))))),
			check: func(m *Model) string {
				if g := m.Graph.Nodes[0].Attributes[0].G; g == nil || g.Name != "sub" || len(g.Nodes) != 1 {
					return fmt.Sprintf("subgraph %+v, want \"sub\" with one node", g)
				}
				return ""
			},
		},
		{
			name:  "attribute tp split",
			split: modelWithAttribute(cat(fString(1, "dtype"), fVarint(20, uint64(AttrTypeProto)), fBytes(14, typeMsg(Float, nil)), fBytes(14, fBytes(1, fBytes(2, fBytes(1, fVarint(1, 7))))))),
			whole: modelWithAttribute(cat(fString(1, "dtype"), fVarint(20, uint64(AttrTypeProto)), fBytes(14, typeMsg(Float, []int64{7})))),
		},
		{
			name: "attribute sparse_tensor split",
			split: modelWithAttribute(cat(fString(1, "sparse_value"), fVarint(20, uint64(AttrSparseTensor)),
				fBytes(22, sparse("old")), fBytes(22, fBytes(1, fString(8, "s"))))),
			whole: modelWithAttribute(cat(fString(1, "sparse_value"), fVarint(20, uint64(AttrSparseTensor)),
				fBytes(22, cat(sparse("old"), fBytes(1, fString(8, "s")))))),
			check: func(m *Model) string {
				if s := m.Graph.Nodes[0].Attributes[0].Sparse; s == nil || s.Values == nil || s.Values.Name != "s" || s.Indices == nil || len(s.Dims) != 1 {
					return fmt.Sprintf("sparse tensor %+v, want values named \"s\", indices and dims", s)
				}
				return ""
			},
		},
	}
	for _, test := range tests {
		split, err := Decode(test.split, "")
		if err != nil {
			t.Errorf("%s: %v", test.name, err)
			continue
		}
		whole, err := Decode(test.whole, "")
		if err != nil {
			t.Fatalf("%s: the merged message does not decode: %v", test.name, err)
		}
		if d := diff(whole, split); d != "" {
			t.Errorf("%s: the split message decodes unlike the merged one, at %s", test.name, d)
		}
		if test.check != nil {
			if msg := test.check(split); msg != "" {
				t.Errorf("%s: %s", test.name, msg)
			}
		}
		// Allocation stays bounded and errors stay well-formed.
		if err := decodeChecked(t, test.name, test.split, ""); err != nil {
			t.Errorf("%s: %v", test.name, err)
		}
	}
}

// TestMergedExternalData: a tensor's external-data entries and its
// data_location may come in different occurrences of the field; the
// external data is resolved once all are merged.
func TestMergedExternalData(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 16), 0o644); err != nil {
		t.Fatal(err)
	}
	attr := cat(fString(1, "value"), fVarint(20, uint64(AttrTensor)),
		fBytes(5, tensorMsg("c", []int64{4}, extEntry("location", "w.bin"))),
		fBytes(5, fVarint(14, 1)))
	m, err := Decode(modelWithAttribute(attr), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if c := m.Graph.Nodes[0].Attributes[0].T; c.External == nil || c.External.Location != "w.bin" || len(c.Raw) != 16 {
		t.Errorf("tensor %+v: want 16 bytes of external data from w.bin", c)
	}
}

// TestMergedMessageLimits: merging keeps the limits of the decoder. Depth
// counts a merged message once, however many parts it has; an error inside
// a merged message names it by its last name; and many small occurrences
// allocate in proportion to the file (decodeChecked).
func TestMergedMessageLimits(t *testing.T) {
	// A sequence of sequence of ... of tensors, every level written in two
	// parts (the second sets elem_type again, which merges).
	nestedType := func(depth int) []byte {
		typ := typeMsg(Float, nil)
		for range depth {
			typ = cat(fBytes(4, fBytes(1, typ)), fBytes(4, fBytes(1, nil)))
		}
		vi := cat(fString(1, "x"), fBytes(2, typ), fBytes(2, nil))
		return modelWithGraph(cat(fString(2, "main"), fBytes(11, vi)))
	}
	// If nodes whose then_branch is written in two parts, nested.
	nestedGraph := func(depth int) []byte {
		g := fString(2, "leaf")
		for i := range depth {
			attr := cat(fString(1, "then_branch"), fVarint(20, uint64(AttrGraph)), fBytes(6, g), fBytes(6, fString(2, fmt.Sprintf("level%d", i))))
			g = cat(fBytes(1, cat(fString(4, "If"), fBytes(5, attr))), fString(2, "unnamed"))
		}
		return modelWithGraph(g)
	}
	var manyGraphs, manyTypes []byte
	for range 20000 {
		manyGraphs = append(manyGraphs, fBytes(7, nil)...)
		manyTypes = append(manyTypes, fBytes(2, fBytes(1, fBytes(2, fBytes(1, nil))))...)
	}
	manyTypes = modelWithGraph(cat(fString(2, "main"), fBytes(11, cat(fString(1, "x"), manyTypes))))

	for _, test := range []struct {
		name string
		buf  []byte
		want string // "" must decode
	}{
		{"split types within the depth limit", nestedType(maxNesting - 3), ""},
		{"split types too deep", nestedType(maxNesting + 3), "nested more than"},
		{"split graphs within the depth limit", nestedGraph(maxNesting - 2), ""},
		{"split graphs too deep", nestedGraph(maxNesting + 3), "nested more than"},
		{"20000 empty graph fields", cat(modelWithGraph(), manyGraphs), ""},
		{"20000 type fields", manyTypes, ""},
		{"error names the graph by its last name", modelWithGraph(cat(fString(2, "first"), fBytes(1, fVarint(1, 1))), fString(2, "second")), `graph "second": node 0`},
	} {
		err := decodeChecked(t, test.name, test.buf, "")
		switch {
		case test.want == "" && err != nil:
			t.Errorf("%s: %v", test.name, err)
		case test.want != "" && (err == nil || !strings.Contains(err.Error(), test.want) || !errors.Is(err, ErrMalformed)):
			t.Errorf("%s: got %v, want a malformed error containing %q", test.name, err, test.want)
		}
	}
	m, err := Decode(manyTypes, "")
	if err != nil {
		t.Fatal(err)
	}
	if shape := m.Graph.Inputs[0].Type.Shape; len(shape) != 20000 {
		t.Errorf("20000 type fields of one dimension each: shape of rank %d, want 20000", len(shape))
	}
}

// TestMergedValueFiles: OptionalProto's value fields and MapProto.values
// are singular messages too.
func TestMergedValueFiles(t *testing.T) {
	a := tensorMsg("a", []int64{2}, float32Raw(2))
	for _, test := range []struct {
		name         string
		kind         TypeKind
		split, whole []byte
	}{
		{"optional tensor_value split", TypeOptional,
			cat(fString(1, "o"), fVarint(2, elemTensor), fBytes(3, cat(fBytes(1, []byte{2}), fVarint(2, uint64(Float)))), fBytes(3, cat(fString(8, "a"), float32Raw(2)))),
			cat(fString(1, "o"), fVarint(2, elemTensor), fBytes(3, a))},
		{"map values split", TypeMap,
			cat(fVarint(2, uint64(Int64)), fBytes(3, []byte{1, 2}), fBytes(5, seqMsg("", elemTensor, a)), fBytes(5, fBytes(3, a))),
			cat(fVarint(2, uint64(Int64)), fBytes(3, []byte{1, 2}), fBytes(5, seqMsg("", elemTensor, a, a)))},
	} {
		split, err := DecodeValue(test.split, test.kind)
		if err != nil {
			t.Errorf("%s: %v", test.name, err)
			continue
		}
		whole, err := DecodeValue(test.whole, test.kind)
		if err != nil {
			t.Fatalf("%s: the merged message does not decode: %v", test.name, err)
		}
		if d := diff(whole, split); d != "" {
			t.Errorf("%s: the split message decodes unlike the merged one, at %s", test.name, d)
		}
	}
}

// opsetModel builds a model with an empty graph, the given opset imports
// and the fields in more (functions).
func opsetModel(imports []OpsetID, more ...[]byte) []byte {
	parts := [][]byte{fVarint(1, 8), fBytes(7, cat(fString(2, "main")))}
	for _, op := range imports {
		parts = append(parts, fBytes(8, opsetMsg(op)))
	}
	return cat(append(parts, more...)...)
}

func opsetMsg(op OpsetID) []byte { return cat(fString(1, op.Domain), fVarint(2, uint64(op.Version))) }

// TestDuplicateOpsetImports: a domain imported at two versions (onnx's
// shape inference takes the last, Model.Opset the first) is refused, with
// both versions named; an exact repeat is accepted. "" and "ai.onnx" are
// one domain.
func TestDuplicateOpsetImports(t *testing.T) {
	function := func(imports ...OpsetID) []byte {
		fn := cat(fString(1, "MyFn"), fString(10, "my.domain"))
		for _, op := range imports {
			fn = cat(fn, fBytes(9, opsetMsg(op)))
		}
		return fBytes(25, fn)
	}
	for _, test := range []struct {
		name    string
		buf     []byte
		want    []string // nil: must decode
		version int64    // what Opset("") returns when it decodes
	}{
		{"11 then 13", opsetModel([]OpsetID{{"", 11}, {"", 13}}), []string{"opset_import 1", "default domain", "version 13", "version 11"}, 0},
		{"13 then 11", opsetModel([]OpsetID{{"", 13}, {"", 11}}), []string{"version 11", "opset_import 0", "version 13"}, 0},
		{"\"\" and ai.onnx", opsetModel([]OpsetID{{"", 13}, {"ai.onnx.ml", 3}, {"ai.onnx", 14}}), []string{"opset_import 2", "version 14", "version 13"}, 0},
		{"custom domain", opsetModel([]OpsetID{{"", 13}, {"com.example", 1}, {"com.example", 2}}), []string{`domain "com.example"`, "version 2", "version 1"}, 0},
		{"exact repeat", opsetModel([]OpsetID{{"", 13}, {"", 13}}), nil, 13},
		{"\"\" and ai.onnx, same version", opsetModel([]OpsetID{{"ai.onnx", 13}, {"", 13}}), nil, 13},
		{"distinct domains", opsetModel([]OpsetID{{"", 13}, {"ai.onnx.ml", 2}, {"com.example", 1}}), nil, 13},
		{"function imports 11 then 13", opsetModel([]OpsetID{{"", 13}}, function(OpsetID{"", 11}, OpsetID{"ai.onnx", 13})), []string{`model-local function 0 "MyFn"`, "version 13", "version 11"}, 0},
		{"function repeats an import", opsetModel([]OpsetID{{"", 13}}, function(OpsetID{"", 13}, OpsetID{"", 13})), nil, 13},
	} {
		err := decodeChecked(t, test.name, test.buf, "")
		if test.want == nil {
			if err != nil {
				t.Errorf("%s: %v", test.name, err)
				continue
			}
			m, _ := Decode(test.buf, "")
			if got := m.Opset("ai.onnx"); got != test.version {
				t.Errorf("%s: Opset = %d, want %d", test.name, got, test.version)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want a malformed error", test.name, err)
			continue
		}
		for _, w := range test.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", test.name, err, w)
			}
		}
	}
}

// TestSparseInitializerNamed: the refusal names the sparse initializer
// (the name of its values tensor) and its graph.
func TestSparseInitializerNamed(t *testing.T) {
	values := tensorMsg("S", []int64{1}, float32Raw(1))
	indices := cat(fBytes(1, []byte{1}), fVarint(2, uint64(Int64)), fBytes(9, make([]byte, 8)))
	sparse := cat(fBytes(1, values), fBytes(2, indices), fBytes(3, []byte{4}))
	err := decodeChecked(t, "sparse initializer", modelMsg(fBytes(15, sparse)), "")
	want := `graph "main": sparse initializer "S": not supported`
	if err == nil || !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want an error containing %q", err, want)
	}
}
