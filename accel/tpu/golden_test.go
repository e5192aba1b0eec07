package tpu

import (
	"flag"
	"github.com/dstune/dstune/internal/sharedtest/models"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden from the current lowering")

// checkGolden compares text with testdata/name.golden (or rewrites it
// with -update). The golden files pin the emitted StableHLO; the
// evaluator tests check what it means.
func checkGolden(t *testing.T, name, text string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *updateGolden {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./accel/tpu -run Golden -update to create it)", err)
	}
	if string(want) != text {
		gl, wl := strings.Split(text, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs from the lowering at line %d:\n got %s\nwant %s\n(run with -update if the change is intended)", path, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s: %d lines, the lowering gives %d (run with -update if the change is intended)", path, len(wl), len(gl))
	}
}

// attention is one causal self-attention block: x [1, 4, 8], two heads.
func attention(t *testing.T) *ir.Graph {
	b := ir.NewBuilder("attention")
	rng := rand.New(rand.NewPCG(5, 6))
	w := func(name string) *ir.Value {
		v := make([]float32, 64)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.3)
		}
		return b.Param(name, ir.FromFloat32s(ir.Shape{8, 8}, v))
	}
	x := b.Input("x", ir.Float32, ir.Shape{1, 4, 8})
	heads := func(v *ir.Value) *ir.Value {
		r := b.Op1(&ir.Reshape{Shape: ir.Shape{1, 4, 2, 4}}, v)
		return b.Op1(&ir.Transpose{Perm: []int{0, 2, 1, 3}}, r)
	}
	q := heads(b.Op1(&ir.MatMul{}, x, w("wq")))
	k := heads(b.Op1(&ir.MatMul{}, x, w("wk")))
	v := heads(b.Op1(&ir.MatMul{}, x, w("wv")))
	kt := b.Op1(&ir.Transpose{Perm: []int{0, 1, 3, 2}}, k)
	s := b.Op1(&ir.Binary{Fn: ir.Mul}, b.Op1(&ir.MatMul{}, q, kt), b.Const(ir.ScalarFloat32(0.5)))
	mask := make([]bool, 16)
	for i := range 4 {
		for j := range 4 {
			mask[i*4+j] = j <= i
		}
	}
	s = b.Op1(&ir.Where{}, b.Const(ir.FromBools(ir.Shape{4, 4}, mask)), s, b.Const(ir.ScalarFloat32(-1e9)))
	p := b.Op1(&ir.Softmax{Axis: 3}, s)
	o := b.Op1(&ir.Transpose{Perm: []int{0, 2, 1, 3}}, b.Op1(&ir.MatMul{}, p, v))
	o = b.Op1(&ir.Reshape{Shape: ir.Shape{1, 4, 8}}, o)
	b.Output("y", b.Op1(&ir.MatMul{}, o, w("wo")))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGolden(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	tg := mlp(t, rng)
	model := func() *ir.Graph {
		// The MLP's forward graph: the training graph's parameters with
		// only the model output.
		b := ir.NewBuilder("mlp")
		x := b.Input("x", ir.Float32, ir.Shape{6, 8})
		w1 := b.Param("w1", tg.Param("w1").Tensor)
		b1 := b.Param("b1", tg.Param("b1").Tensor)
		w2 := b.Param("w2", tg.Param("w2").Tensor)
		h := b.Op1(&ir.Unary{Fn: ir.Tanh}, b.Op1(&ir.Binary{Fn: ir.Add}, b.Op1(&ir.MatMul{}, x, w1), b1))
		b.Output("y", b.Op1(&ir.MatMul{}, h, w2))
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}()
	lower := func(g *ir.Graph) string {
		p, err := LowerGraph(g)
		if err != nil {
			t.Fatal(err)
		}
		return p.Text
	}
	checkGolden(t, "mlp", lower(model))
	checkGolden(t, "attention", lower(attention(t)))
	checkGolden(t, "mlp_gradients", lower(tg))
	gpt := models.Specialize(t, "models/tiny_gpt/model.onnx", map[string]ir.Shape{"tokens": {1, 9}})
	checkGolden(t, "tiny_gpt_forward", lower(gpt))

	// AdamW + DST (Algorithm 2 with the exact fallback) for one silo: w2,
	// the only trainable parameter.
	one, err := ir.TrainingGraph(model, ir.LossSpec{Kind: ir.MeanSquaredError}, []*ir.Param{model.Param("w2")})
	if err != nil {
		t.Fatal(err)
	}
	step, err := LowerTrainStep(one, &update.Program{
		Optimizer: adamWOpt(),
		Selection: &update.Selection{Distance: update.DistanceInvRel, Units: []update.Unit{{Name: "w2", Pieces: []update.Piece{{Param: "w2"}}, K: 6}},
			Bisection: update.DefaultBisection, BandCap: 64 << 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "adamw_dst_step", step.Text)
	var aliased int
	for _, a := range step.Args {
		if a.AliasOf >= 0 {
			aliased++
		}
	}
	// w2, its two moments, its mask, q, ready and the fixed flag stay on
	// the device.
	if aliased != 7 || !strings.Contains(step.Text, "tf.aliasing_output") {
		t.Errorf("%d aliased arguments, want 7:\n%s", aliased, step.describe())
	}

	// SGD + DST with the exact selection every step and the subset fixed
	// after the first: one silo of two pieces (b1 then w2).
	two, err := ir.TrainingGraph(model, ir.LossSpec{Kind: ir.MeanSquaredError}, []*ir.Param{model.Param("b1"), model.Param("w2")})
	if err != nil {
		t.Fatal(err)
	}
	step, err = LowerTrainStep(two, &update.Program{
		Optimizer: update.Optimizer{Name: update.OptimizerSGD, SGD: &update.SGD{LR: 0.1, Momentum: 0.9}},
		Selection: &update.Selection{Distance: update.DistanceRel, Units: []update.Unit{{Name: "all", Pieces: []update.Piece{{Param: "b1"}, {Param: "w2"}}, K: 4}},
			Exact: true, Fixed: update.FixAfterFirst, Bisection: update.DefaultBisection, BandCap: 64 << 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "sgd_dst_exact_step", step.Text)

	// Gradient accumulation: the MLP's accumulate program (its three sums
	// stay on the device), and the apply program of AdamW + DST with
	// clipping for w2 (the sum is read, not donated).
	accum, err := LowerAccumulate(tg)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "mlp_accumulate", accum.Text)
	aliasedKinds := func(p *Program) map[ArgKind]int {
		m := map[ArgKind]int{}
		for _, a := range p.Args {
			if a.AliasOf >= 0 {
				m[a.Kind]++
			}
		}
		return m
	}
	if m := aliasedKinds(accum); len(m) != 1 || m[ArgAccum] != 3 {
		t.Errorf("aliased arguments by kind %v, want the 3 sums:\n%s", m, accum.describe())
	}
	apply, err := LowerApply([]*ir.Param{model.Param("w2")}, &update.Program{
		Optimizer: adamWOpt(),
		Selection: &update.Selection{Distance: update.DistanceInvRel, Units: []update.Unit{{Name: "w2", Pieces: []update.Piece{{Param: "w2"}}, K: 6}},
			Bisection: update.DefaultBisection, BandCap: 64 << 10},
		MaxGradNorm: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "adamw_dst_clip_apply", apply.Text)
	if m := aliasedKinds(apply); len(m) != 2 || m[ArgParam] != 1 || m[ArgState] != 6 || apply.ArgIndex(ArgAccum, "w2") < 0 {
		t.Errorf("aliased arguments by kind %v, want w2 and its 6 states:\n%s", m, apply.describe())
	}
}
