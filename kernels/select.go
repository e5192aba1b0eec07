package kernels

import "math"

// Threshold says which entries of a silo DST keeps (lets differ from the
// seed); every other entry is reset to its seed. Entry i of the silo — its
// position when the silo's pieces are laid end to end in order — is kept
// when
//
//	Δ_i > Q || (Δ_i == Q && i < TieEnd)
//
// This is the exact-count tie rule: an exact selection of k entries keeps
// every score above the k-th largest, Q, and of the scores equal to Q those
// at the lowest silo positions, as many as make k. A NaN score compares
// false both ways and is never kept (its entry goes back to the seed): NaN
// ranks below every number. An iterative threshold (Algorithm 2) is
// Threshold{Q: q} — TieEnd 0 keeps no ties.
//
// "Differs from the seed" means "is a kept position": a kept entry whose
// new value happens to equal its seed still counts as one of the k.
type Threshold struct {
	Q      float32
	TieEnd int64
}

// Keep reports whether the entry at silo position pos with score s is kept.
func (t Threshold) Keep(s float32, pos int64) bool {
	return s > t.Q || (s == t.Q && pos < t.TieEnd)
}

// keepAll is a TieEnd beyond every position.
const keepAll = math.MaxInt64

// SiloPiece is one tensor's share of a silo: its current values θ̂ and its
// seed θ0, of equal length.
type SiloPiece struct {
	Theta, Seed []float32
}

// orderedKey maps a float32 to a uint32 whose unsigned order is the
// float's order, with -0 and +0 equal and every NaN below -Inf (key 0):
// key(a) > key(b) exactly when a > b or (b is NaN and a is not).
func orderedKey(x float32) uint32 {
	b := math.Float32bits(x)
	switch {
	case b&0x7fffffff > 0x7f800000:
		return 0 // NaN
	case b == 0x80000000:
		return 0x80000000 // -0 is +0
	case b>>31 != 0:
		return ^b
	}
	return b | 0x80000000
}

// keyValue inverts orderedKey for keys it produces (key 0 gives NaN).
func keyValue(k uint32) float32 {
	switch {
	case k == 0:
		return float32(math.NaN())
	case k >= 0x80000000:
		return math.Float32frombits(k ^ 0x80000000)
	}
	return math.Float32frombits(^k)
}

// Radix selection works on 11-bit digits of the key, high digit first:
// bits 31..21, 20..10 and 10..0 (the last overlaps the second in bit 10,
// which the prefix fixes by then).
const (
	digitBits   = 11
	histBuckets = 1 << digitBits
	digitMask   = histBuckets - 1
	histCopies  = 4
	levels      = 3
	// candidateCap is how many keys of one bucket the selection collects
	// to finish in cache (256 KiB) instead of running another histogram
	// pass over the data.
	candidateCap = 1 << 16
	// selectChunk is the granularity at which a collection pass records
	// how many candidates each run of entries gave, so that a tie position
	// can be found again by rescanning one chunk.
	selectChunk = 1 << 14
	// histFlush bounds one histogram kernel call so that its 32-bit
	// counters cannot overflow.
	histFlush = 1 << 28
)

var levelShift = [levels]uint{21, 10, 0}

// levelMask is the part of the key that levels 0..l fix.
func levelMask(l int) uint32 {
	if l == levels-1 {
		return math.MaxUint32
	}
	return ^uint32(0) << levelShift[l]
}

// Selector finds exact DST thresholds by radix selection on the bits of the
// scores. It keeps its buffers between calls, so selections after the first
// do not allocate; one Selector must not be used by two goroutines at once.
// The zero value is ready to use.
type Selector struct {
	pieces  []SiloPiece
	d       Distance
	workers []selectWorker
	cand    []uint32 // candidates of all workers, worker by worker
	work    []uint32
	// the pass the workers run
	pass          int
	shift         uint
	pmask, prefix uint32
	workersInUse  int
	chunkCursor   []int
	candCursor    []int
	siloLen       int64
	bytesRead     int64
	lo, hi        uint32   // passCollectRange's bracket
	sample        []uint32 // sampled keys
	rangeBuf      []uint32 // passCollectRange's per-worker candidates
}

// BytesRead reports how many bytes of score operands (θ̂ and θ0, or the
// values) the last selection read from memory, counting every pass.
func (s *Selector) BytesRead() int64 { return s.bytesRead }

// entryBytes is how many bytes scoring one entry reads.
func (s *Selector) entryBytes() int64 {
	if s.d == distanceValue {
		return 4
	}
	return 8
}

const (
	passHistogram = iota
	passHistogramPrefix
	passCollect
	passCollectRange
)

type selectWorker struct {
	hist        [histCopies * histBuckets]uint32
	total       [histBuckets]int64
	chunkCounts []int32 // collection pass: candidates per chunk, in this worker's order
	cand        []uint32
	ncand       int
	above       int64 // passCollectRange: keys above the bracket
	overflow    bool
}

// TopK returns the Threshold that keeps exactly k entries of the silo made
// of pieces (in that order) under distance d, and how many it keeps: k,
// unless k is more than the silo's entries or its non-NaN scores, when it
// keeps all of those. k <= 0 keeps nothing.
//
// It is a radix selection on the ordered bits of the scores (Δ is computed
// on the fly, never stored): a histogram of the top 11 bits, then either a
// pass collecting the keys of the boundary bucket (when it has at most
// 65536) that finishes in cache, or another histogram of the next bits.
// Silos of 2²⁰ entries or more first try a shortcut: a deterministic sample
// of 65536 keys brackets the k-th key, and one pass counts the keys above
// the bracket and collects those inside; when the bracket misses, the
// radix passes run. A tie position is found by rescanning at most one
// 16384-entry chunk. threads <= 0 means DefaultThreads(); the result does
// not depend on threads or on the path taken.
func (s *Selector) TopK(k int64, d Distance, pieces []SiloPiece, threads int) (Threshold, int64) {
	checkDistance(d)
	for _, p := range pieces {
		if len(p.Seed) != len(p.Theta) {
			panic("kernels: TopK piece Theta and Seed differ in length")
		}
	}
	s.pieces = append(s.pieces[:0], pieces...)
	th, kept := s.topK(k, d, threads)
	clear(s.pieces)
	return th, kept
}

// TopKFloats is TopK on plain values: the silo is the slices of xs laid
// end to end and the score of an entry is its value (negative values
// included).
func (s *Selector) TopKFloats(k int64, xs [][]float32, threads int) (Threshold, int64) {
	s.pieces = s.pieces[:0]
	for _, x := range xs {
		s.pieces = append(s.pieces, SiloPiece{Theta: x})
	}
	th, kept := s.topK(k, distanceValue, threads)
	clear(s.pieces)
	return th, kept
}

func (s *Selector) topK(k int64, d Distance, threads int) (Threshold, int64) {
	s.d = d
	var n int64
	for _, p := range s.pieces {
		n += int64(len(p.Theta))
	}
	s.siloLen, s.bytesRead = n, 0
	if k <= 0 || n == 0 {
		return Threshold{Q: float32(math.Inf(1)), TieEnd: 0}, 0
	}
	k = min(k, n)
	workers := 1
	if n <= math.MaxInt {
		workers = workersFor(int(n), threads)
	}
	s.setWorkers(workers)
	if n >= sampleMinSilo {
		if th, kept, ok := s.sampled(k, n); ok {
			return th, kept
		}
		s.setWorkers(workers)
	}

	need := k // rank, from the top, of the wanted key among those under the prefix
	var prefix, pmask uint32
	inSet := n // entries under the prefix
	level := 0
	collected := false
	for ; level < levels; level++ {
		if inSet <= candidateCap {
			s.collect(pmask, prefix, inSet, level)
			collected = true
			break
		}
		s.histogram(level, pmask, prefix)
		var total [histBuckets]int64
		for w := range s.workersInUse {
			for b, c := range s.workers[w].total {
				total[b] += c
			}
		}
		b := histBuckets - 1
		for ; b > 0 && total[b] < need; b-- {
			need -= total[b]
		}
		prefix |= uint32(b) << levelShift[level]
		pmask = levelMask(level)
		inSet = total[b]
		for w := range s.workersInUse {
			s.workers[w].ncand = int(s.workers[w].total[b])
		}
	}
	if collected {
		prefix, inSet, need = selectInKeys(s.cand[:inSet], level, pmask, prefix, need)
	}
	return s.result(k, prefix, inSet, need, collected)
}

// selectInKeys finishes a selection in cache: among keys under the prefix
// (levels before level fixed), it finds the key of rank need (from the
// top), how many keys equal it, and how many of those are still needed.
func selectInKeys(keys []uint32, level int, pmask, prefix uint32, need int64) (key uint32, equal, tiesNeeded int64) {
	equal = int64(len(keys))
	for ; level < levels; level++ {
		var hist [histBuckets]int64
		sh := levelShift[level]
		for _, key := range keys {
			if key&pmask == prefix {
				hist[key>>sh&digitMask]++
			}
		}
		b := histBuckets - 1
		for ; b > 0 && hist[b] < need; b-- {
			need -= hist[b]
		}
		prefix |= uint32(b) << sh
		pmask = levelMask(level)
		equal = hist[b]
	}
	return prefix, equal, need
}

// result turns the k-th largest key (equal entries have it, need of them
// to be kept) into a Threshold.
func (s *Selector) result(k int64, key uint32, equal, need int64, collected bool) (Threshold, int64) {
	if key == 0 {
		// The k-th largest is NaN: keep every number.
		return Threshold{Q: float32(math.Inf(-1)), TieEnd: keepAll}, k - need
	}
	th := Threshold{Q: keyValue(key), TieEnd: keepAll}
	if need < equal {
		th.TieEnd = s.tiePosition(key, need, collected) + 1
	}
	return th, k
}

// The sampled fast path: a deterministic sample of the silo's keys brackets
// the k-th largest key, and one pass over the data counts the keys above
// the bracket and collects those inside it (at memory speed: no histogram
// increments). When the bracket misses the k-th key or holds too many
// keys, the radix passes run as if the sample had not been taken; either
// way the answer is exact.
const (
	sampleMinSilo = 1 << 20 // smaller silos go straight to the radix passes
	sampleSize    = 1 << 16
	rangeCap      = 1 << 20 // candidates one worker may collect
)

func (s *Selector) sampled(k, n int64) (Threshold, int64, bool) {
	loKey, hiKey := s.sampleBracket(k, n)
	s.pass = passCollectRange
	s.lo, s.hi = loKey, hiKey
	if cap(s.rangeBuf) < rangeCap*s.workersInUse {
		s.rangeBuf = make([]uint32, rangeCap*s.workersInUse)
	}
	for w := range s.workersInUse {
		s.workers[w].cand = s.rangeBuf[w*rangeCap : (w+1)*rangeCap]
	}
	Parallel(s.workersInUse, s)
	s.bytesRead += s.siloLen * s.entryBytes()
	var above, inRange int64
	for w := range s.workersInUse {
		wk := &s.workers[w]
		if wk.overflow {
			return Threshold{}, 0, false
		}
		above += wk.above
		inRange += int64(wk.ncand)
	}
	need := k - above
	if need < 1 || need > inRange {
		return Threshold{}, 0, false // the k-th key is outside the bracket
	}
	// Lay the candidates end to end, worker by worker, as the tie walk
	// expects them.
	if cap(s.cand) < int(inRange) {
		s.cand = make([]uint32, inRange)
	}
	s.cand = s.cand[:inRange]
	off := 0
	for w := range s.workersInUse {
		wk := &s.workers[w]
		copy(s.cand[off:], wk.cand[:wk.ncand])
		wk.cand = s.cand[off : off+wk.ncand : off+wk.ncand]
		off += wk.ncand
	}
	key, equal, tiesNeeded := selectInKeys(s.cand, 0, 0, 0, need)
	th, kept := s.result(k, key, equal, tiesNeeded, true)
	return th, kept, true
}

// sampleBracket picks keys lo <= hi such that the k-th largest key of the
// silo lies in [lo, hi] with high probability and few keys do: from
// sampleSize keys at fixed pseudo-random positions (one per stride, so
// periodic data cannot fool it), the sample ranks k·S/n ∓ (3·sqrt(k·S/n+1) + 8).
func (s *Selector) sampleBracket(k, n int64) (lo, hi uint32) {
	stride := n / sampleSize
	if cap(s.sample) < sampleSize {
		s.sample = make([]uint32, sampleSize)
	}
	sample := s.sample[:sampleSize]
	piece, start := 0, int64(0) // the piece holding the current position, and its silo position
	for i := range sample {
		pos := int64(i)*stride + int64(uint64(i)*0x9e3779b97f4a7c15>>40)%stride
		for pos >= start+int64(len(s.pieces[piece].Theta)) {
			start += int64(len(s.pieces[piece].Theta))
			piece++
		}
		p := s.pieces[piece]
		j := pos - start
		var sd float32
		if p.Seed != nil {
			sd = p.Seed[j]
		}
		sample[i] = orderedKey(score(p.Theta[j], sd, s.d))
	}
	expect := float64(k) * sampleSize / float64(n)
	margin := 3*math.Sqrt(expect+1) + 8
	hi, lo = math.MaxUint32, 0
	if r := int64(math.Floor(expect - margin)); r >= 1 {
		hi, _, _ = selectInKeys(sample, 0, 0, 0, r)
	}
	if r := int64(math.Ceil(expect + margin)); r <= sampleSize {
		lo, _, _ = selectInKeys(sample, 0, 0, 0, r)
	}
	return lo, hi
}

func (s *Selector) setWorkers(workers int) {
	if len(s.workers) < workers {
		s.workers = append(s.workers, make([]selectWorker, workers-len(s.workers))...)
	}
	s.workersInUse = workers
}

// histogram runs one histogram pass of the given level over all pieces;
// afterwards each worker's total holds its counts.
func (s *Selector) histogram(level int, pmask, prefix uint32) {
	s.shift = levelShift[level]
	s.pmask, s.prefix = pmask, prefix
	s.pass = passHistogramPrefix
	if level == 0 {
		s.pass = passHistogram
	}
	Parallel(s.workersInUse, s)
	s.bytesRead += s.siloLen * s.entryBytes()
}

// collect gathers the keys under the prefix (inSet of them, each worker's
// share in its ncand, or all of them in one worker at level 0) into s.cand.
func (s *Selector) collect(pmask, prefix uint32, inSet int64, level int) {
	if level == 0 {
		s.setWorkers(1)
		s.workers[0].ncand = int(inSet)
	}
	if cap(s.cand) < int(inSet) {
		s.cand = make([]uint32, inSet, candidateCap)
	}
	s.cand = s.cand[:inSet]
	off := 0
	for w := range s.workersInUse {
		wk := &s.workers[w]
		wk.cand = s.cand[off : off+wk.ncand : off+wk.ncand]
		off += wk.ncand
	}
	s.pmask, s.prefix = pmask, prefix
	s.pass = passCollect
	Parallel(s.workersInUse, s)
	s.bytesRead += s.siloLen * s.entryBytes()
	for w := range s.workersInUse {
		if s.workers[w].overflow {
			panic("kernels: TopK pieces changed during the selection")
		}
	}
}

// Run is one worker's share of the current pass: its Split range of every
// piece, in piece order.
func (s *Selector) Run(w, workers int) {
	wk := &s.workers[w]
	switch s.pass {
	case passHistogram, passHistogramPrefix:
		clear(wk.total[:])
	case passCollect, passCollectRange:
		wk.chunkCounts = wk.chunkCounts[:0]
		wk.overflow = false
		wk.above = 0
	}
	out := 0
	for _, p := range s.pieces {
		lo, hi := Split(len(p.Theta), w, workers, 64)
		for lo < hi {
			switch s.pass {
			case passHistogram, passHistogramPrefix:
				end := min(hi, lo+histFlush)
				clear(wk.hist[:])
				theta, seed := pieceRange(p, lo, end)
				if s.pass == passHistogram {
					histogramBlock(&wk.hist, theta, seed, s.d, s.shift)
				} else {
					histogramPrefixBlock(&wk.hist, theta, seed, s.d, s.shift, s.pmask, s.prefix)
				}
				for c := range histCopies {
					for b, v := range wk.hist[c*histBuckets : (c+1)*histBuckets] {
						wk.total[b] += int64(v)
					}
				}
				lo = end
			case passCollect, passCollectRange:
				end := min(hi, lo+selectChunk)
				theta, seed := pieceRange(p, lo, end)
				var got int
				if s.pass == passCollect {
					got = collectBlock(wk.cand[out:], theta, seed, s.d, s.pmask, s.prefix)
				} else {
					var above int64
					got, above = collectRangeBlock(wk.cand[out:], theta, seed, s.d, s.lo, s.hi)
					wk.above += above
				}
				if got < 0 {
					wk.overflow = true
					return
				}
				wk.chunkCounts = append(wk.chunkCounts, int32(got))
				out += got
				lo = end
			}
		}
	}
	wk.ncand = out
}

func pieceRange(p SiloPiece, lo, hi int) (theta, seed []float32) {
	theta = p.Theta[lo:hi]
	if p.Seed != nil {
		seed = p.Seed[lo:hi]
	}
	return theta, seed
}

// tiePosition returns the silo position of the nth (1-based) entry whose
// key is key.
func (s *Selector) tiePosition(key uint32, nth int64, collected bool) int64 {
	var pos int64 // silo position of the current piece's start
	if collected {
		// Walk the chunks in silo order, counting ties among each chunk's
		// candidates; rescan only the chunk that holds the nth.
		s.chunkCursor = append(s.chunkCursor[:0], make([]int, s.workersInUse)...)
		s.candCursor = append(s.candCursor[:0], make([]int, s.workersInUse)...)
		chunkIdx, candIdx := s.chunkCursor, s.candCursor
		for _, p := range s.pieces {
			for w := range s.workersInUse {
				wk := &s.workers[w]
				lo, hi := Split(len(p.Theta), w, s.workersInUse, 64)
				for ; lo < hi; lo += selectChunk {
					end := min(hi, lo+selectChunk)
					c := int(wk.chunkCounts[chunkIdx[w]])
					chunkIdx[w]++
					var ties int64
					for _, k := range wk.cand[candIdx[w] : candIdx[w]+c] {
						if k == key {
							ties++
						}
					}
					candIdx[w] += c
					if ties >= nth {
						return pos + int64(lo) + s.findNth(p, lo, end, s.d, key, nth)
					}
					nth -= ties
				}
			}
			pos += int64(len(p.Theta))
		}
		panic("kernels: TopK pieces changed during the selection")
	}
	// Ties were too many to collect: count them chunk by chunk.
	if len(s.work) < selectChunk {
		s.work = make([]uint32, selectChunk)
	}
	scratch := s.work[:selectChunk]
	for _, p := range s.pieces {
		for lo := 0; lo < len(p.Theta); lo += selectChunk {
			end := min(len(p.Theta), lo+selectChunk)
			theta, seed := pieceRange(p, lo, end)
			ties := int64(collectBlock(scratch, theta, seed, s.d, math.MaxUint32, key))
			s.bytesRead += int64(end-lo) * s.entryBytes()
			if ties >= nth {
				return pos + int64(lo) + s.findNth(p, lo, end, s.d, key, nth)
			}
			nth -= ties
		}
		pos += int64(len(p.Theta))
	}
	panic("kernels: TopK pieces changed during the selection")
}

// findNth returns the offset from lo of the nth entry of p[lo:hi] whose key
// is key.
func (s *Selector) findNth(p SiloPiece, lo, hi int, d Distance, key uint32, nth int64) int64 {
	s.bytesRead += int64(hi-lo) * s.entryBytes()
	theta, seed := pieceRange(p, lo, hi)
	for i, t := range theta {
		var sd float32
		if seed != nil {
			sd = seed[i]
		}
		if orderedKey(score(t, sd, d)) == key {
			nth--
			if nth == 0 {
				return int64(i)
			}
		}
	}
	panic("kernels: TopK pieces changed during the selection")
}

func histogramBlock(hist *[histCopies * histBuckets]uint32, theta, seed []float32, d Distance, shift uint) {
	done := histogramVector(hist, theta, seed, d, shift)
	for i := done; i < len(theta); i++ {
		var sd float32
		if seed != nil {
			sd = seed[i]
		}
		key := orderedKey(score(theta[i], sd, d))
		hist[(i&3)*histBuckets+int(key>>shift&digitMask)]++
	}
}

func histogramPrefixBlock(hist *[histCopies * histBuckets]uint32, theta, seed []float32, d Distance, shift uint, pmask, prefix uint32) {
	done := histogramPrefixVector(hist, theta, seed, d, shift, pmask, prefix)
	for i := done; i < len(theta); i++ {
		var sd float32
		if seed != nil {
			sd = seed[i]
		}
		key := orderedKey(score(theta[i], sd, d))
		if key&pmask == prefix {
			hist[key>>shift&digitMask]++
		}
	}
}

// collectBlock appends the keys under the prefix to out and returns how
// many, or -1 when out is too short.
func collectBlock(out []uint32, theta, seed []float32, d Distance, pmask, prefix uint32) int {
	done, n := collectVector(out, theta, seed, d, pmask, prefix)
	if n < 0 {
		return -1
	}
	for i := done; i < len(theta); i++ {
		var sd float32
		if seed != nil {
			sd = seed[i]
		}
		key := orderedKey(score(theta[i], sd, d))
		if key&pmask == prefix {
			if n == len(out) {
				return -1
			}
			out[n] = key
			n++
		}
	}
	return n
}

// collectRangeBlock appends the keys in [lo, hi] to out and returns how
// many (-1 when out is too short) and how many keys exceed hi.
func collectRangeBlock(out []uint32, theta, seed []float32, d Distance, lo, hi uint32) (int, int64) {
	done, n, above := collectRangeVector(out, theta, seed, d, lo, hi)
	if n < 0 {
		return -1, 0
	}
	for i := done; i < len(theta); i++ {
		var sd float32
		if seed != nil {
			sd = seed[i]
		}
		key := orderedKey(score(theta[i], sd, d))
		switch {
		case key > hi:
			above++
		case key >= lo:
			if n == len(out) {
				return -1, 0
			}
			out[n] = key
			n++
		}
	}
	return n, above
}
