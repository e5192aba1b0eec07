package dst

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
)

// The method is checked against a reference DST written from the
// definition: the same optimizer step on a copy of the parameters, Δ of
// every entry computed in plain Go, the silo's entries sorted by (Δ
// descending, silo position ascending, NaN last), the first k kept and
// the rest reset. Every step, parameters must agree bit for bit, and every
// silo must keep exactly k entries.

// refScore is Δ from the definitions in kernels.Distance's documentation.
func refScore(theta, seed float32, d kernels.Distance) float32 {
	diff := theta - seed
	switch d {
	case kernels.DistanceAbs:
		return float32(math.Abs(float64(diff)))
	case kernels.DistanceRel:
		if diff == 0 {
			return 0
		}
		return float32(math.Abs(float64(diff / seed)))
	}
	return float32(math.Abs(float64(seed * diff)))
}

type testSetup struct {
	shapes   [][]int
	ties     bool // seeds and gradients from tiny sets: Δ ties everywhere
	opt      train.OptimizerConfig
	silo     string
	modules  map[string]Module // for module silos
	opts     Options
	steps    int
	threads  int
	gradSeed uint64
	// zeroEvery: one seed in zeroEvery is 0 (default 50).
	zeroEvery int
}

func makeParams(t *testing.T, s testSetup, opt train.Optimizer) []*train.TrainParam {
	t.Helper()
	rng := rand.New(rand.NewPCG(s.gradSeed, 1))
	var ps []*train.TrainParam
	for i, shape := range s.shapes {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for j := range v {
			if s.ties {
				v[j] = []float32{0.5, -0.5, 1, 0.25}[rng.IntN(4)]
			} else {
				v[j] = float32(rng.NormFloat64() * 0.05)
				if rng.IntN(cmp.Or(s.zeroEvery, 50)) == 0 {
					v[j] = 0 // zero seeds: rel scores +Inf, inv-rel 0
				}
			}
		}
		ps = append(ps, &train.TrainParam{Name: fmt.Sprintf("p%d.weight", i), Shape: shape, Value: v, State: opt.NewState(shape)})
	}
	return ps
}

func cloneParams(ps []*train.TrainParam, opt train.Optimizer) []*train.TrainParam {
	out := make([]*train.TrainParam, len(ps))
	for i, p := range ps {
		out[i] = &train.TrainParam{Name: p.Name, Shape: p.Shape, Value: slices.Clone(p.Value), State: opt.NewState(p.Shape)}
	}
	return out
}

// stepGrads fills every parameter's gradient for one step.
func stepGrads(s testSetup, step int, ps ...[]*train.TrainParam) {
	rng := rand.New(rand.NewPCG(s.gradSeed, uint64(100+step)))
	for i := range ps[0] {
		g := make([]float32, len(ps[0][i].Value))
		for j := range g {
			if s.ties {
				g[j] = []float32{0, 1, -1, 2, 0, 0}[rng.IntN(6)]
			} else {
				g[j] = float32(rng.NormFloat64())
			}
		}
		for _, set := range ps {
			set[i].Grad = g
		}
	}
}

// refSilos are the silos as parameter indices.
func refSilos(t *testing.T, s testSetup, ps []*train.TrainParam) [][]int {
	names := make([]string, len(ps))
	index := map[string]int{}
	for i, p := range ps {
		names[i] = p.Name
		index[p.Name] = i
	}
	silos, err := MakeSilos(s.silo, names, s.modules)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]int
	for _, sl := range silos {
		var idx []int
		for _, n := range sl.Params {
			idx = append(idx, index[n])
		}
		out = append(out, idx)
	}
	return out
}

type refEntry struct {
	score float32
	pos   int64
	param int
	local int
}

// refStep is DST's step from the definition; it returns the kept
// positions per parameter.
func refStep(ps []*train.TrainParam, seeds [][]float32, silos [][]int, opt train.Optimizer, t train.StepInfo, eps float64, d kernels.Distance) [][]int32 {
	for _, p := range ps {
		opt.Step(p.Value, p.Grad, p.State, t, 1)
	}
	kept := make([][]int32, len(ps))
	for _, silo := range silos {
		var entries []refEntry
		var pos int64
		for _, i := range silo {
			for j, v := range ps[i].Value {
				entries = append(entries, refEntry{refScore(v, seeds[i][j], d), pos, i, j})
				pos++
			}
		}
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
		k := SubsetSize(eps, pos)
		for n, e := range entries {
			if int64(n) < k && e.score == e.score {
				kept[e.param] = append(kept[e.param], int32(e.local))
			} else {
				ps[e.param].Value[e.local] = seeds[e.param][e.local]
			}
		}
	}
	for i := range kept {
		slices.Sort(kept[i])
	}
	return kept
}

func sameFloats(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
			return i
		}
	}
	return -1
}

// runAgainstReference trains s.steps steps with the method and the
// reference side by side and checks them after every step.
func runAgainstReference(t *testing.T, s testSetup) *Method {
	t.Helper()
	opt, err := train.NewOptimizer(s.opt)
	if err != nil {
		t.Fatal(err)
	}
	ps := makeParams(t, s, opt)
	ref := cloneParams(ps, opt)
	seeds := make([][]float32, len(ps))
	for i, p := range ps {
		seeds[i] = slices.Clone(p.Value)
	}
	o := s.opts
	o.Silo = s.silo
	m, err := NewMethod(o, s.modules, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Prepare(ps); err != nil {
		t.Fatal(err)
	}
	silos := refSilos(t, s, ps)
	for step := 1; step <= s.steps; step++ {
		stepGrads(s, step, ps, ref)
		info := train.StepInfo{Step: int64(step), LRScale: 1}
		if err := m.Update(ps, opt, info, s.threads); err != nil {
			t.Fatal(err)
		}
		wantKept := refStep(ref, seeds, silos, opt, info, o.Eps, o.Distance)
		for i, p := range ps {
			if j := sameFloats(p.Value, ref[i].Value); j >= 0 {
				t.Fatalf("step %d: %s[%d] = %v, reference %v (seed %v)", step, p.Name, j, p.Value[j], ref[i].Value[j], seeds[i][j])
			}
			if got := m.Kept(p.Name); !slices.Equal(got, wantKept[i]) {
				t.Fatalf("step %d: %s keeps %d positions, reference %d", step, p.Name, len(got), len(wantKept[i]))
			}
		}
		rec := map[string]any{}
		m.Metrics(rec)
		if _, err := json.Marshal(rec); err != nil {
			t.Fatalf("step %d: metrics do not encode: %v", step, err)
		}
		// The invariant itself, directly: per silo exactly k kept, every
		// other entry at its seed.
		for n, silo := range silos {
			var size, kept int64
			for _, i := range silo {
				size += int64(len(ps[i].Value))
				keptSet := m.Kept(ps[i].Name)
				kept += int64(len(keptSet))
				next := 0
				for j, v := range ps[i].Value {
					if next < len(keptSet) && int(keptSet[next]) == j {
						next++
						continue
					}
					if math.Float32bits(v) != math.Float32bits(seeds[i][j]) {
						t.Fatalf("step %d: %s[%d] is not kept but differs from its seed", step, ps[i].Name, j)
					}
				}
			}
			if k := SubsetSize(o.Eps, size); kept != k && !hasNaN(ps, silo) {
				t.Fatalf("step %d: silo %d keeps %d entries, k = %d", step, n, kept, k)
			}
		}
	}
	return m
}

func hasNaN(ps []*train.TrainParam, silo []int) bool {
	for _, i := range silo {
		for _, v := range ps[i].Value {
			if v != v {
				return true
			}
		}
	}
	return false
}

var (
	sgdTies   = train.OptimizerConfig{Name: train.OptimizerSGD, SGD: &train.SGDConfig{LR: 0.125}}
	adamwReal = train.OptimizerConfig{Name: train.OptimizerAdamW, AdamW: &train.AdamWConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}
	sgdMom    = train.OptimizerConfig{Name: train.OptimizerSGD, SGD: &train.SGDConfig{LR: 1e-2, Momentum: 0.9}}
)

func dstOptions(eps float64, d kernels.Distance, exact bool, m int) Options {
	names := map[kernels.Distance]string{kernels.DistanceAbs: DistanceAbs, kernels.DistanceRel: DistanceRel, kernels.DistanceInvRel: DistanceInvRel}
	return Options{Eps: eps, Distance: d, DistanceName: names[d], Exact: exact, Churn: true, Bisection: Bisection{Steps: m, Factor: 2}}
}

// TestCountInvariantEveryStep is the per-silo count invariant at every
// step, in both threshold modes, with ties (tiny value sets), zero seeds
// (+Inf and 0 scores), multi-tensor silos, small band caps (exact
// fallbacks) and m > 3 (more counting passes).
func TestCountInvariantEveryStep(t *testing.T) {
	shapes := [][]int{{40, 30}, {5}, {300}, {2, 3, 50}}
	modules := map[string]Module{"p0.weight": {Kind: "a"}, "p1.weight": {Kind: "b"}, "p2.weight": {Kind: "b"}, "p3.weight": {Kind: "a"}}
	for _, ties := range []bool{true, false} {
		for _, d := range []kernels.Distance{kernels.DistanceAbs, kernels.DistanceRel, kernels.DistanceInvRel} {
			for _, mode := range []struct {
				name    string
				exact   bool
				m       int
				bandCap int64
			}{{"exact", true, 3, 0}, {"iterative", false, 3, 0}, {"iterative-cap8", false, 3, 8}, {"iterative-m1", false, 1, 0}, {"iterative-m5", false, 5, 0}} {
				for _, silo := range []string{SiloModuleLayer, SiloNone, SiloModule} {
					name := fmt.Sprintf("ties=%v/%v/%s/%s", ties, d, mode.name, silo)
					t.Run(name, func(t *testing.T) {
						s := testSetup{shapes: shapes, ties: ties, opt: adamwReal, silo: silo, modules: modules, steps: 25, threads: 2, gradSeed: 7}
						if ties {
							s.opt = sgdTies
						}
						s.opts = dstOptions(0.1, d, mode.exact, mode.m)
						s.opts.BandCap = mode.bandCap
						m := runAgainstReference(t, s)
						if !mode.exact && m.paths.band+m.paths.candidate+m.paths.fallback == 0 {
							t.Errorf("Algorithm 2 never ran (paths %+v)", m.paths)
						}
					})
				}
			}
		}
	}
}

// TestCountInvariantEdgeCases: ε = 0 (everything back to the seed), ε = 1,
// Adafactor, and rel distance with a third of the seeds 0 (the k-th largest
// Δ is +Inf, so Algorithm 2 cannot start from it).
func TestCountInvariantEdgeCases(t *testing.T) {
	adafactor, _ := train.DefaultOptimizer(train.OptimizerAdafactor)
	for _, c := range []struct {
		name string
		eps  float64
		d    kernels.Distance
		opt  train.OptimizerConfig
		zero int // one seed in zero is 0
	}{
		{"eps=0", 0, kernels.DistanceAbs, adamwReal, 50},
		{"eps=1", 1, kernels.DistanceInvRel, adamwReal, 50},
		{"adafactor", 0.05, kernels.DistanceInvRel, adafactor, 50},
		{"rel-zero-seeds", 0.1, kernels.DistanceRel, adamwReal, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, exact := range []bool{false, true} {
				s := testSetup{shapes: [][]int{{40, 30}, {7}}, opt: c.opt, silo: SiloModuleLayer, steps: 12, threads: 2, gradSeed: 31, zeroEvery: c.zero}
				s.opts = dstOptions(c.eps, c.d, exact, 3)
				runAgainstReference(t, s)
			}
		})
	}
}

// TestIterativePathsExercised checks that the invariant test's scenarios
// reach every way the iterative mode can make the count exact.
func TestIterativePathsExercised(t *testing.T) {
	var total struct{ exact, candidate, band, fallback int }
	for _, ties := range []bool{true, false} {
		for _, cap := range []int64{0, 8} {
			s := testSetup{shapes: [][]int{{40, 30}, {5}, {300}}, ties: ties, opt: adamwReal, silo: SiloModuleLayer, steps: 25, threads: 1, gradSeed: 7}
			if ties {
				s.opt = sgdTies
			}
			s.opts = dstOptions(0.1, kernels.DistanceAbs, false, 3)
			s.opts.BandCap = cap
			m := runAgainstReference(t, s)
			total.exact += m.paths.exact
			total.candidate += m.paths.candidate
			total.band += m.paths.band
			total.fallback += m.paths.fallback
		}
	}
	if total.exact == 0 || total.candidate == 0 || total.band == 0 || total.fallback == 0 {
		t.Fatalf("paths taken %+v: each should be taken at least once", total)
	}
}

// TestLargeSilo runs a tensor big enough for several workers per pass.
func TestLargeSilo(t *testing.T) {
	for _, exact := range []bool{false, true} {
		s := testSetup{shapes: [][]int{{700, 200}, {64}}, opt: adamwReal, silo: SiloModuleLayer, steps: 6, threads: 2, gradSeed: 11}
		s.opts = dstOptions(1e-3, kernels.DistanceInvRel, exact, 3)
		runAgainstReference(t, s)
	}
}

// TestIterativeEqualsExact: both threshold modes keep the same subsets, so
// whole runs are bit-identical.
func TestIterativeEqualsExact(t *testing.T) {
	run := func(exact bool) [][]float32 {
		opt, _ := train.NewOptimizer(adamwReal)
		s := testSetup{shapes: [][]int{{120, 40}, {33}}, opt: adamwReal, silo: SiloNone, gradSeed: 3}
		ps := makeParams(t, s, opt)
		o := dstOptions(0.02, kernels.DistanceInvRel, exact, 3)
		o.Silo = SiloNone
		m, err := NewMethod(o, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Prepare(ps); err != nil {
			t.Fatal(err)
		}
		for step := 1; step <= 40; step++ {
			stepGrads(s, step, ps)
			m.Update(ps, opt, train.StepInfo{Step: int64(step), LRScale: 1}, 2)
		}
		var out [][]float32
		for _, p := range ps {
			out = append(out, p.Value)
		}
		return out
	}
	a, b := run(false), run(true)
	for i := range a {
		if j := sameFloats(a[i], b[i]); j >= 0 {
			t.Fatalf("parameter %d entry %d: iterative %v, exact %v", i, j, a[i][j], b[i][j])
		}
	}
}
