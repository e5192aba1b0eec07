package cpu

import "github.com/dstune/dstune/kernels"

// divBlock is how many quotients divScalar hands kernels.DivF32 at a time,
// the scalar repeated in a buffer on the stack.
const divBlock = 256

// divScalar sets out[i] = v[i] / s, or s / v[i] with scalarFirst, for
// i < len(out), with the SIMD division of kernels.DivF32 (correctly
// rounded, as the scalar loop it replaces: the same bits, several times
// faster than one divss after another).
func divScalar(out, v []float32, s float32, scalarFirst bool) {
	var buf [divBlock]float32
	for i := range buf {
		buf[i] = s
	}
	v = v[:len(out)]
	for lo := 0; lo < len(out); lo += divBlock {
		hi := min(len(out), lo+divBlock)
		num, den := v[lo:hi], buf[:hi-lo]
		if scalarFirst {
			num, den = den, num
		}
		kernels.DivF32(out[lo:hi], num, den)
	}
}
