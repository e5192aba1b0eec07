package kernels

// TanhF32 sets dst[i] = tanh(src[i]) for i < len(dst), within 1.5 ulp (see
// exp.go for the conventions of the vector math functions).
func TanhF32(dst, src []float32) {
	elemCheckLen(src, len(dst), "kernels: TanhF32 len(src) < len(dst)")
	tanhF32(dst, src[:len(dst)])
}

// TanhBackwardF32 sets dx[i] = dy[i]·(1 - y[i]²) for i < len(dx): the
// gradient through TanhF32 from its output y. dx may be y or dy.
func TanhBackwardF32(dx, y, dy []float32) {
	elemCheckLen(y, len(dx), "kernels: TanhBackwardF32 len(y) < len(dx)")
	elemCheckLen(dy, len(dx), "kernels: TanhBackwardF32 len(dy) < len(dx)")
	tanhBackwardF32(dx, y[:len(dx)], dy[:len(dx)])
}
