package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// TestRunTextChecksTokenizer: a tokenizer with more ids than the model's
// vocabulary is refused before the run, with generate's message, instead
// of failing inside the embedding's Gather; so is one whose text is also
// longer than the model's context (the wrong tokenizer is named first).
func TestRunTextChecksTokenizer(t *testing.T) {
	gpt := filepath.Join(sharedtest.Path(t, "models", "tiny_gpt"), "model.onnx")
	tok := filepath.Join(sharedtest.Path(t, "models", "stories260K"), "tok512.bin")
	for _, text := range []string{"Once upon", strings.Repeat("a", 100000)} {
		code, out, errOut := dstune("run", gpt, "--tokenizer", tok, "--text", text)
		if code != 1 || !strings.Contains(errOut, "the tokenizer has 512 token ids, more than the model's vocabulary of 256") ||
			strings.Contains(errOut, "Gather") || strings.Contains(out, "most likely") {
			t.Errorf("text of %d bytes: exit %d\n%s%s", len(text), code, out, errOut)
		}
	}
}

// TestRunTextChecksContext: a text longer than the model's context
// (stories260K's rotary tables hold 512 positions) is refused with its
// token count and the context's, found by specializing, rather than a
// Reshape error deep in the graph or a mask beyond the memory limit; a
// text of exactly 512 tokens runs.
func TestRunTextChecksContext(t *testing.T) {
	dir := sharedtest.Path(t, "models", "stories260K")
	model, tokPath := filepath.Join(dir, "stories260K.onnx"), filepath.Join(dir, "tok512.bin")
	tok, err := loadTokenizer(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	tokens := func(text string) int {
		ids, _ := tok.Encode(text)
		return len(ids)
	}
	fits := strings.Repeat("a", 511) // BOS and one token per "a"
	if n := tokens(fits); n != 512 {
		t.Fatalf("%d a's encode to %d tokens, want 512", len(fits), n)
	}
	code, out, errOut := dstune("run", model, "--tokenizer", tokPath, "--text", fits)
	if code != 0 || !strings.Contains(out, "most likely next tokens") {
		t.Errorf("512 tokens: exit %d\n%s%s", code, out, errOut)
	}
	for _, text := range []string{fits + "a", strings.Repeat("Once upon a time there was a little girl. ", 60), strings.Repeat("a", 100000)} {
		want := fmt.Sprintf("--text: %d tokens, the model's context holds 512", tokens(text))
		code, out, errOut := dstune("run", model, "--tokenizer", tokPath, "--text", text)
		if code != 2 || !strings.Contains(errOut, want) || strings.Contains(out, "most likely") {
			t.Errorf("text of %d bytes: exit %d, stderr %q; want exit 2 with %q", len(text), code, errOut, want)
		}
	}
}

// TestRunTextChecksPositionTable: tiny_gpt's positions index a table of
// 64 rows, computed in the graph, so 65 tokens specialize and would fail
// only inside the run's Gather; the lookup is checked before the run
// (a word-level tokenizer of three ids gives one token a word).
func TestRunTextChecksPositionTable(t *testing.T) {
	model := filepath.Join(sharedtest.Path(t, "models", "tiny_gpt"), "model.onnx")
	tok := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(tok, []byte(`{"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2},"unk_token":"[UNK]"},"pre_tokenizer":{"type":"Whitespace"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	words := func(n int) string { return strings.TrimSpace(strings.Repeat("a ", n)) }
	code, out, errOut := dstune("run", model, "--tokenizer", tok, "--text", words(64))
	if code != 0 || !strings.Contains(out, "most likely next tokens") {
		t.Errorf("64 tokens: exit %d\n%s%s", code, out, errOut)
	}
	for _, n := range []int{65, 1000, 60000} {
		want := fmt.Sprintf("--text: %d tokens, the model's context holds 64", n)
		code, out, errOut := dstune("run", model, "--tokenizer", tok, "--text", words(n))
		if code != 2 || !strings.Contains(errOut, want) || strings.Contains(errOut, "Gather") || strings.Contains(out, "most likely") {
			t.Errorf("%d tokens: exit %d, stderr %q; want exit 2 with %q", n, code, errOut, want)
		}
	}
}

// TestRunTextEmpty: an empty --text is named as such, not taken for a
// missing mode; --tokenizer without --text is named too.
func TestRunTextEmpty(t *testing.T) {
	dir := sharedtest.Path(t, "models", "stories260K")
	model, tok := filepath.Join(dir, "stories260K.onnx"), filepath.Join(dir, "tok512.bin")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", model, "--tokenizer", tok, "--text", ""}, "--text is empty"},
		{[]string{"run", model, "--text", ""}, "--text is empty"},
		{[]string{"run", model, "--tokenizer", tok}, "--tokenizer goes with --text"},
	} {
		code, _, errOut := dstune(tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "give --check DIR") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 with %q", tc.args[1:], code, errOut, tc.want)
		}
	}
}

// referenceCopy copies tiny_gpt's test_data_set_0 into a new directory
// and adds the given files (copies of its output_0.pb or input_0.pb).
func referenceCopy(t *testing.T, add map[string]string) string {
	t.Helper()
	src := filepath.Join(sharedtest.Path(t, "models", "tiny_gpt"), "test_data_set_0")
	dir := t.TempDir()
	for _, name := range []string{"input_0.pb", "output_0.pb"} {
		copyFile(t, filepath.Join(src, name), filepath.Join(dir, name))
	}
	for name, from := range add {
		copyFile(t, filepath.Join(src, from), filepath.Join(dir, name))
	}
	return dir
}

// TestRunCheckRefusesStrayFiles: reference files that match no graph
// input or output (the model has one of each) are an error naming them,
// not silently left out of an "all outputs match"; a directory without
// the output's file says what it holds.
func TestRunCheckRefusesStrayFiles(t *testing.T) {
	model := filepath.Join(sharedtest.Path(t, "models", "tiny_gpt"), "model.onnx")
	for _, tc := range []struct {
		add  map[string]string
		drop string
		want string
	}{
		{map[string]string{"output_1.pb": "output_0.pb"}, "", "output_1.pb matches no graph input or output: the model has 1 input (input_0.pb) and 1 output (output_0.pb)"},
		{map[string]string{"input_1.pb": "input_0.pb"}, "", "input_1.pb matches no graph input or output"},
		{map[string]string{"input_1.pb": "input_0.pb", "output_01.pb": "output_0.pb"}, "", "input_1.pb, output_01.pb match no graph input or output"},
		{map[string]string{"output_5.pb": "output_0.pb"}, "output_0.pb", "output_5.pb matches no graph input or output"},
		{map[string]string{"notes.txt": "output_0.pb"}, "output_0.pb", "no output_0.pb to compare with (the model has 1 output: logits); the directory holds input_0.pb, notes.txt"},
	} {
		dir := referenceCopy(t, tc.add)
		if tc.drop != "" {
			if err := os.Remove(filepath.Join(dir, tc.drop)); err != nil {
				t.Fatal(err)
			}
		}
		code, out, errOut := dstune("run", model, "--check", dir)
		if code != 1 || !strings.Contains(errOut, tc.want) || strings.Contains(out, "match (") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 with %q", tc.add, code, out, errOut, tc.want)
		}
	}
	// Files outside the layout's names are no reference files.
	dir := referenceCopy(t, map[string]string{"output_0.pb.orig": "output_0.pb", "README": "input_0.pb"})
	if code, out, errOut := dstune("run", model, "--check", dir); code != 0 {
		t.Errorf("other files beside the reference: exit %d\n%s%s", code, out, errOut)
	}
}

// TestRunOutputDirRefusesExisting: --output-dir pointed at a reference
// does not replace its output_0.pb (in --input and --text mode) unless
// --force, and then leaves no temporary file behind.
func TestRunOutputDirRefusesExisting(t *testing.T) {
	gptDir := sharedtest.Path(t, "models", "tiny_gpt")
	model := filepath.Join(gptDir, "model.onnx")
	ref := referenceCopy(t, nil)
	want, err := os.ReadFile(filepath.Join(ref, "output_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	// Set 1's input: its logits differ from the reference's.
	input := filepath.Join(gptDir, "test_data_set_1", "input_0.pb")
	code, out, errOut := dstune("run", model, "--input", "tokens="+input, "--output-dir", ref)
	if code != 2 || !strings.Contains(errOut, "--output-dir "+ref+" holds output_0.pb already (--force overwrites them") || strings.Contains(out, "wrote") {
		t.Errorf("existing output: exit %d\n%s%s", code, out, errOut)
	}
	s := sharedtest.Path(t, "models", "stories260K")
	code, out, errOut = dstune("run", filepath.Join(s, "stories260K.onnx"), "--tokenizer", filepath.Join(s, "tok512.bin"), "--text", "Once upon", "--output-dir", ref)
	if code != 2 || !strings.Contains(errOut, "holds output_0.pb already") || strings.Contains(out, "most likely") {
		t.Errorf("existing output, --text: exit %d\n%s%s", code, out, errOut)
	}
	if got, err := os.ReadFile(filepath.Join(ref, "output_0.pb")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the reference's output_0.pb changed (%v)", err)
	}
	// An output past the model's one, left by another run, is refused
	// too, and removed with --force.
	stale := filepath.Join(ref, "output_3.pb")
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = dstune("run", model, "--input", "tokens="+input, "--output-dir", ref)
	if code != 2 || !strings.Contains(errOut, "holds output_0.pb, output_3.pb already") {
		t.Errorf("a stale output: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = dstune("run", model, "--input", "tokens="+input, "--output-dir", ref, "--force")
	if code != 0 || !strings.Contains(out, "wrote") || !strings.Contains(out, "removed "+stale) {
		t.Fatalf("--force: exit %d\n%s%s", code, out, errOut)
	}
	if got, err := os.ReadFile(filepath.Join(ref, "output_0.pb")); err != nil || bytes.Equal(got, want) {
		t.Errorf("--force did not replace output_0.pb (%v)", err)
	}
	entries, err := os.ReadDir(ref)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "input_0.pb output_0.pb" {
		t.Errorf("the directory holds %v, want input_0.pb and output_0.pb only", names)
	}
	// The rewritten reference is set 1's.
	copyFile(t, input, filepath.Join(ref, "input_0.pb"))
	if code, out, errOut := dstune("run", model, "--check", ref, "--rtol", "0", "--atol", "0"); code != 0 {
		t.Errorf("the forced outputs do not check: exit %d\n%s%s", code, out, errOut)
	}
}

// TestRunDeltaNotSafetensors: an ONNX file given as a delta is named as
// not a safetensors file, not as a header over the size limit.
func TestRunDeltaNotSafetensors(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := filepath.Join(dir, "model.onnx")
	for _, args := range [][]string{
		{"run", model, "--delta", model, "--check", filepath.Join(dir, "test_data_set_0")},
		{"overlap", model, model},
	} {
		code, _, errOut := dstune(args...)
		if code != 1 || !strings.Contains(errOut, model+": not a safetensors file: its first 8 bytes give a header of ") || strings.Contains(errOut, "limit") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestRunTextFixedLength: a model whose token input is declared [batch, 4]
// is told to take exactly 4 tokens, not given a shape error.
func TestRunTextFixedLength(t *testing.T) {
	dir := t.TempDir()
	dim := func(n int64) onnx.Dim {
		if n < 0 {
			return onnx.Dim{Param: "batch"}
		}
		return onnx.Dim{Value: n, HasValue: true}
	}
	vi := func(name string, elem onnx.DataType, dims ...int64) *onnx.ValueInfo {
		var ds []onnx.Dim
		for _, d := range dims {
			ds = append(ds, dim(d))
		}
		return &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: elem, HasShape: true, Shape: ds}}
	}
	emb, err := onnx.FromFloat32s("emb", []int64{2, 2}, []float32{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	// logits = emb[tokens] reshaped to [batch, 4, 2] through a fixed
	// shape: the graph takes 4 tokens only.
	shape, err := onnx.FromInt64s("shape", []int64{3}, []int64{-1, 4, 2})
	if err != nil {
		t.Fatal(err)
	}
	m := &onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, Graph: &onnx.Graph{Name: "fixed",
		Inputs: []*onnx.ValueInfo{vi("tokens", onnx.Int64, -1, 4)}, Outputs: []*onnx.ValueInfo{vi("logits", onnx.Float, -1, 4, 2)},
		Initializers: []*onnx.Tensor{emb, shape},
		Nodes: []*onnx.Node{{OpType: "Gather", Inputs: []string{"emb", "tokens"}, Outputs: []string{"e"}},
			{OpType: "Reshape", Inputs: []string{"e", "shape"}, Outputs: []string{"logits"}}}}}
	model := filepath.Join(dir, "fixed.onnx")
	if err := onnx.WriteFile(model, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(tok, []byte(`{"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1},"unk_token":"[UNK]"},"pre_tokenizer":{"type":"Whitespace"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := dstune("run", model, "--tokenizer", tok, "--text", "a a a a")
	if code != 0 || !strings.Contains(out, "most likely next tokens") {
		t.Errorf("4 tokens: exit %d\n%s%s", code, out, errOut)
	}
	for _, text := range []string{"a a", "a a a a a a"} {
		want := fmt.Sprintf(`--text: %d tokens, the model's token input "tokens" takes exactly 4`, len(strings.Fields(text)))
		code, out, errOut := dstune("run", model, "--tokenizer", tok, "--text", text)
		if code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("%q: exit %d, stderr %q (stdout %q); want exit 2 with %q", text, code, errOut, out, want)
		}
	}
}

// TestRunTextEncoderAndInt32: --text on a model whose output is hidden
// states [1, T, d] rather than logits (an encoder) checks its tokenizer
// against the token embedding's rows, runs and writes the output, saying
// it has no next tokens to show; and an int32 token input is fed int32.
func TestRunTextEncoderAndInt32(t *testing.T) {
	dir := t.TempDir()
	vi := func(name string, elem onnx.DataType, dims ...onnx.Dim) *onnx.ValueInfo {
		return &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: elem, HasShape: true, Shape: dims}}
	}
	batch, seq, three := onnx.Dim{Param: "batch"}, onnx.Dim{Param: "seq"}, onnx.Dim{Value: 3, HasValue: true}
	emb, err := onnx.FromFloat32s("emb", []int64{7, 3}, make([]float32, 21))
	if err != nil {
		t.Fatal(err)
	}
	m := &onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, Graph: &onnx.Graph{Name: "encoder",
		Inputs: []*onnx.ValueInfo{vi("input_ids", onnx.Int32, batch, seq)}, Outputs: []*onnx.ValueInfo{vi("last_hidden_state", onnx.Float, batch, seq, three)},
		Initializers: []*onnx.Tensor{emb},
		Nodes:        []*onnx.Node{{OpType: "Gather", Inputs: []string{"emb", "input_ids"}, Outputs: []string{"last_hidden_state"}}}}}
	model := filepath.Join(dir, "encoder.onnx")
	if err := onnx.WriteFile(model, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(tok, []byte(`{"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6},"unk_token":"[UNK]"},"pre_tokenizer":{"type":"Whitespace"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	code, stdout, errOut := dstune("run", model, "--tokenizer", tok, "--text", "a b f", "--output-dir", out)
	if code != 0 || !strings.Contains(errOut, "no next tokens to show") {
		t.Fatalf("exit %d\n%s%s", code, stdout, errOut)
	}
	if st, err := os.Stat(filepath.Join(out, "output_0.pb")); err != nil || st.Size() < 36 {
		t.Errorf("output_0.pb: %v", err)
	}
}

// TestRunInputWithInitializer: a graph input that has an initializer (an
// overridable default, IR 4 on) is the initializer's value for dstune;
// --input naming it says so rather than that the model has no such input.
func TestRunInputWithInitializer(t *testing.T) {
	m := &onnx.Model{Graph: &onnx.Graph{Name: "defaulted",
		Inputs:       []*onnx.ValueInfo{inspectTensorInfo("X", onnx.Float, 2), inspectTensorInfo("W", onnx.Float, 2)},
		Initializers: []*onnx.Tensor{inspectInitializer(t, "W", ir.Float32, 2)},
		Nodes:        []*onnx.Node{{OpType: "Add", Inputs: []string{"X", "W"}, Outputs: []string{"Y"}}},
		Outputs:      []*onnx.ValueInfo{inspectTensorInfo("Y", onnx.Float, 2)}}}
	path := writeInspectModel(t, m)
	in := filepath.Join(t.TempDir(), "w.pb")
	x, err := ir.TensorToONNX("W", ir.FromFloat32s(ir.Shape{2}, []float32{1, 2}))
	if err != nil {
		t.Fatal(err)
	}
	if err := onnx.WriteTensorFile(in, x); err != nil {
		t.Fatal(err)
	}
	code, _, e := dstune("run", path, "--input", "W="+in, "--output-dir", t.TempDir())
	if code != 2 || !strings.Contains(e, `graph input "W" has an initializer, whose value dstune uses`) || !strings.Contains(e, "(inputs: X)") {
		t.Errorf("exit %d: %s", code, e)
	}
}

// TestRunMemoryBudget: a graph whose values need more memory at once
// than --max-memory allows is refused before it is allocated, though no
// tensor alone passes the budget; within the budget it runs.
func TestRunMemoryBudget(t *testing.T) {
	shape, err := ir.TensorToONNX("shape", ir.FromInt64s(ir.Shape{1}, []int64{1 << 26})) // 256 MiB of float32
	if err != nil {
		t.Fatal(err)
	}
	m := &onnx.Model{Graph: &onnx.Graph{Name: "wide",
		Inputs:       []*onnx.ValueInfo{inspectTensorInfo("X", onnx.Float, 1)},
		Initializers: []*onnx.Tensor{shape},
		Nodes: []*onnx.Node{
			{OpType: "Expand", Inputs: []string{"X", "shape"}, Outputs: []string{"A"}},
			{OpType: "Tanh", Inputs: []string{"A"}, Outputs: []string{"B"}},
			{OpType: "Add", Inputs: []string{"A", "B"}, Outputs: []string{"C"}},
			{OpType: "ReduceMax", Inputs: []string{"C"}, Outputs: []string{"Y"}, Attributes: []*onnx.Attribute{{Name: "keepdims", Type: onnx.AttrInt, I: 0}}},
		},
		Outputs: []*onnx.ValueInfo{inspectTensorInfo("Y", onnx.Float)}}}
	path := writeInspectModel(t, m)
	in := filepath.Join(t.TempDir(), "x.pb")
	x, err := ir.TensorToONNX("X", ir.FromFloat32s(ir.Shape{1}, []float32{0.5}))
	if err != nil {
		t.Fatal(err)
	}
	if err := onnx.WriteTensorFile(in, x); err != nil {
		t.Fatal(err)
	}
	code, _, e := dstune("run", path, "--input", "X="+in, "--output-dir", t.TempDir(), "--max-memory", "300MiB")
	if code != 1 || !strings.Contains(e, "need 512.0 MiB at once, more than the 300.0 MiB allowed (--max-memory)") {
		t.Errorf("--max-memory 300MiB: exit %d, %s", code, e)
	}
	if code, _, e := dstune("run", path, "--input", "X="+in, "--output-dir", t.TempDir(), "--max-memory", "2GiB"); code != 0 {
		t.Errorf("--max-memory 2GiB: exit %d, %s", code, e)
	}
}
