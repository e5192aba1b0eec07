package cpu

import (
	"math"
	"testing"
)

// The scan splits long tensors across threads; every thread count finds
// the first non-finite entry and counts them all.
func TestFiniteScan(t *testing.T) {
	v := make([]float32, 1<<17+5)
	for threads := 1; threads <= 4; threads++ {
		s := newFiniteScan(threads)
		clear(v)
		if first, count := s.find(v); first != -1 || count != 0 {
			t.Errorf("threads %d, all finite: %d, %d", threads, first, count)
		}
		v[len(v)-1] = float32(math.Inf(-1))
		v[70001] = float32(math.NaN())
		v[100000] = float32(math.Inf(1))
		if first, count := s.find(v); first != 70001 || count != 3 {
			t.Errorf("threads %d: first %d, count %d; want 70001, 3", threads, first, count)
		}
		if first, count := s.find(v[:5]); first != -1 || count != 0 {
			t.Errorf("threads %d, a short finite prefix: %d, %d", threads, first, count)
		}
		v[3] = float32(math.MaxFloat32)
		if first, count := s.find(v[:5]); first != -1 || count != 0 {
			t.Errorf("threads %d: the largest float32 is finite: %d, %d", threads, first, count)
		}
	}
}
