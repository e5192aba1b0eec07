package ir

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

func readTestTensor(t testing.TB, path string) *Tensor {
	t.Helper()
	ot, err := onnx.ReadTensorFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x, err := TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// ReferenceTraining is one tiny model's PyTorch reference: its training
// graph, inputs and the expected loss and gradients.
type referenceTraining struct {
	graph  *Graph
	inputs map[string]*Tensor
	loss   float64
	grads  map[string]*Tensor // by parameter name
}

// loadReferenceTraining specializes a tiny model for its first data set,
// builds the training graph of the README's loss (next-byte cross-entropy
// for tiny_gpt, with the last position ignored; class cross-entropy for
// tiny_bert) and reads PyTorch's loss and gradients.
func loadReferenceTraining(t *testing.T, name string) referenceTraining {
	dir := sharedtest.Path(t, "models", name)
	m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	tokens := readTestTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	g, err := model.Specialize(Bindings{Shapes: map[string]Shape{"tokens": tokens.Shape()}})
	if err != nil {
		t.Fatal(err)
	}
	labels := readTestTensor(t, filepath.Join(dir, "grads", "labels.pb"))
	var targets *Tensor
	if name == "tiny_gpt" {
		// labels = tokens[:, 1:]: the target at position i is the next
		// token; the last position has none.
		b, s := tokens.Shape()[0], tokens.Shape()[1]
		targets = NewTensor(Int64, Shape{b, s})
		for i := range b {
			for j := range s {
				v := int64(-100)
				if j < s-1 {
					v = labels.Int64At(i*(s-1) + j)
				}
				targets.Int64s()[i*s+j] = v
			}
		}
	} else {
		targets = labels
	}
	tg, err := TrainingGraph(g, LossSpec{Kind: SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(dir, "grads", "loss.txt"))
	if err != nil {
		t.Fatal(err)
	}
	loss, err := strconv.ParseFloat(strings.TrimSpace(strings.SplitN(string(text), "\n", 2)[0]), 64)
	if err != nil {
		t.Fatal(err)
	}
	ref := referenceTraining{graph: tg, loss: loss, grads: map[string]*Tensor{},
		inputs: map[string]*Tensor{"tokens": tokens, TargetsInput: targets}}
	for _, p := range g.Params {
		ref.grads[p.Name] = readTestTensor(t, filepath.Join(dir, "grads", "grad_"+p.Name+".pb"))
	}
	return ref
}

// compareToReference checks the loss within 1e-5 and every gradient
// element within 1e-4 relative, with an absolute floor of 1e-6 times the
// tensor's largest reference magnitude for elements near zero (PyTorch
// accumulates in float32 in another order).
func compareToReference(t *testing.T, ref referenceTraining, got map[string]*Tensor) {
	t.Helper()
	loss := got[LossOutput].Float64At(0)
	if math.Abs(loss-ref.loss) > 1e-5 {
		t.Errorf("loss %.9g, PyTorch %.9g", loss, ref.loss)
	}
	worst, worstName := 0.0, ""
	for name, want := range ref.grads {
		g := got[GradPrefix+name]
		if g == nil {
			t.Errorf("no gradient for %s", name)
			continue
		}
		scale := 0.0
		for i := range want.Len() {
			scale = math.Max(scale, math.Abs(want.Float64At(i)))
		}
		d := Compare(g, want, 1e-4, 1e-6*scale)
		if !d.OK() {
			t.Errorf("grad %s: %v (largest reference magnitude %.3g)", name, d, scale)
		}
		if rel := d.MaxAbs / scale; rel > worst {
			worst, worstName = rel, name
		}
	}
	t.Logf("loss %.9g (PyTorch %.9g); %d gradients, worst max|Δ|/max|ref| %.2e (%s)", loss, ref.loss, len(ref.grads), worst, worstName)
}

// TestTrainingGraphMatchesPyTorch interprets the training graphs of
// tiny_gpt (tied embedding and LM head) and tiny_bert and compares the
// loss and the gradient of every initializer with PyTorch's.
func TestTrainingGraphMatchesPyTorch(t *testing.T) {
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		t.Run(name, func(t *testing.T) {
			ref := loadReferenceTraining(t, name)
			got, err := Interpret(ref.graph, ref.inputs)
			if err != nil {
				t.Fatal(err)
			}
			compareToReference(t, ref, got)
		})
	}
}
