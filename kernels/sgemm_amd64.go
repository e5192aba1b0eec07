//go:build !purego

package kernels

// The micro-kernels and packers of sgemm_amd64.s. Their tile shapes are
// fixed by the generator (../asm/sgemm).
var (
	sgemmAVX512 = newSgemmKernel(&sgemmKernel{
		name: "avx512-14x32", isa: AVX512, mr: 14, nr: 32, run: sgemmKernel14x32AVX512,
		packStep: 16, packTransA: sgemmPackT14AVX512, packCopyA: sgemmPackC14AVX512,
		packTransB: sgemmPackT32AVX512, packCopyB: sgemmPackC32AVX512,
	})
	sgemmAVX2 = newSgemmKernel(&sgemmKernel{
		name: "avx2-6x16", isa: AVX2, mr: 6, nr: 16, run: sgemmKernel6x16AVX2,
		packStep: 8, packTransA: sgemmPackT6AVX2, packCopyA: sgemmPackC6AVX2,
		packTransB: sgemmPackT16AVX2, packCopyB: sgemmPackC16AVX2,
	})
)

// sgemmKernelForISA picks the best micro-kernel the active ISA allows.
func sgemmKernelForISA() *sgemmKernel {
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
func sgemmKernels() []*sgemmKernel { return []*sgemmKernel{sgemmAVX512, sgemmAVX2, sgemmGo} }
