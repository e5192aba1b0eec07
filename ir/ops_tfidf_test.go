package ir

import (
	"slices"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// TestTfIdfVectorizer counts by hand. Pool: unigram {1}, bigrams {1 2},
// {2 3}, {1 1}. Row [1 2 1 2 3]: pairs at distance 1 are (1,2) (2,1)
// (1,2) (2,3), at distance 2 (skip 1) (1,1) (2,2) (1,3). Row [3 3 2 3 1]:
// (3,3) (3,2) (2,3) (3,1), then (3,2) (3,3) (2,1).
func TestTfIdfVectorizer(t *testing.T) {
	x := FromInt64s(Shape{2, 5}, []int64{1, 2, 1, 2, 3, 3, 3, 2, 3, 1})
	for _, tc := range []struct {
		mode    string
		minGram int64
		skip    int64
		weights []float32
		want    []float32 // columns: {1}, {1 2}, {2 3}, {1 1}
	}{
		{"TF", 1, 1, nil, []float32{2, 2, 1, 1, 1, 0, 1, 0}},
		{"TF", 2, 0, nil, []float32{0, 2, 1, 0, 0, 0, 1, 0}},
		{"TF", 1, 0, nil, []float32{2, 2, 1, 0, 1, 0, 1, 0}},
		{"IDF", 1, 1, nil, []float32{1, 1, 1, 1, 1, 0, 1, 0}},
		{"IDF", 1, 1, []float32{0.5, 2, 3, 4}, []float32{0.5, 2, 3, 4, 0.5, 0, 3, 0}},
		{"TFIDF", 1, 1, []float32{0.5, 2, 3, 4}, []float32{1, 4, 3, 4, 0.5, 0, 3, 0}},
	} {
		attrs := []*onnx.Attribute{stringAttr("mode", tc.mode), intAttr("min_gram_length", tc.minGram), intAttr("max_gram_length", 2),
			intAttr("max_skip_count", tc.skip), intsAttr("ngram_counts", 0, 1), intsAttr("ngram_indexes", 0, 1, 2, 3),
			intsAttr("pool_int64s", 1, 1, 2, 2, 3, 1, 1)}
		if tc.weights != nil {
			attrs = append(attrs, floatsAttr("weights", tc.weights...))
		}
		m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Int64, 2, 5)}, nil, []*onnx.Node{node("TfIdfVectorizer", []string{"x"}, []string{"y"}, attrs...)}, "y")
		res, _ := interpretComposite(t, m, Bindings{Shapes: map[string]Shape{"x": {2, 5}}}, map[string]*Tensor{"x": x})
		if got := res[0].Tensor.Float32s(); !slices.Equal(got, tc.want) || !res[0].Tensor.Shape().Equal(Shape{2, 4}) {
			t.Errorf("%s min %d skip %d: %v %v, want %v", tc.mode, tc.minGram, tc.skip, res[0].Tensor.Shape(), got, tc.want)
		}
	}
	// Strings, one row: the same counts as integers.
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.String, 5)}, nil, []*onnx.Node{node("TfIdfVectorizer", []string{"x"}, []string{"y"},
		stringAttr("mode", "TF"), intAttr("min_gram_length", 1), intAttr("max_gram_length", 2), intAttr("max_skip_count", 1),
		intsAttr("ngram_counts", 0, 1), intsAttr("ngram_indexes", 0, 1, 2, 3), stringsAttr("pool_strings", "a", "a", "b", "b", "c", "a", "a"))}, "y")
	res, _ := interpretComposite(t, m, Bindings{Values: map[string]*Tensor{"x": strs("a", "b", "a", "b", "c")}}, nil)
	if got := res[0].Tensor.Float32s(); !slices.Equal(got, []float32{2, 2, 1, 1}) {
		t.Errorf("strings: %v, want [2 2 1 1]", got)
	}
}
