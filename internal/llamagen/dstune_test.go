package llamagen_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

var small = llamagen.Config{Vocab: 50, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 24, Seed: 11}

func load(t *testing.T, c llamagen.Config) (*ir.Model, string) {
	t.Helper()
	dir := t.TempDir()
	if err := llamagen.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.onnx")
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return model, path
}

// runLM runs model on tokens [batch, seq] with LMBindings (no past) and
// position ids derived from mask; it returns the logits.
func runLM(t *testing.T, model *ir.Model, tokens, mask []int64, batch, seq int) *ir.Tensor {
	t.Helper()
	b, _, err := model.LMBindings(batch, seq)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.Specialize(b)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := cpu.Compile(g, accel.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	pos := make([]int64, batch*seq)
	ir.PositionIDs(pos, mask, batch, seq)
	out, err := accel.RunNamed(exe, map[string]*ir.Tensor{
		"input_ids":      ir.FromInt64s(ir.Shape{batch, seq}, tokens),
		"attention_mask": ir.FromInt64s(ir.Shape{batch, seq}, mask),
		"position_ids":   ir.FromInt64s(ir.Shape{batch, seq}, pos),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out["logits"]
}

// TestCacheInputsBoundEmpty: a "with past" decoder and a merged decoder,
// bound by LMBindings (empty past, use_cache_branch false), compute the
// plain decoder's logits; the plain decoder matches onnxruntime.
func TestCacheInputsBoundEmpty(t *testing.T) {
	const batch, seq = 2, 5
	tokens := []int64{1, 4, 9, 16, 25, 36, 49, 8, 3, 2}
	mask := []int64{1, 1, 1, 1, 1, 0, 0, 1, 1, 1} // the second row left-padded
	plain, path := load(t, small)
	want := runLM(t, plain, tokens, mask, batch, seq)
	for _, variant := range []struct {
		name string
		edit func(*llamagen.Config)
	}{{"with past", func(c *llamagen.Config) { c.KVCache = true }}, {"merged", func(c *llamagen.Config) { c.Merged = true }}} {
		c := small
		variant.edit(&c)
		model, _ := load(t, c)
		_, notes, err := model.LMBindings(batch, seq)
		if err != nil {
			t.Fatal(err)
		}
		wantNotes := 2 * c.Layers
		if c.Merged {
			wantNotes++
		}
		if len(notes) != wantNotes {
			t.Errorf("%s: bound %d inputs, want %d: %v", variant.name, len(notes), wantNotes, notes)
		}
		got := runLM(t, model, tokens, mask, batch, seq)
		if d := ir.Compare(got, want, 0, 0); !d.OK() {
			t.Errorf("%s: logits differ from the plain decoder's: %v", variant.name, d)
		}
	}

	ort.Need(t)
	pos := make([]int64, batch*seq)
	ir.PositionIDs(pos, mask, batch, seq)
	in := func(v []int64) *onnx.Tensor {
		x, _ := onnx.FromInt64s("", []int64{batch, seq}, v)
		return x
	}
	res, err := ort.Run(path, map[string]*onnx.Tensor{"input_ids": in(tokens), "attention_mask": in(mask), "position_ids": in(pos)})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ir.TensorFromONNX(res["logits"])
	if err != nil {
		t.Fatal(err)
	}
	if d := ir.Compare(want, ref, 1e-4, 1e-5); !d.OK() {
		t.Errorf("logits differ from onnxruntime's: %v", d)
	}
}

// TestInputPlans checks the roles given to the decoders' inputs.
func TestInputPlans(t *testing.T) {
	c := small
	c.Merged = true
	model, _ := load(t, c)
	plans, err := model.InputPlans()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range plans {
		got = append(got, fmt.Sprintf("%s=%s/%d", p.Input.Name, p.Role, p.PastAxis))
	}
	want := []string{"input_ids=tokens/-1", "attention_mask=attention mask/-1", "position_ids=position ids/-1"}
	for l := range c.Layers {
		want = append(want, fmt.Sprintf("past_key_values.%d.key=past key/value/2", l), fmt.Sprintf("past_key_values.%d.value=past key/value/2", l))
	}
	want = append(want, "use_cache_branch=cache branch/-1")
	if !slices.Equal(got, want) {
		t.Errorf("plans\n%v\nwant\n%v", got, want)
	}
}
