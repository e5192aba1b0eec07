package kernels

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"testing"
	"fmt"
)

func TestScratchHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	h := fnv.New64a()
	buf := make([]byte, 4)
	for _, bf := range []bool{false, true} {
		for m := 1; m <= 70; m++ {
			for _, n := range []int{5, 16, 33, 64} {
				for _, k := range []int{1, 7, 64, 130} {
					a := make([]float32, m*k)
					b := make([]float32, k*n)
					c := make([]float32, m*n)
					for i := range a {
						a[i] = float32(rng.NormFloat64())
					}
					for i := range b {
						b[i] = float32(rng.NormFloat64())
					}
					if bf {
						Sbgemm(1, false, true, m, n, k, 0.5, a, k, b, k, 0, c, n)
					} else {
						Sgemm(1, false, true, m, n, k, 0.5, a, k, b, k, 0, c, n)
					}
					for _, x := range c {
						u := math.Float32bits(x)
						buf[0], buf[1], buf[2], buf[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
						h.Write(buf)
					}
				}
			}
		}
	}
	fmt.Printf("HASH %x\n", h.Sum64())
}
