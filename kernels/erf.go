package kernels

// ErfF32 sets dst[i] = erf(src[i]) for i < len(dst), within 1.5 ulp (see
// exp.go for the conventions of the vector math functions).
func ErfF32(dst, src []float32) {
	elemCheckLen(src, len(dst), "kernels: ErfF32 len(src) < len(dst)")
	erfF32(dst, src[:len(dst)])
}
