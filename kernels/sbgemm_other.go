//go:build !amd64 || purego

package kernels

// sbgemmKernelForISA picks the best bfloat16 micro-kernel: on this build
// only the portable one.
func sbgemmKernelForISA() *gemmKernel[uint32] { return sbgemmGo }

// sbgemmKernels lists every bfloat16 micro-kernel of this build.
func sbgemmKernels() []*gemmKernel[uint32] { return []*gemmKernel[uint32]{sbgemmGo} }

// sbgemmWideKernelForISA is nil: this build has no float32 kernel for
// Sbgemm to run on.
func sbgemmWideKernelForISA() *gemmKernel[float32] { return nil }

// sbgemmWideKernels is empty on this build.
func sbgemmWideKernels() []*gemmKernel[float32] { return nil }
