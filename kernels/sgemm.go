package kernels

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32
// matrices, where op(X) is X or Xᵀ as transA/transB say; C is m×n, op(A) is
// m×k, op(B) is k×n; lda, ldb, ldc are the row strides. When beta is 0, C
// is not read (NaN in C does not propagate); when alpha is 0 or k is 0, A
// and B are not read. C must not overlap A or B. threads <= 0 means
// DefaultThreads(). The equivalent Go loop:
//
//	for i := range m {
//		for j := range n {
//			var s float32
//			for p := range k {
//				s += A(i, p) * B(p, j) // A(i,p) = a[i*lda+p], or a[p*lda+i] when transA
//			}
//			c[i*ldc+j] = alpha*s + beta*c[i*ldc+j] // just alpha*s when beta == 0
//		}
//	}
//
// The sum runs in a fixed order that depends on the ISA and the cache
// blocking but not on threads, so results are the same bits for any thread
// count on one machine. Steady-state calls do not allocate: pack buffers
// (a few MiB for the largest products) are kept in a free list for reuse,
// one set per concurrent call.
//
// Denormals: inputs and results are computed exactly, never flushed to
// zero. Go cannot set MXCSR's FTZ/DAZ bits per goroutine (the runtime may
// move a goroutine between threads at any call), so dstune does not try.
// On the SIMD paths that costs nothing on this project's Zen 5 machine:
// BenchmarkSgemmDenormal measured AVX-512 and AVX2 FMA at the same speed on
// normal operands, denormal inputs and denormal products (within 3%, 512³,
// thread CPU time). The generic path's scalar multiply and add do slow down
// on denormals (about 3× there); it is the fallback for CPUs without AVX2,
// not the training path. Intel cores take microcode assists on denormal
// results instead, which is the tenfold slowdown PyTorch shows; code that
// keeps many near-zero values (optimizer states, DST's reset weights) should
// flush them itself where that matters.
func Sgemm(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	gemm(&sgemmCalls, sgemmKernelForISA(), threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nil)
}

// A GemmEpilogue finishes a product block by block while each block of C
// is still in cache (a bias added, an activation applied): the GEMM calls
// Finish once for every block of rows [i0, i1) and columns [j0, j1) of C
// after the block's last contribution, on the goroutine that computed it.
// The blocks do not overlap and together cover C; calls for different
// blocks may run concurrently, and how C is cut into blocks depends on the
// thread count, so Finish must treat every element alike.
type GemmEpilogue interface {
	Finish(i0, i1, j0, j1 int)
}

// SgemmEpilogue is Sgemm followed by epi on every block of C (see
// GemmEpilogue); epi nil is Sgemm.
func SgemmEpilogue(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, epi GemmEpilogue) {
	gemm(&sgemmCalls, sgemmKernelForISA(), threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epi)
}

// SgemmBatched computes batch independent products with Sgemm's semantics;
// product i uses a[i*strideA:], b[i*strideB:] and c[i*strideC:]. It is the
// shape of attention (many small products). The products' parts of c must
// not overlap: they may be computed concurrently. With at least as many
// products as threads, each product runs whole on one goroutine; otherwise
// each is split like Sgemm. The results are the same bits either way.
func SgemmBatched(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	gemmBatched(&sgemmCalls, sgemmKernelForISA(), threads, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch)
}

var sgemmCalls gemmCalls[float32]

// gemm is Sgemm and Sbgemm on kern, taking calls from the free list.
func gemm[P packed](calls *gemmCalls[P], kern *gemmKernel[P], threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, epi GemmEpilogue) {
	checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		if epi != nil {
			epi.Finish(0, m, 0, n)
		}
		return
	}
	call := calls.get()
	call.set(kern, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	call.epi = epi
	call.run(gemmWorkers(threads, gemmFlops(m, n, k)))
	calls.put(call)
}

// gemmBatched is SgemmBatched and SbgemmBatched on kern.
func gemmBatched[P packed](calls *gemmCalls[P], kern *gemmKernel[P], threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	if batch < 0 {
		panic("kernels: batched GEMM batch < 0")
	}
	if strideA < 0 || strideB < 0 || strideC < 0 {
		panic("kernels: batched GEMM negative stride")
	}
	if m < 0 || n < 0 || k < 0 {
		panic("kernels: GEMM negative dimension")
	}
	if batch == 0 || m == 0 || n == 0 {
		return
	}
	if strideC == 0 && batch > 1 {
		panic("kernels: batched GEMM products overlap in c")
	}
	if threads <= 0 {
		threads = DefaultThreads()
	}
	last := batch - 1
	if len(c) < last*strideC {
		panic("kernels: batched GEMM len(c) too short")
	}
	stacked := strideB == 0 && strideC == m*ldc
	if k == 0 || alpha == 0 || (batch < threads && !stacked) {
		for i := range batch {
			gemm(calls, kern, threads, transA, transB, m, n, k, alpha, tail(a, i*strideA), lda, tail(b, i*strideB), ldb, beta, c[i*strideC:], ldc, nil)
		}
		return
	}
	if len(a) < last*strideA {
		panic("kernels: batched GEMM len(a) too short")
	}
	if len(b) < last*strideB {
		panic("kernels: batched GEMM len(b) too short")
	}
	// The last product has the shortest slices: if it fits, all do.
	checkGemmArgs(transA, transB, m, n, k, a[last*strideA:], lda, b[last*strideB:], ldb, c[last*strideC:], ldc)
	call := calls.get()
	if stacked {
		// One B for all and C's matrices one below the other: a single
		// product of batch·m rows, B packed once rather than once per
		// product (a projection of a transposed activation, whose
		// matrices are each a few rows). A's matrices are read as groups
		// of m rows; the bits are those of the products one by one.
		call.set(kern, transA, transB, batch*m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		if transA || strideA != m*lda {
			call.groupRows, call.groupStride = m, strideA
			call.directA = false
		}
		call.run(gemmWorkers(threads, float64(batch)*gemmFlops(m, n, k)))
		calls.put(call)
		return
	}
	call.set(kern, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	call.strideA, call.strideB, call.strideC, call.batch = strideA, strideB, strideC, batch
	call.runBatch(min(batch, gemmWorkers(threads, float64(batch)*gemmFlops(m, n, k))))
	calls.put(call)
}

// tail is s[i:], or nil when i is past the end (a product that reads
// nothing from s, because k or alpha is 0).
func tail(s []float32, i int) []float32 {
	if i >= len(s) {
		return nil
	}
	return s[i:]
}

func checkGemmArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic("kernels: GEMM negative dimension")
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if lda < max(ac, 1) {
		panic("kernels: GEMM lda too small")
	}
	if ldb < max(bc, 1) {
		panic("kernels: GEMM ldb too small")
	}
	if ldc < max(n, 1) {
		panic("kernels: GEMM ldc too small")
	}
	if ar > 0 && ac > 0 && len(a) < (ar-1)*lda+ac {
		panic("kernels: GEMM len(a) too short")
	}
	if br > 0 && bc > 0 && len(b) < (br-1)*ldb+bc {
		panic("kernels: GEMM len(b) too short")
	}
	if m > 0 && n > 0 && len(c) < (m-1)*ldc+n {
		panic("kernels: GEMM len(c) too short")
	}
}

// scaleC sets C = beta·C, or 0 when beta is 0 (without reading C).
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := range m {
		ci := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(ci)
		case 1:
		default:
			for j := range ci {
				ci[j] *= beta
			}
		}
	}
}

// sgemmGeneric is the reference: straightforward loops, i-p-j order so the
// inner loop streams rows of B and C.
func sgemmGeneric(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := range m {
		ci := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(ci)
		} else if beta != 1 {
			for j := range ci {
				ci[j] *= beta
			}
		}
		for p := range k {
			var aip float32
			if transA {
				aip = a[p*lda+i]
			} else {
				aip = a[i*lda+p]
			}
			s := alpha * aip
			if transB {
				for j := range ci {
					ci[j] += s * b[j*ldb+p]
				}
			} else {
				bp := b[p*ldb : p*ldb+n]
				for j := range ci {
					ci[j] += s * bp[j]
				}
			}
		}
	}
}

// sgemmPacker lays out float32 operands: A row-major (a copy, or a
// transpose of Aᵀ), B in panels (a copy, or a transpose of Bᵀ). The
// assembly routines, where the ISA has them, do the bulk; Go loops do the
// edges.
type sgemmPacker struct {
	nr        int
	step      int                                                                  // transpose's block size
	transpose func(dst []float32, ldd int, src []float32, lds int, rows, cols int) // multiples of step; nil: Go only
	copyPanel func(dst, src []float32, ld, kc int)                                 // nr columns; nil: Go only
}

func (p *sgemmPacker) direct(a []float32) ([]float32, bool) { return a, true }

func (p *sgemmPacker) scratchLen() int { return 0 }

func (p *sgemmPacker) packA(dst []float32, ldd int, _ []float32, a []float32, lda int, transA bool, i0, mc, pc, kc int) {
	if !transA {
		for r := range mc {
			copy(dst[r*ldd:r*ldd+kc], a[(i0+r)*lda+pc:])
		}
		return
	}
	// op(A)(i, p) = a[p*lda+i]: kc rows of mc floats, transposed.
	p.transposeBlock(dst, ldd, a[pc*lda+i0:], lda, kc, mc)
}

func (p *sgemmPacker) packB(dst []float32, _ []float32, b []float32, ldb int, transB bool, pc, kc, j0, cols int) {
	nr := p.nr
	if !transB {
		// op(B)(p, j) = b[p*ldb+j]: kc rows of cols floats.
		src := b[pc*ldb+j0:]
		if cols == nr && p.copyPanel != nil {
			src = src[:(kc-1)*ldb+nr]
			racePack(src, ldb, kc, nr)
			p.copyPanel(dst[:kc*nr], src, ldb, kc)
			return
		}
		packCopyGo(dst, src, ldb, kc, cols, nr)
		return
	}
	// op(B)(p, j) = b[j*ldb+p]: cols rows of kc floats, transposed.
	p.transposeBlock(dst, nr, b[j0*ldb+pc:], ldb, cols, kc)
	if cols < nr {
		for q := range kc {
			clear(dst[q*nr+cols : q*nr+nr])
		}
	}
}

// transposeBlock sets dst[j*ldd+i] = src[i*lds+j] for i < rows, j < cols:
// the assembly transposer on whole blocks of step×step, Go on the edges.
func (p *sgemmPacker) transposeBlock(dst []float32, ldd int, src []float32, lds int, rows, cols int) {
	r, c := 0, 0
	if p.transpose != nil {
		r, c = rows/p.step*p.step, cols/p.step*p.step
		if r > 0 && c > 0 {
			s := src[:(r-1)*lds+c]
			racePack(s, lds, r, c)
			p.transpose(dst[:(c-1)*ldd+r], ldd, s, lds, r, c)
		}
	}
	transposeGo(dst, ldd, src, lds, 0, r, c, cols)    // right of the blocks
	transposeGo(dst, ldd, src, lds, r, rows, 0, cols) // below them
}

// transposeGo sets dst[j*ldd+i] = src[i*lds+j] for i in [i0, i1), j in
// [j0, j1).
func transposeGo(dst []float32, ldd int, src []float32, lds int, i0, i1, j0, j1 int) {
	for i := i0; i < i1; i++ {
		s := src[i*lds:][j0:j1]
		for j, v := range s {
			dst[(j0+j)*ldd+i] = v
		}
	}
}

// packCopyGo packs kc rows of width floats (stride ld) into a panel of
// w-float rows, zero past width:
//
//	for p := range kc {
//		copy(dst[p*w:], src[p*ld:p*ld+width]); clear(dst[p*w+width:p*w+w])
//	}
func packCopyGo(dst, src []float32, ld, kc, width, w int) {
	for p := range kc {
		d := dst[p*w:][:w]
		copy(d, src[p*ld:][:width])
		clear(d[width:])
	}
}

// sgemmKernelGo is the portable micro-kernel: the same contract as the
// assembly ones with 4×4 tiles, so that the blocking and packing above are
// exercised (and useful) without SIMD:
//
//	for r := range rows {
//		for j := range cols {
//			var s float32
//			for p := range kc {
//				s += a[r*lda+p] * b[p*4+j]
//			}
//			c[r*ldc+j] = alpha*s + beta*c[r*ldc+j] // alpha*s when beta == 0
//		}
//	}
//
// It does not prefetch.
func sgemmKernelGo(kc int, a []float32, lda int, b []float32, c []float32, ldc int, alpha, beta float32, rows, cols int, _ uintptr, _, _, _ int) {
	b = b[:kc*4]
	r0 := 0
	for ; r0+4 <= rows; r0 += 4 {
		a0 := a[r0*lda:][:kc]
		a1 := a[(r0+1)*lda:][:kc]
		a2 := a[(r0+2)*lda:][:kc]
		a3 := a[(r0+3)*lda:][:kc]
		var s00, s01, s02, s03, s10, s11, s12, s13 float32
		var s20, s21, s22, s23, s30, s31, s32, s33 float32
		for p := range kc {
			bp := b[p*4 : p*4+4 : p*4+4]
			x0, x1, x2, x3 := a0[p], a1[p], a2[p], a3[p]
			b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
			s00 += x0 * b0
			s01 += x0 * b1
			s02 += x0 * b2
			s03 += x0 * b3
			s10 += x1 * b0
			s11 += x1 * b1
			s12 += x1 * b2
			s13 += x1 * b3
			s20 += x2 * b0
			s21 += x2 * b1
			s22 += x2 * b2
			s23 += x2 * b3
			s30 += x3 * b0
			s31 += x3 * b1
			s32 += x3 * b2
			s33 += x3 * b3
		}
		tile := [4][4]float32{
			{s00, s01, s02, s03},
			{s10, s11, s12, s13},
			{s20, s21, s22, s23},
			{s30, s31, s32, s33},
		}
		for r := range 4 {
			storeRowGo(c[(r0+r)*ldc:][:cols], tile[r][:cols], alpha, beta)
		}
	}
	for ; r0 < rows; r0++ {
		ar := a[r0*lda:][:kc]
		var s [4]float32
		for p, x := range ar {
			bp := b[p*4 : p*4+4 : p*4+4]
			s[0] += x * bp[0]
			s[1] += x * bp[1]
			s[2] += x * bp[2]
			s[3] += x * bp[3]
		}
		storeRowGo(c[r0*ldc:][:cols], s[:cols], alpha, beta)
	}
}

// storeRowGo sets row = alpha·s + beta·row (alpha·s when beta is 0).
func storeRowGo(row, s []float32, alpha, beta float32) {
	for j := range row {
		if beta == 0 {
			row[j] = alpha * s[j]
		} else {
			row[j] = alpha*s[j] + beta*row[j]
		}
	}
}
