package kernels

import (
	"math"
	"sync"
)

// MaskedBandUpdate is the masked update of an iterative DST step whose
// exact threshold is only known to lie in a band (lo, hi]: entries above
// the band are kept, entries at or below it are reset to their seed, and
// entries inside it are kept for now and reported with their scores, so
// that the caller can select among them and reset the losers (a fix-up of
// a few random accesses instead of another pass over the silo). The
// equivalent Go loop:
//
//	for i := range theta {
//		s := Δ(theta[i], seed[i])
//		switch {
//		case s > hi:
//			kept = append(kept, int32(i))
//		case s > lo:
//			band = append(band, int32(i))
//			scores = append(scores, s)
//		default: // s <= lo or NaN
//			theta[i] = seed[i]
//		}
//	}
//
// It returns the extended slices; positions are 0-based within the piece
// and ascending. lo may be -Inf (nothing is reset but NaN scores) and hi
// +Inf (nothing is kept outright); lo <= hi, neither NaN. The piece must
// have fewer than 2³¹ entries. threads <= 0 means DefaultThreads(); the
// result does not depend on it.
func MaskedBandUpdate(kept, band []int32, scores []float32, theta, seed []float32, d Distance, lo, hi float32, threads int) ([]int32, []int32, []float32) {
	checkDistance(d)
	if len(seed) != len(theta) {
		panic("kernels: MaskedBandUpdate theta and seed differ in length")
	}
	if len(theta) > math.MaxInt32 {
		panic("kernels: MaskedBandUpdate piece has 2^31 entries or more")
	}
	if !(lo <= hi) {
		panic("kernels: MaskedBandUpdate needs lo <= hi, neither NaN")
	}
	// One streaming pass keeps everything above lo and records where it
	// is (the vector kernels of MaskedUpdateAppend); a walk over those
	// positions, O(kept + band), then sorts them into kept and band.
	workers := workersFor(len(theta), threads)
	task := bandTasks.Get().(*bandTask)
	task.theta, task.seed, task.d, task.lo = theta, seed, d, lo
	if len(task.above) < workers {
		task.above = append(task.above, make([][]int32, workers-len(task.above))...)
	}
	Parallel(workers, task)
	for w := range workers {
		start, _ := Split(len(theta), w, workers, 64)
		for _, j := range task.above[w] {
			i := start + int(j)
			if s := score(theta[i], seed[i], d); s > hi {
				kept = append(kept, int32(i))
			} else {
				band = append(band, int32(i))
				scores = append(scores, s)
			}
		}
	}
	task.theta, task.seed = nil, nil
	bandTasks.Put(task)
	return kept, band, scores
}

type bandTask struct {
	theta, seed []float32
	d           Distance
	lo          float32
	above       [][]int32 // per worker: positions within its range with a score above lo
}

var bandTasks = sync.Pool{New: func() any { return new(bandTask) }}

func (t *bandTask) Run(w, workers int) {
	lo, hi := Split(len(t.theta), w, workers, 64)
	t.above[w] = appendKept(t.above[w][:0], t.theta[lo:hi], t.seed[lo:hi], t.d, Threshold{Q: t.lo}, 0, true)
}
