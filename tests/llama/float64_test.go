package llama

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/ir"
)

// TestFloat64GradientsByFiniteDifferences differentiates the next-token
// loss of the float64 exports (every pattern of the float32 ones: rotary
// tables from Range, Cos and Sin, rotate_half through Slice, Neg and
// Concat, RMSNorm through Pow, ReduceMean, Sqrt and Reciprocal or Div,
// GQA through Expand and Reshape, the causal and sliding-window masks,
// SwiGLU and tanh-GeGLU, a tied head) on the CPU backend and checks the
// gradient against central differences of the loss: element by element
// for a sample of every parameter, and along a random direction over all
// of them.
func TestFloat64GradientsByFiniteDifferences(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, 10))
			tokens := ir.NewTensor(ir.Int64, ir.Shape{2, 6})
			for i := range tokens.Int64s() {
				tokens.Int64s()[i] = int64(rng.IntN(32))
			}
			g := importFor(t, filepath.Join("testdata", variant, "float64.onnx"), tokens)
			spec := ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}
			tg, err := ir.TrainingGraph(g, spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			lg, err := ir.LossGraph(g, spec)
			if err != nil {
				t.Fatal(err)
			}
			inputs := map[string]*ir.Tensor{"tokens": tokens, ir.TargetsInput: nextTokenTargets(tokens)}
			grads := runCPU(t, tg, inputs)
			exe, err := cpu.Compile(lg, accel.Options{Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer exe.Close()
			loss := func() float64 {
				out, err := accel.RunNamed(exe, inputs)
				if err != nil {
					t.Fatal(err)
				}
				return out[ir.LossOutput].Float64At(0)
			}
			if l0 := loss(); math.Abs(l0-grads[ir.LossOutput].Float64At(0)) > 1e-12 {
				t.Fatalf("the loss graph gives %.15g, the training graph %.15g", l0, grads[ir.LossOutput].Float64At(0))
			}
			const step = 1e-6
			central := func(perturb func(sign float64)) float64 {
				perturb(1)
				up := loss()
				perturb(-2)
				down := loss()
				perturb(1)
				return (up - down) / (2 * step)
			}
			var along, predicted float64
			dirs := map[string][]float64{}
			for _, p := range lg.Params {
				x, err := exe.Param(p.Name)
				if err != nil {
					t.Fatal(err)
				}
				xs, grad := x.Float64s(), grads[ir.GradPrefix+p.Name].Float64s()
				scale := 0.0
				for _, v := range grad {
					scale = math.Max(scale, math.Abs(v))
				}
				for k := range 4 {
					i := (k*7919 + len(p.Name)) % len(xs)
					fd := central(func(sign float64) { xs[i] += sign * step })
					if math.Abs(fd-grad[i]) > 1e-6*(math.Abs(fd)+scale) {
						t.Errorf("d loss/d %s[%d]: autodiff %.10g, central difference %.10g", p.Name, i, grad[i], fd)
					}
				}
				d := make([]float64, len(xs))
				for i := range d {
					d[i] = rng.NormFloat64()
					predicted += d[i] * grad[i]
				}
				dirs[p.Name] = d
			}
			along = central(func(sign float64) {
				for _, p := range lg.Params {
					x, _ := exe.Param(p.Name)
					for i, v := range dirs[p.Name] {
						x.Float64s()[i] += sign * step * v
					}
				}
			})
			if math.Abs(along-predicted) > 1e-6*math.Abs(along) {
				t.Errorf("directional derivative over all %d parameters: autodiff %.10g, central difference %.10g", len(lg.Params), predicted, along)
			}
			t.Logf("%d parameters; directional derivative %.10g (central difference %.10g)", len(lg.Params), predicted, along)
		})
	}
}
