package peft

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// runLM runs m on tokens [batch, seq] with the attention mask (and the
// position ids Hugging Face derives from it) fed to the inputs the model
// has, and returns the logits.
func runLM(t *testing.T, m *onnx.Model, tokens, mask []int64, batch, seq int) []float32 {
	t.Helper()
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
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
	defer exe.Close()
	plans, err := model.InputPlans()
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]*ir.Tensor{}
	shape := ir.Shape{batch, seq}
	for _, p := range plans {
		switch p.Role {
		case ir.RoleTokens:
			in[p.Input.Name] = ir.FromInt64s(shape, tokens)
		case ir.RoleAttentionMask:
			in[p.Input.Name] = ir.FromInt64s(shape, mask)
		case ir.RolePositionIDs:
			pos := make([]int64, batch*seq)
			ir.PositionIDs(pos, mask, batch, seq)
			in[p.Input.Name] = ir.FromInt64s(shape, pos)
		}
	}
	out, err := accel.RunNamed(exe, in)
	if err != nil {
		t.Fatal(err)
	}
	return ir.Convert(out[g.Outputs[0].Name], ir.Float32).Float32s()
}

// TestPromptIsInsertedTokens: a soft prompt holding the embeddings of
// some vocabulary ids makes the model compute, at the real positions,
// what it computes on the token ids with those ids inserted — after the
// first token or before every token, with the attention mask and
// position ids lengthened — on a batch with a padded row, for llama2.c's
// stories260K, tiny_gpt (positions computed in the graph), and Llama
// exports that take attention_mask and position_ids, in float32 and
// float16 (the prompt cast to the table's dtype).
func TestPromptIsInsertedTokens(t *testing.T) {
	type model struct {
		name string
		m    *onnx.Model
	}
	open := func(path string) *onnx.Model {
		m, err := onnx.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	var models []model
	models = append(models, model{"stories260K", open(sharedtest.Path(t, "models", "stories260K", "stories260K.onnx"))})
	models = append(models, model{"tiny_gpt", open(sharedtest.Path(t, "models", "tiny_gpt", "model.onnx"))})
	for _, dt := range []onnx.DataType{onnx.Float, onnx.Float16} {
		dir := t.TempDir()
		if err := llamagen.Write(dir, llamagen.Config{Vocab: 50, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 24, Seed: 3, DType: dt}); err != nil {
			t.Fatal(err)
		}
		models = append(models, model{"llamagen-" + dt.String(), open(filepath.Join(dir, "model.onnx"))})
	}
	for _, c := range models {
		for _, at := range []string{PromptAfterBOS, PromptStart} {
			t.Run(c.name+"/"+at, func(t *testing.T) {
				site, err := findPromptSite(c.m)
				if err != nil {
					t.Fatal(err)
				}
				table, err := ir.TensorFromONNX(site.table)
				if err != nil {
					t.Fatal(err)
				}
				rows := ir.Convert(table, ir.Float32).Float32s()
				vocab, d := int(site.table.Dims[0]), int(site.table.Dims[1])
				ids := []int64{7, 2, 11}
				p := &SoftPrompt{At: at, Length: len(ids), Dim: d}
				for _, id := range ids {
					p.Values = append(p.Values, rows[int(id)*d:(int(id)+1)*d]...)
				}
				prompted, err := InsertPrompt(c.m, p)
				if err != nil {
					t.Fatal(err)
				}
				// Two rows of 6 tokens, the second padded after 4.
				const batch, seq = 2, 6
				tokens := []int64{1, 5, 9, 13, 17, 21, 1, 4, 8, 12, 0, 0}
				mask := []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}
				for i := range tokens {
					tokens[i] %= int64(vocab)
				}
				got := runLM(t, prompted, tokens, mask, batch, seq)

				n, long := len(ids), seq+len(ids)
				var lt, lm []int64
				for r := range batch {
					row, rmask := tokens[r*seq:(r+1)*seq], mask[r*seq:(r+1)*seq]
					ones := slices.Repeat([]int64{1}, n)
					if at == PromptStart {
						lt, lm = append(append(lt, ids...), row...), append(append(lm, ones...), rmask...)
					} else {
						lt = append(append(append(lt, row[0]), ids...), row[1:]...)
						lm = append(append(append(lm, rmask[0]), ones...), rmask[1:]...)
					}
				}
				want := runLM(t, c.m, lt, lm, batch, long)
				V := len(got) / (batch * seq)
				var maxAbs float64
				for r := range batch {
					for j := range seq {
						if mask[r*seq+j] == 0 {
							continue
						}
						wj := j + n // the position of real token j in the long sequence
						if at == PromptAfterBOS && j == 0 {
							wj = 0
						}
						g, w := got[(r*seq+j)*V:(r*seq+j+1)*V], want[(r*long+wj)*V:(r*long+wj+1)*V]
						for k := range g {
							maxAbs = max(maxAbs, math.Abs(float64(g[k])-float64(w[k])))
						}
					}
				}
				tol := 1e-5
				if strings.HasSuffix(c.name, onnx.Float16.String()) {
					tol = 1e-2 // float16 activations, summed in other orders
				}
				if maxAbs > tol {
					t.Errorf("the prompted model's logits differ from the inserted tokens' by %g", maxAbs)
				}
				t.Logf("logits at the real positions within %.2g", maxAbs)
			})
		}
	}
}

// TestInsertPromptRefuses: what a soft prompt cannot go into, with named
// errors.
func TestInsertPromptRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := llamagen.Write(dir, llamagen.Config{Vocab: 50, Dim: 16, Layers: 1, Heads: 4, KVHeads: 2, Hidden: 24, Seed: 3, KVCache: true}); err != nil {
		t.Fatal(err)
	}
	m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := &SoftPrompt{At: PromptStart, Length: 2, Dim: 16, Values: make([]float32, 32)}
	if _, err := InsertPrompt(m, p); err == nil || !strings.Contains(err.Error(), "without a key/value cache") {
		t.Errorf("a decoder with past inputs: %v", err)
	}
	g := open(t, "models", "tiny_gpt", "model.onnx")
	if _, err := InsertPrompt(g, &SoftPrompt{At: PromptStart, Length: 2, Dim: 8, Values: make([]float32, 16)}); err == nil || !strings.Contains(err.Error(), "has 64") {
		t.Errorf("a prompt of another width: %v", err)
	}
	twice, err := InsertPrompt(g, &SoftPrompt{At: PromptStart, Length: 2, Dim: 64, Values: make([]float32, 128)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InsertPrompt(twice, &SoftPrompt{At: PromptStart, Length: 2, Dim: 64, Values: make([]float32, 128)}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("a second prompt: %v", err)
	}
}

func open(t *testing.T, elems ...string) *onnx.Model {
	t.Helper()
	m, err := onnx.ReadFile(sharedtest.Path(t, elems...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
