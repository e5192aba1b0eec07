package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/update"
)

// toBF16 rounds x to bfloat16 (nearest, ties to even; denormals to ±0),
// written here from the format's definition.
func toBF16(x float32) float64 {
	bits := math.Float32bits(x)
	if bits&0x7f800000 == 0 {
		return math.Copysign(0, float64(x))
	}
	bits += 0x7fff + (bits>>16)&1
	return float64(math.Float32frombits(bits &^ 0xffff))
}

// productRef is op(A)·op(B) (row-major [m,k]·[k,n] after the transposes)
// in float64 from operands passed through round.
func productRef(a, b []float32, m, n, k int, transA, transB bool, round func(float32) float64) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				ai, bi := i*k+p, p*n+j
				if transA {
					ai = p*m + i
				}
				if transB {
					bi = j*k + p
				}
				s += round(a[ai]) * round(b[bi])
			}
			out[i*n+j] = s
		}
	}
	return out
}

// TestBF16Products checks accel.PrecisionBF16: the products that depend
// on a parameter (a MatMul reading a transposed weight, a Gemm with a
// bias, a batched product of two such values) multiply bfloat16-rounded
// operands with float32 sums, a product of an input and a constant stays
// float32, and the default precision is float32 throughout.
func TestBF16Products(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(21, 22))
		const m, n, k = 6, 5, 40
		b := ir.NewBuilder("g")
		x := b.Input("x", ir.Float32, ir.Shape{m, k})
		wT := randTensor(rng, ir.Float32, ir.Shape{n, k}, -1, 1)
		w := b.Param("w", wT)
		y := b.Op1(&ir.MatMul{}, x, b.Op1(&ir.Transpose{Perm: []int{1, 0}}, w)) // x·wᵀ
		g2 := randTensor(rng, ir.Float32, ir.Shape{m, k}, -1, 1)
		bias := randTensor(rng, ir.Float32, ir.Shape{k}, -1, 1)
		z := b.Op1(&ir.Gemm{TransA: true, Alpha: 1, Beta: 1}, y, b.Param("g", g2), b.Param("bias", bias)) // yᵀ·g + bias
		pos := b.Input("pos", ir.Float32, ir.Shape{m, 1})
		freq := ir.NewTensor(ir.Float32, ir.Shape{1, k})
		for i := range freq.Float32s() {
			freq.Float32s()[i] = float32(math.Pow(10000, -float64(i)/k))
		}
		angles := b.Op1(&ir.MatMul{}, pos, b.Const(freq))
		b.Output("y", y)
		b.Output("z", z)
		b.Output("angles", angles)
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		xv := randTensor(rng, ir.Float32, ir.Shape{m, k}, -1, 1)
		pv := ir.NewTensor(ir.Float32, ir.Shape{m, 1})
		for i := range pv.Float32s() {
			pv.Float32s()[i] = float32(100 + 37*i)
		}
		inputs := []*ir.Tensor{xv, pv}
		run := func(p accel.Precision) []*ir.Tensor {
			exe, err := Compile(g, accel.Options{Threads: 2, Precision: p})
			if err != nil {
				t.Fatal(err)
			}
			out, err := exe.Run(inputs)
			if err != nil {
				t.Fatal(err)
			}
			res := make([]*ir.Tensor, len(out))
			for i, o := range out {
				res[i] = o.Clone()
			}
			return res
		}
		exact := func(v float32) float64 { return float64(v) }
		check := func(name string, got []float32, want []float64, k int) {
			t.Helper()
			for i, w := range want {
				// float32 sums of k terms of magnitude ≤ 1
				if d := math.Abs(float64(got[i]) - w); d > float64(k+2)*0x1p-24*(math.Abs(w)+float64(k)) {
					t.Fatalf("%s[%d] = %v, want %v (|Δ| %g)", name, i, got[i], w, d)
				}
			}
		}
		bf := run(accel.PrecisionBF16)
		yWant := productRef(xv.Float32s(), wT.Float32s(), m, n, k, false, true, toBF16)
		check("y", bf[0].Float32s(), yWant, k)
		zWant := productRef(bf[0].Float32s(), g2.Float32s(), n, k, m, true, false, toBF16)
		for i := range zWant {
			zWant[i] += float64(bias.Float32s()[i%k])
		}
		check("z", bf[1].Float32s(), zWant, m)
		fp := run("")
		anglesWant := productRef(pv.Float32s(), freq.Float32s(), m, k, 1, false, false, exact)
		for _, out := range [][]*ir.Tensor{bf, fp} {
			for i, v := range out[2].Float32s() {
				if float64(v) != float32Round(anglesWant[i]) {
					t.Fatalf("angles[%d] = %v, want %v: a product without parameters must stay float32", i, v, anglesWant[i])
				}
			}
		}
		check("y (fp32)", fp[0].Float32s(), productRef(xv.Float32s(), wT.Float32s(), m, n, k, false, true, exact), k)
		if same(bf[0].Float32s(), fp[0].Float32s()) {
			t.Error("bf16 and fp32 products agree bit for bit: the operands were not rounded")
		}
	})
	if _, err := Compile(&ir.Graph{}, accel.Options{Precision: "fp8"}); err == nil {
		t.Error("an unknown precision compiled")
	}
}

func float32Round(x float64) float64 { return float64(float32(x)) }

func same(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPeakGFLOPS checks that the backend reports a peak for each
// precision, and the bfloat16 one above the float32 one where the CPU has
// bfloat16 dot products.
func TestPeakGFLOPS(t *testing.T) {
	b := New()
	fp := b.PeakGFLOPS(accel.Options{Threads: 1})
	bf := b.PeakGFLOPS(accel.Options{Threads: 1, Precision: accel.PrecisionBF16})
	if fp <= 0 || bf <= 0 {
		t.Fatalf("peaks %v (fp32), %v (bf16), want > 0", fp, bf)
	}
	if kernels.SbgemmAccelerated() && bf < fp {
		t.Errorf("bf16 peak %.1f below the fp32 peak %.1f on a CPU with bfloat16 dot products", bf, fp)
	}
	if b.PeakGFLOPS(accel.Options{Precision: "fp8"}) != 0 {
		t.Error("a peak for an unknown precision")
	}
}

// TestTrainerSeedsInPlace: a selection's seed is read in place from
// update.Program.Seeds where they hold the parameter's values, and copied
// where they differ or are missing; MemoryUse tells the two apart.
func TestTrainerSeedsInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	a := randTensor(rng, ir.Float32, ir.Shape{4, 8}, -1, 1)
	b := randTensor(rng, ir.Float32, ir.Shape{16}, -1, 1)
	c := randTensor(rng, ir.Float32, ir.Shape{3}, -1, 1)
	params := []*ir.Param{{Name: "a", Tensor: a}, {Name: "b", Tensor: b}, {Name: "c", Tensor: c}}
	inFile := append([]float32(nil), a.Float32s()...) // the same values in storage of their own
	other := append([]float32(nil), b.Float32s()...)
	other[5] = -other[5] // not b's values
	sel := &update.Selection{Distance: update.DistanceAbs, Bisection: update.DefaultBisection, BandCap: 1 << 10,
		Units: []update.Unit{{Name: "u", K: 4, Pieces: []update.Piece{{Param: "a"}, {Param: "b"}, {Param: "c"}}}}}
	prog := &update.Program{Optimizer: update.Optimizer{Name: update.OptimizerSGD, SGD: &update.SGD{LR: 0.1}}, Selection: sel,
		Seeds: map[string][]float32{"a": inFile, "b": other}}
	tr, err := New().NewTrainer(params, prog, accel.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ct := tr.(*trainer)
	if pa := ct.params[0]; &pa.seed[0] != &inFile[0] || !pa.seedShared {
		t.Error("a's seed was copied, not read in place")
	}
	for i, name := range []string{"b", "c"} {
		p := ct.params[1+i]
		if p.seedShared || &p.seed[0] == &p.value[0] || !sameBits(p.seed, p.value) {
			t.Errorf("%s's seed is not a copy of its values", name)
		}
	}
	mu := ct.MemoryUse()
	if mu.SeedShared != 4*32 || mu.Seed != 4*(16+3) {
		t.Errorf("MemoryUse: seed %d copied, %d in place; want %d, %d", mu.Seed, mu.SeedShared, 4*19, 4*32)
	}
}

// TestTrainerStateView: StateView shows the parameters and the optimizer
// slots in place, with State's values.
func TestTrainerStateView(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	a := randTensor(rng, ir.Float32, ir.Shape{4, 8}, -1, 1)
	prog := &update.Program{Optimizer: update.Optimizer{Name: update.OptimizerAdamW, AdamW: &update.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}}}
	tr, err := New().NewTrainer([]*ir.Param{{Name: "a", Tensor: a}}, prog, accel.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ct := tr.(*trainer)
	for _, s := range ct.params[0].slots {
		for i := range s.Data {
			s.Data[i] = rng.Float32()
		}
	}
	copied, err := tr.State()
	if err != nil {
		t.Fatal(err)
	}
	view, err := ct.StateView()
	if err != nil {
		t.Fatal(err)
	}
	if v := view.Params["a"]; &v[0] != &a.Float32s()[0] || !sameBits(v, copied.Params["a"]) {
		t.Error("the parameter's view is not its storage with State's values")
	}
	for i, s := range view.Optimizer["a"] {
		c := copied.Optimizer["a"][i]
		if &s.Data[0] != &ct.params[0].slots[i].Data[0] || s.Name != c.Name || !sameBits(s.Data, c.Data) {
			t.Errorf("slot %s: not the trainer's storage with State's values", s.Name)
		}
	}
}
