package tpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
)

// evalTrainer runs a step program with the reference evaluator, keeping
// resident state the way the PJRT Trainer does (donated arguments are
// replaced by their aliased results), so the tests also cover the
// program's argument and aliasing layout.
type evalTrainer struct {
	prog     *Program
	cfg      TrainConfig
	resident map[residentKey]*ir.Tensor
}

func newEvalTrainer(t testing.TB, tg *ir.Graph, cfg TrainConfig) *evalTrainer {
	t.Helper()
	p, err := LowerTrainStep(tg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &evalTrainer{prog: p, cfg: cfg, resident: map[residentKey]*ir.Tensor{}}
	for _, a := range p.Args {
		switch a.Kind {
		case ArgParam, ArgSeed:
			e.resident[residentKey{a.Kind, a.Name}] = tg.Param(a.Name).Tensor.Clone()
		case ArgState:
			e.resident[residentKey{a.Kind, a.Name}] = ir.NewTensor(a.Type.DType, a.Type.Shape)
		}
	}
	return e
}

func (e *evalTrainer) step(t testing.TB, step int64, lr float64, inputs []*ir.Tensor) map[string]*ir.Tensor {
	t.Helper()
	scalars, err := e.cfg.Optimizer.StepScalars(step, lr)
	if err != nil {
		t.Fatal(err)
	}
	var args []*ir.Tensor
	in := 0
	for _, a := range e.prog.Args {
		switch a.Kind {
		case ArgInput:
			args = append(args, inputs[in])
			in++
		case ArgStepScalars:
			args = append(args, ir.FromFloat32s(ir.Shape{len(scalars)}, scalars))
		default:
			args = append(args, e.resident[residentKey{a.Kind, a.Name}])
		}
	}
	out, err := runProgram(e.prog, args)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range e.prog.Args {
		if a.AliasOf >= 0 {
			e.resident[residentKey{a.Kind, a.Name}] = out[a.AliasOf]
		}
	}
	res := map[string]*ir.Tensor{}
	for i, r := range e.prog.Results {
		res[r.Name] = out[i]
	}
	return res
}

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
// (the same ops the step program emits, so bit for bit the same), then
// the optimizers' documented per-entry formulas in float32 with every
// operation rounded separately, Algorithm 2 from package dst, and exact
// selection by a stable sort (every score above the k-th largest, ties at
// it from the lowest silo position).
type hostTrainer struct {
	// gradFn computes the loss and gradients for the current parameters
	// (nil: evaluate the lowered training graph).
	gradFn  func(params map[string][]float32, inputs []*ir.Tensor) (float32, map[string][]float32)
	tg      *ir.Graph
	gradsP  *Program
	cfg     TrainConfig
	params  map[string][]float32
	seeds   map[string][]float32
	state   map[string][]float32
	masks   map[string][]bool
	q       []float32
	ready   []bool
	lastRes StepResult
}

func newHostTrainer(t testing.TB, tg *ir.Graph, cfg TrainConfig) *hostTrainer {
	p, err := LowerGraph(tg)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostTrainer{tg: tg, gradsP: p, cfg: cfg, params: map[string][]float32{}, seeds: map[string][]float32{},
		state: map[string][]float32{}, masks: map[string][]bool{}}
	for _, prm := range tg.Params {
		h.params[prm.Name] = append([]float32(nil), prm.Tensor.Float32s()...)
		h.seeds[prm.Name] = append([]float32(nil), prm.Tensor.Float32s()...)
		h.masks[prm.Name] = make([]bool, prm.Tensor.Len())
		for _, st := range optimizerState(cfg.Optimizer, prm.Value.Shape) {
			h.state[prm.Name+"/"+st.name] = make([]float32, st.shape.Size())
		}
	}
	if cfg.DST != nil {
		h.q = make([]float32, len(cfg.DST.Silos))
		h.ready = make([]bool, len(cfg.DST.Silos))
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
	o := h.cfg.Optimizer
	out := make([]float32, len(p))
	switch o.Kind {
	case AdamW:
		m, v := h.state[name+"/exp_avg"], h.state[name+"/exp_avg_sq"]
		for i := range p {
			pd := f32(p[i] * s[scDecay])
			mi := f32(f32(g[i]*s[scOneMinusBeta1]) + f32(m[i]*s[scBeta1]))
			vi := f32(f32(f32(s[scOneMinusBeta2]*g[i])*g[i]) + f32(v[i]*s[scBeta2]))
			den := f32(f32(sqrt32(vi)/s[scBiasCorrection2Sqrt]) + s[scEps])
			out[i] = f32(pd + f32(f32(s[scNegStepSize]*mi)/den))
			m[i], v[i] = mi, vi
		}
	case SGD:
		buf := h.state[name+"/momentum_buffer"]
		for i := range p {
			d := g[i]
			if o.WeightDecay != 0 {
				d = f32(f32(p[i]*s[scWeightDecay]) + d)
			}
			if o.Momentum != 0 {
				if s[scFirstStep] != 0 {
					buf[i] = d
				} else {
					buf[i] = f32(f32(d*s[scOneMinusDampening]) + f32(buf[i]*s[scMomentum]))
				}
				if o.Nesterov {
					d = f32(f32(buf[i]*s[scMomentum]) + d)
				} else {
					d = buf[i]
				}
			}
			out[i] = f32(f32(d*-s[scLR]) + p[i])
		}
	case Adafactor:
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
		if o.ScaleParameter {
			alpha = f32(alpha * max(s[scEps2], rmsX))
		}
		scale := f32(alpha / max(1, f32(rmsU/s[scClip])))
		m := h.state[name+"/exp_avg"]
		for i := range p {
			ui := f32(u[i] * scale)
			if o.Beta1 != 0 {
				m[i] = f32(f32(ui*s[scAFOneMinusBeta1]) + f32(m[i]*s[scAFBeta1]))
				ui = m[i]
			}
			out[i] = f32(p[i] - ui)
		}
	}
	return out
}

func hostScore(d Distance, theta, seed float32) float32 {
	diff := f32(theta - seed)
	switch d {
	case DistanceRel:
		if diff == 0 {
			return 0
		}
		return float32(math.Abs(float64(f32(diff / seed))))
	case DistanceInvRel:
		return float32(math.Abs(float64(f32(seed * diff))))
	}
	return float32(math.Abs(float64(diff)))
}

// exactKeep keeps the k largest scores, ties from the lowest position,
// never NaN; it returns the mask and Q (+Inf when nothing is kept).
func exactKeep(delta []float32, k int64) ([]bool, float32) {
	order := make([]int, len(delta))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		x, y := delta[order[a]], delta[order[b]]
		if x != x {
			return false
		}
		return y != y || x > y
	})
	keep := make([]bool, len(delta))
	q := float32(math.Inf(1))
	for i, pos := range order {
		if int64(i) >= k || delta[pos] != delta[pos] {
			break
		}
		keep[pos] = true
		q = delta[pos]
	}
	return keep, q
}

func (h *hostTrainer) step(t testing.TB, step int64, lr float64, inputs []*ir.Tensor) {
	loss, grads := h.grads(t, inputs)
	s, err := h.cfg.Optimizer.StepScalars(step, lr)
	if err != nil {
		t.Fatal(err)
	}
	updated := map[string][]float32{}
	for _, prm := range h.tg.Params {
		if g, ok := grads[prm.Name]; ok {
			updated[prm.Name] = h.optimizer(prm.Name, h.params[prm.Name], g, prm.Value.Shape, s)
		}
	}
	res := StepResult{Loss: loss}
	if d := h.cfg.DST; d != nil {
		for si, silo := range d.Silos {
			var delta []float32
			var prev []bool
			for _, name := range silo {
				for i, x := range updated[name] {
					delta = append(delta, hostScore(d.Distance, x, h.seeds[name][i]))
				}
				prev = append(prev, h.masks[name]...)
			}
			k := dst.SubsetSize(d.Eps, int64(len(delta)))
			var keep []bool
			var q float32
			needExact := !h.ready[si] || (d.Exact && !d.FixedSubset)
			if !needExact && !d.FixedSubset && !d.Exact {
				cands := d.Bisection.Candidates(h.q[si], nil)
				counts := make([]int64, len(cands))
				for j, c := range cands {
					for _, x := range delta {
						if x > c {
							counts[j]++
						}
					}
				}
				r := d.Bisection.Resolve(cands, counts, k)
				needExact = r.BracketMissed
				q = r.Q
				keep = make([]bool, len(delta))
				for i, x := range delta {
					keep[i] = x > q
				}
			}
			if !needExact && d.FixedSubset {
				keep, q = prev, h.q[si]
			}
			if needExact {
				keep, q = exactKeep(delta, k)
			}
			st := SiloStep{Size: int64(len(delta)), Threshold: q, Exact: needExact}
			for i, kp := range keep {
				if kp {
					st.Kept++
					if !prev[i] {
						st.Changed++
					}
				}
			}
			off := 0
			for _, name := range silo {
				for i := range updated[name] {
					h.masks[name][i] = keep[off+i]
					if !keep[off+i] {
						updated[name][i] = h.seeds[name][i]
					}
				}
				off += len(updated[name])
			}
			h.q[si], h.ready[si] = q, true
			res.Silos = append(res.Silos, st)
		}
	}
	for name, v := range updated {
		h.params[name] = v
	}
	h.lastRes = res
}

func allSilos(tg *ir.Graph) [][]string {
	var s [][]string
	for _, p := range tg.Params {
		s = append(s, []string{p.Name})
	}
	return s
}

// TestStepMatchesHostReference runs 8 steps of the lowered training step
// (forward, backward, optimizer, DST) for each optimizer and DST variant
// and compares parameters, subset masks, thresholds, loss and per-silo
// metrics with the host reference after every step.
func TestStepMatchesHostReference(t *testing.T) {
	adamw := Optimizer{Kind: AdamW, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	configs := map[string]TrainConfig{
		"adamw-full":             {Optimizer: adamw},
		"adamw-dst-iterative":    {Optimizer: adamw, DST: &DST{Eps: 0.1, Distance: DistanceAbs, Bisection: dst.DefaultBisection}},
		"adamw-dst-exact-rel":    {Optimizer: adamw, DST: &DST{Eps: 0.05, Distance: DistanceRel, Exact: true}},
		"adamw-dst-one-silo":     {Optimizer: adamw, DST: &DST{Eps: 0.07, Distance: DistanceInvRel, Bisection: dst.Bisection{Steps: 4, Factor: 1.5}}},
		"sgd-dst-fixed-subset":   {Optimizer: Optimizer{Kind: SGD, Momentum: 0.9, Dampening: 0.1, Nesterov: true, WeightDecay: 0.001}, DST: &DST{Eps: 0.2, Distance: DistanceInvRel, FixedSubset: true, Bisection: dst.DefaultBisection}},
		"sgd-plain-dst-exact":    {Optimizer: Optimizer{Kind: SGD}, DST: &DST{Eps: 0.3, Distance: DistanceAbs, Exact: true}},
		"adafactor-dst-exact":    {Optimizer: Optimizer{Kind: Adafactor, Beta1: 0.9, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, RelativeStep: true, ScaleParameter: true}, DST: &DST{Eps: 0.1, Distance: DistanceAbs, Exact: true}},
		"adafactor-no-momentum":  {Optimizer: Optimizer{Kind: Adafactor, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, DecayRate: -0.7}},
		"adamw-dst-iterative-m1": {Optimizer: adamw, DST: &DST{Eps: 0.15, Distance: DistanceRel, Bisection: dst.Bisection{Steps: 1, Factor: 4}}},
	}
	names := make([]string, 0, len(configs))
	for n := range configs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		cfg := configs[name]
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(len(name))))
			tg := mlp(t, rng)
			if cfg.DST != nil {
				cfg.DST.Silos = allSilos(tg)
				if name == "adamw-dst-one-silo" {
					cfg.DST.Silos = [][]string{{"w2", "b1", "w1"}}
				}
			}
			dev := newEvalTrainer(t, tg, cfg)
			host := newHostTrainer(t, tg, cfg)
			exactSteps, iterSteps := 0, 0
			for step := int64(1); step <= 8; step++ {
				batch := randBatch(rng)
				lr := 0.01 * float64(step) / 8
				out := dev.step(t, step, lr, batch)
				host.step(t, step, lr, batch)
				if got, want := out[ResultLoss].Float32s()[0], host.lastRes.Loss; got != want {
					t.Fatalf("step %d: loss %g, host %g", step, got, want)
				}
				for _, prm := range tg.Params {
					got := dev.resident[residentKey{ArgParam, prm.Name}].Float32s()
					want := host.params[prm.Name]
					for i := range want {
						if got[i] != want[i] {
							t.Fatalf("step %d: %s[%d] = %g, host %g", step, prm.Name, i, got[i], want[i])
						}
					}
					if cfg.DST != nil {
						mask := dev.resident[residentKey{ArgState, prm.Name + "/mask"}].Bools()
						for i, m := range host.masks[prm.Name] {
							if mask[i] != m {
								t.Fatalf("step %d: %s mask[%d] = %v, host %v", step, prm.Name, i, mask[i], m)
							}
						}
					}
				}
				if cfg.DST == nil {
					continue
				}
				kept, changed := out[ResultKept].Int64s(), out[ResultChanged].Int64s()
				q, exact := out[ResultThreshold].Float32s(), out[ResultExact].Bools()
				for si, want := range host.lastRes.Silos {
					got := SiloStep{Size: want.Size, Kept: kept[si], Changed: changed[si], Threshold: q[si], Exact: exact[si]}
					if got != want {
						t.Fatalf("step %d silo %d: %+v, host %+v", step, si, got, want)
					}
					if want.Exact {
						exactSteps++
						if k := dst.SubsetSize(cfg.DST.Eps, want.Size); want.Kept != k {
							t.Fatalf("step %d silo %d: an exact step kept %d, want k = %d", step, si, want.Kept, k)
						}
					} else {
						iterSteps++
					}
				}
			}
			if d := cfg.DST; d != nil && !d.Exact && !d.FixedSubset && iterSteps == 0 {
				t.Errorf("Algorithm 2 never ran without a fallback (%d exact silo-steps)", exactSteps)
			}
			t.Logf("%d exact and %d iterative silo-steps", exactSteps, iterSteps)
		})
	}
}

// TestExactThresholdTieRule evaluates the device selection on crafted
// scores (ties across the k-th value, NaNs, k beyond the non-NaN count,
// k = 0, infinities, lengths across the 4-bit position rounds) and checks
// the kept mask against the stable-sort reference.
func TestExactThresholdTieRule(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	cases := []struct {
		delta []float32
		k     int64
	}{
		{[]float32{3, 1, 2, 2, 2, 0}, 3},
		{[]float32{2, 2, 2, 2}, 2},
		{[]float32{0, 0, 0}, 1},
		{[]float32{nan, 1, nan, 2}, 3},
		{[]float32{nan, nan}, 1},
		{[]float32{5, 4}, 0},
		{[]float32{inf, 1, inf, 1}, 3},
		{[]float32{1e-40, 2e-40, 1e-40}, 2},
		{[]float32{1}, 1},
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
		pos := f.iota(ir.Type{DType: ir.Int64, Shape: ir.Shape{n}}, 0)
		q, tieEnd := exactThreshold(f, delta, pos, c.k)
		keep := f.or(f.compare("GT", delta, f.broadcastTo(q, ir.Shape{n})),
			f.and(f.compare("EQ", delta, f.broadcastTo(q, ir.Shape{n})), f.compare("LT", pos, f.broadcastTo(tieEnd, ir.Shape{n}))))
		if err := f.Err(); err != nil {
			t.Fatal(err)
		}
		text := module([]Arg{{Type: delta.t, AliasOf: -1}}, f, []value{keep, q})
		out, err := runProgram(&Program{Text: text}, []*ir.Tensor{ir.FromFloat32s(ir.Shape{n}, c.delta)})
		if err != nil {
			t.Fatal(err)
		}
		want, wantQ := exactKeep(c.delta, c.k)
		got := out[0].Bools()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("case %d (k=%d, %v): kept %v, want %v", ci, c.k, c.delta[:min(n, 12)], got[:min(n, 12)], want[:min(n, 12)])
		}
		if gq := out[1].Float32s()[0]; gq != wantQ && !(gq != gq && wantQ != wantQ) {
			t.Errorf("case %d: Q = %g, want %g", ci, gq, wantQ)
		}
	}
}
