package kernels

import (
	"github.com/dstune/dstune/update"

	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
)

// optimRef is testdata/optim_ref.json, written by testdata/optim_ref.py
// with PyTorch 1.13.1: a few steps of torch.optim.AdamW and SGD, every
// float32 as its bit pattern.
type optimRef struct {
	Torch string `json:"torch"`
	Cases []struct {
		Name      string                 `json:"name"`
		Optimizer string                 `json:"optimizer"`
		Hyper     map[string]any         `json:"hyper"`
		Param0    hexFloats              `json:"param0"`
		Grads     []hexFloats            `json:"grads"`
		Steps     []map[string]hexFloats `json:"steps"`
	} `json:"cases"`
}

type hexFloats []float32

func (h *hexFloats) UnmarshalJSON(b []byte) error {
	var s []string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*h = make(hexFloats, len(s))
	for i, x := range s {
		v, err := strconv.ParseUint(x, 16, 32)
		if err != nil {
			return err
		}
		(*h)[i] = math.Float32frombits(uint32(v))
	}
	return nil
}

func loadOptimRef(t *testing.T) *optimRef {
	t.Helper()
	b, err := os.ReadFile("testdata/optim_ref.json")
	if err != nil {
		t.Fatal(err)
	}
	var r optimRef
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("testdata/optim_ref.json: %v", err)
	}
	return &r
}

func hyperFloat(h map[string]any, k string) float64 { return h[k].(float64) }

func checkBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if !sameBits(got[i], want[i]) {
			t.Fatalf("%s[%d] = %v (%#08x), PyTorch %v (%#08x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

// TestAdamWMatchesPyTorch checks AdamWStep and AdamWStepCount bit for bit
// against torch.optim.AdamW on every ISA and with several threads.
func TestAdamWMatchesPyTorch(t *testing.T) {
	ref := loadOptimRef(t)
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, c := range ref.Cases {
			if c.Optimizer != "adamw" {
				continue
			}
			hyper := update.AdamW{LR: hyperFloat(c.Hyper, "lr"), Beta1: hyperFloat(c.Hyper, "beta1"), Beta2: hyperFloat(c.Hyper, "beta2"),
				Eps: hyperFloat(c.Hyper, "eps"), WeightDecay: hyperFloat(c.Hyper, "weight_decay")}
			for _, fused := range []bool{false, true} {
				n := len(c.Param0)
				p := slices.Clone(c.Param0)
				m, v := make([]float32, n), make([]float32, n)
				for s, g := range c.Grads {
					h := adamwAt(hyper, int64(s+1))
					if fused {
						counts := make([]int64, 2)
						AdamWStepCount(h, p, g, m, v, c.Param0, DistanceAbs, []float32{0, 1e-4}, counts, 2)
					} else {
						AdamWStep(h, p, g, m, v, 1)
					}
					want := c.Steps[s]
					checkBits(t, c.Name+" param", p, want["param"])
					checkBits(t, c.Name+" exp_avg", m, want["exp_avg"])
					checkBits(t, c.Name+" exp_avg_sq", v, want["exp_avg_sq"])
				}
			}
		}
	})
}

func TestSGDMatchesPyTorch(t *testing.T) {
	ref := loadOptimRef(t)
	forISAs(t, func(t *testing.T, isa ISA) { checkSGDRef(t, ref) })
}

func checkSGDRef(t *testing.T, ref *optimRef) {
	for _, c := range ref.Cases {
		if c.Optimizer != "sgd" {
			continue
		}
		hyper := update.SGD{LR: hyperFloat(c.Hyper, "lr"), Momentum: hyperFloat(c.Hyper, "momentum"),
			Dampening: hyperFloat(c.Hyper, "dampening"), WeightDecay: hyperFloat(c.Hyper, "weight_decay"),
			Nesterov: c.Hyper["nesterov"].(bool)}
		for _, fused := range []bool{false, true} {
			n := len(c.Param0)
			p := slices.Clone(c.Param0)
			buf := make([]float32, n)
			for s, g := range c.Grads {
				h := sgdAt(hyper, int64(s+1))
				if fused {
					counts := make([]int64, 1)
					SGDStepCount(h, p, g, buf, c.Param0, DistanceRel, []float32{1e-3}, counts, 2)
				} else {
					SGDStep(h, p, g, buf, 1)
				}
				checkBits(t, c.Name+" param", p, c.Steps[s]["param"])
				if want, ok := c.Steps[s]["momentum_buffer"]; ok {
					checkBits(t, c.Name+" momentum_buffer", buf, want)
				}
			}
		}
	}
}

// TestFusedStepsCount checks that the optimizer steps fused with counting
// count exactly what CountAbove counts on the stepped parameters, and step
// exactly as the unfused forms, on every ISA, length and thread count.
func TestFusedStepsCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, n := range append(sizes(t), 3*minPerWorker+9) {
			p0, seed := makeData(rng, n, dataSpecial)
			g := make([]float32, n)
			for i := range g {
				g[i] = float32(rng.NormFloat64() * 1e-2)
			}
			m0, v0 := make([]float32, n), make([]float32, n)
			for i := range m0 {
				m0[i] = float32(rng.NormFloat64() * 1e-3)
				v0[i] = float32(rng.Float64() * 1e-4)
			}
			d := allDistances[n%3]
			h := adamwAt(update.AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1}, 7)
			pa, ma, va := slices.Clone(p0), slices.Clone(m0), slices.Clone(v0)
			AdamWStep(h, pa, g, ma, va, 1)
			ts := pickThresholds(rng, pa, seed, d, MaxThresholds)
			want := refCounts(pa, seed, d, ts)

			// The generic step is the reference for the vector paths.
			restore := SetMaxISA(Generic)
			pg, mg, vg := slices.Clone(p0), slices.Clone(m0), slices.Clone(v0)
			AdamWStep(h, pg, g, mg, vg, 1)
			restore()
			checkBits(t, "AdamW param vs generic", pa, pg)
			checkBits(t, "AdamW exp_avg vs generic", ma, mg)
			checkBits(t, "AdamW exp_avg_sq vs generic", va, vg)

			pb, mb, vb := slices.Clone(p0), slices.Clone(m0), slices.Clone(v0)
			got := make([]int64, len(ts))
			AdamWStepCount(h, pb, g, mb, vb, seed, d, ts, got, 1+n%3)
			checkBits(t, "AdamWStepCount param", pb, pa)
			checkBits(t, "AdamWStepCount exp_avg", mb, ma)
			checkBits(t, "AdamWStepCount exp_avg_sq", vb, va)
			if !slices.Equal(got, want) {
				t.Fatalf("n=%d %v: AdamWStepCount counts %v, want %v", n, d, got, want)
			}

			hs := sgdAt(update.SGD{LR: 0.1, Momentum: 0.9, Dampening: 0.1, WeightDecay: 0.01}, 2)
			ps, bs := slices.Clone(p0), slices.Clone(m0)
			SGDStep(hs, ps, g, bs, 1)
			pc, bc := slices.Clone(p0), slices.Clone(m0)
			got = make([]int64, len(ts))
			SGDStepCount(hs, pc, g, bc, seed, d, ts, got, 2)
			checkBits(t, "SGDStepCount param", pc, ps)
			if want := refCounts(ps, seed, d, ts); !slices.Equal(got, want) {
				t.Fatalf("n=%d %v: SGDStepCount counts %v, want %v", n, d, got, want)
			}
		}
	})
}

// TestFMA32 compares fma32 with a·b+c computed exactly in big.Float and
// rounded once to float32, on random operands and on cases built to land
// exactly halfway between two float32 after a first rounding to float64.
func TestFMA32(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	exact := func(a, b, c float32) float32 {
		x := new(big.Float).SetPrec(1000).SetFloat64(float64(a))
		x.Mul(x, new(big.Float).SetFloat64(float64(b)))
		x.Add(x, new(big.Float).SetFloat64(float64(c)))
		f, _ := x.Float32()
		return f
	}
	check := func(a, b, c float32) {
		t.Helper()
		if got, want := fma32(a, b, c), exact(a, b, c); !sameBits(got, want) {
			t.Fatalf("fma32(%v, %v, %v) = %v, want %v", a, b, c, got, want)
		}
	}
	for range 200000 {
		a := float32(rng.NormFloat64()) * float32(math.Ldexp(1, rng.IntN(60)-30))
		b := float32(rng.NormFloat64()) * float32(math.Ldexp(1, rng.IntN(60)-30))
		c := float32(rng.NormFloat64()) * float32(math.Ldexp(1, rng.IntN(120)-60))
		check(a, b, c)
	}
	// a·b = 1 + 2^-24 (a float32 midpoint) exactly; c a tiny nudge either
	// way that a float64 sum would round away.
	a := float32(1 + 0x1p-12)
	b := float32(1 + 0x1p-12)
	// (1+2^-12)^2 = 1 + 2^-11 + 2^-24: a midpoint between two float32.
	for _, c := range []float32{0x1p-80, -0x1p-80, 0x1p-60, -0x1p-60, 0} {
		check(a, b, c)
	}
	for _, c := range []float32{1e-45, -1e-45} {
		check(float32(math.Ldexp(1, -75)), float32(math.Ldexp(1, -75)), c)
	}
	check(math.MaxFloat32, 1, math.MaxFloat32)
}

func FuzzAdamW(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, float32(1e-3), uint8(3))
	f.Fuzz(func(t *testing.T, raw []byte, lr float32, step uint8) {
		p0, g := fuzzFloats(raw)
		n := len(p0)
		m0, v0 := slices.Clone(g), make([]float32, n)
		for i := range v0 {
			v0[i] = g[i] * g[i]
		}
		h := adamwAt(update.AdamW{LR: float64(lr), Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}, int64(step)+1)
		seed := slices.Clone(g)
		ts := []float32{0, 1e-3}
		pa, ma, va := slices.Clone(p0), slices.Clone(m0), slices.Clone(v0)
		ca := make([]int64, 2)
		AdamWStepCount(h, pa, g, ma, va, seed, DistanceInvRel, ts, ca, 1)
		restore := SetMaxISA(Generic)
		pb, mb, vb := slices.Clone(p0), slices.Clone(m0), slices.Clone(v0)
		cb := make([]int64, 2)
		AdamWStepCount(h, pb, g, mb, vb, seed, DistanceInvRel, ts, cb, 1)
		restore()
		checkBits(t, "param", pa, pb)
		checkBits(t, "exp_avg", ma, mb)
		checkBits(t, "exp_avg_sq", va, vb)
		if !slices.Equal(ca, cb) {
			t.Fatalf("counts %v, generic %v", ca, cb)
		}
	})
}
