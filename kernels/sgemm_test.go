package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// guardBits fills everything around and between the rows of C: a NaN with a
// payload no arithmetic produces, compared bit for bit afterwards.
const guardBits = 0x7fa5a5a5

var guardNaN = math.Float32frombits(guardBits)

type transCase struct {
	name           string
	transA, transB bool
}

var transCases = []transCase{{"NN", false, false}, {"NT", false, true}, {"TN", true, false}, {"TT", true, true}}

// gemmBase holds random base matrices A (maxM×maxK) and B (maxK×maxN),
// each stored plainly and transposed with leading dimensions wider than
// the matrices (the padding is guard NaN), an initial C (maxM×maxN), and
// prefix sums over the inner index: ref[p][i][j] is Σ_{q<p} A(i,q)·B(q,j)
// in float64, abs the same over |A|·|B|. Every product of top-left
// submatrices is then checked against ref in O(m·n).
type gemmBase struct {
	maxM, maxN, maxK int
	a, aT            []float32 // a[i*lda+p], aT[p*ldaT+i]
	b, bT            []float32 // b[p*ldb+j], bT[j*ldbT+p]
	lda, ldaT        int
	ldb, ldbT        int
	ref, abs         []float64 // [(p*maxM+i)*maxN+j], p in [0, maxK]
	c0               []float32 // C's initial values, c0[i*maxN+j]
}

func newGemmBase(rng *rand.Rand, maxM, maxN, maxK int) *gemmBase {
	g := &gemmBase{maxM: maxM, maxN: maxN, maxK: maxK}
	g.lda, g.ldaT, g.ldb, g.ldbT = maxK+3, maxM+5, maxN+1, maxK+7
	g.a = make([]float32, maxM*g.lda)
	g.aT = make([]float32, maxK*g.ldaT)
	g.b = make([]float32, maxK*g.ldb)
	g.bT = make([]float32, maxN*g.ldbT)
	for _, s := range [][]float32{g.a, g.aT, g.b, g.bT} {
		for i := range s {
			s[i] = guardNaN // the padding must never be read
		}
	}
	for i := range maxM {
		for p := range maxK {
			v := float32(rng.NormFloat64())
			g.a[i*g.lda+p], g.aT[p*g.ldaT+i] = v, v
		}
	}
	for p := range maxK {
		for j := range maxN {
			v := float32(rng.NormFloat64())
			g.b[p*g.ldb+j], g.bT[j*g.ldbT+p] = v, v
		}
	}
	g.c0 = make([]float32, maxM*maxN)
	for i := range g.c0 {
		g.c0[i] = float32(rng.NormFloat64())
	}
	g.ref, g.abs = g.prefixSums(func(v float32) float32 { return v })
	return g
}

// prefixSums returns ref[p][i][j] = Σ_{q<p} round(A(i,q))·round(B(q,j)) in
// float64 and abs, the same over the magnitudes.
func (g *gemmBase) prefixSums(round func(float32) float32) (ref, abs []float64) {
	plane := g.maxM * g.maxN
	ref = make([]float64, (g.maxK+1)*plane)
	abs = make([]float64, (g.maxK+1)*plane)
	for p := range g.maxK {
		for i := range g.maxM {
			aip := float64(round(g.a[i*g.lda+p]))
			for j := range g.maxN {
				prod := aip * float64(round(g.b[p*g.ldb+j]))
				at := (p*g.maxM+i)*g.maxN + j
				ref[at+plane] = ref[at] + prod
				abs[at+plane] = abs[at] + math.Abs(prod)
			}
		}
	}
	return ref, abs
}

// operands returns A and B laid out for the transposes.
func (g *gemmBase) operands(transA, transB bool) (a []float32, lda int, b []float32, ldb int) {
	a, lda = g.a, g.lda
	if transA {
		a, lda = g.aT, g.ldaT
	}
	b, ldb = g.b, g.ldb
	if transB {
		b, ldb = g.bT, g.ldbT
	}
	return
}

// gemmOut is C with guard words before, after and between its rows, for
// one shape at a time: reset lays out C for m×n with stride ldc, filled
// with the base C0 (or NaN when beta is 0) and guardNaN everywhere else.
type gemmOut struct {
	buf       []float32
	c         []float32 // buf[guardWords:], row i at c[i*ldc:]
	m, n, ldc int
}

const guardWords = 19

func (o *gemmOut) reset(g *gemmBase, m, n, ldc int, nanC bool) {
	o.m, o.n, o.ldc = m, n, ldc
	size := 0
	if m > 0 {
		size = (m-1)*ldc + n
	}
	if cap(o.buf) < size+2*guardWords {
		o.buf = make([]float32, size+2*guardWords)
	}
	o.buf = o.buf[:size+2*guardWords]
	for i := range o.buf {
		o.buf[i] = guardNaN
	}
	o.c = o.buf[guardWords : guardWords+size]
	for i := range m {
		row := o.c[i*ldc : i*ldc+n]
		if nanC {
			for j := range row {
				row[j] = float32(math.NaN())
			}
		} else {
			copy(row, g.c0[i*g.maxN:])
		}
	}
}

// gemmWant is the expected C of every shape for one k, alpha and beta:
// C[i,j] in [lo, hi] = [want-tol, want+tol] rounded outwards to float32 at
// bounds[2*(i*maxN+j)]. tol is the float32 rounding error of any summation
// order: k+3 roundings of terms whose magnitudes sum to |alpha|·Σ|A||B| +
// |beta·C0|.
type gemmWant struct {
	bounds []float32
}

func (g *gemmBase) expect(dst *gemmWant, k int, alpha, beta float32) {
	g.expectWith(dst, g.ref, g.abs, k, alpha, beta, func(k int, terms, scaledC float64) float64 {
		const eps = 1.0 / (1 << 23)
		return float64(k+3)*eps*(terms+scaledC) + 1e-37
	})
}

// expectWith fills dst from the prefix sums ref and abs with tolerance
// tol(k, |alpha|·Σ|A||B|, |beta·C0|).
func (g *gemmBase) expectWith(dst *gemmWant, ref, abs []float64, k int, alpha, beta float32, tol func(k int, terms, scaledC float64) float64) {
	plane := g.maxM * g.maxN
	if len(dst.bounds) != 2*plane {
		dst.bounds = make([]float32, 2*plane)
	}
	ref, abs = ref[k*plane:][:plane], abs[k*plane:][:plane]
	for i := range plane {
		want := float64(alpha) * ref[i]
		terms := math.Abs(float64(alpha)) * abs[i]
		scaledC := 0.0
		if beta != 0 {
			c0 := float64(beta) * float64(g.c0[i])
			want += c0
			scaledC = math.Abs(c0)
		}
		tol := tol(k, terms, scaledC)
		dst.bounds[2*i] = math.Nextafter32(float32(want-tol), float32(math.Inf(-1)))
		dst.bounds[2*i+1] = math.Nextafter32(float32(want+tol), float32(math.Inf(1)))
	}
}

// check compares C with the expectation and the guards with guardNaN,
// returning a description of the first difference or "".
func (o *gemmOut) check(g *gemmBase, w *gemmWant) string {
	for i, v := range o.buf[:guardWords] {
		if math.Float32bits(v) != guardBits {
			return fmt.Sprintf("guard word %d before C overwritten with %v", i, v)
		}
	}
	for i, v := range o.buf[guardWords+len(o.c):] {
		if math.Float32bits(v) != guardBits {
			return fmt.Sprintf("guard word %d after C overwritten with %v", i, v)
		}
	}
	for i := range o.m {
		row := o.c[i*o.ldc:][:o.n]
		bounds := w.bounds[2*i*g.maxN:][:2*o.n]
		for j, v := range row {
			lo, hi := bounds[2*j], bounds[2*j+1]
			if !(v >= lo && v <= hi) {
				return fmt.Sprintf("C[%d,%d] = %v, want in [%v, %v]", i, j, v, lo, hi)
			}
		}
		if i+1 < o.m {
			for j, v := range o.c[i*o.ldc+o.n : (i+1)*o.ldc] {
				if math.Float32bits(v) != guardBits {
					return fmt.Sprintf("gap word C[%d,%d] overwritten with %v", i, o.n+j, v)
				}
			}
		}
	}
	return ""
}

// alphaBetas are cycled through the exhaustive loop; beta == 0 runs with
// NaN in C, which must not propagate.
type alphaBeta struct{ alpha, beta float32 }

var alphaBetas = []alphaBeta{
	{1, 0}, {0.75, 1}, {-1.5, 0.5}, {2, 0}, {1, -1},
}

// TestSgemmSmallExhaustive checks every m, n, k in 0..67 and all four
// transposes per ISA against the float64 reference, with guard words
// around and between the rows of C, leading dimensions larger than the
// widths, and NaN in C whenever beta is 0. The generic ISA, whose
// micro-kernel has no unrolling in k and whose packing code is the one the
// SIMD paths also use, gets one transpose per shape in turn (all four with
// DSTUNE_GEMM_EXHAUSTIVE=1): its scalar arithmetic would otherwise take
// most of a minute.
func TestSgemmSmallExhaustive(t *testing.T) {
	const maxDim = 67
	rng := rand.New(rand.NewPCG(1, 2))
	g := newGemmBase(rng, maxDim, maxDim, maxDim)
	all := os.Getenv("DSTUNE_GEMM_EXHAUSTIVE") == "1"
	forISAs(t, func(t *testing.T, isa ISA) {
		var out gemmOut
		wants := make([]gemmWant, len(alphaBetas))
		for k := 0; k <= maxDim; k++ {
			for i, ab := range alphaBetas {
				g.expect(&wants[i], k, ab.alpha, ab.beta)
			}
			for m := 0; m <= maxDim; m++ {
				for n := 0; n <= maxDim; n++ {
					for ti, tc := range transCases {
						if isa == Generic && !all && ti != (m+n+k)%len(transCases) {
							continue
						}
						which := (m + 2*n + 3*k + ti) % len(alphaBetas)
						ab := alphaBetas[which]
						a, lda, b, ldb := g.operands(tc.transA, tc.transB)
						out.reset(g, m, n, max(n, 1)+(m+k+ti)%3, ab.beta == 0)
						Sgemm(1, tc.transA, tc.transB, m, n, k, ab.alpha, a, lda, b, ldb, ab.beta, out.c, out.ldc)
						if msg := out.check(g, &wants[which]); msg != "" {
							t.Fatalf("%s m=%d n=%d k=%d ldc=%d alpha=%v beta=%v: %s", tc.name, m, n, k, out.ldc, ab.alpha, ab.beta, msg)
						}
					}
				}
			}
		}
	})
}

// refGemm computes alpha·op(A)·op(B) + beta·C in float64 (C's values taken
// from c; beta == 0 ignores them) and the rounding bound of each element
// (see gemmWant), both m×n with stride n.
func refGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) (want, tol []float64) {
	const eps = 1.0 / (1 << 23)
	want, tol = make([]float64, m*n), make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s, bound float64
			for p := range k {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				prod := float64(av) * float64(bv)
				s += prod
				bound += math.Abs(prod)
			}
			s *= float64(alpha)
			bound *= math.Abs(float64(alpha))
			if beta != 0 {
				c0 := float64(beta) * float64(c[i*ldc+j])
				s += c0
				bound += math.Abs(c0)
			}
			want[i*n+j], tol[i*n+j] = s, float64(k+3)*eps*bound+1e-37
		}
	}
	return want, tol
}

// checkGemm compares C with refGemm's result: NaN where the reference is
// NaN, the same infinity, otherwise within the bound.
func checkGemm(t *testing.T, what string, m, n int, c []float32, ldc int, want, tol []float64) {
	t.Helper()
	for i := range m {
		for j := range n {
			got, w := float64(c[i*ldc+j]), want[i*n+j]
			switch {
			case math.IsNaN(w):
				if !math.IsNaN(got) {
					t.Fatalf("%s: C[%d,%d] = %v, want NaN", what, i, j, got)
				}
			case math.IsInf(w, 0):
				if got != w {
					t.Fatalf("%s: C[%d,%d] = %v, want %v", what, i, j, got, w)
				}
			case !(math.Abs(got-w) <= tol[i*n+j]):
				t.Fatalf("%s: C[%d,%d] = %v, want %v ± %.3g", what, i, j, got, w, tol[i*n+j])
			}
		}
	}
}

// gemmCase is one randomly laid out product: operands with leading
// dimensions wider than needed, guard words around C.
type gemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b           []float32
	lda, ldb, ldc  int
	cbuf           []float32 // guardWords, C, guardWords
	c0             []float32 // C before the call
}

func newGemmCase(rng *rand.Rand, transA, transB bool, m, n, k int, alpha, beta float32) *gemmCase {
	g := &gemmCase{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	g.lda, g.ldb, g.ldc = max(ac, 1)+rng.IntN(3), max(bc, 1)+rng.IntN(3), max(n, 1)+rng.IntN(3)
	g.a = randomSlice(rng, max(ar*g.lda, 0))
	g.b = randomSlice(rng, max(br*g.ldb, 0))
	size := 0
	if m > 0 {
		size = (m-1)*g.ldc + n
	}
	g.cbuf = make([]float32, size+2*guardWords)
	for i := range g.cbuf {
		g.cbuf[i] = guardNaN
	}
	for i := range m {
		for j := range n {
			v := float32(math.NaN()) // must not propagate when beta == 0
			if beta != 0 {
				v = float32(rng.NormFloat64())
			}
			g.cbuf[guardWords+i*g.ldc+j] = v
		}
	}
	g.c0 = slices.Clone(g.cbuf)
	return g
}

func (g *gemmCase) c() []float32 { return g.cbuf[guardWords : len(g.cbuf)-guardWords] }

func (g *gemmCase) reset() { copy(g.cbuf, g.c0) }

func (g *gemmCase) String() string {
	return fmt.Sprintf("transA=%v transB=%v m=%d n=%d k=%d lda=%d ldb=%d ldc=%d alpha=%v beta=%v",
		g.transA, g.transB, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.alpha, g.beta)
}

func (g *gemmCase) run(threads int) {
	Sgemm(threads, g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c(), g.ldc)
}

// check compares C with the float64 reference and every word outside C's
// rows with its guard.
func (g *gemmCase) check(t *testing.T, what string) {
	t.Helper()
	want, tol := refGemm(g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c0[guardWords:], g.ldc)
	checkGemm(t, what, g.m, g.n, g.c(), g.ldc, want, tol)
	for i, v := range g.cbuf {
		off := i - guardWords
		inC := off >= 0 && off < len(g.c()) && off%g.ldc < g.n
		if !inC && math.Float32bits(v) != guardBits {
			t.Fatalf("%s: word at C offset %d outside C overwritten with %v", what, off, v)
		}
	}
}

// TestSgemmLarger checks random shapes up to several blocks in every
// dimension (the AVX-512 blocking is kc=256, mc=504 here), all transposes,
// on 1, 2 and 3 threads per ISA, and that the thread count does not change
// a single bit.
func TestSgemmLarger(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var cases []*gemmCase
	dims := []int{1, 13, 15, 33, 100, 257, 300, 520, 600}
	for i := range 12 {
		m, n, k := dims[rng.IntN(len(dims))], dims[rng.IntN(len(dims))], dims[rng.IntN(len(dims))]
		if i < 4 {
			m, n, k = 300+rng.IntN(300), 40+rng.IntN(300), 257+rng.IntN(400)
		}
		ab := alphaBetas[i%len(alphaBetas)]
		tc := transCases[i%len(transCases)]
		cases = append(cases, newGemmCase(rng, tc.transA, tc.transB, m, n, k, ab.alpha, ab.beta))
	}
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, g := range cases {
			if isa == Generic && g.m*g.n*g.k > 1<<24 {
				continue // seconds of scalar arithmetic; the small shapes cover it
			}
			g.reset()
			g.run(1)
			g.check(t, g.String()+" threads=1")
			one := slices.Clone(g.cbuf)
			for _, threads := range []int{2, 3} {
				g.reset()
				g.run(threads)
				for i := range one {
					if math.Float32bits(one[i]) != math.Float32bits(g.cbuf[i]) {
						t.Fatalf("%v: threads=%d differs from threads=1 at word %d: %v vs %v", g, threads, i, g.cbuf[i], one[i])
					}
				}
			}
		}
	})
}

// withBlocking sets every kernel's blocking (tests only) and returns a
// function restoring it: kc inner indices (2·kc for the bfloat16 kernels,
// whose blocks hold whole pairs), mcTiles tiles of rows, ncTiles panels.
func withBlocking(kc, mcTiles, ncTiles int) (restore func()) {
	r1 := setBlocking(sgemmKernels(), kc, mcTiles, ncTiles)
	r2 := setBlocking(sbgemmKernels(), 2*kc, mcTiles, ncTiles)
	r3 := setBlocking(sbgemmWideKernels(), 2*kc, mcTiles, ncTiles)
	return func() { r1(); r2(); r3() }
}

func setBlocking[P packed](kerns []*gemmKernel[P], kc, mcTiles, ncTiles int) (restore func()) {
	saved := make([]gemmBlocking, len(kerns))
	for i, k := range kerns {
		saved[i] = k.block
		k.block = gemmBlocking{kc: kc, mc: mcTiles * k.mr, nc: ncTiles * k.nr}
	}
	return func() {
		for i, k := range kerns {
			k.block = saved[i]
		}
	}
}

// TestSgemmTinyBlocking shrinks the cache blocks so that small shapes cross
// every loop level (several blocks of columns, inner indices and rows,
// partial ones at each end, the packers' Go tails), all transposes, on 1
// to 3 threads per ISA (splitting even tiny products across threads).
func TestSgemmTinyBlocking(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1
	for _, blk := range [][3]int{{20, 2, 2}, {7, 1, 3}, {33, 3, 1}} {
		restore := withBlocking(blk[0], blk[1], blk[2])
		forISAs(t, func(t *testing.T, isa ISA) {
			for i := range 40 {
				tc := transCases[i%len(transCases)]
				ab := alphaBetas[i%len(alphaBetas)]
				g := newGemmCase(rng, tc.transA, tc.transB, 1+rng.IntN(90), 1+rng.IntN(150), 1+rng.IntN(90), ab.alpha, ab.beta)
				for _, threads := range []int{1, 2, 3} {
					g.reset()
					g.run(threads)
					g.check(t, fmt.Sprintf("blocking kc=%d mc=%d·mr nc=%d·nr %v threads=%d", blk[0], blk[1], blk[2], g, threads))
				}
			}
		})
		restore()
	}
}

// TestSgemmBatched checks batched products with gaps between them against
// one Sgemm call per product (the same bits: each product runs the same
// code) and the float64 reference, with more and fewer products than
// threads, per ISA; and batches that run as one stacked product (one B,
// C's matrices one below the other), A's matrices interleaved or one
// below the other.
func TestSgemmBatched(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1 // split even these small batches
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, layout := range []string{"separate", "stacked", "stacked contiguous"} {
			for i, sh := range [][4]int{{3, 17, 9, 5}, {5, 40, 33, 21}, {1, 128, 64, 96}, {7, 1, 1, 1}, {4, 64, 128, 32}, {24, 16, 70, 40}} {
				g := newBatchedCase(rng, layout, i, sh)
				tc, ab, batch, m, n, k := g.tc, g.ab, g.batch, g.m, g.n, g.k
				lda, ldb, ldc, strideA, strideB, strideC := g.lda, g.ldb, g.ldc, g.strideA, g.strideB, g.strideC
				a, b, c0 := g.a, g.b, g.c0
				want := slices.Clone(c0)
				for p := range batch {
					Sgemm(1, tc.transA, tc.transB, m, n, k, ab.alpha, a[p*strideA:], lda, b[p*strideB:], ldb, ab.beta, want[p*strideC:], ldc)
					w, tol := refGemm(tc.transA, tc.transB, m, n, k, ab.alpha, a[p*strideA:], lda, b[p*strideB:], ldb, ab.beta, c0[p*strideC:], ldc)
					checkGemm(t, fmt.Sprintf("product %d of %v", p, sh), m, n, want[p*strideC:], ldc, w, tol)
				}
				for _, threads := range []int{1, 2, 3, 8} {
					got := slices.Clone(c0)
					SgemmBatched(threads, tc.transA, tc.transB, m, n, k, ab.alpha, a, lda, strideA, b, ldb, strideB, ab.beta, got, ldc, strideC, batch)
					for j := range got {
						if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
							t.Fatalf("%s batch×m×n×k=%v layout=%s threads=%d: word %d = %v, want %v (per-product Sgemm)", tc.name, sh, layout, threads, j, got[j], want[j])
						}
					}
				}
			}
		}
	})
}

// batchedCase is one batched product of TestSgemmBatched and
// TestSbgemmBatched: case i of shape sh = {batch, m, n, k} in a layout —
// "separate" (matrices with gaps between them), "stacked" (one B, C's
// matrices one below the other, A's interleaved as a transposed
// activation's rows) or "stacked contiguous" (A's matrices one below the
// other too) — with random operands.
type batchedCase struct {
	tc                        transCase
	ab                        alphaBeta
	batch, m, n, k            int
	lda, ldb, ldc             int
	strideA, strideB, strideC int
	a, b, c0                  []float32
}

func newBatchedCase(rng *rand.Rand, layout string, i int, sh [4]int) *batchedCase {
	g := &batchedCase{tc: transCases[i%len(transCases)], ab: alphaBetas[i%len(alphaBetas)], batch: sh[0], m: sh[1], n: sh[2], k: sh[3]}
	ar, ac, br, bc := g.m, g.k, g.k, g.n
	if g.tc.transA {
		ar, ac = g.k, g.m
	}
	if g.tc.transB {
		br, bc = g.n, g.k
	}
	g.lda, g.ldb, g.ldc = ac+1, bc+2, g.n+3
	g.strideA, g.strideB, g.strideC = ar*g.lda+5, br*g.ldb, g.m*g.ldc+7
	switch layout {
	case "stacked":
		g.lda, g.strideA, g.strideB, g.strideC = g.batch*ac+1, ac, 0, g.m*g.ldc
	case "stacked contiguous":
		g.strideA, g.strideB, g.strideC = ar*g.lda, 0, g.m*g.ldc
	}
	g.a = randomSlice(rng, (g.batch-1)*g.strideA+ar*g.lda)
	g.b = randomSlice(rng, (g.batch-1)*g.strideB+br*g.ldb)
	g.c0 = randomSlice(rng, (g.batch-1)*g.strideC+g.m*g.ldc)
	return g
}

// TestSgemmSpecialValues puts NaN, ±Inf, -0 and denormals into A and B:
// NaN and infinities propagate as in the float64 reference, denormals are
// computed exactly (no flush to zero), per ISA.
func TestSgemmSpecialValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1)), 1e-40, -3e-39}
	forISAs(t, func(t *testing.T, isa ISA) {
		for i := range 24 {
			tc := transCases[i%len(transCases)]
			g := newGemmCase(rng, tc.transA, tc.transB, 1+rng.IntN(40), 1+rng.IntN(70), 1+rng.IntN(40), 1, 0)
			for range 1 + rng.IntN(3) {
				g.a[rng.IntN(len(g.a))] = specials[rng.IntN(len(specials))]
				g.b[rng.IntN(len(g.b))] = specials[rng.IntN(len(specials))]
			}
			g.reset()
			g.run(1)
			g.check(t, "specials "+g.String())
		}
		// Denormal products and results: every product is about 1e-40,
		// far below the smallest normal float32 (1.2e-38).
		g := newGemmCase(rng, false, false, 20, 37, 29, 1, 0)
		for j := range g.a {
			g.a[j] *= 1e-20
		}
		for j := range g.b {
			g.b[j] *= 1e-20
		}
		g.reset()
		g.run(1)
		nonzero := 0
		for _, v := range g.c() {
			if v != 0 && math.Abs(float64(v)) < 1.1754944e-38 {
				nonzero++
			}
		}
		if nonzero < g.m*g.n/2 {
			t.Fatalf("only %d of %d results are denormal: flushed to zero?", nonzero, g.m*g.n)
		}
		want, _ := refGemm(false, false, g.m, g.n, g.k, 1, g.a, g.lda, g.b, g.ldb, 0, nil, g.ldc)
		for i := range g.m {
			for j := range g.n {
				// Denormal results carry an absolute error of a few units
				// of 2^-149 per rounding.
				if d := math.Abs(float64(g.c()[i*g.ldc+j]) - want[i*g.n+j]); d > float64(g.k+3)*1.4e-45 {
					t.Fatalf("denormal C[%d,%d] = %v, want %v", i, j, g.c()[i*g.ldc+j], want[i*g.n+j])
				}
			}
		}
	})
}

// TestSgemmAlphaZeroKZero checks that alpha == 0 or k == 0 leaves C =
// beta·C without reading A or B (NaN there must not propagate), and that
// beta == 0 then clears C even if it held NaN.
func TestSgemmAlphaZeroKZero(t *testing.T) {
	nan := float32(math.NaN())
	a := []float32{nan, nan, nan, nan, nan, nan}
	b := []float32{nan, nan, nan, nan, nan, nan}
	for _, k := range []int{0, 2} {
		for _, beta := range []float32{0, 1, -2} {
			c := []float32{1, 2, 3, nan, 4, 5, 6}
			alpha := float32(0)
			if k == 0 {
				alpha = 1
			}
			Sgemm(1, false, false, 2, 3, k, alpha, a, max(k, 1), b, 3, beta, c, 4)
			for i, want := range []float32{beta * 1, beta * 2, beta * 3, nan, beta * 4, beta * 5, beta * 6} {
				if i == 3 {
					if !math.IsNaN(float64(c[i])) {
						t.Fatalf("k=%d beta=%v: gap word written: %v", k, beta, c[i])
					}
					continue
				}
				if c[i] != want {
					t.Fatalf("k=%d alpha=%v beta=%v: c[%d] = %v, want %v", k, alpha, beta, i, c[i], want)
				}
			}
		}
	}
}

// TestSgemmGenericReference checks the plain reference loop itself
// against float64.
func TestSgemmGenericReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for i := range 40 {
		tc := transCases[i%len(transCases)]
		ab := alphaBetas[i%len(alphaBetas)]
		g := newGemmCase(rng, tc.transA, tc.transB, rng.IntN(30), rng.IntN(30), rng.IntN(30), ab.alpha, ab.beta)
		sgemmGeneric(g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c(), g.ldc)
		g.check(t, "sgemmGeneric "+g.String())
	}
}

// TestSgemmPanics checks that programmer errors panic with constant
// "kernels: " messages before anything is written.
func TestSgemmPanics(t *testing.T) {
	buf := make([]float32, 100)
	cases := []struct {
		name string
		call func()
	}{
		{"negative m", func() { Sgemm(1, false, false, -1, 2, 2, 1, buf, 2, buf, 2, 0, buf, 2) }},
		{"lda", func() { Sgemm(1, false, false, 2, 2, 3, 1, buf, 2, buf, 2, 0, buf, 2) }},
		{"ldb transposed", func() { Sgemm(1, false, true, 2, 2, 3, 1, buf, 3, buf, 2, 0, buf, 2) }},
		{"ldc", func() { Sgemm(1, false, false, 2, 3, 2, 1, buf, 2, buf, 3, 0, buf, 2) }},
		{"short a", func() { Sgemm(1, false, false, 5, 2, 5, 1, buf[:24], 5, buf, 2, 0, buf, 2) }},
		{"short b", func() { Sgemm(1, false, false, 2, 5, 5, 1, buf, 5, buf[:24], 5, 0, buf, 5) }},
		{"short c", func() { Sgemm(1, false, false, 5, 5, 2, 1, buf, 2, buf, 5, 0, buf[:24], 5) }},
		{"batch", func() { SgemmBatched(1, false, false, 2, 2, 2, 1, buf, 2, 4, buf, 2, 4, 0, buf, 2, 4, -1) }},
		{"overlap", func() { SgemmBatched(1, false, false, 2, 2, 2, 1, buf, 2, 4, buf, 2, 4, 0, buf, 2, 0, 2) }},
		{"short batch c", func() { SgemmBatched(1, false, false, 2, 2, 2, 1, buf, 2, 4, buf, 2, 4, 0, buf[:20], 2, 4, 6) }},
		{"bf16 lda", func() { Sbgemm(1, false, false, 2, 2, 3, 1, buf, 2, buf, 2, 0, buf, 2) }},
		{"bf16 short c", func() { Sbgemm(1, false, false, 5, 5, 2, 1, buf, 2, buf, 5, 0, buf[:24], 5) }},
		{"bf16 overlap", func() { SbgemmBatched(1, false, false, 2, 2, 2, 1, buf, 2, 4, buf, 2, 4, 0, buf, 2, 0, 2) }},
	}
	for _, tc := range cases {
		func() {
			defer func() {
				msg, ok := recover().(string)
				if !ok || !strings.HasPrefix(msg, "kernels: ") {
					t.Errorf("%s: recovered %#v, want a \"kernels: \" panic", tc.name, msg)
				}
			}()
			tc.call()
		}()
	}
}

// TestSgemmPackers checks each assembly packer against its Go loop, with
// strides wider than the blocks and guard words after the output.
func TestSgemmPackers(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, kern := range sgemmKernels() {
		p := kern.pack.(*sgemmPacker)
		if p.transpose == nil {
			continue
		}
		if kern.isa > HardwareISA() {
			t.Logf("%s: skipped, this CPU lacks the ISA", kern.name)
			continue
		}
		for _, rows := range []int{1, 2, 3} {
			for _, cols := range []int{1, 2, 5} {
				r, c := rows*p.step, cols*p.step
				lds, ldd := c+rng.IntN(9), r+rng.IntN(9)
				src := randomSlice(rng, (r-1)*lds+c)
				want := make([]float32, (c-1)*ldd+r)
				got := make([]float32, len(want)+guardWords)
				for i := range got {
					got[i] = guardNaN
				}
				copy(want, got)
				transposeGo(want, ldd, src, lds, 0, r, 0, c)
				p.transpose(got[:len(want)], ldd, src, lds, r, c)
				comparePacked(t, fmt.Sprintf("%s transpose %d×%d", kern.name, r, c), got, want)
			}
		}
		for _, kc := range []int{1, 7, 16, 250} {
			ld := p.nr + rng.IntN(9)
			src := randomSlice(rng, (kc-1)*ld+p.nr)
			want := make([]float32, kc*p.nr)
			packCopyGo(want, src, ld, kc, p.nr, p.nr)
			got := make([]float32, kc*p.nr+guardWords)
			for i := range got {
				got[i] = guardNaN
			}
			copy(got, want[:0])
			p.copyPanel(got[:kc*p.nr], src, ld, kc)
			comparePacked(t, fmt.Sprintf("%s copy kc=%d", kern.name, kc), got, want)
		}
	}
}

// comparePacked compares a packer's output with the Go loop's, word for
// word, and the guard words after it.
func comparePacked[P packed](t *testing.T, what string, got, want []P) {
	t.Helper()
	for i := range want {
		if bitsOf(got[i]) != bitsOf(want[i]) {
			t.Fatalf("%s: dst[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
	for i, v := range got[len(want):] {
		if bitsOf(v) != guardBits {
			t.Fatalf("%s: wrote %v past the output at +%d", what, v, i)
		}
	}
}

// bitsOf is the bit pattern of a packed element.
func bitsOf[P packed](v P) uint32 {
	switch x := any(v).(type) {
	case float32:
		return math.Float32bits(x)
	case uint32:
		return x
	}
	panic("unreachable")
}

// FuzzSgemm compares every ISA with the float64 reference on fuzzed
// shapes (up to 70 in each dimension), transposes, alpha, beta, leading
// dimensions, thread counts and sprinkled special values.
func FuzzSgemm(f *testing.F) {
	f.Add(uint8(5), uint8(7), uint8(3), uint8(0), float32(1), float32(0), uint64(1))
	f.Add(uint8(15), uint8(33), uint8(17), uint8(0x1f), float32(-0.5), float32(2), uint64(2))
	f.Add(uint8(70), uint8(1), uint8(64), uint8(0xa6), float32(3), float32(-1), uint64(3))
	f.Fuzz(func(t *testing.T, m8, n8, k8, flags uint8, alpha, beta float32, seed uint64) {
		m, n, k := int(m8)%71, int(n8)%71, int(k8)%71
		transA, transB := flags&1 != 0, flags&2 != 0
		threads := 1 + int(flags>>2)&1
		specials := int(flags>>3) & 3
		if math.IsNaN(float64(alpha)) || math.IsInf(float64(alpha), 0) || math.Abs(float64(alpha)) > 1e6 {
			alpha = 1
		}
		if math.IsNaN(float64(beta)) || math.IsInf(float64(beta), 0) || math.Abs(float64(beta)) > 1e6 {
			beta = 0
		}
		rng := rand.New(rand.NewPCG(seed, 23))
		g := newGemmCase(rng, transA, transB, m, n, k, alpha, beta)
		g.sprinkle(rng, specials)
		forISAs(t, func(t *testing.T, isa ISA) {
			g.reset()
			g.run(threads)
			g.checkFuzzed(t)
		})
	})
}

// TestSgemmNoAllocs checks that calls after the first reuse the pooled
// pack buffers: no allocation on 1 or 2 threads, batched or not.
func TestSgemmNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's bookkeeping allocates")
	}
	rng := rand.New(rand.NewPCG(25, 26))
	const m, n, k = 300, 200, 280
	a, b, c := randomSlice(rng, m*k), randomSlice(rng, k*n), make([]float32, m*n)
	for _, threads := range []int{1, 2} {
		for _, tc := range transCases {
			lda, ldb := k, n
			if tc.transA {
				lda = m
			}
			if tc.transB {
				ldb = k
			}
			call := func() { Sgemm(threads, tc.transA, tc.transB, m, n, k, 1, a, lda, b, ldb, 0, c, n) }
			if allocs := testing.AllocsPerRun(5, call); allocs != 0 {
				t.Errorf("Sgemm %s threads=%d: %v allocations a call", tc.name, threads, allocs)
			}
		}
		batched := func() { SgemmBatched(threads, false, true, 50, 40, 30, 1, a, 30, 1500, b, 30, 1200, 0, c, 40, 2000, 4) }
		if allocs := testing.AllocsPerRun(5, batched); allocs != 0 {
			t.Errorf("SgemmBatched threads=%d: %v allocations a call", threads, allocs)
		}
	}
}

// checkEpilogue records a GEMM's Finish calls: every element of C must be
// finished once, and when it is, hold its final value (want, from the
// same GEMM without an epilogue); Finish then doubles it and adds one.
type checkEpilogue struct {
	mu       sync.Mutex
	c, want  []float32
	ldc, n   int
	finished []int
	err      string
}

func (e *checkEpilogue) Finish(i0, i1, j0, j1 int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := i0; i < i1; i++ {
		for j := j0; j < j1; j++ {
			x := &e.c[i*e.ldc+j]
			if e.finished[i*e.n+j]++; e.finished[i*e.n+j] > 1 && e.err == "" {
				e.err = fmt.Sprintf("C(%d,%d) finished twice", i, j)
			}
			if math.Float32bits(*x) != math.Float32bits(e.want[i*e.ldc+j]) && e.err == "" {
				e.err = fmt.Sprintf("C(%d,%d) = %v when finished, want its final %v", i, j, *x, e.want[i*e.ldc+j])
			}
			*x = 2**x + 1
		}
	}
}

// TestGemmEpilogue runs SgemmEpilogue and SbgemmEpilogue on every ISA
// with cache blocks shrunk so that products cross several blocks of
// columns, inner indices and rows, on 1 to 3 threads: every element is
// finished exactly once, after its last contribution.
func TestGemmEpilogue(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1
	gemms := []struct {
		name  string
		plain func(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
		epi   func(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, epi GemmEpilogue)
	}{{"sgemm", Sgemm, SgemmEpilogue}, {"sbgemm", Sbgemm, SbgemmEpilogue}}
	for _, blk := range [][3]int{{20, 2, 2}, {0, 0, 0}} {
		restore := func() {}
		if blk[0] > 0 {
			restore = withBlocking(blk[0], blk[1], blk[2])
		}
		forISAs(t, func(t *testing.T, isa ISA) {
			for _, gm := range gemms {
				for i := range 12 {
					tc := transCases[i%len(transCases)]
					ab := alphaBetas[i%len(alphaBetas)]
					m, n, k := 1+rng.IntN(90), 1+rng.IntN(150), rng.IntN(90)
					g := newGemmCase(rng, tc.transA, tc.transB, m, n, k, ab.alpha, ab.beta)
					want := slices.Clone(g.c0)
					gm.plain(1, tc.transA, tc.transB, m, n, k, ab.alpha, g.a, g.lda, g.b, g.ldb, ab.beta, want, g.ldc)
					for _, threads := range []int{1, 2, 3} {
						c := slices.Clone(g.c0)
						e := &checkEpilogue{c: c, want: want, ldc: g.ldc, n: n, finished: make([]int, m*n)}
						gm.epi(threads, tc.transA, tc.transB, m, n, k, ab.alpha, g.a, g.lda, g.b, g.ldb, ab.beta, c, g.ldc, e)
						name := fmt.Sprintf("%s blocking %v %s %dx%dx%d threads=%d", gm.name, blk, tc.name, m, n, k, threads)
						if e.err != "" {
							t.Fatalf("%s: %s", name, e.err)
						}
						for j, f := range e.finished {
							if f != 1 {
								t.Fatalf("%s: C(%d,%d) finished %d times", name, j/n, j%n, f)
							}
						}
					}
				}
			}
		})
		restore()
	}
}

// sprinkle writes n special values (NaN, ±Inf, a denormal) at random
// places of A and B.
func (g *gemmCase) sprinkle(rng *rand.Rand, n int) {
	for range n {
		vals := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-41}
		if len(g.a) > 0 {
			g.a[rng.IntN(len(g.a))] = vals[rng.IntN(len(vals))]
		}
		if len(g.b) > 0 {
			g.b[rng.IntN(len(g.b))] = vals[rng.IntN(len(vals))]
		}
	}
}

// checkFuzzed checks a fuzzed product: with alpha 0, A and B are not
// read (C = beta·C exactly); otherwise as check does.
func (g *gemmCase) checkFuzzed(t *testing.T) {
	t.Helper()
	if g.alpha == 0 {
		for i := range g.m {
			for j := range g.n {
				want := float32(0)
				if g.beta != 0 {
					want = g.beta * g.c0[guardWords+i*g.ldc+j]
				}
				if got := g.c()[i*g.ldc+j]; got != want && !(math.IsNaN(float64(got)) && math.IsNaN(float64(want))) {
					t.Fatalf("alpha=0 %v: C[%d,%d] = %v, want %v", g, i, j, got, want)
				}
			}
		}
		return
	}
	g.check(t, g.String())
}
