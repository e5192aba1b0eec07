//go:build !purego

package kernels

// The micro-kernels and packers of sgemm_amd64.s. Their tile shapes are
// fixed by the generator (../asm/sgemm).
var (
	sgemmAVX512 = newGemmKernel(&gemmKernel[float32]{
		name: "avx512-14x32", isa: AVX512, mr: 14, nr: 32, kStep: 1, run: sgemmKernel14x32AVX512,
		pack: &sgemmPacker{nr: 32, step: 16, transpose: sgemmTransposeAVX512, copyPanel: sgemmPackC32AVX512},
	})
	sgemmAVX2 = newGemmKernel(&gemmKernel[float32]{
		name: "avx2-6x16", isa: AVX2, mr: 6, nr: 16, kStep: 1, run: sgemmKernel6x16AVX2,
		pack: &sgemmPacker{nr: 16, step: 8, transpose: sgemmTransposeAVX2, copyPanel: sgemmPackC16AVX2},
	})
)

// sgemmKernelForISA picks the best micro-kernel the active ISA allows.
func sgemmKernelForISA() *gemmKernel[float32] {
	switch {
	case useAVX512():
		return sgemmAVX512
	case useAVX2():
		return sgemmAVX2
	}
	return sgemmGo
}

// sgemmKernels lists every micro-kernel of this build (tests adjust their
// blocking).
func sgemmKernels() []*gemmKernel[float32] {
	return []*gemmKernel[float32]{sgemmAVX512, sgemmAVX2, sgemmGo}
}
