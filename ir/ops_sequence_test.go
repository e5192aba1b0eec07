package ir

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

func seqInfo(name string, elem *onnx.ValueInfo) *onnx.ValueInfo {
	return &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeSequence, Elem: elem.Type}}
}

func optInfo(name string, elem *onnx.ValueInfo) *onnx.ValueInfo {
	return &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeOptional, Elem: elem.Type}}
}

func floats(v ...float32) *Tensor { return FromFloat32s(Shape{len(v)}, v) }

// sequenceModel reads sequence s: out = SequenceAt(SequenceInsert(s, x,
// at), pos) and the sequence itself with x inserted.
func sequenceModel(t *testing.T, at, pos int64) *onnx.Model {
	return buildModel(17, []*onnx.ValueInfo{seqInfo("s", valueInfo("e", onnx.Float, 2)), valueInfo("x", onnx.Float, 2)}, nil, []*onnx.Node{
		constNode(t, "at", ScalarInt64(at)),
		constNode(t, "pos", ScalarInt64(pos)),
		node("SequenceInsert", []string{"s", "x", "at"}, []string{"s2"}),
		node("SequenceAt", []string{"s2", "pos"}, []string{"out"}),
		node("Neg", []string{"out"}, []string{"neg"}),
	}, "neg", "s2")
}

// TestSequenceInputFedPerElement: a sequence input bound by types is fed
// element by element under ElementName; the sequence output comes back
// element by element and Assemble rebuilds it.
func TestSequenceInputFedPerElement(t *testing.T) {
	elems := []*Tensor{floats(1, 2), floats(3, 4)}
	x := floats(5, 6)
	for _, tc := range []struct{ at, pos int64 }{{0, 0}, {-1, 1}, {2, -1}, {1, -3}} {
		feeds := map[string]*Tensor{"x": x}
		seq := SequenceOf(TensorOf(elems[0]), TensorOf(elems[1])).Fed("s", feeds)
		if len(feeds) != 3 || feeds["s[0]"] != elems[0] || feeds["s[1]"] != elems[1] {
			t.Fatalf("Fed: feeds %v", feeds)
		}
		res, g := interpretComposite(t, sequenceModel(t, tc.at, tc.pos), Bindings{Shapes: map[string]Shape{"x": {2}}, Composites: map[string]*Datum{"s": seq}}, feeds)
		if names := fmt.Sprint(inputNames(g)); names != "[s[0] s[1] x]" {
			t.Errorf("graph inputs %s", names)
		}
		// The reference: Python-style list insertion and indexing.
		list := slices.Clone(elems)
		at := int(tc.at)
		if at < 0 {
			at += len(list)
		}
		list = slices.Insert(list, at, x)
		pos := int(tc.pos)
		if pos < 0 {
			pos += len(list)
		}
		want := list[pos]
		got := res[0].Tensor
		if got.Float32s()[0] != -want.Float32s()[0] || got.Float32s()[1] != -want.Float32s()[1] {
			t.Errorf("insert at %d, take %d: %v, want -%v", tc.at, tc.pos, got.Float32s(), want.Float32s())
		}
		if res[1].Kind != SequenceDatum || len(res[1].Elems) != 3 {
			t.Fatalf("sequence output %v", res[1])
		}
		for i, e := range res[1].Elems {
			if d := Compare(e.Tensor, list[i], 0, 0); !d.OK() {
				t.Errorf("sequence output element %d: %v, want %v", i, e.Tensor.Float32s(), list[i].Float32s())
			}
		}
	}
}

func inputNames(g *Graph) []string {
	var out []string
	for _, v := range g.Inputs {
		out = append(out, v.Name)
	}
	slices.Sort(out)
	return out
}

// TestSequenceInputByValue: bound by value, the sequence folds: no graph
// inputs for its elements, no nodes.
func TestSequenceInputByValue(t *testing.T) {
	seq := SequenceOf(TensorOf(floats(1, 2)), TensorOf(floats(3, 4)))
	res, g := interpretComposite(t, sequenceModel(t, 0, 1), Bindings{Values: map[string]*Tensor{"x": floats(5, 6)}, Composites: map[string]*Datum{"s": seq}}, nil)
	if len(g.Inputs) != 0 || len(g.Nodes) != 0 {
		t.Errorf("want everything folded:\n%v", g)
	}
	if got := res[0].Tensor.Float32s(); got[0] != -1 || got[1] != -2 {
		t.Errorf("got %v, want [-1 -2]", got)
	}
}

func TestSequenceErrors(t *testing.T) {
	m := sequenceModel(t, 5, 0)
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	seq := SequenceOf(TensorOf(floats(1, 2)))
	x := map[string]Shape{"x": {2}}
	for _, tc := range []struct {
		b    Bindings
		want string
	}{
		{Bindings{Shapes: x}, `input "s" is a sequence: bind it in Bindings.Composites`},
		{Bindings{Shapes: map[string]Shape{"x": {2}, "s": {2}}}, `bind it in Composites, not Shapes`},
		{Bindings{Shapes: x, Composites: map[string]*Datum{"s": OptionalOf(TensorOf(floats(1, 2)))}}, `input "s": got an optional, the model declares a sequence`},
		{Bindings{Shapes: x, Composites: map[string]*Datum{"s": SequenceOf(TensorOf(floats(1, 2, 3)))}}, `input "s[0]": shape [3], the model declares dimension 0 = 2`},
		{Bindings{Shapes: x, Composites: map[string]*Datum{"s": SequenceOf(TensorOf(IntsTensor(1, 2)))}}, `input "s[0]": int64, the model declares float32`},
		{Bindings{Shapes: x, Composites: map[string]*Datum{"s": seq}}, `position 5 is out of range for a sequence of 1`},
		{Bindings{Composites: map[string]*Datum{"s": seq, "x": seq}}, `input "x" is a tensor: bind it in Values or Shapes, not Composites`},
		{Bindings{Shapes: x, Composites: map[string]*Datum{"s": seq, "t": seq}}, `datum given for "t", which is not an input`},
	} {
		_, err := model.Specialize(tc.b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
	// A sequence where a tensor op wants a tensor.
	bad := buildModel(17, []*onnx.ValueInfo{seqInfo("s", valueInfo("e", onnx.Float, 2))}, nil,
		[]*onnx.Node{node("Relu", []string{"s"}, []string{"y"})}, "y")
	if _, err := interpretModelErr(bad, Bindings{Composites: map[string]*Datum{"s": seq}}); err == nil || !strings.Contains(err.Error(), `input 0 "s" is a sequence; Relu takes tensors`) {
		t.Errorf("sequence into Relu: %v", err)
	}
}

func interpretModelErr(m *onnx.Model, b Bindings) (*Graph, error) {
	model, err := NewModel(m)
	if err != nil {
		return nil, err
	}
	return model.Specialize(b)
}

// TestConcatAndSplitSequence: SplitToSequence (sizes, a scalar size with
// a shorter last piece, single slices squeezed) and ConcatFromSequence
// (concatenated, stacked) against slices of a Go array.
func TestConcatAndSplitSequence(t *testing.T) {
	x := FromFloat32s(Shape{2, 5}, []float32{0, 1, 2, 3, 4, 10, 11, 12, 13, 14})
	for _, tc := range []struct {
		split     *Tensor
		keepdims  int64
		wantSizes []int // along axis 1
		squeezed  bool
	}{
		{IntsTensor(2, 3), 1, []int{2, 3}, false},
		{ScalarInt64(2), 1, []int{2, 2, 1}, false},
		{nil, 0, []int{1, 1, 1, 1, 1}, true},
		{nil, 1, []int{1, 1, 1, 1, 1}, false},
	} {
		nodes := []*onnx.Node{}
		ins := []string{"x"}
		if tc.split != nil {
			nodes = append(nodes, constNode(t, "split", tc.split))
			ins = append(ins, "split")
		}
		nodes = append(nodes,
			node("SplitToSequence", ins, []string{"seq"}, intAttr("axis", 1), intAttr("keepdims", tc.keepdims)),
			node("SequenceLength", []string{"seq"}, []string{"len"}))
		concatAxis := int64(1)
		newAxis := int64(0)
		if tc.squeezed {
			newAxis = 1 // stack the squeezed columns back along axis 1
		}
		nodes = append(nodes, node("ConcatFromSequence", []string{"seq"}, []string{"back"}, intAttr("axis", concatAxis), intAttr("new_axis", newAxis)))
		m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 5)}, nil, nodes, "seq", "len", "back")
		res, _ := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"x": {2, 5}}}, map[string]*Tensor{"x": x})
		seq := res[0]
		if len(seq.Elems) != len(tc.wantSizes) || res[1].Tensor.Int64At(0) != int64(len(tc.wantSizes)) {
			t.Fatalf("split %v: %d pieces (length %v), want %d", tc.split, len(seq.Elems), res[1].Tensor.Int64At(0), len(tc.wantSizes))
		}
		start := 0
		for i, size := range tc.wantSizes {
			e := seq.Elems[i].Tensor
			want := Shape{2, size}
			if tc.squeezed {
				want = Shape{2}
			}
			if !e.Shape().Equal(want) {
				t.Errorf("split %v: piece %d is %v, want %v", tc.split, i, e, want)
				continue
			}
			for r := range 2 {
				for c := range size {
					if got := e.Float32s()[r*size+c]; got != x.Float32s()[r*5+start+c] {
						t.Errorf("split %v: piece %d [%d,%d] = %v", tc.split, i, r, c, got)
					}
				}
			}
			start += size
		}
		if d := Compare(res[2].Tensor, x, 0, 0); !d.OK() {
			t.Errorf("split %v: concatenated back %v, want %v", tc.split, res[2].Tensor, x.Float32s())
		}
	}
}

// TestOptional: Optional with and without a value, OptionalHasElement
// and OptionalGetElement; an optional input bound as none; getting the
// value of none is an error naming the input.
func TestOptional(t *testing.T) {
	typeAttr := &onnx.Attribute{Name: "type", Type: onnx.AttrTypeProto, TP: valueInfo("e", onnx.Float, 2).Type}
	m := buildModel(18, []*onnx.ValueInfo{optInfo("o", valueInfo("e", onnx.Float, 2)), valueInfo("x", onnx.Float, 2)}, nil, []*onnx.Node{
		node("Optional", []string{"x"}, []string{"some"}),
		node("Optional", nil, []string{"none"}, typeAttr),
		node("OptionalHasElement", []string{"some"}, []string{"has_some"}),
		node("OptionalHasElement", []string{"none"}, []string{"has_none"}),
		node("OptionalHasElement", []string{"o"}, []string{"has_o"}),
		node("OptionalGetElement", []string{"some"}, []string{"x_back"}),
	}, "has_some", "has_none", "has_o", "x_back", "none", "o")
	x := floats(1, 2)
	for _, o := range []*Datum{OptionalOf(nil), OptionalOf(TensorOf(floats(7, 8)))} {
		feeds := map[string]*Tensor{"x": x}
		res, _ := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"x": {2}}, Composites: map[string]*Datum{"o": o.Fed("o", feeds)}}, feeds)
		bools := []bool{res[0].Tensor.Bools()[0], res[1].Tensor.Bools()[0], res[2].Tensor.Bools()[0]}
		if want := []bool{true, false, len(o.Elems) == 1}; !slices.Equal(bools, want) {
			t.Errorf("optional %v: has elements %v, want %v", o, bools, want)
		}
		if d := Compare(res[3].Tensor, x, 0, 0); !d.OK() {
			t.Errorf("OptionalGetElement: %v", res[3].Tensor.Float32s())
		}
		if res[4].Kind != OptionalDatum || len(res[4].Elems) != 0 {
			t.Errorf("none output: %v", res[4])
		}
		if d := CompareData(res[5], o, 0, 0); !d.OK() {
			t.Errorf("optional passed through: %v", d)
		}
	}
	get := buildModel(18, []*onnx.ValueInfo{optInfo("o", valueInfo("e", onnx.Float, 2))}, nil, []*onnx.Node{
		node("OptionalGetElement", []string{"o"}, []string{"y"}),
	}, "y")
	if _, err := interpretModelErr(get, Bindings{Composites: map[string]*Datum{"o": OptionalOf(nil)}}); err == nil || !strings.Contains(err.Error(), `the optional input "o" holds no value`) {
		t.Errorf("OptionalGetElement of none: %v", err)
	}
}

// TestSequenceMapOverElements: SequenceMap adds a tensor to each element
// and zips two sequences, against the element-wise Go sums.
func TestSequenceMapOverElements(t *testing.T) {
	b := body([]*onnx.ValueInfo{{Name: "a"}, {Name: "b"}, {Name: "c"}}, []*onnx.Node{
		node("Add", []string{"a", "b"}, []string{"ab"}),
		node("Mul", []string{"ab", "c"}, []string{"out"}),
	}, "out")
	elem := valueInfo("e", onnx.Float, "n")
	m := buildModel(17, []*onnx.ValueInfo{seqInfo("s", elem), seqInfo("u", elem), valueInfo("c", onnx.Float, 1)}, nil, []*onnx.Node{
		node("SequenceMap", []string{"s", "u", "c"}, []string{"r"}, graphAttr("body", b)),
	}, "r")
	s := SequenceOf(TensorOf(floats(1, 2)), TensorOf(floats(3)))
	u := SequenceOf(TensorOf(floats(10, 20)), TensorOf(floats(30)))
	feeds := map[string]*Tensor{"c": floats(2)}
	res, _ := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"c": {1}}, Composites: map[string]*Datum{"s": s.Fed("s", feeds), "u": u.Fed("u", feeds)}}, feeds)
	want := SequenceOf(TensorOf(floats(22, 44)), TensorOf(floats(66)))
	if d := CompareData(res[0], want, 0, 0); !d.OK() {
		t.Errorf("SequenceMap: %v (%v)", d, res[0])
	}
}

// TestValueInputsAcrossSubgraphs: an input read by a Reshape inside an If
// branch, one deciding a sequence position, one that the Loop carries
// into its condition, and string inputs must be bound by value; an input
// only the scan body adds need not.
func TestValueInputsAcrossSubgraphs(t *testing.T) {
	thenB := body(nil, []*onnx.Node{node("Reshape", []string{"x", "shape"}, []string{"r"})}, "r")
	elseB := body(nil, []*onnx.Node{node("Identity", []string{"x"}, []string{"e"})}, "e")
	loopB := body([]*onnx.ValueInfo{valueInfo("i", onnx.Int64), valueInfo("c", onnx.Bool), valueInfo("k", onnx.Int64)}, []*onnx.Node{
		node("Less", []string{"i", "k"}, []string{"cout"}),
		node("Identity", []string{"k"}, []string{"kout"}),
		node("Add", []string{"i", "w"}, []string{"scan"}),
	}, "cout", "kout", "scan")
	m := buildModel(17, []*onnx.ValueInfo{
		valueInfo("x", onnx.Float, 6), valueInfo("shape", onnx.Int64, 2), valueInfo("cond", onnx.Bool),
		seqInfo("s", valueInfo("e", onnx.Float, 2)), valueInfo("pos", onnx.Int64),
		valueInfo("limit", onnx.Int64), valueInfo("w", onnx.Int64), valueInfo("str", onnx.String, 2),
	}, nil, []*onnx.Node{
		node("If", []string{"cond"}, []string{"y"}, graphAttr("then_branch", thenB), graphAttr("else_branch", elseB)),
		node("SequenceAt", []string{"s", "pos"}, []string{"at"}),
		constNode(t, "true", FromBools(Shape{}, []bool{true})),
		node("Loop", []string{"", "true", "limit"}, []string{"kfinal", "scans"}, graphAttr("body", loopB)),
	}, "y", "at", "kfinal", "scans")
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(model.ValueInputs()); got != "[cond limit pos shape str]" {
		t.Errorf("ValueInputs %s, want [cond limit pos shape str]", got)
	}
}
