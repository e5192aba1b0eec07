package demo

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

func TestSkills(t *testing.T) {
	for _, c := range []struct {
		skill          Skill
		prompt, answer string
	}{
		{Copy, "hello>", "hello."},
		{Reverse, "hello<", "olleh."},
		{Upper, "hello^", "HELLO."},
		{ReverseUpper, "hello!", "OLLEH."},
	} {
		e := c.skill.Example([]byte("hello"))
		if e.Prompt != c.prompt || e.Answer != c.answer {
			t.Errorf("%s: %q → %q, want %q → %q", c.skill.Name, e.Prompt, e.Answer, c.prompt, c.answer)
		}
	}
	ex := Examples([]Skill{Copy, Upper}, 4, 1)
	if ex[0].Prompt[WordLen] != '>' || ex[1].Prompt[WordLen] != '^' || ex[2].Prompt[WordLen] != '>' {
		t.Errorf("skills not taken in turn: %v", ex)
	}
	if again := Examples([]Skill{Copy, Upper}, 4, 1); !equalExamples(ex, again) {
		t.Errorf("same seed, other examples: %v, %v", ex, again)
	}
	letters := map[byte]bool{}
	for _, e := range Examples([]Skill{Copy}, 500, 3) {
		for i := range WordLen {
			c := e.Prompt[i]
			if c < 'a' || c > 'z' {
				t.Fatalf("word %q has a byte outside a–z", e.Prompt)
			}
			letters[c] = true
		}
	}
	if len(letters) != 26 {
		t.Errorf("500 words use %d letters", len(letters))
	}

	trainSet, validSet := TaskData(ReverseUpper, 3000, 200, 5)
	if len(trainSet) != 3000 || len(validSet) != 200 {
		t.Fatalf("%d and %d examples", len(trainSet), len(validSet))
	}
	held := map[string]bool{}
	for _, e := range validSet {
		held[e.Prompt] = true
	}
	for _, e := range trainSet {
		if held[e.Prompt] {
			t.Fatalf("validation word %q also in training", e.Prompt)
		}
	}
}

func equalExamples(a, b []Example) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWriteJSONL: the written file is training data dstune reads, whose
// targets are exactly the answer bytes.
func TestWriteJSONL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	ex := []Example{Reverse.Example([]byte("abcde")), Upper.Example([]byte("vwxyz"))}
	if err := WriteJSONL(path, ex); err != nil {
		t.Fatal(err)
	}
	ds, err := train.LoadJSONL(path, train.DataOptions{Task: train.TaskLM, VocabSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := train.NewEvalBatches(ds, train.BatchOptions{BatchSize: 2, MaxLen: 12, FixedLen: true})
	if err != nil {
		t.Fatal(err)
	}
	var b train.Batch
	if !eb.Next(&b) {
		t.Fatal("no batch")
	}
	for r, e := range ex {
		var got []byte
		for tpos := range b.T {
			if target := b.Targets[r*b.T+tpos]; target != train.IgnoreIndex {
				got = append(got, byte(target))
			}
		}
		if string(got) != e.Answer {
			t.Errorf("row %d: targets %q, want the answer %q", r, got, e.Answer)
		}
	}
}

func shippedModel(t *testing.T) *ir.Model {
	t.Helper()
	m, err := onnx.Decode(BaseModel, "")
	if err != nil {
		t.Fatal(err)
	}
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return model
}

// TestEvaluate: Evaluate's loss is the validation loss dstune's trainer
// computes on the same data, and its greedy completions are what a
// byte-at-a-time decoding loop over a one-row executable produces.
func TestEvaluate(t *testing.T) {
	model := shippedModel(t)
	examples := Examples([]Skill{Copy, Reverse, Upper, ReverseUpper}, 70, 11) // two batches, the second partial
	q, err := Evaluate(model, examples, 2)
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "valid.jsonl")
	if err := WriteJSONL(path, examples); err != nil {
		t.Fatal(err)
	}
	ds, err := train.LoadJSONL(path, train.DataOptions{Task: train.TaskLM, VocabSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	src, err := train.NewModelSource(model, train.ModelSourceOptions{Task: train.TaskLM})
	if err != nil {
		t.Fatal(err)
	}
	opt, _ := update.DefaultOptimizer(update.OptimizerAdamW)
	backend, _ := accel.Open("cpu")
	eng, err := train.NewEngine(src, backend, opt, train.FullMethod{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	eb, _ := train.NewEvalBatches(ds, train.BatchOptions{BatchSize: 70, MaxLen: 12, FixedLen: true})
	var b train.Batch
	eb.Next(&b)
	want, err := eng.EvalLoss(&b)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(q.Loss-want) > 1e-5*math.Max(1, want) {
		t.Errorf("Evaluate's loss %.7f, the trainer's validation loss %.7f", q.Loss, want)
	}

	exact := 0
	for i, e := range examples {
		got := greedyOneRow(t, model, e)
		if got != q.Completions[i] {
			t.Errorf("%q: Evaluate completed %q, one-row decoding %q", e.Prompt, q.Completions[i], got)
		}
		if got == e.Answer {
			exact++
		}
	}
	if q.ExactMatch != float64(exact)/float64(len(examples)) {
		t.Errorf("exact match %g, want %d/%d", q.ExactMatch, exact, len(examples))
	}
	// Three of the four skills are what the base model was trained on.
	if exact < len(examples)*3/4-2 || exact > len(examples)*3/4+2 {
		t.Errorf("%d of %d exact, want about 3/4", exact, len(examples))
	}
}

// greedyOneRow decodes e's answer byte by byte, growing the sequence one
// token per pass.
func greedyOneRow(t *testing.T, model *ir.Model, e Example) string {
	seq := []int64{}
	for i := range len(e.Prompt) {
		seq = append(seq, int64(e.Prompt[i]))
	}
	var out []byte
	for range len(e.Answer) {
		logits := modelLogits(t, model, seq)
		next := argmax(logits[(len(seq)-1)*256 : len(seq)*256])
		out = append(out, byte(next))
		seq = append(seq, int64(next))
	}
	return string(out)
}

// checkSkills: model knows the three pretraining skills and not the
// demo's fine-tuning task (the demo's premise).
func checkSkills(t *testing.T, model *ir.Model) {
	t.Helper()
	for _, s := range []Skill{Copy, Reverse, Upper, ReverseUpper} {
		q, err := Evaluate(model, Examples([]Skill{s}, 128, 99), 2)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-14s loss %.4f, exact match %.3f", s.Name, q.Loss, q.ExactMatch)
		if s.Name == ReverseUpper.Name {
			if q.ExactMatch > 0.05 {
				t.Errorf("%s: the base model already does it (%.3f)", s.Name, q.ExactMatch)
			}
		} else if q.ExactMatch < 0.98 {
			t.Errorf("%s: exact match %.3f, want ≥ 0.98", s.Name, q.ExactMatch)
		}
	}
}

// TestBaseModel: the shipped model has its skills and records how it was
// made.
func TestBaseModel(t *testing.T) {
	model := shippedModel(t)
	checkSkills(t, model)
	meta := map[string]string{}
	for _, p := range model.ONNX.MetadataProps {
		meta[p.Key] = p.Value
	}
	if meta[MetaCommand] != RegenerateCommand || meta[MetaSkills] != "copy,reverse,upper" || meta[MetaSteps] == "" || meta[MetaISA] == "" || meta[MetaThreads] == "" {
		t.Errorf("metadata %v", meta)
	}
}

// TestRegenerateDeterministic: regenerating gives the same bytes every
// time (a 30-step pretraining, twice). Without -short (and with SIMD
// kernels), the full regeneration (≈ 10 s) also runs: its model must have
// the shipped model's skills, and whether it is byte for byte the shipped
// file is logged; it is on a machine like the one that made base.onnx
// (ISA and threads recorded in it) until a change to the training
// kernels' arithmetic, after which `go run ./cmd/dstune demo --regenerate
// demo` refreshes it.
func TestRegenerateDeterministic(t *testing.T) {
	short := DefaultPretraining
	short.Steps, short.Examples, short.Warmup = 30, 2000, 5
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if _, err := Regenerate(context.Background(), dir, short); err != nil {
			t.Fatal(err)
		}
	}
	fa, _ := os.ReadFile(filepath.Join(a, BaseModelFile))
	fb, _ := os.ReadFile(filepath.Join(b, BaseModelFile))
	if len(fa) == 0 || !bytes.Equal(fa, fb) {
		t.Fatalf("two 30-step regenerations differ (%d and %d bytes)", len(fa), len(fb))
	}
	if bytes.Equal(fa, BaseModel) {
		t.Fatal("30 steps gave the shipped model")
	}
	if testing.Short() {
		t.Skip("-short: the full regeneration is skipped")
	}
	if kernels.ActiveISA() == kernels.Generic {
		t.Skip("pure Go kernels (-tags purego or no SIMD): the full regeneration takes about two minutes and is skipped")
	}
	if _, err := Regenerate(context.Background(), a, DefaultPretraining); err != nil {
		t.Fatal(err)
	}
	full, _ := os.ReadFile(filepath.Join(a, BaseModelFile))
	m, err := onnx.Decode(full, "")
	if err != nil {
		t.Fatal(err)
	}
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	checkSkills(t, model)
	meta := map[string]string{}
	for _, p := range shippedModel(t).ONNX.MetadataProps {
		meta[p.Key] = p.Value
	}
	isa := kernels.ActiveISA().String()
	switch {
	case bytes.Equal(full, BaseModel):
		t.Logf("the regenerated base.onnx is byte for byte the shipped one")
	case meta[MetaISA] != isa || meta[MetaThreads] != strconv.Itoa(DefaultPretraining.Threads):
		t.Logf("the regenerated base.onnx differs from the shipped one, made with ISA %s and %s threads (this run: %s, %d)",
			meta[MetaISA], meta[MetaThreads], isa, DefaultPretraining.Threads)
	default:
		t.Logf("NOTE: the regenerated base.onnx differs from the shipped one although ISA and threads match: the training arithmetic has changed since; %s refreshes it", RegenerateCommand)
	}
}
