package kernels

import (
	"runtime"
	"sync"
)

// Task is a piece of work split across goroutines by Parallel: Run is called
// once for every worker index in [0, workers).
type Task interface {
	Run(worker, workers int)
}

// Parallel calls t.Run(w, workers) for every w in [0, workers) and returns
// when all have returned. Worker 0 runs on the calling goroutine; the others
// go to idle goroutines of a process-wide pool, or run on the caller when
// none is idle, so nested Parallel calls cannot deadlock. It does not
// allocate in steady state (keep t itself in a pool or on a long-lived
// struct: converting a fresh pointer to an interface escapes it).
func Parallel(workers int, t Task) {
	if workers <= 1 {
		t.Run(0, 1)
		return
	}
	startPool()
	c := callPool.Get().(*parallelCall)
	c.task = t
	c.wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		select {
		case poolWork <- poolItem{c, w, workers}:
		default:
			c.task.Run(w, workers)
			c.wg.Done()
		}
	}
	t.Run(0, workers)
	c.wg.Wait()
	c.task = nil
	callPool.Put(c)
}

// Split returns the half-open range of [0, n) that worker w of workers
// handles, in contiguous blocks whose starts are multiples of align (align
// >= 1) so that vector loops see aligned chunks.
func Split(n, w, workers, align int) (lo, hi int) {
	blocks := (n + align - 1) / align
	lo = blocks * w / workers * align
	hi = blocks * (w + 1) / workers * align
	return min(lo, n), min(hi, n)
}

type parallelCall struct {
	task Task
	wg   sync.WaitGroup
}

type poolItem struct {
	call    *parallelCall
	worker  int
	workers int
}

var (
	callPool  = sync.Pool{New: func() any { return new(parallelCall) }}
	poolWork  = make(chan poolItem) // unbuffered: a send succeeds only when a worker is idle
	poolStart sync.Once
)

func startPool() {
	poolStart.Do(func() {
		// Enough goroutines for every core plus nested calls from inside a
		// Task; more cost nothing while they sleep on the channel.
		for range 2 * max(runtime.NumCPU(), 4) {
			go func() {
				for it := range poolWork {
					it.call.task.Run(it.worker, it.workers)
					it.call.wg.Done()
				}
			}()
		}
	})
}
