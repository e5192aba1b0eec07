package tpu

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// mlp is a small differentiable model: y = tanh(x·w1 + b1)·w2 with an
// MSE loss, inputs x [6, 8] and targets [6, 4].
func mlp(t testing.TB, rng *rand.Rand) *ir.Graph {
	t.Helper()
	b := ir.NewBuilder("mlp")
	randn := func(shape ir.Shape, scale float64) *ir.Tensor {
		v := make([]float32, shape.Size())
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		return ir.FromFloat32s(shape, v)
	}
	x := b.Input("x", ir.Float32, ir.Shape{6, 8})
	w1 := b.Param("w1", randn(ir.Shape{8, 16}, 0.5))
	b1 := b.Param("b1", randn(ir.Shape{16}, 0.1))
	w2 := b.Param("w2", randn(ir.Shape{16, 4}, 0.5))
	h := b.Op1(&ir.Unary{Fn: ir.Tanh}, b.Op1(&ir.Binary{Fn: ir.Add}, b.Op1(&ir.MatMul{}, x, w1), b1))
	b.Output("y", b.Op1(&ir.MatMul{}, h, w2))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.MeanSquaredError}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func randBatch(rng *rand.Rand) []*ir.Tensor {
	x := make([]float32, 6*8)
	y := make([]float32, 6*4)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for i := range y {
		y[i] = float32(rng.NormFloat64())
	}
	return []*ir.Tensor{ir.FromFloat32s(ir.Shape{6, 8}, x), ir.FromFloat32s(ir.Shape{6, 4}, y)}
}

// hostTrainer is the reference: gradients from the lowered training graph
// (the same ops the step program emits, so bit for bit the same), the
// optimizers' documented per-entry formulas in float32 with every
// operation rounded separately, and for DST package update's
// ReferenceSelect on those Θ̂, with the selection package dst's method
// makes.
type hostTrainer struct {
	// gradFn computes the loss and gradients for the current parameters
	// (nil: evaluate the lowered training graph).
	gradFn func(params map[string][]float32, inputs []*ir.Tensor) (float32, map[string][]float32)
	tg     *ir.Graph
	gradsP *Program
	prog   *update.Program
	params map[string][]float32
	seeds  map[string][]float32
	state  map[string][]float32
	sel    *update.SelectionState
	// sum is the gradient sum of Accumulate (held: not empty).
	sum  map[string][]float32
	held bool
	// The last step's outcome.
	lastLoss float32
	lastNorm float32
	lastRes  *update.SelectionResult
}

// newHostTrainer prepares the reference from the graph's parameters; init
// is the selection's state before the first step (nil: empty).
func newHostTrainer(t testing.TB, tg *ir.Graph, prog *update.Program, init *update.SelectionState) *hostTrainer {
	t.Helper()
	p, err := LowerGraph(tg)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostTrainer{tg: tg, gradsP: p, prog: prog, params: map[string][]float32{}, seeds: map[string][]float32{}, state: map[string][]float32{}}
	for _, prm := range tg.Params {
		h.params[prm.Name] = slices.Clone(prm.Tensor.Float32s())
		h.seeds[prm.Name] = slices.Clone(prm.Tensor.Float32s())
		for _, st := range prog.Optimizer.Slots(prm.Value.Shape) {
			h.state[prm.Name+"/"+st.Name] = make([]float32, update.NumElements(st.Shape))
		}
	}
	if prog.Selection != nil {
		h.sel = update.NewSelectionState(prog.Selection)
		if init != nil {
			h.sel = init.Clone()
		}
	}
	return h
}

func (h *hostTrainer) grads(t testing.TB, inputs []*ir.Tensor) (float32, map[string][]float32) {
	if h.gradFn != nil {
		return h.gradFn(h.params, inputs)
	}
	var args []*ir.Tensor
	in := 0
	for _, a := range h.gradsP.Args {
		if a.Kind == ArgInput {
			args = append(args, inputs[in])
			in++
		} else {
			args = append(args, ir.FromFloat32s(a.Type.Shape, h.params[a.Name]))
		}
	}
	out, err := runProgram(h.gradsP, args)
	if err != nil {
		t.Fatal(err)
	}
	g := map[string][]float32{}
	var loss float32
	for i, r := range h.gradsP.Results {
		if r.Name == ResultLoss {
			loss = out[i].Float32s()[0]
		} else {
			g[r.Name[len("grad:"):]] = out[i].Float32s()
		}
	}
	return loss, g
}

func f32(x float32) float32 { return x }

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// rsqrt32 is 1/√x rounded once, as stablehlo.rsqrt defines it.
func rsqrt32(x float32) float32 { return float32(1 / math.Sqrt(float64(x))) }

func (h *hostTrainer) optimizer(name string, p, g []float32, shape ir.Shape, s []float32) []float32 {
	o := h.prog.Optimizer
	out := make([]float32, len(p))
	switch {
	case o.AdamW != nil:
		m, v := h.state[name+"/exp_avg"], h.state[name+"/exp_avg_sq"]
		for i := range p {
			pd := f32(p[i] * s[scDecay])
			mi := f32(f32(g[i]*s[scOneMinusBeta1]) + f32(m[i]*s[scBeta1]))
			vi := f32(f32(f32(s[scOneMinusBeta2]*g[i])*g[i]) + f32(v[i]*s[scBeta2]))
			den := f32(f32(sqrt32(vi)/s[scBiasCorrection2Sqrt]) + s[scEps])
			out[i] = f32(pd + f32(f32(s[scNegStepSize]*mi)/den))
			m[i], v[i] = mi, vi
		}
	case o.SGD != nil:
		buf := h.state[name+"/momentum_buffer"]
		for i := range p {
			d := g[i]
			if o.SGD.WeightDecay != 0 {
				d = f32(f32(p[i]*s[scWeightDecay]) + d)
			}
			if o.SGD.Momentum != 0 {
				if s[scFirstStep] != 0 {
					buf[i] = d
				} else {
					buf[i] = f32(f32(d*s[scOneMinusDampening]) + f32(buf[i]*s[scMomentum]))
				}
				if o.SGD.Nesterov {
					d = f32(f32(buf[i]*s[scMomentum]) + d)
				} else {
					d = buf[i]
				}
			}
			out[i] = f32(f32(d*s[scNegLR]) + p[i])
		}
	case o.Adafactor != nil:
		n := len(p)
		u := make([]float32, n)
		sq := make([]float32, n)
		for i := range p {
			sq[i] = f32(f32(g[i]*g[i]) + s[scEps1])
		}
		decay, one := s[scDecay2], s[scOneMinusDecay2]
		if len(shape) >= 2 {
			rows, cols := shape[len(shape)-2], shape[len(shape)-1]
			mats := n / (rows * cols)
			R, C := h.state[name+"/exp_avg_sq_row"], h.state[name+"/exp_avg_sq_col"]
			rowSums := make([]float32, mats*rows)
			colSums := make([]float32, mats*cols)
			for k := range n {
				mat, r, c := k/(rows*cols), k/cols%rows, k%cols
				rowSums[mat*rows+r] = f32(rowSums[mat*rows+r] + sq[k])
				colSums[mat*cols+c] = f32(colSums[mat*cols+c] + sq[k])
			}
			for i := range R {
				R[i] = f32(f32(decay*R[i]) + f32(one*rowSums[i]))
			}
			for i := range C {
				C[i] = f32(f32(decay*C[i]) + f32(one*colSums[i]))
			}
			sumR := make([]float32, mats)
			for i := range R {
				sumR[i/rows] = f32(sumR[i/rows] + R[i])
			}
			for k := range n {
				mat, r, c := k/(rows*cols), k/cols%rows, k%cols
				rs := rsqrt32(f32(R[mat*rows+r] / sumR[mat]))
				cs := rsqrt32(C[mat*cols+c])
				u[k] = f32(f32(rs*cs) * g[k])
			}
		} else {
			V := h.state[name+"/exp_avg_sq"]
			for i := range V {
				V[i] = f32(f32(decay*V[i]) + f32(one*sq[i]))
				u[i] = f32(rsqrt32(V[i]) * g[i])
			}
		}
		var su, sp float32
		for i := range u {
			su = f32(su + f32(u[i]*u[i]))
			sp = f32(sp + f32(p[i]*p[i]))
		}
		nf := float32(max(n, 1))
		rmsU, rmsX := sqrt32(f32(su/nf)), sqrt32(f32(sp/nf))
		alpha := s[scAlphaBase]
		if o.Adafactor.ScaleParameter {
			alpha = f32(alpha * max(s[scEps2], rmsX))
		}
		scale := f32(alpha / max(1, f32(rmsU/s[scClip])))
		m := h.state[name+"/exp_avg"]
		for i := range p {
			ui := f32(u[i] * scale)
			if o.Adafactor.Beta1 != 0 {
				m[i] = f32(f32(ui*s[scAFOneMinusBeta1]) + f32(m[i]*s[scAFBeta1]))
				ui = m[i]
			}
			out[i] = f32(p[i] - ui)
		}
	}
	return out
}

func (h *hostTrainer) step(t testing.TB, info update.StepInfo, inputs []*ir.Tensor) {
	t.Helper()
	loss, grads := h.grads(t, inputs)
	h.lastLoss = loss
	h.update(t, info, grads)
}

// accumulate is Trainer.Accumulate: sum = (first or empty ? 0 : sum) +
// weight·g in float32, unless the loss is not finite.
func (h *hostTrainer) accumulate(t testing.TB, inputs []*ir.Tensor, weight float32, first bool) {
	t.Helper()
	loss, grads := h.grads(t, inputs)
	h.lastLoss = loss
	if first || !h.held {
		h.sum = map[string][]float32{}
		for name, g := range grads {
			h.sum[name] = make([]float32, len(g))
		}
		h.held = true
	}
	if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
		return
	}
	for name, g := range grads {
		for i, x := range g {
			h.sum[name][i] = f32(h.sum[name][i] + float32(x*weight))
		}
	}
}

// apply is Trainer.Apply on a sum of finite batches.
func (h *hostTrainer) apply(t testing.TB, info update.StepInfo) {
	t.Helper()
	h.update(t, info, h.sum)
	h.sum, h.held = nil, false
}

// clip computes the gradients' global norm as the device does (float32:
// each parameter's sum of squares in order, the sums in the order of the
// names, the square root) and, with Program.MaxGradNorm, returns them
// times min(1, max/(norm+1e-6)) rounded to float32.
func (h *hostTrainer) clip(grads map[string][]float32) (float32, map[string][]float32) {
	names := make([]string, 0, len(grads))
	for name := range grads {
		names = append(names, name)
	}
	sort.Strings(names)
	var total float32
	for i, name := range names {
		var s float32
		for _, x := range grads[name] {
			s = f32(s + float32(x*x))
		}
		if i == 0 {
			total = s
		} else {
			total = f32(total + s)
		}
	}
	norm := sqrt32(total)
	if h.prog.MaxGradNorm <= 0 {
		return norm, grads
	}
	factor := min(1, f32(float32(h.prog.MaxGradNorm)/f32(norm+float32(1e-6))))
	clipped := map[string][]float32{}
	for name, g := range grads {
		c := make([]float32, len(g))
		for i, x := range g {
			c[i] = float32(x * factor)
		}
		clipped[name] = c
	}
	return norm, clipped
}

// update takes the update from the gradients: clipping, the optimizer,
// the selection.
func (h *hostTrainer) update(t testing.TB, info update.StepInfo, grads map[string][]float32) {
	t.Helper()
	s, err := StepScalars(h.prog, info)
	if err != nil {
		t.Fatal(err)
	}
	h.lastNorm, grads = h.clip(grads)
	updated := map[string][]float32{}
	for _, prm := range h.tg.Params {
		if g, ok := grads[prm.Name]; ok {
			updated[prm.Name] = h.optimizer(prm.Name, h.params[prm.Name], g, prm.Value.Shape, s)
		}
	}
	for name, v := range updated {
		copy(h.params[name], v)
	}
	if h.sel != nil {
		h.lastRes = update.ReferenceSelect(h.prog.Selection, h.params, h.seeds, h.sel)
	}
}

// stepCase is a training configuration of the step tests: the optimizer
// and, for DST, the method's options (the selection is the one package
// dst's method makes, as a run's engine has it).
type stepCase struct {
	opt     update.Optimizer
	dst     *dst.Options
	modules map[string]dst.Module
	order   []string // the trainable parameters' order (nil: the graph's)
	// zeroSeeds sets the first entries of w1 to 0 (rel distance: Δ = +Inf).
	zeroSeeds int
	// maxGradNorm is Program.MaxGradNorm.
	maxGradNorm float64
}

// stepRig runs a configuration on a device trainer and on the host
// reference side by side.
type stepRig struct {
	tg    *ir.Graph
	prog  *update.Program
	dev   *Trainer
	host  *hostTrainer
	order []string
	paths struct{ candidate, exact, fallback, fixed int }
}

func newStepRig(t testing.TB, dev device, tg *ir.Graph, c stepCase) *stepRig {
	t.Helper()
	r := &stepRig{tg: tg, prog: &update.Program{Optimizer: c.opt, MaxGradNorm: c.maxGradNorm}, order: c.order}
	if r.order == nil {
		for _, p := range tg.Params {
			r.order = append(r.order, p.Name)
		}
	}
	var params []*ir.Param
	for _, name := range r.order {
		params = append(params, &ir.Param{Name: name, Tensor: tg.Param(name).Tensor})
	}
	var init *update.SelectionState
	if c.dst != nil {
		m, err := dst.NewMethod(*c.dst, c.modules, "")
		if err != nil {
			t.Fatal(err)
		}
		if r.prog.Selection, init, err = m.Prepare(params); err != nil {
			t.Fatal(err)
		}
	}
	r.host = newHostTrainer(t, tg, r.prog, init)
	tr, err := newTrainer(dev, params, r.prog)
	if err != nil {
		t.Fatal(err)
	}
	r.dev = tr
	if init != nil {
		if err := r.dev.SetState(&update.State{Selection: init}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// step takes a step on both and compares everything bit for bit: loss,
// gradient norm, parameters, the subsets, the selection's state and
// outcome.
func (r *stepRig) step(t testing.TB, info update.StepInfo, batch []*ir.Tensor) *update.Result {
	t.Helper()
	res, err := r.dev.Step(r.tg, batch, info)
	if err != nil {
		t.Fatal(err)
	}
	r.host.step(t, info, batch)
	if res.Loss != r.host.lastLoss {
		t.Fatalf("step %d: loss %g, host %g", info.Step, res.Loss, r.host.lastLoss)
	}
	r.compare(t, info, res)
	return res
}

// compare compares the device with the host after an update, bit for
// bit: the gradient norm, parameters, the subsets, the selection's state
// and outcome.
func (r *stepRig) compare(t testing.TB, info update.StepInfo, res *update.Result) {
	t.Helper()
	if res.GradNorm != float64(r.host.lastNorm) {
		t.Fatalf("step %d: gradient norm %g, host %g", info.Step, res.GradNorm, r.host.lastNorm)
	}
	for _, name := range r.order {
		got, err := r.dev.Param(name)
		if err != nil {
			t.Fatal(err)
		}
		want := r.host.params[name]
		for i, x := range got {
			if math.Float32bits(x) != math.Float32bits(want[i]) {
				t.Fatalf("step %d: %s[%d] = %g, host %g", info.Step, name, i, x, want[i])
			}
		}
	}
	if r.prog.Selection == nil {
		return
	}
	for _, u := range res.Selection.Units {
		switch {
		case u.K == 0:
		case !res.Selection.Selected:
			r.paths.fixed++
		case u.Exact:
			r.paths.exact++
		default:
			r.paths.candidate++
		}
		if u.Fallback {
			r.paths.fallback++
		}
	}
	if g, w := fmt.Sprintf("%v %+v %v", res.Selection.Selected, res.Selection.Units, res.Selection.GroupKept),
		fmt.Sprintf("%v %+v %v", r.host.lastRes.Selected, r.host.lastRes.Units, r.host.lastRes.GroupKept); g != w {
		t.Fatalf("step %d: outcome\n%s\nthe reference's\n%s", info.Step, g, w)
	}
	st, err := r.dev.State()
	if err != nil {
		t.Fatal(err)
	}
	if g, w := fmt.Sprint(st.Selection), fmt.Sprint(r.host.sel); g != w {
		t.Fatalf("step %d: selection state\n%s\nthe reference's\n%s", info.Step, g, w)
	}
}

func adamWOpt() update.Optimizer {
	return update.Optimizer{Name: update.OptimizerAdamW, AdamW: &update.AdamW{LR: 0.02, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}
}

func dstOpts(eps float64, distance, silo string) *dst.Options {
	o := dst.DefaultOptions()
	o.Eps, o.Distance, o.Silo, o.Seed = eps, distance, silo, 5
	return &o
}

// accumulateCases are the step configurations the tolerance harness also
// runs with gradient accumulation.
var accumulateCases = []string{"adamw-full-clip", "adamw-iterative-abs-clip", "sgd-nesterov-no-churn-clip", "adafactor-full-clip"}

// stepCases are the configurations TestStepMatchesHostReference runs.
func stepCases() map[string]stepCase {
	with := func(o *dst.Options, f func(o *dst.Options)) *dst.Options { f(o); return o }
	linear := map[string]dst.Module{"w1": {Kind: "linear.weight"}, "b1": {Kind: "linear.bias"}, "w2": {Kind: "linear.weight"}}
	adafactor := func(beta1 float64, decay float64, scale bool) update.Optimizer {
		return update.Optimizer{Name: update.OptimizerAdafactor, Adafactor: &update.Adafactor{LR: 0.02, Beta1: beta1, Eps1: 1e-30, Eps2: 1e-3,
			ClipThreshold: 1, DecayRate: decay, ScaleParameter: scale}}
	}
	sgd := func(h update.SGD) update.Optimizer {
		h.LR = 0.02
		return update.Optimizer{Name: update.OptimizerSGD, SGD: &h}
	}
	return map[string]stepCase{
		"adamw-full":          {opt: adamWOpt()},
		"adafactor-full":      {opt: adafactor(0, -0.7, false)},
		"adamw-iterative-abs": {opt: adamWOpt(), dst: dstOpts(0.1, dst.DistanceAbs, dst.SiloModuleLayer)},
		"adamw-exact-rel": {opt: adamWOpt(), dst: with(dstOpts(0.05, dst.DistanceRel, dst.SiloModuleLayer),
			func(o *dst.Options) { o.Threshold = dst.ThresholdExact })},
		"adamw-rel-zero-seeds": {opt: adamWOpt(), dst: dstOpts(0.1, dst.DistanceRel, dst.SiloModuleLayer), zeroSeeds: 20},
		"adamw-none-m4": {opt: adamWOpt(), order: []string{"w2", "b1", "w1"}, dst: with(dstOpts(0.07, dst.DistanceInvRel, dst.SiloNone),
			func(o *dst.Options) { o.RefineSteps, o.Factor = 4, 1.5 })},
		"adamw-module-m5": {opt: adamWOpt(), modules: linear, dst: with(dstOpts(0.1, dst.DistanceInvRel, dst.SiloModule),
			func(o *dst.Options) { o.RefineSteps, o.Factor = 5, 3 })},
		"adamw-m1-band-cap": {opt: adamWOpt(), dst: with(dstOpts(0.15, dst.DistanceRel, dst.SiloModuleLayer),
			func(o *dst.Options) { o.RefineSteps, o.Factor, o.BandCap = 1, 4, 4 })},
		"sgd-nesterov-no-churn": {opt: sgd(update.SGD{Momentum: 0.9, Nesterov: true, WeightDecay: 0.001}),
			dst: with(dstOpts(0.2, dst.DistanceInvRel, dst.SiloModuleLayer), func(o *dst.Options) { o.Churn = false })},
		"sgd-exact-abs": {opt: sgd(update.SGD{}), dst: with(dstOpts(0.3, dst.DistanceAbs, dst.SiloModuleLayer),
			func(o *dst.Options) { o.Threshold = dst.ThresholdExact })},
		"adafactor-exact": {opt: adafactor(0.9, -0.8, true),
			dst: with(dstOpts(0.1, dst.DistanceAbs, dst.SiloModuleLayer), func(o *dst.Options) { o.Threshold = dst.ThresholdExact })},
		"adamw-normalize-size": {opt: adamWOpt(), dst: with(dstOpts(0.1, dst.DistanceInvRel, dst.SiloModuleLayer),
			func(o *dst.Options) { o.Normalize = dst.NormalizeSize })},
		"adamw-normalize-mean-module": {opt: adamWOpt(), modules: linear, dst: with(dstOpts(0.1, dst.DistanceAbs, dst.SiloModule),
			func(o *dst.Options) { o.Normalize, o.Threshold = dst.NormalizeMean, dst.ThresholdExact })},
		"adamw-random": {opt: adamWOpt(), dst: with(dstOpts(0.1, dst.DistanceInvRel, dst.SiloModuleLayer),
			func(o *dst.Options) { o.Distance = dst.DistanceRandom })},
		// Zero seeds under inv-rel (Δ stays 0) and ε = 0.5: w1's silo has
		// fewer positive Δ than k and keeps fewer.
		"adamw-inv-rel-zero-seeds": {opt: adamWOpt(), dst: dstOpts(0.5, dst.DistanceInvRel, dst.SiloModuleLayer), zeroSeeds: 80},
		"adamw-exact-inv-rel-zero-seeds": {opt: adamWOpt(), dst: with(dstOpts(0.5, dst.DistanceInvRel, dst.SiloModuleLayer),
			func(o *dst.Options) { o.Threshold = dst.ThresholdExact }), zeroSeeds: 80},
		"adamw-eps-0": {opt: adamWOpt(), dst: dstOpts(0, dst.DistanceAbs, dst.SiloModuleLayer)},
		"adamw-eps-1": {opt: adamWOpt(), dst: dstOpts(1, dst.DistanceAbs, dst.SiloNone)},
		// Gradient clipping: the MLP's gradients have norms of about 1.6
		// to 3.6, so 2.5 clips some steps and not others, 1 every step.
		"adamw-full-clip":          {opt: adamWOpt(), maxGradNorm: 2.5},
		"sgd-momentum-clip":        {opt: sgd(update.SGD{Momentum: 0.9}), maxGradNorm: 1},
		"adafactor-full-clip":      {opt: adafactor(0.9, -0.8, true), maxGradNorm: 2.5},
		"adamw-iterative-abs-clip": {opt: adamWOpt(), dst: dstOpts(0.1, dst.DistanceAbs, dst.SiloModuleLayer), maxGradNorm: 2.5},
		"sgd-nesterov-no-churn-clip": {opt: sgd(update.SGD{Momentum: 0.9, Nesterov: true, WeightDecay: 0.001}),
			dst: with(dstOpts(0.2, dst.DistanceInvRel, dst.SiloModuleLayer), func(o *dst.Options) { o.Churn = false }), maxGradNorm: 1},
	}
}

// TestStepMatchesHostReference runs 12 steps of the lowered training step
// (forward, backward, optimizer, DST) through the Trainer on the
// evaluator, for each optimizer and DST variant, and after every step
// compares with the host reference — the optimizer's formulas and
// package update's reference selection on the same Θ̂ — bit for bit:
// loss, parameters, subset, the selection's outcome and state.
func TestStepMatchesHostReference(t *testing.T) {
	cases := stepCases()
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	var total struct{ candidate, exact, fallback, fixed int }
	for _, name := range names {
		c := cases[name]
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(len(name))))
			tg := mlp(t, rng)
			if c.zeroSeeds > 0 {
				clear(tg.Param("w1").Tensor.Float32s()[:c.zeroSeeds])
			}
			dev := &evalDevice{}
			r := newStepRig(t, dev, tg, c)
			for step := int64(1); step <= 12; step++ {
				r.step(t, update.StepInfo{Step: step, LRScale: float64(step) / 12}, randBatch(rng))
			}
			r.dev.Close()
			if dev.live != 0 {
				t.Errorf("%d device buffers leaked", dev.live)
			}
			t.Logf("silo-steps: %d candidate, %d exact (%d CPU fallbacks), %d fixed", r.paths.candidate, r.paths.exact, r.paths.fallback, r.paths.fixed)
			total.candidate += r.paths.candidate
			total.exact += r.paths.exact
			total.fallback += r.paths.fallback
			total.fixed += r.paths.fixed
		})
	}
	// Every path of the selection ran somewhere.
	if total.candidate == 0 || total.exact == 0 || total.fallback == 0 || total.fixed == 0 {
		t.Errorf("paths not all covered: %+v", total)
	}
}

// TestStepSkipsNonFiniteLoss feeds a batch whose loss is NaN: the step
// must leave parameters, optimizer state and DST state unchanged.
func TestStepSkipsNonFiniteLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	tg := mlp(t, rng)
	r := newStepRig(t, &evalDevice{}, tg, stepCases()["adamw-iterative-abs"])
	for step := int64(1); step <= 3; step++ {
		r.step(t, update.StepInfo{Step: step, LRScale: 0.5}, randBatch(rng))
	}
	before := map[residentKey]*ir.Tensor{}
	for k := range r.dev.resident {
		v, err := r.dev.resident1(k.kind, k.name)
		if err != nil {
			t.Fatal(err)
		}
		before[k] = v
	}
	bad := randBatch(rng)
	bad[0].Float32s()[3] = float32(math.NaN())
	res, err := r.dev.Step(r.tg, bad, update.StepInfo{Step: 4, LRScale: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(float64(res.Loss)) || res.Selection != nil {
		t.Fatalf("loss %g, outcome %v: want NaN and none", res.Loss, res.Selection)
	}
	for k, want := range before {
		got, err := r.dev.resident1(k.kind, k.name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("%q changed in a step with a NaN loss", k.name)
		}
	}
}

// TestExactSelectionMatchesReference evaluates the device selection on
// crafted scores (ties across the k-th value, NaNs, k beyond the non-NaN
// count, k = 0, infinities, denormals, many ties) and compares the
// threshold and the kept entries with update.ExactThreshold.
func TestExactSelectionMatchesReference(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	cases := []struct {
		delta []float32
		k     int64
	}{
		{[]float32{3, 1, 2, 2, 2, 0}, 3},
		{[]float32{2, 2, 2, 2}, 2},
		{[]float32{2, 2, 2, 2}, 4},
		{[]float32{0, 0, 0}, 1},
		{[]float32{nan, 1, nan, 2}, 3},
		{[]float32{nan, 1, nan, 2}, 2},
		{[]float32{nan, nan}, 1},
		{[]float32{5, 4}, 0},
		{[]float32{5, 4}, 7},
		{[]float32{inf, 1, inf, 1}, 3},
		{[]float32{inf, 1, inf, 1}, 1},
		{[]float32{1e-40, 2e-40, 1e-40}, 2},
		{[]float32{1}, 1},
		{[]float32{-1, 0, 1, -2}, 3},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{15, 16, 17, 255, 256, 257, 1000} {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(rng.IntN(7)) / 4 // many ties
		}
		cases = append(cases, struct {
			delta []float32
			k     int64
		}{d, int64(rng.IntN(n + 1))})
	}
	for ci, c := range cases {
		f := newFn("    ")
		n := len(c.delta)
		delta := argValue(0, ir.Type{DType: ir.Float32, Shape: ir.Shape{n}})
		pos := f.iota(ir.Type{DType: ir.Int32, Shape: ir.Shape{n}}, 0)
		q, tieEnd := exactSelection(f, delta, pos, c.k, int64(n))
		shape := ir.Shape{n}
		qb := f.broadcastTo(q, shape)
		keep := f.or(f.compare("GT", delta, qb), f.and(f.compare("EQ", delta, qb), f.compare("LT", pos, f.broadcastTo(f.convert(tieEnd, ir.Int32), shape))))
		if err := f.Err(); err != nil {
			t.Fatal(err)
		}
		text := module([]Arg{{Type: delta.t, AliasOf: -1}}, f, []value{keep, q})
		out, err := runProgram(&Program{Text: text}, []*ir.Tensor{ir.FromFloat32s(ir.Shape{n}, c.delta)})
		if err != nil {
			t.Fatal(err)
		}
		wq, wantEnd := update.ExactThreshold(c.delta, c.k)
		want := make([]bool, n)
		for i, x := range c.delta {
			want[i] = x > wq || (x == wq && int64(i) < wantEnd)
		}
		if got := out[0].Bools(); !slices.Equal(got, want) {
			t.Errorf("case %d (k=%d, %v): kept %v, want %v", ci, c.k, c.delta[:min(n, 12)], got[:min(n, 12)], want[:min(n, 12)])
		}
		if gq := out[1].Float32s()[0]; math.Float32bits(gq) != math.Float32bits(wq) {
			t.Errorf("case %d: Q = %g, the reference's %g", ci, gq, wq)
		}
	}
}

// stepsWithinTolerance runs 12 steps of a step configuration on dev
// against the host reference (the optimizers' formulas and package
// update's reference selection), one step at a time from the same state:
// after every step the reference takes the device's parameters, optimizer
// state and DST state. A device may round differently than the reference (XLA fuses
// multiply-adds, reorders reductions), so losses and parameters are
// compared within tolerances, and a subset may differ where rounding moved
// an entry across the k-th largest Δ (counted and returned); every
// selection must keep exactly k entries.
func stepsWithinTolerance(t *testing.T, dev device, name string, c stepCase) (worst float64, otherSets, otherEntries int) {
	t.Helper()
	return updatesWithinTolerance(t, dev, name, c, false)
}

// updatesWithinTolerance is stepsWithinTolerance; with accumulate, each
// update is Accumulate(b1, 0.25, first), Accumulate(b2, 0.75), Apply
// instead of a Step. Gradient norms must agree within 1e-4 relative.
func updatesWithinTolerance(t *testing.T, dev device, name string, c stepCase, accumulate bool) (worst float64, otherSets, otherEntries int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, uint64(len(name))))
	tg := mlp(t, rng)
	if c.zeroSeeds > 0 {
		clear(tg.Param("w1").Tensor.Float32s()[:c.zeroSeeds])
	}
	r := newStepRig(t, dev, tg, c)
	for step := int64(1); step <= 12; step++ {
		info := update.StepInfo{Step: step, LRScale: float64(step) / 12}
		checkLoss := func(loss float32) {
			if rel := relDiff(float64(loss), float64(r.host.lastLoss)); rel > 1e-4 {
				t.Errorf("%s step %d: loss %g, host %g", name, step, loss, r.host.lastLoss)
			}
		}
		var res *update.Result
		var err error
		if accumulate {
			for i, w := range []float32{0.25, 0.75} {
				batch := randBatch(rng)
				a, err := r.dev.Accumulate(r.tg, batch, w, i == 0)
				if err != nil {
					t.Fatal(err)
				}
				r.host.accumulate(t, batch, w, i == 0)
				checkLoss(a.Loss)
			}
			if res, err = r.dev.Apply(info); err != nil {
				t.Fatal(err)
			}
			r.host.apply(t, info)
		} else {
			batch := randBatch(rng)
			if res, err = r.dev.Step(r.tg, batch, info); err != nil {
				t.Fatal(err)
			}
			r.host.step(t, info, batch)
			checkLoss(res.Loss)
		}
		if rel := relDiff(res.GradNorm, float64(r.host.lastNorm)); rel > 1e-4 {
			t.Errorf("%s step %d: gradient norm %g, host %g", name, step, res.GradNorm, r.host.lastNorm)
		}
		if res.Selection != nil {
			for _, u := range res.Selection.Units {
				if u.Kept != u.K {
					t.Errorf("%s step %d: a selection unit of %d entries keeps %d, want k = %d", name, step, u.Size, u.Kept, u.K)
				}
			}
		}
		var devSel *update.SelectionState
		if r.prog.Selection != nil {
			st, err := r.dev.State()
			if err != nil {
				t.Fatal(err)
			}
			devSel = st.Selection
		}
		for _, prm := range r.order {
			got, err := r.dev.Param(prm)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(r.host.params[prm])
			if devSel != nil {
				mask, hostMask := make([]bool, len(want)), make([]bool, len(want))
				for _, pos := range devSel.Kept[prm] {
					mask[pos] = true
				}
				for _, pos := range r.host.sel.Kept[prm] {
					hostMask[pos] = true
				}
				if !slices.Equal(mask, hostMask) {
					otherSets++
					for i, m := range mask {
						if m != hostMask[i] {
							otherEntries++
							want[i] = got[i] // one side reset it to the seed
						}
					}
				}
			}
			d := ir.Compare(ir.FromFloat32s(tg.Param(prm).Value.Shape, got), ir.FromFloat32s(tg.Param(prm).Value.Shape, want), 1e-3, 1e-5)
			worst = max(worst, d.MaxRel)
			if !d.OK() {
				t.Errorf("%s step %d %s: %v", name, step, prm, d)
			}
		}
		r.resyncHost(t, step)
	}
	r.dev.Close()
	return worst, otherSets, otherEntries
}

func relDiff(a, b float64) float64 {
	return math.Abs(a-b) / max(math.Abs(b), 1e-12)
}

// TestStepsWithinToleranceHarness runs the device test's harness on the
// evaluator, where nothing may differ.
func TestStepsWithinToleranceHarness(t *testing.T) {
	cases := stepCases()
	for _, name := range []string{"adamw-iterative-abs", "adamw-normalize-size", "sgd-nesterov-no-churn", "adamw-random"} {
		worst, otherSets, _ := stepsWithinTolerance(t, &evalDevice{}, name, cases[name])
		if worst != 0 || otherSets != 0 {
			t.Errorf("%s: parameters differ by %g, %d subsets differ", name, worst, otherSets)
		}
	}
	for _, name := range accumulateCases {
		worst, otherSets, _ := updatesWithinTolerance(t, &evalDevice{}, name, cases[name], true)
		if worst != 0 || otherSets != 0 {
			t.Errorf("%s, accumulating: parameters differ by %g, %d subsets differ", name, worst, otherSets)
		}
	}
}

// resyncHost gives the host reference the device's state.
func (r *stepRig) resyncHost(t testing.TB, step int64) {
	t.Helper()
	st, err := r.dev.State()
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range st.Params {
		copy(r.host.params[name], v)
	}
	for name, slots := range st.Optimizer {
		for _, s := range slots {
			copy(r.host.state[name+"/"+s.Name], s.Data)
		}
	}
	if st.Selection != nil {
		r.host.sel = st.Selection
	}
}
