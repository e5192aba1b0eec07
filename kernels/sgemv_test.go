package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func (g *gemmCase) runSgemv(threads int) {
	Sgemv(threads, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c(), g.ldc)
}

// sgemvTransCases are the layouts Sgemv takes: A as stored, B either way.
var sgemvTransCases = []transCase{transCases[0], transCases[1]}

// TestSgemvSmallExhaustive checks every m in 0..5 and n, k in 0..67, B as
// stored and transposed, per ISA, against the float64 reference within
// the rounding bound of any summation order, with guard words around and
// between the rows of C, NaN in the padding of A and B (read, it would
// show in C) and NaN in C whenever beta is 0.
func TestSgemvSmallExhaustive(t *testing.T) {
	const maxM, maxDim = 5, 67
	rng := rand.New(rand.NewPCG(31, 32))
	g := newGemmBase(rng, maxM, maxDim, maxDim)
	forISAs(t, func(t *testing.T, isa ISA) {
		var out gemmOut
		wants := make([]gemmWant, len(alphaBetas))
		for k := 0; k <= maxDim; k++ {
			for i, ab := range alphaBetas {
				g.expect(&wants[i], k, ab.alpha, ab.beta)
			}
			for m := 0; m <= maxM; m++ {
				for n := 0; n <= maxDim; n++ {
					for ti, tc := range sgemvTransCases {
						which := (m + 2*n + 3*k + ti) % len(alphaBetas)
						ab := alphaBetas[which]
						a, lda, b, ldb := g.operands(false, tc.transB)
						out.reset(g, m, n, max(n, 1)+(m+k+ti)%3, ab.beta == 0)
						Sgemv(1, tc.transB, m, n, k, ab.alpha, a, lda, b, ldb, ab.beta, out.c, out.ldc)
						if msg := out.check(g, &wants[which]); msg != "" {
							t.Fatalf("%s m=%d n=%d k=%d ldc=%d alpha=%v beta=%v: %s", tc.name, m, n, k, out.ldc, ab.alpha, ab.beta, msg)
						}
					}
				}
			}
		}
	})
}

// TestSgemvMatchesSgemm checks odd and long shapes (1, 3, 17, 33, 1000 and
// more in n and k) of up to five rows per ISA against the float64
// reference and against Sgemm (each within the rounding bound of the
// reference, so within twice it of each other), and that 2 and 3 threads
// give the bits of 1.
func TestSgemvMatchesSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1 // split even the small products
	dims := []int{1, 3, 17, 33, 1000, 1031}
	var cases []*gemmCase
	for i := range 40 {
		m := 1 + i%5
		n, k := dims[rng.IntN(len(dims))], dims[rng.IntN(len(dims))]
		ab := alphaBetas[i%len(alphaBetas)]
		cases = append(cases, newGemmCase(rng, false, i%2 == 1, m, n, k, ab.alpha, ab.beta))
	}
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, g := range cases {
			g.reset()
			g.run(1)
			gemm := slices.Clone(g.c())
			g.reset()
			g.runSgemv(1)
			g.check(t, "Sgemv "+g.String())
			want, tol := refGemm(false, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c0[guardWords:], g.ldc)
			for i := range tol {
				tol[i] *= 2
			}
			for i := range g.m {
				for j := range g.n {
					want[i*g.n+j] = float64(gemm[i*g.ldc+j])
				}
			}
			checkGemm(t, "Sgemv against Sgemm "+g.String(), g.m, g.n, g.c(), g.ldc, want, tol)
			one := slices.Clone(g.cbuf)
			for _, threads := range []int{2, 3} {
				g.reset()
				g.runSgemv(threads)
				if i := firstBitDifference(g.cbuf, one); i >= 0 {
					t.Fatalf("%v: threads=%d differs from threads=1 at word %d: %v vs %v", g, threads, i, g.cbuf[i], one[i])
				}
			}
		}
	})
}

// TestSgemvBatched checks batched products — with gaps between the
// matrices, and with A or B shared by every product (stride 0: a cache
// broadcast over heads) — against one Sgemv call per product (the same
// bits) and the float64 reference, on 1, 2, 3 and 8 threads (the same
// bits), per ISA.
func TestSgemvBatched(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, layout := range []string{"separate", "shared B", "shared A"} {
			for i, sh := range [][4]int{{3, 1, 17, 9}, {5, 2, 40, 33}, {4, 1, 1000, 64}, {7, 1, 1, 1}, {8, 3, 64, 1031}, {2, 4, 33, 3}} {
				transB := i%2 == 1
				ab, batch, m, n, k := alphaBetas[i%len(alphaBetas)], sh[0], sh[1], sh[2], sh[3]
				lda, ldb, ldc := k+1, n+2, n+3
				if transB {
					ldb = k + 2
				}
				strideA, strideB, strideC := m*lda+5, ldb*max(n, k)+1, m*ldc+7
				switch layout {
				case "shared B":
					strideB = 0
				case "shared A":
					strideA = 0
				}
				a := randomSlice(rng, (batch-1)*strideA+m*lda)
				b := randomSlice(rng, (batch-1)*strideB+max(n, k)*ldb)
				c0 := randomSlice(rng, (batch-1)*strideC+m*ldc)
				want := slices.Clone(c0)
				for p := range batch {
					Sgemv(1, transB, m, n, k, ab.alpha, a[p*strideA:], lda, b[p*strideB:], ldb, ab.beta, want[p*strideC:], ldc)
					w, tol := refGemm(false, transB, m, n, k, ab.alpha, a[p*strideA:], lda, b[p*strideB:], ldb, ab.beta, c0[p*strideC:], ldc)
					checkGemm(t, fmt.Sprintf("product %d of %v %s", p, sh, layout), m, n, want[p*strideC:], ldc, w, tol)
				}
				for _, threads := range []int{1, 2, 3, 8} {
					got := slices.Clone(c0)
					SgemvBatched(threads, transB, m, n, k, ab.alpha, a, lda, strideA, b, ldb, strideB, ab.beta, got, ldc, strideC, batch)
					if j := firstBitDifference(got, want); j >= 0 {
						t.Fatalf("transB=%v batch×m×n×k=%v layout=%s threads=%d: word %d = %v, want %v (per-product Sgemv)", transB, sh, layout, threads, j, got[j], want[j])
					}
				}
			}
		}
	})
}

// TestGemvKernelsAnySplit: the two kernels give every element of C the
// same bits whichever call computes it (C cut at random points, which is
// what lets threads split C), and gemvAccF32's sums are FMAs in row order
// (fma32, bit for bit) on the assembly paths, so the same on AVX2 and
// AVX-512. Guard words catch writes past a piece.
func TestGemvKernelsAnySplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	forISAs(t, func(t *testing.T, isa ISA) {
		for range 300 {
			n, k := 1+rng.IntN(300), rng.IntN(80)
			if rng.IntN(8) == 0 {
				n = 1 + rng.IntN(3000)
			}
			ldb := max(n, k) + rng.IntN(5)
			x := elemRandSlice(rng, k, 2, false)
			b := elemRandSlice(rng, max(n, k)*ldb, 2, false)
			for _, dot := range []bool{false, true} {
				run := func(c []float32, j0 int) {
					if dot {
						gemvDotF32(c, x, b[j0*ldb:][:(len(c)-1)*ldb+k], ldb)
						return
					}
					clear(c)
					gemvAccF32(c, x, b[j0:][:max(k-1, 0)*ldb+len(c)], ldb)
				}
				if k == 0 && !dot {
					continue // gemvAccF32 reads nothing and adds nothing
				}
				whole := newElemGuarded(n)
				run(whole.s(), 0)
				whole.check(t, fmt.Sprintf("dot=%v n=%d k=%d whole", dot, n, k))
				cuts := []int{0, rng.IntN(n + 1), rng.IntN(n + 1), n}
				slices.Sort(cuts)
				for c := range 3 {
					j0, j1 := cuts[c], cuts[c+1]
					if j0 == j1 {
						continue
					}
					piece := newElemGuarded(j1 - j0)
					run(piece.s(), j0)
					piece.check(t, fmt.Sprintf("dot=%v n=%d k=%d piece [%d, %d)", dot, n, k, j0, j1))
					if i := firstBitDifference(piece.s(), whole.s()[j0:j1]); i >= 0 {
						t.Fatalf("dot=%v n=%d k=%d ldb=%d: element %d computed in [%d, %d) is %v, in one call %v", dot, n, k, ldb, j0+i, j0, j1, piece.s()[i], whole.s()[j0+i])
					}
				}
				if dot || isa == Generic {
					continue
				}
				for j, got := range whole.s() {
					var want float32
					for p := range k {
						want = fma32(x[p], b[p*ldb+j], want)
					}
					if math.Float32bits(got) != math.Float32bits(want) {
						t.Fatalf("gemvAccF32 n=%d k=%d: c[%d] = %v, want %v (FMAs in row order)", n, k, j, got, want)
					}
				}
			}
		}
	})
}

// TestSgemvSpecialValues puts NaN, ±Inf, -0 and denormals into A and B:
// they propagate as in the float64 reference, denormals computed exactly,
// per ISA.
func TestSgemvSpecialValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(39, 40))
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1)), 1e-40, -3e-39}
	forISAs(t, func(t *testing.T, isa ISA) {
		for i := range 40 {
			g := newGemmCase(rng, false, i%2 == 1, 1+rng.IntN(4), 1+rng.IntN(150), 1+rng.IntN(70), 1, 0)
			for range 1 + rng.IntN(3) {
				g.a[rng.IntN(len(g.a))] = specials[rng.IntN(len(specials))]
				g.b[rng.IntN(len(g.b))] = specials[rng.IntN(len(specials))]
			}
			g.reset()
			g.runSgemv(1)
			g.check(t, "specials "+g.String())
		}
		g := newGemmCase(rng, false, false, 2, 37, 29, 1, 0)
		for j := range g.a {
			g.a[j] *= 1e-20
		}
		for j := range g.b {
			g.b[j] *= 1e-20
		}
		g.reset()
		g.runSgemv(1)
		want, _ := refGemm(false, false, g.m, g.n, g.k, 1, g.a, g.lda, g.b, g.ldb, 0, nil, g.ldc)
		for i := range g.m {
			for j := range g.n {
				if d := math.Abs(float64(g.c()[i*g.ldc+j]) - want[i*g.n+j]); d > float64(g.k+3)*1.4e-45 {
					t.Fatalf("denormal C[%d,%d] = %v, want %v", i, j, g.c()[i*g.ldc+j], want[i*g.n+j])
				}
			}
		}
	})
}

// TestSgemvAlphaZeroKZero: alpha == 0 or k == 0 leaves C = beta·C without
// reading A or B, and beta == 0 clears C even if it held NaN.
func TestSgemvAlphaZeroKZero(t *testing.T) {
	nan := float32(math.NaN())
	a := []float32{nan, nan, nan, nan, nan, nan}
	b := []float32{nan, nan, nan, nan, nan, nan}
	for _, transB := range []bool{false, true} {
		for _, k := range []int{0, 2} {
			for _, beta := range []float32{0, 1, -2} {
				c := []float32{1, 2, 3, nan, 4, 5, 6}
				alpha := float32(0)
				if k == 0 {
					alpha = 1
				}
				ldb := 3
				if transB {
					ldb = 2
				}
				Sgemv(1, transB, 2, 3, k, alpha, a, max(k, 1), b, ldb, beta, c, 4)
				for i, want := range []float32{beta * 1, beta * 2, beta * 3, nan, beta * 4, beta * 5, beta * 6} {
					if i == 3 {
						if !math.IsNaN(float64(c[i])) {
							t.Fatalf("k=%d beta=%v: gap word written: %v", k, beta, c[i])
						}
						continue
					}
					if c[i] != want {
						t.Fatalf("transB=%v k=%d alpha=%v beta=%v: c[%d] = %v, want %v", transB, k, alpha, beta, i, c[i], want)
					}
				}
			}
		}
	}
}

// TestSgemvPanics: programmer errors panic with constant "kernels: "
// messages before anything is written.
func TestSgemvPanics(t *testing.T) {
	buf := make([]float32, 100)
	for name, call := range map[string]func(){
		"negative n":     func() { Sgemv(1, false, 1, -2, 2, 1, buf, 2, buf, 2, 0, buf, 2) },
		"lda":            func() { Sgemv(1, false, 2, 2, 3, 1, buf, 2, buf, 2, 0, buf, 2) },
		"ldb transposed": func() { Sgemv(1, true, 2, 2, 3, 1, buf, 3, buf, 2, 0, buf, 2) },
		"short b":        func() { Sgemv(1, false, 2, 5, 5, 1, buf, 5, buf[:24], 5, 0, buf, 5) },
		"short c":        func() { Sgemv(1, false, 5, 5, 2, 1, buf, 2, buf, 5, 0, buf[:24], 5) },
		"batch":          func() { SgemvBatched(1, false, 2, 2, 2, 1, buf, 2, 4, buf, 2, 4, 0, buf, 2, 4, -1) },
		"overlap":        func() { SgemvBatched(1, false, 2, 2, 2, 1, buf, 2, 4, buf, 2, 4, 0, buf, 2, 0, 2) },
		"short batch a":  func() { SgemvBatched(1, false, 1, 2, 2, 1, buf[:20], 2, 10, buf, 2, 0, 0, buf, 2, 4, 4) },
		"short batch c":  func() { SgemvBatched(1, false, 2, 2, 2, 1, buf, 2, 4, buf, 2, 4, 0, buf[:20], 2, 4, 6) },
	} {
		mustPanic(t, name, call)
	}
}

// TestSgemvNoAllocs: steady-state calls do not allocate, on 1 or 2
// threads, batched or not (the small batched product split too).
func TestSgemvNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's bookkeeping allocates")
	}
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1
	rng := rand.New(rand.NewPCG(41, 42))
	a, b, c := randomSlice(rng, 4*2048), randomSlice(rng, 2048*2048), make([]float32, 4*2048)
	for _, threads := range []int{1, 2} {
		for _, transB := range []bool{false, true} {
			call := func() { Sgemv(threads, transB, 1, 2048, 2048, 1, a, 2048, b, 2048, 0, c, 2048) }
			if allocs := testing.AllocsPerRun(5, call); allocs != 0 {
				t.Errorf("Sgemv transB=%v threads=%d: %v allocations a call", transB, threads, allocs)
			}
		}
		batched := func() { SgemvBatched(threads, true, 1, 2048, 64, 1, a, 64, 64, b, 64, 2048*64, 0, c, 2048, 2048, 4) }
		if allocs := testing.AllocsPerRun(5, batched); allocs != 0 {
			t.Errorf("SgemvBatched threads=%d: %v allocations a call", threads, allocs)
		}
	}
}

// FuzzSgemv compares every ISA with the float64 reference on fuzzed shapes
// (up to 4 rows, 200 columns and inner indices), B's layout, alpha, beta,
// leading dimensions, thread counts and sprinkled special values.
func FuzzSgemv(f *testing.F) {
	f.Add(uint8(1), uint8(7), uint8(3), uint8(0), float32(1), float32(0), uint64(1))
	f.Add(uint8(2), uint8(133), uint8(17), uint8(0x1f), float32(-0.5), float32(2), uint64(2))
	f.Add(uint8(4), uint8(1), uint8(199), uint8(0xa6), float32(3), float32(-1), uint64(3))
	f.Fuzz(func(t *testing.T, m8, n8, k8, flags uint8, alpha, beta float32, seed uint64) {
		m, n, k := int(m8)%5, int(n8)%201, int(k8)%201
		transB := flags&1 != 0
		threads := 1 + int(flags>>1)&1
		specials := int(flags>>3) & 3
		if math.IsNaN(float64(alpha)) || math.IsInf(float64(alpha), 0) || math.Abs(float64(alpha)) > 1e6 {
			alpha = 1
		}
		if math.IsNaN(float64(beta)) || math.IsInf(float64(beta), 0) || math.Abs(float64(beta)) > 1e6 {
			beta = 0
		}
		defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
		minFlopsPerWorker = 1 // two threads split even these small products
		rng := rand.New(rand.NewPCG(seed, 43))
		g := newGemmCase(rng, false, transB, m, n, k, alpha, beta)
		g.sprinkle(rng, specials)
		forISAs(t, func(t *testing.T, isa ISA) {
			g.reset()
			g.runSgemv(threads)
			g.checkFuzzed(t)
		})
	})
}
