package ir

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// Helpers for the tests of the operators imported as compositions: a small
// ONNX model around one node, its import, and the finite-difference check
// of every parameter's gradient through it.

// opModel assembles a small ONNX model. Float operands made with param
// are float64 initializers, so they import as parameters and gradients
// reach them.
type opModel struct {
	t       *testing.T
	dt      DType // of the float operands param makes (float64 when zero)
	rng     *rand.Rand
	opsets  []onnx.OpsetID
	inputs  []*onnx.ValueInfo
	inits   []*onnx.Tensor
	nodes   []*onnx.Node
	outputs []string
}

func newOpModel(t *testing.T, opset int64, seed uint64) *opModel {
	return &opModel{t: t, rng: rand.New(rand.NewPCG(seed, 7)), opsets: []onnx.OpsetID{{Version: opset}}}
}

// random is a float64 tensor with values uniform in [lo, hi).
func (m *opModel) random(shape Shape, lo, hi float64) *Tensor {
	x := NewTensor(Float64, shape)
	for i := range x.Float64s() {
		x.Float64s()[i] = lo + (hi-lo)*m.rng.Float64()
	}
	return x
}

// param adds a float initializer (float64 unless m.dt says otherwise)
// with random values and returns its name.
func (m *opModel) param(name string, shape Shape, lo, hi float64) string {
	x := m.random(shape, lo, hi)
	if m.dt != InvalidDType && m.dt != Float64 {
		x = Convert(x, m.dt)
	}
	m.inits = append(m.inits, initializer(m.t, name, x))
	return name
}

// init adds an initializer holding x.
func (m *opModel) init(name string, x *Tensor) string {
	m.inits = append(m.inits, initializer(m.t, name, x))
	return name
}

func (m *opModel) add(op string, in, out []string, attrs ...*onnx.Attribute) *onnx.Node {
	n := node(op, in, out, attrs...)
	m.nodes = append(m.nodes, n)
	return n
}

func (m *opModel) model() *onnx.Model {
	g := &onnx.Graph{Name: "op", Inputs: m.inputs, Initializers: m.inits, Nodes: m.nodes}
	for _, o := range m.outputs {
		g.Outputs = append(g.Outputs, &onnx.ValueInfo{Name: o})
	}
	return &onnx.Model{IRVersion: 10, OpsetImports: m.opsets, Graph: g}
}

// graph imports the model for its declared input shapes.
func (m *opModel) graph() (*Graph, error) {
	model, err := NewModel(m.model())
	if err != nil {
		return nil, err
	}
	return model.Specialize(Bindings{})
}

// checkGradFD differentiates L = Σ_k Σ W_k ⊙ y_k over g's float outputs
// y_k (W_k random) with respect to every parameter and compares each
// element with a central difference of L. Non-finite outputs (masked
// scores) are left out of L.
func checkGradFD(t *testing.T, g *Graph, tol float64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	res, err := Interpret(g, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := builderOn(g)
	var loss *Value
	for _, o := range g.Outputs {
		y := o.Value
		if y.DType != Float64 {
			continue
		}
		w := NewTensor(Float64, y.Shape)
		for i := range w.Float64s() {
			if v := res[o.Name].Float64s()[i]; !math.IsInf(v, 0) && !math.IsNaN(v) {
				w.Float64s()[i] = 0.5 + rng.Float64()
			}
		}
		term := b.Op1(&Binary{Fn: Mul}, b.Op1(&Where{}, b.Const(finite(res[o.Name])), y, b.Const(scalar64(0))), b.Const(w))
		if len(y.Shape) > 0 {
			axes := make([]int, len(y.Shape))
			for i := range axes {
				axes[i] = i
			}
			term = b.Op1(&Reduce{Fn: ReduceSum, Axes: axes}, term)
		}
		if loss == nil {
			loss = term
		} else {
			loss = b.Op1(&Binary{Fn: Add}, loss, term)
		}
	}
	b.Output("L", loss)
	lg, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	gg, err := Grad(lg, "L", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Interpret(gg, nil)
	if err != nil {
		t.Fatal(err)
	}
	eval := func() float64 {
		out, err := Interpret(lg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out["L"].Float64At(0)
	}
	const step = 1e-6
	for _, p := range lg.Params {
		grad := got[GradPrefix+p.Name]
		if grad == nil {
			t.Fatalf("no gradient for %s", p.Name)
		}
		xs := p.Tensor.Float64s()
		fd := make([]float64, len(xs))
		scale := 0.0
		for i := range xs {
			orig := xs[i]
			xs[i] = orig + step
			up := eval()
			xs[i] = orig - step
			down := eval()
			xs[i] = orig
			fd[i] = (up - down) / (2 * step)
			scale = math.Max(scale, math.Abs(fd[i]))
		}
		if scale == 0 {
			t.Errorf("d L/d %s is zero everywhere: the check tests nothing", p.Name)
		}
		for i := range xs {
			if a := grad.Float64At(i); math.Abs(a-fd[i]) > tol*(math.Abs(fd[i])+scale) || math.IsNaN(a) {
				t.Errorf("d L/d %s[%d]: autodiff %.10g, central difference %.10g", p.Name, i, a, fd[i])
				break
			}
		}
	}
}

// scalar64 is a float64 scalar.
func scalar64(v float64) *Tensor { return FromFloat64s(Shape{}, []float64{v}) }

// finite marks the finite elements of x.
func finite(x *Tensor) *Tensor {
	m := NewTensor(Bool, x.Shape())
	for i := range x.Len() {
		v := x.Float64At(i)
		m.Bools()[i] = !math.IsInf(v, 0) && !math.IsNaN(v)
	}
	return m
}

// importError is one malformed model and the words its import error must
// contain.
type importError struct {
	name  string
	build func(m *opModel)
	want  string
}

func checkImportErrors(t *testing.T, opset int64, cases []importError) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newOpModel(t, opset, 1)
			c.build(m)
			_, err := m.graph()
			if err == nil {
				t.Fatalf("imported; want an error with %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want one with %q", err, c.want)
			}
		})
	}
}

// at reads x (row-major, shape s) at index idx of the shape it broadcasts
// to (idx right-aligned with s; size-1 dimensions repeat).
func at(x *Tensor, idx ...int) float64 {
	s := x.Shape()
	off := 0
	for d := range s {
		i := idx[len(idx)-len(s)+d]
		if s[d] == 1 {
			i = 0
		}
		off = off*s[d] + i
	}
	return x.Float64At(off)
}
