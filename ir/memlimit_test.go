package ir

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// Ops whose output may be far larger than their input are bounded by the
// memory limit at import, before anything is allocated: an Expand to
// 8 GiB in a tiny model is an error on a machine (or under a limit)
// without the memory, not an out-of-memory crash.
func TestAmplifyingOpsAreBoundedByTheMemoryLimit(t *testing.T) {
	defer SetMemoryLimit(SetMemoryLimit(64 << 20))
	for _, c := range []struct {
		name string
		op   string
		ins  []nodeInput
	}{
		// 2·1024³ float32 = 8 GiB.
		{"Expand", "Expand", []nodeInput{feed(NewTensor(Float32, Shape{1})), fixed(FromInt64s(Shape{4}, []int64{2, 1024, 1024, 1024}))}},
		// 128 MiB of float32 zeros, folded at import.
		{"ConstantOfShape", "ConstantOfShape", []nodeInput{fixed(FromInt64s(Shape{2}, []int64{1 << 15, 1 << 10}))}},
		// 256 KiB tiled 1024 times.
		{"Tile", "Tile", []nodeInput{feed(NewTensor(Float32, Shape{256, 256})), fixed(FromInt64s(Shape{2}, []int64{32, 32}))}},
		// 256 KiB resized 32×32.
		{"Resize", "Resize", []nodeInput{feed(NewTensor(Float32, Shape{1, 1, 256, 256})), omitted, fixed(FromFloat32s(Shape{4}, []float32{1, 1, 32, 32}))}},
	} {
		m, _ := oneNodeModel(t, 17, c.op, nil, c.ins, 1)
		model, err := NewModel(m)
		if err == nil {
			_, err = model.Specialize(Bindings{})
		}
		if err == nil || !strings.Contains(err.Error(), "more than the memory limit of 64.0 MiB") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Under a limit that allows them, the same models import.
	SetMemoryLimit(512 << 20)
	m, _ := oneNodeModel(t, 17, "Tile", nil, []nodeInput{feed(NewTensor(Float32, Shape{256, 256})), fixed(FromInt64s(Shape{2}, []int64{32, 32}))}, 1)
	model, err := NewModel(m)
	if err == nil {
		_, err = model.Specialize(Bindings{})
	}
	if err != nil {
		t.Errorf("Tile to 256 MiB under a 512 MiB limit: %v", err)
	}
}

// The constants folded at import are bounded together, not only each: a
// tiny model of many ConstantOfShape nodes (and of a chain of additions on
// one folded tensor, each a new constant) fails naming the node that
// passes the budget — the memory limit, or for a model with few weights
// 16 times its initializers and 1 GiB.
func TestFoldedConstantsAreBoundedTogether(t *testing.T) {
	defer SetMemoryLimit(SetMemoryLimit(64 << 20))
	shape := initializer(t, "shape", FromInt64s(Shape{1}, []int64{4 << 20})) // 16 MiB of float32
	var fills, chain []*onnx.Node
	var fillOuts []string
	for i := range 8 {
		out := fmt.Sprintf("y%d", i)
		fills = append(fills, node("ConstantOfShape", []string{"shape"}, []string{out}))
		fillOuts = append(fillOuts, out)
	}
	chain = append(chain, node("ConstantOfShape", []string{"shape"}, []string{"z0"}))
	for i := 1; i < 8; i++ {
		chain = append(chain, node("Add", []string{fmt.Sprintf("z%d", i-1), "z0"}, []string{fmt.Sprintf("z%d", i)}))
	}
	for _, c := range []struct {
		name    string
		nodes   []*onnx.Node
		outs    []string
		failsAt string
	}{
		{"8 ConstantOfShape", fills, fillOuts, `node 4 "ConstantOfShape_y4"`},
		{"a chain of Add", chain, []string{"z7"}, `node 4 "Add_z4"`},
	} {
		model, err := NewModel(buildModel(17, nil, []*onnx.Tensor{shape}, c.nodes, c.outs...))
		if err == nil {
			_, err = model.Specialize(Bindings{})
		}
		if err == nil || !strings.Contains(err.Error(), c.failsAt) || !strings.Contains(err.Error(), "the constants folded at import take 80.0 MiB with this node's, more than 64.0 MiB") {
			t.Errorf("%s: %v", c.name, err)
		}
		// All eight fit in 128 MiB.
		SetMemoryLimit(128 << 20)
		model, err = NewModel(buildModel(17, nil, []*onnx.Tensor{shape}, c.nodes, c.outs...))
		if err == nil {
			_, err = model.Specialize(Bindings{})
		}
		SetMemoryLimit(64 << 20)
		if err != nil {
			t.Errorf("%s under a 128 MiB limit: %v", c.name, err)
		}
	}
	SetMemoryLimit(64 << 30)
	if got := foldBudget(100); got != 1<<30+1600 {
		t.Errorf("folding budget of a model with 100 bytes of initializers: %d", got)
	}
	if got := foldBudget(3 << 30); got != 49<<30 {
		t.Errorf("folding budget of a model with 3 GiB of initializers under a 64 GiB limit: %d", got)
	}
	if got := foldBudget(40 << 30); got != 64<<30 {
		t.Errorf("folding budget of a model with 40 GiB of initializers under a 64 GiB limit: %d", got)
	}
}

// Range's element count is checked before it is converted to an int: an
// infinite limit, a tiny step, or an int64 span past the type's range are
// errors that say so, not a "negative dimension" from an overflow.
func TestRangeCountBounds(t *testing.T) {
	f64 := func(v float64) nodeInput { return fixed(FromFloat64s(Shape{}, []float64{v})) }
	i64 := func(v int64) nodeInput { return fixed(FromInt64s(Shape{}, []int64{v})) }
	for _, c := range []struct {
		name string
		ins  []nodeInput
		says string
	}{
		{"infinite limit", []nodeInput{f64(0), f64(math.Inf(1)), f64(1)}, "give +Inf elements"},
		{"tiny step", []nodeInput{f64(0), f64(1), f64(1e-30)}, "give 9.999999999999999e+29 elements"},
		{"NaN", []nodeInput{f64(math.NaN()), f64(1), f64(1)}, "give NaN elements"},
		{"int64 span", []nodeInput{i64(math.MinInt64), i64(math.MaxInt64), i64(1)}, "give 18446744073709551615 elements"},
		{"int64 span, step down", []nodeInput{i64(math.MaxInt64), i64(math.MinInt64), i64(math.MinInt64)}, ""},
	} {
		m, _ := oneNodeModel(t, 17, "Range", nil, c.ins, 1)
		model, err := NewModel(m)
		if err == nil {
			_, err = model.Specialize(Bindings{})
		}
		switch {
		case c.says == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.says != "" && (err == nil || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.says)
		}
	}
}

// The folding budget's factor holds for what quantized models fold at
// import: an int8 weight with a zero point dequantized per channel (a
// Cast and a Sub to float32: 8 times its bytes), and an int4 one
// dequantized in blocks, import with no slack beyond 16 times the
// initializers.
func TestFoldBudgetCoversDequantizedWeights(t *testing.T) {
	defer func(was int64) { foldSlack = was }(foldSlack)
	foldSlack = 0
	defer SetMemoryLimit(SetMemoryLimit(16 << 30))
	rows, cols := 256, 1024
	for _, c := range []struct {
		name  string
		dtype DType
		opset int64
		zero  Shape
		attrs []*onnx.Attribute
	}{
		{"int8 per channel", Int8, 13, Shape{rows}, []*onnx.Attribute{intAttr("axis", 0)}},
		{"int4 in blocks of 32", Int4, 21, Shape{rows, cols / 32}, []*onnx.Attribute{intAttr("axis", 1), intAttr("block_size", 32)}},
	} {
		w := NewTensor(c.dtype, Shape{rows, cols})
		for i := range w.Bytes() {
			w.Bytes()[i] = byte(i*7) % 8 // in int4's range too
		}
		zero := NewTensor(c.dtype, c.zero)
		for i := range zero.Bytes() {
			zero.Bytes()[i] = byte(i%5 + 1)
		}
		scale := FromFloat32s(c.zero, make([]float32, c.zero.Size()))
		inits := []*onnx.Tensor{initializer(t, "w", w), initializer(t, "s", scale), initializer(t, "z", zero)}
		dq := node("DequantizeLinear", []string{"w", "s", "z"}, []string{"y"}, c.attrs...)
		model, err := NewModel(buildModel(c.opset, nil, inits, []*onnx.Node{dq}, "y"))
		if err == nil {
			_, err = model.Specialize(Bindings{})
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestSplitCountsAreBounded: the number of pieces a Split or
// SplitToSequence makes comes from the file (num_outputs, the axis of a
// declared shape) and is checked before any list of that length is made:
// a Split asking for 2^40 parts of one output, and a sequence of more
// elements than maxSequenceElements, are errors naming the count.
func TestSplitCountsAreBounded(t *testing.T) {
	split := buildModel(18, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 4)}, nil,
		[]*onnx.Node{node("Split", []string{"x"}, []string{"y"}, intAttr("axis", 0), intAttr("num_outputs", 1<<40))}, "y")
	if _, err := interpretModelErr(split, Bindings{Shapes: map[string]Shape{"x": {4}}}); err == nil ||
		!strings.Contains(err.Error(), "split into 1099511627776 parts (num_outputs) for 1 outputs") {
		t.Errorf("Split of 2^40 parts: %v", err)
	}
	defer func(was int) { maxSequenceElements = was }(maxSequenceElements)
	maxSequenceElements = 8
	for _, c := range []struct {
		name  string
		split *Tensor
		n     int // elements of the split axis
		says  string
	}{
		{"slices of 1", nil, 9, "splits an axis of 9 into 9 elements, more than the 8 a sequence may hold"},
		{"a scalar size", ScalarInt64(2), 17, "splits an axis of 17 into 9 elements"},
		{"at the bound", ScalarInt64(2), 16, ""},
	} {
		nodes := []*onnx.Node{}
		ins := []string{"x"}
		if c.split != nil {
			nodes = append(nodes, constNode(t, "split", c.split))
			ins = append(ins, "split")
		}
		nodes = append(nodes, node("SplitToSequence", ins, []string{"seq"}, intAttr("axis", 0)),
			node("SequenceLength", []string{"seq"}, []string{"len"}))
		m := buildModel(17, []*onnx.ValueInfo{valueInfo("x", onnx.Float, c.n)}, nil, nodes, "len")
		_, err := interpretModelErr(m, Bindings{Shapes: map[string]Shape{"x": {c.n}}})
		switch {
		case c.says == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.says != "" && (err == nil || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.says)
		}
	}
}
