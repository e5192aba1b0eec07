package onnx

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// decoder holds what decoding one model or tensor file needs besides the
// bytes: the buffer every view comes from, the directory external data is
// resolved against ("" = external data refused), the external files opened
// so far, and the current nesting depth.
type decoder struct {
	base  []byte
	dir   string
	ext   *externalFiles
	depth int
}

// reader walks the fields of the message encoded in parts: one part for a
// message written once, every occurrence for a merged field (mergedField).
func (d *decoder) reader(parts ...[]byte) *reader {
	r := &reader{base: d.base}
	if len(parts) > 0 {
		r.b, r.more = parts[0], parts[1:]
	}
	return r
}

// Decode decodes a ModelProto from buf. Tensor.Raw of in-file tensors are
// views of buf (buf must stay unmodified while the model is used), and
// RawOffset is their offset in buf. External data is resolved against dir;
// with dir == "" a model that uses external data is an error. External
// files may be mapped into memory: call Close on the model when done.
func Decode(buf []byte, dir string) (*Model, error) {
	m, err := decodeModelBuffer(buf, dir)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	return m, nil
}

func decodeModelBuffer(buf []byte, dir string) (*Model, error) {
	d := &decoder{base: buf, dir: dir, ext: newExternalFiles(dir)}
	m, err := d.model(buf)
	if err != nil {
		d.ext.release()
		return nil, err
	}
	m.Dir = dir
	m.buf = buf
	m.resources = append(m.resources, d.ext.releases...)
	m.mapped = append(m.mapped, d.ext.mapped...)
	return m, nil
}

func (d *decoder) model(msg []byte) (*Model, error) {
	m := &Model{}
	r := d.reader(msg)
	var graph mergedField
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		switch f.num {
		case 1:
			m.IRVersion, err = f.int64("ir_version")
		case 8:
			var b []byte
			if b, err = f.bytes("opset_import"); err == nil {
				var op OpsetID
				op, err = d.opsetID(b)
				m.OpsetImports = append(m.OpsetImports, op)
				if err != nil {
					err = fmt.Errorf("opset_import %d: %w", len(m.OpsetImports)-1, err)
				}
			}
		case 2:
			m.ProducerName, err = f.str("producer_name")
		case 3:
			m.ProducerVersion, err = f.str("producer_version")
		case 4:
			m.Domain, err = f.str("domain")
		case 5:
			m.ModelVersion, err = f.int64("model_version")
		case 6:
			m.DocString, err = f.str("doc_string")
		case 7:
			err = graph.add(f, "graph")
		case 14:
			var p StringPair
			if p, err = d.stringPair(f, "metadata_props"); err == nil {
				m.MetadataProps = append(m.MetadataProps, p)
			}
		case 25:
			var b []byte
			if b, err = f.bytes("functions"); err == nil {
				var fn *Function
				if fn, err = d.function(b); err != nil {
					err = fmt.Errorf("model-local function %d %q: %w", len(m.Functions), peekString(1, b), err)
				}
				m.Functions = append(m.Functions, fn)
			}
		}
		// Other fields (training_info, configuration, fields newer than
		// onnx.proto v1.22.0) do not change what the graph computes and
		// are skipped.
		if err != nil {
			return nil, err
		}
	}
	if err := checkOpsetImports(m.OpsetImports); err != nil {
		return nil, err
	}
	if !graph.present() {
		return nil, fmt.Errorf("%w: model has no graph", ErrMalformed)
	}
	var err error
	if m.Graph, err = d.graph(graph...); err != nil {
		return nil, err
	}
	return m, nil
}

func (d *decoder) function(msg []byte) (*Function, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	fn := &Function{}
	r := d.reader(msg)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		var b []byte
		var s string
		switch f.num {
		case 1:
			fn.Name, err = f.str("name")
		case 4:
			if s, err = f.str("input"); err == nil {
				fn.Inputs = append(fn.Inputs, s)
			}
		case 5:
			if s, err = f.str("output"); err == nil {
				fn.Outputs = append(fn.Outputs, s)
			}
		case 6:
			if s, err = f.str("attribute"); err == nil {
				fn.Attributes = append(fn.Attributes, s)
			}
		case 11:
			if b, err = f.bytes("attribute_proto"); err == nil {
				var a *Attribute
				if a, err = d.attribute(b); err != nil {
					return nil, fmt.Errorf("attribute %q: %w", peekString(1, b), err)
				}
				fn.AttributeDefaults = append(fn.AttributeDefaults, a)
			}
		case 7:
			if b, err = f.bytes("node"); err == nil {
				var n *Node
				if n, err = d.node(b); err != nil {
					return nil, fmt.Errorf("node %d %q: %w", len(fn.Nodes), peekString(3, b), err)
				}
				fn.Nodes = append(fn.Nodes, n)
			}
		case 8:
			fn.DocString, err = f.str("doc_string")
		case 9:
			if b, err = f.bytes("opset_import"); err == nil {
				var op OpsetID
				op, err = d.opsetID(b)
				fn.OpsetImports = append(fn.OpsetImports, op)
			}
		case 10:
			fn.Domain, err = f.str("domain")
		case 13:
			fn.Overload, err = f.str("overload")
		}
		// value_info and metadata_props are skipped.
		if err != nil {
			return nil, err
		}
	}
	if err := checkOpsetImports(fn.OpsetImports); err != nil {
		return nil, err
	}
	return fn, nil
}

func (d *decoder) opsetID(msg []byte) (OpsetID, error) {
	var op OpsetID
	r := d.reader(msg)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return op, err
		}
		switch f.num {
		case 1:
			op.Domain, err = f.str("domain")
		case 2:
			op.Version, err = f.int64("version")
		}
		if err != nil {
			return op, err
		}
	}
	return op, nil
}

func (d *decoder) stringPair(f field, what string) (StringPair, error) {
	var p StringPair
	msg, err := f.bytes(what)
	if err != nil {
		return p, err
	}
	r := d.reader(msg)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return p, fmt.Errorf("%s: %w", what, err)
		}
		switch f.num {
		case 1:
			p.Key, err = f.str("key")
		case 2:
			p.Value, err = f.str("value")
		}
		if err != nil {
			return p, fmt.Errorf("%s: %w", what, err)
		}
	}
	return p, nil
}

func (d *decoder) enter() error {
	d.depth++
	if d.depth > maxNesting {
		return fmt.Errorf("%w: graphs or types nested more than %d deep", ErrMalformed, maxNesting)
	}
	return nil
}

// graph decodes a GraphProto written in parts (one, or every occurrence of
// a merged field).
func (d *decoder) graph(parts ...[]byte) (*Graph, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	g := &Graph{}
	if err := d.graphFields(g, parts); err != nil {
		// The name is field 2, after the nodes: peek it for the message.
		return nil, fmt.Errorf("graph %q: %w", peekString(2, parts...), err)
	}
	return g, nil
}

func (d *decoder) graphFields(g *Graph, parts [][]byte) error {
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return err
		}
		var b []byte
		switch f.num {
		case 1:
			if b, err = f.bytes("node"); err == nil {
				var n *Node
				if n, err = d.node(b); err != nil {
					return fmt.Errorf("node %d %q: %w", len(g.Nodes), peekString(3, b), err)
				}
				g.Nodes = append(g.Nodes, n)
			}
		case 2:
			g.Name, err = f.str("name")
		case 5:
			if b, err = f.bytes("initializer"); err == nil {
				var t *Tensor
				if t, err = d.tensor(b); err != nil {
					return fmt.Errorf("initializer %d %q: %w", len(g.Initializers), peekString(8, b), err)
				}
				g.Initializers = append(g.Initializers, t)
			}
		case 15:
			if b, err = f.bytes("sparse_initializer"); err == nil {
				err = fmt.Errorf("sparse initializer %q: %w", sparseTensorName(b), ErrNotSupported)
			}
		case 10:
			g.DocString, err = f.str("doc_string")
		case 11, 12, 13:
			what := map[protowire.Number]string{11: "input", 12: "output", 13: "value_info"}[f.num]
			if b, err = f.bytes(what); err == nil {
				var vi *ValueInfo
				if vi, err = d.valueInfo(b); err != nil {
					return fmt.Errorf("%s %q: %w", what, peekString(1, b), err)
				}
				switch f.num {
				case 11:
					g.Inputs = append(g.Inputs, vi)
				case 12:
					g.Outputs = append(g.Outputs, vi)
				default:
					g.ValueInfo = append(g.ValueInfo, vi)
				}
			}
		}
		// quantization_annotation and metadata_props are skipped.
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) node(msg []byte) (*Node, error) {
	n := &Node{}
	r := d.reader(msg)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		var s string
		switch f.num {
		case 1:
			if s, err = f.str("input"); err == nil {
				n.Inputs = append(n.Inputs, s)
			}
		case 2:
			if s, err = f.str("output"); err == nil {
				n.Outputs = append(n.Outputs, s)
			}
		case 3:
			n.Name, err = f.str("name")
		case 4:
			n.OpType, err = f.str("op_type")
		case 7:
			n.Domain, err = f.str("domain")
		case 5:
			var b []byte
			if b, err = f.bytes("attribute"); err == nil {
				var a *Attribute
				if a, err = d.attribute(b); err != nil {
					return nil, fmt.Errorf("attribute %q: %w", peekString(1, b), err)
				}
				n.Attributes = append(n.Attributes, a)
			}
		case 6:
			n.DocString, err = f.str("doc_string")
		}
		// overload (function overloads), metadata_props and
		// device_configurations are skipped.
		if err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (d *decoder) attribute(msg []byte) (*Attribute, error) {
	a := &Attribute{}
	var tField, gField, sparseField, tpField mergedField
	r := d.reader(msg)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		var b []byte
		switch f.num {
		case 1:
			a.Name, err = f.str("name")
		case 21:
			a.RefAttrName, err = f.str("ref_attr_name")
		case 13:
			a.DocString, err = f.str("doc_string")
		case 20:
			var v int32
			v, err = f.int32("type")
			a.Type = AttributeType(v)
		case 2:
			a.F, err = f.float32("f")
		case 3:
			a.I, err = f.int64("i")
		case 4:
			a.S, err = f.copyBytes("s")
		case 5:
			err = tField.add(f, "t")
		case 6:
			err = gField.add(f, "g")
		case 22:
			err = sparseField.add(f, "sparse_tensor")
		case 14:
			err = tpField.add(f, "tp")
		case 7:
			a.Floats, err = appendFloat32s(a.Floats, f, "floats")
		case 8:
			a.Ints, err = appendVarints(a.Ints, f, "ints")
		case 9:
			if b, err = f.copyBytes("strings"); err == nil {
				a.Strings = append(a.Strings, b)
			}
		case 10:
			if b, err = f.bytes("tensors"); err == nil {
				var t *Tensor
				if t, err = d.tensor(b); err == nil {
					a.Tensors = append(a.Tensors, t)
				} else {
					err = fmt.Errorf("tensors[%d]: %w", len(a.Tensors), err)
				}
			}
		case 11:
			if b, err = f.bytes("graphs"); err == nil {
				var g *Graph
				if g, err = d.graph(b); err == nil {
					a.Graphs = append(a.Graphs, g)
				} else {
					err = fmt.Errorf("graphs[%d]: %w", len(a.Graphs), err)
				}
			}
		case 23:
			if b, err = f.bytes("sparse_tensors"); err == nil {
				var s *SparseTensor
				if s, err = d.sparseTensor(b); err == nil {
					a.SparseTensors = append(a.SparseTensors, s)
				} else {
					err = fmt.Errorf("sparse_tensors[%d]: %w", len(a.SparseTensors), err)
				}
			}
		case 15:
			if b, err = f.bytes("type_protos"); err == nil {
				var t *Type
				if t, err = d.typeProto(b); err == nil {
					a.TPs = append(a.TPs, t)
				} else {
					err = fmt.Errorf("type_protos[%d]: %w", len(a.TPs), err)
				}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	var err error
	if tField.present() {
		if a.T, err = d.tensor(tField...); err != nil {
			return nil, err
		}
	}
	if gField.present() {
		if a.G, err = d.graph(gField...); err != nil {
			return nil, err
		}
	}
	if sparseField.present() {
		if a.Sparse, err = d.sparseTensor(sparseField...); err != nil {
			return nil, err
		}
	}
	if tpField.present() {
		if a.TP, err = d.typeProto(tpField...); err != nil {
			return nil, err
		}
	}
	if a.Type < AttrUndefined || a.Type > AttrTypeProtos {
		return nil, fmt.Errorf("%w: unknown attribute type %d", ErrMalformed, a.Type)
	}
	return a, nil
}

// sparseTensor decodes a SparseTensorProto written in parts.
func (d *decoder) sparseTensor(parts ...[]byte) (*SparseTensor, error) {
	s := &SparseTensor{}
	var values, indices mergedField
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		switch f.num {
		case 1:
			err = values.add(f, "values")
		case 2:
			err = indices.add(f, "indices")
		case 3:
			s.Dims, err = appendVarints(s.Dims, f, "dims")
		}
		if err != nil {
			return nil, err
		}
	}
	var err error
	if values.present() {
		if s.Values, err = d.tensor(values...); err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
	}
	if indices.present() {
		if s.Indices, err = d.tensor(indices...); err != nil {
			return nil, fmt.Errorf("indices: %w", err)
		}
	}
	return s, nil
}

// sparseTensorName is the name of the SparseTensorProto msg, which is the
// name of its values tensor (the values fields merged); "" when it has
// none. It only names the tensor in messages, so it does not decode msg.
func sparseTensorName(msg []byte) string {
	var values [][]byte
	r := &reader{b: msg, base: msg}
	for !r.done() {
		f, err := r.next()
		if err != nil {
			break
		}
		if f.num == 1 && f.typ == protowire.BytesType {
			values = append(values, f.b)
		}
	}
	return peekString(8, values...)
}

func (d *decoder) valueInfo(msg []byte) (*ValueInfo, error) {
	vi := &ValueInfo{}
	var typ mergedField
	r := d.reader(msg)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		switch f.num {
		case 1:
			vi.Name, err = f.str("name")
		case 2:
			err = typ.add(f, "type")
		case 3:
			vi.DocString, err = f.str("doc_string")
		}
		if err != nil {
			return nil, err
		}
	}
	if typ.present() {
		var err error
		if vi.Type, err = d.typeProto(typ...); err != nil {
			return nil, err
		}
	}
	return vi, nil
}

// typeValueFields are the members of TypeProto's oneof value: the kind each
// declares and its name. opaque_type (ONNX-ML) has no kind dstune reads.
var typeValueFields = map[protowire.Number]struct {
	kind TypeKind
	name string
}{
	1: {TypeTensor, "tensor_type"},
	4: {TypeSequence, "sequence_type"},
	5: {TypeMap, "map_type"},
	7: {TypeUnknown, "opaque_type"},
	8: {TypeSparseTensor, "sparse_tensor_type"},
	9: {TypeOptional, "optional_type"},
}

// typeProto decodes a TypeProto written in parts.
func (d *decoder) typeProto(parts ...[]byte) (*Type, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	t := &Type{}
	// The value oneof: occurrences of one member merge, a different member
	// replaces what was set before (as protobuf clears the other members
	// of a oneof).
	var valueNum protowire.Number
	var value mergedField
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		if member, ok := typeValueFields[f.num]; ok {
			if f.num != valueNum {
				valueNum, value = f.num, nil
			}
			err = value.add(f, member.name)
		} else if f.num == 6 {
			t.Denotation, err = f.str("denotation")
		}
		if err != nil {
			return nil, err
		}
	}
	if !value.present() {
		return t, nil
	}
	member := typeValueFields[valueNum]
	t.Kind = member.kind
	var err error
	switch member.kind {
	case TypeTensor, TypeSparseTensor:
		err = d.tensorType(t, value)
	case TypeSequence, TypeOptional:
		t.Elem, err = d.elemType(value)
	case TypeMap:
		err = d.mapType(t, value)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", member.name, err)
	}
	return t, nil
}

// elemType reads the element type (field 1) of a TypeProto.Sequence or
// TypeProto.Optional written in parts.
func (d *decoder) elemType(parts [][]byte) (*Type, error) {
	var elem mergedField
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		if f.num == 1 {
			if err = elem.add(f, "elem_type"); err != nil {
				return nil, err
			}
		}
	}
	if !elem.present() {
		return nil, nil
	}
	return d.typeProto(elem...)
}

// mapType reads a TypeProto.Map written in parts into t.
func (d *decoder) mapType(t *Type, parts [][]byte) error {
	var valueType mergedField
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return err
		}
		switch f.num {
		case 1:
			var v int32
			v, err = f.int32("key_type")
			t.KeyType = DataType(v)
		case 2:
			err = valueType.add(f, "value_type")
		}
		if err != nil {
			return err
		}
	}
	if valueType.present() {
		var err error
		t.Elem, err = d.typeProto(valueType...)
		return err
	}
	return nil
}

// tensorType reads a TypeProto.Tensor or TypeProto.SparseTensor written in
// parts into t.
func (d *decoder) tensorType(t *Type, parts [][]byte) error {
	var shape mergedField
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return err
		}
		switch f.num {
		case 1:
			var v int32
			v, err = f.int32("elem_type")
			t.ElemType = DataType(v)
		case 2:
			err = shape.add(f, "shape")
		}
		if err != nil {
			return err
		}
	}
	if shape.present() {
		t.HasShape = true
		var err error
		t.Shape, err = d.shape(shape)
		return err
	}
	return nil
}

// shape reads a TensorShapeProto written in parts: the dimensions of all
// parts, in order.
func (d *decoder) shape(parts [][]byte) ([]Dim, error) {
	var dims []Dim
	r := d.reader(parts...)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return nil, err
		}
		if f.num != 1 {
			continue
		}
		b, err := f.bytes("dim")
		if err != nil {
			return nil, err
		}
		dim, err := d.dim(b)
		if err != nil {
			return nil, fmt.Errorf("shape dimension %d: %w", len(dims), err)
		}
		dims = append(dims, dim)
	}
	return dims, nil
}

func (d *decoder) dim(msg []byte) (Dim, error) {
	var dim Dim
	r := d.reader(msg)
	for !r.done() {
		f, err := r.next()
		if err != nil {
			return dim, err
		}
		switch f.num {
		case 1:
			dim.Value, err = f.int64("dim_value")
			dim.HasValue = true
			dim.Param = ""
		case 2:
			dim.Param, err = f.str("dim_param")
			dim.Value, dim.HasValue = 0, false
		case 3:
			dim.Denotation, err = f.str("denotation")
		}
		if err != nil {
			return dim, err
		}
	}
	return dim, nil
}
