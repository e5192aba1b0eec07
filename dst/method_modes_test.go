package dst

import (
	"bytes"
	"cmp"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
)

// newTestMethod prepares a method on fresh parameters of s.
func newTestMethod(t *testing.T, s testSetup) (*Method, []*train.TrainParam, train.Optimizer) {
	t.Helper()
	opt, err := train.NewOptimizer(s.opt)
	if err != nil {
		t.Fatal(err)
	}
	ps := makeParams(t, s, opt)
	o := s.opts
	o.Silo = s.silo
	m, err := NewMethod(o, s.modules, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Prepare(ps); err != nil {
		t.Fatal(err)
	}
	return m, ps, opt
}

func steps(t *testing.T, m *Method, ps []*train.TrainParam, opt train.Optimizer, s testSetup, from, to int) {
	t.Helper()
	for step := from; step <= to; step++ {
		stepGrads(s, step, ps)
		if err := m.Update(ps, opt, train.StepInfo{Step: int64(step), LRScale: 1}, s.threads); err != nil {
			t.Fatal(err)
		}
	}
}

func seedsOf(ps []*train.TrainParam) [][]float32 {
	out := make([][]float32, len(ps))
	for i, p := range ps {
		out[i] = slices.Clone(p.Value)
	}
	return out
}

// TestNormalizedSelection checks Appendix B's normalization against the
// definition: one global selection of SubsetSize(ε, n) entries by
// fl32(Δ · fl32(1/c_S)), ties at the lowest global positions.
func TestNormalizedSelection(t *testing.T) {
	for _, norm := range []string{NormalizeSize, NormalizeMean} {
		for _, exact := range []bool{false, true} {
			s := testSetup{shapes: [][]int{{50, 20}, {40}, {7, 9}}, opt: adamwReal, silo: SiloModuleLayer, threads: 2, gradSeed: 5}
			s.opts = dstOptions(0.05, kernels.DistanceAbs, exact, 3)
			s.opts.Normalize = norm
			m, ps, opt := newTestMethod(t, s)
			seeds := seedsOf(ps)
			ref := cloneParams(ps, opt)
			scales := make([]float32, len(ps))
			var total, absSum float64
			for i, seed := range seeds {
				var sum float64
				for _, x := range seed {
					sum += math.Abs(float64(x))
				}
				c := float64(len(seed))
				if norm == NormalizeMean {
					c = sum / float64(len(seed))
				}
				scales[i] = float32(1 / c)
				total += float64(len(seed))
				absSum += sum
			}
			var n int64
			for _, p := range ps {
				n += int64(len(p.Value))
			}
			k := SubsetSize(0.05, n)
			for step := 1; step <= 12; step++ {
				stepGrads(s, step, ps, ref)
				info := train.StepInfo{Step: int64(step), LRScale: 1}
				m.Update(ps, opt, info, 2)
				var entries []refEntry
				var pos int64
				for i, p := range ref {
					opt.Step(p.Value, p.Grad, p.State, info, 1)
					for j, v := range p.Value {
						entries = append(entries, refEntry{refScore(v, seeds[i][j], kernels.DistanceAbs) * scales[i], pos, i, j})
						pos++
					}
				}
				slices.SortFunc(entries, func(a, b refEntry) int {
					if a.score != b.score {
						return cmp.Compare(b.score, a.score)
					}
					return cmp.Compare(a.pos, b.pos)
				})
				for _, e := range entries[k:] {
					ref[e.param].Value[e.local] = seeds[e.param][e.local]
				}
				var kept int64
				for i, p := range ps {
					if j := sameFloats(p.Value, ref[i].Value); j >= 0 {
						t.Fatalf("%s exact=%v step %d: %s[%d] = %v, reference %v", norm, exact, step, p.Name, j, p.Value[j], ref[i].Value[j])
					}
					kept += int64(len(m.Kept(p.Name)))
				}
				if kept != k {
					t.Fatalf("%s step %d: kept %d, k = %d", norm, step, kept, k)
				}
			}
			rec := map[string]any{}
			m.Metrics(rec)
			if _, ok := rec["eps_alg2"]; ok == exact {
				t.Errorf("%s exact=%v: eps_alg2 reported: %v", norm, exact, ok)
			}
		}
	}
}

// TestRandomMask: a random mask keeps exactly k per silo, never changes,
// depends on the seed, and everything outside it stays at the seed.
func TestRandomMask(t *testing.T) {
	s := testSetup{shapes: [][]int{{60, 30}, {25}}, opt: adamwReal, silo: SiloModuleLayer, threads: 1, gradSeed: 9}
	s.opts = Options{Eps: 0.1, Random: true, DistanceName: DistanceRandom, Churn: true, Bisection: DefaultBisection, Seed: 42}
	m, ps, opt := newTestMethod(t, s)
	seeds := seedsOf(ps)
	first := map[string][]int32{}
	for _, p := range ps {
		first[p.Name] = slices.Clone(m.Kept(p.Name))
		if int64(len(first[p.Name])) != SubsetSize(0.1, int64(len(p.Value))) {
			t.Fatalf("%s: %d kept, want %d", p.Name, len(first[p.Name]), SubsetSize(0.1, int64(len(p.Value))))
		}
	}
	steps(t, m, ps, opt, s, 1, 5)
	for i, p := range ps {
		kept := m.Kept(p.Name)
		if !slices.Equal(kept, first[p.Name]) {
			t.Fatalf("%s: the random mask changed", p.Name)
		}
		changed := 0
		for j := range p.Value {
			if _, in := slices.BinarySearch(kept, int32(j)); !in && p.Value[j] != seeds[i][j] {
				t.Fatalf("%s[%d] outside the mask moved", p.Name, j)
			} else if in && p.Value[j] != seeds[i][j] {
				changed++
			}
		}
		if changed == 0 {
			t.Fatalf("%s: nothing in the mask was trained", p.Name)
		}
	}
	s.opts.Seed = 43
	other, _, _ := newTestMethod(t, s)
	if slices.Equal(other.Kept("p0.weight"), first["p0.weight"]) {
		t.Fatal("seeds 42 and 43 chose the same mask")
	}
	s.opts.Seed = 42
	same, _, _ := newTestMethod(t, s)
	if !slices.Equal(same.Kept("p0.weight"), first["p0.weight"]) {
		t.Fatal("the same seed chose another mask")
	}
}

// TestNoChurn: with churn off the subset of the first step stays, and
// the parameters equal a run of the reference that masks with it.
func TestNoChurn(t *testing.T) {
	s := testSetup{shapes: [][]int{{60, 30}, {25}}, opt: adamwReal, silo: SiloNone, threads: 1, gradSeed: 13}
	s.opts = dstOptions(0.05, kernels.DistanceInvRel, false, 3)
	s.opts.Churn = false
	m, ps, opt := newTestMethod(t, s)
	seeds := seedsOf(ps)
	ref := cloneParams(ps, opt)
	steps(t, m, ps, opt, s, 1, 1)
	first := map[string][]int32{}
	for _, p := range ps {
		first[p.Name] = slices.Clone(m.Kept(p.Name))
	}
	stepGrads(s, 1, ref)
	refStep(ref, seeds, [][]int{{0, 1}}, opt, train.StepInfo{Step: 1, LRScale: 1}, 0.05, kernels.DistanceInvRel)
	for step := 2; step <= 8; step++ {
		steps(t, m, ps, opt, s, step, step)
		stepGrads(s, step, ref)
		for i, p := range ref {
			opt.Step(p.Value, p.Grad, p.State, train.StepInfo{Step: int64(step), LRScale: 1}, 1)
			for j := range p.Value {
				if _, in := slices.BinarySearch(first[p.Name], int32(j)); !in {
					p.Value[j] = seeds[i][j]
				}
			}
		}
		for i, p := range ps {
			if !slices.Equal(m.Kept(p.Name), first[p.Name]) {
				t.Fatalf("step %d: %s's subset changed with churn off", step, p.Name)
			}
			if j := sameFloats(p.Value, ref[i].Value); j >= 0 {
				t.Fatalf("step %d: %s[%d] = %v, reference %v", step, p.Name, j, p.Value[j], ref[i].Value[j])
			}
		}
		rec := map[string]any{}
		m.Metrics(rec)
		if rec["churn"] != 0.0 {
			t.Fatalf("step %d: churn %v with a fixed subset", step, rec["churn"])
		}
	}
}

// TestChurnMetric compares the reported churn with the subsets.
func TestChurnMetric(t *testing.T) {
	s := testSetup{shapes: [][]int{{80, 20}}, opt: adamwReal, silo: SiloModuleLayer, threads: 1, gradSeed: 17}
	s.opts = dstOptions(0.05, kernels.DistanceAbs, false, 3)
	m, ps, opt := newTestMethod(t, s)
	steps(t, m, ps, opt, s, 1, 1)
	rec := map[string]any{}
	m.Metrics(rec)
	if _, ok := rec["churn"]; ok {
		t.Fatal("churn reported at the first step")
	}
	sawChurn := false
	for step := 2; step <= 10; step++ {
		before := slices.Clone(m.Kept("p0.weight"))
		steps(t, m, ps, opt, s, step, step)
		after := m.Kept("p0.weight")
		entered := len(after) - int(countCommon32(after, before))
		rec := map[string]any{}
		m.Metrics(rec)
		want := float64(entered) / float64(len(after))
		if rec["churn"] != want || rec["silos"].(map[string]SiloMetrics)["p0.weight"].Churn == nil {
			t.Fatalf("step %d: churn %v, want %v", step, rec["churn"], want)
		}
		sawChurn = sawChurn || entered > 0
	}
	if !sawChurn {
		t.Fatal("the subset never changed: the test checks nothing")
	}
}

// TestStateRoundTrip: a method restored from State after Prepare
// continues exactly as the original, for every mode.
func TestStateRoundTrip(t *testing.T) {
	modes := map[string]func(*Options){
		"iterative":   func(o *Options) {},
		"exact":       func(o *Options) { o.Exact = true },
		"no-churn":    func(o *Options) { o.Churn = false },
		"random":      func(o *Options) { o.Random, o.DistanceName = true, DistanceRandom },
		"normalized":  func(o *Options) { o.Normalize = NormalizeMean },
		"iterative-5": func(o *Options) { o.Bisection.Steps = 5 },
		"paper-alg2":  func(o *Options) { o.PaperAlg2 = true },
	}
	for name, mod := range modes {
		t.Run(name, func(t *testing.T) {
			s := testSetup{shapes: [][]int{{40, 30}, {9}}, opt: sgdMom, silo: SiloModuleLayer, threads: 1, gradSeed: 21}
			s.opts = dstOptions(0.05, kernels.DistanceRel, false, 3)
			mod(&s.opts)
			a, pa, opt := newTestMethod(t, s)
			steps(t, a, pa, opt, s, 1, 6)
			st := a.State()
			var buf bytes.Buffer
			for _, x := range st.Tensors {
				buf.WriteString(x.Name)
			}
			b, pb, _ := newTestMethod(t, s)
			for i := range pb {
				copy(pb[i].Value, pa[i].Value)
				for j := range pb[i].State.Slots {
					copy(pb[i].State.Slots[j].Data, pa[i].State.Slots[j].Data)
				}
			}
			if err := b.LoadState(st); err != nil {
				t.Fatal(err)
			}
			steps(t, a, pa, opt, s, 7, 12)
			steps(t, b, pb, opt, s, 7, 12)
			for i := range pa {
				if j := sameFloats(pa[i].Value, pb[i].Value); j >= 0 {
					t.Fatalf("%s[%d]: %v uninterrupted, %v restored", pa[i].Name, j, pa[i].Value[j], pb[i].Value[j])
				}
			}
			ra, rb := map[string]any{}, map[string]any{}
			a.Metrics(ra)
			b.Metrics(rb)
			for _, key := range []string{"eps", "eps_alg2", "churn", "eps_paper_alg2"} {
				if ra[key] != rb[key] {
					t.Fatalf("%s: %v uninterrupted, %v restored", key, ra[key], rb[key])
				}
			}
		})
	}
}

func TestLoadStateRejects(t *testing.T) {
	s := testSetup{shapes: [][]int{{10, 10}}, opt: sgdMom, silo: SiloModuleLayer, threads: 1, gradSeed: 1}
	s.opts = dstOptions(0.1, kernels.DistanceAbs, false, 3)
	a, pa, opt := newTestMethod(t, s)
	steps(t, a, pa, opt, s, 1, 3)
	corrupt := func(f func(st *train.MethodState)) error {
		st := a.State()
		for i := range st.Tensors {
			st.Tensors[i].Data = slices.Clone(st.Tensors[i].Data)
		}
		f(&st)
		b, _, _ := newTestMethod(t, s)
		return b.LoadState(st)
	}
	for name, f := range map[string]func(st *train.MethodState){
		"descending": func(st *train.MethodState) {
			d := st.Tensors[2].Data
			copy(d[0:4], d[4:8])
		},
		"outside": func(st *train.MethodState) {
			d := st.Tensors[2].Data
			d[len(d)-1] = 0x7f
		},
		"missing":   func(st *train.MethodState) { st.Tensors = st.Tensors[:2] },
		"ready":     func(st *train.MethodState) { st.Tensors[1].Data[0] = 7 },
		"threshold": func(st *train.MethodState) { copy(st.Tensors[0].Data, []byte{0, 0, 0x80, 0xff}) },
		"meta":      func(st *train.MethodState) { st.Meta = map[string]string{} },
	} {
		if err := corrupt(f); err == nil {
			t.Errorf("%s: LoadState accepted a corrupt state", name)
		}
	}
	if err := corrupt(func(*train.MethodState) {}); err != nil {
		t.Fatalf("the state as saved: %v", err)
	}
}

// TestDeltaOfRun: the delta written after a step, read back and applied
// to the seeds, gives the trained parameters exactly.
func TestDeltaOfRun(t *testing.T) {
	s := testSetup{shapes: [][]int{{30, 20}, {12}}, opt: adamwReal, silo: SiloModuleLayer, threads: 1, gradSeed: 23}
	s.opts = dstOptions(0.1, kernels.DistanceInvRel, false, 3)
	m, ps, opt := newTestMethod(t, s)
	m.baseHash = "ab" + string(bytes.Repeat([]byte("0"), 62))
	seeds := seedsOf(ps)
	steps(t, m, ps, opt, s, 1, 5)
	dir := t.TempDir()
	if err := m.WriteRunFiles(dir, 5); err != nil {
		t.Fatal(err)
	}
	d, err := ReadDelta(filepath.Join(dir, DeltaFile))
	if err != nil {
		t.Fatal(err)
	}
	if d.Meta.Steps != 5 || d.Meta.Method != "dst" || d.Meta.Epsilon != 0.1 || d.Meta.Distance != DistanceInvRel ||
		d.Meta.Silo != SiloModuleLayer || d.Meta.BaseSHA256 != m.baseHash || d.Meta.Extra["threshold"] != ThresholdIterative {
		t.Fatalf("metadata %+v", d.Meta)
	}
	params := map[string][]float32{}
	for i, p := range ps {
		params[p.Name] = slices.Clone(seeds[i])
		td := d.Tensor(p.Name)
		if td == nil || int64(len(td.Indices)) != SubsetSize(0.1, int64(len(p.Value))) {
			t.Fatalf("%s: delta has %v", p.Name, td)
		}
	}
	if err := d.ApplyTo(params); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if j := sameFloats(params[p.Name], p.Value); j >= 0 {
			t.Fatalf("%s[%d]: seed+delta %v, trained %v", p.Name, j, params[p.Name][j], p.Value[j])
		}
	}
}

// TestGridRunMatchesResolve: the lazily counted Algorithm 2 (extra passes
// for m > 3) returns what Resolve returns on the full grid's counts.
func TestGridRunMatchesResolve(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := range 300 {
		n := 1 + rng.IntN(3000)
		delta := make([]float32, n)
		for i := range delta {
			delta[i] = float32(math.Exp(rng.NormFloat64() * 2))
			if rng.IntN(5) == 0 {
				delta[i] = delta[rng.IntN(i+1)] // ties
			}
		}
		b := Bisection{Steps: 1 + rng.IntN(7), Factor: 1.2 + rng.Float32()*3}
		k := int64(rng.IntN(n + 1))
		prev := delta[rng.IntN(n)] * (0.5 + rng.Float32())
		count := func(th []float32, counts []int64) {
			for j, q := range th {
				for _, x := range delta {
					if x > q {
						counts[j]++
					}
				}
			}
		}
		var r gridRun
		first := r.start(b, prev)
		if len(first) > kernels.MaxThresholds {
			t.Fatalf("first pass counts %d thresholds", len(first))
		}
		count(first, r.passCounts)
		r.record()
		passes := 1
		got := r.resolve(k, func(th []float32, c []int64) {
			if len(th) > kernels.MaxThresholds {
				t.Fatalf("a pass counts %d thresholds", len(th))
			}
			passes++
			count(th, c)
		})
		cands := b.Candidates(prev, nil)
		all := make([]int64, len(cands))
		count(cands, all)
		want := b.Resolve(cands, all, k)
		if got != want {
			t.Fatalf("trial %d m=%d: %+v, Resolve %+v", trial, b.Steps, got, want)
		}
		if wantPasses := 1 + max(0, (b.Steps-1)/3); passes > wantPasses {
			t.Fatalf("m=%d took %d counting passes, want at most %d", b.Steps, passes, wantPasses)
		}
		for j, c := range r.counts {
			if c >= 0 && c != all[j] {
				t.Fatalf("grid point %d counted %d, truly %d", j, c, all[j])
			}
		}
	}
}

func TestParseConfig(t *testing.T) {
	good := train.DefaultDSTConfig()
	o, err := ParseConfig(good, 5)
	if err != nil || o.Exact || o.Random || o.Distance != kernels.DistanceInvRel || o.Bisection != DefaultBisection || o.Seed != 5 {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	if back := o.Config(); back != good {
		t.Fatalf("Config() = %+v, want %+v", back, good)
	}
	for name, f := range map[string]func(c *train.DSTConfig){
		"eps":       func(c *train.DSTConfig) { c.Eps = 1.5 },
		"eps NaN":   func(c *train.DSTConfig) { c.Eps = math.NaN() },
		"distance":  func(c *train.DSTConfig) { c.Distance = "cosine" },
		"silo":      func(c *train.DSTConfig) { c.Silo = "layer" },
		"threshold": func(c *train.DSTConfig) { c.Threshold = "approx" },
		"normalize": func(c *train.DSTConfig) { c.Normalize = "max" },
		"random":    func(c *train.DSTConfig) { c.Distance, c.Normalize = DistanceRandom, NormalizeSize },
		"paper":     func(c *train.DSTConfig) { c.PaperAlg2, c.Normalize = true, NormalizeMean },
		"m":         func(c *train.DSTConfig) { c.RefineSteps = 0 },
		"r":         func(c *train.DSTConfig) { c.Factor = 1 },
	} {
		c := good
		f(&c)
		if _, err := ParseConfig(c, 0); err == nil {
			t.Errorf("%s: no error for %+v", name, c)
		}
	}
}

func TestMakeSilos(t *testing.T) {
	params := []string{"a", "b", "c", "d"}
	mods := map[string]Module{"a": {Kind: "x.weight"}, "b": {Kind: "y.weight"}, "c": {Kind: "x.weight"}, "d": {Kind: "y.bias"}}
	got, err := MakeSilos(SiloModule, params, mods)
	want := []Silo{{"x.weight", []string{"a", "c"}}, {"y.weight", []string{"b"}}, {"y.bias", []string{"d"}}}
	if err != nil || !slices.EqualFunc(got, want, func(a, b Silo) bool { return a.Name == b.Name && slices.Equal(a.Params, b.Params) }) {
		t.Fatalf("module silos %v, %v", got, err)
	}
	if got, _ := MakeSilos(SiloNone, params, nil); len(got) != 1 || !slices.Equal(got[0].Params, params) {
		t.Fatalf("none: %v", got)
	}
	if got, _ := MakeSilos(SiloModuleLayer, params, nil); len(got) != 4 || got[2].Name != "c" {
		t.Fatalf("module-layer: %v", got)
	}
	if _, err := MakeSilos(SiloModule, params, nil); err == nil {
		t.Fatal("module silos without modules: no error")
	}
	if _, err := MakeSilos("layer", params, nil); err == nil {
		t.Fatal("unknown mode: no error")
	}
}

// TestPaperAlg2 checks the diagnostic: each silo's eps_paper_alg2 is what
// the printed Algorithm 2 (threshold_test.go's sequential algorithm2),
// carrying its own threshold from the first step's exact one, keeps of
// that step's Δ before the masked pass.
func TestPaperAlg2(t *testing.T) {
	for _, m := range []int{3, 5} {
		s := testSetup{shapes: [][]int{{60, 40}, {300}}, opt: adamwReal, silo: SiloModuleLayer, threads: 2, gradSeed: 41}
		s.opts = dstOptions(0.05, kernels.DistanceInvRel, false, m)
		s.opts.PaperAlg2 = true
		method, ps, opt := newTestMethod(t, s)
		seeds := seedsOf(ps)
		ref := cloneParams(ps, opt)
		prev := make([]float32, len(ps))
		for step := 1; step <= 30; step++ {
			stepGrads(s, step, ps, ref)
			info := train.StepInfo{Step: int64(step), LRScale: 1}
			method.Update(ps, opt, info, 2)
			// The reference's Θ̂ before masking, then its masked step.
			hat := cloneParams(ref, opt)
			for i := range hat {
				copy(hat[i].State.Slots[0].Data, ref[i].State.Slots[0].Data)
				copy(hat[i].State.Slots[1].Data, ref[i].State.Slots[1].Data)
				hat[i].Grad = ref[i].Grad
				opt.Step(hat[i].Value, hat[i].Grad, hat[i].State, info, 1)
			}
			refStep(ref, seeds, [][]int{{0}, {1}}, opt, info, 0.05, kernels.DistanceInvRel)
			for i, p := range hat {
				delta := make([]float32, len(p.Value))
				for j, v := range p.Value {
					delta[j] = refScore(v, seeds[i][j], kernels.DistanceInvRel)
				}
				k := SubsetSize(0.05, int64(len(delta)))
				sl := method.silos[i]
				if step == 1 {
					if sl.hasPaper {
						t.Fatal("the printed algorithm ran without a warm start")
					}
					sorted := slices.Clone(delta)
					slices.SortFunc(sorted, func(a, b float32) int { return cmp.Compare(b, a) })
					prev[i] = sorted[k-1]
					continue
				}
				q := algorithm2(prev[i], m, 2, k, func(q float32) int64 { return countAbove(delta, q) })
				prev[i] = q
				if !sl.hasPaper || sl.paperCount != countAbove(delta, q) {
					t.Fatalf("m=%d step %d silo %d: paper count %d (reported %v), reference %d", m, step, i, sl.paperCount, sl.hasPaper, countAbove(delta, q))
				}
			}
		}
	}
}
