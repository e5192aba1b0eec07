package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkSgemvRows compares Sgemv with Sgemm on the products of a
// decode step — projections (one row by a weight matrix, as stored and
// transposed) and attention over a cache of 2048 positions with a head of
// 64 (Q·Kᵀ: NT, P·V: NN) — for a few rows, on one thread at the best ISA:
// where Sgemv stops winning is how many rows accel/cpu sends it.
//
//	go test ./kernels -run '^$' -bench SgemvRows
func BenchmarkSgemvRows(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	shapes := []struct {
		name   string
		n, k   int
		transB bool
	}{
		{"proj256x768", 768, 256, false},
		{"proj768x256T", 256, 768, true},
		{"proj2048x2048", 2048, 2048, false},
		{"qk2048x64T", 2048, 64, true},
		{"pv2048x64", 64, 2048, false},
	}
	for _, s := range shapes {
		bm := randomSlice(rng, s.k*s.n)
		ldb := s.n
		if s.transB {
			ldb = s.k
		}
		for _, m := range []int{1, 2, 3, 4, 6, 8} {
			a := randomSlice(rng, m*s.k)
			c := make([]float32, m*s.n)
			for _, impl := range []string{"gemv", "gemm"} {
				b.Run(fmt.Sprintf("shape=%s/m=%d/impl=%s", s.name, m, impl), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if impl == "gemv" {
							Sgemv(1, s.transB, m, s.n, s.k, 1, a, s.k, bm, ldb, 0, c, s.n)
						} else {
							Sgemm(1, false, s.transB, m, s.n, s.k, 1, a, s.k, bm, ldb, 0, c, s.n)
						}
					}
					b.ReportMetric(2*float64(m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
