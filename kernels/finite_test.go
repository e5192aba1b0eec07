package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAllFinite: AllFinite agrees with an entry-by-entry test on every
// ISA — a NaN, +Inf or −Inf anywhere (first, last, in the middle, in a
// ragged tail), runs of finite entries whose sum overflows, ±Inf pairs
// that cancel to NaN, denormals and signed zeros.
func TestAllFinite(t *testing.T) {
	entrywise := func(x []float32) bool {
		for _, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return false
			}
		}
		return true
	}
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(7, uint64(isa)))
		bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)),
			math.Float32frombits(0x7fc00001), math.Float32frombits(0xff800001)}
		for _, n := range []int{0, 1, 7, 16, 33, 1000, finiteChunk - 1, finiteChunk, finiteChunk + 5, 3*finiteChunk + 17} {
			for trial := range 12 {
				x := make([]float32, n)
				for i := range x {
					switch trial % 4 {
					case 0:
						x[i] = rng.Float32()*2 - 1
					case 1:
						x[i] = math.MaxFloat32 * (0.5 + rng.Float32()/2) // sums overflow
					case 2:
						x[i] = math.Float32frombits(rng.Uint32() & 0x807fffff) // denormals and signed zeros
					default:
						x[i] = math.Float32frombits(rng.Uint32()) // any bits
					}
				}
				if got, want := AllFinite(x), entrywise(x); got != want {
					t.Fatalf("n=%d trial %d: AllFinite %v, entry by entry %v", n, trial, got, want)
				}
				if n == 0 || trial%4 == 3 {
					continue
				}
				for _, pos := range []int{0, n - 1, rng.IntN(n)} {
					old := x[pos]
					x[pos] = bad[rng.IntN(len(bad))]
					if AllFinite(x) {
						t.Fatalf("n=%d trial %d: %v at %d not found", n, trial, x[pos], pos)
					}
					x[pos] = old
				}
				if n >= 2 {
					x[0], x[n-1] = float32(math.Inf(1)), float32(math.Inf(-1))
					if AllFinite(x) {
						t.Fatalf("n=%d: +Inf and -Inf not found", n)
					}
				}
			}
		}
	})
}

func BenchmarkAllFinite(b *testing.B) {
	x := make([]float32, 1<<20)
	for i := range x {
		x[i] = float32(i%1000) - 500
	}
	b.SetBytes(4 << 20)
	for b.Loop() {
		AllFinite(x)
	}
}

// TestSquareSums: SquareSums agrees with a float64 sum of squares on
// every ISA (to float32 rounding per chunk), chunk by chunk; a chunk of
// large finite entries whose float32 sum overflows is still exact; any
// NaN or ±Inf makes its chunk's sum non-finite and leaves the others as
// they were.
func TestSquareSums(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(11, uint64(isa)))
		for _, n := range []int{0, 1, 7, 16, 33, 1000, SquareSumChunk - 1, SquareSumChunk, SquareSumChunk + 5, 3*SquareSumChunk + 17} {
			for trial := range 3 {
				x := make([]float32, n)
				for i := range x {
					switch trial {
					case 0:
						x[i] = rng.Float32()*2 - 1
					case 1:
						x[i] = float32(rng.NormFloat64() * 1e-20) // squares in float32's denormal range
					default:
						x[i] = 1e19 * (1 + rng.Float32()) // float32 squares overflow
					}
				}
				got := make([]float64, SquareSumChunks(n))
				SquareSums(got, x)
				for c := range got {
					var want float64
					for _, v := range x[c*SquareSumChunk : min(n, (c+1)*SquareSumChunk)] {
						want += float64(v) * float64(v)
					}
					tol := 1e-5 * want
					if trial == 1 {
						tol = 1e-5*want + 1e-38 // float32 flushes squares below its range
					}
					if math.Abs(got[c]-want) > tol || math.IsInf(got[c], 0) {
						t.Fatalf("n=%d trial %d chunk %d: %g, float64 %g", n, trial, c, got[c], want)
					}
				}
				if n == 0 {
					continue
				}
				pos := rng.IntN(n)
				for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
					old := x[pos]
					x[pos] = bad
					SquareSums(got, x)
					for c, s := range got {
						inChunk := pos/SquareSumChunk == c
						if finite := !math.IsNaN(s) && !math.IsInf(s, 0); finite == inChunk {
							t.Fatalf("n=%d: %v at %d: chunk %d's sum is %g", n, bad, pos, c, s)
						}
					}
					x[pos] = old
				}
			}
		}
	})
}
