package kernels

// Sbgemm on CPUs without AVX512_BF16 but with FMA (most x86 CPUs): the
// float32 micro-kernel multiplies operands that were rounded to bfloat16
// when they were packed. A product of two bfloat16 values is exact in
// float32, so an FMA that adds it to a partial sum rounds exactly as
// VDPBF16PS's step does; what is left is the order and the flush to zero:
//
//   - VDPBF16PS adds the high half of each pair (inner index p+1) before
//     the low one (p). The packer swaps the two indices of every pair, so a
//     kernel summing its elements in order adds them in that order (an odd
//     last index is paired with 0, which goes first, as in sbgemmPacker).
//   - VDPBF16PS flushes partial sums below 2⁻¹²⁶ to zero. The kernel sets
//     MXCSR's flush-to-zero bit while it sums (see sgemmKernel6x16AVX2FTZ).
//
// The result is the bfloat16 kernels' bits at about Sgemm's speed, with
// one possible difference at the edge of the flush: the portable rule
// (bf16FMA) rounds a sum to float32's denormal grid and flushes it only if
// it stays below 2⁻¹²⁶, while FTZ flushes what underflows by the
// hardware's own test, which for a sum less than half a denormal step
// below 2⁻¹²⁶ may decide the other way.

// sbgemmWidePacker lays out Sbgemm's operands for a float32 kernel: the
// float32 packer's layout, then every element rounded to bfloat16 (kept as
// a float32, its low 16 bits zero) and the inner indices of every pair
// swapped. Rows of A and panels of B hold an even number of inner indices.
type sbgemmWidePacker struct {
	fp32 *sgemmPacker
	// swapPairs and swapRows, where the CPU has them, round and swap:
	// adjacent elements from src into dst (a row of A; dst may be src),
	// or rows of 16 in place (a panel of B). nil: Go.
	swapPairs func(dst, src []float32)
	swapRows  func(x []float32, pairs int)
}

func (p *sbgemmWidePacker) direct([]float32) ([]float32, bool) { return nil, false }

func (p *sbgemmWidePacker) scratchLen() int { return 0 }

func (p *sbgemmWidePacker) packA(dst []float32, ldd int, _ []float32, a []float32, lda int, transA bool, i0, mc, pc, kc int) {
	// Rows of plain A are copied, rounded and swapped in one pass; a
	// transposed A is laid out by the float32 packer first, then rounded
	// and swapped in place. The Go loop takes the pairs past the assembly's
	// multiple of 8 (and all of them without it).
	fused := !transA && p.swapPairs != nil
	if !fused {
		p.fp32.packA(dst, ldd, nil, a, lda, transA, i0, mc, pc, kc)
	}
	ke, bulk := roundUp(kc, 2), 0
	if p.swapPairs != nil {
		bulk = kc / 8 * 8
	}
	for r := range mc {
		row := dst[r*ldd : r*ldd+ke]
		src := row[:kc]
		if fused {
			src = a[(i0+r)*lda+pc:][:kc]
			racePack(src, kc, 1, bulk)
			copy(row[bulk:kc], src[bulk:])
		}
		if bulk > 0 {
			p.swapPairs(row[:bulk], src[:bulk])
		}
		if ke > kc {
			row[kc] = 0
		}
		swapPairsGo(row[bulk:])
	}
}

func (p *sbgemmWidePacker) packB(dst []float32, _ []float32, b []float32, ldb int, transB bool, pc, kc, j0, cols int) {
	nr := p.fp32.nr
	p.fp32.packB(dst, nil, b, ldb, transB, pc, kc, j0, cols)
	if kc%2 == 1 {
		clear(dst[kc*nr : (kc+1)*nr])
	}
	panel := dst[:roundUp(kc, 2)*nr]
	if p.swapRows != nil && nr == 16 {
		p.swapRows(panel, len(panel)/32)
		return
	}
	swapRowsGo(panel, nr)
}

// swapPairsGo rounds x's elements to bfloat16 and swaps them in pairs
// (len(x) even).
func swapPairsGo(x []float32) {
	for q := 0; q+1 < len(x); q += 2 {
		x[q], x[q+1] = roundBF16(x[q+1]), roundBF16(x[q])
	}
}

// swapRowsGo rounds x's elements to bfloat16 and swaps its rows of nr in
// pairs (an even number of rows).
func swapRowsGo(x []float32, nr int) {
	for q := 0; q+2*nr <= len(x); q += 2 * nr {
		lo, hi := x[q:q+nr], x[q+nr:q+2*nr]
		for j := range lo {
			lo[j], hi[j] = roundBF16(hi[j]), roundBF16(lo[j])
		}
	}
}

// roundBF16 is x rounded to bfloat16 (bf16Round), as a float32.
func roundBF16(x float32) float32 { return bf16Value(bf16Round(x)) }

// newSbgemmWideKernel is a bfloat16 kernel on the float32 micro-kernel
// run (which must flush its partial sums, see above), with fp32's layout,
// and the bfloat16 kernels' block of inner indices so that every path
// sums in the same order.
func newSbgemmWideKernel(name string, isa ISA, mr, nr int, run gemmMicroKernel[float32], pack *sbgemmWidePacker) *gemmKernel[float32] {
	k := newGemmKernel(&gemmKernel[float32]{name: name, isa: isa, mr: mr, nr: nr, kStep: 1, pairs: true, run: run, pack: pack})
	k.block.kc = bf16BlockKC()
	return k
}
