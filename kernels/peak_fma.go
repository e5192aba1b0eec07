package kernels

import (
	"time"
)

// MeasurePeakGFLOPS measures this machine's float32 FMA throughput in
// GFLOP/s at the active ISA with threads goroutines (threads <= 0 means
// DefaultThreads()): every goroutine runs a loop of independent FMA chains
// on registers only, and the best of a few timed runs is reported, since
// other load on the machine can only lower it. It takes about a tenth of a
// second. GEMM throughput is reported as a fraction of this figure.
func MeasurePeakGFLOPS(threads int) float64 {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	loop, flopsPerIter := peakFMALoop()
	return measurePeak(threads, loop, flopsPerIter)
}

// measurePeak runs loop (flopsPerIter flops an iteration) on threads
// goroutines, calibrated to about 10 ms a run, and returns the best of a few
// runs in GFLOP/s.
func measurePeak(threads int, loop func(iterations int), flopsPerIter float64) float64 {
	task := &peakTask{loop: loop}
	// Calibrate to about 10 ms a run on one goroutine.
	task.iterations = 1 << 12
	for {
		start := time.Now()
		Parallel(1, task)
		if d := time.Since(start); d > 2*time.Millisecond || task.iterations >= 1<<40 {
			task.iterations = int(float64(task.iterations) * float64(10*time.Millisecond) / float64(d+1))
			break
		}
		task.iterations *= 4
	}
	task.iterations = max(task.iterations, 1)
	best := 0.0
	for range 7 {
		start := time.Now()
		Parallel(threads, task)
		secs := time.Since(start).Seconds()
		best = max(best, float64(threads)*float64(task.iterations)*flopsPerIter/secs/1e9)
	}
	return best
}

// peakTask runs the FMA loop on every worker.
type peakTask struct {
	loop       func(iterations int)
	iterations int
}

func (t *peakTask) Run(worker, workers int) { t.loop(t.iterations) }

// peakChains is the number of independent FMA chains in the loops: more
// than latency × pipes (4 × 2) so the pipes never wait. The generated
// loops (../asm/sgemm) use the same number.
const peakChains = 12

// peakFMAGo is the generic ISA's loop: scalar multiply-adds, which is what
// the portable kernels are made of (x is 1 and y 0, so the values stay 0):
//
//	for range iterations {
//		for i := range acc {
//			acc[i] = acc[i]*x + y
//		}
//	}
func peakFMAGo(iterations int) {
	x, y := peakOne, peakSink
	var a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11 float32
	for range iterations {
		a0 = a0*x + y
		a1 = a1*x + y
		a2 = a2*x + y
		a3 = a3*x + y
		a4 = a4*x + y
		a5 = a5*x + y
		a6 = a6*x + y
		a7 = a7*x + y
		a8 = a8*x + y
		a9 = a9*x + y
		a10 = a10*x + y
		a11 = a11*x + y
	}
	peakSink = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11
}

// peakOne and peakSink are variables so the compiler cannot fold the
// generic loop away; peakSink stays 0.
var peakOne, peakSink float32 = 1, 0
