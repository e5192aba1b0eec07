package bench

import (
	"fmt"
	"math"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

// TestLossesMatchPyTorch takes the benchmark's 13 steps on both models and
// compares every loss with PyTorch's (testdata/bench/README.md): the same
// models, batches, loss and AdamW give the same numbers, so the timing
// compares the same computation. With -short only the first 4 steps.
func TestLossesMatchPyTorch(t *testing.T) {
	dir := sharedtest.Path(t, "bench")
	steps := WarmupSteps + TimedSteps
	if testing.Short() {
		steps = 4
	}
	for _, model := range Models {
		t.Run(model, func(t *testing.T) {
			s, err := NewStep(dir, model, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range steps {
				st, _, err := s.Next()
				if err != nil {
					t.Fatal(err)
				}
				// The README prints 6 decimals; float32 accumulation
				// order differs from PyTorch's.
				if want := TorchLosses[model][i]; math.Abs(st.Loss-want) > 1e-4 {
					t.Errorf("step %d: loss %.6f, PyTorch %.6f", i, st.Loss, want)
				}
			}
		})
	}
}

// BenchmarkStep times one full fine-tuning step (forward, backward,
// AdamW) per model and thread count; allocs/op shows the steady state
// allocates nothing.
func BenchmarkStep(b *testing.B) {
	dir := sharedtest.Path(b, "bench")
	for _, model := range Models {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("model=%s/threads=%d", model, threads), func(b *testing.B) {
				s, err := NewStep(dir, model, threads)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				if _, _, err := s.Next(); err != nil { // compiles
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := s.Next(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
