// Package deltagen makes random sparse deltas for a model, for tests and
// measurements of serving: the shape of what DST writes (about ε of every
// parameter tensor changed) without training.
package deltagen

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/onnx"
)

// Random changes round(eps·n) entries (at least one) of every float32
// initializer of m, chosen at random from seed, by adding scale times a
// standard normal draw. The delta records m's base hash.
func Random(m *onnx.Model, eps, scale float64, seed uint64) (*dst.Delta, error) {
	inits, err := dst.InitializersOf(m)
	if err != nil {
		return nil, err
	}
	hash, err := dst.BaseHash(inits)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x2545F4914F6CDD1D))
	d := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash, Method: "random", Epsilon: eps}}
	for _, it := range inits {
		if it.DType != "F32" {
			continue
		}
		n := len(it.Data) / 4
		k := max(1, int(math.Round(eps*float64(n))))
		if n == 0 {
			continue
		}
		k = min(k, n)
		picked := map[int64]bool{}
		idx := make([]int64, 0, k)
		for len(idx) < k {
			i := rng.Int64N(int64(n))
			if !picked[i] {
				picked[i] = true
				idx = append(idx, i)
			}
		}
		slices.Sort(idx)
		vals := make([]float32, k)
		for j, i := range idx {
			old := math.Float32frombits(binary.LittleEndian.Uint32(it.Data[4*i:]))
			vals[j] = old + float32(scale*rng.NormFloat64())
		}
		d.Tensors = append(d.Tensors, dst.TensorDelta{Name: it.Name, Dims: slices.Clone(it.Dims), Indices: idx, Values: vals})
	}
	if len(d.Tensors) == 0 {
		return nil, fmt.Errorf("deltagen: the model has no float32 initializers")
	}
	return d, nil
}
