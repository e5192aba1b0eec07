package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/tokenizer"
)

// runCmd runs dstune with args and returns the exit status and outputs.
func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = runMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

// parseIDs reads the token ids generate prints without a tokenizer.
func parseIDs(t *testing.T, s string) []int64 {
	t.Helper()
	var ids []int64
	for _, f := range strings.Fields(s) {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("output %q: %v", s, err)
		}
		ids = append(ids, v)
	}
	return ids
}

// TestGenerateStoriesGreedy: greedy decoding of stories260K from BOS gives
// the tokens of its README's text (test_data_set_1 holds BOS and them),
// with the KV cache dstune keeps and by recomputing.
func TestGenerateStoriesGreedy(t *testing.T) {
	model := sharedtest.Path(t, "models", "stories260K", "stories260K.onnx")
	ot, err := onnx.ReadTensorFile(sharedtest.Path(t, "models", "stories260K", "test_data_set_1", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := ir.TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	want := x.Int64s()[1:]
	for _, mode := range []string{"auto", "recompute"} {
		code, out, errOut := runCmd("generate", model, "--prompt-ids", "1", "--max-tokens", "40", "--kv-cache", mode, "--threads", "1")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", mode, code, errOut)
		}
		if got := parseIDs(t, out); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: tokens\n%v, want\n%v", mode, got, want)
		}
		wantNote := map[string]string{"auto": "KV cache: a KV cache dstune keeps", "recompute": "KV cache: recomputing"}[mode]
		if !strings.Contains(errOut, wantNote) || !strings.Contains(errOut, "40 generated (length)") {
			t.Errorf("%s: stderr %q lacks %q or the count", mode, errOut, wantNote)
		}
	}
}

// TestGenerateInterrupted: Ctrl-C while generating exits with 130 and a
// sentence, as the other commands do, the tokens so far printed.
func TestGenerateInterrupted(t *testing.T) {
	model := sharedtest.Path(t, "models", "stories260K", "stories260K.onnx")
	// Recomputing 500 tokens takes seconds: the signal comes first.
	js, _ := json.Marshal([]string{"generate", model, "--prompt-ids", "1", "--max-tokens", "500", "--kv-cache", "recompute", "--threads", "1"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DSTUNE_TEST_MAIN="+string(js))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	first := make([]byte, 1)
	if _, err := io.ReadFull(stdout, first); err != nil {
		t.Fatalf("no token (%v): %s", err, stderr.String())
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stdout)
	cmd.Wait()
	out := string(first) + string(rest)
	if code := cmd.ProcessState.ExitCode(); code != 130 || !regexp.MustCompile(`dstune generate: interrupted after \d+ of at most 500 tokens\n$`).MatchString(stderr.String()) {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if n := len(parseIDs(t, out)); n < 1 || n >= 500 || !strings.HasSuffix(out, "\n") {
		t.Errorf("%d tokens printed, output %q", n, out)
	}
}

// TestGenerateStoriesText: with its tokenizer, greedy text from BOS is the
// README's (generated.txt, which ends in a newline as generate's output
// does).
func TestGenerateStoriesText(t *testing.T) {
	dir := filepath.Join(sharedtest.Dir(t), "models", "stories260K")
	tok := filepath.Join(dir, "tok512.bin")
	want, err := os.ReadFile(filepath.Join(dir, "generated.txt"))
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd("generate", filepath.Join(dir, "stories260K.onnx"), "--tokenizer", tok, "--bos", "1", "--max-tokens", "40")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if out != string(want) {
		t.Errorf("text\n%q, want\n%q", out, want)
	}
}

// TestGenerateTokenizerFitsModel: a tokenizer with more ids than the
// model's vocabulary (stories260K's 512 for a decoder of 61) is refused
// naming both, before anything is generated.
func TestGenerateTokenizerFitsModel(t *testing.T) {
	tok := filepath.Join(sharedtest.Dir(t), "models", "stories260K", "tok512.bin")
	model, _ := llamaWithDeltas(t, t.TempDir(), 0)
	code, out, errOut := runCmd("generate", model, "--tokenizer", tok, "--prompt", "Once", "--max-tokens", "2")
	if code != 1 || out != "" || !strings.Contains(errOut, "the tokenizer has 512 token ids, more than the model's vocabulary of 61") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestGenerateDeltasChecked: deltas made for another model are refused
// naming the file and the hashes, before any conflict between them is
// looked for; two that change the same entries name both files and the
// command that merges them.
func TestGenerateDeltasChecked(t *testing.T) {
	model, deltas := llamaWithDeltas(t, t.TempDir(), 1)
	stories := filepath.Join(sharedtest.Dir(t), "models", "stories260K", "stories260K.onnx")
	code, _, errOut := runCmd("generate", stories, "--prompt-ids", "1", "--max-tokens", "2", "--delta", deltas[0], "--delta", deltas[0])
	if code != 1 || !strings.Contains(errOut, "delta "+deltas[0]+":") || !strings.Contains(errOut, "base_sha256") || strings.Contains(errOut, "same") ||
		!strings.Contains(errOut, "dstune apply "+stories+" DELTA... -o OUT.onnx --force") {
		t.Errorf("deltas of another model: exit %d, %s", code, errOut)
	}
	// An --eos past the vocabulary is refused; the tokenizer's own end
	// token past it (a special token added after the model was made) is
	// dropped with a warning, and the text is generated.
	code, _, errOut = runCmd("generate", model, "--prompt-ids", "1", "--max-tokens", "2", "--eos", "99999")
	if code != 2 || !strings.Contains(errOut, "--eos 99999 is outside the model's vocabulary [0, 61)") {
		t.Errorf("--eos past the vocabulary: exit %d, %s", code, errOut)
	}
	vocab := map[string]int{}
	for i := range 61 {
		vocab[fmt.Sprintf("w%d", i)] = i
	}
	tj, _ := json.Marshal(map[string]any{
		"added_tokens":  []any{map[string]any{"id": 61, "content": "</s>", "special": true}},
		"pre_tokenizer": map[string]any{"type": "WhitespaceSplit"},
		"model":         map[string]any{"type": "WordLevel", "vocab": vocab, "unk_token": "w0"},
	})
	tokPath := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(tokPath, tj, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd("generate", model, "--tokenizer", tokPath, "--prompt", "w1 w2", "--max-tokens", "3")
	if code != 0 || !strings.Contains(errOut, "the tokenizer's end token 61 is outside the model's vocabulary [0, 61)") || len(strings.Fields(out)) != 3 {
		t.Errorf("the tokenizer's end token past the vocabulary: exit %d, %q, %s", code, out, errOut)
	}
	code, _, errOut = runCmd("generate", model, "--prompt-ids", "1", "--max-tokens", "2", "--delta", deltas[0], "--delta", deltas[0])
	if code != 1 || !strings.Contains(errOut, "deltas "+deltas[0]+", "+deltas[0]+": deltas change the same") || !strings.Contains(errOut, "-o OUT.onnx --force writes the model with both") {
		t.Errorf("deltas changing the same entries: exit %d, %s", code, errOut)
	}
}

// llamaWithDeltas writes a small Llama-shaped decoder and n random deltas
// that change its tokens; it returns the model's path and the deltas'.
func llamaWithDeltas(t *testing.T, dir string, n int) (string, []string) {
	t.Helper()
	c := llamagen.Config{Vocab: 61, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 40, Seed: 8}
	if err := llamagen.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.onnx")
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var deltas []string
	for i := range n {
		d, err := deltagen.Random(m, 0.05, 0.3, uint64(10+i))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("task%d.safetensors", i))
		if err := dst.WriteDelta(p, d); err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, p)
	}
	return path, deltas
}

// TestGenerateDeltaMatchesApply: generating with --delta gives the tokens
// generating from the model `dstune apply` writes gives, sampled too.
func TestGenerateDeltaMatchesApply(t *testing.T) {
	dir := t.TempDir()
	model, deltas := llamaWithDeltas(t, dir, 1)
	tuned := filepath.Join(dir, "tuned.onnx")
	if code, _, errOut := runCmd("apply", model, deltas[0], "-o", tuned); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	args := []string{"--prompt-ids", "1,4,9", "--max-tokens", "20", "--temperature", "0.8", "--top-k", "30", "--seed", "7"}
	code, viaDelta, errOut := runCmd(append([]string{"generate", model, "--delta", deltas[0]}, args...)...)
	if code != 0 {
		t.Fatalf("generate --delta: %s", errOut)
	}
	code, viaApply, errOut := runCmd(append([]string{"generate", tuned}, args...)...)
	if code != 0 {
		t.Fatalf("generate tuned.onnx: %s", errOut)
	}
	_, viaBase, _ := runCmd(append([]string{"generate", model}, args...)...)
	if viaDelta != viaApply {
		t.Errorf("with --delta: %q, from the applied model: %q", viaDelta, viaApply)
	}
	if viaDelta == viaBase {
		t.Errorf("the delta did not change the tokens (%q): the test shows nothing", viaBase)
	}
}

func TestGenerateUsage(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.onnx")
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"generate", model}, "give --prompt"},
		{[]string{"generate", model, "--prompt", "hi"}, "--prompt needs --tokenizer"},
		{[]string{"generate", model, "--prompt-ids", "1", "--max-tokens", "0"}, "--max-tokens"},
		{[]string{"generate", model, "--prompt-ids", "1", "--temperature", "-1"}, "--temperature -1: want a finite number ≥ 0"},
		{[]string{"generate", model, "--prompt-ids", "1", "--top-k", "-1"}, "--top-k -1: want ≥ 0"},
		{[]string{"generate", model, "--prompt-ids", "1", "--top-p", "-0.5"}, "--top-p -0.5: want a number in (0, 1]"},
		{[]string{"generate", model, "--prompt-ids", "1", "--top-p", "1.5"}, "--top-p 1.5: want a number in (0, 1]"},
		{[]string{"generate", model, "--bos", "-2", "--max-tokens", "3"}, "--bos -2: want a token id ≥ 0, or -1"},
		{[]string{"generate", model, "--prompt-ids", "1", "--kv-cache", "bogus"}, "KV cache mode"},
		{[]string{"generate", model, "--prompt-ids", "x"}, "token id"},
		{[]string{"generate", model, "--prompt-ids", "1", "--context", "-1"}, "--context must not be negative"},
		{[]string{"generate", model, "--prompt-ids", "1", "--top-p", "0"}, "--top-p 0 keeps no token"},
		{[]string{"generate", model, "--prompt-ids", "1", "--stop", ""}, "--stop: an empty string"},
		{[]string{"generate", model, "--prompt-ids", "1", "--stop", "\xb8\xad"}, "--stop: not valid UTF-8"},
		{[]string{"generate", model, "--prompt-ids", "1,,2"}, "empty place between commas"},
		{[]string{"generate", model, "--prompt-ids", "1", "--stop", "x"}, "--stop needs --tokenizer"},
	} {
		code, _, errOut := runCmd(c.args...)
		if code != 2 || !strings.Contains(errOut, c.says) {
			t.Errorf("%v: exit %d %q, want 2 saying %q", c.args, code, errOut, c.says)
		}
	}
	// Ids past the model's vocabulary are usage errors too, found once the
	// model is read and before anything is printed.
	stories := sharedtest.Path(t, "models", "stories260K", "stories260K.onnx")
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"generate", stories, "--prompt-ids", "1,512"}, "--prompt-ids: token id 512 is outside the model's vocabulary [0, 512)"},
		{[]string{"generate", stories, "--bos", "600"}, "--bos: token id 600 is outside the model's vocabulary [0, 512)"},
	} {
		code, out, errOut := runCmd(c.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.says) || strings.Contains(errOut, "KV cache") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 saying %q, nothing else", c.args, code, out, errOut, c.says)
		}
	}
}

// initializerShape is an initializer's name and dims.
type initializerShape struct {
	name string
	dims []int64
}

// initializerShapes reads a model's initializers' names and shapes, in
// file order, and its base hash (what deltas and adapters record).
func initializerShapes(t *testing.T, model string) ([]initializerShape, string) {
	t.Helper()
	m, err := onnx.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	inits, err := dst.InitializersOf(m)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := dst.BaseHash(inits)
	if err != nil {
		t.Fatal(err)
	}
	var shapes []initializerShape
	for _, it := range inits {
		shapes = append(shapes, initializerShape{it.Name, slices.Clone(it.Dims)})
	}
	return shapes, hash
}

// loraAdapter writes a LoRA adapter (rank 2, random A and B) for the
// query and value projections of llamaWithDeltas' decoder into dir and
// returns the adapter file's path.
func loraAdapter(t *testing.T, model, dir string) string {
	t.Helper()
	shapes, hash := initializerShapes(t, model)
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.3)
		}
		return v
	}
	const rank = 2
	w := &peft.LoRAWeights{Rank: rank, Alpha: 4}
	for _, it := range shapes {
		if !strings.HasSuffix(it.name, "q_proj.weight") && !strings.HasSuffix(it.name, "v_proj.weight") {
			continue
		}
		out, in := int(it.dims[0]), int(it.dims[1]) // nn.Linear's [out, in]
		w.Modules = append(w.Modules, peft.LoRAModule{Path: peft.ModulePath(it.name), Weight: it.name,
			In: in, Out: out, A: random(rank * in), B: random(out * rank)})
	}
	if len(w.Modules) == 0 {
		t.Fatal("the decoder has no q_proj or v_proj weight")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := peft.WriteAdapter(dir, &peft.Adapter{Method: "lora", BaseSHA256: hash, LoRA: w}, "lm"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, peft.AdapterFile)
}

// TestGenerateLoRAMatchesApply: generate --delta takes a LoRA adapter and
// gives the tokens generating from the model `dstune apply` merged it
// into gives; a soft prompt is refused by name.
func TestGenerateLoRAMatchesApply(t *testing.T) {
	dir := t.TempDir()
	model, _ := llamaWithDeltas(t, dir, 0)
	adapter := loraAdapter(t, model, filepath.Join(dir, "adapter"))
	merged := filepath.Join(dir, "merged.onnx")
	if code, _, errOut := runCmd("apply", model, adapter, "-o", merged); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	args := []string{"--prompt-ids", "1,4,9", "--max-tokens", "20", "--temperature", "0.8", "--seed", "5"}
	code, viaAdapter, errOut := runCmd(append([]string{"generate", model, "--delta", adapter}, args...)...)
	if code != 0 {
		t.Fatalf("generate --delta ADAPTER: %s", errOut)
	}
	_, viaMerged, _ := runCmd(append([]string{"generate", merged}, args...)...)
	_, viaBase, _ := runCmd(append([]string{"generate", model}, args...)...)
	if viaAdapter != viaMerged {
		t.Errorf("with --delta ADAPTER: %q, from the merged model: %q", viaAdapter, viaMerged)
	}
	if viaAdapter == viaBase {
		t.Errorf("the adapter did not change the tokens (%q): the test shows nothing", viaBase)
	}

	prompt := filepath.Join(dir, "prompt")
	if err := os.Mkdir(prompt, 0o755); err != nil {
		t.Fatal(err)
	}
	sp := &peft.SoftPrompt{At: "start", Length: 2, Dim: 32, Values: make([]float32, 64)}
	if err := peft.WriteAdapter(prompt, &peft.Adapter{Method: "prompt", Prompt: sp}, "lm"); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(append([]string{"generate", model, "--delta", filepath.Join(prompt, peft.AdapterFile)}, args...)...)
	if code == 0 || !strings.Contains(errOut, "soft prompt") || !strings.Contains(errOut, "dstune apply") {
		t.Errorf("generate with a soft prompt: status %d, %q; want a refusal naming the soft prompt and dstune apply", code, errOut)
	}
}

// TestDefaultEndTokens: without --eos a text ends at the tokenizer's end
// token and at the eos_token_id of a generation_config.json beside the
// tokenizer (one id or a list, as transformers reads it); an unreadable
// one is named in a warning and left out.
func TestDefaultEndTokens(t *testing.T) {
	src := sharedtest.Path(t, "models", "stories260K", "tok512.bin")
	dir := t.TempDir()
	tokPath := filepath.Join(dir, "tok512.bin")
	copyFile(t, src, tokPath)
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	eos := int64(tok.EOS())
	for _, c := range []struct {
		config string // "" for no file
		want   []int64
		warns  string
	}{
		{"", []int64{eos}, ""},
		{`{"eos_token_id": 13}`, []int64{eos, 13}, ""},
		{fmt.Sprintf(`{"bos_token_id": 1, "eos_token_id": [%d, 13, 14]}`, eos), []int64{eos, 13, 14}, ""},
		{`{"eos_token_id": null}`, []int64{eos}, ""},
		{`{"eos_token_id": "x"}`, []int64{eos}, `eos_token_id "x": want a token id or a list of them`},
		{`{not json`, []int64{eos}, "generation_config.json: invalid character"},
	} {
		path := filepath.Join(dir, "generation_config.json")
		os.Remove(path)
		if c.config != "" {
			if err := os.WriteFile(path, []byte(c.config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var warned strings.Builder
		got := defaultEndTokens(tokPath, tok, &warned)
		if !slices.Equal(got, c.want) || (c.warns == "") != (warned.Len() == 0) || !strings.Contains(warned.String(), c.warns) {
			t.Errorf("%q: %v, warning %q; want %v, a warning saying %q", c.config, got, warned.String(), c.want, c.warns)
		}
	}
}
