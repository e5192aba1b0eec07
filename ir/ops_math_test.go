package ir

import (
	"math"
	"testing"
)

// mathUnaryDomains are the new unary functions with an input range inside
// their domain, for the finite-difference gradient checks.
var mathUnaryDomains = []struct {
	fn     UnaryFn
	lo, hi float64
}{
	{Cos, -3, 3},
	{Sin, -3, 3},
	{Tan, -1.2, 1.2},
	{Acos, -0.9, 0.9},
	{Asin, -0.9, 0.9},
	{Atan, -3, 3},
	{Acosh, 1.1, 4},
	{Asinh, -3, 3},
	{Atanh, -0.9, 0.9},
	{Cosh, -2, 2},
	{Sinh, -2, 2},
}

func TestMathUnaryGradients(t *testing.T) {
	for _, u := range mathUnaryDomains {
		t.Run(u.fn.String(), func(t *testing.T) {
			runGradCase(t, gradCase{name: "Unary/" + u.fn.String(), build: func(h *caseBuilder) []*Value {
				return []*Value{h.op(&Unary{Fn: u.fn}, h.param(Shape{3, 4}, u.lo, u.hi))}
			}})
		})
	}
}

// TestMathUnaryFloat32 checks that float32 results are the float64
// function rounded once, against Go's math package as the reference.
func TestMathUnaryFloat32(t *testing.T) {
	ref := map[UnaryFn]func(float64) float64{
		Cos: math.Cos, Sin: math.Sin, Tan: math.Tan, Acos: math.Acos, Asin: math.Asin, Atan: math.Atan,
		Acosh: math.Acosh, Asinh: math.Asinh, Atanh: math.Atanh, Cosh: math.Cosh, Sinh: math.Sinh,
	}
	for _, u := range mathUnaryDomains {
		xs := []float32{float32(u.lo), float32(u.hi), float32((u.lo + u.hi) / 3), float32(math.NaN())}
		out, err := EvalOp(&Unary{Fn: u.fn}, FromFloat32s(Shape{len(xs)}, xs))
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range xs {
			got, want := out[0].Float32s()[i], float32(ref[u.fn](float64(x)))
			if got != want && !(got != got && want != want) {
				t.Errorf("%s(%g) = %g, want %g", u.fn, x, got, want)
			}
		}
	}
}
