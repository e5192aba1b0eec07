package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// inspectTensorInfo is a tensor graph input or output; a dimension is an
// int (fixed) or a string (symbolic).
func inspectTensorInfo(name string, elem onnx.DataType, dims ...any) *onnx.ValueInfo {
	t := &onnx.Type{Kind: onnx.TypeTensor, ElemType: elem, HasShape: true}
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			t.Shape = append(t.Shape, onnx.Dim{Value: int64(d), HasValue: true})
		case string:
			t.Shape = append(t.Shape, onnx.Dim{Param: d})
		}
	}
	return &onnx.ValueInfo{Name: name, Type: t}
}

// inspectInitializer is a float32 initializer of shape holding 0.01, 0.02 …,
// converted to dt.
func inspectInitializer(t *testing.T, name string, dt ir.DType, shape ...int) *onnx.Tensor {
	t.Helper()
	s := ir.Shape(shape)
	v := make([]float32, s.Size())
	for i := range v {
		v[i] = float32(i+1) / 100
	}
	ot, err := ir.TensorToONNX(name, ir.Convert(ir.FromFloat32s(s, v), dt))
	if err != nil {
		t.Fatal(err)
	}
	return ot
}

// writeInspectModel writes m (opset 17 plus imports) to a file of dir.
func writeInspectModel(t *testing.T, m *onnx.Model) string {
	t.Helper()
	if m.IRVersion == 0 {
		m.IRVersion = 8
	}
	m.OpsetImports = append([]onnx.OpsetID{{Version: 17}}, m.OpsetImports...)
	path := filepath.Join(t.TempDir(), m.Graph.Name+".onnx")
	if err := onnx.WriteFile(path, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// inspectJSON runs inspect --json with args and decodes its report, and
// the same object as raw keys.
func inspectJSON(t *testing.T, args ...string) (inspectReport, map[string]json.RawMessage) {
	t.Helper()
	code, out, stderr := dstune(append([]string{"inspect", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("inspect %v: exit %d: %s", args, code, stderr)
	}
	var rep inspectReport
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	return rep, raw
}

// TestInspectLocalFunctions: a call of a model-local function is not an
// unsupported op when the ops of its body are supported; the body's ops
// are counted (once, though the function is called twice) and the
// function's body listed; a function the graph never calls is not
// counted, and one that calls itself does not hang the count.
func TestInspectLocalFunctions(t *testing.T) {
	lin := &onnx.Function{Name: "MyLin", Domain: "local", Inputs: []string{"X", "A", "B"}, Outputs: []string{"Y"},
		OpsetImports: []onnx.OpsetID{{Version: 17}},
		Nodes: []*onnx.Node{
			{OpType: "MatMul", Inputs: []string{"X", "A"}, Outputs: []string{"T"}},
			{OpType: "Add", Inputs: []string{"T", "B"}, Outputs: []string{"Y"}},
		}}
	unused := &onnx.Function{Name: "Unused", Domain: "local", Inputs: []string{"X"}, Outputs: []string{"Y"},
		Nodes: []*onnx.Node{{OpType: "NoSuchOp", Inputs: []string{"X"}, Outputs: []string{"Y"}}}}
	model := writeInspectModel(t, &onnx.Model{OpsetImports: []onnx.OpsetID{{Domain: "local", Version: 1}},
		Functions: []*onnx.Function{lin, unused},
		Graph: &onnx.Graph{Name: "twolin",
			Inputs:  []*onnx.ValueInfo{inspectTensorInfo("x", onnx.Float, "N", 4)},
			Outputs: []*onnx.ValueInfo{inspectTensorInfo("y", onnx.Float, "N", 3)},
			Initializers: []*onnx.Tensor{inspectInitializer(t, "W1", ir.Float32, 4, 4), inspectInitializer(t, "b1", ir.Float32, 4),
				inspectInitializer(t, "W2", ir.Float32, 4, 3), inspectInitializer(t, "b2", ir.Float32, 3)},
			Nodes: []*onnx.Node{
				{Name: "lin1", OpType: "MyLin", Domain: "local", Inputs: []string{"x", "W1", "b1"}, Outputs: []string{"h"}},
				{OpType: "Relu", Inputs: []string{"h"}, Outputs: []string{"r"}},
				{Name: "lin2", OpType: "MyLin", Domain: "local", Inputs: []string{"r", "W2", "b2"}, Outputs: []string{"y"}},
			}}})

	rep, _ := inspectJSON(t, model)
	if len(rep.Unsupported) != 0 {
		t.Errorf("unsupported_ops %v, want none: MyLin's body is MatMul and Add", rep.Unsupported)
	}
	wantOps := map[string]int{"local::MyLin": 2, "Relu": 1, "MatMul": 1, "Add": 1}
	if !mapsEqual(rep.Ops, wantOps) || rep.Nodes != 3 {
		t.Errorf("ops %v (%d nodes), want %v (3 nodes)", rep.Ops, rep.Nodes, wantOps)
	}
	if len(rep.Functions) != 1 || !mapsEqual(rep.Functions["local::MyLin"], map[string]int{"MatMul": 1, "Add": 1}) {
		t.Errorf("functions %v, want only local::MyLin of MatMul and Add", rep.Functions)
	}
	if len(rep.Modules) != 4 || rep.SiloNote != "" {
		t.Errorf("modules %+v, note %q: want W1, b1, W2, b2", rep.Modules, rep.SiloNote)
	}
	code, out, stderr := dstune("inspect", model)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(out, "not supported") || !strings.Contains(out, "local::MyLin             2  model-local function (body: Add, MatMul)") ||
		!strings.Contains(out, "MatMul                   1") {
		t.Errorf("text form:\n%s", out)
	}

	// A function of an unknown op is unsupported through its body's op.
	lin.Nodes[1].OpType = "NoSuchOp"
	lin.Nodes[1].Inputs = []string{"T"}
	model = writeInspectModel(t, &onnx.Model{OpsetImports: []onnx.OpsetID{{Domain: "local", Version: 1}},
		Functions: []*onnx.Function{lin},
		Graph: &onnx.Graph{Name: "badlin",
			Inputs:       []*onnx.ValueInfo{inspectTensorInfo("x", onnx.Float, "N", 4)},
			Outputs:      []*onnx.ValueInfo{inspectTensorInfo("y", onnx.Float, "N", 4)},
			Initializers: []*onnx.Tensor{inspectInitializer(t, "W1", ir.Float32, 4, 4), inspectInitializer(t, "b1", ir.Float32, 4)},
			Nodes:        []*onnx.Node{{OpType: "MyLin", Domain: "local", Inputs: []string{"x", "W1", "b1"}, Outputs: []string{"y"}}}}})
	if rep, _ := inspectJSON(t, model); !slices.Equal(rep.Unsupported, []string{"NoSuchOp"}) || rep.SiloNote == "" {
		t.Errorf("function of NoSuchOp: unsupported_ops %v, silo note %q", rep.Unsupported, rep.SiloNote)
	}

	// A function that calls itself is counted once; the import refuses it.
	rec := &onnx.Function{Name: "Rec", Domain: "local", Inputs: []string{"X"}, Outputs: []string{"Y"},
		Nodes: []*onnx.Node{{OpType: "Rec", Domain: "local", Inputs: []string{"X"}, Outputs: []string{"Y"}}}}
	model = writeInspectModel(t, &onnx.Model{OpsetImports: []onnx.OpsetID{{Domain: "local", Version: 1}},
		Functions: []*onnx.Function{rec},
		Graph: &onnx.Graph{Name: "rec",
			Inputs:  []*onnx.ValueInfo{inspectTensorInfo("x", onnx.Float, "N", 4)},
			Outputs: []*onnx.ValueInfo{inspectTensorInfo("y", onnx.Float, "N", 4)},
			Nodes:   []*onnx.Node{{OpType: "Rec", Domain: "local", Inputs: []string{"x"}, Outputs: []string{"y"}}}}})
	rep, _ = inspectJSON(t, model)
	if rep.Ops["local::Rec"] != 2 || !mapsEqual(rep.Functions["local::Rec"], map[string]int{"local::Rec": 1}) || !strings.Contains(rep.SiloNote, "calls itself") {
		t.Errorf("recursive function: ops %v, functions %v, note %q", rep.Ops, rep.Functions, rep.SiloNote)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// halfLM is a language model whose embedding is float16 and whose head is
// bfloat16 (each cast to float32 where it is read), with a float32 bias:
// tokens [batch, seq] → logits [batch, seq, 16].
func halfLM(t *testing.T) string {
	cast := func(in, out string) *onnx.Node {
		return &onnx.Node{OpType: "Cast", Inputs: []string{in}, Outputs: []string{out},
			Attributes: []*onnx.Attribute{{Name: "to", Type: onnx.AttrInt, I: int64(onnx.Float)}}}
	}
	return writeInspectModel(t, &onnx.Model{Graph: &onnx.Graph{Name: "halflm",
		Inputs:  []*onnx.ValueInfo{inspectTensorInfo("tokens", onnx.Int64, "batch", "seq")},
		Outputs: []*onnx.ValueInfo{inspectTensorInfo("logits", onnx.Float, "batch", "seq", 16)},
		Initializers: []*onnx.Tensor{inspectInitializer(t, "emb.weight", ir.Float16, 16, 8),
			inspectInitializer(t, "head.weight", ir.BFloat16, 8, 16), inspectInitializer(t, "head.bias", ir.Float32, 16)},
		Nodes: []*onnx.Node{
			{OpType: "Gather", Inputs: []string{"emb.weight", "tokens"}, Outputs: []string{"h16"}},
			cast("h16", "h"),
			cast("head.weight", "w"),
			{OpType: "MatMul", Inputs: []string{"h", "w"}, Outputs: []string{"z"}},
			{OpType: "Add", Inputs: []string{"z", "head.bias"}, Outputs: []string{"logits"}},
		}}})
}

// TestInspectHalfPrecisionSilos: float16 and bfloat16 parameters are in
// DST's view, as train trains them (float32 master copies): the silos are
// the ones a DST run of the model makes. A float64 parameter, which train
// refuses, is in no silo, and the text form names it.
func TestInspectHalfPrecisionSilos(t *testing.T) {
	model := halfLM(t)
	rep, _ := inspectJSON(t, model, "--eps", "0.01")
	var names []string
	for _, m := range rep.Modules {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"emb.weight", "head.weight", "head.bias"}) || rep.SiloNote != "" {
		t.Fatalf("modules %v (note %q), want emb.weight, head.weight, head.bias", names, rep.SiloNote)
	}
	if none := rep.Silos["none"]; len(none) != 1 || none[0].Elements != 128+128+16 || none[0].K != 3 {
		t.Errorf("silo none %+v, want 272 entries, k 3", none)
	}
	if rep, _ := inspectJSON(t, model, "--trainable", `^emb\.`); len(rep.Modules) != 1 || rep.Modules[0].Name != "emb.weight" {
		t.Errorf("--trainable ^emb: modules %+v", rep.Modules)
	}
	code, out, _ := dstune("inspect", model)
	if code != 0 || !strings.Contains(out, "2 of the parameters are float16 or bfloat16") {
		t.Errorf("text form does not say which parameters train as float32 copies:\n%s", out)
	}

	// The module-layer silos are those of a DST run.
	data := filepath.Join(t.TempDir(), "train.jsonl")
	if err := os.WriteFile(data, []byte("{\"tokens\":[1,2,3,4]}\n{\"tokens\":[5,6,7,8]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(t.TempDir(), "run")
	code, _, stderr := dstune("train", model, "--data", data, "--task", "lm", "--method", "dst", "--steps", "1", "--batch", "2",
		"--eps", "0.01", "--threads", "1", "--out", run)
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr)
	}
	recs := sharedtest.ReadMetrics(t, run)
	var trained []string
	for _, r := range recs {
		for name := range r.Silos {
			if !slices.Contains(trained, name) {
				trained = append(trained, name)
			}
		}
	}
	slices.Sort(trained)
	var listed []string
	for _, s := range rep.Silos["module-layer"] {
		listed = append(listed, s.Name)
	}
	slices.Sort(listed)
	if !slices.Equal(trained, listed) {
		t.Errorf("train's silos %v, inspect's %v", trained, listed)
	}

	model = writeInspectModel(t, &onnx.Model{Graph: &onnx.Graph{Name: "f64",
		Inputs:       []*onnx.ValueInfo{inspectTensorInfo("x", onnx.Float, "N", 4)},
		Outputs:      []*onnx.ValueInfo{inspectTensorInfo("y", onnx.Float, "N", 4)},
		Initializers: []*onnx.Tensor{inspectInitializer(t, "scale", ir.Float64, 4), inspectInitializer(t, "bias", ir.Float32, 4)},
		Nodes: []*onnx.Node{
			{OpType: "Cast", Inputs: []string{"scale"}, Outputs: []string{"s"},
				Attributes: []*onnx.Attribute{{Name: "to", Type: onnx.AttrInt, I: int64(onnx.Float)}}},
			{OpType: "Mul", Inputs: []string{"x", "s"}, Outputs: []string{"z"}},
			{OpType: "Add", Inputs: []string{"z", "bias"}, Outputs: []string{"y"}},
		}}})
	if rep, _ := inspectJSON(t, model); len(rep.Modules) != 1 || rep.Modules[0].Name != "bias" {
		t.Errorf("float64 parameter: modules %+v, want bias alone", rep.Modules)
	}
	if code, out, _ := dstune("inspect", model); code != 0 || !strings.Contains(out, "left out: scale (float64); train refuses") {
		t.Errorf("the text form does not name the float64 parameter:\n%s", out)
	}
}

// TestInspectJSONKeysAlwaysPresent: the documented keys are there when
// their values are zero or empty: silo_eps at --eps 0, modules when
// --trainable matches nothing, functions in a model without any.
func TestInspectJSONKeysAlwaysPresent(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	_, raw := inspectJSON(t, model, "--eps", "0", "--trainable", "^matches-nothing$")
	for key, want := range map[string]string{"silo_eps": "0", "modules": "[]", "functions": "{}", "skipped_initializers": "[]"} {
		if got, ok := raw[key]; !ok || string(got) != want {
			t.Errorf("key %q: %s (present %v), want %s", key, got, ok, want)
		}
	}
	if _, ok := raw["silos"]; !ok {
		t.Error("no silos key")
	}
	if _, ok := raw["silo_note"]; ok {
		t.Error("silo_note present for a graph that imports")
	}
}

// TestInspectEscapesNames: names, the producer and symbolic dimensions
// holding control characters are printed quoted and escaped by the text
// form, so the terminal sees no control character but the line ends;
// --json keeps them exact.
func TestInspectEscapesNames(t *testing.T) {
	evil := "evil\x1b[31mRED\nfake line\r"
	model := writeInspectModel(t, &onnx.Model{ProducerName: "p\x1b]0;title\a", Graph: &onnx.Graph{Name: "ctrl",
		Inputs:       []*onnx.ValueInfo{inspectTensorInfo("x", onnx.Float, "N\a", 4)},
		Outputs:      []*onnx.ValueInfo{inspectTensorInfo("y\u202e", onnx.Float, "N\a", 3)},
		Initializers: []*onnx.Tensor{inspectInitializer(t, evil, ir.Float32, 4, 3), inspectInitializer(t, `"W"`, ir.Float32, 3)},
		Nodes: []*onnx.Node{
			{OpType: "MatMul", Inputs: []string{"x", evil}, Outputs: []string{"z"}},
			{OpType: "Add", Inputs: []string{"z", `"W"`}, Outputs: []string{"y\u202e"}},
		}}})
	code, out, stderr := dstune("inspect", model)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for i, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || r == '\u202e' {
			t.Fatalf("text form holds %U at byte %d:\n%q", r, i, out)
		}
	}
	for _, want := range []string{`from "p\x1b]0;title\a"`, `["N\a", 4]`, `"y\u202e"`, `"evil\x1b[31mRED\nfake line\r"   param`,
		`"\"W\""`} {
		if !strings.Contains(out, want) {
			t.Errorf("text form lacks %s:\n%s", want, out)
		}
	}
	rep, _ := inspectJSON(t, model)
	if rep.Producer != "p\x1b]0;title\a" || rep.Initializers[0].Name != evil || rep.Inputs[0].Shape[0] != "N\a" {
		t.Errorf("--json changed the names: %q %q %v", rep.Producer, rep.Initializers[0].Name, rep.Inputs[0].Shape)
	}
}

// TestInspectTextEscape: free text (an import error) keeps its words and
// quotes, with only unprintable characters and bytes that are not UTF-8
// escaped.
func TestInspectTextEscape(t *testing.T) {
	for in, want := range map[string]string{
		`node 0 "x" (Foo): bad`:   `node 0 "x" (Foo): bad`,
		"a\x1b[2Jb\nc\xffé\u202e": `a\x1b[2Jb\nc\xffé\u202e`,
	} {
		if got := textEscape(in); got != want {
			t.Errorf("textEscape(%q) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{"wte.weight": "wte.weight", "a b": "a b", `"q"`: `"\"q\""`, "t\tab": `"t\tab"`, "\xff": `"\xff"`} {
		if got := textName(in); got != want {
			t.Errorf("textName(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestInspectReadAtImportScopesSkipped: a float initializer import reads
// (Dropout's ratio) is a constant "read at import", with no use count; a
// weight read inside an If branch and at the top level is tied, its uses
// naming the branch; an unused complex initializer is listed as skipped.
func TestInspectReadAtImportScopesSkipped(t *testing.T) {
	branch := func(name, op string) *onnx.Graph {
		return &onnx.Graph{Name: name, Nodes: []*onnx.Node{{OpType: op, Inputs: []string{"Y", "W"}, Outputs: []string{name + "_out"}}},
			Outputs: []*onnx.ValueInfo{inspectTensorInfo(name+"_out", onnx.Float, 2)}}
	}
	ratio := inspectInitializer(t, "ratio", ir.Float32)
	complexInit := &onnx.Tensor{Name: "U", DataType: onnx.Complex64, Dims: []int64{1}, Raw: make([]byte, 8), RawOffset: -1}
	m := &onnx.Model{Graph: &onnx.Graph{Name: "scopes",
		Inputs:       []*onnx.ValueInfo{inspectTensorInfo("X", onnx.Float, 2), inspectTensorInfo("C", onnx.Bool)},
		Initializers: []*onnx.Tensor{inspectInitializer(t, "W", ir.Float32, 2), ratio, complexInit},
		Nodes: []*onnx.Node{
			{OpType: "Dropout", Inputs: []string{"X", "ratio"}, Outputs: []string{"D"}},
			{OpType: "Mul", Inputs: []string{"D", "W"}, Outputs: []string{"Y"}},
			{OpType: "If", Inputs: []string{"C"}, Outputs: []string{"Z"}, Attributes: []*onnx.Attribute{
				{Name: "then_branch", Type: onnx.AttrGraph, G: branch("then", "Add")},
				{Name: "else_branch", Type: onnx.AttrGraph, G: branch("else", "Sub")}}},
		},
		Outputs: []*onnx.ValueInfo{inspectTensorInfo("Z", onnx.Float, 2)}}}
	path := writeInspectModel(t, m)
	rep, _ := inspectJSON(t, path)
	got := map[string]inspectTensor{}
	for _, it := range rep.Initializers {
		got[it.Name] = it
	}
	if r := got["ratio"]; r.Parameter || !r.ReadAtImport {
		t.Errorf("ratio: %+v, want a constant read at import", r)
	}
	if w := got["W"]; !w.Parameter || w.Uses != 3 || !slices.Contains(rep.Tied, "W") {
		t.Errorf("W: %+v (tied %v), want a parameter of 3 uses, tied", w, rep.Tied)
	}
	if len(rep.Skipped) != 1 || rep.Skipped[0].Name != "U" || rep.Skipped[0].DType != "COMPLEX64" {
		t.Errorf("skipped %+v, want U (COMPLEX64)", rep.Skipped)
	}
	code, out, stderr := dstune("inspect", path)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"(read at import)", `(Sub) in node 2 "" (If) else_branch`, `(Add) in node 2 "" (If) then_branch`, "U                                COMPLEX64 [1]"} {
		if !strings.Contains(out, want) {
			t.Errorf("the text form lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ratio") && strings.Contains(out, "0 uses") {
		t.Errorf("a constant is given a use count:\n%s", out)
	}
}
