package ir

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

func TestScatterMatchesOnnxruntime(t *testing.T) {
	data := NewTensor(Float32, Shape{3, 4, 2})
	for i := range data.Float32s() {
		data.Float32s()[i] = float32(i%7) - 2.5
	}
	dataInt := Convert(data, Int32)
	// Duplicates (0 twice, -1 and 2 both address 2) and negative indices.
	elemIdx := FromInt64s(Shape{2, 3, 2}, []int64{0, 2, -1, 1, 0, 0, 2, -3, 1, 3, 0, -4})
	elemUpd := NewTensor(Float32, Shape{2, 3, 2})
	for i := range elemUpd.Float32s() {
		elemUpd.Float32s()[i] = float32(i) * 0.75
	}
	ndIdx := FromInt64s(Shape{4, 2}, []int64{0, 1, 2, -1, 0, 1, -3, 3})
	ndUpd := NewTensor(Float32, Shape{4, 2})
	for i := range ndUpd.Float32s() {
		ndUpd.Float32s()[i] = float32(i) - 3
	}
	for _, tc := range []struct {
		name  string
		opset int64
		node  *onnx.Node
		in    []namedTensor
	}{
		{"ScatterElements/axis1", 18, node("ScatterElements", []string{"x", "i", "u"}, []string{"y"}, intAttr("axis", 1)),
			[]namedTensor{{"x", data}, {"i", FromInt64s(Shape{3, 1, 2}, []int64{1, 3, -1, 0, 2, -2})}, {"u", FromFloat32s(Shape{3, 1, 2}, []float32{1, 2, 3, 4, 5, 6})}}},
		{"Scatter/opset10", 10, node("Scatter", []string{"x", "i", "u"}, []string{"y"}, intAttr("axis", 1)),
			[]namedTensor{{"x", data}, {"i", FromInt64s(Shape{3, 1, 2}, []int64{1, 3, 2, 0, 2, 1})}, {"u", FromFloat32s(Shape{3, 1, 2}, []float32{1, 2, 3, 4, 5, 6})}}},
		{"GatherND", 13, node("GatherND", []string{"x", "i"}, []string{"y"}),
			[]namedTensor{{"x", data}, {"i", ndIdx}}},
		{"GatherND/batch1", 13, node("GatherND", []string{"x", "i"}, []string{"y"}, intAttr("batch_dims", 1)),
			[]namedTensor{{"x", dataInt}, {"i", FromInt64s(Shape{3, 2, 1}, []int64{1, -1, 0, 3, 2, 2})}}},
		{"GatherND/batch2", 13, node("GatherND", []string{"x", "i"}, []string{"y"}, intAttr("batch_dims", 2)),
			[]namedTensor{{"x", data}, {"i", FromInt64s(Shape{3, 4, 1}, []int64{1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1})}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			infos, inputs := declareInputs(tc.in)
			checkAgainstORT(t, buildModel(tc.opset, infos, nil, []*onnx.Node{tc.node}, "y"), inputs, 0, 0)
		})
	}
	for _, mode := range []string{"linear", "circular"} {
		t.Run("TensorScatter/"+mode, func(t *testing.T) {
			cache := NewTensor(Float32, Shape{3, 2, 5, 2})
			for i := range cache.Float32s() {
				cache.Float32s()[i] = float32(-i)
			}
			upd := NewTensor(Float32, Shape{3, 2, 2, 2})
			for i := range upd.Float32s() {
				upd.Float32s()[i] = float32(i + 1)
			}
			w := FromInt64s(Shape{3}, []int64{0, 3, 1})
			if mode == "circular" {
				w.Int64s()[1] = 4
			}
			in := map[string]*Tensor{"c": cache, "u": upd, "w": w}
			checkAgainstORT(t, buildModel(24, []*onnx.ValueInfo{declareInput("c", cache), declareInput("u", upd), declareInput("w", w)}, nil,
				[]*onnx.Node{node("TensorScatter", []string{"c", "u", "w"}, []string{"y"}, stringAttr("mode", mode), intAttr("axis", 2))}, "y"), in, 0, 0)
		})
	}
	for _, red := range []string{"add", "mul", "max", "min"} {
		for _, x := range []*Tensor{data, dataInt} {
			u := Convert(elemUpd, x.dtype)
			t.Run("ScatterElements/"+red+"/"+x.dtype.String(), func(t *testing.T) {
				checkAgainstORT(t, buildModel(18, []*onnx.ValueInfo{declareInput("x", x), declareInput("i", elemIdx), declareInput("u", u)}, nil,
					[]*onnx.Node{node("ScatterElements", []string{"x", "i", "u"}, []string{"y"}, intAttr("axis", 1), stringAttr("reduction", red))}, "y"), map[string]*Tensor{"x": x, "i": elemIdx, "u": u}, 1e-6, 0)
			})
			u = Convert(ndUpd, x.dtype)
			t.Run("ScatterND/"+red+"/"+x.dtype.String(), func(t *testing.T) {
				checkAgainstORT(t, buildModel(18, []*onnx.ValueInfo{declareInput("x", x), declareInput("i", ndIdx), declareInput("u", u)}, nil,
					[]*onnx.Node{node("ScatterND", []string{"x", "i", "u"}, []string{"y"}, stringAttr("reduction", red))}, "y"), map[string]*Tensor{"x": x, "i": ndIdx, "u": u}, 1e-6, 0)
			})
		}
	}
}

// TestScatterDuplicatesLastWins: without a reduction the updates apply in
// index order, so of duplicates the last one stays.
func TestScatterDuplicatesLastWins(t *testing.T) {
	x := FromFloat32s(Shape{4}, []float32{0, 0, 0, 0})
	got, err := EvalOp(&ScatterElements{}, x, FromInt64s(Shape{3}, []int64{1, -3, 2}), FromFloat32s(Shape{3}, []float32{5, 6, 7}))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got[0].Float32s()) != "[0 6 7 0]" {
		t.Errorf("ScatterElements: %v, want [0 6 7 0]", got[0].Float32s())
	}
	got, err = EvalOp(&ScatterND{}, x, FromInt64s(Shape{3, 1}, []int64{3, -1, 0}), FromFloat32s(Shape{3}, []float32{5, 6, 7}))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got[0].Float32s()) != "[7 0 0 6]" {
		t.Errorf("ScatterND: %v, want [7 0 0 6]", got[0].Float32s())
	}
}

func TestTensorScatter(t *testing.T) {
	cache := NewTensor(Float32, Shape{2, 2, 4, 1})
	for i := range cache.Float32s() {
		cache.Float32s()[i] = float32(-i - 1)
	}
	upd := FromFloat32s(Shape{2, 2, 3, 1}, []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	w := FromInt64s(Shape{2}, []int64{1, 3})
	// Batch 0 writes positions 1..3; batch 1 starts at 3 and wraps to 0, 1.
	want := []float32{-1, 1, 2, 3, -5, 4, 5, 6, 8, 9, -11, 7, 11, 12, -15, 10}
	got, err := EvalOp(&TensorScatter{Axis: 2, Circular: true}, cache, upd, w)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got[0].Float32s()) != fmt.Sprint(want) {
		t.Errorf("circular: got %v, want %v", got[0].Float32s(), want)
	}
	_, err = EvalOp(&TensorScatter{Axis: 2}, cache, upd, w)
	var ie *IndexError
	if !errors.As(err, &ie) || ie.Index != 4 || ie.Hi != 4 {
		t.Errorf("linear past the end: got %v, want an IndexError for position 4 of [0, 4)", err)
	}
	got, err = EvalOp(&TensorScatter{Axis: 2}, cache, upd)
	if err != nil {
		t.Fatal(err)
	}
	if g := got[0].Float32s(); g[0] != 1 || g[3] != -4 || g[12] != 10 {
		t.Errorf("no write_indices: got %v, want writes from position 0", g)
	}
}

func TestScatterGatherGradFiniteDifferences(t *testing.T) {
	// indices computed by a node (a Copy of a constant), so that the
	// gradient cannot assume they are unique.
	computed := func(h *caseBuilder, idx *Tensor) *Value { return h.op(&Copy{}, h.constant(idx)) }
	elemIdx := FromInt64s(Shape{2, 3}, []int64{1, 0, 2, 1, -3, 0}) // column 0 twice
	ndIdx := FromInt64s(Shape{3, 2}, []int64{0, 1, 2, 0, -3, 1})   // (0,1) twice
	cases := []gradCase{
		// TopK: the values' gradient goes where they were taken from; in
		// a mixture of experts' router the values weigh the experts the
		// indices pick (GatherElements of another parameter).
		{name: "TopK/largest", build: func(h *caseBuilder) []*Value {
			return h.Op(&TopK{Axis: 1, K: 2, Largest: true}, h.param(Shape{3, 4}, -1, 1))
		}},
		{name: "TopK/smallest/axis0", build: func(h *caseBuilder) []*Value {
			return h.Op(&TopK{Axis: 0, K: 2}, h.param(Shape{3, 4}, -1, 1))[:1]
		}},
		{name: "TopK/router", build: func(h *caseBuilder) []*Value {
			top := h.Op(&TopK{Axis: 1, K: 2, Largest: true}, h.param(Shape{3, 5}, -1, 1))
			weights := h.op(&Softmax{Axis: 1}, top[0])
			experts := h.op(&GatherElements{Axis: 1}, h.param(Shape{3, 5}, -1, 1), top[1])
			return []*Value{h.op(&Binary{Fn: Mul}, weights, experts)}
		}},
		{name: "GatherElements", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&GatherElements{Axis: 0}, h.param(Shape{3, 4}, -1, 1), h.constant(FromInt64s(Shape{2, 3}, []int64{2, 0, 2, 1, 1, -1})))}
		}},
		{name: "ScatterElements/none/unique", build: func(h *caseBuilder) []*Value {
			idx := h.constant(FromInt64s(Shape{2, 3}, []int64{1, 0, 2, 2, -2, 0}))
			return []*Value{h.op(&ScatterElements{Axis: 0}, h.param(Shape{3, 3}, -1, 1), idx, h.param(Shape{2, 3}, -1, 1))}
		}},
		{name: "ScatterElements/none/duplicates", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&ScatterElements{Axis: 0}, h.param(Shape{3, 3}, -1, 1), computed(h, elemIdx), h.param(Shape{2, 3}, -1, 1))}
		}},
		{name: "ScatterElements/add", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&ScatterElements{Axis: 0, Reduction: ScatterAdd}, h.param(Shape{3, 3}, -1, 1), computed(h, elemIdx), h.param(Shape{2, 3}, -1, 1))}
		}},
		{name: "GatherND", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&GatherND{}, h.param(Shape{3, 2, 2}, -1, 1), h.constant(ndIdx))}
		}},
		{name: "GatherND/batch", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&GatherND{BatchDims: 1}, h.param(Shape{2, 3, 2}, -1, 1), h.constant(FromInt64s(Shape{2, 2, 1}, []int64{2, 2, -1, 0})))}
		}},
		{name: "ScatterND/none/unique", build: func(h *caseBuilder) []*Value {
			idx := h.constant(FromInt64s(Shape{2, 1}, []int64{2, 0}))
			return []*Value{h.op(&ScatterND{}, h.param(Shape{3, 2}, -1, 1), idx, h.param(Shape{2, 2}, -1, 1))}
		}},
		{name: "ScatterND/none/duplicates", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&ScatterND{}, h.param(Shape{3, 2, 2}, -1, 1), computed(h, ndIdx), h.param(Shape{3, 2}, -1, 1))}
		}},
		{name: "ScatterND/add", build: func(h *caseBuilder) []*Value {
			return []*Value{h.op(&ScatterND{Reduction: ScatterAdd}, h.param(Shape{3, 2, 2}, -1, 1), computed(h, ndIdx), h.param(Shape{3, 2}, -1, 1))}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runGradCase(t, c) })
	}
}

// TestScatterGradUnsupported: the multiplicative and min/max reductions
// have no gradient rule and say so.
func TestScatterGradUnsupported(t *testing.T) {
	b := NewBuilder("g")
	x := b.Param("x", NewTensor(Float64, Shape{3}))
	y := b.Op1(&ScatterElements{Reduction: ScatterMax}, x, b.Const(FromInt64s(Shape{1}, []int64{0})), b.Const(FromFloat64s(Shape{1}, []float64{1})))
	b.Output("L", b.Op1(&Reduce{Fn: ReduceSum, Axes: []int{0}}, y))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Grad(g, "L", nil); !errors.Is(err, ErrNoGradient) || !strings.Contains(err.Error(), "ScatterElements(max)") {
		t.Errorf("got %v, want ErrNoGradient for ScatterElements(max)", err)
	}
}

func TestScatterGatherErrors(t *testing.T) {
	f := func(s ...int) Type { return Type{Float32, Shape(s)} }
	i64 := func(s ...int) Type { return Type{Int64, Shape(s)} }
	for _, tc := range []struct {
		op   Op
		in   []Type
		want string
	}{
		{&ScatterElements{}, []Type{f(3), f(2), f(2)}, "indices is float32, want int32 or int64"},
		{&ScatterElements{}, []Type{f(3), i64(2), f(3)}, "updates are float32[3], want float32 with the indices' shape [2]"},
		{&ScatterElements{Axis: 1}, []Type{f(3, 2), i64(4, 2), f(4, 2)}, "indices [4,2] exceed data [3,2] on axis 0"},
		{&ScatterElements{Reduction: ScatterAdd}, []Type{{Bool, Shape{3}}, i64(2), {Bool, Shape{2}}}, "reduction add on bool data"},
		{&ScatterND{}, []Type{f(3, 2), i64(2, 3), f(2)}, "index tuples of 3 elements for data [3,2]"},
		{&ScatterND{}, []Type{f(3, 2), i64(2, 1), f(2, 3)}, "updates are float32[2,3], want float32[2,2]"},
		{&GatherND{BatchDims: 1}, []Type{f(3, 2), i64(2, 1)}, "differ on the 1 batch axes"},
		{&TensorScatter{Axis: 0}, []Type{f(2, 3), f(2, 3)}, "want an axis after the batch axis"},
		{&TensorScatter{Axis: 1}, []Type{f(2, 3), f(2, 4)}, "update [2,4] does not fit cache [2,3]"},
		{&TensorScatter{Axis: 1}, []Type{f(2, 3), f(2, 1), i64(3)}, "write_indices [3], want [2]"},
	} {
		_, err := tc.op.Infer(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s on %v: got %v, want an error containing %q", tc.op.Name(), tc.in, err, tc.want)
		}
	}
	// Indices out of range are IndexErrors at run time.
	x := NewTensor(Float32, Shape{3, 2})
	for _, tc := range []struct {
		op Op
		in []*Tensor
	}{
		{&ScatterElements{}, []*Tensor{x, FromInt64s(Shape{1, 1}, []int64{3}), NewTensor(Float32, Shape{1, 1})}},
		{&ScatterND{}, []*Tensor{x, FromInt64s(Shape{1, 2}, []int64{0, -3}), NewTensor(Float32, Shape{1})}},
		{&GatherND{}, []*Tensor{x, FromInt64s(Shape{1, 1}, []int64{-4})}},
		{&GatherElements{}, []*Tensor{x, FromInt64s(Shape{1, 1}, []int64{7})}},
		{&Gather{}, []*Tensor{x, FromInt64s(Shape{1}, []int64{3})}},
	} {
		_, err := EvalOp(tc.op, tc.in...)
		var ie *IndexError
		if !errors.As(err, &ie) || ie.Op != tc.op.Name() {
			t.Errorf("%s: got %v, want an IndexError naming it", tc.op.Name(), err)
		}
	}
	x2 := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 3, 2), valueInfo("i", onnx.Int64, 2, 1), valueInfo("u", onnx.Float, 2, 2)}
	for _, tc := range []struct {
		name  string
		model *onnx.Model
		want  string
	}{
		{"reduction name", buildModel(18, x2, nil, []*onnx.Node{node("ScatterND", []string{"x", "i", "u"}, []string{"y"}, stringAttr("reduction", "sum"))}, "y"),
			`reduction "sum", want none, add, mul, max or min`},
		{"max before 18", buildModel(16, x2, nil, []*onnx.Node{node("ScatterND", []string{"x", "i", "u"}, []string{"y"}, stringAttr("reduction", "max"))}, "y"),
			`reduction "max" needs opset 18`},
		{"add before 16", buildModel(13, x2, nil, []*onnx.Node{node("ScatterElements", []string{"x", "i", "u"}, []string{"y"}, stringAttr("reduction", "add"))}, "y"),
			`reduction "add" needs opset 16`},
		{"scatter axis", buildModel(13, x2, nil, []*onnx.Node{node("ScatterElements", []string{"x", "i", "u"}, []string{"y"}, intAttr("axis", 2))}, "y"),
			"axis 2 out of range for rank 2"},
		{"batch_dims", buildModel(13, x2, nil, []*onnx.Node{node("GatherND", []string{"x", "i"}, []string{"y"}, intAttr("batch_dims", 2))}, "y"),
			"batch_dims 2 for data [3,2] and indices [2,1]"},
		{"tensorscatter mode", buildModel(24, x2, nil, []*onnx.Node{node("TensorScatter", []string{"x", "u"}, []string{"y"}, stringAttr("mode", "ring"))}, "y"),
			`TensorScatter mode "ring", want linear or circular`},
	} {
		_, err := FromONNX(tc.model, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
