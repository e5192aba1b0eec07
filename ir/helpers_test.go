package ir

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// Helpers the package's tests share: small ONNX models built in Go (one
// node, or a few around the operator under test), attribute constructors,
// import and interpretation, the comparison with onnxruntime, and the
// finite-difference checks of gradients.

// ---------------------------------------------------------------- models

func valueInfo(name string, dt onnx.DataType, dims ...any) *onnx.ValueInfo {
	ty := &onnx.Type{Kind: onnx.TypeTensor, ElemType: dt, HasShape: true}
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			ty.Shape = append(ty.Shape, onnx.Dim{Value: int64(d), HasValue: true})
		case string:
			ty.Shape = append(ty.Shape, onnx.Dim{Param: d})
		}
	}
	return &onnx.ValueInfo{Name: name, Type: ty}
}

// declareInput declares a graph input of x's type and shape.
func declareInput(name string, x *Tensor) *onnx.ValueInfo {
	return valueInfo(name, x.dtype.ONNX(), anyDims(x.shape)...)
}

// anyDims is s as valueInfo's dims.
func anyDims(s Shape) []any {
	out := make([]any, len(s))
	for i, d := range s {
		out[i] = d
	}
	return out
}

func node(op string, in, out []string, attrs ...*onnx.Attribute) *onnx.Node {
	return &onnx.Node{Name: op + "_" + strings.Join(out, "_"), OpType: op, Inputs: in, Outputs: out, Attributes: attrs}
}

func initializer(t testing.TB, name string, x *Tensor) *onnx.Tensor {
	ot, err := TensorToONNX(name, x)
	if err != nil {
		t.Fatal(err)
	}
	return ot
}

func constNode(t *testing.T, out string, x *Tensor) *onnx.Node {
	return node("Constant", nil, []string{out}, tensorAttr(t, "value", x))
}

// buildModel is a model of one opset of the default domain, with the IR
// version onnxruntime wants for that opset.
func buildModel(opset int64, inputs []*onnx.ValueInfo, inits []*onnx.Tensor, nodes []*onnx.Node, outputs ...string) *onnx.Model {
	g := &onnx.Graph{Name: "test", Inputs: inputs, Initializers: inits, Nodes: nodes}
	for _, o := range outputs {
		g.Outputs = append(g.Outputs, &onnx.ValueInfo{Name: o})
	}
	ir := int64(8)
	switch {
	case opset >= 23:
		ir = 11
	case opset >= 21:
		ir = 10
	case opset >= 19:
		ir = 9
	}
	return &onnx.Model{IRVersion: ir, OpsetImports: []onnx.OpsetID{{Version: opset}}, Graph: g}
}

// ---------------------------------------------------------------- attributes

func intAttr(name string, v int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInt, I: v}
}

func intsAttr(name string, v ...int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInts, Ints: v}
}

func floatAttr(name string, v float32) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrFloat, F: v}
}

func floatsAttr(name string, v ...float32) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrFloats, Floats: v}
}

func stringAttr(name, v string) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrString, S: []byte(v)}
}

func stringsAttr(name string, v ...string) *onnx.Attribute {
	a := &onnx.Attribute{Name: name, Type: onnx.AttrStrings}
	for _, s := range v {
		a.Strings = append(a.Strings, []byte(s))
	}
	return a
}

func tensorAttr(t *testing.T, name string, x *Tensor) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrTensor, T: initializer(t, name, x)}
}

func graphAttr(name string, g *onnx.Graph) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrGraph, G: g}
}

// attrsString spells attributes for a subtest's name: ",name=value" each.
func attrsString(attrs []*onnx.Attribute) string {
	s := ""
	for _, a := range attrs {
		switch a.Type {
		case onnx.AttrString:
			s += fmt.Sprintf(",%s=%s", a.Name, a.S)
		case onnx.AttrInt:
			s += fmt.Sprintf(",%s=%d", a.Name, a.I)
		case onnx.AttrInts:
			s += fmt.Sprintf(",%s=%v", a.Name, a.Ints)
		case onnx.AttrFloat:
			s += fmt.Sprintf(",%s=%g", a.Name, a.F)
		case onnx.AttrFloats:
			s += fmt.Sprintf(",%s=%v", a.Name, a.Floats)
		case onnx.AttrStrings:
			s += fmt.Sprintf(",%s=%q", a.Name, a.Strings)
		}
	}
	return s
}

// ---------------------------------------------------------------- one-node models

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
		switch {
		case in.static:
			nodes = append(nodes, constNode(t, names[i], in.t))
		case in.param:
			inits = append(inits, initializer(t, names[i], in.t))
		default:
			gin = append(gin, declareInput(names[i], in.t))
			feeds[names[i]] = in.t
		}
	}
	var outNames []string
	for i := range outs {
		outNames = append(outNames, fmt.Sprintf("y%d", i))
	}
	nodes = append(nodes, node(op, names, outNames, attrs...))
	return buildModel(opset, gin, inits, nodes, outNames...), feeds
}

// runNode imports and interprets a model of one node whose inputs are
// all fed (nil: an omitted optional input) and returns its nOut outputs.
func runNode(t *testing.T, opset int64, op string, nOut int, attrs []*onnx.Attribute, inputs ...*Tensor) ([]*Tensor, error) {
	t.Helper()
	ins := make([]nodeInput, len(inputs))
	for i, x := range inputs {
		ins[i] = feed(x)
	}
	m, feeds := oneNodeModel(t, opset, op, attrs, ins, nOut)
	res, _, err := interpretModel(m, feeds)
	if err != nil {
		return nil, err
	}
	out := make([]*Tensor, nOut)
	for i := range out {
		out[i] = res[fmt.Sprintf("y%d", i)]
	}
	return out, nil
}

// namedTensor is a graph input (or initializer) and its value.
type namedTensor struct {
	name string
	t    *Tensor
}

// declareInputs declares the graph inputs ins and returns them with their
// values by name.
func declareInputs(ins []namedTensor) ([]*onnx.ValueInfo, map[string]*Tensor) {
	var infos []*onnx.ValueInfo
	values := map[string]*Tensor{}
	for _, in := range ins {
		infos = append(infos, declareInput(in.name, in.t))
		values[in.name] = in.t
	}
	return infos, values
}

// runNodeModel imports and interprets a model of the given nodes over the
// inputs and returns the named outputs.
func runNodeModel(t *testing.T, opset int64, nodes []*onnx.Node, outputs []string, inputs ...namedTensor) ([]*Tensor, error) {
	t.Helper()
	infos, feeds := declareInputs(inputs)
	res, _, err := interpretModel(buildModel(opset, infos, nil, nodes, outputs...), feeds)
	if err != nil {
		return nil, err
	}
	out := make([]*Tensor, len(outputs))
	for i, name := range outputs {
		out[i] = res[name]
	}
	return out, nil
}

// ---------------------------------------------------------------- models around an operator

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
	return randTensor(m.rng, Float64, shape, lo, hi)
}

// param adds a float initializer (float64 unless m.dt says otherwise)
// with random values and returns its name.
func (m *opModel) param(name string, shape Shape, lo, hi float64) string {
	x := m.random(shape, lo, hi)
	if m.dt != InvalidDType && m.dt != Float64 {
		x = Convert(x, m.dt)
	}
	return m.init(name, x)
}

// init adds an initializer holding x.
func (m *opModel) init(name string, x *Tensor) string {
	m.inits = append(m.inits, initializer(m.t, name, x))
	return name
}

// tensor is the value of initializer name (nil when there is none).
func (m *opModel) tensor(name string) *Tensor {
	for _, it := range m.inits {
		if it.Name == name {
			x, err := TensorFromONNX(it)
			if err != nil {
				m.t.Fatal(err)
			}
			return x
		}
	}
	return nil
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

// run imports and interprets the model, failing the test on an error.
func (m *opModel) run() (*Graph, map[string]*Tensor) {
	m.t.Helper()
	g, err := m.graph()
	if err != nil {
		m.t.Fatal(err)
	}
	res, err := Interpret(g, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	return g, res
}

// checkAgainstORT runs the model, its float initializers turned into
// graph inputs fed at run time, in dstune and in onnxruntime and compares
// every output.
func (m *opModel) checkAgainstORT(rtol, atol float64) {
	m.t.Helper()
	model := m.model()
	g := *model.Graph
	g.Initializers = nil
	feeds := map[string]*Tensor{}
	for _, it := range m.inits {
		x, err := TensorFromONNX(it)
		if err != nil {
			m.t.Fatal(err)
		}
		if !x.DType().IsFloat() {
			g.Initializers = append(g.Initializers, it)
			continue
		}
		g.Inputs = append(g.Inputs, declareInput(it.Name, x))
		feeds[it.Name] = x
	}
	model.Graph = &g
	checkAgainstORT(m.t, model, feeds, rtol, atol)
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

// nodeImportError is a model of one node that must not import, and the
// words its import error must contain.
type nodeImportError struct {
	name  string
	opset int64
	in    []*onnx.ValueInfo
	inits []*onnx.Tensor
	node  *onnx.Node
	want  string
}

func checkNodeImportErrors(t *testing.T, cases []nodeImportError) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantImportError(t, buildModel(c.opset, c.in, c.inits, []*onnx.Node{c.node}, c.node.Outputs...), nil, c.want)
		})
	}
}

// ---------------------------------------------------------------- import and run

// importModel imports m for the inputs feeds: those the import needs as
// values (Model.ValueInputs) are bound as values, as the conformance
// runner does; it returns the graph and the others, to feed at run time.
func importModel(m *onnx.Model, feeds map[string]*Tensor) (*Graph, map[string]*Tensor, error) {
	model, err := NewModel(m)
	if err != nil {
		return nil, nil, err
	}
	static := model.ValueInputs()
	b := Bindings{Shapes: map[string]Shape{}, Values: map[string]*Tensor{}}
	fed := map[string]*Tensor{}
	for name, x := range feeds {
		if slices.Contains(static, name) {
			b.Values[name] = x
		} else {
			b.Shapes[name] = x.shape
			fed[name] = x
		}
	}
	g, err := model.Specialize(b)
	return g, fed, err
}

// interpretModel imports m (importModel) and runs it with the reference
// interpreter.
func interpretModel(m *onnx.Model, feeds map[string]*Tensor) (map[string]*Tensor, *Graph, error) {
	g, fed, err := importModel(m, feeds)
	if err != nil {
		return nil, nil, err
	}
	res, err := Interpret(g, fed)
	return res, g, err
}

// runModel is interpretModel failing the test on an error.
func runModel(t *testing.T, m *onnx.Model, feeds map[string]*Tensor) (map[string]*Tensor, *Graph) {
	t.Helper()
	res, g, err := interpretModel(m, feeds)
	if err != nil {
		t.Fatal(err)
	}
	return res, g
}

// wantImportError imports m and checks that it fails with a message
// containing each of the fragments (and, when target is set, wrapping it).
func wantImportError(t *testing.T, m *onnx.Model, target error, fragments ...string) {
	t.Helper()
	_, err := FromONNX(m, nil)
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

// randTensor is a tensor of dt with values uniform in [lo, hi) (drawn in
// float64 and rounded to dt).
func randTensor(rng *rand.Rand, dt DType, shape Shape, lo, hi float64) *Tensor {
	x := NewTensor(Float64, shape)
	for i := range x.Float64s() {
		x.Float64s()[i] = lo + (hi-lo)*rng.Float64()
	}
	return Convert(x, dt)
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

// values lists x's elements as float64.
func values(x *Tensor) []float64 {
	out := make([]float64, x.Len())
	for i := range out {
		out[i] = x.Float64At(i)
	}
	return out
}

// scalar64 is a float64 scalar.
func scalar64(v float64) *Tensor { return FromFloat64s(Shape{}, []float64{v}) }

// ---------------------------------------------------------------- onnxruntime

// ortOutputs runs m in onnxruntime (skipping the test when onnxruntime is
// not available).
func ortOutputs(t *testing.T, m *onnx.Model, feeds map[string]*Tensor) map[string]*Tensor {
	t.Helper()
	ort.Need(t)
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
		t.Fatalf("onnxruntime %s: %v", ort.Version(), err)
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

// checkAgainstORT runs m in dstune's interpreter (interpretModel) and in
// onnxruntime and compares every output: integers and bools exactly,
// floats to atol + rtol·|want|.
func checkAgainstORT(t *testing.T, m *onnx.Model, feeds map[string]*Tensor, rtol, atol float64) {
	t.Helper()
	want := ortOutputs(t, m, feeds)
	got, _, err := interpretModel(m, feeds)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range m.Graph.Outputs {
		if want[o.Name] == nil {
			t.Fatalf("onnxruntime gave no %q", o.Name)
		}
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

// ---------------------------------------------------------------- gradients

// weightedSum appends to b the scalar L = Σ_k Σ W_k ⊙ y_k over the float
// values ys, in float64, with random weights W_k in [0.5, 1.5) so that
// every element's gradient differs. With vals (the values of ys), the
// elements that are not finite there (masked scores) are left out.
func weightedSum(b *Builder, rng *rand.Rand, ys []*Value, vals []*Tensor) *Value {
	var loss *Value
	for k, y := range ys {
		if !y.DType.IsFloat() {
			continue
		}
		if y.DType != Float64 {
			y = b.Op1(&Cast{To: Float64}, y)
		}
		if vals != nil {
			keep := NewTensor(Bool, y.Shape)
			for i := range vals[k].Len() {
				v := vals[k].Float64At(i)
				keep.Bools()[i] = !math.IsInf(v, 0) && !math.IsNaN(v)
			}
			y = b.Op1(&Where{}, b.Const(keep), y, b.Const(scalar64(0)))
		}
		term := b.Op1(&Binary{Fn: Mul}, y, b.Const(randTensor(rng, Float64, y.Shape, 0.5, 1.5)))
		if len(y.Shape) > 0 {
			term = b.Op1(&Reduce{Fn: ReduceSum, Axes: iotaInts(len(y.Shape))}, term)
		}
		if loss == nil {
			loss = term
		} else {
			loss = b.Op1(&Binary{Fn: Add}, loss, term)
		}
	}
	return loss
}

// gradientsOf differentiates b's scalar output out with respect to every
// parameter and returns what the gradient graph computes.
func gradientsOf(t *testing.T, b *Builder, out string) map[string]*Tensor {
	t.Helper()
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	gg, err := Grad(g, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Interpret(gg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// checkTrainingGrad checks the gradients the training graph of g for a
// mean squared error computes (on inputs in, targets included) against
// central differences of the loss graph's loss. It returns the training
// graph's outputs.
func checkTrainingGrad(t *testing.T, g *Graph, in map[string]*Tensor) map[string]*Tensor {
	t.Helper()
	spec := LossSpec{Kind: MeanSquaredError}
	tg, err := TrainingGraph(g, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := LossGraph(g, spec)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Interpret(tg, in)
	if err != nil {
		t.Fatal(err)
	}
	loss := func() float64 {
		r, err := Interpret(lg, in)
		if err != nil {
			t.Fatal(err)
		}
		return r[LossOutput].Float64At(0)
	}
	checkAgainstDifferences(t, g.Params, res, loss, 1e-6, 1e-6)
	return res
}

// checkGradOfLoss differentiates g's scalar output "L" with respect to
// every parameter and compares the gradients with central differences of
// L (checkAgainstDifferences, whose largest differences it returns).
func checkGradOfLoss(t *testing.T, g *Graph, feeds map[string]*Tensor, step, tol float64) (scales map[string]float64) {
	t.Helper()
	gg, err := Grad(g, "L", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Interpret(gg, feeds)
	if err != nil {
		t.Fatalf("%v\n%v", err, gg)
	}
	loss := func() float64 {
		out, err := Interpret(g, feeds)
		if err != nil {
			t.Fatal(err)
		}
		return out["L"].Float64At(0)
	}
	if got, want := res["L"].Float64At(0), loss(); got != want {
		t.Errorf("loss %v, the forward graph gives %v", got, want)
	}
	scales = checkAgainstDifferences(t, g.Params, res, loss, step, tol)
	if t.Failed() {
		t.Logf("gradient graph:\n%v", gg)
	}
	return scales
}

// checkAgainstDifferences compares the gradient grads[GradPrefix+p.Name]
// of each parameter p with central differences of loss, evaluated at the
// parameters' current values step apart: an element whose autodiff value
// is off by more than tol·(|fd| + the largest |fd| of p) fails. It
// returns the largest |fd| of each parameter.
func checkAgainstDifferences(t *testing.T, params []*Param, grads map[string]*Tensor, loss func() float64, step, tol float64) (scales map[string]float64) {
	t.Helper()
	if len(params) == 0 {
		t.Fatal("the model has no parameters to differentiate")
	}
	scales = map[string]float64{}
	for _, p := range params {
		got := grads[GradPrefix+p.Name]
		if got == nil {
			t.Fatalf("no gradient for %s", p.Name)
		}
		xs := p.Tensor
		if got.DType() != xs.DType() || !got.Shape().Equal(xs.Shape()) {
			t.Fatalf("gradient of %s is %v, want %v", p.Name, got, xs)
		}
		fd := make([]float64, xs.Len())
		scale := 0.0
		for i := range xs.Len() {
			orig := xs.Float64At(i)
			storeFloat(xs, i, orig+step, true, RoundUp)
			up := loss()
			storeFloat(xs, i, orig-step, true, RoundUp)
			down := loss()
			storeFloat(xs, i, orig, true, RoundUp)
			fd[i] = (up - down) / (2 * step)
			scale = math.Max(scale, math.Abs(fd[i]))
		}
		scales[p.Name] = scale
		for i, f := range fd {
			if a := got.Float64At(i); math.Abs(a-f) > tol*(math.Abs(f)+scale) || math.IsNaN(a) {
				t.Errorf("d L/d %s[%d]: autodiff %.12g, central difference %.12g", p.Name, i, a, f)
				break
			}
		}
	}
	return scales
}

// checkImportedGrad imports m and checks the gradient of the weighted sum
// of its float outputs (weightedSum) with respect to every parameter
// (checkGradOfLoss, step 1e-6). The parameters should be float64.
func checkImportedGrad(t *testing.T, m *onnx.Model, feeds map[string]*Tensor, tol float64) {
	t.Helper()
	fwd, fed, err := importModel(m, feeds)
	if err != nil {
		t.Fatal(err)
	}
	var ys []*Value
	for _, o := range fwd.Outputs {
		ys = append(ys, o.Value)
	}
	b := builderOn(fwd)
	fwd.Outputs = nil
	b.Output("L", weightedSum(b, rand.New(rand.NewPCG(7, 8)), ys, nil))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	checkGradOfLoss(t, g, fed, 1e-6, tol)
}

// checkGradFD is checkImportedGrad for an imported graph without run-time
// inputs, over its float64 outputs, leaving out their non-finite elements
// (masked scores); a parameter whose differences are all zero fails (the
// check would test nothing).
func checkGradFD(t *testing.T, g *Graph, tol float64) {
	t.Helper()
	res, err := Interpret(g, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ys []*Value
	var vals []*Tensor
	for _, o := range g.Outputs {
		if o.Value.DType == Float64 {
			ys = append(ys, o.Value)
			vals = append(vals, res[o.Name])
		}
	}
	b := builderOn(g)
	b.Output("L", weightedSum(b, rand.New(rand.NewPCG(3, 4)), ys, vals))
	lg, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	for name, scale := range checkGradOfLoss(t, lg, nil, 1e-6, tol) {
		if scale == 0 {
			t.Errorf("d L/d %s is zero everywhere: the check tests nothing", name)
		}
	}
}
