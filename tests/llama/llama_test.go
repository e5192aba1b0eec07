package llama

import (
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
)

// variants are make_llama.py's models.
var variants = []string{"swiglu_causal", "geglu_sliding"}

// reference is one variant's PyTorch run: the input tokens, logits, the
// next-token loss and the gradient of every parameter.
type reference struct {
	tokens, logits *ir.Tensor
	loss           float64
	grads          map[string]*ir.Tensor // by parameter name
}

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

func readReference(t *testing.T, variant string) reference {
	t.Helper()
	dir := filepath.Join("testdata", variant)
	ref := reference{
		tokens: readTensor(t, filepath.Join(dir, "input_0.pb")),
		logits: readTensor(t, filepath.Join(dir, "output_0.pb")),
		grads:  map[string]*ir.Tensor{},
	}
	text, err := os.ReadFile(filepath.Join(dir, "loss.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if ref.loss, err = strconv.ParseFloat(strings.TrimSpace(string(text)), 64); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "grad_*.pb"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no gradients in %s (%v)", dir, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "grad_"), ".pb")
		ref.grads[name] = readTensor(t, f)
	}
	return ref
}

// importFor imports the model at path specialized to the tokens' shape.
func importFor(t *testing.T, path string, tokens *ir.Tensor) *ir.Graph {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return importModel(t, m, tokens)
}

func importModel(t *testing.T, m *onnx.Model, tokens *ir.Tensor) *ir.Graph {
	t.Helper()
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.Specialize(ir.Bindings{Shapes: map[string]ir.Shape{"tokens": tokens.Shape()}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// runCPU compiles g for the CPU backend and runs it once.
func runCPU(t *testing.T, g *ir.Graph, inputs map[string]*ir.Tensor) map[string]*ir.Tensor {
	t.Helper()
	exe, err := cpu.Compile(g, accel.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exe.Close() })
	out, err := accel.RunNamed(exe, inputs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nextTokenTargets are the targets of the next-token loss: token i+1 at
// position i, the last position ignored (-100).
func nextTokenTargets(tokens *ir.Tensor) *ir.Tensor {
	b, s := tokens.Shape()[0], tokens.Shape()[1]
	out := ir.NewTensor(ir.Int64, ir.Shape{b, s})
	for i := range b {
		for j := range s {
			v := int64(-100)
			if j < s-1 {
				v = tokens.Int64At(i*s + j + 1)
			}
			out.Int64s()[i*s+j] = v
		}
	}
	return out
}

// checkLogits compares logits with PyTorch's: rtol 1e-4, atol 1e-5.
func checkLogits(t *testing.T, got, want *ir.Tensor) {
	t.Helper()
	d := ir.Compare(got, want, 1e-4, 1e-5)
	if !d.OK() {
		t.Errorf("logits: %v", d)
	}
	t.Logf("logits: max abs error %.2e, max rel %.2e", d.MaxAbs, d.MaxRel)
}

// checkTraining runs the training graph of the next-token loss of g on
// the CPU backend and compares the loss (relative 1e-5) and every
// parameter's gradient with PyTorch's: each element within 1e-4 of the
// tensor's largest reference magnitude.
func checkTraining(t *testing.T, g *ir.Graph, ref reference) {
	t.Helper()
	tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := runCPU(t, tg, map[string]*ir.Tensor{"tokens": ref.tokens, ir.TargetsInput: nextTokenTargets(ref.tokens)})
	loss := got[ir.LossOutput].Float64At(0)
	if math.Abs(loss-ref.loss) > 1e-5*ref.loss {
		t.Errorf("loss %.9g, PyTorch %.9g", loss, ref.loss)
	}
	if len(g.Params) != len(ref.grads) {
		t.Errorf("%d parameters, PyTorch has %d", len(g.Params), len(ref.grads))
	}
	worst, worstName := 0.0, ""
	for _, p := range g.Params {
		want := ref.grads[p.Name]
		if want == nil {
			t.Errorf("parameter %s has no PyTorch gradient", p.Name)
			continue
		}
		grad := got[ir.GradPrefix+p.Name]
		scale := 0.0
		for i := range want.Len() {
			scale = math.Max(scale, math.Abs(want.Float64At(i)))
		}
		d := ir.Compare(grad, want, 0, 1e-4*scale)
		if !d.OK() {
			t.Errorf("grad %s: %v (largest reference magnitude %.3g)", p.Name, d, scale)
		}
		if rel := d.MaxAbs / scale; rel > worst {
			worst, worstName = rel, p.Name
		}
	}
	t.Logf("loss %.9g (PyTorch %.9g); %d gradients, worst max|Δ|/max|ref| %.2e (%s)", loss, ref.loss, len(g.Params), worst, worstName)
}

// TestExportsMatchPyTorch imports the torch.onnx exports of both variants
// at opsets 14 and 17, and at 17 with every module a model-local function,
// and checks the CPU backend's logits, loss and gradients against
// PyTorch's.
func TestExportsMatchPyTorch(t *testing.T) {
	for _, variant := range variants {
		ref := readReference(t, variant)
		for _, c := range []struct {
			file  string
			opset int
		}{{"opset14", 14}, {"opset17", 17}, {"functions", 17}} {
			t.Run(variant+"/"+c.file, func(t *testing.T) {
				path := filepath.Join("testdata", variant, c.file+".onnx")
				g := importFor(t, path, ref.tokens)
				if g.Opset != c.opset {
					t.Fatalf("the export imports opset %d", g.Opset)
				}
				if c.file == "functions" {
					checkCallsFunctions(t, path)
				}
				out := runCPU(t, g, map[string]*ir.Tensor{"tokens": ref.tokens})
				checkLogits(t, out["logits"], ref.logits)
				checkTraining(t, g, ref)
			})
		}
	}
}

// TestStories260K: llama2.c's pretrained stories260K (opset 14, tied
// classifier, 8 query heads over 4 key/value heads) reproduces both of
// its test data sets within its README's tolerance (rtol 1e-3, atol 1e-4)
// on the CPU backend, and the greedy continuation it was recorded from.
func TestStories260K(t *testing.T) {
	dir := sharedtest.Path(t, "models", "stories260K")
	for _, set := range []string{"test_data_set_0", "test_data_set_1"} {
		t.Run(set, func(t *testing.T) {
			tokens := readTensor(t, filepath.Join(dir, set, "input_0.pb"))
			want := readTensor(t, filepath.Join(dir, set, "output_0.pb"))
			g := importFor(t, filepath.Join(dir, "stories260K.onnx"), tokens)
			got := runCPU(t, g, map[string]*ir.Tensor{"tokens": tokens})["logits"]
			d := ir.Compare(got, want, 1e-3, 1e-4)
			if !d.OK() {
				t.Errorf("logits: %v", d)
			}
			t.Logf("logits %v: max abs error %.2e", got.Shape(), d.MaxAbs)
			if set != "test_data_set_1" {
				return
			}
			// The tokens are BOS and the greedy continuation: the argmax at
			// position i is token i+1.
			s, v := tokens.Shape()[1], got.Shape()[2]
			for i := range s - 1 {
				best := 0
				for j := range v {
					if got.Float64At(i*v+j) > got.Float64At(i*v+best) {
						best = j
					}
				}
				if int64(best) != tokens.Int64At(i+1) {
					t.Errorf("position %d: argmax %d, the greedy text has %d", i, best, tokens.Int64At(i+1))
				}
			}
		})
	}
}

// checkCallsFunctions checks that the export at path does call model-local
// functions (nested ones among them), so that the test shows their
// inlining.
func checkCallsFunctions(t *testing.T, path string) {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	nested := false
	for _, f := range m.Functions {
		for _, n := range f.Nodes {
			nested = nested || m.Function(n.Domain, n.OpType, "") != nil
		}
	}
	calls := 0
	for _, n := range m.Graph.Nodes {
		if m.Function(n.Domain, n.OpType, "") != nil {
			calls++
		}
	}
	if calls == 0 || !nested {
		t.Fatalf("%s: %d calls of its %d functions from the graph, nested calls %v: the test shows nothing", path, calls, len(m.Functions), nested)
	}
}
