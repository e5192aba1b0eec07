package kernels

import "math"

// Sbgemm computes C = alpha·op(A)·op(B) + beta·C like Sgemm, with the
// elements of A and B rounded to bfloat16 before they are multiplied:
// products are exact and sums are float32, as in oneDNN's bfloat16 GEMMs
// (PyTorch's bf16 autocast on CPUs), and C stays float32. Arguments, the
// in-place rules for C and
// the handling of alpha, beta, k == 0 and threads are Sgemm's. A and B
// stay float32 in memory: each element is rounded once, when its block is
// packed for the micro-kernel. The equivalent Go loop:
//
//	for i := range m {
//		for j := range n {
//			var s float32
//			for p := 0; p < k; p += 2 { // inner indices in pairs
//				s = bf16FMA(bf16(A(i, p+1)), bf16(B(p+1, j)), s) // 0 past k
//				s = bf16FMA(bf16(A(i, p)), bf16(B(p, j)), s)
//			}
//			c[i*ldc+j] = fma32(beta, c[i*ldc+j], alpha*s) // alpha*s when beta == 0
//		}
//	}
//
// where bf16 rounds to 8 significant bits (to nearest, ties to even; see
// bf16Round), bf16FMA(x, y, s) is x·y+s rounded once to float32 (and
// flushed to zero below 2⁻¹²⁶) and fma32 likewise without the flush. The
// order is that of the AVX512_BF16 instruction VDPBF16PS; blocks of the
// inner dimension (a few hundred indices) are added into C one after
// another, as in Sgemm.
//
// Accuracy: rounding changes an element by at most 2⁻⁸ of its magnitude,
// so a product of two rounded elements is within (2⁻⁷+2⁻¹⁶)·|A(i,p)·B(p,j)|
// of the exact one, and float32 accumulation adds at most one rounding of
// 2⁻²⁴ per inner index and two per block. With S = |alpha|·Σₚ|A(i,p)|·|B(p,j)|
// and C₀ the exact result from the unrounded inputs,
//
//	|C(i,j) − C₀(i,j)| ≤ (2⁻⁷ + 2⁻¹⁶)·S + (k + 2·⌈k/kc⌉ + 1)·2⁻²⁴·(S + |beta·C(i,j)|)
//
// up to terms of second order: about 0.8 % of S however long the sum,
// where accumulating in bfloat16 itself would lose about k·2⁻⁸ of S. The
// error relative to |C(i,j)| is larger where the terms cancel, as for any
// dot product. Elements below 2⁻¹²⁶ in magnitude (float32 denormals) are
// flushed to ±0, and so are partial sums that fall below it: VDPBF16PS
// works that way and the portable code does the same. Elements beyond
// bfloat16's range (|x| ≥ 2¹²⁸·(1−2⁻⁹)) round to ±Inf.
//
// Every path gives the same bits: the AVX512_BF16 kernels, the float32 FMA
// kernels on operands rounded when packed (for CPUs without those
// instructions, at about Sgemm's speed; see sbgemm_fma.go) and the portable
// Go kernels (below AVX2) apply the same roundings in the same order, for
// any thread count, on one machine (the block size depends on the cache
// sizes; see SbgemmPath). NaN payloads may differ between them, and so
// may, on the FMA path, a partial sum that rounds up to 2⁻¹²⁶ from just
// below it (see sbgemm_fma.go).
func Sbgemm(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	SbgemmEpilogue(threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nil)
}

// SbgemmEpilogue is Sbgemm followed by epi on every block of C (see
// GemmEpilogue); epi nil is Sbgemm.
func SbgemmEpilogue(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, epi GemmEpilogue) {
	if wide := sbgemmWideKernelForISA(); wide != nil {
		gemm(&sbgemmWideCalls, wide, threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epi)
		return
	}
	gemm(&sbgemmCalls, sbgemmKernelForISA(), threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epi)
}

// SbgemmBatched computes batch independent products with Sbgemm's
// semantics, laid out as SgemmBatched's.
func SbgemmBatched(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	if wide := sbgemmWideKernelForISA(); wide != nil {
		gemmBatched(&sbgemmWideCalls, wide, threads, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch)
		return
	}
	gemmBatched(&sbgemmCalls, sbgemmKernelForISA(), threads, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch)
}

// SbgemmAccelerated reports whether Sbgemm runs on the CPU's bfloat16
// dot-product instructions at the active ISA, and so faster than Sgemm.
// Without them it runs Sgemm's float32 kernels on operands rounded to
// bfloat16 (at about Sgemm's speed; see SbgemmPath) or, below AVX2,
// portable Go many times slower than Sgemm; both give the same bits as the
// bfloat16 instructions (but for the flush edge Sbgemm's doc describes).
func SbgemmAccelerated() bool { return sbgemmKernelForISA().isa > Generic }

// SbgemmPath names what Sbgemm runs on at the active ISA: "avx512bf16"
// (VDPBF16PS), "fma" (the float32 FMA kernels on operands rounded to
// bfloat16) or "go" (portable Go).
func SbgemmPath() string {
	switch {
	case SbgemmAccelerated():
		return "avx512bf16"
	case sbgemmWideKernelForISA() != nil:
		return "fma"
	}
	return "go"
}

var (
	sbgemmCalls     gemmCalls[uint32]
	sbgemmWideCalls gemmCalls[float32]
)

// bf16Round rounds x to bfloat16 (the upper half of its float32 bits),
// to nearest with ties to even, as VCVTNE2PS2BF16 does: denormals become
// ±0, NaNs stay NaN (quiet), values that round past the largest bfloat16
// become ±Inf.
func bf16Round(x float32) uint16 {
	bits := math.Float32bits(x)
	switch {
	case bits&0x7f800000 == 0: // ±0 or denormal
		return uint16(bits>>16) & 0x8000
	case bits&0x7fffffff > 0x7f800000: // NaN
		return uint16(bits>>16) | 0x40
	}
	bits += 0x7fff + (bits>>16)&1
	return uint16(bits >> 16)
}

// bf16Value is the float32 value of a bfloat16.
func bf16Value(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// bf16Pair packs x and y, rounded to bfloat16, into the operand element
// of the bfloat16 kernels: inner index p (x) in the low half, p+1 (y) in
// the high half.
func bf16Pair(x, y float32) uint32 {
	return uint32(bf16Round(x)) | uint32(bf16Round(y))<<16
}

// bf16Dot is one lane of VDPBF16PS: s plus the dot product of the pairs a
// and b, the high halves first, each step rounded once and flushed to zero
// below 2⁻¹²⁶.
func bf16Dot(s float32, a, b uint32) float32 {
	s = bf16FMA(bf16High(a), bf16High(b), s)
	return bf16FMA(bf16Low(a), bf16Low(b), s)
}

// bf16High and bf16Low are the values of a pair's halves.
func bf16High(pair uint32) float32 { return math.Float32frombits(pair & 0xffff0000) }
func bf16Low(pair uint32) float32  { return math.Float32frombits(pair << 16) }

// bf16FMA is x·y+s rounded once to float32 and flushed to ±0 below 2⁻¹²⁶,
// for bfloat16 values x and y. Their product has at most 16 significant
// bits, so float64 holds it exactly, and it holds the sum exactly too
// unless one term is so much smaller that it cannot reach the float32
// rounding position; the float64 sum then rounds to float32 as the exact
// sum would.
func bf16FMA(x, y, s float32) float32 {
	r := float32(float64(x)*float64(y) + float64(s))
	if bits := math.Float32bits(r); bits&0x7f800000 == 0 { // ±0 or denormal
		return math.Float32frombits(bits & 0x80000000)
	}
	return r
}

// sbgemmGeneric is the reference: Sgemm's plain loops (sgemmGeneric) on
// copies of A and B rounded to bfloat16.
func sbgemmGeneric(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	rounded := func(s []float32) []float32 {
		out := make([]float32, len(s))
		for i, v := range s {
			out[i] = bf16Value(bf16Round(v))
		}
		return out
	}
	sgemmGeneric(transA, transB, m, n, k, alpha, rounded(a), lda, rounded(b), ldb, beta, c, ldc)
}

// newSbgemmKernel fills in k's blocking for this machine. Every bfloat16
// kernel gets the AVX-512 kernel's block of inner indices, so that all of
// them sum in the same order.
func newSbgemmKernel(k *gemmKernel[uint32]) *gemmKernel[uint32] {
	k.block = blockingFor(k.mr, k.nr, k.kStep)
	k.block.kc = bf16BlockKC()
	return k
}

// bf16BlockKC is the block of inner indices of every bfloat16 kernel: the
// AVX-512 kernel's.
func bf16BlockKC() int { return blockingFor(14, 32, 2).kc }

// sbgemmGo is the portable bfloat16 micro-kernel, used below AVX2 and in
// builds without assembly (purego, other architectures).
var sbgemmGo = newSbgemmKernel(&gemmKernel[uint32]{
	name: "go-bf16-4x4", mr: 4, nr: 4, kStep: 2, run: sbgemmKernelGo,
	pack: &sbgemmPacker{nr: 4},
})

// sbgemmKernelGo is the portable bfloat16 micro-kernel, with the assembly
// kernels' contract and bits:
//
//	for r := range rows {
//		for j := range cols {
//			var s float32
//			for q := range kc {
//				s = bf16Dot(s, a[r*lda+q], b[q*4+j])
//			}
//			c[r*ldc+j] = fma32(beta, c[r*ldc+j], alpha*s) // alpha*s when beta == 0
//		}
//	}
//
// It does not prefetch.
func sbgemmKernelGo(kc int, a []uint32, lda int, b []uint32, c []float32, ldc int, alpha, beta float32, rows, cols int, _ uintptr, _, _, _ int) {
	b = b[:kc*4]
	for r := range rows {
		ar := a[r*lda:][:kc]
		var s0, s1, s2, s3 float32
		for q, x := range ar {
			// bf16Dot for the four columns, the halves of x taken once.
			bq := b[q*4 : q*4+4 : q*4+4]
			xh, xl := bf16High(x), bf16Low(x)
			s0 = bf16FMA(xl, bf16Low(bq[0]), bf16FMA(xh, bf16High(bq[0]), s0))
			s1 = bf16FMA(xl, bf16Low(bq[1]), bf16FMA(xh, bf16High(bq[1]), s1))
			s2 = bf16FMA(xl, bf16Low(bq[2]), bf16FMA(xh, bf16High(bq[2]), s2))
			s3 = bf16FMA(xl, bf16Low(bq[3]), bf16FMA(xh, bf16High(bq[3]), s3))
		}
		s := [4]float32{s0, s1, s2, s3}
		cr := c[r*ldc:][:cols]
		for j := range cr {
			t := s[j]
			if alpha != 1 {
				t *= alpha
			}
			if beta == 0 {
				cr[j] = t
			} else {
				cr[j] = fma32(cr[j], beta, t)
			}
		}
	}
}

// sbgemmPacker converts float32 operands into bfloat16 pairs: A row-major,
// B in panels, the pairs along the inner dimension. The assembly routines,
// where the CPU has them, do the bulk; Go loops do the edges and the last,
// odd, inner index (paired with 0). A transposed B whose rows spread
// over L1's sets (attention's Kᵀ, rows of a 64-float head) is converted
// and transposed 16 rows at a time (cvtTrans), in one pass. Other
// transposed operands are converted a slab at a time into a small
// buffer, reading each source row straight along, then transposed as
// words: a converting transpose that read 16 or 32 source rows side by
// side ran several times slower whenever their stride was a multiple of
// 1 KiB (all in one L1 set). In the batched bf16 Q·Kᵀ of
// BenchmarkSbgemmBatched the one pass took B's packing from 8.6 % of the
// time to 3.6 %.
type sbgemmPacker struct {
	nr int
	// The assembly packers (see sbgemm_stubs_amd64.go), or nil: rows
	// converted (cvt), pairs of rows interleaved (pair), words transposed,
	// rows converted and transposed at once (cvtTrans).
	cvt, pair, cvtTrans func(dst []uint32, ldd int, src []float32, lds int, rows, cols int)
	transpose           func(dst []uint32, ldd int, src []uint32, lds int, rows, cols int)
}

func (p *sbgemmPacker) direct([]float32) ([]uint32, bool) { return nil, false }

// slabWords is the size of the scratch transposed operands are converted
// into (32 KiB, in L1).
const slabWords = 8192

func (p *sbgemmPacker) scratchLen() int { return slabWords }

func (p *sbgemmPacker) packA(dst []uint32, ldd int, slab []uint32, a []float32, lda int, transA bool, i0, mc, pc, kc int) {
	if !transA {
		// dst[r*ldd+q] = pair(src[r*lda+2q], src[r*lda+2q+1])
		src := a[i0*lda+pc:]
		done := 0
		if p.cvt != nil {
			done = kc / 32 * 16
			if done > 0 {
				s := src[:(mc-1)*lda+2*done]
				racePack(s, lda, mc, 2*done)
				p.cvt(dst[:(mc-1)*ldd+done], ldd, s, lda, mc, done)
			}
		}
		if 2*done < kc {
			for r := range mc {
				cvtRowGo(dst[r*ldd:], src[r*lda:], done, kc)
			}
		}
		return
	}
	// op(A)(i, p) = a[p*lda+i]: dst[r*ldd+q] = pair(src[2q*lda+r], src[(2q+1)*lda+r]),
	// 16 pairs of source rows at a time interleaved into the slab
	// (slab[qq*ldt+r]), then transposed into place.
	src := a[pc*lda+i0:]
	rows, pairs := 0, 0
	if p.pair != nil && p.transpose != nil {
		rows, pairs = mc/16*16, kc/32*16
		for r0 := 0; r0 < rows; r0 += slabWords / 16 {
			w := min(slabWords/16, rows-r0)
			for q0 := 0; q0 < pairs; q0 += 16 {
				s := src[2*q0*lda+r0:][:31*lda+w]
				racePack(s, lda, 32, w)
				p.pair(slab[:15*w+w], w, s, lda, 16, w)
				p.transpose(dst[r0*ldd+q0:][:(w-1)*ldd+16], ldd, slab[:16*w], w, 16, w)
			}
		}
	}
	pairTransGo(dst, ldd, src, lda, 0, rows, pairs, kc)
	pairTransGo(dst, ldd, src, lda, rows, mc, 0, kc)
}

func (p *sbgemmPacker) packB(dst []uint32, slab []uint32, b []float32, ldb int, transB bool, pc, kc, j0, cols int) {
	nr, kp := p.nr, (kc+1)/2
	pairs, width := 0, 0
	if !transB {
		// dst[q*nr+j] = pair(src[2q*ldb+j], src[(2q+1)*ldb+j])
		src := b[pc*ldb+j0:]
		if p.pair != nil {
			pairs, width = kc/2, cols/16*16
			if pairs > 0 && width > 0 {
				s := src[:(2*pairs-1)*ldb+width]
				racePack(s, ldb, 2*pairs, width)
				p.pair(dst[:(pairs-1)*nr+width], nr, s, ldb, pairs, width)
			}
		}
		pairRowsGo(dst, nr, src, ldb, 0, pairs, width, cols, kc)
		pairRowsGo(dst, nr, src, ldb, pairs, kp, 0, cols, kc)
	} else {
		// dst[q*nr+j] = pair(src[j*ldb+2q], src[j*ldb+2q+1]): the rows
		// converted into the slab (slab[j*ldt+q]), then transposed into
		// the panel.
		src := b[j0*ldb+pc:]
		if p.cvtTrans != nil && cols >= 16 && kc >= 32 && rowsPerCacheSet(ldb, 16, 64) <= 2 {
			// Rows whose starts spread over L1's sets (a head of 64
			// floats in attention's Kᵀ): converted and transposed at once.
			pairs, width = kc/32*16, cols/16*16
			s := src[:(width-1)*ldb+2*pairs]
			racePack(s, ldb, width, 2*pairs)
			p.cvtTrans(dst[:(pairs-1)*nr+width], nr, s, ldb, width, pairs)
		} else if p.cvt != nil && p.transpose != nil && cols >= 16 {
			pairs, width = kc/32*16, cols/16*16
			step := min(pairs, slabWords/width/16*16)
			for q0 := 0; q0 < pairs; q0 += step {
				w := min(step, pairs-q0)
				s := src[2*q0:][:(width-1)*ldb+2*w]
				racePack(s, ldb, width, 2*w)
				p.cvt(slab[:(width-1)*w+w], w, s, ldb, width, w)
				p.transpose(dst[q0*nr:][:(w-1)*nr+width], nr, slab[:width*w], w, width, w)
			}
		}
		cvtTransGo(dst, nr, src, ldb, 0, pairs, width, cols, kc)
		cvtTransGo(dst, nr, src, ldb, pairs, kp, 0, cols, kc)
	}
	if cols < nr {
		for q := range kp {
			clear(dst[q*nr+cols : q*nr+nr])
		}
	}
}

// pairAt is the pair of inner indices 2q and 2q+1 of a row or column of
// op(X) whose index i is at x[i*step], the second 0 past kc.
func pairAt(x []float32, step, q, kc int) uint32 {
	hi := float32(0)
	if 2*q+1 < kc {
		hi = x[(2*q+1)*step]
	}
	return bf16Pair(x[2*q*step], hi)
}

// cvtRowGo sets dst[q] = pair(src[2q], src[2q+1]) for pairs q from q0 on.
func cvtRowGo(dst []uint32, src []float32, q0, kc int) {
	for q := q0; 2*q < kc; q++ {
		dst[q] = pairAt(src, 1, q, kc)
	}
}

// pairTransGo sets dst[r*ldd+q] = pair(src[2q*lds+r], src[(2q+1)*lds+r])
// for rows [r0, r1) and pairs from q0 on.
func pairTransGo(dst []uint32, ldd int, src []float32, lds int, r0, r1, q0, kc int) {
	if 2*q0 >= kc {
		return
	}
	for r := r0; r < r1; r++ {
		for q := q0; 2*q < kc; q++ {
			dst[r*ldd+q] = pairAt(src[r:], lds, q, kc)
		}
	}
}

// pairRowsGo sets dst[q*ldd+j] = pair(src[2q*lds+j], src[(2q+1)*lds+j]) for
// pairs [q0, q1) and columns [j0, j1).
func pairRowsGo(dst []uint32, ldd int, src []float32, lds int, q0, q1, j0, j1, kc int) {
	if j0 >= j1 {
		return
	}
	for q := q0; q < q1; q++ {
		for j := j0; j < j1; j++ {
			dst[q*ldd+j] = pairAt(src[j:], lds, q, kc)
		}
	}
}

// cvtTransGo sets dst[q*ldd+j] = pair(src[j*lds+2q], src[j*lds+2q+1]) for
// pairs [q0, q1) and columns [j0, j1).
func cvtTransGo(dst []uint32, ldd int, src []float32, lds int, q0, q1, j0, j1, kc int) {
	if j0 >= j1 {
		return
	}
	for q := q0; q < q1; q++ {
		for j := j0; j < j1; j++ {
			dst[q*ldd+j] = pairAt(src[j*lds:], 1, q, kc)
		}
	}
}
