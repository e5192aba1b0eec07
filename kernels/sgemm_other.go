//go:build !amd64 || purego

package kernels

// sgemmKernelForISA picks the best micro-kernel the active ISA allows: on
// this build only the portable one.
func sgemmKernelForISA() *gemmKernel[float32] { return sgemmGo }

// sgemmKernels lists every micro-kernel of this build (tests adjust their
// blocking).
func sgemmKernels() []*gemmKernel[float32] { return []*gemmKernel[float32]{sgemmGo} }
