package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestColumnSumsF64 compares ColumnSumsF64 with the scalar loop bit for
// bit on every ISA: column counts around the vector and block widths,
// strides wider than the columns, starting sums, values over 2⁻⁶⁰..2⁶⁰,
// and a column whose sum depends on the order (2⁵³, 1, 1, −2⁵³).
func TestColumnSumsF64(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(5, uint64(isa)))
		for _, n := range []int{1, 3, 4, 7, 8, 9, 31, 63, 64, 65, 130, 300} {
			for _, rows := range []int{1, 2, 4, 37} {
				ld := n + rng.IntN(5)
				x := make([]float32, (rows-1)*ld+n)
				for i := range x {
					x[i] = float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(121)-60))
				}
				if rows >= 4 {
					for r, v := range []float32{0x1p53, 1, 1, -0x1p53} {
						x[r*ld+n-1] = v
					}
				}
				got := make([]float64, n)
				for i := range got {
					got[i] = rng.Float64()
				}
				want := append([]float64(nil), got...)
				for i := range want {
					for r := range rows {
						want[i] += float64(x[r*ld+i])
					}
				}
				ColumnSumsF64(got, x, ld, rows)
				for i := range want {
					if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
						t.Fatalf("n=%d rows=%d ld=%d: column %d: %v, want %v", n, rows, ld, i, got[i], want[i])
					}
				}
			}
		}
	})
}
