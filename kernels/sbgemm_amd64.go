//go:build !purego

package kernels

import "golang.org/x/sys/cpu"

// hasAVX512BF16 is whether the CPU has the bfloat16 instructions; the
// kernel and its packers also need the AVX512 level (F, BW, DQ, VL).
var hasAVX512BF16 = cpu.X86.HasAVX512BF16

// useAVX512BF16 is what Sbgemm's dispatch tests.
func useAVX512BF16() bool { return hasAVX512BF16 && useAVX512() }

// The micro-kernel and packers of sbgemm_amd64.s. The tile shape is fixed
// by the generator (../asm/sgemm).
var sbgemmAVX512BF16 = newSbgemmKernel(&gemmKernel[uint32]{
	name: "avx512bf16-14x32", isa: AVX512, mr: 14, nr: 32, kStep: 2, run: sbgemmKernel14x32AVX512BF16,
	pack: &sbgemmPacker{
		nr: 32, cvt: sbgemmPackCvtAVX512BF16, pair: sbgemmPackPairAVX512BF16, transpose: sbgemmTransposeAVX512,
		cvtTrans: sbgemmPackCvtTransAVX512BF16,
	},
})

// sbgemmFMA is Sbgemm on the AVX2 float32 kernel, for CPUs without
// AVX512_BF16 (see sbgemm_fma.go).
var sbgemmFMA = newSbgemmWideKernel("fma-bf16-6x16", AVX2, 6, 16, sgemmKernel6x16AVX2FTZ, &sbgemmWidePacker{
	fp32:      sgemmAVX2.pack.(*sgemmPacker),
	swapPairs: func(dst, src []float32) { sbgemmWideSwapPairsAVX2(dst, src, len(dst)) },
	swapRows:  sbgemmWideSwapRowsAVX2,
})

// sbgemmWideKernelForISA is the float32 kernel Sbgemm runs on when the
// active ISA has FMA but not the bfloat16 instructions, or nil.
func sbgemmWideKernelForISA() *gemmKernel[float32] {
	if !useAVX512BF16() && useAVX2() {
		return sbgemmFMA
	}
	return nil
}

// sbgemmWideKernels lists the float32 kernels Sbgemm can run on in this
// build, whether or not this CPU has them (tests adjust their blocking).
func sbgemmWideKernels() []*gemmKernel[float32] { return []*gemmKernel[float32]{sbgemmFMA} }

// sbgemmKernelForISA picks the best bfloat16 micro-kernel the CPU and the
// active ISA allow.
func sbgemmKernelForISA() *gemmKernel[uint32] {
	if useAVX512BF16() {
		return sbgemmAVX512BF16
	}
	return sbgemmGo
}

// sbgemmKernels lists every bfloat16 micro-kernel of this build that this
// CPU can run (tests adjust their blocking).
func sbgemmKernels() []*gemmKernel[uint32] {
	if hasAVX512BF16 && HardwareISA() >= AVX512 {
		return []*gemmKernel[uint32]{sbgemmAVX512BF16, sbgemmGo}
	}
	return []*gemmKernel[uint32]{sbgemmGo}
}
