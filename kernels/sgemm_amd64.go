//go:build !purego

package kernels

// The micro-kernels of sgemm_amd64.s. Their tile shapes are fixed by the
// generator (../asm/sgemm).
var (
	sgemmAVX512 = newSgemmKernel("avx512-14x32", 14, 32, sgemmKernel14x32AVX512)
	sgemmAVX2   = newSgemmKernel("avx2-6x16", 6, 16, sgemmKernel6x16AVX2)
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
