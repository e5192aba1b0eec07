package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// elemTestLengths crosses every unroll and tail boundary of the kernels (16
// lanes × 4 on AVX-512, 8 × 4 on AVX2) and a few long slices.
func elemTestLengths() []int {
	var ns []int
	for n := 0; n <= 130; n++ {
		ns = append(ns, n)
	}
	return append(ns, 255, 256, 257, 1000, 4099)
}

// elementwise is one element-wise kernel under test: run computes dst from
// the inputs; want gives the float64 reference of element i; ulps bounds
// the error (0: exact, bit for bit, against the float32 expression).
type elementwise struct {
	name   string
	inputs int
	run    func(dst []float32, in [][]float32)
	exact  func(in [][]float32, i int) float32 // exact float32 expectation, or nil
	ref    *mathFunc                           // or the math function's bounds, for one input
	grad   string                              // or the name of the derivative in mathFuncs, for (x, dy) inputs
	ref2   func(a, b float64) float64          // or a float64 reference of two inputs, within ulps
	ulps   float64
	// domain maps any value into the first input's domain (the outputs
	// of tanh or the sigmoid, for their backward kernels).
	domain func(float32) float32
}

const elemAlpha = float32(-1.7)

var elementwiseKernels = []elementwise{
	{name: "Add", inputs: 2, run: func(d []float32, in [][]float32) { AddF32(d, in[0], in[1]) },
		exact: func(in [][]float32, i int) float32 { return in[0][i] + in[1][i] }},
	{name: "Sub", inputs: 2, run: func(d []float32, in [][]float32) { SubF32(d, in[0], in[1]) },
		exact: func(in [][]float32, i int) float32 { return in[0][i] - in[1][i] }},
	{name: "Mul", inputs: 2, run: func(d []float32, in [][]float32) { MulF32(d, in[0], in[1]) },
		exact: func(in [][]float32, i int) float32 { return in[0][i] * in[1][i] }},
	{name: "Div", inputs: 2, run: func(d []float32, in [][]float32) { DivF32(d, in[0], in[1]) },
		exact: func(in [][]float32, i int) float32 { return in[0][i] / in[1][i] }},
	{name: "Scale", inputs: 1, run: func(d []float32, in [][]float32) { ScaleF32(d, elemAlpha, in[0]) },
		exact: func(in [][]float32, i int) float32 { return elemAlpha * in[0][i] }},
	{name: "AddScalar", inputs: 1, run: func(d []float32, in [][]float32) { AddScalarF32(d, elemAlpha, in[0]) },
		exact: func(in [][]float32, i int) float32 { return in[0][i] + elemAlpha }},
	{name: "TanhBackward", inputs: 2, run: func(d []float32, in [][]float32) { TanhBackwardF32(d, in[0], in[1]) },
		ref2: func(y, dy float64) float64 { return dy * (1 - y*y) }, ulps: 1.5,
		domain: func(v float32) float32 { return float32(math.Tanh(float64(v))) }},
	{name: "SigmoidBackward", inputs: 2, run: func(d []float32, in [][]float32) { SigmoidBackwardF32(d, in[0], in[1]) },
		ref2: func(y, dy float64) float64 { return dy * y * (1 - y) }, ulps: 3,
		domain: func(v float32) float32 { return float32(refSigmoid(float64(v))) }},
	{name: "GeluBackward", inputs: 2, run: func(d []float32, in [][]float32) { GeluBackwardF32(d, in[0], in[1]) }, grad: "GeluGrad"},
	{name: "GeluTanhBackward", inputs: 2, run: func(d []float32, in [][]float32) { GeluTanhBackwardF32(d, in[0], in[1]) }, grad: "GeluTanhGrad"},
}

func init() {
	for i := range mathFuncs {
		f := &mathFuncs[i]
		elementwiseKernels = append(elementwiseKernels, elementwise{
			name: f.name, inputs: 1, run: func(d []float32, in [][]float32) { f.run(d, in[0]) }, ref: f,
		})
	}
}

func elemSameFloat(a, b float32) bool {
	return a == b && math.Signbit(float64(a)) == math.Signbit(float64(b)) || a != a && b != b
}

// TestElementwise checks every element-wise kernel on every ISA and every
// length up to 130 (and some longer) against exact float32 results or
// float64 references, with guard words around the output, and in place
// (dst = first input) against out of place.
func TestElementwise(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(1, uint64(isa)))
		for _, k := range elementwiseKernels {
			t.Run(k.name, func(t *testing.T) {
				for _, n := range elemTestLengths() {
					in := make([][]float32, k.inputs)
					for j := range in {
						// Special values in the data inputs; the
						// gradients dy stay finite.
						in[j] = elemRandSlice(rng, n, 3, j == 0 || k.grad == "")
					}
					k.mapDomain(in)
					out := newElemGuarded(n)
					k.run(out.s(), in)
					out.check(t, k.name)
					got := out.s()
					for i := range n {
						if !k.ok(in, i, got[i]) {
							t.Fatalf("n=%d: %s element %d of inputs %v: got %v", n, k.name, i, elemColumn(in, i), got[i])
						}
					}
					// In place: dst is the first input.
					alias := append([]float32(nil), in[0]...)
					inAlias := append([][]float32{alias}, in[1:]...)
					k.run(alias, inAlias)
					for i := range n {
						if !elemSameFloat(alias[i], got[i]) {
							t.Fatalf("n=%d: %s in place differs at %d: %v, out of place %v", n, k.name, i, alias[i], got[i])
						}
					}
				}
			})
		}
	})
}

func (k *elementwise) mapDomain(in [][]float32) {
	if k.domain != nil {
		for i, v := range in[0] {
			in[0][i] = k.domain(v)
		}
	}
}

func elemColumn(in [][]float32, i int) []float32 {
	c := make([]float32, len(in))
	for j := range in {
		c[j] = in[j][i]
	}
	return c
}

func (k *elementwise) ok(in [][]float32, i int, got float32) bool {
	switch {
	case k.exact != nil:
		return elemSameFloat(got, k.exact(in, i))
	case k.ref != nil:
		ok, _ := k.ref.accept(in[0][i], got)
		return ok
	case k.ref2 != nil:
		return elemULPErr(got, k.ref2(float64(in[0][i]), float64(in[1][i]))) <= k.ulps
	}
	for j := range mathFuncs {
		if mathFuncs[j].name == k.grad {
			ok, _ := mathFuncs[j].acceptTimes(in[0][i], float64(in[1][i]), got, 1)
			return ok
		}
	}
	panic("no reference for " + k.name)
}

// TestReductions checks sumF32 and dotF32 (the softmax and layer-norm
// kernels' reductions) against float64 sums (the error
// bound of a lane-wise sum: n·2⁻²⁴·Σ|terms|), on every ISA and length.
func TestReductions(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(2, uint64(isa)))
		for _, n := range elemTestLengths() {
			x := elemRandSlice(rng, n, 10, false)
			y := elemRandSlice(rng, n, 10, false)
			var s, sa, d, da float64
			for i := range n {
				s += float64(x[i])
				sa += math.Abs(float64(x[i]))
				d += float64(x[i]) * float64(y[i])
				da += math.Abs(float64(x[i]) * float64(y[i]))
			}
			tol := func(abs float64) float64 { return float64(n+2)*0x1p-24*abs + 1e-30 }
			if got := sumF32(x); math.Abs(float64(got)-s) > tol(sa) {
				t.Fatalf("n=%d: sumF32 = %v, want %v", n, got, s)
			}
			if got := dotF32(x, y); math.Abs(float64(got)-d) > tol(da) {
				t.Fatalf("n=%d: dotF32 = %v, want %v", n, got, d)
			}
			// The same input always gives the same bits.
			if sumF32(x) != sumF32(append([]float32(nil), x...)) {
				t.Fatalf("n=%d: sumF32 not reproducible", n)
			}
		}
	})
}

// TestElementwiseSameBitsOnAVX2AndAVX512: the element-wise kernels run the
// same instruction sequence on 8 and 16 lanes (exp scales by 2^n with
// VSCALEFPS on one, two exact multiplies on the other, both rounding once),
// so a result does not depend on which of the two a machine has.
func TestElementwiseSameBitsOnAVX2AndAVX512(t *testing.T) {
	if HardwareISA() < AVX512 {
		t.Skip("needs an AVX-512 machine to compare AVX2 with")
	}
	src := elemSweep(16381)
	dy := make([]float32, len(src))
	for i := range dy {
		dy[i] = float32(math.Sin(float64(i)))
	}
	for _, k := range elementwiseKernels {
		in := [][]float32{src, dy}[:k.inputs]
		var outs [2][]float32
		for j, isa := range []ISA{AVX512, AVX2} {
			restore := SetMaxISA(isa)
			outs[j] = make([]float32, len(src))
			k.run(outs[j], in)
			restore()
		}
		for i := range src {
			a, b := outs[0][i], outs[1][i]
			if math.Float32bits(a) != math.Float32bits(b) && !(a != a && b != b) {
				t.Fatalf("%s(%v): AVX-512 %v, AVX2 %v", k.name, elemColumn(in, i), a, b)
			}
		}
	}
}
