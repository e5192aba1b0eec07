package kernels

// TanhF32 sets dst[i] = tanh(src[i]) for i < len(dst), within 2 ulp (see
// exp.go for the conventions of the vector math functions).
func TanhF32(dst, src []float32) {
	checkLen(src, len(dst), "kernels: TanhF32 len(src) < len(dst)")
	tanhF32(dst, src[:len(dst)])
}
