package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Finite-difference checks of the backward kernels: each gradient the
// kernels compute is compared with central differences of a float64
// forward function written here from the definition, so a wrong formula
// (not just a rounding slip) fails.

// elemNumGrad returns the central-difference gradient of f at x.
func elemNumGrad(x []float64, f func([]float64) float64) []float64 {
	g := make([]float64, len(x))
	for i := range x {
		h := 1e-5 * (1 + math.Abs(x[i]))
		old := x[i]
		x[i] = old + h
		up := f(x)
		x[i] = old - h
		down := f(x)
		x[i] = old
		g[i] = (up - down) / (2 * h)
	}
	return g
}

func elemTo64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

func elemCheckGrad(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	scale := 0.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	for i, w := range want {
		if math.Abs(float64(got[i])-w) > 1e-4*scale+1e-6 {
			t.Fatalf("%s: gradient[%d] = %v, finite differences %v", what, i, got[i], w)
		}
	}
}

func elemSoftmax64(x []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, v)
	}
	out := make([]float64, len(x))
	var s float64
	for i, v := range x {
		out[i] = math.Exp(v - m)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

func elemDot64(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func TestBackwardFiniteDifferences(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(40, uint64(isa)))
		for _, cols := range []int{1, 2, 7, 16, 19, 40} {
			x := elemRandSlice(rng, cols, 1.5, false)
			dy := elemRandSlice(rng, cols, 1, false)
			x64, dy64 := elemTo64(x), elemTo64(dy)

			y := make([]float32, cols)
			dx := make([]float32, cols)
			Softmax(1, 1, cols, y, cols, x, cols)
			SoftmaxBackward(1, 1, cols, dx, cols, y, cols, dy, cols)
			elemCheckGrad(t, "SoftmaxBackward", dx, elemNumGrad(x64, func(v []float64) float64 { return elemDot64(dy64, elemSoftmax64(v)) }))

			LogSoftmax(1, 1, cols, y, cols, x, cols)
			LogSoftmaxBackward(1, 1, cols, dx, cols, y, cols, dy, cols)
			elemCheckGrad(t, "LogSoftmaxBackward", dx, elemNumGrad(x64, func(v []float64) float64 {
				p := elemSoftmax64(v)
				var s float64
				for i := range p {
					s += dy64[i] * math.Log(p[i])
				}
				return s
			}))

			// Attention: gradient with respect to the raw scores is
			// scale · SoftmaxBackward of the probabilities.
			const scale = 0.3
			mask := elemRandSlice(rng, cols, 1, false)
			AttentionSoftmax(1, 1, 1, cols, y, cols, x, cols, scale, mask, cols, false)
			SoftmaxBackward(1, 1, cols, dx, cols, y, cols, dy, cols)
			ScaleF32(dx, scale, dx)
			elemCheckGrad(t, "AttentionSoftmax", dx, elemNumGrad(x64, func(v []float64) float64 {
				z := make([]float64, len(v))
				for i := range v {
					z[i] = scale*v[i] + float64(mask[i])
				}
				return elemDot64(dy64, elemSoftmax64(z))
			}))

			target := rng.IntN(cols)
			const gradScale = 0.25
			SoftmaxCrossEntropy(1, 1, cols, x, cols, []int32{int32(target)}, -1, dx, cols, gradScale)
			elemCheckGrad(t, "SoftmaxCrossEntropy", dx, elemNumGrad(x64, func(v []float64) float64 {
				return -gradScale * math.Log(elemSoftmax64(v)[target])
			}))

			// LayerNorm: gradients with respect to x, gamma and beta.
			gamma, beta := elemRandSlice(rng, cols, 1, false), elemRandSlice(rng, cols, 1, false)
			mean, rstd := make([]float32, 1), make([]float32, 1)
			LayerNorm(1, 1, cols, y, cols, x, cols, gamma, beta, lnEps, mean, rstd)
			dgamma, dbeta := make([]float32, cols), make([]float32, cols)
			LayerNormBackward(1, 1, cols, dx, cols, dy, cols, x, cols, gamma, mean, rstd, dgamma, dbeta)
			ln := func(xv, g, b []float64) float64 {
				var m, v2 float64
				for _, v := range xv {
					m += v
				}
				m /= float64(len(xv))
				for _, v := range xv {
					v2 += (v - m) * (v - m)
				}
				r := 1 / math.Sqrt(v2/float64(len(xv))+lnEps)
				var s float64
				for i, v := range xv {
					s += dy64[i] * ((v-m)*r*g[i] + b[i])
				}
				return s
			}
			g64, b64 := elemTo64(gamma), elemTo64(beta)
			if cols > 1 { // one column normalizes to a constant: zero gradient, nothing to difference
				elemCheckGrad(t, "LayerNormBackward dx", dx, elemNumGrad(x64, func(v []float64) float64 { return ln(v, g64, b64) }))
			}
			elemCheckGrad(t, "LayerNormBackward dgamma", dgamma, elemNumGrad(g64, func(v []float64) float64 { return ln(x64, v, b64) }))
			elemCheckGrad(t, "LayerNormBackward dbeta", dbeta, elemNumGrad(b64, func(v []float64) float64 { return ln(x64, g64, v) }))

			// GELU, both forms.
			GeluBackwardF32(dx, x, dy)
			elemCheckGrad(t, "GeluBackward", dx, elemNumGrad(x64, func(v []float64) float64 {
				var s float64
				for i := range v {
					s += dy64[i] * refGelu(v[i])
				}
				return s
			}))
			GeluTanhBackwardF32(dx, x, dy)
			elemCheckGrad(t, "GeluTanhBackward", dx, elemNumGrad(x64, func(v []float64) float64 {
				var s float64
				for i := range v {
					s += dy64[i] * 0.5 * v[i] * (1 + math.Tanh(sqrt2OverPi*(v[i]+0.044715*v[i]*v[i]*v[i])))
				}
				return s
			}))
		}
	})
}
