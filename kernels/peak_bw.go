package kernels

import (
	"slices"
	"sync"
	"time"
)

// bandwidthBytes is the total size of the arrays the bandwidth
// measurements stream through: far larger than any cache.
const bandwidthBytes = 1 << 30

// MeasureReadBandwidth returns the read bandwidth, in GB/s (10⁹ bytes per
// second), that threads goroutines reach streaming through streams arrays
// side by side (1 GiB in all), the median of five passes. Each goroutine
// reads its share of every array with the widest loads the CPU has and
// does no other work. It allocates and fills the arrays on every call.
func MeasureReadBandwidth(threads, streams int) float64 {
	return measureRead(threads, streams, bandwidthBytes, 5)
}

// MeasureCopyBandwidth returns the copy bandwidth, in GB/s of bytes read
// plus bytes written, that threads goroutines reach copying one 512 MiB
// array into another with ordinary stores (what the update kernels do),
// the median of five passes.
func MeasureCopyBandwidth(threads int) float64 {
	return measureCopy(threads, bandwidthBytes, 5)
}

// BandwidthProbe keeps arrays for repeated bandwidth measurements, so that
// a profile can measure the machine's bandwidth right next to each kernel
// run (on a shared, noisy machine a figure measured minutes apart says
// little).
type BandwidthProbe struct {
	read, src, dst []float32
}

// NewBandwidthProbe allocates and fills the probe's arrays, bytes in all
// (0 means 1 GiB; anything much smaller than the last-level cache measures
// the cache instead of memory).
func NewBandwidthProbe(threads, bytes int) *BandwidthProbe {
	if bytes <= 0 {
		bytes = bandwidthBytes
	}
	n := max(bytes/4/2&^63, 128)
	return &BandwidthProbe{read: filled(n, threads), src: filled(n/2, threads), dst: filled(n/2, threads)}
}

// Read streams once through half the probe and returns the GB/s reached.
func (p *BandwidthProbe) Read(threads int) float64 {
	task := &bandwidthTask{arrays: [][]float32{p.read}}
	start := time.Now()
	Parallel(workersOrOne(threads), task)
	return float64(4*len(p.read)) / time.Since(start).Seconds() / 1e9
}

// Copy copies a quarter of the probe into another quarter and returns the
// GB/s of bytes read plus written.
func (p *BandwidthProbe) Copy(threads int) float64 {
	task := &bandwidthTask{arrays: [][]float32{p.src}, dst: p.dst}
	start := time.Now()
	Parallel(workersOrOne(threads), task)
	return float64(8*len(p.src)) / time.Since(start).Seconds() / 1e9
}

func measureRead(threads, streams, bytes, reps int) float64 {
	if streams != 1 && streams != 3 {
		panic("kernels: MeasureReadBandwidth streams must be 1 or 3")
	}
	n := bytes / 4 / streams &^ 63
	arrays := make([][]float32, streams)
	for s := range arrays {
		arrays[s] = filled(n, threads)
	}
	task := &bandwidthTask{arrays: arrays}
	secs := timeMedian(reps, func() { Parallel(workersOrOne(threads), task) })
	return float64(n*4*streams) / secs / 1e9
}

func measureCopy(threads, bytes, reps int) float64 {
	n := bytes / 8 &^ 63
	src := filled(n, threads)
	dst := filled(n, threads)
	task := &bandwidthTask{arrays: [][]float32{src}, dst: dst}
	secs := timeMedian(reps, func() { Parallel(workersOrOne(threads), task) })
	return float64(n*8) / secs / 1e9
}

func workersOrOne(threads int) int {
	if threads <= 0 {
		return DefaultThreads()
	}
	return threads
}

// filled returns n floats written once, so that reading them touches real
// memory rather than the shared zero page.
func filled(n, threads int) []float32 {
	a := make([]float32, n)
	var wg sync.WaitGroup
	w := workersOrOne(threads)
	for i := range w {
		lo, hi := Split(n, i, w, 1024)
		wg.Go(func() {
			for j := lo; j < hi; j++ {
				a[j] = 1
			}
		})
	}
	wg.Wait()
	return a
}

func timeMedian(reps int, f func()) float64 {
	times := make([]float64, reps)
	for r := range times {
		start := time.Now()
		f()
		times[r] = time.Since(start).Seconds()
	}
	slices.Sort(times)
	return times[reps/2]
}

type bandwidthTask struct {
	arrays [][]float32
	dst    []float32 // copy: arrays[0] → dst
	sink   [64]float32
}

func (t *bandwidthTask) Run(w, workers int) {
	lo, hi := Split(len(t.arrays[0]), w, workers, 64)
	if hi <= lo {
		return
	}
	switch {
	case t.dst != nil:
		if !copyStreamVector(t.dst[lo:hi], t.arrays[0][lo:hi]) {
			copy(t.dst[lo:hi], t.arrays[0][lo:hi])
		}
	case len(t.arrays) == 1:
		if !readStreamVector(t.arrays[0][lo:hi]) {
			t.sink[w%64] = sumGeneric(t.arrays[0][lo:hi])
		}
	default:
		if !readStreams3Vector(t.arrays[0][lo:hi], t.arrays[1][lo:hi], t.arrays[2][lo:hi]) {
			for _, a := range t.arrays {
				t.sink[w%64] += sumGeneric(a[lo:hi])
			}
		}
	}
}

// sumGeneric is the portable stand-in for the read kernels: eight
// independent sums so the loop is not bound by add latency.
func sumGeneric(a []float32) float32 {
	var s [8]float32
	for i := 0; i+8 <= len(a); i += 8 {
		for l := range 8 {
			s[l] += a[i+l]
		}
	}
	var t float32
	for _, v := range s {
		t += v
	}
	return t
}
