package kernels

import "sync"

// SgemvRows is the most rows of A for which callers should prefer Sgemv
// to Sgemm: on a decode step's products one row takes 0.2 to 0.35 of
// Sgemm's time, four rows 0.7 to 0.95, six 0.85 to 1.1, eight 1.0 to 1.9
// (BenchmarkSgemvRows: one thread, AVX2, medians of five runs). With
// AVX-512 (Zen 5, one run) one row takes 0.20 to 0.35, four 0.69 to 1.33,
// six 0.89 to 1.68, eight 1.0 to 2.0: four rows of the 2048×2048
// projection lose, since Sgemv reads B once per row of A.
const SgemvRows = 4

// Sgemv computes Sgemm's product C = alpha·A·op(B) + beta·C (A m×k, row
// stride lda, not transposed) a row of A at a time, reading B where it
// lies. It is for products of few rows — a decode step multiplies one row
// per attention head by the whole KV cache, and one row by each weight
// matrix — where the packed GEMM spends more time packing B than
// multiplying. With transB (B n×k) each element of C is a dot product of a
// row of A and a row of B, summed lane-wise (gemvDotF32); otherwise (B k×n)
// each row of C accumulates B's rows scaled by A's elements, one FMA an
// element of B in row order (gemvAccF32):
//
//	for i := range m {
//		for j := range n {
//			var s float32
//			if transB {
//				s = dot(a[i*lda:][:k], b[j*ldb:][:k]) // lane-wise, an order fixed by the ISA
//			} else {
//				for p := range k {
//					s = fma(a[i*lda+p], b[p*ldb+j], s)
//				}
//			}
//			c[i*ldc+j] = alpha*s + beta*c[i*ldc+j] // just alpha*s when beta == 0
//		}
//	}
//
// The FMAs round once on the SIMD paths, so the accumulating form gives
// the same bits on AVX2 and AVX-512. Each element of C is computed whole
// by one goroutine in that order, so the result is the same bits for any
// thread count; it is not Sgemm's bits, whose sums run in another order. When beta is 0, C is not read;
// when alpha or k is 0, A and B are not read. C must not overlap A or B.
// threads <= 0 means DefaultThreads(). Steady-state calls do not allocate.
func Sgemv(threads int, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	SgemvBatched(threads, transB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1)
}

// SgemvBatched computes batch independent products with Sgemv's
// semantics; product i uses a[i*strideA:], b[i*strideB:] and
// c[i*strideC:] (a stride of 0 shares the operand: a cache read by
// several heads). The elements of all the products' C are split across
// goroutines as one range, so a batch of one-row products (attention's
// heads at decode) uses threads as one large product would.
func SgemvBatched(threads int, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	if batch < 0 {
		panic("kernels: batched GEMV batch < 0")
	}
	if strideA < 0 || strideB < 0 || strideC < 0 {
		panic("kernels: batched GEMV negative stride")
	}
	if m < 0 || n < 0 || k < 0 {
		panic("kernels: GEMM negative dimension")
	}
	if batch == 0 || m == 0 || n == 0 {
		return
	}
	if strideC == 0 && batch > 1 {
		panic("kernels: batched GEMV products overlap in c")
	}
	last := batch - 1
	if len(c) < last*strideC {
		panic("kernels: batched GEMV len(c) too short")
	}
	// The last product has the shortest slices: if it fits, all do.
	checkGemmArgs(false, transB, m, n, k, tail(a, last*strideA), lda, tail(b, last*strideB), ldb, c[last*strideC:], ldc)
	if k == 0 || alpha == 0 {
		for i := range batch {
			scaleC(m, n, beta, c[i*strideC:], ldc)
		}
		return
	}
	call := gemvCalls.Get().(*gemvCall)
	*call = gemvCall{transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: a, lda: lda, strideA: strideA, b: b, ldb: ldb, strideB: strideB, c: c, ldc: ldc, strideC: strideC, batch: batch}
	Parallel(gemmWorkers(threads, float64(batch)*gemmFlops(m, n, k)), call)
	*call = gemvCall{} // no references kept to the caller's slices
	gemvCalls.Put(call)
}

// gemvChunk is how many columns of C a kernel call computes: its sums go
// to a buffer on the stack, which the alpha·s + beta·C step then reads.
// 128 is one group of eight accumulators at AVX-512's width.
const gemvChunk = 128

// gemvCall is one SgemvBatched call: a Task whose workers split the
// elements of C (product by product, column by column) into contiguous
// ranges.
type gemvCall struct {
	transB                    bool
	m, n, k                   int
	alpha, beta               float32
	a, b, c                   []float32
	lda, ldb, ldc             int
	strideA, strideB, strideC int
	batch                     int
}

var gemvCalls = sync.Pool{New: func() any { return new(gemvCall) }}

func (g *gemvCall) Run(worker, workers int) {
	var sums [gemvChunk]float32
	lo, hi := Split(g.batch*g.n, worker, workers, 16)
	for lo < hi {
		p, j0 := lo/g.n, lo%g.n
		j1 := min(g.n, j0+hi-lo)
		a, b, c := g.a[p*g.strideA:], g.b[p*g.strideB:], g.c[p*g.strideC:]
		for j := j0; j < j1; j += gemvChunk {
			w := min(gemvChunk, j1-j)
			s := sums[:w]
			for i := range g.m {
				ai := a[i*g.lda:][:g.k]
				if g.transB {
					gemvDotF32(s, ai, b[j*g.ldb:][:(w-1)*g.ldb+g.k], g.ldb)
				} else {
					clear(s)
					gemvAccF32(s, ai, b[j:][:(g.k-1)*g.ldb+w], g.ldb)
				}
				storeRowGo(c[i*g.ldc+j:][:w], s, g.alpha, g.beta)
			}
		}
		lo += j1 - j0
	}
}
