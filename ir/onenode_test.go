package ir

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// Helpers for tests of one ONNX node: build the one-node model, import and
// interpret it, and compare it with onnxruntime.

// nodeInput is one input of the node under test: a graph input fed at run
// time, or (static) a Constant node, as the operands that decide shapes
// must be. A nil tensor is an omitted optional input.
type nodeInput struct {
	t      *Tensor
	static bool
	param  bool
}

func feed(t *Tensor) nodeInput  { return nodeInput{t: t} }
func fixed(t *Tensor) nodeInput { return nodeInput{t: t, static: true} }

// weight is an input held by an initializer: a parameter when it is a
// float tensor.
func weight(t *Tensor) nodeInput { return nodeInput{t: t, param: true} }

var omitted = nodeInput{}

// oneNodeModel is a model of one node of op with the given inputs (named
// in0, in1, ...) and outputs y0, y1, ...; it returns the run-time inputs.
func oneNodeModel(t *testing.T, opset int64, op string, attrs []*onnx.Attribute, ins []nodeInput, outs int) (*onnx.Model, map[string]*Tensor) {
	t.Helper()
	var gin []*onnx.ValueInfo
	var inits []*onnx.Tensor
	var nodes []*onnx.Node
	names := make([]string, len(ins))
	feeds := map[string]*Tensor{}
	for i, in := range ins {
		if in.t == nil {
			continue
		}
		names[i] = fmt.Sprintf("in%d", i)
		if in.static {
			nodes = append(nodes, constNode(t, names[i], in.t))
			continue
		}
		if in.param {
			inits = append(inits, initializer(t, names[i], in.t))
			continue
		}
		dims := make([]any, len(in.t.Shape()))
		for d, s := range in.t.Shape() {
			dims[d] = s
		}
		gin = append(gin, valueInfo(names[i], in.t.DType().ONNX(), dims...))
		feeds[names[i]] = in.t
	}
	var outNames []string
	for i := range outs {
		outNames = append(outNames, fmt.Sprintf("y%d", i))
	}
	nodes = append(nodes, node(op, names, outNames, attrs...))
	return buildModel(opset, gin, inits, nodes, outNames...), feeds
}

// interpretModel imports m and runs it with the reference interpreter.
func interpretModel(m *onnx.Model, feeds map[string]*Tensor) (map[string]*Tensor, *Graph, error) {
	model, err := NewModel(m)
	if err != nil {
		return nil, nil, err
	}
	g, err := model.Specialize(Bindings{})
	if err != nil {
		return nil, nil, err
	}
	res, err := Interpret(g, feeds)
	return res, g, err
}

// ortOutputs runs m in onnxruntime.
func ortOutputs(t *testing.T, m *onnx.Model, feeds map[string]*Tensor) map[string]*Tensor {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := onnx.WriteFile(path, m, onnx.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	in := map[string]*onnx.Tensor{}
	for name, x := range feeds {
		ot, err := TensorToONNX(name, x)
		if err != nil {
			t.Fatal(err)
		}
		in[name] = ot
	}
	res, err := ort.Run(path, in)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*Tensor{}
	for name, ot := range res {
		x, err := TensorFromONNX(ot)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = x
	}
	return out
}

// checkAgainstORT runs the one-node model in dstune's interpreter and in
// onnxruntime and compares every output.
func checkAgainstORT(t *testing.T, m *onnx.Model, feeds map[string]*Tensor, rtol, atol float64) {
	t.Helper()
	got, _, err := interpretModel(m, feeds)
	if err != nil {
		t.Fatal(err)
	}
	want := ortOutputs(t, m, feeds)
	for _, o := range m.Graph.Outputs {
		if d := Compare(got[o.Name], want[o.Name], rtol, atol); !d.OK() {
			t.Errorf("output %s: %v (first off at %d: got %v, want %v)", o.Name, d, d.FirstOff,
				elementAt(got[o.Name], d.FirstOff), elementAt(want[o.Name], d.FirstOff))
		}
	}
}

func elementAt(x *Tensor, i int) any {
	if x == nil || i < 0 || i >= x.Len() {
		return nil
	}
	return x.Float64At(i)
}

// wantImportError imports m and checks that it fails with a message
// containing each of the fragments (and, when target is set, wrapping it).
func wantImportError(t *testing.T, m *onnx.Model, target error, fragments ...string) {
	t.Helper()
	model, err := NewModel(m)
	if err == nil {
		_, err = model.Specialize(Bindings{})
	}
	if err == nil {
		t.Fatalf("import succeeded, want an error containing %q", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not contain %q", err, f)
		}
	}
	if target != nil && !errors.Is(err, target) {
		t.Errorf("error %q does not wrap %v", err, target)
	}
}

func randTensor(rng *rand.Rand, dt DType, shape Shape, lo, hi float64) *Tensor {
	x := NewTensor(Float64, shape)
	for i := range x.Float64s() {
		x.Float64s()[i] = lo + (hi-lo)*rng.Float64()
	}
	return Convert(x, dt)
}

func stringAttr(name, v string) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrString, S: []byte(v)}
}

func floatAttr(name string, v float32) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrFloat, F: v}
}

func stringsAttr(name string, v ...string) *onnx.Attribute {
	a := &onnx.Attribute{Name: name, Type: onnx.AttrStrings}
	for _, s := range v {
		a.Strings = append(a.Strings, []byte(s))
	}
	return a
}

// checkImportedGrad differentiates L = Σ_k Σ W_k ⊙ y_k (W_k random
// constants, y_k the float outputs of m) with respect to every parameter
// of m after import, and compares with central differences of L computed
// by the interpreter. The parameters should be float64.
func checkImportedGrad(t *testing.T, m *onnx.Model, feeds map[string]*Tensor, tol float64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := model.Specialize(Bindings{})
	if err != nil {
		t.Fatal(err)
	}
	// The loss, appended to the imported graph.
	b := builderOn(fwd)
	var loss *Value
	for _, o := range fwd.Outputs {
		y := o.Value
		if !y.DType.IsFloat() {
			continue
		}
		w := randTensor(rng, y.DType, y.Shape, 0.5, 1.5)
		term := b.Op1(&Binary{Fn: Mul}, y, b.Const(w))
		if len(y.Shape) > 0 {
			axes := make([]int, len(y.Shape))
			for i := range axes {
				axes[i] = i
			}
			term = b.Op1(&Reduce{Fn: ReduceSum, Axes: axes}, term)
		}
		if term.DType != Float64 {
			term = b.Op1(&Cast{To: Float64}, term)
		}
		if loss == nil {
			loss = term
		} else {
			loss = b.Op1(&Binary{Fn: Add}, loss, term)
		}
	}
	fwd.Outputs = nil
	b.Output("L", loss)
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	gg, err := Grad(g, "L", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Interpret(gg, feeds)
	if err != nil {
		t.Fatal(err)
	}
	eval := func() float64 {
		out, err := Interpret(g, feeds)
		if err != nil {
			t.Fatal(err)
		}
		return out["L"].Float64At(0)
	}
	const step = 1e-6
	if len(g.Params) == 0 {
		t.Fatal("the model has no parameters to differentiate")
	}
	for _, p := range g.Params {
		got := res[GradPrefix+p.Name]
		if got == nil {
			t.Fatalf("no gradient for %s", p.Name)
		}
		xs := p.Tensor
		fd := make([]float64, xs.Len())
		scale := 0.0
		for i := range xs.Len() {
			orig := xs.Float64At(i)
			storeFloat(xs, i, orig+step, true, RoundUp)
			up := eval()
			storeFloat(xs, i, orig-step, true, RoundUp)
			down := eval()
			storeFloat(xs, i, orig, true, RoundUp)
			fd[i] = (up - down) / (2 * step)
			scale = max(scale, math.Abs(fd[i]))
		}
		for i, f := range fd {
			if a := got.Float64At(i); math.Abs(a-f) > tol*(math.Abs(f)+scale) || math.IsNaN(a) {
				t.Errorf("d L/d %s[%d]: autodiff %.10g, central difference %.10g", p.Name, i, a, f)
				break
			}
		}
	}
}
