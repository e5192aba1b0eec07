package cpu

import "github.com/dstune/dstune/kernels"

// divBlock is how many quotients divVS and divSV hand kernels.DivF32 at a
// time, the scalar repeated in a buffer on the stack.
const divBlock = 256

// divVS sets out[i] = a[i] / s for i < len(out), with the SIMD division
// of kernels.DivF32 (correctly rounded, as the scalar loop it replaces:
// the same bits, several times faster than one divss after another).
func divVS(out, a []float32, s float32) {
	var buf [divBlock]float32
	for i := range buf {
		buf[i] = s
	}
	a = a[:len(out)]
	for lo := 0; lo < len(out); lo += divBlock {
		hi := min(len(out), lo+divBlock)
		kernels.DivF32(out[lo:hi], a[lo:hi], buf[:hi-lo])
	}
}

// divSV sets out[i] = s / b[i] for i < len(out), as divVS.
func divSV(out []float32, s float32, b []float32) {
	var buf [divBlock]float32
	for i := range buf {
		buf[i] = s
	}
	b = b[:len(out)]
	for lo := 0; lo < len(out); lo += divBlock {
		hi := min(len(out), lo+divBlock)
		kernels.DivF32(out[lo:hi], buf[:hi-lo], b[lo:hi])
	}
}
