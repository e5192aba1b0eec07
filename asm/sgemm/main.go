// Command sgemm generates dstune's GEMM micro-kernels and packers with avo:
// float32 (kernels/sgemm_amd64.s), bfloat16 (kernels/sbgemm_amd64.s) and,
// with -peak, the loops that measure the FMA and bfloat16 dot-product peaks.
//
//	go run ./sgemm -out ../kernels/sgemm_amd64.s -stubs ../kernels/sgemm_stubs_amd64.go -pkg kernels
//	go run ./sgemm -bf16 -out ../kernels/sbgemm_amd64.s -stubs ../kernels/sbgemm_stubs_amd64.go -pkg kernels
//	go run ./sgemm -peak -out ../kernels/peak_fma_amd64.s -stubs ../kernels/peak_fma_stubs_amd64.go -pkg kernels
//	go run ./sgemm -peak -bf16 -out ../kernels/peak_bf16_amd64.s -stubs ../kernels/peak_bf16_stubs_amd64.go -pkg kernels
//
// A micro-kernel computes rows×cols of C in MR×NR tiles, one tile per MR
// rows of A against one packed panel of B:
//
//	a: row-major, row i at a[i*lda:], kc elements each
//	b: kc×NR elements, b[p*NR + j] = op(B)(p, j0+j)
//
// (for bfloat16 an element is a pair of inner indices, see sbgemm.go). It
// keeps the whole tile in vector registers (columns of C along the vector
// lanes), so each step p costs NR/W vector loads of b, MR broadcasts of a
// and MR·NR/W FMAs with no other memory traffic. Looping over the tiles in
// assembly keeps the Go call overhead to one call per panel of B. The last
// tile runs code for exactly its rows, so rows past the end of A are never
// read and never computed. Columns past cols are masked off on load and
// store; the panel of B is zero there.
//
// The packers copy blocks of A and B into those layouts: copying or
// transposing (16×16 or 8×8 register transposes) for float32, converting
// rows to bfloat16 pairs or interleaving pairs of rows into them for
// bfloat16 (transposed operands are converted and transposed 16 rows at
// a time, or, where those rows would share a few L1 sets, converted a
// slab at a time, then transposed as words).
package main

import (
	"flag"
	"fmt"
	"os"

	. "github.com/mmcloughlin/avo/build"
)

var (
	peak = flag.Bool("peak", false, "generate the peak loops instead of the GEMM kernels")
	bf16 = flag.Bool("bf16", false, "generate the bfloat16 kernels (with -peak: the bfloat16 peak loop)")
)

// Micro-tile shapes and packer widths. These must agree with
// kernels/sgemm_amd64.go and kernels/sbgemm_amd64.go.
const (
	// AVX-512: 14 rows × 2 zmm = 28 accumulators, 2 registers for b and 2
	// for broadcasts of a (all 32). 28 independent FMAs per step hide the
	// 4-cycle FMA latency on two pipes, and the 6-cycle latency of
	// VDPBF16PS. Broadcasting a into a register once per row (rather than
	// an embedded-broadcast memory operand per FMA) halves the loads per
	// step; on Zen 5 that took the kernel from about 90% to about 98% of
	// the FMA peak.
	mrAVX512 = 14
	nvAVX512 = 2
	// AVX2: 6 rows × 2 ymm = 12 accumulators, 2 for b, 1 broadcast.
	mrAVX2 = 6
	nvAVX2 = 2
	// Steps of p per loop iteration.
	unroll = 4
	// Independent chains that keep the pipes busy: latency × pipes (4 × 2
	// for FMA on Zen 3 to 5 and Intel since Skylake, 6 × 2 for VDPBF16PS
	// on Zen 5). The kernels' tiles should have at least that many
	// accumulators; the peak loops run more, to be sure of the peak.
	fmaChains      = 8
	bf16Chains     = 12
	peakChains     = 12
	peakChainsBF16 = 18
)

func main() {
	flag.Parse()
	ConstraintExpr("!purego")
	switch {
	case *peak && *bf16:
		peakLoop("peakBF16AVX512BF16", 16, peakChainsBF16, true)
	case *peak:
		peakLoop("peakFMAAVX512", 16, peakChains, false)
		peakLoop("peakFMAAVX2", 8, peakChains, false)
	case *bf16:
		kernelAVX512(fmt.Sprintf("sbgemmKernel%dx%dAVX512BF16", mrAVX512, 16*nvAVX512), mrAVX512, nvAVX512, true)
		packCvtBF16("sbgemmPackCvtAVX512BF16")
		packPairBF16("sbgemmPackPairAVX512BF16")
		packCvtTransBF16("sbgemmPackCvtTransAVX512BF16")
		transposeAVX512("sbgemmTransposeAVX512", "uint32")
	default:
		kernelAVX512(fmt.Sprintf("sgemmKernel%dx%dAVX512", mrAVX512, 16*nvAVX512), mrAVX512, nvAVX512, false)
		kernelAVX2(fmt.Sprintf("sgemmKernel%dx%dAVX2", mrAVX2, 8*nvAVX2), mrAVX2, nvAVX2, false)
		kernelAVX2(fmt.Sprintf("sgemmKernel%dx%dAVX2FTZ", mrAVX2, 8*nvAVX2), mrAVX2, nvAVX2, true)
		wideSwapPairs("sbgemmWideSwapPairsAVX2")
		wideSwapRows("sbgemmWideSwapRowsAVX2")
		transposeAVX512("sgemmTransposeAVX512", "float32")
		packCopyAVX512(fmt.Sprintf("sgemmPackC%dAVX512", 16*nvAVX512), 16*nvAVX512)
		transposeAVX2("sgemmTransposeAVX2")
		packCopyAVX2(fmt.Sprintf("sgemmPackC%dAVX2", 8*nvAVX2), 8*nvAVX2)
	}
	Generate()
	if *bf16 {
		if err := rewriteBF16(flag.Lookup("out").Value.String()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
