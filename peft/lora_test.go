package peft

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
)

// modelSource imports a shared test model as a training run does.
func modelSource(t *testing.T, task train.Task, elems ...string) (*onnx.Model, *ir.Model, *train.ModelSource) {
	t.Helper()
	om, err := onnx.ReadFile(sharedtest.Path(t, elems...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { om.Close() })
	model, err := ir.NewModel(om)
	if err != nil {
		t.Fatal(err)
	}
	src, err := train.NewModelSource(model, train.ModelSourceOptions{Task: task})
	if err != nil {
		t.Fatal(err)
	}
	return om, model, src
}

// TestLoRAEqualsMergedWeights: the graph with adapters computes what the
// model with merged weights W + (α/r)·B·A computes (Delta), on tiny_bert,
// whose linear layers are MatMuls of transposed weights and Gemms with
// transB (the pooler and the classifier), and on tiny_gpt: the graph edit
// and the merge that dstune apply writes agree for every kind of site.
func TestLoRAEqualsMergedWeights(t *testing.T) {
	for _, c := range []struct {
		model   []string
		task    train.Task
		targets []string
		tokens  ir.Shape
	}{
		{[]string{"models", "tiny_bert", "model.onnx"}, train.TaskClassify, linearKinds, ir.Shape{3, 16}},
		{[]string{"models", "tiny_gpt", "model.onnx"}, train.TaskLM, nil, ir.Shape{2, 9}},
	} {
		t.Run(c.model[1], func(t *testing.T) {
			om, model, src := modelSource(t, c.task, c.model...)
			opts := LoRAOptions{Rank: 3, Alpha: 5, Targets: c.targets}
			m, err := NewLoRA(train.MethodEnv{Config: train.Config{Task: c.task, LoRA: opts.JSON()}, Model: model, ForwardGraph: src.ForwardGraph})
			if err != nil {
				t.Fatal(err)
			}
			s, err := m.Source(src)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(5, 6))
			for _, p := range s.Params() {
				for i := range p.Tensor.Float32s() {
					p.Tensor.Float32s()[i] = float32(rng.NormFloat64() * 0.2)
				}
			}
			gemms := 0
			shape := train.BatchShape{B: c.tokens[0], T: c.tokens[1]}
			base, _ := src.Forward(shape)
			uses := consumers(base)
			for _, tg := range m.targets {
				l, err := findLayer(base.Param(tg.Weight), uses)
				if err != nil {
					t.Fatal(err)
				}
				for _, site := range l.sites {
					if _, ok := site.node.Op.(*ir.Gemm); ok {
						gemms++
					}
				}
			}
			if c.task == train.TaskClassify && gemms < 2 {
				t.Fatalf("%d Gemm sites among the targets %v", gemms, m.Targets())
			}
			edited, err := s.(*loraSource).edited(shape, false)
			if err != nil {
				t.Fatal(err)
			}
			tokens := ir.NewTensor(ir.Int64, c.tokens)
			for i := range tokens.Int64s() {
				tokens.Int64s()[i] = int64(rng.IntN(256))
			}
			in := map[string]*ir.Tensor{src.Inputs().Tokens: tokens}
			withAdapters, err := ir.Interpret(edited, in)
			if err != nil {
				t.Fatal(err)
			}

			// The merged model: the adapters' delta on fresh initializers.
			st := &train.EngineState{Step: 1, Params: map[string][]float32{}}
			for _, p := range s.Params() {
				st.Params[p.Name] = p.Tensor.Float32s()
			}
			a, err := m.Adapter(st)
			if err != nil {
				t.Fatal(err)
			}
			inits, err := dst.InitializersOf(om)
			if err != nil {
				t.Fatal(err)
			}
			deltas, err := a.LoRA.Delta(inits)
			if err != nil {
				t.Fatal(err)
			}
			if len(deltas) != len(m.targets) {
				t.Fatalf("%d merged tensors for %d targets", len(deltas), len(m.targets))
			}
			merged, err := ir.NewModel(om)
			if err != nil {
				t.Fatal(err)
			}
			for i := range deltas {
				p := merged.Param(deltas[i].Name)
				if err := deltas[i].ApplyRaw("F32", p.Tensor.Bytes()); err != nil {
					t.Fatal(err)
				}
			}
			msrc, err := train.NewModelSource(merged, train.ModelSourceOptions{Task: c.task})
			if err != nil {
				t.Fatal(err)
			}
			mg, err := msrc.Forward(shape)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ir.Interpret(mg, in)
			if err != nil {
				t.Fatal(err)
			}
			name := edited.Outputs[0].Name
			g, w := withAdapters[name].Float32s(), want[name].Float32s()
			var maxAbs, scale float64
			for i := range g {
				maxAbs = max(maxAbs, math.Abs(float64(g[i])-float64(w[i])))
				scale = max(scale, math.Abs(float64(w[i])))
			}
			if maxAbs > 1e-5*max(scale, 1) {
				t.Errorf("%s with adapters and with merged weights differ by %g (values up to %g)", name, maxAbs, scale)
			}
			t.Logf("%d targets (%d Gemm sites): %s with adapters and merged agree within %.2g", len(m.targets), gemms, name, maxAbs)
		})
	}
}

// TestLoRATargets: which weights --targets and --trainable pick, and the
// named errors when they pick none.
func TestLoRATargets(t *testing.T) {
	for _, c := range []struct {
		targets   []string
		trainable string
		want      string // the targets, or the error
	}{
		{nil, "", "h.0.c_attn.weight h.0.c_proj.weight h.0.mlp_fc.weight h.0.mlp_proj.weight h.1.c_attn.weight h.1.c_proj.weight h.1.mlp_fc.weight h.1.mlp_proj.weight"},
		{[]string{"attn_out", "mlp_in"}, "", "h.0.c_proj.weight h.0.mlp_fc.weight h.1.c_proj.weight h.1.mlp_fc.weight"},
		{nil, `^h\.1\.`, "h.1.c_attn.weight h.1.c_proj.weight h.1.mlp_fc.weight h.1.mlp_proj.weight"},
		{[]string{"mlp_out"}, `^h\.0\.`, "h.0.mlp_proj.weight"},
		{[]string{"head"}, "", "lora: no parameter of the kinds head"},
		{nil, `ln_`, `lora: --trainable "ln_" matches no linear layer weight`},
		{nil, `^wte`, "wte.weight (embedding.weight)"},
	} {
		_, model, _ := modelSource(t, train.TaskLM, "models", "tiny_gpt", "model.onnx")
		src, err := train.NewModelSource(model, train.ModelSourceOptions{Task: train.TaskLM, Trainable: c.trainable})
		if err != nil {
			t.Fatal(err)
		}
		cfg := train.Config{Task: train.TaskLM, Trainable: c.trainable, LoRA: LoRAOptions{Rank: 2, Alpha: 2, Targets: c.targets}.JSON()}
		m, err := NewLoRA(train.MethodEnv{Config: cfg, Model: model, ForwardGraph: src.ForwardGraph})
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if _, err := m.Source(src); err != nil {
			got = err.Error()
		} else {
			got = strings.Join(m.Targets(), " ")
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("--targets %v --trainable %q: %q, want %q", c.targets, c.trainable, got, c.want)
		}
	}
}

// TestPromptRefusesTrainable: prompt tuning trains its prompt only.
func TestPromptRefusesTrainable(t *testing.T) {
	_, err := NewPrompt(train.MethodEnv{Config: train.Config{Trainable: "wte"}})
	if err == nil || !strings.Contains(err.Error(), "prompt tuning trains only its virtual tokens") {
		t.Errorf("got %v", err)
	}
}

// TestDropoutMask: each entry is 0 or 1/(1−p), kept at the rate 1 − p
// (within 5 standard deviations), the same for the same seed, and all
// kept at p = 0.
func TestDropoutMask(t *testing.T) {
	for _, p := range []float64{0, 0.1, 0.25, 0.5, 0.9} {
		v := make([]float32, 100003)
		fillDropoutMask(v, p, rand.NewPCG(1, 2))
		again := make([]float32, len(v))
		fillDropoutMask(again, p, rand.NewPCG(1, 2))
		kept := 0
		for i, x := range v {
			switch x {
			case 0:
			case float32(1 / (1 - p)):
				kept++
			default:
				t.Fatalf("p %g: entry %d is %v", p, i, x)
			}
			if x != again[i] {
				t.Fatalf("p %g: entry %d differs between two draws of one seed", p, i)
			}
		}
		n := float64(len(v))
		if sd := math.Sqrt(n * p * (1 - p)); math.Abs(float64(kept)-n*(1-p)) > 5*sd+0.5 {
			t.Errorf("p %g: %d of %d kept, expected %.0f ± %.0f", p, kept, len(v), n*(1-p), sd)
		}
	}
}

func BenchmarkDropoutMask(b *testing.B) {
	v := make([]float32, 1<<20)
	src := rand.NewPCG(1, 2)
	b.SetBytes(4 << 20)
	for b.Loop() {
		fillDropoutMask(v, 0.1, src)
	}
}

// TestLoRASummaryNotesFullRank: a rank reaching a weight's smaller side
// is trained as asked, with a note; below it, no note.
func TestLoRASummaryNotesFullRank(t *testing.T) {
	for _, c := range []struct {
		rank int
		want string // "" for no note
	}{
		{63, ""},
		{64, "note: r 64 reaches the smaller side of 8 of the 8 weights (h.0.c_attn.weight is 64×192): an update of rank 64 cannot exceed it, so there the adapter trains 16384 parameters where the weight has 12288"},
	} {
		_, model, _ := modelSource(t, train.TaskLM, "models", "tiny_gpt", "model.onnx")
		src, err := train.NewModelSource(model, train.ModelSourceOptions{Task: train.TaskLM})
		if err != nil {
			t.Fatal(err)
		}
		cfg := train.Config{Task: train.TaskLM, LoRA: LoRAOptions{Rank: c.rank, Alpha: 2}.JSON()}
		m, err := NewLoRA(train.MethodEnv{Config: cfg, Model: model, ForwardGraph: src.ForwardGraph})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Source(src); err != nil {
			t.Fatal(err)
		}
		got := m.Summary()
		if c.want == "" && strings.Contains(got, "note:") || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("r %d: summary %q, want the note %q", c.rank, got, c.want)
		}
	}
}
