//go:build !amd64 || purego

package kernels

// sgemmKernelForISA picks the best micro-kernel the active ISA allows: on
// this build only the portable one.
func sgemmKernelForISA() *sgemmKernel { return sgemmGo }
