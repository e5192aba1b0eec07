package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/update"
)

// padPoolingModel writes a classifier that pools the tokens that are not
// padding, padding being the id pad, as Hugging Face's sequence
// classifiers find their last token (input_ids != pad_token_id): logits
// = Σ over the positions whose token is not pad of wte[token]·head. With
// lm, the per-position logits come out instead, and the mask scales
// them.
func padPoolingModel(t *testing.T, pad int64, lm bool) string {
	t.Helper()
	const vocab, dim, classes = 12, 4, 3
	out := classes
	if lm {
		out = vocab
	}
	wte, head := make([]float32, vocab*dim), make([]float32, dim*out)
	for i := range wte {
		wte[i] = float32(i%5)/5 - 0.4
	}
	for i := range head {
		head[i] = float32(i%3)/3 - 0.3
	}
	wteT, _ := onnx.FromFloat32s("wte", []int64{vocab, dim}, wte)
	headT, _ := onnx.FromFloat32s("head", []int64{dim, int64(out)}, head)
	padT, _ := onnx.FromInt64s("pad", []int64{}, []int64{pad})
	axesT, _ := onnx.FromInt64s("axes", []int64{1}, []int64{-1})
	sumAxes, _ := onnx.FromInt64s("sum_axes", []int64{1}, []int64{1})
	node := func(op string, in []string, outName string, attrs ...*onnx.Attribute) *onnx.Node {
		return &onnx.Node{Name: outName, OpType: op, Inputs: in, Outputs: []string{outName}, Attributes: attrs}
	}
	nodes := []*onnx.Node{
		node("Equal", []string{"input_ids", "pad"}, "is_pad"),
		node("Not", []string{"is_pad"}, "not_pad"),
		node("Cast", []string{"not_pad"}, "keep", &onnx.Attribute{Name: "to", Type: onnx.AttrInt, I: int64(onnx.Float)}),
		node("Unsqueeze", []string{"keep", "axes"}, "keep3"),
		node("Gather", []string{"wte", "input_ids"}, "x"),
		node("MatMul", []string{"x", "head"}, "per_token"),
		node("Mul", []string{"per_token", "keep3"}, "kept"),
	}
	outShape := []onnx.Dim{{Param: "batch"}, {Value: classes, HasValue: true}}
	if lm {
		nodes = append(nodes, node("Identity", []string{"kept"}, "logits"))
		outShape = []onnx.Dim{{Param: "batch"}, {Param: "seq"}, {Value: vocab, HasValue: true}}
	} else {
		nodes = append(nodes, node("ReduceSum", []string{"kept", "sum_axes"}, "logits", &onnx.Attribute{Name: "keepdims", Type: onnx.AttrInt, I: 0}))
	}
	g := &onnx.Graph{
		Name:         "pad-pooling",
		Initializers: []*onnx.Tensor{wteT, headT, padT, axesT, sumAxes},
		Inputs: []*onnx.ValueInfo{{Name: "input_ids", Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Int64, HasShape: true,
			Shape: []onnx.Dim{{Param: "batch"}, {Param: "seq"}}}}},
		Outputs: []*onnx.ValueInfo{{Name: "logits", Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Float, HasShape: true, Shape: outShape}}},
		Nodes:   nodes,
	}
	buf, err := onnx.Encode(&onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, Graph: g})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPadIDOfPoolingClassifier: training or evaluating a classifier that
// compares its tokens with an id (as Hugging Face's sequence classifiers
// find their padding) with another --pad-id warns, naming the node and
// the id to give, and goes on (BART's classifier compares with its end
// token instead, which must not pad); with that id, or on an lm model
// comparing its tokens the same way, nothing is said.
func TestPadIDOfPoolingClassifier(t *testing.T) {
	dataFor := map[Task]string{}
	for _, task := range []Task{TaskClassify, TaskLM} {
		var data strings.Builder
		for i := range 12 {
			label := ""
			if task == TaskClassify {
				label = fmt.Sprintf(",\"label\":%d", i%3)
			}
			fmt.Fprintf(&data, "{\"tokens\":[%d,%d%s]%s}\n", 1+i%9, 2+i%7, strings.Repeat(",3", i%4), label)
		}
		dataFor[task] = filepath.Join(t.TempDir(), "data.jsonl")
		if err := os.WriteFile(dataFor[task], []byte(data.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opt, err := update.DefaultOptimizer(update.OptimizerSGD)
	if err != nil {
		t.Fatal(err)
	}
	run := func(model string, task Task, pad int64) (string, error) {
		var out strings.Builder
		cfg := Config{Model: model, Data: dataFor[task], Task: task, Method: MethodFull, Optimizer: opt,
			Schedule: Schedule{Name: ScheduleConstant}, Steps: 1, Batch: 4, Seed: 1, Backend: "cpu", Threads: 1, PadID: pad}
		_, err := Run(context.Background(), cfg, RunOptions{Dir: filepath.Join(t.TempDir(), "run"), Progress: &out})
		return out.String(), err
	}
	eval := func(model string, task Task, pad int64) (string, error) {
		var out strings.Builder
		m := readEvalModel(t, model)
		_, err := EvalModel(context.Background(), m, model, dataFor[task], EvalOptions{Task: task, Batch: 4, PadID: pad, Progress: &out})
		return out.String(), err
	}
	classifier := padPoolingModel(t, 11, false)
	lm := padPoolingModel(t, 11, true)
	for _, check := range []func(string, Task, int64) (string, error){run, eval} {
		for _, c := range []struct {
			model string
			task  Task
			pad   int64
			warn  bool
		}{{classifier, TaskClassify, 0, true}, {classifier, TaskClassify, 11, false}, {lm, TaskLM, 0, false}} {
			out, err := check(c.model, c.task, c.pad)
			if err != nil {
				t.Errorf("%s, --pad-id %d: %v", c.task, c.pad, err)
			}
			warned := strings.Contains(out, "warning: ") && strings.Contains(out, "give --pad-id 11") && strings.Contains(out, `"is_pad"`)
			if warned != c.warn || !c.warn && strings.Contains(out, "pad_token_id") {
				t.Errorf("%s, --pad-id %d: printed %q, want a warning naming node is_pad and --pad-id 11: %v", c.task, c.pad, out, c.warn)
			}
		}
	}
	src, err := NewModelSource(readEvalModel(t, classifier), ModelSourceOptions{Task: TaskClassify})
	if err != nil {
		t.Fatal(err)
	}
	if src.padCompare == nil || src.padID != 11 {
		t.Errorf("the comparison found: node %v, id %d, want is_pad and 11", src.padCompare, src.padID)
	}
	// Two ids compared: which one pads is not said, and nothing is
	// refused; one id compared twice (through a Cast) is that id.
	comparing := func(ids ...int64) *ir.Graph {
		b := ir.NewBuilder("compare")
		tokens := b.Input("input_ids", ir.Int64, ir.Shape{2, 5})
		sum := b.Const(ir.ScalarFloat32(0))
		for i, id := range ids {
			x, c := tokens, ir.FromInt64s(ir.Shape{}, []int64{id})
			if i%2 == 1 {
				x, c = b.Op1(&ir.Cast{To: ir.Int32}, tokens), ir.FromInt32s(ir.Shape{}, []int32{int32(id)})
			}
			eq := b.Op1(&ir.Binary{Fn: ir.Equal}, x, b.Const(c))
			sum = b.Op1(&ir.Binary{Fn: ir.Add}, sum, b.Op1(&ir.Cast{To: ir.Float32}, eq))
		}
		b.Output("logits", sum)
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	for _, c := range []struct {
		ids   []int64
		found bool
	}{{[]int64{7}, true}, {[]int64{7, 7}, true}, {[]int64{7, 9}, false}, {nil, false}} {
		n, id := tokenComparison(comparing(c.ids...), "input_ids")
		if (n != nil) != c.found || c.found && id != 7 {
			t.Errorf("comparisons with %v: found %v (id %d), want %v", c.ids, n, id, c.found)
		}
	}
}
