package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func dstune(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = runMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRunCheckTinyModels(t *testing.T) {
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		for _, set := range []string{"test_data_set_0", "test_data_set_1"} {
			dir := sharedtest.Path(t, "models", name)
			code, out, errOut := dstune("run", filepath.Join(dir, "model.onnx"), "--check", filepath.Join(dir, set))
			if code != 0 {
				t.Errorf("%s/%s: exit %d\n%s%s", name, set, code, out, errOut)
			}
			if !strings.Contains(out, "logits") || !strings.Contains(out, "max abs") || !strings.Contains(out, "all 1 outputs match") {
				t.Errorf("%s/%s: output:\n%s", name, set, out)
			}
		}
	}
}

// TestRunCheckOff: outputs beyond tolerance exit 1 and say how far off
// they are.
func TestRunCheckOff(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := filepath.Join(dir, "model.onnx")
	code, out, errOut := dstune("run", model, "--check", filepath.Join(dir, "test_data_set_0"), "--rtol", "0", "--atol", "1e-9")
	if code != 1 || !strings.Contains(out, "OFF") || !strings.Contains(errOut, "1 of 1 outputs off") {
		t.Errorf("tight tolerance: exit %d\n%s%s", code, out, errOut)
	}
	// A wrong expected output (another input's logits) is off at the
	// default tolerance too: set 1's input with set 0's expected logits.
	bad := t.TempDir()
	copyFile(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"), filepath.Join(bad, "input_0.pb"))
	ot, err := onnx.ReadTensorFile(filepath.Join(dir, "test_data_set_0", "output_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := ir.TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	want.Float32s()[100] += 0.01
	ot2, err := ir.TensorToONNX("logits", want)
	if err != nil {
		t.Fatal(err)
	}
	if err := onnx.WriteTensorFile(filepath.Join(bad, "output_0.pb"), ot2); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = dstune("run", model, "--check", bad)
	if code != 1 || !strings.Contains(out, "1 of 12288 off") {
		t.Errorf("one wrong element: exit %d\n%s%s", code, out, errOut)
	}
}

// TestRunInputOutputDir: --input/--output-dir writes output_N.pb that
// --check then accepts bit for bit.
func TestRunInputOutputDir(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_bert")
	model := filepath.Join(dir, "model.onnx")
	out := t.TempDir()
	input := filepath.Join(dir, "test_data_set_1", "input_0.pb")
	code, stdout, stderr := dstune("run", model, "--input", "tokens="+input, "--output-dir", out)
	if code != 0 || !strings.Contains(stdout, "output_0.pb") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	copyFile(t, input, filepath.Join(out, "input_0.pb"))
	code, stdout, stderr = dstune("run", model, "--check", out, "--rtol", "0", "--atol", "0")
	if code != 0 {
		t.Errorf("rerun differs from the written outputs: exit %d\n%s%s", code, stdout, stderr)
	}
	// And the written logits match PyTorch's.
	code, stdout, stderr = dstune("run", model, "--check", filepath.Join(dir, "test_data_set_1"))
	if code != 0 {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestRunNoInputs: a model without inputs runs with --output-dir alone;
// a model with inputs is then told which it lacks.
func TestRunNoInputs(t *testing.T) {
	value, err := onnx.NewTensor("", onnx.Float, []int64{2}, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-2)))
	if err != nil {
		t.Fatal(err)
	}
	model := writeInspectModel(t, &onnx.Model{Graph: &onnx.Graph{Name: "constant",
		Outputs: []*onnx.ValueInfo{inspectTensorInfo("y", onnx.Float, 2)},
		Nodes: []*onnx.Node{
			{OpType: "Constant", Outputs: []string{"c"}, Attributes: []*onnx.Attribute{{Name: "value", Type: onnx.AttrTensor, T: value}}},
			{OpType: "Neg", Inputs: []string{"c"}, Outputs: []string{"y"}},
		}}})
	out := t.TempDir()
	if code, stdout, stderr := dstune("run", model, "--output-dir", out); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	got, err := onnx.ReadTensorFile(filepath.Join(out, "output_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := got.Bytes()
	if want := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, math.Float32bits(-1.5)), math.Float32bits(2)); !bytes.Equal(b, want) {
		t.Errorf("output %v, want -1.5, 2", b)
	}
	tiny := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	if code, _, stderr := dstune("run", tiny, "--output-dir", t.TempDir()); code != 2 || !strings.Contains(stderr, `no --input for the model's input "tokens"`) {
		t.Errorf("tiny_gpt with --output-dir alone: exit %d, %s", code, stderr)
	}
}

func TestRunUsageAndErrors(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := filepath.Join(dir, "model.onnx")
	input := filepath.Join(dir, "test_data_set_0", "input_0.pb")
	// An input file where an output goes is refused, not overwritten.
	inOut := t.TempDir()
	copyFile(t, input, filepath.Join(inOut, "output_0.pb"))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run", model}, 2, "give --check DIR"},
		{[]string{"run"}, 2, "want exactly one model file"},
		{[]string{"run", model, "--check", dir, "--input", "tokens=" + input}, 2, "different modes: give one"},
		{[]string{"run", model, "--input", "tokens=" + input}, 2, "--input needs --output-dir"},
		{[]string{"run", model, "--input", "tokens=" + input, "--output-dir", t.TempDir(), "--backend", "foo"}, 2, `unknown --backend "foo" (have cpu, pjrt)`},
		{[]string{"run", model, "--input", "tokens=" + input, "--output-dir", input}, 2, "--output-dir " + input + " is not a directory"},
		{[]string{"run", model, "--input", "nope=" + input, "--output-dir", t.TempDir()}, 2, `no input "nope"`},
		{[]string{"run", model, "--input", "tokens", "--output-dir", t.TempDir()}, 2, "want NAME=FILE.pb"},
		{[]string{"run", model, "--check", t.TempDir()}, 1, "input_0.pb"},
		{[]string{"run", filepath.Join(t.TempDir(), "missing.onnx"), "--check", dir}, 1, "missing.onnx"},
		{[]string{"run", model, "--check", dir}, 1, "input_0.pb"},
		{[]string{"run", model, "--input", "tokens=" + filepath.Join(inOut, "output_0.pb"), "--output-dir", inOut}, 2, `output_0.pb is the input file of "tokens": write the outputs to another directory`},
	} {
		code, out, errOut := dstune(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q (stdout %q); want exit %d with %q", tc.args[1:], code, errOut, out, tc.code, tc.want)
		}
	}
}

// TestRunDelta: --delta writes the delta's values into the parameters
// before running (the result equals running with the parameter edited by
// hand), and a delta for another base model is refused unless --force.
func TestRunDelta(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := filepath.Join(dir, "model.onnx")
	m, err := onnx.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var inits []dst.Initializer
	for _, it := range m.Graph.Initializers {
		data, err := it.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		inits = append(inits, dst.Initializer{Name: it.Name, DType: "F32", Dims: it.Dims, Data: data})
	}
	hash, err := dst.BaseHash(inits)
	if err != nil {
		t.Fatal(err)
	}
	delta := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash, Method: "dst"}, Tensors: []dst.TensorDelta{
		{Name: "ln_f.bias", Dims: []int64{64}, Indices: []int64{0, 5, 63}, Values: []float32{1, -2, 3}},
	}}
	tmp := t.TempDir()
	deltaPath := filepath.Join(tmp, "delta.safetensors")
	if err := dst.WriteDelta(deltaPath, delta); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(dir, "test_data_set_0", "input_0.pb")
	outDelta := filepath.Join(tmp, "with_delta")
	if code, o, e := dstune("run", model, "--delta", deltaPath, "--input", "tokens="+input, "--output-dir", outDelta); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, o, e)
	}
	// The same change made by hand in a patched copy of the model.
	bias := m.Graph.Initializer("ln_f.bias")
	raw, err := bias.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	b := ir.FromFloat32s(ir.Shape{64}, make([]float32, 64))
	copy(b.Bytes(), raw)
	b.Float32s()[0], b.Float32s()[5], b.Float32s()[63] = 1, -2, 3
	patched := filepath.Join(tmp, "patched.onnx")
	if err := onnx.PatchFile(model, patched, m, map[string][]byte{"ln_f.bias": b.Bytes()}); err != nil {
		t.Fatal(err)
	}
	copyFile(t, input, filepath.Join(outDelta, "input_0.pb"))
	if code, o, e := dstune("run", patched, "--check", outDelta, "--rtol", "0", "--atol", "0"); code != 0 {
		t.Errorf("patched model vs --delta run: exit %d\n%s%s", code, o, e)
	}
	// The unchanged model's logits differ from the delta's.
	if code, _, _ := dstune("run", model, "--check", outDelta); code != 1 {
		t.Errorf("the delta changed nothing (exit %d)", code)
	}
	delta.Meta.BaseSHA256 = strings.Repeat("0", 64)
	if err := dst.WriteDelta(deltaPath, delta); err != nil {
		t.Fatal(err)
	}
	if code, _, e := dstune("run", model, "--delta", deltaPath, "--check", filepath.Join(dir, "test_data_set_0")); code != 1 || !strings.Contains(e, "different base model") {
		t.Errorf("foreign delta: exit %d, %s", code, e)
	}
	// With --force it is applied, with a warning: the outputs are the
	// patched model's again.
	if code, o, e := dstune("run", model, "--delta", deltaPath, "--force", "--check", outDelta, "--rtol", "0", "--atol", "0"); code != 0 || !strings.Contains(e, "warning") {
		t.Errorf("foreign delta with --force: exit %d\n%s%s", code, o, e)
	}
}

func TestInspect(t *testing.T) {
	model := filepath.Join(sharedtest.Path(t, "models", "tiny_gpt"), "model.onnx")
	code, out, errOut := dstune("inspect", model)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"tokens", "[batch, seq]", "logits", "[batch, seq, 256]", "LayerNormalization", "parameters: 120,576 in 28 tensors",
		"tied weights", "wte.weight: /wte/Gather (Gather), /Transpose (Transpose)"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	code, out, errOut = dstune("inspect", "--json", model)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep struct {
		Opset      int            `json:"opset"`
		Parameters int64          `json:"parameters"`
		Ops        map[string]int `json:"ops"`
		Tied       []string       `json:"tied"`
		Inputs     []struct {
			Name  string `json:"name"`
			DType string `json:"dtype"`
			Shape []any  `json:"shape"`
		} `json:"inputs"`
		Initializers []struct {
			Name      string `json:"name"`
			DType     string `json:"dtype"`
			Shape     []int  `json:"shape"`
			Parameter bool   `json:"parameter"`
			Uses      int    `json:"uses"`
		} `json:"initializers"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if rep.Opset != 17 || rep.Parameters != 120576 || rep.Ops["MatMul"] != 13 || len(rep.Tied) != 1 || rep.Tied[0] != "wte.weight" {
		t.Errorf("report: %+v", rep)
	}
	if len(rep.Inputs) != 1 || rep.Inputs[0].DType != "int64" || rep.Inputs[0].Shape[0] != "batch" {
		t.Errorf("inputs: %+v", rep.Inputs)
	}
	if len(rep.Initializers) != 28 || rep.Initializers[0].Name != "wte.weight" || rep.Initializers[0].Uses != 2 || rep.Initializers[0].Shape[0] != 256 {
		t.Errorf("initializers: %+v", rep.Initializers[:1])
	}

	// The eval-mode export shares equal tensors through Identity nodes.
	code, out, _ = dstune("inspect", filepath.Join(sharedtest.Path(t, "models", "exports"), "gpt2_like_op13.onnx"))
	if code != 0 || !strings.Contains(out, "aliases (Identity of an initializer)") || !strings.Contains(out, "h.0.ln1.bias = lnf.bias") {
		t.Errorf("aliases missing:\n%s", out)
	}

	if code, _, errOut := dstune("inspect", filepath.Join(t.TempDir(), "nope.onnx")); code != 1 || !strings.Contains(errOut, "nope.onnx") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
	if code, _, _ := dstune("inspect"); code != 2 {
		t.Errorf("no argument: exit %d", code)
	}
}

// TestRunSequencesOptionalsStrings: --check reads SequenceProto and
// OptionalProto inputs and outputs and string tensors (ONNX suite tests
// whose inputs are fed element by element, folded, or strings), and
// --output-dir writes outputs of those kinds that --check then accepts
// bit for bit.
func TestRunSequencesOptionalsStrings(t *testing.T) {
	for _, test := range []string{"test_loop13_seq", "test_sequence_map_add_2_sequences", "test_if_opt", "test_identity_opt",
		"test_optional_get_element_optional_sequence", "test_string_split_basic", "test_regex_full_match_basic"} {
		dir := sharedtest.Path(t, "onnx-backend", "node", test)
		model := filepath.Join(dir, "model.onnx")
		code, out, errOut := dstune("run", model, "--check", filepath.Join(dir, "test_data_set_0"))
		if code != 0 || !strings.Contains(out, "outputs match") {
			t.Errorf("%s: exit %d\n%s%s", test, code, out, errOut)
			continue
		}
		m, err := onnx.ReadFile(model)
		if err != nil {
			t.Fatal(err)
		}
		written := t.TempDir()
		args := []string{"run", model, "--output-dir", written}
		for i, in := range m.Graph.Inputs {
			file := filepath.Join(dir, "test_data_set_0", fmt.Sprintf("input_%d.pb", i))
			args = append(args, "--input", in.Name+"="+file)
			copyFile(t, file, filepath.Join(written, fmt.Sprintf("input_%d.pb", i)))
		}
		m.Close()
		if code, out, errOut := dstune(args...); code != 0 {
			t.Errorf("%s --output-dir: exit %d\n%s%s", test, code, out, errOut)
			continue
		}
		if code, out, errOut := dstune("run", model, "--check", written, "--rtol", "0", "--atol", "0"); code != 0 {
			t.Errorf("%s: the written outputs do not check: exit %d\n%s%s", test, code, out, errOut)
		}
	}
}

// TestRunSequenceOff: an expected sequence of another length, or with an
// element off, makes the output OFF.
func TestRunSequenceOff(t *testing.T) {
	dir := sharedtest.Path(t, "onnx-backend", "node", "test_loop13_seq")
	model := filepath.Join(dir, "model.onnx")
	want, err := onnx.ReadValueFile(filepath.Join(dir, "test_data_set_0", "output_0.pb"), onnx.TypeSequence)
	if err != nil {
		t.Fatal(err)
	}
	shorter := &onnx.Value{Name: want.Name, Kind: onnx.TypeSequence, Elems: want.Elems[:len(want.Elems)-1]}
	last := want.Elems[len(want.Elems)-1].Tensor
	vals, err := last.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	vals[0] += 1
	changed, err := onnx.FromFloat32s("", last.Dims, vals)
	if err != nil {
		t.Fatal(err)
	}
	off := &onnx.Value{Name: want.Name, Kind: onnx.TypeSequence, Elems: append(append([]*onnx.Value{}, want.Elems[:len(want.Elems)-1]...), &onnx.Value{Kind: onnx.TypeTensor, Tensor: changed})}
	for _, tc := range []struct {
		v    *onnx.Value
		want string
	}{
		{shorter, "got a sequence of 5, want 4  OFF"},
		{off, "1 of 15 off  OFF"},
	} {
		bad := t.TempDir()
		for i := range 3 {
			copyFile(t, filepath.Join(dir, "test_data_set_0", fmt.Sprintf("input_%d.pb", i)), filepath.Join(bad, fmt.Sprintf("input_%d.pb", i)))
		}
		if err := onnx.WriteValueFile(filepath.Join(bad, "output_0.pb"), tc.v); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := dstune("run", model, "--check", bad)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("exit %d, want 1 and %q\n%s%s", code, tc.want, out, errOut)
		}
	}
}

// TestRunCheckNaN: outputs that are NaN on both sides match, and the
// report says no finite element was compared instead of "max abs 0"; NaN
// where a number is expected is off.
func TestRunCheckNaN(t *testing.T) {
	dir := t.TempDir()
	vi := func(name string) *onnx.ValueInfo {
		return &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Float, HasShape: true,
			Shape: []onnx.Dim{{Value: 4, HasValue: true}}}}
	}
	m := &onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, Graph: &onnx.Graph{Name: "sqrt",
		Inputs: []*onnx.ValueInfo{vi("x")}, Outputs: []*onnx.ValueInfo{vi("y")},
		Nodes: []*onnx.Node{{OpType: "Sqrt", Inputs: []string{"x"}, Outputs: []string{"y"}}}}}
	model := filepath.Join(dir, "sqrt.onnx")
	if err := onnx.WriteFile(model, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	write := func(set, name string, v []float32) {
		ot, err := ir.TensorToONNX(name, ir.FromFloat32s(ir.Shape{4}, v))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, set), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := onnx.WriteTensorFile(filepath.Join(dir, set, name+".pb"), ot); err != nil {
			t.Fatal(err)
		}
	}
	nan := float32(math.NaN())
	write("nan", "input_0", []float32{-1, -2, -3, -4})
	write("nan", "output_0", []float32{nan, nan, nan, nan})
	code, out, errOut := dstune("run", model, "--check", filepath.Join(dir, "nan"))
	if code != 0 || !strings.Contains(out, "max abs -  max rel -  (no element finite on both sides)  4 NaN or ±Inf") || strings.Contains(out, "max abs 0") {
		t.Errorf("NaN = NaN: exit %d\n%s%s", code, out, errOut)
	}
	write("numbers", "input_0", []float32{-1, -2, 4, 9})
	write("numbers", "output_0", []float32{1, 1, 2, 3})
	code, out, errOut = dstune("run", model, "--check", filepath.Join(dir, "numbers"))
	if code != 1 || !strings.Contains(out, "max abs 0  max rel 0  2 NaN or ±Inf (compared as values)  2 of 4 off  OFF") {
		t.Errorf("NaN where numbers are expected: exit %d\n%s%s", code, out, errOut)
	}
}
