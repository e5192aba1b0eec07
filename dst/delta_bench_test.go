package dst

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchDelta changes about ε = 1e-3 of ten 4M-element tensors.
func benchDelta(perTensor int) *Delta {
	rng := rand.New(rand.NewPCG(1, 2))
	d := &Delta{Meta: Metadata{Method: "dst", Epsilon: 1e-3}}
	const size = 1 << 22
	for i := range 10 {
		td := TensorDelta{Name: fmt.Sprintf("layer.%d.weight", i), Dims: []int64{1024, size / 1024}}
		stride := size / perTensor
		for j := range perTensor {
			td.Indices = append(td.Indices, int64(j*stride+rng.IntN(stride)))
			td.Values = append(td.Values, float32(rng.NormFloat64()))
		}
		d.Tensors = append(d.Tensors, td)
	}
	return d
}

func BenchmarkDeltaEncode(b *testing.B) {
	d := benchDelta(100_000)
	var buf bytes.Buffer
	EncodeDelta(&buf, d)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := EncodeDelta(&buf, d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDeltaDecode(b *testing.B) {
	var buf bytes.Buffer
	EncodeDelta(&buf, benchDelta(100_000))
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeDelta(data); err != nil {
			b.Fatal(err)
		}
	}
}
