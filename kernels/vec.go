package kernels

// Element-wise vector arithmetic. Each writes dst[:len(dst)] and panics if
// an input is shorter; dst may be one of the inputs. They are safe
// to call concurrently on disjoint parts of a slice, and the result does not
// depend on how a caller splits it.

// AddF32 sets dst[i] = a[i] + b[i] for i < len(dst).
func AddF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: AddF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: AddF32 len(b) < len(dst)")
	addF32(dst, a[:len(dst)], b[:len(dst)])
}

// SubF32 sets dst[i] = a[i] - b[i] for i < len(dst).
func SubF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: SubF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: SubF32 len(b) < len(dst)")
	subF32(dst, a[:len(dst)], b[:len(dst)])
}

// MulF32 sets dst[i] = a[i] * b[i] for i < len(dst).
func MulF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: MulF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: MulF32 len(b) < len(dst)")
	mulF32(dst, a[:len(dst)], b[:len(dst)])
}

// DivF32 sets dst[i] = a[i] / b[i] for i < len(dst).
func DivF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: DivF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: DivF32 len(b) < len(dst)")
	divF32(dst, a[:len(dst)], b[:len(dst)])
}

// ScaleF32 sets dst[i] = alpha * src[i] for i < len(dst).
func ScaleF32(dst []float32, alpha float32, src []float32) {
	elemCheckLen(src, len(dst), "kernels: ScaleF32 len(src) < len(dst)")
	scaleF32(dst, alpha, src[:len(dst)])
}

// AddScalarF32 sets dst[i] = src[i] + v for i < len(dst).
func AddScalarF32(dst []float32, v float32, src []float32) {
	elemCheckLen(src, len(dst), "kernels: AddScalarF32 len(src) < len(dst)")
	addScalarF32(dst, v, src[:len(dst)])
}
