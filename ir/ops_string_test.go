package ir

import (
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

func strs(v ...string) *Tensor { return FromStrings(Shape{len(v)}, v) }

// runStrings imports a one-node model on string input x (bound by value,
// as ValueInputs says) and returns its outputs.
func runStrings(t *testing.T, n *onnx.Node, x *Tensor, outputs ...string) []*Datum {
	t.Helper()
	dims := make([]any, len(x.Shape()))
	for i, d := range x.Shape() {
		dims[i] = d
	}
	m := buildModel(20, []*onnx.ValueInfo{valueInfo("x", onnx.String, dims...)}, nil, []*onnx.Node{n}, outputs...)
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if vi := model.ValueInputs(); !slices.Equal(vi, []string{"x"}) {
		t.Errorf("ValueInputs %v, want the string input", vi)
	}
	res, g := interpretComposite(t, m, Bindings{Values: map[string]*Tensor{"x": x}}, nil)
	if len(g.Nodes) != 0 || len(g.Outputs) != len(outputs)-countStrings(res) {
		t.Errorf("strings must fold and stay out of the graph's outputs:\n%v", g)
	}
	return res
}

func countStrings(res []*Datum) int {
	n := 0
	for _, d := range res {
		if d.Kind == TensorDatum && d.Tensor.DType() == String {
			n++
		}
	}
	return n
}

// TestStringSplit: Python's str.split semantics, row by row, padded.
func TestStringSplit(t *testing.T) {
	for _, tc := range []struct {
		in       []string
		delim    string
		maxSplit int // -1: none
		want     [][]string
	}{
		{[]string{"a,b,,c", ",x,"}, ",", -1, [][]string{{"a", "b", "", "c"}, {"", "x", ""}}},
		{[]string{"  a  b ", "", "c"}, "", -1, [][]string{{"a", "b"}, {}, {"c"}}},
		{[]string{"  a b c "}, "", 1, [][]string{{"a", "b c "}}},
		{[]string{"a::b::c"}, "::", 1, [][]string{{"a", "b::c"}}},
		{[]string{"a b"}, "", 0, [][]string{{"a b"}}},
		{[]string{"x"}, "x", -1, [][]string{{"", ""}}},
	} {
		attrs := []*onnx.Attribute{}
		if tc.delim != "" {
			attrs = append(attrs, stringAttr("delimiter", tc.delim))
		}
		if tc.maxSplit >= 0 {
			attrs = append(attrs, intAttr("maxsplit", int64(tc.maxSplit)))
		}
		res := runStrings(t, node("StringSplit", []string{"x"}, []string{"y", "z"}, attrs...), strs(tc.in...), "y", "z")
		y, z := res[0].Tensor, res[1].Tensor
		width := 0
		for _, w := range tc.want {
			width = max(width, len(w))
		}
		if !y.Shape().Equal(Shape{len(tc.in), width}) {
			t.Errorf("%q split %q: shape %v, want [%d %d]", tc.in, tc.delim, y.Shape(), len(tc.in), width)
			continue
		}
		for i, w := range tc.want {
			row := y.Strings()[i*width : (i+1)*width]
			padded := append(slices.Clone(w), make([]string, width-len(w))...)
			if !slices.Equal(row, padded) || z.Int64s()[i] != int64(len(w)) {
				t.Errorf("%q split %q max %d: row %d %q (%d), want %q", tc.in, tc.delim, tc.maxSplit, i, row, z.Int64s()[i], w)
			}
		}
	}
}

func TestStringNormalizer(t *testing.T) {
	for _, tc := range []struct {
		in        *Tensor
		action    string
		sensitive int64
		want      *Tensor
	}{
		{strs("Monday", "tuesday", "MONDAY", "x"), "UPPER", 0, strs("TUESDAY", "X")},
		{strs("Monday", "tuesday", "monday"), "LOWER", 1, strs("monday", "tuesday")},
		{FromStrings(Shape{1, 2}, []string{"monday", "MONDAY"}), "NONE", 0, FromStrings(Shape{1, 1}, []string{""})},
		{strs("monday"), "NONE", 0, strs("")},
	} {
		res := runStrings(t, node("StringNormalizer", []string{"x"}, []string{"y"}, stringAttr("case_change_action", tc.action),
			intAttr("is_case_sensitive", tc.sensitive), stringsAttr("stopwords", "monday")), tc.in, "y")
		if d := Compare(res[0].Tensor, tc.want, 0, 0); !d.OK() {
			t.Errorf("%q %s: got %q %v, want %q", tc.in.Strings(), tc.action, res[0].Tensor.Strings(), res[0].Tensor.Shape(), tc.want.Strings())
		}
	}
}

// TestRegexFullMatch: the whole string must match (RE2: alternatives are
// tried until the match covers it).
func TestRegexFullMatch(t *testing.T) {
	res := runStrings(t, node("RegexFullMatch", []string{"x"}, []string{"y"}, stringAttr("pattern", `a|ab|[0-9]+`)), strs("ab", "a", "abc", "123", "x123", ""), "y")
	if got, want := res[0].Tensor.Bools(), []bool{true, true, false, true, false, false}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	bad := node("RegexFullMatch", []string{"x"}, []string{"y"}, stringAttr("pattern", `(`))
	m := buildModel(20, []*onnx.ValueInfo{valueInfo("x", onnx.String, 1)}, nil, []*onnx.Node{bad}, "y")
	if _, err := interpretModelErr(m, Bindings{Values: map[string]*Tensor{"x": strs("a")}}); err == nil || !strings.Contains(err.Error(), "missing closing )") {
		t.Errorf("bad pattern: %v", err)
	}
}

// TestStringConcatAndEqual broadcast like numbers.
func TestStringConcatAndEqual(t *testing.T) {
	m := buildModel(20, []*onnx.ValueInfo{valueInfo("x", onnx.String, 2, 1), valueInfo("y", onnx.String, 3)}, nil, []*onnx.Node{
		node("StringConcat", []string{"x", "y"}, []string{"xy"}),
		node("Equal", []string{"x", "y"}, []string{"eq"}),
	}, "xy", "eq")
	x, y := FromStrings(Shape{2, 1}, []string{"a", "é"}), strs("a", "b", "")
	res, _ := interpretComposite(t, m, Bindings{Values: map[string]*Tensor{"x": x, "y": y}}, nil)
	if got, want := res[0].Tensor.Strings(), []string{"aa", "ab", "a", "éa", "éb", "é"}; !slices.Equal(got, want) || !res[0].Tensor.Shape().Equal(Shape{2, 3}) {
		t.Errorf("StringConcat %q %v, want %q", got, res[0].Tensor.Shape(), want)
	}
	if got, want := res[1].Tensor.Bools(), []bool{true, false, false, false, false, false}; !slices.Equal(got, want) {
		t.Errorf("Equal %v, want %v", got, want)
	}
}

// TestStringsStayAtImport: a string input must be bound by value; data
// movement (Reshape, Transpose, Gather, Concat, Where, ...) moves strings
// at import; an op without a string implementation says so.
func TestStringsStayAtImport(t *testing.T) {
	m := buildModel(20, []*onnx.ValueInfo{valueInfo("x", onnx.String, 2, 3), valueInfo("c", onnx.Bool, 3)}, nil, []*onnx.Node{
		node("Transpose", []string{"x"}, []string{"xt"}),
		constNode(t, "shape", IntsTensor(6)),
		node("Reshape", []string{"xt", "shape"}, []string{"flat"}),
		constNode(t, "idx", IntsTensor(5, 0)),
		node("Gather", []string{"flat", "idx"}, []string{"picked"}, intAttr("axis", 0)),
		node("Concat", []string{"picked", "flat"}, []string{"joined"}, intAttr("axis", 0)),
		constNode(t, "row", FromStrings(Shape{3}, []string{"p", "q", "r"})),
		node("Where", []string{"c", "x", "row"}, []string{"chosen"}),
	}, "joined", "chosen")
	x := FromStrings(Shape{2, 3}, []string{"a", "b", "c", "d", "e", "f"})
	c := FromBools(Shape{3}, []bool{true, false, true})
	res, g := interpretComposite(t, m, Bindings{Values: map[string]*Tensor{"x": x, "c": c}}, nil)
	if len(g.Nodes) != 0 {
		t.Errorf("strings must fold:\n%v", g)
	}
	if got, want := res[0].Tensor.Strings(), []string{"f", "a", "a", "d", "b", "e", "c", "f"}; !slices.Equal(got, want) {
		t.Errorf("moved strings %q, want %q", got, want)
	}
	if got, want := res[1].Tensor.Strings(), []string{"a", "q", "c", "d", "q", "f"}; !slices.Equal(got, want) {
		t.Errorf("Where on strings %q, want %q", got, want)
	}
	if _, err := interpretModelErr(m, Bindings{Shapes: map[string]Shape{"x": {2, 3}}, Values: map[string]*Tensor{"c": c}}); err == nil || !strings.Contains(err.Error(), `input "x" is a string tensor: bind its value`) {
		t.Errorf("string input bound by shape: %v", err)
	}
	for op, want := range map[string]string{"Neg": "Neg: input is string, want a number type", "Cast": "Cast on string tensors"} {
		bad := buildModel(20, []*onnx.ValueInfo{valueInfo("x", onnx.String, 2)}, nil, []*onnx.Node{node(op, []string{"x"}, []string{"y"}, intAttr("to", int64(onnx.Float)))}, "y")
		_, err := interpretModelErr(bad, Bindings{Values: map[string]*Tensor{"x": strs("a", "b")}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s of strings: %v, want an error containing %q", op, err, want)
		}
	}
}

// TestStringConstantsAndBound: Constant's value_string(s) make string
// constants; a concatenation that would create more than maxStringBytes
// is refused before it allocates.
func TestStringConstantsAndBound(t *testing.T) {
	m := buildModel(20, nil, nil, []*onnx.Node{
		node("Constant", nil, []string{"a"}, stringAttr("value_string", "ab")),
		node("Constant", nil, []string{"b"}, stringsAttr("value_strings", "x", "")),
		node("StringConcat", []string{"a", "b"}, []string{"y"}),
	}, "y")
	res, _ := interpretComposite(t, m, Bindings{}, nil)
	if got := res[0].Tensor.Strings(); !slices.Equal(got, []string{"abx", "ab"}) {
		t.Errorf("got %q", got)
	}
	long := FromStrings(Shape{}, []string{strings.Repeat("z", 2048)})
	many := NewTensor(String, Shape{1 << 20})
	big := buildModel(20, []*onnx.ValueInfo{valueInfo("x", onnx.String), valueInfo("y", onnx.String, 1<<20)}, nil,
		[]*onnx.Node{node("StringConcat", []string{"x", "y"}, []string{"z"})}, "z")
	if _, err := interpretModelErr(big, Bindings{Values: map[string]*Tensor{"x": long, "y": many}}); err == nil || !strings.Contains(err.Error(), "exceed 1024 MiB") {
		t.Errorf("2 GiB of concatenated strings: %v", err)
	}
}
