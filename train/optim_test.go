package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dstune/dstune/kernels"
)

// The optimizers are checked against float64 implementations written from
// the papers and PyTorch's documented update rules (not from the kernels),
// over several steps so that the state's role is exercised.

type refOptimizer interface {
	step(p, g []float64, t StepInfo)
}

type refSGD struct {
	h   SGDConfig
	buf []float64
}

func (r *refSGD) step(p, g []float64, t StepInfo) {
	lr := r.h.LR * t.LRScale
	if r.buf == nil {
		r.buf = make([]float64, len(p))
	}
	for i := range p {
		d := g[i] + r.h.WeightDecay*p[i]
		if r.h.Momentum != 0 {
			if t.Step == 1 {
				r.buf[i] = d
			} else {
				r.buf[i] = r.h.Momentum*r.buf[i] + (1-r.h.Dampening)*d
			}
			if r.h.Nesterov {
				d += r.h.Momentum * r.buf[i]
			} else {
				d = r.buf[i]
			}
		}
		p[i] -= lr * d
	}
}

type refAdamW struct {
	h    AdamWConfig
	m, v []float64
}

func (r *refAdamW) step(p, g []float64, t StepInfo) {
	if r.m == nil {
		r.m, r.v = make([]float64, len(p)), make([]float64, len(p))
	}
	lr := r.h.LR * t.LRScale
	bc1 := 1 - math.Pow(r.h.Beta1, float64(t.Step))
	bc2 := 1 - math.Pow(r.h.Beta2, float64(t.Step))
	for i := range p {
		p[i] *= 1 - lr*r.h.WeightDecay
		r.m[i] = r.h.Beta1*r.m[i] + (1-r.h.Beta1)*g[i]
		r.v[i] = r.h.Beta2*r.v[i] + (1-r.h.Beta2)*g[i]*g[i]
		p[i] -= lr / bc1 * r.m[i] / (math.Sqrt(r.v[i])/math.Sqrt(bc2) + r.h.Eps)
	}
}

// refAdafactor follows Shazeer & Stern's Algorithm 4 literally: row and
// column sums of G²+ε1 as exponential averages, V̂ = R Cᵀ / 1ᵀR, the
// update U = G/√V̂ clipped by max(1, RMS(U)/d), the relative step size.
type refAdafactor struct {
	h     AdafactorConfig
	shape []int
	r, c  [][]float64 // per matrix
	v     []float64   // unfactored
	m     []float64
}

func (r *refAdafactor) step(p, g []float64, t StepInfo) {
	n := len(p)
	beta2 := 1 - math.Pow(float64(t.Step), r.h.DecayRate)
	u := make([]float64, n)
	if len(r.shape) >= 2 {
		rows, cols := r.shape[len(r.shape)-2], r.shape[len(r.shape)-1]
		stack := n / (rows * cols)
		if r.r == nil {
			for range stack {
				r.r = append(r.r, make([]float64, rows))
				r.c = append(r.c, make([]float64, cols))
			}
		}
		for k := range stack {
			g := g[k*rows*cols:]
			R, C := r.r[k], r.c[k]
			for i := range rows {
				s := 0.0
				for j := range cols {
					s += g[i*cols+j]*g[i*cols+j] + r.h.Eps1
				}
				R[i] = beta2*R[i] + (1-beta2)*s
			}
			for j := range cols {
				s := 0.0
				for i := range rows {
					s += g[i*cols+j]*g[i*cols+j] + r.h.Eps1
				}
				C[j] = beta2*C[j] + (1-beta2)*s
			}
			sumR := 0.0
			for _, x := range R {
				sumR += x
			}
			for i := range rows {
				for j := range cols {
					vhat := R[i] * C[j] / sumR
					u[k*rows*cols+i*cols+j] = g[i*cols+j] / math.Sqrt(vhat)
				}
			}
		}
	} else {
		if r.v == nil {
			r.v = make([]float64, n)
		}
		for i := range n {
			r.v[i] = beta2*r.v[i] + (1-beta2)*(g[i]*g[i]+r.h.Eps1)
			u[i] = g[i] / math.Sqrt(r.v[i])
		}
	}
	rms := func(x []float64) float64 {
		s := 0.0
		for _, v := range x {
			s += v * v
		}
		return math.Sqrt(s / float64(len(x)))
	}
	alpha := r.h.LR
	if alpha == 0 {
		alpha = min(1e-2, 1/math.Sqrt(float64(t.Step)))
	}
	alpha *= t.LRScale
	if r.h.ScaleParameter {
		alpha *= max(r.h.Eps2, rms(p))
	}
	clip := max(1, rms(u)/r.h.ClipThreshold)
	if r.m == nil {
		r.m = make([]float64, n)
	}
	for i := range n {
		step := alpha * u[i] / clip
		if r.h.Beta1 != 0 {
			r.m[i] = r.h.Beta1*r.m[i] + (1-r.h.Beta1)*step
			step = r.m[i]
		}
		p[i] -= step
	}
}

func randFloats(rng *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * scale)
	}
	return x
}

func TestOptimizersMatchFloat64References(t *testing.T) {
	adafactor := func(mod func(*AdafactorConfig)) OptimizerConfig {
		c, _ := DefaultOptimizer(OptimizerAdafactor)
		mod(c.Adafactor)
		return c
	}
	cases := []struct {
		name  string
		cfg   OptimizerConfig
		shape []int
		tol   float64
	}{
		{"sgd", OptimizerConfig{Name: "sgd", SGD: &SGDConfig{LR: 0.1}}, []int{37, 5}, 1e-6},
		{"sgd-momentum-wd", OptimizerConfig{Name: "sgd", SGD: &SGDConfig{LR: 0.05, Momentum: 0.9, Dampening: 0.1, WeightDecay: 0.01}}, []int{130}, 1e-6},
		{"sgd-nesterov", OptimizerConfig{Name: "sgd", SGD: &SGDConfig{LR: 0.05, Momentum: 0.8, Nesterov: true}}, []int{3, 4, 5}, 1e-6},
		{"adamw", OptimizerConfig{Name: "adamw", AdamW: &AdamWConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}, []int{64, 33}, 1e-5},
		{"adamw-scalar", OptimizerConfig{Name: "adamw", AdamW: &AdamWConfig{LR: 1e-3, Beta1: 0.8, Beta2: 0.99, Eps: 1e-6}}, []int{}, 1e-5},
		{"adafactor-matrix", adafactor(func(*AdafactorConfig) {}), []int{48, 70}, 1e-5},
		{"adafactor-vector", adafactor(func(*AdafactorConfig) {}), []int{100}, 1e-5},
		{"adafactor-stack-beta1", adafactor(func(c *AdafactorConfig) { c.Beta1 = 0.9 }), []int{3, 17, 9}, 1e-5},
		{"adafactor-absolute-lr-clip", adafactor(func(c *AdafactorConfig) { c.LR, c.ScaleParameter, c.ClipThreshold = 1e-3, false, 0.5 }), []int{20, 1}, 1e-5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opt, err := NewOptimizer(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var ref refOptimizer
			switch {
			case tc.cfg.SGD != nil:
				ref = &refSGD{h: *tc.cfg.SGD}
			case tc.cfg.AdamW != nil:
				ref = &refAdamW{h: *tc.cfg.AdamW}
			default:
				ref = &refAdafactor{h: *tc.cfg.Adafactor, shape: tc.shape}
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			n := numElements(tc.shape)
			p := randFloats(rng, n, 0.5)
			p64 := make([]float64, n)
			for i, x := range p {
				p64[i] = float64(x)
			}
			st := opt.NewState(tc.shape)
			for step := int64(1); step <= 5; step++ {
				g := randFloats(rng, n, math.Pow(10, -float64(step%3)))
				g64 := make([]float64, n)
				for i, x := range g {
					g64[i] = float64(x)
				}
				info := StepInfo{Step: step, LRScale: 1 - 0.1*float64(step)}
				opt.Step(p, g, st, info, 2)
				ref.step(p64, g64, info)
				for i := range p {
					if d := math.Abs(float64(p[i]) - p64[i]); d > tc.tol*(1+math.Abs(p64[i])) {
						t.Fatalf("step %d, entry %d: got %g, float64 reference %g", step, i, p[i], p64[i])
					}
				}
			}
		})
	}
}

func TestOptimizerStepCountIsStepPlusCount(t *testing.T) {
	for _, name := range []string{OptimizerSGD, OptimizerAdamW, OptimizerAdafactor} {
		t.Run(name, func(t *testing.T) {
			cfg, _ := DefaultOptimizer(name)
			cfg.SetLR(1e-2)
			if cfg.SGD != nil {
				cfg.SGD.Momentum = 0.9
			}
			if cfg.Adafactor != nil {
				cfg.Adafactor.Beta1 = 0.5
			}
			opt, err := NewOptimizer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			shape := []int{2, 40, 33}
			n := numElements(shape)
			rng := rand.New(rand.NewPCG(7, 7))
			seed := randFloats(rng, n, 1)
			p1, p2 := slices.Clone(seed), slices.Clone(seed)
			s1, s2 := opt.NewState(shape), opt.NewState(shape)
			thresholds := []float32{1e-4, 1e-3, 3e-3, 1e-2}
			for step := int64(1); step <= 3; step++ {
				g := randFloats(rng, n, 1)
				info := StepInfo{Step: step, LRScale: 1}
				opt.Step(p1, g, s1, info, 1)
				got := make([]int64, len(thresholds))
				opt.StepCount(p2, g, s2, info, seed, kernels.DistanceAbs, thresholds, got, 2)
				if !slices.Equal(p1, p2) {
					t.Fatalf("step %d: StepCount's parameters differ from Step's", step)
				}
				want := make([]int64, len(thresholds))
				kernels.CountAbove(want, thresholds, p1, seed, kernels.DistanceAbs, 1)
				if !slices.Equal(got, want) {
					t.Fatalf("step %d: counts %v, CountAbove says %v", step, got, want)
				}
			}
			for i := range s1.Slots {
				if !slices.Equal(s1.Slots[i].Data, s2.Slots[i].Data) {
					t.Fatalf("slot %s differs", s1.Slots[i].Name)
				}
			}
		})
	}
}

func TestOptimizerStatesAndValidation(t *testing.T) {
	slotNames := func(st *ParamState) []string {
		var names []string
		for _, s := range st.Slots {
			names = append(names, s.Name)
			if len(s.Data) != numElements(s.Shape) {
				t.Errorf("slot %s: %d values for shape %v", s.Name, len(s.Data), s.Shape)
			}
		}
		return names
	}
	af, _ := DefaultOptimizer(OptimizerAdafactor)
	opt, err := NewOptimizer(af)
	if err != nil {
		t.Fatal(err)
	}
	if got := slotNames(opt.NewState([]int{4, 8, 16})); !slices.Equal(got, []string{"exp_avg_sq_row", "exp_avg_sq_col"}) {
		t.Errorf("adafactor matrix slots %v", got)
	}
	if st := opt.NewState([]int{4, 8, 16}); !slices.Equal(st.Slots[0].Shape, []int{4, 8}) || !slices.Equal(st.Slots[1].Shape, []int{4, 16}) {
		t.Errorf("adafactor factor shapes %v %v", st.Slots[0].Shape, st.Slots[1].Shape)
	}
	if got := slotNames(opt.NewState([]int{16})); !slices.Equal(got, []string{"exp_avg_sq"}) {
		t.Errorf("adafactor vector slots %v", got)
	}
	aw, _ := DefaultOptimizer(OptimizerAdamW)
	opt, _ = NewOptimizer(aw)
	if got := slotNames(opt.NewState([]int{3, 3})); !slices.Equal(got, []string{"exp_avg", "exp_avg_sq"}) {
		t.Errorf("adamw slots %v", got)
	}
	sg, _ := DefaultOptimizer(OptimizerSGD)
	opt, _ = NewOptimizer(sg)
	if got := slotNames(opt.NewState([]int{3, 3})); len(got) != 0 {
		t.Errorf("plain sgd slots %v", got)
	}

	bad := []OptimizerConfig{
		{Name: "adam"},
		{Name: "adamw"},
		{Name: "adamw", AdamW: &AdamWConfig{LR: 1e-3, Beta1: 1, Beta2: 0.9}},
		{Name: "adamw", AdamW: &AdamWConfig{LR: math.NaN(), Beta2: 0.9}},
		{Name: "sgd", AdamW: &AdamWConfig{LR: 1e-3}},
		{Name: "sgd", SGD: &SGDConfig{LR: -1}},
		{Name: "sgd", SGD: &SGDConfig{LR: 1, Nesterov: true}},
		{Name: "adafactor", Adafactor: &AdafactorConfig{DecayRate: 0.8, ClipThreshold: 1}},
		{Name: "adafactor", Adafactor: &AdafactorConfig{DecayRate: -0.8}},
	}
	for _, c := range bad {
		if _, err := NewOptimizer(c); err == nil {
			t.Errorf("NewOptimizer(%+v) accepted", c)
		}
	}
	if _, err := DefaultOptimizer("lion"); err == nil {
		t.Error("DefaultOptimizer(lion) accepted")
	}
}
