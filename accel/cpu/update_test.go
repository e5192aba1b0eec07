package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dstune/dstune/update"
)

// The update's lowering is checked against package update's references:
// the optimizers against their float64 steps (to float32 rounding), the
// selection bit for bit against update.ReferenceSelect applied to Θ̂ from
// the same optimizer's plain step (so the fused counting passes are
// checked against the plain step too): parameters, subsets, carried
// thresholds and every reported field.

func randFloats(rng *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * scale)
	}
	return x
}

func newParam(name string, shape []int, value []float32, o update.Optimizer) *trainParam {
	p := &trainParam{name: name, shape: shape, value: value}
	newParamState(o, p)
	return p
}

func TestOptimizersMatchFloat64References(t *testing.T) {
	adafactor := func(mod func(*update.Adafactor)) update.Optimizer {
		o, _ := update.DefaultOptimizer(update.OptimizerAdafactor)
		mod(o.Adafactor)
		return o
	}
	cases := []struct {
		name  string
		opt   update.Optimizer
		shape []int
		tol   float64
	}{
		{"sgd", update.Optimizer{Name: "sgd", SGD: &update.SGD{LR: 0.1}}, []int{37, 5}, 1e-6},
		{"sgd-momentum-wd", update.Optimizer{Name: "sgd", SGD: &update.SGD{LR: 0.05, Momentum: 0.9, Dampening: 0.1, WeightDecay: 0.01}}, []int{130}, 1e-6},
		{"sgd-nesterov", update.Optimizer{Name: "sgd", SGD: &update.SGD{LR: 0.05, Momentum: 0.8, Nesterov: true}}, []int{3, 4, 5}, 1e-6},
		{"adamw", update.Optimizer{Name: "adamw", AdamW: &update.AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}, []int{64, 33}, 1e-5},
		{"adamw-scalar", update.Optimizer{Name: "adamw", AdamW: &update.AdamW{LR: 1e-3, Beta1: 0.8, Beta2: 0.99, Eps: 1e-6}}, []int{}, 1e-5},
		{"adafactor-matrix", adafactor(func(*update.Adafactor) {}), []int{48, 70}, 1e-5},
		{"adafactor-vector", adafactor(func(*update.Adafactor) {}), []int{100}, 1e-5},
		{"adafactor-stack-beta1", adafactor(func(c *update.Adafactor) { c.Beta1 = 0.9 }), []int{3, 17, 9}, 1e-5},
		{"adafactor-absolute-lr-clip", adafactor(func(c *update.Adafactor) { c.LR, c.ScaleParameter, c.ClipThreshold = 1e-3, false, 0.5 }), []int{20, 1}, 1e-5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opt, err := lowerOptimizer(tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			n := update.NumElements(tc.shape)
			p := newParam("p", tc.shape, randFloats(rng, n, 0.5), tc.opt)
			p64 := make([]float64, n)
			for i, x := range p.value {
				p64[i] = float64(x)
			}
			var slots64 [][]float64
			for _, s := range p.slots {
				slots64 = append(slots64, make([]float64, len(s.Data)))
			}
			for step := int64(1); step <= 5; step++ {
				p.grad = randFloats(rng, n, math.Pow(10, -float64(step%3)))
				g64 := make([]float64, n)
				for i, x := range p.grad {
					g64[i] = float64(x)
				}
				info := update.StepInfo{Step: step, LRScale: 1 - 0.1*float64(step)}
				opt.step(p, info, 2)
				tc.opt.Reference(tc.shape, p64, g64, slots64, info)
				for i := range p.value {
					if d := math.Abs(float64(p.value[i]) - p64[i]); d > tc.tol*(1+math.Abs(p64[i])) {
						t.Fatalf("step %d, entry %d: got %g, float64 reference %g", step, i, p.value[i], p64[i])
					}
				}
			}
		})
	}
}

// subsetSize is DST's k for a unit of n entries at eps (package dst's
// rule, restated for the tests).
func subsetSize(eps float64, n int64) int64 {
	if eps == 0 || n == 0 {
		return 0
	}
	return min(max(int64(math.Round(eps*float64(n))), 1), n)
}

type selectCase struct {
	shapes    [][]int
	ties      bool // values and gradients from tiny sets: Δ ties everywhere
	opt       update.Optimizer
	units     [][]int // parameter indices per unit (nil: one per parameter)
	eps       float64
	sel       update.Selection
	steps     int
	threads   int
	zeroEvery int // one seed in zeroEvery is 0 (0: 50)
	random    bool
	short     bool // some unit-step must keep fewer than K (Δ of 0)
}

var (
	sgdTies   = update.Optimizer{Name: update.OptimizerSGD, SGD: &update.SGD{LR: 0.125}}
	adamwReal = update.Optimizer{Name: update.OptimizerAdamW, AdamW: &update.AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}
)

// paths counts how the selections of a run were made.
// short counts the unit-steps that kept fewer than K entries.
type paths struct{ exact, candidate, band, fallback, fixed, short int }

func (c selectCase) params(rng *rand.Rand) []*trainParam {
	var ps []*trainParam
	zero := c.zeroEvery
	if zero == 0 {
		zero = 50
	}
	for i, shape := range c.shapes {
		v := make([]float32, update.NumElements(shape))
		for j := range v {
			if c.ties {
				v[j] = []float32{0.5, -0.5, 1, 0.25}[rng.IntN(4)]
			} else {
				v[j] = float32(rng.NormFloat64() * 0.05)
				if rng.IntN(zero) == 0 {
					v[j] = 0
				}
			}
		}
		p := newParam(fmt.Sprintf("p%d", i), shape, v, c.opt)
		p.seed = slices.Clone(v)
		ps = append(ps, p)
	}
	return ps
}

// program makes the case's selection over ps.
func (c selectCase) program(ps []*trainParam) *update.Selection {
	s := c.sel
	s.Units = nil
	if s.BandCap == 0 {
		s.BandCap = 64 << 10
	}
	if s.Bisection.Steps == 0 {
		s.Bisection = update.DefaultBisection
	}
	groups := c.units
	if groups == nil {
		for i := range ps {
			groups = append(groups, []int{i})
		}
	}
	if s.Normalized {
		u := update.Unit{Name: "all"}
		var size int64
		for g, idx := range groups {
			s.Groups = append(s.Groups, fmt.Sprint("g", g))
			var gsize int64
			for _, i := range idx {
				gsize += int64(len(ps[i].value))
			}
			for _, i := range idx {
				u.Pieces = append(u.Pieces, update.Piece{Param: ps[i].name, Scale: float32(1 / float64(gsize)), Group: g})
			}
			size += gsize
		}
		u.K = subsetSize(c.eps, size)
		s.Units = []update.Unit{u}
		return &s
	}
	for g, idx := range groups {
		u := update.Unit{Name: fmt.Sprint("u", g)}
		var size int64
		for _, i := range idx {
			u.Pieces = append(u.Pieces, update.Piece{Param: ps[i].name})
			size += int64(len(ps[i].value))
		}
		u.K = subsetSize(c.eps, size)
		s.Units = append(s.Units, u)
	}
	return &s
}

// runSelectCase runs c on the lowering and on the reference side by side
// and compares them after every step.
func runSelectCase(t *testing.T, c selectCase) paths {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, uint64(len(c.shapes))))
	ps := c.params(rng)
	ref := map[string][]float32{}
	seeds := map[string][]float32{}
	var refParams []*trainParam
	for _, p := range ps {
		rp := newParam(p.name, p.shape, slices.Clone(p.value), c.opt)
		refParams = append(refParams, rp)
		ref[p.name], seeds[p.name] = rp.value, p.seed
	}
	def := c.program(ps)
	if c.random {
		def.Fixed = update.FixFromStart
	}
	s, err := newSelection(def, ps)
	if err != nil {
		t.Fatal(err)
	}
	refState := update.NewSelectionState(def)
	if c.random {
		for _, u := range def.Units {
			left := u.K
			for _, piece := range u.Pieces {
				for j := range seeds[piece.Param] {
					if left > 0 && rng.IntN(10) == 0 {
						refState.Kept[piece.Param] = append(refState.Kept[piece.Param], int32(j))
						left--
					}
				}
			}
		}
		refState.Fixed = true
		if err := s.setState(refState.Clone()); err != nil {
			t.Fatal(err)
		}
	}
	opt, err := lowerOptimizer(c.opt)
	if err != nil {
		t.Fatal(err)
	}
	var taken paths
	for step := 1; step <= c.steps; step++ {
		grng := rand.New(rand.NewPCG(11, uint64(100+step)))
		for i, p := range ps {
			g := make([]float32, len(p.value))
			for j := range g {
				if c.ties {
					g[j] = []float32{0, 1, -1, 2, 0, 0}[grng.IntN(6)]
				} else {
					g[j] = float32(grng.NormFloat64())
				}
			}
			p.grad, refParams[i].grad = g, g
		}
		info := update.StepInfo{Step: int64(step), LRScale: 1}
		s.update(opt, info, c.threads)
		for _, rp := range refParams {
			opt.step(rp, info, 1)
		}
		want := update.ReferenceSelect(def, ref, seeds, refState)
		for i, p := range ps {
			for j, x := range p.value {
				if y := ref[p.name][j]; math.Float32bits(x) != math.Float32bits(y) && !(x != x && y != y) {
					t.Fatalf("step %d: %s[%d] = %v, reference %v (seed %v)", step, p.name, j, x, y, p.seed[j])
				}
			}
			for k, sl := range p.slots {
				if !slices.Equal(sl.Data, refParams[i].slots[k].Data) {
					t.Fatalf("step %d: %s's slot %s differs from the plain step's", step, p.name, sl.Name)
				}
			}
		}
		if s.res.Selected {
			// No kept entry has a Δ of 0 (update.Keeps).
			for _, p := range ps {
				for _, pos := range refState.Kept[p.name] {
					if def.Distance.Score(p.value[pos], p.seed[pos]) <= 0 {
						t.Fatalf("step %d: %s keeps position %d, whose Δ is 0", step, p.name, pos)
					}
				}
			}
			for _, u := range s.res.Units {
				if u.Kept < u.K {
					taken.short++
				}
			}
		}
		got := s.state()
		if fmt.Sprint(got) != fmt.Sprint(refState) {
			t.Fatalf("step %d: state\n%v\nreference\n%v", step, got, refState)
		}
		if g, w := fmt.Sprintf("%+v %v", s.res.Units, s.res.GroupKept), fmt.Sprintf("%+v %v", want.Units, want.GroupKept); g != w || s.res.Selected != want.Selected {
			t.Fatalf("step %d: results\n%s\nreference\n%s", step, g, w)
		}
		for _, u := range s.res.Units {
			switch {
			case !s.res.Selected:
				taken.fixed++
			case u.Fallback:
				taken.fallback++
			case u.Alg2 && u.Exact && !def.Normalized:
				taken.band++
			case u.Alg2 && !def.Normalized:
				taken.candidate++
			default:
				taken.exact++
			}
		}
	}
	return taken
}

// TestSelectionMatchesReference: ties (tiny value sets), zero seeds (+Inf
// and 0 scores), every distance, multi-parameter units, small band caps
// (fallbacks), m from 1 to 6 (more counting passes), both threshold modes.
func TestSelectionMatchesReference(t *testing.T) {
	shapes := [][]int{{40, 30}, {5}, {300}, {2, 3, 50}}
	layouts := map[string][][]int{"per-param": nil, "one": {{0, 1, 2, 3}}, "two": {{0, 3}, {1, 2}}}
	var total paths
	for _, ties := range []bool{true, false} {
		for _, d := range []update.Distance{update.DistanceAbs, update.DistanceRel, update.DistanceInvRel} {
			for _, mode := range []struct {
				name    string
				exact   bool
				m       int
				bandCap int64
			}{{"exact", true, 3, 0}, {"iterative", false, 3, 0}, {"iterative-cap8", false, 3, 8}, {"iterative-m1", false, 1, 0}, {"iterative-m5", false, 5, 0}, {"iterative-m6", false, 6, 0}} {
				for layout, units := range layouts {
					t.Run(fmt.Sprintf("ties=%v/%v/%s/%s", ties, d, mode.name, layout), func(t *testing.T) {
						c := selectCase{shapes: shapes, ties: ties, opt: adamwReal, units: units, eps: 0.1, steps: 25, threads: 2,
							sel: update.Selection{Distance: d, Exact: mode.exact, Bisection: update.Bisection{Steps: mode.m, Factor: 2}, BandCap: mode.bandCap}}
						if ties {
							c.opt = sgdTies
						}
						p := runSelectCase(t, c)
						if !mode.exact && p.band+p.candidate+p.fallback == 0 {
							t.Errorf("Algorithm 2 never ran (%+v)", p)
						}
						total.exact += p.exact
						total.candidate += p.candidate
						total.band += p.band
						total.fallback += p.fallback
					})
				}
			}
		}
	}
	if total.exact == 0 || total.candidate == 0 || total.band == 0 || total.fallback == 0 {
		t.Errorf("paths taken %+v: each should be taken at least once", total)
	}
}

// TestSelectionEdgeCases: ε = 0 and 1, Adafactor, rel distance with a
// third of the seeds 0 (the k-th largest Δ is +Inf), a unit big enough
// for several workers, normalized runs, churn off, a random mask, and the
// printed Algorithm 2 alongside.
func TestSelectionEdgeCases(t *testing.T) {
	adafactor, _ := update.DefaultOptimizer(update.OptimizerAdafactor)
	two := [][]int{{40, 30}, {7}}
	for _, c := range []struct {
		name string
		c    selectCase
	}{
		{"eps=0", selectCase{shapes: two, opt: adamwReal, eps: 0, sel: update.Selection{Distance: update.DistanceAbs}}},
		{"eps=1", selectCase{shapes: two, opt: adamwReal, eps: 1, sel: update.Selection{Distance: update.DistanceInvRel}}},
		{"adafactor", selectCase{shapes: two, opt: adafactor, eps: 0.05, sel: update.Selection{Distance: update.DistanceInvRel}}},
		{"rel-zero-seeds", selectCase{shapes: two, opt: adamwReal, eps: 0.1, zeroEvery: 3, sel: update.Selection{Distance: update.DistanceRel}}},
		{"large", selectCase{shapes: [][]int{{700, 200}, {64}}, opt: adamwReal, eps: 1e-3, steps: 6, sel: update.Selection{Distance: update.DistanceInvRel}}},
		{"normalized", selectCase{shapes: [][]int{{40, 30}, {7}, {90}}, units: [][]int{{0, 2}, {1}}, opt: adamwReal, eps: 0.05,
			sel: update.Selection{Distance: update.DistanceInvRel, Normalized: true}}},
		{"no-churn", selectCase{shapes: two, opt: adamwReal, eps: 0.1, sel: update.Selection{Distance: update.DistanceAbs, Fixed: update.FixAfterFirst}}},
		{"random-mask", selectCase{shapes: two, opt: adamwReal, eps: 0.2, random: true, sel: update.Selection{Distance: update.DistanceAbs}}},
		// A third of the seeds 0 under inv-rel (Δ stays 0) and ε = 0.8:
		// fewer than K positive Δ, so the units keep fewer than K.
		{"inv-rel-zero-seeds", selectCase{shapes: two, opt: adamwReal, eps: 0.8, zeroEvery: 3, short: true, sel: update.Selection{Distance: update.DistanceInvRel}}},
		// SGD with a third of the gradients 0: unchanged entries (Δ = 0
		// under every distance) tie with each other at 0.
		{"unchanged-entries", selectCase{shapes: two, ties: true, opt: sgdTies, eps: 0.9, short: true, sel: update.Selection{Distance: update.DistanceAbs}}},
		{"paper-alg2", selectCase{shapes: two, opt: adamwReal, eps: 0.05, sel: update.Selection{Distance: update.DistanceInvRel, PaperAlg2: true, Bisection: update.Bisection{Steps: 4, Factor: 2}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, exact := range []bool{false, true} {
				cc := c.c
				cc.sel.Exact = exact
				if cc.steps == 0 {
					cc.steps = 12
				}
				cc.threads = 2
				if p := runSelectCase(t, cc); cc.short && p.short == 0 {
					t.Errorf("exact=%v: every unit kept K entries; the case should leave some short of Δ > 0", exact)
				}
			}
		})
	}
}
