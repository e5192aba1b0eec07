package dst

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// The method's tests run it on the CPU backend's trainer with a graph
// whose gradients are its inputs, so that a test decides every step's
// gradient (and so Θ̂) itself.

type testSetup struct {
	shapes   [][]int
	ties     bool // seeds and gradients from tiny sets: Δ ties everywhere
	opt      update.Optimizer
	modules  map[string]Module // for module silos
	opts     Options
	threads  int
	gradSeed uint64
}

var (
	adamwReal = update.Optimizer{Name: update.OptimizerAdamW, AdamW: &update.AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}
	sgdMom    = update.Optimizer{Name: update.OptimizerSGD, SGD: &update.SGD{LR: 1e-2, Momentum: 0.9}}
)

func dstOptions(eps float64, distance string, exact bool, m int) Options {
	o := DefaultOptions()
	o.Eps, o.Distance, o.RefineSteps = eps, distance, m
	if exact {
		o.Threshold = ThresholdExact
	}
	return o
}

// rig is a method on a CPU trainer.
type rig struct {
	s      testSetup
	m      *Method
	params []*ir.Param
	seeds  map[string][]float32
	tr     accel.Trainer
	graph  *ir.Graph
	res    *update.Result
	step   int64
}

// makeParams draws the setup's parameters.
func makeParams(s testSetup) []*ir.Param {
	rng := rand.New(rand.NewPCG(s.gradSeed, 1))
	var ps []*ir.Param
	for i, shape := range s.shapes {
		v := make([]float32, update.NumElements(shape))
		for j := range v {
			if s.ties {
				v[j] = []float32{0.5, -0.5, 1, 0.25}[rng.IntN(4)]
			} else {
				v[j] = float32(rng.NormFloat64() * 0.05)
				if rng.IntN(50) == 0 {
					v[j] = 0 // zero seeds: rel scores +Inf, inv-rel 0
				}
			}
		}
		ps = append(ps, &ir.Param{Name: fmt.Sprintf("p%d.weight", i), Tensor: ir.FromFloat32s(ir.Shape(shape), v)})
	}
	return ps
}

// gradGraph is a training graph whose gradients are its inputs "g:NAME"
// (and whose loss is 0).
func gradGraph(t testing.TB, ps []*ir.Param) *ir.Graph {
	t.Helper()
	b := ir.NewBuilder("grads")
	b.Output(ir.LossOutput, b.Const(ir.ScalarFloat32(0)))
	one := b.Const(ir.ScalarFloat32(1))
	for _, p := range ps {
		g := b.Input("g:"+p.Name, ir.Float32, p.Tensor.Shape())
		b.Output(ir.GradPrefix+p.Name, b.Op1(&ir.Binary{Fn: ir.Mul}, g, one))
	}
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// newRig prepares s's method on fresh parameters.
func newRig(t testing.TB, s testSetup) *rig {
	t.Helper()
	o := s.opts
	m, err := NewMethod(o, s.modules, "")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{s: s, m: m, params: makeParams(s), seeds: map[string][]float32{}}
	for _, p := range r.params {
		r.seeds[p.Name] = slices.Clone(p.Tensor.Float32s())
	}
	sel, init, err := m.Prepare(r.params)
	if err != nil {
		t.Fatal(err)
	}
	if r.tr, err = cpu.New().NewTrainer(r.params, &update.Program{Optimizer: s.opt, Selection: sel}, accel.Options{Threads: s.threads}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.tr.Close() })
	if init != nil {
		if err := r.tr.SetState(&update.State{Selection: init}); err != nil {
			t.Fatal(err)
		}
	}
	r.graph = gradGraph(t, r.params)
	return r
}

// grads are step's gradients, the same for every rig of a setup.
func (s testSetup) grads(step int64) []*ir.Tensor {
	rng := rand.New(rand.NewPCG(s.gradSeed, uint64(100+step)))
	var out []*ir.Tensor
	for _, shape := range s.shapes {
		g := make([]float32, update.NumElements(shape))
		for j := range g {
			if s.ties {
				g[j] = []float32{0, 1, -1, 2, 0, 0}[rng.IntN(6)]
			} else {
				g[j] = float32(rng.NormFloat64())
			}
		}
		out = append(out, ir.FromFloat32s(ir.Shape(shape), g))
	}
	return out
}

// steps takes the steps from…to.
func (r *rig) steps(t testing.TB, from, to int64) {
	t.Helper()
	for step := from; step <= to; step++ {
		res, err := r.tr.Step(r.graph, r.s.grads(step), update.StepInfo{Step: step, LRScale: 1})
		if err != nil {
			t.Fatal(err)
		}
		r.res, r.step = res, step
	}
}

func (r *rig) state(t testing.TB) *update.State {
	t.Helper()
	st, err := r.tr.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (r *rig) kept(t testing.TB, name string) []int32 { return r.state(t).Selection.Kept[name] }

func (r *rig) metrics() *StepMetrics {
	m, _ := r.m.Metrics(r.step, r.res).(*StepMetrics)
	return m
}

func (r *rig) engineState(t testing.TB) *train.EngineState {
	st := r.state(t)
	return &train.EngineState{Step: r.step, Params: st.Params, Optimizer: st.Optimizer, Selection: st.Selection,
		Method: r.m.State(st.Selection, r.step)}
}

// plainRig trains the same parameters with the optimizer alone: the Θ̂ a
// DST step starts from, when the test resets entries itself.
func plainRig(t testing.TB, s testSetup) (accel.Trainer, []*ir.Param, *ir.Graph) {
	t.Helper()
	ps := makeParams(s)
	tr, err := cpu.New().NewTrainer(ps, &update.Program{Optimizer: s.opt}, accel.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, ps, gradGraph(t, ps)
}

type refEntry struct {
	score float32
	pos   int64
	param int
	local int
}

// sortEntries orders entries by score descending (NaN last), then
// position.
func sortEntries(entries []refEntry) {
	slices.SortFunc(entries, func(a, b refEntry) int {
		an, bn := a.score != a.score, b.score != b.score
		switch {
		case an != bn:
			if an {
				return 1
			}
			return -1
		case !an && a.score != b.score:
			return cmp.Compare(b.score, a.score)
		}
		return cmp.Compare(a.pos, b.pos)
	})
}
