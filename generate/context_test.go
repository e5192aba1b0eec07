package generate

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// positionVariant is a GPT-2-shaped toy whose position embeddings are
// read in one of several ways: the nodes that make "p", the rows of
// position_ids, from the initializers and input_ids, and the table's
// initializers.
type positionVariant struct {
	name  string
	nodes []*onnx.Node
	inits []*onnx.Tensor
}

const toyVocab, toyDim = 11, 4

// positionTable is a table of rows position embeddings named name.
func positionTable(name string, rows int) *onnx.Tensor {
	pos := make([]float32, rows*toyDim)
	for i := range pos {
		pos[i] = float32((i*7)%13)/13 - 0.5
	}
	t, _ := onnx.FromFloat32s(name, []int64{int64(rows), toyDim}, pos)
	return t
}

func int64Const(name string, dims []int64, v ...int64) *onnx.Node {
	t, _ := onnx.FromInt64s(name, dims, v)
	return constNode(name, t)
}

func constNode(name string, t *onnx.Tensor) *onnx.Node {
	return &onnx.Node{OpType: "Constant", Outputs: []string{name}, Attributes: []*onnx.Attribute{{Name: "value", Type: onnx.AttrTensor, T: t}}}
}

// positionGraph builds the toy of v: logits = (wte[input_ids] + p) · head.
func positionGraph(v positionVariant) *onnx.Graph {
	emb, head := make([]float32, toyVocab*toyDim), make([]float32, toyDim*toyVocab)
	for i := range emb {
		emb[i], head[i] = float32(i%7)/7, float32((i*3)%5)/5-0.4
	}
	embT, _ := onnx.FromFloat32s("wte", []int64{toyVocab, toyDim}, emb)
	headT, _ := onnx.FromFloat32s("head", []int64{toyDim, toyVocab}, head)
	batch, seq := onnx.Dim{Param: "batch"}, onnx.Dim{Param: "seq"}
	return &onnx.Graph{
		Name:         v.name,
		Initializers: append([]*onnx.Tensor{embT, headT}, v.inits...),
		Inputs:       []*onnx.ValueInfo{info("input_ids", onnx.Int64, batch, seq), info("position_ids", onnx.Int64, batch, seq)},
		Outputs:      []*onnx.ValueInfo{info("logits", onnx.Float, batch, seq, onnx.Dim{Value: toyVocab, HasValue: true})},
		Nodes: append(slices.Clone(v.nodes),
			&onnx.Node{OpType: "Gather", Inputs: []string{"wte", "input_ids"}, Outputs: []string{"x"}},
			&onnx.Node{OpType: "Add", Inputs: []string{"x", "p"}, Outputs: []string{"h"}},
			&onnx.Node{OpType: "MatMul", Inputs: []string{"h", "head"}, Outputs: []string{"logits"}},
		),
	}
}

// toyModelFile writes g as a model file of opset 17 and imports it.
func toyModelFile(t *testing.T, g *onnx.Graph) (string, *ir.Model) {
	t.Helper()
	buf, err := onnx.Encode(&onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, Graph: g})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), g.Name+".onnx")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, toyModel(t, g)
}

// TestContextFromOffsetAndConstantTables: a position table read at the
// positions plus a constant (OPT's two), or held in a Constant node,
// bounds the context as an initializer read at the positions does:
// generation stops there with "length", its log-probabilities those
// onnxruntime computes for the whole sequence, and a larger context is
// refused.
func TestContextFromOffsetAndConstantTables(t *testing.T) {
	gather := &onnx.Node{OpType: "Gather", Inputs: []string{"wpe", "q"}, Outputs: []string{"p"}}
	for _, c := range []struct {
		v       positionVariant
		context int
	}{
		{positionVariant{"offset", []*onnx.Node{ // OPT: position_ids + 2
			int64Const("two", nil, 2),
			{OpType: "Add", Inputs: []string{"position_ids", "two"}, Outputs: []string{"q"}}, gather,
		}, []*onnx.Tensor{positionTable("wpe", 24)}}, 22},
		{positionVariant{"offset first, broadcast", []*onnx.Node{ // [[3]] + position_ids, then - 1: rows 2 on
			int64Const("three", []int64{1, 1}, 3),
			int64Const("one", nil, 1),
			{OpType: "Add", Inputs: []string{"three", "position_ids"}, Outputs: []string{"r"}},
			{OpType: "Sub", Inputs: []string{"r", "one"}, Outputs: []string{"q"}}, gather,
		}, []*onnx.Tensor{positionTable("wpe", 24)}}, 22},
		{positionVariant{"constant table", []*onnx.Node{
			constNode("wpe", positionTable("wpe", 24)),
			{OpType: "Identity", Inputs: []string{"position_ids"}, Outputs: []string{"q"}}, gather,
		}, nil}, 24},
		{positionVariant{"constant table, offset", []*onnx.Node{
			constNode("wpe", positionTable("wpe", 24)),
			int64Const("two", nil, 2),
			{OpType: "Add", Inputs: []string{"position_ids", "two"}, Outputs: []string{"q"}}, gather,
		}, nil}, 22},
	} {
		path, model := toyModelFile(t, positionGraph(c.v))
		d, err := New(model, Options{Threads: 1})
		if err != nil {
			t.Fatalf("%s: %v", c.v.name, err)
		}
		if d.Context() != c.context {
			t.Errorf("%s: context %d, want %d", c.v.name, d.Context(), c.context)
		}
		res, err := Run(context.Background(), d, nil, Request{Prompt: []int64{1}, MaxTokens: 100, Logprobs: true}, func(Event) error { return nil })
		d.Close()
		if err != nil || res.FinishReason != "length" || len(res.Tokens) != c.context {
			t.Errorf("%s: %d tokens, %q, %v; want %d, length", c.v.name, len(res.Tokens), res.FinishReason, err, c.context)
			continue
		}
		if _, err := New(model, Options{Threads: 1, Context: c.context + 1}); err == nil || !strings.Contains(err.Error(), `"wpe"`) {
			t.Errorf("%s: context %d: %v, want a refusal naming the table", c.v.name, c.context+1, err)
		}
		t.Run(c.v.name+"/onnxruntime", func(t *testing.T) { checkLogprobsORT(t, path, res) })
	}
}

// checkLogprobsORT checks the log-probabilities of a generation from the
// single token 1 against the log-softmax of the logits onnxruntime
// computes for the whole sequence (row i gives token i+1).
func checkLogprobsORT(t *testing.T, path string, res Result) {
	ort.Need(t)
	{
		seq := append([]int64{1}, res.Tokens[:len(res.Tokens)-1]...)
		positions := make([]int64, len(seq))
		for i := range positions {
			positions[i] = int64(i)
		}
		ids, _ := onnx.FromInt64s("", []int64{1, int64(len(seq))}, seq)
		pos, _ := onnx.FromInt64s("", []int64{1, int64(len(seq))}, positions)
		out, err := ort.Run(path, map[string]*onnx.Tensor{"input_ids": ids, "position_ids": pos})
		if err != nil {
			t.Fatal(err)
		}
		logits, err := out["logits"].Float32s()
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for i, lp := range res.Logprobs {
			want := logSoftmax64(logits[i*toyVocab : (i+1)*toyVocab])
			worst = max(worst, math.Abs(lp.Logprob-want[lp.Token]))
		}
		if worst > 1e-5 {
			t.Errorf("logprobs differ from onnxruntime's by up to %.3g", worst)
		}
	}
}

// TestPositionTableRefusals: a table of no rows, or one the positions
// miss from the first (an offset past its end), is refused naming it.
func TestPositionTableRefusals(t *testing.T) {
	gather := &onnx.Node{OpType: "Gather", Inputs: []string{"wpe", "q"}, Outputs: []string{"p"}}
	for _, v := range []positionVariant{
		{"no rows", []*onnx.Node{{OpType: "Identity", Inputs: []string{"position_ids"}, Outputs: []string{"q"}}, gather},
			[]*onnx.Tensor{positionTable("wpe", 0)}},
		{"offset past the end", []*onnx.Node{int64Const("k", nil, 24),
			{OpType: "Add", Inputs: []string{"position_ids", "k"}, Outputs: []string{"q"}}, gather},
			[]*onnx.Tensor{positionTable("wpe", 24)}},
	} {
		_, err := New(toyModel(t, positionGraph(v)), Options{Threads: 1})
		if err == nil || !strings.Contains(err.Error(), `position table "wpe"`) {
			t.Errorf("%s: %v, want a refusal naming the table", v.name, err)
		}
	}
}

// TestComputedTableIsNoPositionTable: a table computed for the sequence
// (a constant cut to its length, as a rotary cache is) does not bound the
// context by the length the graph was probed at.
func TestComputedTableIsNoPositionTable(t *testing.T) {
	v := positionVariant{"cut", []*onnx.Node{
		constNode("cache", positionTable("cache", 4096)),
		{OpType: "Shape", Inputs: []string{"input_ids"}, Outputs: []string{"shape"}},
		int64Const("zero", []int64{1}, 0),
		int64Const("one", []int64{1}, 1),
		int64Const("two", []int64{1}, 2),
		{OpType: "Slice", Inputs: []string{"shape", "one", "two"}, Outputs: []string{"n"}},
		{OpType: "Slice", Inputs: []string{"cache", "zero", "n", "zero"}, Outputs: []string{"wpe"}},
		{OpType: "Gather", Inputs: []string{"wpe", "position_ids"}, Outputs: []string{"p"}},
	}, nil}
	d, err := New(toyModel(t, positionGraph(v)), Options{Threads: 1, Mode: Recompute})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Context() != DefaultContext {
		t.Errorf("context %d, want %d: the cut table is no position table", d.Context(), DefaultContext)
	}
	if got := greedy(t, d, []int64{1, 2, 3}, 20); len(got) != 20 {
		t.Errorf("generated %v", got)
	}
}

// squareConstantModel builds a [sequence, sequence, k] constant and
// sums it into the embeddings: a graph whose constants grow with the
// square of the sequence as it is built.
func squareConstantModel(t *testing.T, k int64) *ir.Model {
	zero, _ := onnx.FromFloat32s("", []int64{1}, []float32{0})
	g := positionGraph(positionVariant{"square", []*onnx.Node{
		{OpType: "Shape", Inputs: []string{"input_ids"}, Outputs: []string{"shape"}},
		int64Const("one", []int64{1}, 1),
		int64Const("two", []int64{1}, 2),
		int64Const("k", []int64{1}, k),
		{OpType: "Slice", Inputs: []string{"shape", "one", "two"}, Outputs: []string{"n"}},
		{OpType: "Concat", Inputs: []string{"n", "n", "k"}, Outputs: []string{"dims"}, Attributes: []*onnx.Attribute{{Name: "axis", Type: onnx.AttrInt, I: 0}}},
		{OpType: "ConstantOfShape", Inputs: []string{"dims"}, Outputs: []string{"big"}, Attributes: []*onnx.Attribute{{Name: "value", Type: onnx.AttrTensor, T: zero}}},
		{OpType: "ReduceSum", Inputs: []string{"big"}, Outputs: []string{"p"}, Attributes: []*onnx.Attribute{{Name: "keepdims", Type: onnx.AttrInt, I: 0}}},
	}, nil})
	g.Inputs = g.Inputs[:1] // no position_ids
	return toyModel(t, g)
}

// TestProbeBudget: probing the context of a model whose graph folds a
// constant of the sequence squared stops once building it takes more
// than the probe's budget, allocating a few times the budget in all
// (the probes near it, each over it by at most one doubling's growth)
// rather than a constant for every length up to DefaultContext; the note
// says where it stopped and why, and generation runs.
func TestProbeBudget(t *testing.T) {
	defer ir.SetMemoryLimit(ir.SetMemoryLimit(256 << 20))
	budget := probeBudget()
	if budget != 16<<20 {
		t.Fatalf("the probe's budget is %d bytes under a 256 MiB limit, want 16 MiB", budget)
	}
	model := squareConstantModel(t, 16) // 256 MiB at 2048 positions
	before := allocatedBytes()
	d, err := New(model, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	spent := int64(allocatedBytes() - before)
	t.Logf("context %d, %d MiB allocated: %s", d.Context(), spent>>20, d.Note())
	if spent > 16*budget {
		t.Errorf("finding the context allocated %d MiB, over 16 times the probe's budget of %d MiB", spent>>20, budget>>20)
	}
	if d.Context() < minCapacity || d.Context() >= DefaultContext {
		t.Errorf("context %d, want one the budget cut short", d.Context())
	}
	if want := "beyond the probe's budget"; !strings.Contains(d.Note(), want) {
		t.Errorf("note %q does not say %q", d.Note(), want)
	}
	if got := greedy(t, d, []int64{1}, 5); len(got) != 5 {
		t.Errorf("generated %v", got)
	}
	// Asked for, a longer context is built as asked.
	long, err := New(model, Options{Threads: 1, Context: 2 * d.Context()})
	if err != nil {
		t.Fatal(err)
	}
	long.Close()
}

// TestContextOfOne: a context of one position holds the prompt's one
// token, and the caches have no earlier position to reuse (nor can the
// rewrite tell a position axis of size 1 from the others): Auto
// recomputes and says why, OwnCache is refused with the reason, and
// recomputing draws the one token there is room for.
func TestContextOfOne(t *testing.T) {
	model := writeLlama(t, llamagen.Config{Vocab: 61, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 40, Seed: 3})
	const why = "a context of 1 position leaves no earlier position to reuse"
	d, err := New(model, Options{Threads: 1, Context: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Mode() != Recompute || !strings.Contains(d.Note(), why) {
		t.Errorf("auto with a context of 1: %v, note %q; want recompute, saying %q", d.Mode(), d.Note(), why)
	}
	res, err := Run(context.Background(), d, nil, Request{Prompt: []int64{1}, MaxTokens: 1}, func(Event) error { return nil })
	if err != nil || len(res.Tokens) != 1 || res.FinishReason != "length" {
		t.Errorf("%v tokens, %q, %v; want 1, length", res.Tokens, res.FinishReason, err)
	}
	if _, err := New(model, Options{Mode: OwnCache, Threads: 1, Context: 1}); err == nil || !strings.Contains(err.Error(), why) {
		t.Errorf("own cache with a context of 1: %v, want %q", err, why)
	}
}
