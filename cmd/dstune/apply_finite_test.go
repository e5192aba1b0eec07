package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/peft"
)

// tinyGPTAdapters writes, for tiny_gpt, a finite LoRA adapter of
// h.0.c_attn.weight (rank 2) changed by editLoRA, and a finite soft
// prompt of 2 tokens changed by editPrompt, each in a directory of its
// own under dir, as a run keeps them; it returns the two adapter files.
func tinyGPTAdapters(t *testing.T, model, dir string, editLoRA func(*peft.LoRAModule), editPrompt func([]float32)) (lora, prompt string) {
	t.Helper()
	shapes, hash := initializerShapes(t, model)
	var dims []int64
	for _, it := range shapes {
		if it.name == "h.0.c_attn.weight" {
			dims = it.dims
		}
	}
	if len(dims) != 2 {
		t.Fatalf("tiny_gpt's h.0.c_attn.weight is %v", dims)
	}
	const rank = 2
	out, in := int(dims[0]), int(dims[1])
	mod := peft.LoRAModule{Path: "h.0.c_attn", Weight: "h.0.c_attn.weight", In: in, Out: out,
		A: make([]float32, rank*in), B: make([]float32, out*rank)}
	for i := range mod.A {
		mod.A[i] = float32(i%7) / 100
	}
	for i := range mod.B {
		mod.B[i] = float32(i%5) / 100
	}
	editLoRA(&mod)
	emb := make([]float32, 2*64)
	for i := range emb {
		emb[i] = float32(i%11) / 10
	}
	editPrompt(emb)
	lora, prompt = filepath.Join(dir, "lora"), filepath.Join(dir, "prompt")
	for _, d := range []string{lora, prompt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w := &peft.LoRAWeights{Rank: rank, Alpha: 4, Modules: []peft.LoRAModule{mod}}
	if err := peft.WriteAdapter(lora, &peft.Adapter{Method: "lora", BaseSHA256: hash, LoRA: w}, "lm"); err != nil {
		t.Fatal(err)
	}
	sp := &peft.SoftPrompt{At: peft.PromptAfterBOS, Length: 2, Dim: 64, Values: emb}
	if err := peft.WriteAdapter(prompt, &peft.Adapter{Method: "prompt", BaseSHA256: hash, Prompt: sp}, "lm"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(lora, peft.AdapterFile), filepath.Join(prompt, peft.AdapterFile)
}

// TestApplyRefusesNonFiniteAdapters: apply refuses, naming the file, the
// tensor or weight and the entry, a LoRA adapter holding a NaN, one whose
// finite B·A overflows float32 once merged, and a soft prompt holding an
// infinity, and writes no file; generate --delta (the same reader)
// refuses them too. The finite adapters apply.
func TestApplyRefusesNonFiniteAdapters(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	tmp := t.TempDir()
	keep := func(*peft.LoRAModule) {}
	lora, prompt := tinyGPTAdapters(t, model, filepath.Join(tmp, "finite"), keep, func([]float32) {})
	for _, a := range []string{lora, prompt} {
		out := filepath.Join(tmp, filepath.Base(filepath.Dir(a))+".onnx")
		if code, o, e := dstune("apply", model, a, "-o", out); code != 0 {
			t.Fatalf("finite %s: exit %d\n%s%s", a, code, o, e)
		}
	}

	nanLoRA, _ := tinyGPTAdapters(t, model, filepath.Join(tmp, "nan"),
		func(m *peft.LoRAModule) { m.A[m.In+3] = float32(math.NaN()) }, func([]float32) {})
	bigLoRA, _ := tinyGPTAdapters(t, model, filepath.Join(tmp, "big"),
		func(m *peft.LoRAModule) { m.A[0], m.B[0] = 3e38, 3e38 }, func([]float32) {})
	_, infPrompt := tinyGPTAdapters(t, model, filepath.Join(tmp, "inf"),
		keep, func(v []float32) { v[70] = float32(math.Inf(1)) })
	for _, c := range []struct {
		name, adapter string
		want          []string
	}{
		{"NaN in lora_A", nanLoRA, []string{`tensor "base_model.model.h.0.c_attn.lora_A.weight"`, "(row 1, column 3 of [2 64]) is NaN"}},
		{"B·A overflowing", bigLoRA, []string{`initializer "h.0.c_attn.weight" entry 0`, "beyond float32's range"}},
		{"+Inf in the prompt", infPrompt, []string{`tensor "prompt_embeddings"`, "value 70 (row 1, column 6 of [2 64]) is +Inf"}},
	} {
		out := filepath.Join(tmp, "out.onnx")
		code, o, e := dstune("apply", model, c.adapter, "-o", out)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1\n%s%s", c.name, code, o, e)
		}
		for _, want := range append(c.want, c.adapter) {
			if !strings.Contains(e, want) {
				t.Errorf("%s: %q; want it to say %q", c.name, e, want)
			}
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: the refused apply wrote %s", c.name, out)
		}
		if c.adapter == infPrompt {
			continue // generate refuses any soft prompt
		}
		code, _, e = dstune("generate", model, "--delta", c.adapter, "--prompt-ids", "1,2", "--max-tokens", "2")
		if code != 1 || !strings.Contains(e, c.want[0]) {
			t.Errorf("generate --delta, %s: exit %d, %q", c.name, code, e)
		}
	}
	entries, _ := os.ReadDir(tmp)
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("left behind: %s", en.Name())
		}
	}
}

// TestApplyOutputDirectory: -o into a directory that does not exist, or
// below a file, is refused before the model is even read (a model that
// cannot be read does not get in first), naming the directory, and
// creates nothing.
func TestApplyOutputDirectory(t *testing.T) {
	tmp := t.TempDir()
	model := filepath.Join(tmp, "broken.onnx")
	if err := os.WriteFile(model, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	delta := filepath.Join(tmp, "d.safetensors")
	if err := os.WriteFile(delta, []byte("not a delta"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "nodir")
	code, _, e := dstune("apply", model, delta, "-o", filepath.Join(missing, "x.onnx"))
	if code != 2 || !strings.Contains(e, "the directory "+missing+" does not exist") {
		t.Errorf("-o into a missing directory: exit %d, %q", code, e)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("apply created %s", missing)
	}
	code, _, e = dstune("apply", model, delta, "-o", filepath.Join(delta, "x.onnx"))
	if code != 2 || !strings.Contains(e, delta+" is not a directory") {
		t.Errorf("-o below a file: exit %d, %q", code, e)
	}
	// With the directory there, the broken model is what is reported.
	code, _, e = dstune("apply", model, delta, "-o", filepath.Join(tmp, "x.onnx"))
	if code != 1 || !strings.Contains(e, "broken.onnx") {
		t.Errorf("broken model: exit %d, %q", code, e)
	}
}

// TestApplyRefusesPromptWithoutRoom: a soft prompt as long as tiny_gpt's
// 64 positions leaves no position for text, so the model it would write
// fails on every input: apply refuses it naming the position table, and
// writes nothing; one of 63 tokens leaves a position and is written.
func TestApplyRefusesPromptWithoutRoom(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	_, hash := initializerShapes(t, model)
	tmp := t.TempDir()
	for _, c := range []struct {
		n    int
		code int
	}{{64, 1}, {63, 0}} {
		dir := filepath.Join(tmp, fmt.Sprint(c.n))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		sp := &peft.SoftPrompt{At: peft.PromptAfterBOS, Length: c.n, Dim: 64, Values: make([]float32, c.n*64)}
		if err := peft.WriteAdapter(dir, &peft.Adapter{Method: "prompt", BaseSHA256: hash, Prompt: sp}, "lm"); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(tmp, fmt.Sprintf("out%d.onnx", c.n))
		code, _, e := dstune("apply", model, filepath.Join(dir, peft.AdapterFile), "-o", out)
		if code != c.code {
			t.Fatalf("a soft prompt of %d tokens: exit %d, %s", c.n, code, e)
		}
		_, err := os.Stat(out)
		if c.code != 0 && (err == nil || !strings.Contains(e, "the soft prompt's 64 virtual tokens leave the model no room for text") || !strings.Contains(e, `is outside the 64 rows of "wpe.weight"`)) {
			t.Errorf("a soft prompt of 64 tokens: %s (output written: %v)", e, err == nil)
		}
	}
	// A prompt of another width than the embeddings' is named by file.
	dir := filepath.Join(tmp, "narrow")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sp := &peft.SoftPrompt{At: peft.PromptAfterBOS, Length: 2, Dim: 63, Values: make([]float32, 2*63)}
	if err := peft.WriteAdapter(dir, &peft.Adapter{Method: "prompt", BaseSHA256: hash, Prompt: sp}, "lm"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, peft.AdapterFile)
	if code, _, e := dstune("apply", model, file, "-o", filepath.Join(tmp, "narrow.onnx")); code != 1 || !strings.Contains(e, "soft prompt "+file+": ") || !strings.Contains(e, "63 values") {
		t.Errorf("a soft prompt of width 63: exit %d, %s", code, e)
	}
}

// TestApplyNeverReplacesSpecialFiles: -o naming a device (also through a
// symbolic link, as /dev/stdout is one), a FIFO or a directory is refused
// whatever --force says: the output is written as a new file renamed
// over the path, which would replace /dev/null itself.
func TestApplyNeverReplacesSpecialFiles(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	tmp := t.TempDir()
	lora, _ := tinyGPTAdapters(t, model, tmp, func(*peft.LoRAModule) {}, func([]float32) {})
	link := filepath.Join(tmp, "null")
	if err := os.Symlink(os.DevNull, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(tmp, "fifo")
	outs := map[string]string{os.DevNull: "a device", link: "a device", tmp: "a directory"}
	if err := syscall.Mkfifo(fifo, 0o644); err == nil {
		outs[fifo] = "a FIFO"
	}
	for out, kind := range outs {
		code, _, e := dstune("apply", model, lora, "-o", out, "--force")
		if code != 2 || !strings.Contains(e, out+" is "+kind+", not a regular file") {
			t.Errorf("-o %s --force: exit %d, %s", out, code, e)
		}
	}
	if st, err := os.Stat(os.DevNull); err != nil || st.Mode()&os.ModeDevice == 0 {
		t.Fatalf("%s is no longer a device: %v", os.DevNull, err)
	}
}

// TestApplyOverflowNamesFile: a delta value past float16's range is
// refused naming the delta file it comes from and the element of the
// tensor, by apply and by run --delta, also when it is the second of two
// deltas composed.
func TestApplyOverflowNamesFile(t *testing.T) {
	dir := t.TempDir()
	c := llamagen.Config{Vocab: 61, Dim: 32, Layers: 1, Heads: 4, KVHeads: 2, Hidden: 40, Seed: 8, DType: onnx.Float16}
	if err := llamagen.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model.onnx")
	m, err := onnx.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	inits, err := dst.InitializersOf(m)
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := dst.BaseHash(inits)
	if err != nil {
		t.Fatal(err)
	}
	var it dst.Initializer
	for _, x := range inits {
		if x.DType == "F16" && len(x.Dims) == 2 {
			it = x
			break
		}
	}
	if it.Name == "" {
		t.Fatal("no float16 matrix in the model")
	}
	write := func(name string, pos int64, v float32) string {
		d := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash, Method: "dst"}, Tensors: []dst.TensorDelta{
			{Name: it.Name, Dims: it.Dims, Indices: []int64{pos}, Values: []float32{v}}}}
		path := filepath.Join(dir, name)
		if err := dst.WriteDelta(path, d); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if it.Dims[1] != 32 {
		t.Fatalf("%s is %v; the test places element 40 at [1,8] of 32 columns", it.Name, it.Dims)
	}
	ok, big := write("ok.safetensors", 1, 0.5), write("big.safetensors", 40, 70000)
	want := fmt.Sprintf("delta %s: tensor %q: element 40 [1,8]: value 70000 overflows float16", big, it.Name)
	code, _, e := dstune("apply", model, ok, big, "-o", filepath.Join(dir, "out.onnx"))
	if code != 1 || !strings.Contains(e, want) {
		t.Errorf("apply: exit %d, %s\nwant %s", code, e, want)
	}
}
