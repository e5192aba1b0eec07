package kernels

// GELU activations and their gradients, element-wise (see exp.go for the
// slice conventions and how accuracy is measured; dx may be x or dy). Past
// |x| = 15 the value is x or -0 and the slope 1 or 0 in float32, which is
// also what ±Inf give (not the NaN of evaluating ½x(1+erf(x/√2)) at -Inf).
// Results below 10⁻³⁷ in magnitude pass through subnormal intermediates and
// may be off by up to 10⁻⁴².

// GeluF32 sets dst[i] = x·Φ(x) = ½x(1 + erf(x/√2)), x = src[i], for
// i < len(dst): the exact GELU (ONNX Gelu, PyTorch's default), within 7
// ulp (8·10⁻⁷ relative). Φ is computed from erfc for negative x, so small
// negative results keep their relative accuracy.
func GeluF32(dst, src []float32) {
	elemCheckLen(src, len(dst), "kernels: GeluF32 len(src) < len(dst)")
	geluF32(dst, src[:len(dst)])
}

// GeluBackwardF32 sets dx[i] = dy[i]·(Φ(x) + x·φ(x)), x = x[i], φ the
// standard normal density: the gradient through GeluF32. The error is
// within 4 ulp of |Φ(x)| + |x·φ(x)| (the terms, which cancel near
// x = -0.75), times |dy|.
func GeluBackwardF32(dx, x, dy []float32) {
	elemCheckLen(x, len(dx), "kernels: GeluBackwardF32 len(x) < len(dx)")
	elemCheckLen(dy, len(dx), "kernels: GeluBackwardF32 len(dy) < len(dx)")
	geluBackwardF32(dx, x[:len(dx)], dy[:len(dx)])
}

// GeluTanhF32 sets dst[i] = ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³),
// x = src[i], for i < len(dst): the tanh approximation of GELU (ONNX Gelu
// with approximate="tanh", GPT-2's gelu_new). It is evaluated as the equal
// x·σ(2u), which keeps accuracy for negative x: within 6 ulp of the value
// at some x' within 2 ulp of x (for x < -2, e^{2u} magnifies the rounding
// of u by |2u|).
func GeluTanhF32(dst, src []float32) {
	elemCheckLen(src, len(dst), "kernels: GeluTanhF32 len(src) < len(dst)")
	geluTanhF32(dst, src[:len(dst)])
}

// GeluTanhBackwardF32 sets dx[i] = dy[i]·d/dx GeluTanh(x), x = x[i], with
// GeluTanhF32's accuracy measured against the size of the derivative's
// terms, as for GeluBackwardF32.
func GeluTanhBackwardF32(dx, x, dy []float32) {
	elemCheckLen(x, len(dx), "kernels: GeluTanhBackwardF32 len(x) < len(dx)")
	elemCheckLen(dy, len(dx), "kernels: GeluTanhBackwardF32 len(dy) < len(dx)")
	geluTanhBackwardF32(dx, x[:len(dx)], dy[:len(dx)])
}
