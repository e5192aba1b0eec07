package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// gemmBenchShape is one product of the benchmarks: C is M×N, inner K.
type gemmBenchShape struct {
	m, n, k        int
	transA, transB bool
}

func (s gemmBenchShape) trans() string {
	t := [2]byte{'N', 'N'}
	if s.transA {
		t[0] = 'T'
	}
	if s.transB {
		t[1] = 'T'
	}
	return string(t[:])
}

// transformerShapes are the forward products of a BERT-base-sized layer
// with 2048 tokens (QKV/output projection, MLP up, MLP down), the backward
// products of each (dX = dY·Wᵀ is NT with (M,K,N), dW = Xᵀ·dY is TN with
// (K,N,M)), and two squares.
func transformerShapes() []gemmBenchShape {
	var out []gemmBenchShape
	for _, f := range [][3]int{{2048, 768, 768}, {2048, 3072, 768}, {2048, 768, 3072}} {
		m, n, k := f[0], f[1], f[2]
		out = append(out,
			gemmBenchShape{m, n, k, false, false},
			gemmBenchShape{m, k, n, false, true},
			gemmBenchShape{k, n, m, true, false})
	}
	return append(out, gemmBenchShape{512, 512, 512, false, false}, gemmBenchShape{1024, 1024, 1024, false, false})
}

func randomSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

// BenchmarkSgemm measures the transformer shapes per ISA on 1 and 2
// threads and reports GFLOP/s; compare with the FMA peak from
// BenchmarkPeakFMA or `dstune profile gemm`.
func BenchmarkSgemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, s := range transformerShapes() {
		a := randomSlice(rng, s.m*s.k)
		bm := randomSlice(rng, s.k*s.n)
		c := make([]float32, s.m*s.n)
		lda, ldb := s.k, s.n
		if s.transA {
			lda = s.m
		}
		if s.transB {
			ldb = s.k
		}
		for _, threads := range []int{1, 2} {
			for _, isa := range SupportedISAs() {
				name := fmt.Sprintf("shape=%dx%dx%d/trans=%s/threads=%d/isa=%v", s.m, s.n, s.k, s.trans(), threads, isa)
				b.Run(name, func(b *testing.B) {
					if isa == Generic && !testing.Short() && s.m*s.n*s.k > 1<<28 {
						b.Skip("generic path on the big shapes takes seconds a call; run with -short to include it")
					}
					defer SetMaxISA(isa)()
					b.ReportAllocs()
					for b.Loop() {
						Sgemm(threads, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, s.n)
					}
					b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// BenchmarkSgemmBatched measures attention-sized products: 64 × (128×128
// inner 64), the scores Q·Kᵀ (NT) and the weighted sum P·V (NN,
// 128×64 inner 128).
func BenchmarkSgemmBatched(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	const batch, seq, dh = 64, 128, 64
	q := randomSlice(rng, batch*seq*dh)
	k := randomSlice(rng, batch*seq*dh)
	p := randomSlice(rng, batch*seq*seq)
	scores := make([]float32, batch*seq*seq)
	out := make([]float32, batch*seq*dh)
	cases := []struct {
		name       string
		m, n, kk   int
		tA, tB     bool
		a, bb, c   []float32
		lda, ldb   int
		sa, sb, sc int
	}{
		{"QKt_128x128x64_NT", seq, seq, dh, false, true, q, k, scores, dh, dh, seq * dh, seq * dh, seq * seq},
		{"PV_128x64x128_NN", seq, dh, seq, false, false, p, k, out, seq, dh, seq * seq, seq * dh, seq * dh},
	}
	for _, cs := range cases {
		for _, threads := range []int{1, 2} {
			for _, isa := range SupportedISAs() {
				b.Run(fmt.Sprintf("%s/batch=%d/threads=%d/isa=%v", cs.name, batch, threads, isa), func(b *testing.B) {
					defer SetMaxISA(isa)()
					b.ReportAllocs()
					for b.Loop() {
						SgemmBatched(threads, cs.tA, cs.tB, cs.m, cs.n, cs.kk, 1, cs.a, cs.lda, cs.sa, cs.bb, cs.ldb, cs.sb, 0, cs.c, cs.n, cs.sc, batch)
					}
					b.ReportMetric(2*float64(cs.m*cs.n*cs.kk*batch)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// BenchmarkSgemmDenormal compares a 512³ product on normal operands with
// the same product on denormal inputs (A scaled to about 1e-39) and on
// normal inputs whose products and sums are denormal (A and B scaled to
// about 1e-20, products about 1e-40), per ISA: the slowdown, if any, of
// computing denormals exactly (Go leaves MXCSR's FTZ and DAZ off).
func BenchmarkSgemmDenormal(b *testing.B) {
	const n = 512
	rng := rand.New(rand.NewPCG(7, 8))
	a0, b0 := randomSlice(rng, n*n), randomSlice(rng, n*n)
	scaled := func(s []float32, f float32) []float32 {
		out := make([]float32, len(s))
		for i, v := range s {
			out[i] = v * f
		}
		return out
	}
	cases := []struct {
		name string
		a, b []float32
	}{
		{"normal", a0, b0},
		{"denormal-inputs", scaled(a0, 1e-39), b0},
		{"denormal-products", scaled(a0, 1e-20), scaled(b0, 1e-20)},
	}
	c := make([]float32, n*n)
	for _, isa := range SupportedISAs() {
		for _, cs := range cases {
			b.Run(fmt.Sprintf("isa=%v/values=%s", isa, cs.name), func(b *testing.B) {
				defer SetMaxISA(isa)()
				for b.Loop() {
					Sgemm(1, false, false, n, n, n, 1, cs.a, n, cs.b, n, 0, c, n)
				}
				b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkSbgemm measures the transformer shapes in bfloat16 on 1 and 2
// threads, on the AVX512_BF16 path or else the FMA path (the portable one
// takes seconds a call on these shapes), and reports GFLOP/s; compare with
// BenchmarkPeakBF16 and BenchmarkSgemm.
func BenchmarkSbgemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, s := range transformerShapes() {
		a := randomSlice(rng, s.m*s.k)
		bm := randomSlice(rng, s.k*s.n)
		c := make([]float32, s.m*s.n)
		lda, ldb := s.k, s.n
		if s.transA {
			lda = s.m
		}
		if s.transB {
			ldb = s.k
		}
		for _, threads := range []int{1, 2} {
			name := fmt.Sprintf("shape=%dx%dx%d/trans=%s/threads=%d", s.m, s.n, s.k, s.trans(), threads)
			b.Run(name, func(b *testing.B) {
				if SbgemmPath() == "go" {
					b.Skip("Sbgemm runs portable Go at this ISA (no AVX512_BF16, no FMA)")
				}
				b.ReportAllocs()
				for b.Loop() {
					Sbgemm(threads, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, s.n)
				}
				b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkSbgemmBatched measures the attention products of
// BenchmarkSgemmBatched in bfloat16.
func BenchmarkSbgemmBatched(b *testing.B) {
	rng := rand.New(rand.NewPCG(11, 12))
	const batch, seq, dh = 64, 128, 64
	q := randomSlice(rng, batch*seq*dh)
	k := randomSlice(rng, batch*seq*dh)
	p := randomSlice(rng, batch*seq*seq)
	scores := make([]float32, batch*seq*seq)
	out := make([]float32, batch*seq*dh)
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("QKt_128x128x64_NT/batch=%d/threads=%d", batch, threads), func(b *testing.B) {
			for b.Loop() {
				SbgemmBatched(threads, false, true, seq, seq, dh, 1, q, dh, seq*dh, k, dh, seq*dh, 0, scores, seq, seq*seq, batch)
			}
			b.ReportMetric(2*float64(seq*seq*dh*batch)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(fmt.Sprintf("PV_128x64x128_NN/batch=%d/threads=%d", batch, threads), func(b *testing.B) {
			for b.Loop() {
				SbgemmBatched(threads, false, false, seq, dh, seq, 1, p, seq, seq*seq, k, dh, seq*dh, 0, out, dh, seq*dh, batch)
			}
			b.ReportMetric(2*float64(seq*seq*dh*batch)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkGemmKernelRows calls each assembly micro-kernel this CPU runs
// on rows rows of A, from one tile of mr rows to mr+3, at the attention products'
// inner size (k = 64), with every operand in L1, and reports the time per
// row: a tile of fewer rows has fewer accumulator chains than the FMA
// units need, so the generated kernels split mr+t rows with a small t into
// two near-halves, and ns/row stays near the full tile's.
func BenchmarkGemmKernelRows(b *testing.B) {
	for _, kern := range sgemmKernels() {
		benchKernelRows(b, kern)
	}
	for _, kern := range sbgemmWideKernels() {
		benchKernelRows(b, kern)
	}
	for _, kern := range sbgemmKernels() {
		benchKernelRows(b, kern)
	}
}

func benchKernelRows[P packed](b *testing.B, kern *gemmKernel[P]) {
	if kern.isa == Generic || kern.isa > HardwareISA() {
		return
	}
	const kc = 64
	kp := kern.elems(kc)
	rows := kern.mr + 3
	a := make([]P, rows*kp)
	panel := make([]P, kp*kern.nr)
	for i := range a {
		a[i] = P(0x3f803f80) // 1.0 as a float32 high half and as two bfloat16s
	}
	for i := range panel {
		panel[i] = P(0x3f003f00) // 0.5 likewise
	}
	c := make([]float32, rows*kern.nr)
	for r := kern.mr; r <= rows; r++ {
		b.Run(fmt.Sprintf("kernel=%s/rows=%d", kern.name, r), func(b *testing.B) {
			for b.Loop() {
				kern.run(kp, a, kp, panel, c, kern.nr, 1, 0, r, kern.nr, 0, 0, 0, 0)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(r), "ns/row")
		})
	}
}
