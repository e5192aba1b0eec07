package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// guardBits fills everything around and between the rows of C: a NaN with a
// payload no arithmetic produces, compared bit for bit afterwards.
const guardBits = 0x7fa5a5a5

var guardNaN = math.Float32frombits(guardBits)

var transCases = []struct {
	name           string
	transA, transB bool
}{{"NN", false, false}, {"NT", false, true}, {"TN", true, false}, {"TT", true, true}}

// gemmBase is a pair of random base matrices A (maxM×maxK) and B (maxK×maxN)
// and an initial C (maxM×maxN)
// stored both plainly and transposed with leading dimensions wider than the
// matrices, plus prefix sums over the inner index: ref[p][i][j] is
// Σ_{q<p} A(i,q)·B(q,j) in float64, abs the same over |A|·|B|. Every
// product of top-left submatrices is then checked against ref in O(m·n).
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
	plane := maxM * maxN
	g.ref = make([]float64, (maxK+1)*plane)
	g.abs = make([]float64, (maxK+1)*plane)
	for p := range maxK {
		for i := range maxM {
			aip := float64(g.a[i*g.lda+p])
			for j := range maxN {
				prod := aip * float64(g.b[p*g.ldb+j])
				at := (p*maxM+i)*maxN + j
				g.ref[at+plane] = g.ref[at] + prod
				g.abs[at+plane] = g.abs[at] + math.Abs(prod)
			}
		}
	}
	return g
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
	const eps = 1.0 / (1 << 23)
	plane := g.maxM * g.maxN
	if len(dst.bounds) != 2*plane {
		dst.bounds = make([]float32, 2*plane)
	}
	ref, abs := g.ref[k*plane:][:plane], g.abs[k*plane:][:plane]
	for i := range plane {
		want := float64(alpha) * ref[i]
		bound := math.Abs(float64(alpha)) * abs[i]
		if beta != 0 {
			c0 := float64(beta) * float64(g.c0[i])
			want += c0
			bound += math.Abs(c0)
		}
		tol := float64(k+3)*eps*bound + 1e-37
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
var alphaBetas = []struct{ alpha, beta float32 }{
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
