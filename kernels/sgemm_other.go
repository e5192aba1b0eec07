//go:build !amd64 || purego

package kernels

// sgemmKernelForISA picks the best micro-kernel the active ISA allows: on
// this build only the portable one.
func sgemmKernelForISA() *sgemmKernel { return sgemmGo }

// sgemmKernels lists every micro-kernel of this build (tests adjust their
// blocking).
func sgemmKernels() []*sgemmKernel { return []*sgemmKernel{sgemmGo} }
