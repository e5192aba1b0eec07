package kernels

import (
	"math"
	"sync"
)

// MaxThresholds is the most thresholds one counting pass handles: the
// 2^m+1 grid points of the paper's Algorithm 2 with m = 3 bisection steps,
// that is the seven midpoints its bisection tree can visit plus the two
// initial bounds q'/r and r·q', so that one memory pass gives every count
// the algorithm can ask for.
const MaxThresholds = 9

// minPerWorker is the fewest entries worth a goroutine of their own in a
// streaming pass (below it the hand-off costs more than it saves).
const minPerWorker = 1 << 16

// workersFor is how many workers a streaming pass over n entries uses.
func workersFor(n, threads int) int {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	return max(1, min(threads, n/minPerWorker))
}

// thresholdSet is a threshold list padded to MaxThresholds with NaN, which
// no score exceeds, so that a kernel may compare against more slots than
// are used.
type thresholdSet struct {
	q    [MaxThresholds]float32
	used int
}

func makeThresholdSet(thresholds []float32) thresholdSet {
	if len(thresholds) > MaxThresholds {
		panic("kernels: more than MaxThresholds thresholds")
	}
	ts := thresholdSet{used: len(thresholds)}
	nan := float32(math.NaN())
	for j := range ts.q {
		ts.q[j] = nan
	}
	copy(ts.q[:], thresholds)
	return ts
}

// countSet holds one pass's counts, one per threshold slot.
type countSet [MaxThresholds]int64

// CountAbove adds to counts[j], for every j < len(thresholds), the number of
// entries whose distance exceeds thresholds[j]. It reads theta and seed and
// writes nothing else, so Δ is never stored. The equivalent Go loop:
//
//	for i := range theta {
//		for j, q := range thresholds {
//			if Δ(theta[i], seed[i]) > q { // false for a NaN Δ or a NaN q
//				counts[j]++
//			}
//		}
//	}
//
// Counts accumulate, so a silo made of several pieces is counted by one call
// per piece. At most MaxThresholds thresholds; threads <= 0 means
// DefaultThreads(). The counts do not depend on threads.
func CountAbove(counts []int64, thresholds []float32, theta, seed []float32, d Distance, threads int) {
	checkDistance(d)
	if len(seed) != len(theta) {
		panic("kernels: CountAbove theta and seed differ in length")
	}
	countAbove(counts, thresholds, theta, seed, d, threads)
}

// CountAboveFloats is CountAbove on plain values: it adds to counts[j] the
// number of i with x[i] > thresholds[j].
func CountAboveFloats(counts []int64, thresholds []float32, x []float32, threads int) {
	countAbove(counts, thresholds, x, nil, distanceValue, threads)
}

func countAbove(counts []int64, thresholds []float32, theta, seed []float32, d Distance, threads int) {
	if len(counts) < len(thresholds) {
		panic("kernels: CountAbove counts shorter than thresholds")
	}
	ts := makeThresholdSet(thresholds)
	workers := workersFor(len(theta), threads)
	var total countSet
	if workers == 1 {
		countBlock(&total, &ts, theta, seed, d)
	} else {
		task := countAboveTasks.Get().(*countAboveTask)
		task.ts, task.theta, task.seed, task.d = ts, theta, seed, d
		task.partial = append(task.partial[:0], make([]countSet, workers)...)
		Parallel(workers, task)
		for w := range task.partial {
			for j := range total {
				total[j] += task.partial[w][j]
			}
		}
		task.theta, task.seed = nil, nil
		countAboveTasks.Put(task)
	}
	for j := range thresholds {
		counts[j] += total[j]
	}
}

type countAboveTask struct {
	ts          thresholdSet
	theta, seed []float32
	d           Distance
	partial     []countSet
}

var countAboveTasks = sync.Pool{New: func() any { return new(countAboveTask) }}

func (t *countAboveTask) Run(w, workers int) {
	lo, hi := Split(len(t.theta), w, workers, 64)
	var seed []float32
	if t.seed != nil {
		seed = t.seed[lo:hi]
	}
	t.partial[w] = countSet{}
	countBlock(&t.partial[w], &t.ts, t.theta[lo:hi], seed, t.d)
}

// countChunk bounds one kernel call so that its 32-bit lane counters cannot
// overflow.
const countChunk = 1 << 30

// countBlock adds the counts of theta/seed to c, through the vector kernel
// for as much as it takes and the generic loop for the rest.
func countBlock(c *countSet, ts *thresholdSet, theta, seed []float32, d Distance) {
	for len(theta) > 0 {
		n := min(len(theta), countChunk)
		var s []float32
		if seed != nil {
			s = seed[:n]
		}
		done := countVector(c, ts, theta[:n], s, d)
		var rest []float32
		if s != nil {
			rest = s[done:]
		}
		countGeneric(c, ts, theta[done:n], rest, d)
		theta = theta[n:]
		if seed != nil {
			seed = seed[n:]
		}
	}
}

// countGeneric is the reference count, one loop per distance so that the
// score is computed inline, counting branch-free (scores near a threshold
// would make a branch a coin flip).
func countGeneric(c *countSet, ts *thresholdSet, theta, seed []float32, d Distance) {
	q := ts.q[:ts.used]
	var local countSet
	switch d {
	case distanceValue:
		for _, t := range theta {
			countScore(&local, q, t)
		}
	case DistanceAbs:
		seed = seed[:len(theta)]
		for i, t := range theta {
			countScore(&local, q, abs32(t-seed[i]))
		}
	case DistanceRel:
		seed = seed[:len(theta)]
		for i, t := range theta {
			countScore(&local, q, score(t, seed[i], DistanceRel))
		}
	case DistanceInvRel:
		seed = seed[:len(theta)]
		for i, t := range theta {
			s := seed[i]
			countScore(&local, q, abs32(s*(t-s)))
		}
	}
	for j := range q {
		c[j] += local[j]
	}
}

func countScore(c *countSet, q []float32, s float32) {
	for j, t := range q {
		c[j] += int64(b2u(s > t))
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
