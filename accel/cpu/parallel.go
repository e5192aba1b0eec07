package cpu

import "github.com/dstune/dstune/kernels"

// minParallelWork is the number of elements from which an element-wise,
// row-wise or copy kernel splits its work across threads; below it the
// hand-off costs more than it saves.
const minParallelWork = 1 << 15

// workersFor is how many workers a kernel over n elements uses.
func workersFor(threads, n int) int {
	if threads <= 1 || n < minParallelWork {
		return 1
	}
	return min(threads, n/(minParallelWork/2))
}

// splitter runs a kernel's share-of-work function on one or more workers:
// each worker gets a contiguous range of units (runs, rows, elements),
// computes it exactly as a single worker would, so results do not depend
// on the thread count.
type splitter struct {
	units, align int
	share        func(lo, hi, worker int)
}

func (s *splitter) Run(worker, workers int) {
	lo, hi := kernels.Split(s.units, worker, workers, s.align)
	if lo < hi {
		s.share(lo, hi, worker)
	}
}

// run splits units across workers (workers == 1 runs inline).
func (s *splitter) run(workers int) {
	if s.units == 0 {
		return
	}
	if workers <= 1 {
		s.share(0, s.units, 0)
		return
	}
	kernels.Parallel(workers, s)
}
