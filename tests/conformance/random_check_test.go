package conformance

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// TestRandomCheck: the check of random outputs accepts draws from the
// operator's distribution and refuses values out of range and implausible
// statistics, for Bernoulli, its expansion and the random generators.
func TestRandomCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 2000
	p := make([]float32, n)
	for i := range p {
		p[i] = 0.05 + 0.09*float32(i%10)
	}
	probs := ir.FromFloat32s(ir.Shape{n}, p)
	draw := func(prob func(i int) float64) *ir.Datum {
		v := make([]float32, n)
		for i := range v {
			if rng.Float64() < prob(i) {
				v[i] = 1
			}
		}
		return ir.TensorOf(ir.FromFloat32s(ir.Shape{n}, v))
	}
	bernoulli := &onnx.Graph{Nodes: []*onnx.Node{{OpType: "Bernoulli", Inputs: []string{"x"}, Outputs: []string{"y"}}}, Outputs: []*onnx.ValueInfo{{Name: "y"}}}
	expanded := &onnx.Graph{Nodes: []*onnx.Node{
		{OpType: "RandomUniformLike", Inputs: []string{"x"}, Outputs: []string{"u"}},
		{OpType: "Greater", Inputs: []string{"u", "x"}, Outputs: []string{"g"}},
		{OpType: "Cast", Inputs: []string{"g"}, Outputs: []string{"y"}},
	}, Outputs: []*onnx.ValueInfo{{Name: "y"}}}
	known := map[string]*ir.Tensor{"x": probs}
	ok := draw(func(i int) float64 { return float64(p[i]) })
	flipped := draw(func(i int) float64 { return 1 - float64(p[i]) })
	ones := ir.TensorOf(ir.FromFloat32s(ir.Shape{n}, slicesOf(n, 1)))
	twos := ir.TensorOf(ir.FromFloat32s(ir.Shape{n}, slicesOf(n, 2)))
	// The expansion draws 1 where a uniform draw exceeds p: with
	// probability 1-p.
	for _, tc := range []struct {
		name     string
		g        *onnx.Graph
		got, ref *ir.Datum
		wantFail string
	}{
		{"Bernoulli", bernoulli, ok, ok, ""},
		{"Bernoulli all ones", bernoulli, ones, ok, "implausible"},
		{"Bernoulli twos", bernoulli, twos, ok, "want 0 or 1"},
		{"Bernoulli with 1-p", bernoulli, flipped, ok, "implausible"},
		{"Bernoulli, reference off", bernoulli, ok, flipped, "reference"},
		{"expansion", expanded, flipped, flipped, ""},
		{"expansion with p", expanded, ok, flipped, "implausible"},
	} {
		err := checkRandom(tc.g, randomNodes(tc.g), known, map[string]*ir.Datum{"y": tc.got}, map[string]*ir.Datum{"y": tc.ref})
		switch {
		case tc.wantFail == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantFail != "" && (err == nil || !strings.Contains(err.Error(), tc.wantFail)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.wantFail)
		}
	}
	uniform := &onnx.Graph{Nodes: []*onnx.Node{{OpType: "RandomUniform", Outputs: []string{"y"}, Attributes: []*onnx.Attribute{
		{Name: "low", Type: onnx.AttrFloat, F: 2}, {Name: "high", Type: onnx.AttrFloat, F: 4}}}}, Outputs: []*onnx.ValueInfo{{Name: "y"}}}
	normal := &onnx.Graph{Nodes: []*onnx.Node{{OpType: "RandomNormal", Outputs: []string{"y"}, Attributes: []*onnx.Attribute{
		{Name: "mean", Type: onnx.AttrFloat, F: 1}, {Name: "scale", Type: onnx.AttrFloat, F: 3}}}}, Outputs: []*onnx.ValueInfo{{Name: "y"}}}
	sample := func(f func() float64) *ir.Datum {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(f())
		}
		return ir.TensorOf(ir.FromFloat32s(ir.Shape{n}, v))
	}
	u := sample(func() float64 { return 2 + 2*rng.Float64() })
	for _, tc := range []struct {
		name     string
		g        *onnx.Graph
		got      *ir.Datum
		wantFail string
	}{
		{"uniform", uniform, u, ""},
		{"uniform shifted", uniform, sample(func() float64 { return 2 + rng.Float64() }), "implausible for uniform"},
		{"uniform out of range", uniform, sample(func() float64 { return 5 }), "outside [2, 4)"},
		{"normal", normal, sample(func() float64 { return 1 + 3*rng.NormFloat64() }), ""},
		{"normal narrow", normal, sample(func() float64 { return 1 + rng.NormFloat64() }), "standard deviation"},
		{"normal shifted", normal, sample(func() float64 { return 2 + 3*rng.NormFloat64() }), "mean"},
	} {
		err := checkRandom(tc.g, randomNodes(tc.g), nil, map[string]*ir.Datum{"y": tc.got}, map[string]*ir.Datum{"y": tc.got})
		switch {
		case tc.wantFail == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantFail != "" && (err == nil || !strings.Contains(err.Error(), tc.wantFail)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.wantFail)
		}
	}
	// A shape or dtype the reference does not have is refused.
	short := ir.TensorOf(ir.FromFloat32s(ir.Shape{1}, []float32{1}))
	if err := checkRandom(bernoulli, randomNodes(bernoulli), known, map[string]*ir.Datum{"y": short}, map[string]*ir.Datum{"y": ok}); err == nil || !strings.Contains(err.Error(), "got float32[1], want float32[2000]") {
		t.Errorf("wrong shape: %v", err)
	}
}

func slicesOf(n int, v float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = v
	}
	return out
}
