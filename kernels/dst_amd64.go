//go:build !purego

package kernels

import "math"

// The vector halves of the DST kernels: each runs the assembly for the
// longest prefix that is a whole number of vectors (or 0 entries on the
// generic path) and returns how many entries it handled; the callers finish
// with the generic loop. Lengths are checked by the callers.

// vectorWidth is the number of float32 lanes the dispatched kernels use
// (0 on the generic path).
func vectorWidth() int {
	switch {
	case useAVX512():
		return 16
	case useAVX2():
		return 8
	}
	return 0
}

// seedPtr is the seed argument of a kernel: the value mode never reads it,
// so any valid pointer does.
func seedPtr(theta, seed []float32) *float32 {
	if seed == nil {
		return &theta[0]
	}
	return &seed[0]
}

func scoreVector(dst, theta, seed []float32, d Distance) int {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0
	}
	n := len(theta) &^ (w - 1)
	raceReadFloats(theta[:n])
	raceReadFloats(seed[:n])
	raceWriteFloats(dst[:n])
	if w == 16 {
		scoreAVX512(&dst[0], &theta[0], &seed[0], n, int(d))
	} else {
		scoreAVX2(&dst[0], &theta[0], &seed[0], n, int(d))
	}
	return n
}

// laneCounts is what the counting kernels write: per threshold, the count
// of each of (up to) 16 lanes.
type laneCounts [MaxThresholds * 16]uint32

func (l *laneCounts) addTo(c *countSet) {
	for j := range c {
		var s int64
		for _, v := range l[16*j : 16*j+16] {
			s += int64(v)
		}
		c[j] += s
	}
}

// intThresholds maps thresholds to the float32 bit patterns that the
// kernels compare as signed integers with the bits of non-negative scores
// (NaN scores become INT32_MIN first): NaN → INT32_MAX (nothing exceeds
// it), negative → -1 (every number exceeds it), ±0 → 0, positive → itself.
func intThresholds(ts *thresholdSet) (its thresholdSet) {
	for j, q := range ts.q {
		var b uint32
		switch {
		case q != q:
			b = 0x7fffffff
		case q < 0:
			b = 0xffffffff
		case q == 0:
			b = 0
		default:
			b = math.Float32bits(q)
		}
		its.q[j] = math.Float32frombits(b)
	}
	its.used = ts.used
	return its
}

// broadcastThresholds repeats each threshold 8 times: the AVX2 kernels
// compare with 32-byte memory operands.
func broadcastThresholds(ts *thresholdSet) (b [MaxThresholds * 8]float32) {
	for j, q := range ts.q {
		for l := range 8 {
			b[8*j+l] = q
		}
	}
	return b
}

func countVector(c *countSet, ts *thresholdSet, theta, seed []float32, d Distance) int {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0
	}
	n := len(theta) &^ (w - 1)
	raceReadFloats(theta[:n])
	if seed != nil {
		raceReadFloats(seed[:n])
	}
	var lanes laneCounts
	its := intThresholds(ts)
	if w == 16 {
		countAboveAVX512(&lanes[0], &ts.q[0], &its.q[0], ts.used, &theta[0], seedPtr(theta, seed), n, int(d))
	} else {
		b, ib := broadcastThresholds(ts), broadcastThresholds(&its)
		countAboveAVX2(&lanes[0], &b[0], &ib[0], ts.used, &theta[0], seedPtr(theta, seed), n, int(d))
	}
	lanes.addTo(c)
	return n
}

func maskedVector(theta, seed []float32, d Distance, q float32, keepEq bool) (done int, kept int64) {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0, 0
	}
	n := len(theta) &^ (w - 1)
	raceReadFloats(seed[:n])
	raceWriteFloats(theta[:n])
	var lanes [16]uint32
	if w == 16 {
		maskedUpdateAVX512(&lanes[0], &theta[0], &seed[0], n, int(d), q, b2i(keepEq))
	} else {
		maskedUpdateAVX2(&lanes[0], &theta[0], &seed[0], n, int(d), q, b2i(keepEq))
	}
	for _, v := range lanes {
		kept += int64(v)
	}
	return n, kept
}

// maskedIndicesVector needs room for len(theta) entries in idx.
func maskedIndicesVector(idx []int32, theta, seed []float32, d Distance, q float32, keepEq, write bool, base int) (done, count int) {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0, 0
	}
	n := len(theta) &^ (w - 1)
	if len(idx) < n {
		panic("kernels: maskedIndicesVector idx too short")
	}
	raceReadFloats(seed[:n])
	if write {
		raceWriteFloats(theta[:n])
	} else {
		raceReadFloats(theta[:n])
	}
	if w == 16 {
		count = maskedIndicesAVX512(&idx[0], &theta[0], &seed[0], n, int(d), q, b2i(keepEq), b2i(write), base)
	} else {
		count = maskedIndicesAVX2(&idx[0], &theta[0], &seed[0], n, int(d), q, b2i(keepEq), b2i(write), base)
	}
	raceWriteInt32s(idx[:count])
	return n, count
}

func histogramVector(hist *[histCopies * histBuckets]uint32, theta, seed []float32, d Distance, shift uint) int {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0
	}
	n := len(theta) &^ (w - 1)
	raceReadFloats(theta[:n])
	if seed != nil {
		raceReadFloats(seed[:n])
	}
	if w == 16 {
		histogramAVX512(&hist[0], &theta[0], seedPtr(theta, seed), n, int(d), int(shift))
	} else {
		histogramAVX2(&hist[0], &theta[0], seedPtr(theta, seed), n, int(d), int(shift))
	}
	return n
}

func histogramPrefixVector(hist *[histCopies * histBuckets]uint32, theta, seed []float32, d Distance, shift uint, prefixMask, prefix uint32) int {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0
	}
	n := len(theta) &^ (w - 1)
	raceReadFloats(theta[:n])
	if seed != nil {
		raceReadFloats(seed[:n])
	}
	if w == 16 {
		histogramPrefixAVX512(&hist[0], &theta[0], seedPtr(theta, seed), n, int(d), int(shift), prefixMask, prefix)
	} else {
		histogramPrefixAVX2(&hist[0], &theta[0], seedPtr(theta, seed), n, int(d), int(shift), prefixMask, prefix)
	}
	return n
}

// collectVector returns count -1 when more than len(out) keys match.
func collectVector(out []uint32, theta, seed []float32, d Distance, prefixMask, prefix uint32) (done, count int) {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0, 0
	}
	n := len(theta) &^ (w - 1)
	raceReadFloats(theta[:n])
	if seed != nil {
		raceReadFloats(seed[:n])
	}
	var outPtr *uint32
	if len(out) > 0 {
		outPtr = &out[0]
	}
	if w == 16 {
		count = collectAVX512(outPtr, len(out), &theta[0], seedPtr(theta, seed), n, int(d), prefixMask, prefix)
	} else {
		count = collectAVX2(outPtr, len(out), &theta[0], seedPtr(theta, seed), n, int(d), prefixMask, prefix)
	}
	if count > 0 {
		raceWriteUint32s(out[:count])
	}
	return n, count
}

// adamwVector runs the AdamW step (and, unless d == distanceValue, the
// counting) over the vector part.
func adamwVector(c *adamwConstants, p, g, m, v, seed []float32, d Distance, ts *thresholdSet, counts *countSet) int {
	w := vectorWidth()
	if w == 0 || len(p) < w {
		return 0
	}
	n := len(p) &^ (w - 1)
	raceReadFloats(g[:n])
	raceWriteFloats(p[:n])
	raceWriteFloats(m[:n])
	raceWriteFloats(v[:n])
	if seed != nil {
		raceReadFloats(seed[:n])
	}
	var lanes laneCounts
	if w == 16 {
		its := intThresholds(ts)
		adamwAVX512(&p[0], &g[0], &m[0], &v[0], seedPtr(p, seed), n, &c[0], &its.q[0], &lanes[0], int(d))
	} else {
		var cb [len(adamwConstants{}) * 8]float32
		for j, x := range c {
			for l := range 8 {
				cb[8*j+l] = x
			}
		}
		its := intThresholds(ts)
		b := broadcastThresholds(&its)
		adamwAVX2(&p[0], &g[0], &m[0], &v[0], seedPtr(p, seed), n, &cb[0], &b[0], &lanes[0], int(d))
	}
	if d != distanceValue {
		lanes.addTo(counts)
	}
	return n
}

// readStreamVector reads a (len a multiple of 64) with the widest loads.
func readStreamVector(a []float32) bool {
	switch {
	case hardwareISA >= AVX512:
		readStreamAVX512(&a[0], len(a))
	case hardwareISA >= AVX2:
		readStreamAVX2(&a[0], len(a))
	default:
		return false
	}
	return true
}

func readStreams3Vector(a, b, c []float32) bool {
	switch {
	case hardwareISA >= AVX512:
		readStreams3AVX512(&a[0], &b[0], &c[0], len(a))
	case hardwareISA >= AVX2:
		readStreams3AVX2(&a[0], &b[0], &c[0], len(a))
	default:
		return false
	}
	return true
}

func copyStreamVector(dst, src []float32) bool {
	switch {
	case hardwareISA >= AVX512:
		copyStreamAVX512(&dst[0], &src[0], len(src))
	case hardwareISA >= AVX2:
		copyStreamAVX2(&dst[0], &src[0], len(src))
	default:
		return false
	}
	return true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sgdVector runs the SGD step over the vector part. The flags tell the
// kernel which of PyTorch's branches the step takes (asm/dst sgdKernel):
// 1 weight decay, 2 momentum, 4 first step (buffer = d), 8 Nesterov.
func sgdVector(c *sgdConstants, p, g, buf []float32) int {
	w := vectorWidth()
	if w == 0 || len(p) < w {
		return 0
	}
	n := len(p) &^ (w - 1)
	flags := 0
	if c.hasWD {
		flags |= 1
	}
	bufPtr := &p[0] // never touched without momentum
	if c.hasMomentum {
		flags |= 2
		if c.first {
			flags |= 4
		}
		if c.nesterov {
			flags |= 8
		}
		bufPtr = &buf[0]
		raceWriteFloats(buf[:n])
	}
	raceReadFloats(g[:n])
	raceWriteFloats(p[:n])
	k := [4]float32{c.wd, c.momentum, c.oneMinusDampening, c.negLR}
	if w == 16 {
		sgdAVX512(&p[0], &g[0], bufPtr, n, &k[0], flags)
	} else {
		kb := broadcast4(k)
		sgdAVX2(&p[0], &g[0], bufPtr, n, &kb[0], flags)
	}
	return n
}

func broadcast4(k [4]float32) (b [32]float32) {
	for j, x := range k {
		for l := range 8 {
			b[8*j+l] = x
		}
	}
	return b
}

// adafactorRowVector applies the Adafactor update to the vector part of
// one row segment.
func adafactorRowVector(p, g, colScale, m []float32, rowScale, scale, beta1, oneMinusBeta1 float32) int {
	w := vectorWidth()
	if w == 0 || len(p) < w {
		return 0
	}
	n := len(p) &^ (w - 1)
	mPtr, momentum := &p[0], 0
	if beta1 != 0 {
		mPtr, momentum = &m[0], 1
		raceWriteFloats(m[:n])
	}
	raceReadFloats(g[:n])
	raceReadFloats(colScale[:n])
	raceWriteFloats(p[:n])
	k := [4]float32{rowScale, scale, beta1, oneMinusBeta1}
	if w == 16 {
		adafactorRowAVX512(&p[0], &g[0], &colScale[0], mPtr, n, &k[0], momentum)
	} else {
		kb := broadcast4(k)
		adafactorRowAVX2(&p[0], &g[0], &colScale[0], mPtr, n, &kb[0], momentum)
	}
	return n
}

// collectRangeVector returns count -1 when more than len(out) keys are in
// [lo, hi]; above is the number of keys > hi.
func collectRangeVector(out []uint32, theta, seed []float32, d Distance, lo, hi uint32) (done, count int, above int64) {
	w := vectorWidth()
	if w == 0 || len(theta) < w {
		return 0, 0, 0
	}
	n := len(theta) &^ (w - 1)
	raceReadFloats(theta[:n])
	if seed != nil {
		raceReadFloats(seed[:n])
	}
	var outPtr *uint32
	if len(out) > 0 {
		outPtr = &out[0]
	}
	var lanes [16]uint32
	if w == 16 {
		count = collectRangeAVX512(outPtr, len(out), &lanes[0], &theta[0], seedPtr(theta, seed), n, int(d), lo, hi)
	} else {
		count = collectRangeAVX2(outPtr, len(out), &lanes[0], &theta[0], seedPtr(theta, seed), n, int(d), lo, hi)
	}
	if count > 0 {
		raceWriteUint32s(out[:count])
	}
	for _, v := range lanes {
		above += int64(v)
	}
	return n, count, above
}

func squareSumsVector(rowSums, colSums, g []float32, rows, cols int, eps1 float32) bool {
	w := vectorWidth()
	if w == 0 {
		return false
	}
	raceReadFloats(g)
	raceWriteFloats(rowSums)
	raceWriteFloats(colSums)
	if w == 16 {
		adafactorSquareSumsAVX512(&rowSums[0], &colSums[0], &g[0], rows, cols, eps1)
	} else {
		adafactorSquareSumsAVX2(&rowSums[0], &colSums[0], &g[0], rows, cols, eps1)
	}
	return true
}

func updateSquaresVector(lanes *[17]float64, g, rowScale, colScale []float32, rows, cols int) bool {
	w := vectorWidth()
	if w == 0 {
		return false
	}
	raceReadFloats(g)
	raceReadFloats(rowScale)
	raceReadFloats(colScale)
	if w == 16 {
		adafactorUpdateSquaresAVX512(&lanes[0], &g[0], &rowScale[0], &colScale[0], rows, cols)
	} else {
		adafactorUpdateSquaresAVX2(&lanes[0], &g[0], &rowScale[0], &colScale[0], rows, cols)
	}
	return true
}
