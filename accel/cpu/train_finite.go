package cpu

import (
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/update"
)

// finiteScan finds NaN and ±Inf in a step's gradients (before the update)
// and in the parameters and optimizer slots it wrote (after it), on the
// trainer's threads. It is set up once; a scan allocates nothing.
type finiteScan struct {
	threads int
	v       []float32
	first   []int // per worker: the first non-finite position in its range, -1
	count   []int // per worker: the non-finite entries in its range
	split   splitter
}

func newFiniteScan(threads int) *finiteScan {
	if threads <= 0 {
		threads = kernels.DefaultThreads()
	}
	s := &finiteScan{threads: threads}
	s.first = make([]int, s.threads)
	s.count = make([]int, s.threads)
	s.split = splitter{align: 16, share: s.share}
	return s
}

func (s *finiteScan) share(lo, hi, w int) {
	if kernels.AllFinite(s.v[lo:hi]) { // the common case, at SIMD speed
		s.first[w], s.count[w] = -1, 0
		return
	}
	first, count := update.FindNonFinite(s.v[lo:hi])
	if first >= 0 {
		first += lo
	}
	s.first[w], s.count[w] = first, count
}

// find returns the first non-finite position of v (-1: none) and the
// number of non-finite entries.
func (s *finiteScan) find(v []float32) (first, count int) {
	workers := workersFor(s.threads, len(v))
	s.v = v
	s.split.units = len(v)
	for w := range workers {
		s.first[w], s.count[w] = -1, 0
	}
	s.split.run(workers)
	s.v = nil
	first = -1
	for w := range workers {
		if first < 0 {
			first = s.first[w]
		}
		count += s.count[w]
	}
	return first, count
}

// checkGradients reports the first parameter whose gradient holds NaN or
// ±Inf, before the update (nil: all finite).
func (t *trainer) checkGradients() *update.NonFinite {
	for _, p := range t.params {
		if first, count := t.scan.find(p.grad); count > 0 {
			return &update.NonFinite{Param: p.name, Tensor: "gradient", Index: first, Value: p.grad[first], Count: count, Size: len(p.grad)}
		}
	}
	return nil
}

// checkState reports the first parameter whose new value or optimizer
// slot holds NaN or ±Inf, after the update (nil: all finite).
func (t *trainer) checkState() *update.NonFinite {
	for _, p := range t.params {
		if first, count := t.scan.find(p.value); count > 0 {
			return &update.NonFinite{Param: p.name, Tensor: "value", Index: first, Value: p.value[first], Count: count, Size: len(p.value), Applied: true}
		}
		for _, sl := range p.slots {
			if first, count := t.scan.find(sl.Data); count > 0 {
				return &update.NonFinite{Param: p.name, Tensor: sl.Name, Index: first, Value: sl.Data[first], Count: count, Size: len(sl.Data), Applied: true}
			}
		}
	}
	return nil
}
