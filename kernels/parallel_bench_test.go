package kernels

import (
	"fmt"
	"testing"
	"time"
)

// busyTask keeps each worker busy for a fixed number of dependent
// additions (about 75 µs for 100000 on the machine of the README).
type busyTask struct {
	work int
	sink [16]float64
}

func (t *busyTask) Run(w, workers int) {
	s := 0.0
	for i := range t.work {
		s += float64(i)
	}
	t.sink[w%len(t.sink)] = s
}

// BenchmarkParallelHandOff times Parallel(2, t) where each worker's share
// takes as long as Parallel(1, t): back to back (the workers spin between
// calls) and after 2 ms of busy work on the caller (they have gone to
// sleep). The gap between "1" and "2" is the cost of handing work to the
// other core and waiting for it.
func BenchmarkParallelHandOff(b *testing.B) {
	for _, gap := range []time.Duration{0, 2 * time.Millisecond} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("gap=%v/workers=%d", gap, workers), func(b *testing.B) {
				t := &busyTask{work: 100000}
				for range b.N {
					if gap > 0 {
						b.StopTimer()
						for end := time.Now().Add(gap); time.Now().Before(end); {
						}
						b.StartTimer()
					}
					Parallel(workers, t)
				}
			})
		}
	}
}
