package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The float32 kernels' exp against the math package's
// float64 functions, over a dense sweep and random float32 arguments: the
// float32 results must agree to within one float32 ulp of the reference
// (they round a value within 1e-9 of it).
func TestFastMathAgainstMathPackage(t *testing.T) {
	type fn struct {
		name   string
		fast   func(float64) float64
		ref    func(float64) float64
		lo, hi float64
	}
	for _, f := range []fn{
		{"exp", exp64, math.Exp, -110, 92},
	} {
		t.Run(f.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			check := func(x32 float32) {
				x := float64(x32)
				got, want := float32(f.fast(x)), float32(f.ref(x))
				if got == want || (got != got && want != want) {
					return
				}
				ulp := math.Abs(float64(math.Nextafter32(want, float32(math.Inf(1)))) - float64(want))
				if math.IsInf(float64(want), 0) || math.Abs(float64(got)-float64(want)) > ulp {
					t.Fatalf("%s(%v) = %v, want %v (±1 ulp)", f.name, x32, got, want)
				}
			}
			for i := range 2000001 {
				check(float32(f.lo + (f.hi-f.lo)*float64(i)/2000000))
			}
			for range 1000000 {
				check(float32(f.lo + (f.hi-f.lo)*rng.Float64()))
				check(float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(12)-9))))
			}
			for _, x := range []float32{0, float32(math.Copysign(0, -1)), float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-30, -1e-30, math.MaxFloat32, -math.MaxFloat32} {
				check(x)
			}
		})
	}
}

func BenchmarkFastMath(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i)/512 - 4
	}
	for _, f := range []struct {
		name string
		fn   func(float64) float64
	}{{"exp64", exp64}, {"math.Exp", math.Exp}} {
		b.Run(f.name, func(b *testing.B) {
			var s float32
			for b.Loop() {
				for _, v := range x {
					s += float32(f.fn(float64(v)))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
			_ = s
		})
	}
}
