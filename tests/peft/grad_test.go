package peft

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/train"
)

// The tolerance of the comparison with PyTorch (float64 there, float32
// here): an element is off when |got − want| > rtol·|want| + atol·max|want|.
const (
	rtol = 1e-4
	atol = 1e-5
)

func readTensor(t *testing.T, path string) *ir.Tensor {
	t.Helper()
	ot, err := onnx.ReadTensorFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ir.TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// reference is one case of make_reference.py: the adapter's values, the
// gradients of the loss with respect to them, and the loss.
type reference struct {
	values, grads map[string]*ir.Tensor
	masks         map[string]*ir.Tensor // lora_dropout: keep masks by weight
	loss          float64
}

func readReference(t *testing.T, name string) reference {
	t.Helper()
	dir := filepath.Join("testdata", name)
	ref := reference{values: map[string]*ir.Tensor{}, grads: map[string]*ir.Tensor{}, masks: map[string]*ir.Tensor{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.pb"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no references in %s (%v)", dir, err)
	}
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".pb")
		switch {
		case strings.HasPrefix(base, "grad_"):
			ref.grads[strings.TrimPrefix(base, "grad_")] = readTensor(t, f)
		case strings.HasPrefix(base, "mask_"):
			ref.masks[strings.TrimPrefix(base, "mask_")] = readTensor(t, f)
		default:
			ref.values[base] = readTensor(t, f)
		}
	}
	text, err := os.ReadFile(filepath.Join(dir, "loss.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if ref.loss, err = strconv.ParseFloat(strings.TrimSpace(string(text)), 64); err != nil {
		t.Fatal(err)
	}
	return ref
}

// tinyGPT is tiny_gpt as a training run's model source, with the tokens
// of its test_data_set_0.
func tinyGPT(t *testing.T) (*ir.Model, *train.ModelSource, *ir.Tensor) {
	t.Helper()
	om, err := onnx.ReadFile(sharedtest.Path(t, "models", "tiny_gpt", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { om.Close() })
	model, err := ir.NewModel(om)
	if err != nil {
		t.Fatal(err)
	}
	src, err := train.NewModelSource(model, train.ModelSourceOptions{Task: train.TaskLM})
	if err != nil {
		t.Fatal(err)
	}
	return model, src, readTensor(t, sharedtest.Path(t, "models", "tiny_gpt", "test_data_set_0", "input_0.pb"))
}

// nextTokenTargets are the lm targets of tokens: the next token, and no
// target at the last position.
func nextTokenTargets(tokens *ir.Tensor) *ir.Tensor {
	shape := tokens.Shape()
	b, n := shape[0], shape[1]
	targets := ir.NewTensor(ir.Int64, shape)
	tv, tok := targets.Int64s(), tokens.Int64s()
	for i := range b {
		for j := range n {
			tv[i*n+j] = train.IgnoreIndex
			if j+1 < n {
				tv[i*n+j] = tok[i*n+j+1]
			}
		}
	}
	return targets
}

// runTrainingGraph runs tg on the CPU backend with the tokens, the
// targets and the given other inputs, and returns its outputs by name.
func runTrainingGraph(t *testing.T, tg *ir.Graph, src train.GraphSource, tokens *ir.Tensor, other map[string]*ir.Tensor) map[string]*ir.Tensor {
	t.Helper()
	exe, err := cpu.New().Compile(tg, accel.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	feed := make([]*ir.Tensor, len(tg.Inputs))
	for i, in := range tg.Inputs {
		switch in.Name {
		case src.Inputs().Tokens:
			feed[i] = tokens
		case train.TargetsInput:
			feed[i] = nextTokenTargets(tokens)
		default:
			if feed[i] = other[in.Name]; feed[i] == nil {
				t.Fatalf("no value for the training graph's input %q", in.Name)
			}
		}
	}
	out, err := exe.Run(feed)
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]*ir.Tensor{}
	for i, o := range tg.Outputs {
		named[o.Name] = out[i].Clone()
	}
	return named
}

// errStats are a comparison's largest errStats, for the log: absolute,
// relative (over entries above 1e-3 of the largest), and of the whole
// tensor (‖got − want‖ / ‖want‖).
type errStats struct{ abs, rel, norm float64 }

func (e errStats) max(o errStats) errStats {
	return errStats{max(e.abs, o.abs), max(e.rel, o.rel), max(e.norm, o.norm)}
}

func (e errStats) String() string {
	return fmt.Sprintf("max abs error %.3g, max rel error %.3g, relative error of the whole tensor %.3g", e.abs, e.rel, e.norm)
}

// compare checks got against PyTorch's want.
func compare(t *testing.T, name string, got, want *ir.Tensor) errStats {
	t.Helper()
	if got == nil || want == nil {
		t.Fatalf("%s: dstune %v, PyTorch %v", name, got, want)
	}
	g, w := got.Float32s(), want.Float32s()
	if len(g) != len(w) {
		t.Fatalf("%s: %d values, PyTorch %d", name, len(g), len(w))
	}
	var scale, diff2, want2 float64
	for _, x := range w {
		scale = max(scale, math.Abs(float64(x)))
	}
	var e errStats
	off := 0
	for i := range g {
		d := math.Abs(float64(g[i]) - float64(w[i]))
		diff2 += d * d
		want2 += float64(w[i]) * float64(w[i])
		e.abs = max(e.abs, d)
		if math.Abs(float64(w[i])) > 1e-3*scale {
			e.rel = max(e.rel, d/math.Abs(float64(w[i])))
		}
		if d > rtol*math.Abs(float64(w[i]))+atol*scale {
			off++
		}
	}
	if want2 > 0 {
		e.norm = math.Sqrt(diff2 / want2)
	}
	if off > 0 || e.norm > rtol {
		t.Errorf("%s: %d of %d entries off PyTorch's; %v", name, off, len(g), e)
	}
	return e
}

// TestLoRAGradientsMatchPyTorch: the training graph of a LoRA run on
// tiny_gpt (r = 4, α = 8, the default targets: c_attn, c_proj, mlp_fc and
// mlp_proj of both blocks) gives PyTorch's loss and gradients of every
// lora_A and lora_B, without dropout and with the reference's dropout
// masks fed as the graph's mask inputs.
func TestLoRAGradientsMatchPyTorch(t *testing.T) {
	for _, c := range []struct {
		name    string
		dropout float64
	}{{"lora", 0}, {"lora_dropout", 0.25}} {
		t.Run(c.name, func(t *testing.T) {
			ref := readReference(t, c.name)
			model, src, tokens := tinyGPT(t)
			opts := peft.LoRAOptions{Rank: 4, Alpha: 8, Dropout: c.dropout}
			m, err := peft.NewLoRA(train.MethodEnv{Config: train.Config{Task: train.TaskLM, LoRA: opts.JSON()}, Model: model, ForwardGraph: src.ForwardGraph})
			if err != nil {
				t.Fatal(err)
			}
			lsrc, err := m.Source(src)
			if err != nil {
				t.Fatal(err)
			}
			params := lsrc.Params()
			if len(params) != len(ref.values) {
				t.Fatalf("%d adapter matrices, PyTorch has %d (targets %v)", len(params), len(ref.values), m.Targets())
			}
			for _, p := range params {
				v := ref.values[p.Name]
				if v == nil || !v.Shape().Equal(p.Tensor.Shape()) {
					t.Fatalf("%s %v: PyTorch has %v", p.Name, p.Tensor.Shape(), v)
				}
				copy(p.Tensor.Float32s(), v.Float32s())
			}
			tg, err := lsrc.TrainingGraph(train.BatchShape{B: tokens.Shape()[0], T: tokens.Shape()[1]})
			if err != nil {
				t.Fatal(err)
			}
			masks := map[string]*ir.Tensor{}
			for weight, keep := range ref.masks {
				scaled := ir.NewTensor(ir.Float32, keep.Shape())
				for i, k := range keep.Bools() {
					if k {
						scaled.Float32s()[i] = float32(1 / (1 - c.dropout))
					}
				}
				masks[peft.DropoutInput(weight, 0)] = scaled
			}
			out := runTrainingGraph(t, tg, lsrc, tokens, masks)
			loss := float64(out[ir.LossOutput].Float32s()[0])
			if d := math.Abs(loss - ref.loss); d > rtol*ref.loss {
				t.Errorf("loss %.7f, PyTorch %.7f", loss, ref.loss)
			}
			var worst errStats
			for _, p := range params {
				worst = worst.max(compare(t, p.Name, out[ir.GradPrefix+p.Name], ref.grads[p.Name]))
			}
			t.Logf("loss %.7f (PyTorch %.7f); %d gradients: %v", loss, ref.loss, len(params), worst)
		})
	}
}

// TestPromptGradientsMatchPyTorch: the training graph of prompt tuning on
// tiny_gpt — the soft prompt after the first token (n = 5) or before every
// token (n = 3), the loss on the real positions — gives PyTorch's loss and
// gradient of the prompt.
func TestPromptGradientsMatchPyTorch(t *testing.T) {
	for _, c := range []struct {
		name string
		opts peft.PromptOptions
	}{
		{"prompt_after_bos", peft.PromptOptions{Length: 5, At: peft.PromptAfterBOS, Init: peft.PromptInitVocab}},
		{"prompt_start", peft.PromptOptions{Length: 3, At: peft.PromptStart, Init: peft.PromptInitRandom}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := readReference(t, c.name)
			model, src, tokens := tinyGPT(t)
			m, err := peft.NewPrompt(train.MethodEnv{Config: train.Config{Task: train.TaskLM, Prompt: c.opts.JSON()}, Model: model, ForwardGraph: src.ForwardGraph})
			if err != nil {
				t.Fatal(err)
			}
			psrc, err := m.Source(src)
			if err != nil {
				t.Fatal(err)
			}
			params := psrc.Params()
			want := ref.values[peft.PromptParam]
			if len(params) != 1 || params[0].Name != peft.PromptParam || !params[0].Tensor.Shape().Equal(want.Shape()) {
				t.Fatalf("trainable %v, want %s %v", params, peft.PromptParam, want.Shape())
			}
			copy(params[0].Tensor.Float32s(), want.Float32s())
			tg, err := psrc.TrainingGraph(train.BatchShape{B: tokens.Shape()[0], T: tokens.Shape()[1]})
			if err != nil {
				t.Fatal(err)
			}
			out := runTrainingGraph(t, tg, psrc, tokens, nil)
			loss := float64(out[ir.LossOutput].Float32s()[0])
			if d := math.Abs(loss - ref.loss); d > rtol*ref.loss {
				t.Errorf("loss %.7f, PyTorch %.7f", loss, ref.loss)
			}
			e := compare(t, peft.PromptParam, out[ir.GradPrefix+peft.PromptParam], ref.grads[peft.PromptParam])
			t.Logf("loss %.7f (PyTorch %.7f); the prompt's gradient: %v", loss, ref.loss, e)
		})
	}
}
