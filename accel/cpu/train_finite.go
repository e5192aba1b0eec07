package cpu

import (
	"math"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/update"
)

// finiteScan finds NaN and ±Inf in a step's gradients (before the update)
// and in the parameters and optimizer slots it wrote (after it), on the
// trainer's threads. It is set up once; a scan allocates nothing.
type finiteScan struct {
	threads  int
	v        []float32
	first    []int // per worker: the first non-finite position in its range, -1
	count    []int // per worker: the non-finite entries in its range
	split    splitter
	sums     []float64 // squareSum's per chunk
	sumSplit splitter
}

func newFiniteScan(threads int) *finiteScan {
	if threads <= 0 {
		threads = kernels.DefaultThreads()
	}
	s := &finiteScan{threads: threads}
	s.first = make([]int, s.threads)
	s.count = make([]int, s.threads)
	s.split = splitter{align: 16, share: s.share}
	s.sumSplit = splitter{align: 1, share: s.shareSums}
	return s
}

func (s *finiteScan) shareSums(lo, hi, _ int) {
	end := min(hi*kernels.SquareSumChunk, len(s.v))
	kernels.SquareSums(s.sums[lo:hi], s.v[lo*kernels.SquareSumChunk:end])
}

// squareSum returns the sum of v's squares, the same bits on any number
// of threads, and whether it is finite (false: v holds NaN or ±Inf).
func (s *finiteScan) squareSum(v []float32) (float64, bool) {
	chunks := kernels.SquareSumChunks(len(v))
	if cap(s.sums) < chunks {
		s.sums = make([]float64, chunks)
	}
	s.sums = s.sums[:chunks]
	s.v = v
	s.sumSplit.units = chunks
	s.sumSplit.run(workersFor(s.threads, len(v)))
	s.v = nil
	var sum float64
	for _, c := range s.sums {
		sum += c
	}
	return sum, !math.IsNaN(sum) && !math.IsInf(sum, 0)
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

// gradientNorm returns the global L2 norm of the gradients (p.grad),
// or the first parameter whose gradient holds NaN or ±Inf: one pass,
// the sums of squares (kernels.SquareSums, fixed chunks, added in order
// whatever the threads) being non-finite exactly where an entry is.
func (t *trainer) gradientNorm() (float64, *update.NonFinite) {
	var sq float64
	for _, p := range t.params {
		s, ok := t.scan.squareSum(p.grad)
		if !ok {
			first, count := t.scan.find(p.grad)
			return 0, &update.NonFinite{Param: p.name, Tensor: "gradient", Index: first, Value: p.grad[first], Count: count, Size: len(p.grad)}
		}
		sq += s
	}
	return math.Sqrt(sq), nil
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
