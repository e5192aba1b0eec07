package kernels

// Vector math in float32. Each function writes dst[:len(dst)] from
// src[:len(dst)] (panicking if src is shorter); dst may be src. The error
// bound stated per function holds for the AVX2 and AVX-512 versions (which
// give identical bits) over every float32 input, measured against float64
// math (TestMathAccuracy; DSTUNE_EXHAUSTIVE=1 checks all 2³² inputs, by
// default a sweep of 4·10⁶ covering every exponent runs). The generic
// versions compute in float64 and round once (≤ 0.5 ulp). NaN gives NaN;
// subnormal inputs and results are handled like normal ones (nothing is
// flushed to zero).

// ExpF32 sets dst[i] = e^src[i] for i < len(dst), within 1.02 ulp;
// overflow gives +Inf (src > 88.72), results below the smallest subnormal 0.
func ExpF32(dst, src []float32) {
	elemCheckLen(src, len(dst), "kernels: ExpF32 len(src) < len(dst)")
	expF32(dst, src[:len(dst)])
}

// SigmoidF32 sets dst[i] = 1/(1+e^-src[i]) for i < len(dst), within 2.5
// ulp (3·10⁻⁷ relative), including the tiny results of large negative
// inputs.
func SigmoidF32(dst, src []float32) {
	elemCheckLen(src, len(dst), "kernels: SigmoidF32 len(src) < len(dst)")
	sigmoidF32(dst, src[:len(dst)])
}

// SigmoidBackwardF32 sets dx[i] = dy[i]·y[i]·(1 - y[i]) for i < len(dx):
// the gradient through SigmoidF32 from its output y. dx may be y or dy.
func SigmoidBackwardF32(dx, y, dy []float32) {
	elemCheckLen(y, len(dx), "kernels: SigmoidBackwardF32 len(y) < len(dx)")
	elemCheckLen(dy, len(dx), "kernels: SigmoidBackwardF32 len(dy) < len(dx)")
	sigmoidBackwardF32(dx, y[:len(dx)], dy[:len(dx)])
}
