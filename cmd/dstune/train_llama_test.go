package main

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// llamaData writes a small next-token task over vocab ids: runs of
// consecutive ids, which a decoder learns quickly.
func llamaData(t *testing.T, dir string, vocab int) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	for range 48 {
		n, start := 6+rng.IntN(6), 1+rng.IntN(vocab-2)
		ids := make([]int, n)
		for i := range ids {
			ids[i] = 1 + (start+i)%(vocab-1)
		}
		line, _ := json.Marshal(map[string]any{"tokens": ids})
		b.Write(line)
		b.WriteByte('\n')
	}
	path := filepath.Join(dir, "train.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTrainLlamaExports trains what Hugging Face's exporters write for
// Llama — position_ids computed from the mask, a "with past" decoder whose
// cache inputs are bound empty, Optimum's merged decoder whose
// use_cache_branch is bound false, float16 and bfloat16 checkpoints
// trained as float32 master copies — with DST and with full fine-tuning:
// the loss falls, and the half-precision models' files come back in their
// own dtype, holding the trained values rounded to nearest even.
func TestTrainLlamaExports(t *testing.T) {
	base := llamagen.Config{Vocab: 40, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 24, Seed: 5}
	for _, c := range []struct {
		name string
		edit func(*llamagen.Config)
	}{
		{"plain", func(*llamagen.Config) {}},
		{"with past", func(c *llamagen.Config) { c.KVCache = true }},
		{"merged", func(c *llamagen.Config) { c.Merged = true }},
		{"float16", func(c *llamagen.Config) { c.DType = onnx.Float16 }},
		{"bfloat16 with past", func(c *llamagen.Config) { c.DType = onnx.BFloat16; c.KVCache = true }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.edit(&cfg)
			dir := t.TempDir()
			if err := llamagen.Write(dir, cfg); err != nil {
				t.Fatal(err)
			}
			model := filepath.Join(dir, "model.onnx")
			data := llamaData(t, dir, cfg.Vocab)
			for _, method := range []string{"full", "dst"} {
				run := filepath.Join(dir, method)
				args := []string{"train", model, "--data", data, "--task", "lm", "--method", method, "--steps", "16", "--batch", "8",
					"--lr", "0.01", "--seed", "1", "--threads", "1", "--out", run}
				if method == "dst" {
					args = append(args, "--eps", "0.05")
				}
				code, out, errOut := runCmd(args...)
				if code != 0 {
					t.Fatalf("%s: exit %d: %s%s", method, code, out, errOut)
				}
				steps := sharedtest.StepRecords(sharedtest.ReadMetrics(t, run))
				first, last := *steps[0].Loss, *steps[len(steps)-1].Loss
				if !(last < first) {
					t.Errorf("%s: loss %.4f → %.4f, want it to fall", method, first, last)
				}
				if cfg.DType == onnx.Float || cfg.DType == onnx.Undefined {
					continue
				}
				master := sharedtest.CheckpointParams(t, run)
				switch method {
				case "full":
					checkHalfModel(t, filepath.Join(run, "model.onnx"), cfg.DType, master)
				case "dst":
					d, err := dst.ReadDelta(filepath.Join(run, dst.DeltaFile))
					if err != nil {
						t.Fatal(err)
					}
					if d.Meta.Extra["rounded_to_seed"] == "" || !strings.Contains(out, "round back to their seed value") {
						t.Errorf("dst: no count of kept entries rounding back to the seed (metadata %v)", d.Meta.Extra)
					}
					applied := filepath.Join(dir, "applied.onnx")
					if code, out, errOut := runCmd("apply", model, filepath.Join(run, dst.DeltaFile), "-o", applied); code != 0 {
						t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
					}
					for _, td := range d.Tensors {
						if want := dst.ValueDType(map[onnx.DataType]string{onnx.Float16: "F16", onnx.BFloat16: "BF16"}[cfg.DType]); td.ValueDType != want {
							t.Fatalf("delta values of %s are %s, want %s", td.Name, td.ValueDType, want)
						}
					}
					checkHalfModel(t, applied, cfg.DType, master)
				}
			}
		})
	}
}

// checkHalfModel checks that every initializer of the model at path is
// stored in dt and equals the master value rounded to dt.
func checkHalfModel(t *testing.T, path string, dt onnx.DataType, master map[string][]float32) {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, it := range m.Graph.Initializers {
		if it.DataType != dt {
			t.Errorf("%s: initializer %s is %s, want %s", path, it.Name, it.DataType, dt)
			continue
		}
		v, ok := master[it.Name]
		if !ok {
			continue
		}
		got, err := ir.TensorFromONNX(it)
		if err != nil {
			t.Fatal(err)
		}
		want := ir.Convert(ir.FromFloat32s(got.Shape(), v), got.DType())
		if d := ir.Compare(got, want, 0, 0); !d.OK() {
			t.Errorf("%s: %s differs from the trained value rounded to %s: %v", path, it.Name, dt, d)
		}
	}

}

// TestTrainTextRows fine-tunes stories260K on prompt/completion rows of
// text, encoded with its tokenizer (--tokenizer, recorded in config.json
// with the file's hash), and generates with the delta: the completion the
// rows teach follows the prompt.
func TestTrainTextRows(t *testing.T) {
	dir := sharedtest.Path(t, "models", "stories260K")
	model, tok := filepath.Join(dir, "stories260K.onnx"), filepath.Join(dir, "tok512.bin")
	work := t.TempDir()
	var b strings.Builder
	names := []string{"Lily", "Tom", "Sue", "Ben"}
	for i := range 32 {
		line, _ := json.Marshal(map[string]string{"prompt": "Once upon a time, " + names[i%4], "completion": " went to the zoo with " + names[(i+1)%4] + "."})
		b.Write(line)
		b.WriteByte('\n')
	}
	data := filepath.Join(work, "rows.jsonl")
	if err := os.WriteFile(data, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(work, "run")
	code, out, errOut := runCmd("train", model, "--tokenizer", tok, "--data", data, "--task", "lm", "--method", "dst", "--eps", "0.01",
		"--steps", "40", "--lr", "0.01", "--threads", "1", "--out", run)
	if code != 0 {
		t.Fatalf("train: exit %d: %s%s", code, out, errOut)
	}
	cfg, err := os.ReadFile(filepath.Join(run, "config.json"))
	if err != nil || !strings.Contains(string(cfg), `"tokenizer_sha256": "037cb335`) {
		t.Errorf("config.json does not record the tokenizer's hash (%v)", err)
	}
	code, out, errOut = runCmd("generate", model, "--delta", filepath.Join(run, dst.DeltaFile), "--tokenizer", tok,
		"--prompt", "Once upon a time, Tom", "--max-tokens", "12")
	if code != 0 {
		t.Fatalf("generate: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "went to the zoo with") {
		t.Errorf("generated %q after fine-tuning, want the taught completion", out)
	}
}

// TestRunDerivesDecoderInputs: given only the token ids, dstune run binds
// a merged decoder's mask, position ids, empty past and use_cache_branch
// and computes the plain decoder's logits (given every input).
func TestRunDerivesDecoderInputs(t *testing.T) {
	dir := t.TempDir()
	c := llamagen.Config{Vocab: 30, Dim: 16, Layers: 1, Heads: 4, KVHeads: 2, Hidden: 20, Seed: 9}
	plainDir, mergedDir := filepath.Join(dir, "plain"), filepath.Join(dir, "merged")
	if err := llamagen.Write(plainDir, c); err != nil {
		t.Fatal(err)
	}
	c.Merged = true
	if err := llamagen.Write(mergedDir, c); err != nil {
		t.Fatal(err)
	}
	write := func(name string, v []int64) string {
		tt, _ := onnx.FromInt64s(name, []int64{1, int64(len(v))}, v)
		path := filepath.Join(dir, name+".pb")
		if err := onnx.WriteTensorFile(path, tt); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ids := write("input_ids", []int64{3, 1, 4, 1, 5, 9})
	mask := write("attention_mask", []int64{1, 1, 1, 1, 1, 1})
	pos := write("position_ids", []int64{0, 1, 2, 3, 4, 5})
	code, out, errOut := runCmd("run", filepath.Join(plainDir, "model.onnx"), "--input", "input_ids="+ids, "--input", "attention_mask="+mask,
		"--input", "position_ids="+pos, "--output-dir", filepath.Join(dir, "want"))
	if code != 0 {
		t.Fatalf("plain: exit %d: %s%s", code, out, errOut)
	}
	code, out, errOut = runCmd("run", filepath.Join(mergedDir, "model.onnx"), "--input", "input_ids="+ids, "--output-dir", filepath.Join(dir, "got"))
	if code != 0 {
		t.Fatalf("merged: exit %d: %s%s", code, out, errOut)
	}
	for _, note := range []string{"position_ids: derived from the attention mask", "past_key_values.0.key: bound empty", "use_cache_branch: bound to false"} {
		if !strings.Contains(errOut, note) {
			t.Errorf("stderr does not say %q:\n%s", note, errOut)
		}
	}
	read := func(p string) *ir.Tensor {
		ot, err := onnx.ReadTensorFile(p)
		if err != nil {
			t.Fatal(err)
		}
		x, err := ir.TensorFromONNX(ot)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	if d := ir.Compare(read(filepath.Join(dir, "got", "output_0.pb")), read(filepath.Join(dir, "want", "output_0.pb")), 0, 0); !d.OK() {
		t.Errorf("logits with derived inputs differ: %v", d)
	}
}

// TestRunText: dstune run --tokenizer --text feeds a language model the
// text's ids and prints the next tokens, the greedy one first (stories260K
// continues "there was a little" with " g", the start of " girl").
func TestRunText(t *testing.T) {
	dir := sharedtest.Path(t, "models", "stories260K")
	code, out, errOut := runCmd("run", filepath.Join(dir, "stories260K.onnx"), "--tokenizer", filepath.Join(dir, "tok512.bin"),
		"--text", "Once upon a time, there was a little")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 2 || !strings.Contains(lines[1], `" g"`) {
		t.Errorf("output:\n%s\nwant \" g\" first", out)
	}
}

// TestTrainRewrittenInputs: a model whose token, mask and position inputs
// are int32 (as some exporters write them), or fix the batch and sequence
// dimensions (an export without dynamic axes), trains as the model with
// int64 inputs and dynamic axes does, bit for bit: the batch is fed in the
// type each input declares, and a fixed batch size is one --batch must
// give.
func TestTrainRewrittenInputs(t *testing.T) {
	cfg := llamagen.Config{Vocab: 40, Dim: 16, Layers: 1, Heads: 4, KVHeads: 2, Hidden: 24, Seed: 5}
	dir := t.TempDir()
	if err := llamagen.Write(dir, cfg); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model.onnx")
	data := llamaData(t, dir, cfg.Vocab)
	rewrite := func(name string, edit func(g *onnx.Graph, in *onnx.ValueInfo)) string {
		m, err := onnx.ReadFile(model)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		n := 0
		for _, in := range m.Graph.Inputs {
			if in.Type != nil && in.Type.ElemType == onnx.Int64 {
				edit(m.Graph, in)
				n++
			}
		}
		if n != 3 {
			t.Fatalf("%d int64 inputs, want the tokens, mask and positions", n)
		}
		path := filepath.Join(dir, name+".onnx")
		if err := onnx.WriteFile(path, m, onnx.WriteOptions{ExternalData: onnx.ExternalNever}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// Each int64 input becomes int32, cast back to int64 where the graph
	// reads it but as a Gather's indices (the embedding lookup, where
	// prompt tuning finds the tokens), which may be int32.
	int32Model := rewrite("int32", func(g *onnx.Graph, in *onnx.ValueInfo) {
		in.Type.ElemType = onnx.Int32
		wide := in.Name + "_int64"
		for _, n := range g.Nodes {
			for i, x := range n.Inputs {
				if x == in.Name && (n.OpType != "Gather" || i != 1) {
					n.Inputs[i] = wide
				}
			}
		}
		g.Nodes = append([]*onnx.Node{{Name: "cast_" + in.Name, OpType: "Cast", Inputs: []string{in.Name}, Outputs: []string{wide},
			Attributes: []*onnx.Attribute{{Name: "to", Type: onnx.AttrInt, I: int64(onnx.Int64)}}}}, g.Nodes...)
	})
	fixedModel := rewrite("fixed", func(g *onnx.Graph, in *onnx.ValueInfo) {
		in.Type.Shape = []onnx.Dim{{Value: 2, HasValue: true}, {Value: 8, HasValue: true}}
	})
	train := func(model, run string, args ...string) []float64 {
		t.Helper()
		code, out, errOut := runCmd(append([]string{"train", model, "--data", data, "--task", "lm", "--steps", "4",
			"--lr", "0.01", "--seed", "1", "--threads", "1", "--out", filepath.Join(dir, run)}, args...)...)
		if code != 0 {
			t.Fatalf("%s %v: exit %d: %s%s", model, args, code, out, errOut)
		}
		var losses []float64
		for _, r := range sharedtest.StepRecords(sharedtest.ReadMetrics(t, filepath.Join(dir, run))) {
			losses = append(losses, *r.Loss)
		}
		return losses
	}
	for _, c := range []struct {
		name, model string
		args        []string
	}{
		{"int32 full", int32Model, []string{"--method", "full", "--batch", "8"}},
		{"int32 prompt", int32Model, []string{"--method", "prompt", "--batch", "8"}},
		{"fixed 2×8 dst", fixedModel, []string{"--method", "dst", "--batch", "2", "--max-len", "8"}},
	} {
		want := train(model, c.name+" reference", c.args...)
		got := train(c.model, c.name, c.args...)
		if !slices.Equal(got, want) || len(got) != 4 {
			t.Errorf("%s: losses %v, the model with int64 inputs and dynamic axes %v", c.name, got, want)
		}
		params, ref := sharedtest.CheckpointParams(t, filepath.Join(dir, c.name)), sharedtest.CheckpointParams(t, filepath.Join(dir, c.name+" reference"))
		for name, p := range ref {
			if !slices.Equal(p, params[name]) {
				t.Errorf("%s: parameter %s differs from the reference model's", c.name, name)
			}
		}
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--batch", "4"}, "takes batches of exactly 2 sequences (its inputs fix the batch size), --batch is 4"},
		{[]string{"--batch", "2", "--max-len", "6"}, "takes sequences of exactly 8 tokens, --max-len is 6"},
	} {
		code, _, errOut := runCmd(append([]string{"train", fixedModel, "--data", data, "--task", "lm", "--method", "full", "--steps", "1", "--out", filepath.Join(dir, "refused")}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.says) {
			t.Errorf("%v on a model fixing batch 2×8: exit %d, %s", c.args, code, errOut)
		}
	}
}
