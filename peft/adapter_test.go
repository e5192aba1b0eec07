package peft

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/safetensors"
)

// smallLoRA is a rank-2 adapter of one [2 out, 3 in] module "l", every
// value finite.
func smallLoRA() *Adapter {
	return &Adapter{Method: "lora", LoRA: &LoRAWeights{Rank: 2, Alpha: 4, Modules: []LoRAModule{{
		Path: "l", Weight: "l.weight", In: 3, Out: 2,
		A: []float32{0.1, 0.2, 0.3, -0.1, -0.2, -0.3},
		B: []float32{1, 2, 3, 4},
	}}}}
}

// smallPrompt is a soft prompt of 3 virtual tokens of 4 values.
func smallPrompt() *Adapter {
	v := make([]float32, 12)
	for i := range v {
		v[i] = float32(i) / 10
	}
	return &Adapter{Method: "prompt", Prompt: &SoftPrompt{At: PromptStart, Length: 3, Dim: 4, Values: v}}
}

// writeAdapterDir writes a into a new directory and returns the adapter
// file's path.
func writeAdapterDir(t *testing.T, a *Adapter) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteAdapter(dir, a, "lm"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, AdapterFile)
}

// TestReadAdapterRefusesNonFinite: a NaN or infinity anywhere in a LoRA
// matrix or a soft prompt is refused on reading, naming the file, the
// tensor and the value's index, row and column; the same adapter with
// finite values reads.
func TestReadAdapterRefusesNonFinite(t *testing.T) {
	for _, a := range []*Adapter{smallLoRA(), smallPrompt()} {
		if _, err := ReadAdapter(writeAdapterDir(t, a)); err != nil {
			t.Fatalf("finite %s adapter: %v", a.Method, err)
		}
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, c := range []struct {
		name   string
		adapt  func() *Adapter
		tensor string
		want   string
	}{
		{"NaN in A", func() *Adapter { a := smallLoRA(); a.LoRA.Modules[0].A[4] = nan; return a },
			"base_model.model.l.lora_A.weight", "value 4 (row 1, column 1 of [2 3]) is NaN"},
		{"-Inf in B", func() *Adapter { a := smallLoRA(); a.LoRA.Modules[0].B[3] = -inf; return a },
			"base_model.model.l.lora_B.weight", "value 3 (row 1, column 1 of [2 2]) is -Inf"},
		{"+Inf in the prompt", func() *Adapter { a := smallPrompt(); a.Prompt.Values[6] = inf; return a },
			"prompt_embeddings", "value 6 (row 1, column 2 of [3 4]) is +Inf"},
	} {
		path := writeAdapterDir(t, c.adapt())
		_, err := ReadAdapter(path)
		if err == nil {
			t.Errorf("%s: read without an error", c.name)
			continue
		}
		for _, want := range []string{path, `"` + c.tensor + `"`, c.want, "finite"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v; want it to say %q", c.name, err, want)
			}
		}
	}
}

// f32Init is a float32 initializer.
func f32Init(name string, dims []int64, values []float32) dst.Initializer {
	return dst.Initializer{Name: name, DType: "F32", Dims: dims, Data: f32Bytes(values)}
}

// TestLoRADeltaRefusesOverflow: finite A and B whose product overflows
// float32, or an α that makes the scaled product infinite, are refused by
// the merge, naming the module, the initializer and the entry; a product
// that fits merges to W + (α/r)·B·A.
func TestLoRADeltaRefusesOverflow(t *testing.T) {
	base := []float32{1, 2, 3, 4, 5, 6}
	inits := []dst.Initializer{f32Init("l.weight", []int64{2, 3}, base)}

	w := smallLoRA().LoRA
	deltas, err := w.Delta(inits)
	if err != nil {
		t.Fatal(err)
	}
	m := w.Modules[0]
	for pos, got := range deltas[0].Values {
		o, i := pos/3, pos%3
		ba := float64(m.B[2*o])*float64(m.A[i]) + float64(m.B[2*o+1])*float64(m.A[3+i])
		if want := float32(float64(base[pos]) + 2*ba); got != want || deltas[0].Indices[pos] != int64(pos) {
			t.Errorf("merged entry %d = %g at %d, want %g", pos, got, deltas[0].Indices[pos], want)
		}
	}

	for _, c := range []struct {
		name  string
		adapt func(*LoRAWeights)
		want  []string
	}{
		// B[1,0]·A[0,2] = 9e76 (B[0,0] = 0 keeps row 0 small): entry
		// (row 1, column 2) = flat 5; (α/r)·B·A at (1, 1) = 1.2e38 fits.
		{"product", func(w *LoRAWeights) { w.Modules[0].A[2], w.Modules[0].B[2], w.Modules[0].B[0] = 3e38, 3e38, 0 },
			[]string{`module l: initializer "l.weight" entry 5 (W[1 2])`, "beyond float32's range"}},
		// α/r ≈ 9e307 times B·A ≈ 100 at entry 0 is infinite even in
		// float64.
		{"alpha", func(w *LoRAWeights) { w.Alpha, w.Modules[0].A[0], w.Modules[0].B[0] = math.MaxFloat64, 10, 10 },
			[]string{`initializer "l.weight" entry 0 (W[0 0])`, "not a finite number"}},
		// B·A = MaxFloat32 fits float32; scaled by α/r = 2 it does not.
		{"scaled", func(w *LoRAWeights) {
			m := &w.Modules[0]
			clear(m.A)
			clear(m.B)
			m.A[1], m.B[0] = math.MaxFloat32, 1
		}, []string{`entry 1 (W[0 1])`, "beyond float32's range"}},
	} {
		w := smallLoRA().LoRA
		c.adapt(w)
		_, err := w.Delta(inits)
		if err == nil {
			t.Errorf("%s: merged without an error", c.name)
			continue
		}
		for _, want := range c.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v; want it to say %q", c.name, err, want)
			}
		}
	}
}

// TestLoRADeltaNamesMissingTarget: a module whose targets metadata names
// an initializer the model lacks is refused naming that initializer, not
// the PATH.weight the model does have; a module without one falls back to
// PATH.weight, then PATH, and names both when neither is there.
func TestLoRADeltaNamesMissingTarget(t *testing.T) {
	inits := []dst.Initializer{f32Init("l.weight", []int64{2, 3}, make([]float32, 6))}
	w := smallLoRA().LoRA
	w.Modules[0].Weight = "nope"
	_, err := w.Delta(inits)
	if err == nil || !strings.Contains(err.Error(), `module l: the adapter's targets name initializer "nope", which the model does not have`) {
		t.Errorf("targets naming %q: err = %v, want it to name %q", "nope", err, "nope")
	}
	w.Modules[0].Weight = ""
	if _, err := w.Delta(inits); err != nil {
		t.Errorf("no initializer in the targets, l.weight in the model: %v", err)
	}
	w.Modules[0].Path = "m"
	if _, err := w.Delta(inits); err == nil || !strings.Contains(err.Error(), "no initializer m.weight (nor m)") {
		t.Errorf("module m, no m.weight in the model: err = %v", err)
	}
}

// TestLoRADeltaRoundsOnce: the merged weight W + (α/r)·B·A, computed in
// float64, reaches a float64 initializer exactly and a float16 one
// rounded once: 1 + 2⁻¹¹ + 2⁻⁴⁰ is nearer 1 + 2⁻¹⁰ than 1 in float16,
// but in float32 it is the tie 1 + 2⁻¹¹, which rounds to 1.
func TestLoRADeltaRoundsOnce(t *testing.T) {
	w := &LoRAWeights{Rank: 2, Alpha: 2, Modules: []LoRAModule{{Path: "l", Weight: "l.weight", In: 1, Out: 1,
		A: []float32{1, 1}, B: []float32{0x1p-11, 0x1p-40}}}}
	const ba = 0x1p-11 + 0x1p-40
	for _, c := range []struct {
		dtype string
		base  []byte // W, little-endian
		want  []byte
	}{
		{"F16", []byte{0x00, 0x3c}, []byte{0x01, 0x3c}}, // 1 → 1 + 2⁻¹⁰
		{"F64", binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.1)), binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.1+ba))},
	} {
		inits := []dst.Initializer{{Name: "l.weight", DType: c.dtype, Dims: []int64{1, 1}, Data: c.base}}
		deltas, err := w.Delta(inits)
		if err != nil {
			t.Fatalf("%s: %v", c.dtype, err)
		}
		got := slices.Clone(c.base)
		if err := deltas[0].ApplyRaw(c.dtype, got); err != nil {
			t.Fatalf("%s: %v", c.dtype, err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: merged weight %x, want %x", c.dtype, got, c.want)
		}
	}
}

// rewriteConfig changes keys of the AdapterConfigFile beside adapter (a
// nil value deletes the key).
func rewriteConfig(t *testing.T, adapter string, changes map[string]any) {
	t.Helper()
	path := filepath.Join(filepath.Dir(adapter), AdapterConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var config map[string]any
	if err := json.Unmarshal(data, &config); err != nil {
		t.Fatal(err)
	}
	for k, v := range changes {
		if v == nil {
			delete(config, k)
		} else {
			config[k] = v
		}
	}
	if data, err = json.Marshal(config); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReadAdapterConfigAgrees: an adapter file dstune wrote and the
// adapter_config.json beside it (the pair PEFT loads) must agree on the
// method, r, lora_alpha, num_virtual_tokens and token_dim; a disagreement
// is refused naming both values. A configuration without those keys, or
// beside a file under another name (no pair), says nothing against it.
// PEFT's own prompt file (no metadata) must fit its configuration too.
func TestReadAdapterConfigAgrees(t *testing.T) {
	for _, c := range []struct {
		name    string
		adapter func() *Adapter
		changes map[string]any
		want    []string // empty: it reads
	}{
		{"r", smallLoRA, map[string]any{"r": 4}, []string{"r 4", "metadata has r 2", "disagree"}},
		{"lora_alpha", smallLoRA, map[string]any{"lora_alpha": 16}, []string{"lora_alpha 16", "metadata has lora_alpha 4"}},
		{"peft_type", smallLoRA, map[string]any{"peft_type": "PROMPT_TUNING"}, []string{`peft_type "PROMPT_TUNING"`, `method "lora"`}},
		{"no r or α", smallLoRA, map[string]any{"r": nil, "lora_alpha": nil}, nil},
		{"num_virtual_tokens", smallPrompt, map[string]any{"num_virtual_tokens": 5}, []string{"num_virtual_tokens 5", "[3 4] (3 virtual tokens)"}},
		{"token_dim", smallPrompt, map[string]any{"token_dim": 8}, []string{"token_dim 8", "(4 values a token)"}},
		{"null num_virtual_tokens", smallPrompt, map[string]any{"num_virtual_tokens": nil}, nil},
	} {
		path := writeAdapterDir(t, c.adapter())
		rewriteConfig(t, path, c.changes)
		_, err := ReadAdapter(path)
		switch {
		case len(c.want) == 0 && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case len(c.want) > 0 && err == nil:
			t.Errorf("%s: read without an error", c.name)
		case err != nil:
			for _, want := range append(c.want, path, AdapterConfigFile) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: %v; want it to say %q", c.name, err, want)
				}
			}
		}
		if err == nil {
			continue
		}
		// Under another name the file is no pair with the configuration.
		renamed := filepath.Join(filepath.Dir(path), "copy.safetensors")
		if err := os.Rename(path, renamed); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadAdapter(renamed); err != nil {
			t.Errorf("%s, renamed: %v", c.name, err)
		}
	}

	// PEFT's own soft prompt: no dstune metadata, so the configuration
	// says what the file is, and must fit its tensor.
	dir := t.TempDir()
	prompt := smallPrompt().Prompt
	path := filepath.Join(dir, AdapterFile)
	if err := safetensors.WriteFile(path, map[string]string{"format": "pt"}, []safetensors.Tensor{
		{Name: promptKey, DType: safetensors.F32, Shape: []int64{3, 4}, Data: f32Bytes(prompt.Values)}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{3, 7} {
		config := fmt.Sprintf(`{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": %d, "token_dim": 4}`, n)
		if err := os.WriteFile(filepath.Join(dir, AdapterConfigFile), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		a, err := ReadAdapter(path)
		switch {
		case n == 3 && (err != nil || a.Prompt == nil || a.Prompt.At != PromptStart):
			t.Errorf("PEFT's prompt of 3 tokens: %+v, %v", a, err)
		case n == 7 && (err == nil || !strings.Contains(err.Error(), "num_virtual_tokens 7")):
			t.Errorf("PEFT's prompt of 3 tokens, its configuration saying 7: %v", err)
		}
	}
}
