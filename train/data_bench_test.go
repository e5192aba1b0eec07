package train

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchJSONL is 2000 lm examples of 64 to 512 tokens from a 50k vocabulary.
func benchJSONL() []byte {
	rng := rand.New(rand.NewPCG(1, 1))
	var b bytes.Buffer
	for range 2000 {
		b.WriteString(`{"tokens":[`)
		n := 64 + rng.IntN(449)
		for j := range n {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprint(&b, rng.IntN(50000))
		}
		b.WriteString("]}\n")
	}
	return b.Bytes()
}

func BenchmarkReadJSONL(b *testing.B) {
	data := benchJSONL()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadJSONL(bytes.NewReader(data), "bench.jsonl", DataOptions{Task: TaskLM, VocabSize: 50000}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTrainBatches(b *testing.B) {
	ds, err := ReadJSONL(bytes.NewReader(benchJSONL()), "bench.jsonl", DataOptions{Task: TaskLM})
	if err != nil {
		b.Fatal(err)
	}
	tb, _ := NewTrainBatches(ds, BatchOptions{BatchSize: 16, MaxLen: 256, FixedLen: true}, 1, Position{})
	var batch Batch
	b.ReportAllocs()
	for b.Loop() {
		tb.Next(&batch)
	}
}
