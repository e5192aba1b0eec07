package onnx

import (
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// maxModelSize is the largest serialized ModelProto protobuf
// implementations accept (2 GiB − 1); tests lower it.
var maxModelSize int64 = math.MaxInt32

// Encode serializes m as a ModelProto, fields in field-number order,
// repeated scalars packed. Tensors keep their representation: Raw as
// raw_data, typed fields as typed fields, and tensors with External set as
// references to their external file (location, offset, length; their
// bytes are not written). The result must stay under protobuf's 2 GiB
// limit; WriteFile can move large tensors to an external-data file.
func Encode(m *Model) ([]byte, error) {
	return encodeModel(m, nil)
}

// encodeModel encodes m; place overrides where a tensor's values go
// (an ExternalData reference, or nil for inline raw_data).
func encodeModel(m *Model, place map[*Tensor]*ExternalData) ([]byte, error) {
	if m.Graph == nil {
		return nil, fmt.Errorf("onnx: encode: model has no graph")
	}
	e := &encoder{place: place}
	counter := &writer{counting: true, enc: e}
	counter.model(m)
	if counter.err != nil {
		return nil, fmt.Errorf("onnx: encode: %w", counter.err)
	}
	if int64(counter.n) > maxModelSize {
		return nil, fmt.Errorf("onnx: encode: model is %d bytes, over protobuf's %d-byte limit: write it with external data (WriteOptions)", counter.n, maxModelSize)
	}
	w := &writer{buf: make([]byte, 0, counter.n), enc: e}
	w.model(m)
	if w.err != nil {
		return nil, fmt.Errorf("onnx: encode: %w", w.err)
	}
	return w.buf, nil
}

type encoder struct {
	place map[*Tensor]*ExternalData
}

// writer appends protobuf fields to buf, or in counting mode only adds up
// their size in n. Nested messages are counted first so that their length
// prefix can be written before them, without a temporary copy.
type writer struct {
	buf      []byte
	n        int
	counting bool
	enc      *encoder
	err      error
}

func (w *writer) tag(num protowire.Number, typ protowire.Type) {
	if w.counting {
		w.n += protowire.SizeTag(num)
		return
	}
	w.buf = protowire.AppendTag(w.buf, num, typ)
}

func (w *writer) rawVarint(v uint64) {
	if w.counting {
		w.n += protowire.SizeVarint(v)
		return
	}
	w.buf = protowire.AppendVarint(w.buf, v)
}

func (w *writer) varint(num protowire.Number, v uint64) {
	w.tag(num, protowire.VarintType)
	w.rawVarint(v)
}

func (w *writer) int64(num protowire.Number, v int64) { w.varint(num, uint64(v)) }

func (w *writer) bytes(num protowire.Number, b []byte) {
	w.tag(num, protowire.BytesType)
	w.rawVarint(uint64(len(b)))
	if w.counting {
		w.n += len(b)
		return
	}
	w.buf = append(w.buf, b...)
}

func (w *writer) string(num protowire.Number, s string) {
	w.tag(num, protowire.BytesType)
	w.rawVarint(uint64(len(s)))
	if w.counting {
		w.n += len(s)
		return
	}
	w.buf = append(w.buf, s...)
}

func (w *writer) optString(num protowire.Number, s string) {
	if s != "" {
		w.string(num, s)
	}
}

func (w *writer) fixed32(num protowire.Number, v uint32) {
	w.tag(num, protowire.Fixed32Type)
	if w.counting {
		w.n += 4
		return
	}
	w.buf = protowire.AppendFixed32(w.buf, v)
}

// message writes a length-delimited sub-message produced by body.
func (w *writer) message(num protowire.Number, body func(*writer)) {
	sub := &writer{counting: true, enc: w.enc}
	body(sub)
	if sub.err != nil && w.err == nil {
		w.err = sub.err
	}
	w.tag(num, protowire.BytesType)
	w.rawVarint(uint64(sub.n))
	if w.counting {
		w.n += sub.n
		return
	}
	start := len(w.buf)
	body(w)
	if !w.counting && w.err == nil && len(w.buf)-start != sub.n {
		w.err = fmt.Errorf("internal error: message %d measured %d bytes, wrote %d", num, sub.n, len(w.buf)-start)
	}
}

func packedVarints[T int64 | uint64 | int32](w *writer, num protowire.Number, vs []T) {
	if len(vs) == 0 {
		return
	}
	size := 0
	for _, v := range vs {
		size += protowire.SizeVarint(uint64(v))
	}
	w.tag(num, protowire.BytesType)
	w.rawVarint(uint64(size))
	if w.counting {
		w.n += size
		return
	}
	for _, v := range vs {
		w.buf = protowire.AppendVarint(w.buf, uint64(v))
	}
}

func (w *writer) packedFloat32s(num protowire.Number, vs []float32) {
	if len(vs) == 0 {
		return
	}
	w.tag(num, protowire.BytesType)
	w.rawVarint(uint64(4 * len(vs)))
	if w.counting {
		w.n += 4 * len(vs)
		return
	}
	for _, v := range vs {
		w.buf = protowire.AppendFixed32(w.buf, math.Float32bits(v))
	}
}

func (w *writer) packedFloat64s(num protowire.Number, vs []float64) {
	if len(vs) == 0 {
		return
	}
	w.tag(num, protowire.BytesType)
	w.rawVarint(uint64(8 * len(vs)))
	if w.counting {
		w.n += 8 * len(vs)
		return
	}
	for _, v := range vs {
		w.buf = protowire.AppendFixed64(w.buf, math.Float64bits(v))
	}
}

func (w *writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *writer) model(m *Model) {
	w.int64(1, m.IRVersion)
	w.optString(2, m.ProducerName)
	w.optString(3, m.ProducerVersion)
	w.optString(4, m.Domain)
	if m.ModelVersion != 0 {
		w.int64(5, m.ModelVersion)
	}
	w.optString(6, m.DocString)
	w.message(7, func(w *writer) { w.graph(m.Graph) })
	for _, op := range m.OpsetImports {
		w.message(8, func(w *writer) {
			w.optString(1, op.Domain)
			w.int64(2, op.Version)
		})
	}
	for _, p := range m.MetadataProps {
		w.stringPair(14, p)
	}
	for _, f := range m.Functions {
		w.message(25, func(w *writer) { w.function(f) })
	}
}

func (w *writer) function(f *Function) {
	w.optString(1, f.Name)
	for _, s := range f.Inputs {
		w.string(4, s)
	}
	for _, s := range f.Outputs {
		w.string(5, s)
	}
	for _, s := range f.Attributes {
		w.string(6, s)
	}
	for _, n := range f.Nodes {
		w.message(7, func(w *writer) { w.node(n) })
	}
	w.optString(8, f.DocString)
	for _, op := range f.OpsetImports {
		w.message(9, func(w *writer) {
			w.optString(1, op.Domain)
			w.int64(2, op.Version)
		})
	}
	w.optString(10, f.Domain)
	for _, a := range f.AttributeDefaults {
		w.message(11, func(w *writer) { w.attribute(a) })
	}
	w.optString(13, f.Overload)
}

func (w *writer) stringPair(num protowire.Number, p StringPair) {
	w.message(num, func(w *writer) {
		w.optString(1, p.Key)
		w.optString(2, p.Value)
	})
}

func (w *writer) graph(g *Graph) {
	if g == nil {
		w.fail(fmt.Errorf("nil graph"))
		return
	}
	for i, n := range g.Nodes {
		if n == nil {
			w.fail(fmt.Errorf("graph %q: node %d is nil", g.Name, i))
			continue
		}
		w.message(1, func(w *writer) { w.node(n) })
	}
	w.optString(2, g.Name)
	for _, t := range g.Initializers {
		w.message(5, func(w *writer) { w.tensor(t) })
	}
	w.optString(10, g.DocString)
	w.valueInfos(11, g.Inputs)
	w.valueInfos(12, g.Outputs)
	w.valueInfos(13, g.ValueInfo)
}

func (w *writer) valueInfos(num protowire.Number, vis []*ValueInfo) {
	for _, vi := range vis {
		w.message(num, func(w *writer) {
			w.optString(1, vi.Name)
			if vi.Type != nil {
				w.message(2, func(w *writer) { w.typeProto(vi.Type) })
			}
			w.optString(3, vi.DocString)
		})
	}
}

func (w *writer) node(n *Node) {
	for _, s := range n.Inputs {
		w.string(1, s)
	}
	for _, s := range n.Outputs {
		w.string(2, s)
	}
	w.optString(3, n.Name)
	w.optString(4, n.OpType)
	for _, a := range n.Attributes {
		w.message(5, func(w *writer) { w.attribute(a) })
	}
	w.optString(6, n.DocString)
	w.optString(7, n.Domain)
}

// attribute writes the value field Type names, and any other value field
// that is set, so that decoding gives back the same Attribute.
func (w *writer) attribute(a *Attribute) {
	w.optString(1, a.Name)
	if a.Type == AttrFloat || a.F != 0 {
		w.fixed32(2, math.Float32bits(a.F))
	}
	if a.Type == AttrInt || a.I != 0 {
		w.int64(3, a.I)
	}
	if a.Type == AttrString || a.S != nil {
		w.bytes(4, a.S)
	}
	if a.T != nil {
		w.message(5, func(w *writer) { w.tensor(a.T) })
	}
	if a.G != nil {
		w.message(6, func(w *writer) { w.graph(a.G) })
	}
	w.packedFloat32s(7, a.Floats)
	packedVarints(w, 8, a.Ints)
	for _, s := range a.Strings {
		w.bytes(9, s)
	}
	for _, t := range a.Tensors {
		w.message(10, func(w *writer) { w.tensor(t) })
	}
	for _, g := range a.Graphs {
		w.message(11, func(w *writer) { w.graph(g) })
	}
	w.optString(13, a.DocString)
	if a.TP != nil {
		w.message(14, func(w *writer) { w.typeProto(a.TP) })
	}
	for _, tp := range a.TPs {
		w.message(15, func(w *writer) { w.typeProto(tp) })
	}
	if a.Type != AttrUndefined {
		w.int64(20, int64(a.Type))
	}
	w.optString(21, a.RefAttrName)
	if a.Sparse != nil {
		w.message(22, func(w *writer) { w.sparseTensor(a.Sparse) })
	}
	for _, s := range a.SparseTensors {
		w.message(23, func(w *writer) { w.sparseTensor(s) })
	}
}

func (w *writer) sparseTensor(s *SparseTensor) {
	if s.Values != nil {
		w.message(1, func(w *writer) { w.tensor(s.Values) })
	}
	if s.Indices != nil {
		w.message(2, func(w *writer) { w.tensor(s.Indices) })
	}
	packedVarints(w, 3, s.Dims)
}

func (w *writer) tensor(t *Tensor) {
	if t == nil {
		w.fail(fmt.Errorf("nil tensor"))
		return
	}
	ext := t.External
	inlineRaw := t.Raw != nil && ext == nil
	if place, ok := w.enc.place[t]; ok {
		ext = place
		inlineRaw = place == nil
	}
	var raw []byte
	if inlineRaw && t.Raw == nil {
		var err error
		if raw, err = t.Bytes(); err != nil {
			w.fail(err)
		}
	} else if inlineRaw {
		raw = t.Raw
	}
	packedVarints(w, 1, t.Dims)
	w.int64(2, int64(t.DataType))
	if !inlineRaw && ext == nil {
		w.packedFloat32s(4, t.FloatData)
		packedVarints(w, 5, t.Int32Data)
		for _, s := range t.StringData {
			w.bytes(6, s)
		}
		packedVarints(w, 7, t.Int64Data)
	}
	w.optString(8, t.Name)
	if inlineRaw {
		w.bytes(9, raw)
	}
	if !inlineRaw && ext == nil {
		w.packedFloat64s(10, t.DoubleData)
		packedVarints(w, 11, t.Uint64Data)
	}
	w.optString(12, t.DocString)
	if ext != nil {
		w.stringPair(13, StringPair{"location", ext.Location})
		if ext.Offset != 0 {
			w.stringPair(13, StringPair{"offset", strconv.FormatInt(ext.Offset, 10)})
		}
		if ext.Length != 0 {
			w.stringPair(13, StringPair{"length", strconv.FormatInt(ext.Length, 10)})
		}
		if ext.Checksum != "" {
			w.stringPair(13, StringPair{"checksum", ext.Checksum})
		}
		w.int64(14, dataLocationExternal)
	}
}

func (w *writer) typeProto(t *Type) {
	switch t.Kind {
	case TypeTensor, TypeSparseTensor:
		num := protowire.Number(1)
		if t.Kind == TypeSparseTensor {
			num = 8
		}
		w.message(num, func(w *writer) {
			if t.ElemType != Undefined {
				w.int64(1, int64(t.ElemType))
			}
			if t.HasShape || len(t.Shape) > 0 {
				w.message(2, func(w *writer) {
					for _, d := range t.Shape {
						w.message(1, func(w *writer) {
							if d.HasValue {
								w.int64(1, d.Value)
							}
							w.optString(2, d.Param)
							w.optString(3, d.Denotation)
						})
					}
				})
			}
		})
	case TypeSequence, TypeOptional:
		num := protowire.Number(4)
		if t.Kind == TypeOptional {
			num = 9
		}
		w.message(num, func(w *writer) {
			if t.Elem != nil {
				w.message(1, func(w *writer) { w.typeProto(t.Elem) })
			}
		})
	case TypeMap:
		w.message(5, func(w *writer) {
			if t.KeyType != Undefined {
				w.int64(1, int64(t.KeyType))
			}
			if t.Elem != nil {
				w.message(2, func(w *writer) { w.typeProto(t.Elem) })
			}
		})
	}
	w.optString(6, t.Denotation)
}
