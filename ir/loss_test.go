package ir

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// smallModel is a float64 two-layer network x → tanh(x·W1 + b1)·W2 with
// outputs "out" [2,3,4] and, through a Sigmoid, "prob".
func smallModel(t *testing.T, rng *rand.Rand) *Graph {
	t.Helper()
	b := NewBuilder("small")
	x := b.Input("x", Float64, Shape{2, 3, 5})
	rnd := func(shape Shape) *Tensor {
		v := NewTensor(Float64, shape)
		for i := range v.Float64s() {
			v.Float64s()[i] = rng.Float64()*2 - 1
		}
		return v
	}
	w1 := b.Param("w1", rnd(Shape{5, 6}))
	b1 := b.Param("b1", rnd(Shape{6}))
	w2 := b.Param("w2", rnd(Shape{6, 4}))
	b.Param("frozen", rnd(Shape{2}))
	h := b.Op1(&Unary{Fn: Tanh}, b.Op1(&Binary{Fn: Add}, b.Op1(&MatMul{}, x, w1), b1))
	out := b.Op1(&MatMul{}, h, w2)
	b.Output("out", out)
	b.Output("prob", b.Op1(&Unary{Fn: Sigmoid}, out))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestLosses checks each loss kind's value against a direct computation
// from the model's outputs, and its gradients against central
// differences of LossGraph.
func TestLosses(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	g := smallModel(t, rng)
	x := NewTensor(Float64, Shape{2, 3, 5})
	for i := range x.Float64s() {
		x.Float64s()[i] = rng.Float64()*2 - 1
	}
	fwd, err := Interpret(g, map[string]*Tensor{"x": x})
	if err != nil {
		t.Fatal(err)
	}
	classes := FromInt64s(Shape{2, 3}, []int64{3, -100, 0, 2, 2, -100})
	soft := NewTensor(Float64, Shape{2, 3, 4})
	for i := range soft.Float64s() {
		soft.Float64s()[i] = rng.Float64()
	}
	for _, c := range []struct {
		spec    LossSpec
		targets *Tensor
		want    func() float64
	}{
		{LossSpec{Kind: SoftmaxCrossEntropy, IgnoreIndex: -100}, classes, func() float64 {
			out := fwd["out"].Float64s()
			var sum float64
			n := 0
			for r := range 6 {
				tgt := classes.Int64s()[r]
				if tgt == -100 {
					continue
				}
				var s float64
				for k := range 4 {
					s += math.Exp(out[r*4+k])
				}
				sum += math.Log(s) - out[r*4+int(tgt)]
				n++
			}
			return sum / float64(n)
		}},
		{LossSpec{Kind: MeanSquaredError}, soft, func() float64 {
			var sum float64
			for i, v := range fwd["out"].Float64s() {
				d := v - soft.Float64s()[i]
				sum += d * d
			}
			return sum / 24
		}},
		{LossSpec{Kind: BinaryCrossEntropy, Output: "prob"}, soft, func() float64 {
			var sum float64
			for i, p := range fwd["prob"].Float64s() {
				y := soft.Float64s()[i]
				sum += y*math.Log(p) + (1-y)*math.Log(1-p)
			}
			return -sum / 24
		}},
	} {
		t.Run(c.spec.Kind.String(), func(t *testing.T) {
			tg, err := TrainingGraph(g, c.spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			lg, err := LossGraph(g, c.spec)
			if err != nil {
				t.Fatal(err)
			}
			if len(tg.Inputs) != 2 || tg.Inputs[1].Name != TargetsInput || tg.Inputs[1].DType != c.targets.DType() || !tg.Inputs[1].Shape.Equal(c.targets.Shape()) {
				t.Fatalf("inputs %v, want x and targets %v", tg.Inputs, c.targets)
			}
			wantOuts := []string{"loss", "grad:w1", "grad:b1", "grad:w2"}
			if len(tg.Outputs) != len(wantOuts) {
				t.Fatalf("outputs %v, want %v", tg.Outputs, wantOuts)
			}
			for i, o := range tg.Outputs {
				if o.Name != wantOuts[i] {
					t.Fatalf("outputs %v, want %v", tg.Outputs, wantOuts)
				}
			}
			in := map[string]*Tensor{"x": x, TargetsInput: c.targets}
			res, err := Interpret(tg, in)
			if err != nil {
				t.Fatal(err)
			}
			loss := res[LossOutput].Float64At(0)
			if want := c.want(); math.Abs(loss-want) > 1e-12*math.Max(1, math.Abs(want)) {
				t.Errorf("loss %.15g, direct computation %.15g", loss, want)
			}
			lossOnly := func() float64 {
				r, err := Interpret(lg, in)
				if err != nil {
					t.Fatal(err)
				}
				return r[LossOutput].Float64At(0)
			}
			if l := lossOnly(); l != loss {
				t.Errorf("LossGraph gives %v, TrainingGraph %v", l, loss)
			}
			checkAgainstDifferences(t, g.Params[:3], res, lossOnly, 1e-6, 1e-6)
		})
	}
}

// TestTrainingGraphSharesParameters checks that the training graph reads
// the model's parameter storage: an update made through the source graph
// changes the loss.
func TestTrainingGraphSharesParameters(t *testing.T) {
	g := smallModel(t, rand.New(rand.NewPCG(5, 6)))
	tg, err := TrainingGraph(g, LossSpec{Kind: MeanSquaredError}, []*Param{g.Param("w2")})
	if err != nil {
		t.Fatal(err)
	}
	if len(tg.Outputs) != 2 || tg.Outputs[1].Name != "grad:w2" {
		t.Fatalf("outputs %v, want loss and grad:w2", tg.Outputs)
	}
	if tg.Param("w2").Tensor != g.Param("w2").Tensor {
		t.Fatal("the training graph's w2 does not share the model's tensor")
	}
	in := map[string]*Tensor{"x": NewTensor(Float64, Shape{2, 3, 5}), TargetsInput: filled(Float64, Shape{2, 3, 4}, 1)}
	for i := range in["x"].Float64s() {
		in["x"].Float64s()[i] = float64(i%7) / 7
	}
	before, err := Interpret(tg, in)
	if err != nil {
		t.Fatal(err)
	}
	g.Param("w2").Tensor.Float64s()[0] += 0.5
	after, err := Interpret(tg, in)
	if err != nil {
		t.Fatal(err)
	}
	if before[LossOutput].Float64At(0) == after[LossOutput].Float64At(0) {
		t.Error("updating the model's parameter did not change the training graph's loss")
	}
	for _, n := range tg.Nodes {
		if n.Op.Name() == "MatMul" && strings.HasPrefix(n.Origin, "gradient") {
			for _, v := range n.Outputs {
				if v != nil && v.Shape.Equal(Shape{5, 6}) {
					t.Errorf("the gradient of the frozen w1 is computed: %s", n)
				}
			}
		}
	}
}

// TestSoftmaxCrossEntropyAllIgnored checks the documented convention: no
// counted target gives loss 0 and zero gradients, not NaN.
func TestSoftmaxCrossEntropyAllIgnored(t *testing.T) {
	g := smallModel(t, rand.New(rand.NewPCG(7, 8)))
	tg, err := TrainingGraph(g, LossSpec{Kind: SoftmaxCrossEntropy, IgnoreIndex: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	targets := filled(Int64, Shape{2, 3}, -1)
	res, err := Interpret(tg, map[string]*Tensor{"x": filled(Float64, Shape{2, 3, 5}, 0.3), TargetsInput: targets})
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range res {
		for i := range v.Len() {
			if v.Float64At(i) != 0 {
				t.Fatalf("%s[%d] = %v, want 0", name, i, v.Float64At(i))
			}
		}
	}
	targets.Int64s()[2] = 4 // out of range [0, 4)
	_, err = Interpret(tg, map[string]*Tensor{"x": filled(Float64, Shape{2, 3, 5}, 0.3), TargetsInput: targets})
	if err == nil || !strings.Contains(err.Error(), "target 4") {
		t.Errorf("out-of-range target: err = %v", err)
	}
}

func TestLossErrors(t *testing.T) {
	g := smallModel(t, rand.New(rand.NewPCG(9, 10)))
	for _, c := range []struct {
		spec LossSpec
		want string
	}{
		{LossSpec{Kind: SoftmaxCrossEntropy, Output: "nope"}, `no output "nope"`},
		{LossSpec{Kind: LossKind(9)}, "unknown loss kind"},
	} {
		if _, err := TrainingGraph(g, c.spec, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want %q", c.spec, err, c.want)
		}
	}
	b := NewBuilder("clash")
	x := b.Input(TargetsInput, Float64, Shape{2})
	b.Output("y", b.Op1(&Binary{Fn: Mul}, x, b.Param("w", filled(Float64, Shape{2}, 1))))
	g2, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LossGraph(g2, LossSpec{Kind: MeanSquaredError}); err == nil || !strings.Contains(err.Error(), "targets") {
		t.Errorf("input named targets: err = %v", err)
	}
	for _, s := range []string{"softmax-cross-entropy", "mse", "bce"} {
		k, err := ParseLossKind(s)
		if err != nil || k.String() != s {
			t.Errorf("ParseLossKind(%q) = %v, %v", s, k, err)
		}
	}
	if _, err := ParseLossKind("hinge"); err == nil {
		t.Error("ParseLossKind accepted hinge")
	}
}

// softmaxCEReference is SoftmaxCELoss's definition in float64, written out
// apart from its Eval: the loss and dlogits of logits [rows, c] against
// targets, divided by div (0 when div is 0).
func softmaxCEReference(logits []float64, c int, targets []int64, ignore int64, div float64) (float64, []float64) {
	grad := make([]float64, len(logits))
	if div == 0 {
		return 0, grad
	}
	var loss float64
	for r, t := range targets {
		if t == ignore {
			continue
		}
		row := logits[r*c : (r+1)*c]
		var z float64
		for _, v := range row {
			z += math.Exp(v)
		}
		loss += math.Log(z) - row[t]
		for k, v := range row {
			grad[r*c+k] = math.Exp(v) / z / div
		}
		grad[r*c+int(t)] -= 1 / div
	}
	return loss / div, grad
}

// TestSoftmaxCELossDenominator: with its third input D the loss and its
// gradient divide by D instead of the number N of counted targets — D
// above and below N, and D = 0 (no target in the step: zeros) — with
// ignored rows contributing nothing, against a float64 reference; D = N
// gives the two-input op's bits; D must be a float32 scalar.
func TestSoftmaxCELossDenominator(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const rows, c = 10, 7
	logits := NewTensor(Float32, Shape{2, rows / 2, c})
	for i := range logits.Float32s() {
		logits.Float32s()[i] = float32(rng.Float64()*6 - 3)
	}
	targets := FromInt64s(Shape{2, rows / 2}, []int64{3, -100, 0, 6, 2, -100, -100, 1, 5, 4})
	const n = 7
	x := Convert(logits, Float64).Float64s()
	op := &SoftmaxCELoss{IgnoreIndex: -100}
	two, err := EvalOp(op, logits, targets)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []float32{n, 23, 2.5, 0} {
		got, err := EvalOp(op, logits, targets, ScalarFloat32(d))
		if err != nil {
			t.Fatal(err)
		}
		loss, grad := softmaxCEReference(x, c, targets.Int64s(), -100, float64(d))
		if l := got[0].Float64At(0); math.Abs(l-loss) > 1e-6*math.Abs(loss) || (d == 0 && l != 0) {
			t.Errorf("D = %v: loss %v, want %v", d, l, loss)
		}
		for i, want := range grad {
			g := got[1].Float64At(i)
			if math.Abs(g-want) > 1e-6*math.Abs(want)+1e-12 || (want == 0 && g != 0) {
				t.Errorf("D = %v: dlogits[%d] = %v, want %v", d, i, g, want)
				break
			}
		}
		if d == n {
			for i := range two {
				if !slices.Equal(got[i].Float32s(), two[i].Float32s()) {
					t.Errorf("D = N: output %d differs from the two-input op's", i)
				}
			}
		}
	}
	for _, bad := range []Type{{Float64, Shape{}}, {Float32, Shape{1}}} {
		if _, err := op.Infer([]Type{{Float32, logits.Shape()}, {Int64, targets.Shape()}, bad}); err == nil || !strings.Contains(err.Error(), "denominator") {
			t.Errorf("denominator %v: err = %v", bad, err)
		}
	}
}

// TestWithLossDenominator: the copy of a softmax cross-entropy training
// graph reads the denominator as a new last input, shares the
// parameters, leaves the graph it copies alone, and gives the original's
// outputs scaled by N/D (its very bits for D = N); a graph whose loss is
// not a SoftmaxCELoss's is not copied, and a graph that already has a
// value of the input's name is an error.
func TestWithLossDenominator(t *testing.T) {
	g := smallModel(t, rand.New(rand.NewPCG(11, 12)))
	tg, err := TrainingGraph(g, LossSpec{Kind: SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inputs, nodes := len(tg.Inputs), len(tg.Nodes)
	ag, ok, err := WithLossDenominator(tg)
	if err != nil || !ok {
		t.Fatalf("WithLossDenominator: %v, %v", ok, err)
	}
	if len(tg.Inputs) != inputs || len(tg.Nodes) != nodes || tg.Validate() != nil {
		t.Error("WithLossDenominator changed the graph it copies")
	}
	if len(ag.Inputs) != inputs+1 {
		t.Fatalf("the copy has %d inputs, want %d", len(ag.Inputs), inputs+1)
	}
	if v := ag.Inputs[inputs]; v.Name != LossDenominatorInput || v.DType != Float32 || len(v.Shape) != 0 {
		t.Errorf("the copy's last input is %v, want a float32 scalar %q", v, LossDenominatorInput)
	}
	if ag.Param("w1").Tensor != g.Param("w1").Tensor {
		t.Error("the copy does not share the model's parameters")
	}
	x := NewTensor(Float64, Shape{2, 3, 5})
	for i := range x.Float64s() {
		x.Float64s()[i] = float64(i%11)/5 - 1
	}
	feed := map[string]*Tensor{"x": x, TargetsInput: FromInt64s(Shape{2, 3}, []int64{3, -100, 0, 2, 1, -100})}
	const n = 4
	want, err := Interpret(tg, feed)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []float32{n, 10, 0} {
		feed[LossDenominatorInput] = ScalarFloat32(d)
		got, err := Interpret(ag, feed)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range tg.Outputs {
			w, g := want[o.Name].Float64s(), got[o.Name].Float64s()
			for i := range w {
				scaled := 0.0
				if d != 0 {
					scaled = w[i] * n / float64(d)
				}
				if (d == n && g[i] != w[i]) || math.Abs(g[i]-scaled) > 1e-12*math.Abs(scaled) {
					t.Errorf("D = %v: %s[%d] = %v, want %v", d, o.Name, i, g[i], scaled)
					break
				}
			}
		}
	}

	mse, err := TrainingGraph(g, LossSpec{Kind: MeanSquaredError}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok, err := WithLossDenominator(mse); c != nil || ok || err != nil {
		t.Errorf("an MSE training graph: %v, %v, %v; want nothing", c, ok, err)
	}

	b := NewBuilder("clash")
	in := b.Input("x", Float64, Shape{2, 3})
	b.Input(LossDenominatorInput, Float64, Shape{})
	b.Output("logits", b.Op1(&MatMul{}, in, b.Param("w", filled(Float64, Shape{3, 4}, 0.5))))
	clash, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	ctg, err := TrainingGraph(clash, LossSpec{Kind: SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := WithLossDenominator(ctg); err == nil || !strings.Contains(err.Error(), LossDenominatorInput) {
		t.Errorf("a graph with an input named %q: err = %v", LossDenominatorInput, err)
	}
}
