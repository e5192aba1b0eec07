package kernels

import (
	"math"
	"sync"
)

// MaskedUpdate applies a Threshold to one piece of a silo: every entry it
// does not keep goes back to its seed, recomputing Δ on the fly. offset is
// the piece's silo position (the length of the pieces before it), so that
// the tie rule sees silo positions. It returns how many entries it kept.
// The equivalent Go loop:
//
//	for i := range theta {
//		if th.Keep(Δ(theta[i], seed[i]), offset+int64(i)) {
//			kept++
//		} else {
//			theta[i] = seed[i]
//		}
//	}
//
// threads <= 0 means DefaultThreads(); the result does not depend on it.
func MaskedUpdate(theta, seed []float32, d Distance, th Threshold, offset int64, threads int) int64 {
	checkDistance(d)
	if len(seed) != len(theta) {
		panic("kernels: MaskedUpdate theta and seed differ in length")
	}
	workers := workersFor(len(theta), threads)
	if workers == 1 {
		return maskedRange(theta, seed, d, th, offset)
	}
	task := maskedTasks.Get().(*maskedTask)
	task.theta, task.seed, task.d, task.th, task.offset = theta, seed, d, th, offset
	task.kept = append(task.kept[:0], make([]int64, workers)...)
	Parallel(workers, task)
	var kept int64
	for _, k := range task.kept {
		kept += k
	}
	task.theta, task.seed = nil, nil
	maskedTasks.Put(task)
	return kept
}

type maskedTask struct {
	theta, seed []float32
	d           Distance
	th          Threshold
	offset      int64
	kept        []int64
}

var maskedTasks = sync.Pool{New: func() any { return new(maskedTask) }}

func (t *maskedTask) Run(w, workers int) {
	lo, hi := Split(len(t.theta), w, workers, 64)
	t.kept[w] = maskedRange(t.theta[lo:hi], t.seed[lo:hi], t.d, t.th, t.offset+int64(lo))
}

// tieCut is how many leading entries of a piece at silo position offset
// still keep ties at Q.
func tieCut(th Threshold, offset int64, n int) int {
	c := th.TieEnd - offset
	if th.TieEnd == keepAll || c >= int64(n) {
		return n
	}
	return int(max(c, 0))
}

func maskedRange(theta, seed []float32, d Distance, th Threshold, offset int64) int64 {
	cut := tieCut(th, offset, len(theta))
	return maskedBlock(theta[:cut], seed[:cut], d, th.Q, true) +
		maskedBlock(theta[cut:], seed[cut:], d, th.Q, false)
}

func maskedBlock(theta, seed []float32, d Distance, q float32, keepEq bool) int64 {
	done, kept := maskedVector(theta, seed, d, q, keepEq)
	seed = seed[:len(theta)]
	for i := done; i < len(theta); i++ {
		s := score(theta[i], seed[i], d)
		if s > q || (keepEq && s == q) {
			kept++
		} else {
			theta[i] = seed[i]
		}
	}
	return kept
}

// MaskedUpdateAppend is MaskedUpdate on one goroutine that also appends to
// dst the piece positions i (0-based within the piece, ascending) of the
// entries it keeps — what a delta file stores — and returns the extended
// slice. The piece must have fewer than 2³¹ entries; a longer tensor is
// applied in sub-slices whose positions the caller offsets.
func MaskedUpdateAppend(dst []int32, theta, seed []float32, d Distance, th Threshold, offset int64) []int32 {
	return appendKept(dst, theta, seed, d, th, offset, true)
}

// AppendSelected appends to dst, like MaskedUpdateAppend, the piece
// positions that th keeps, without changing theta: the selected indices of
// an exact selection, in ascending order.
func AppendSelected(dst []int32, theta, seed []float32, d Distance, th Threshold, offset int64) []int32 {
	return appendKept(dst, theta, seed, d, th, offset, false)
}

// appendChunk is how many entries appendKept hands the kernel at a time
// (and so how much room it reserves in dst).
const appendChunk = 4096

func appendKept(dst []int32, theta, seed []float32, d Distance, th Threshold, offset int64, write bool) []int32 {
	checkDistance(d)
	if len(seed) != len(theta) {
		panic("kernels: MaskedUpdateAppend theta and seed differ in length")
	}
	if len(theta) > math.MaxInt32 {
		panic("kernels: MaskedUpdateAppend piece has 2^31 entries or more")
	}
	cut := tieCut(th, offset, len(theta))
	for lo := 0; lo < len(theta); {
		hi := min(len(theta), lo+appendChunk)
		keepEq := lo < cut
		if keepEq {
			hi = min(hi, cut)
		}
		dst = appendKeptBlock(dst, theta[lo:hi], seed[lo:hi], d, th.Q, keepEq, write, lo)
		lo = hi
	}
	return dst
}

func appendKeptBlock(dst []int32, theta, seed []float32, d Distance, q float32, keepEq, write bool, base int) []int32 {
	n := len(dst)
	if cap(dst)-n < len(theta) {
		dst = append(dst, make([]int32, len(theta))...)
	}
	dst = dst[:n+len(theta)]
	done, cnt := maskedIndicesVector(dst[n:], theta, seed, d, q, keepEq, write, base)
	out := n + cnt
	for i := done; i < len(theta); i++ {
		s := score(theta[i], seed[i], d)
		if s > q || (keepEq && s == q) {
			dst[out] = int32(base + i)
			out++
		} else if write {
			theta[i] = seed[i]
		}
	}
	return dst[:out]
}
