package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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
	c.state.Store(int32(workers - 1))
	for w := 1; w < workers; w++ {
		if sp := claimSpinner(); sp != nil {
			sp.hand(poolItem{c, w, workers})
			continue
		}
		select {
		case poolWork <- poolItem{c, w, workers}:
		default:
			c.task.Run(w, workers)
			c.done()
		}
	}
	t.Run(0, workers)
	c.wait()
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
	// state counts the workers other than the caller's still running;
	// sleepBit is set by a caller that gave up spinning and waits on wake,
	// which the last worker to finish then sends on, exactly once.
	state atomic.Int32
	wake  chan struct{}
}

const sleepBit = 1 << 30

// done marks one worker finished.
func (c *parallelCall) done() {
	if c.state.Add(-1) == sleepBit {
		c.wake <- struct{}{}
	}
}

// wait returns when every worker has finished, spinning for spinFor
// before it sleeps: waking a sleeping caller costs as much as waking a
// worker.
func (c *parallelCall) wait() {
	deadline := time.Now().Add(spinFor)
	if !spinAllowed() || runtime.GOMAXPROCS(0) < 2 {
		deadline = time.Time{} // the workers may need this processor
	}
	for i := 1; ; i++ {
		n := c.state.Load()
		if n == 0 {
			return
		}
		if i%256 == 0 && time.Now().After(deadline) && c.state.CompareAndSwap(n, n|sleepBit) {
			<-c.wake
			c.state.Store(0)
			return
		}
	}
}

type poolItem struct {
	call    *parallelCall
	worker  int
	workers int
}

var (
	callPool  = sync.Pool{New: func() any { return &parallelCall{wake: make(chan struct{}, 1)} }}
	poolWork  = make(chan poolItem) // unbuffered: a send succeeds only when a worker is idle
	poolStart sync.Once
)

func startPool() {
	poolStart.Do(func() {
		// Enough goroutines for every core plus nested calls from inside a
		// Task; more cost nothing while they sleep on the channel.
		for range 2 * max(runtime.NumCPU(), 4) {
			go func() {
				sp := new(spinner)
				for it := range poolWork {
					for ok := true; ok; it, ok = sp.wait() {
						it.call.task.Run(it.worker, it.workers)
						it.call.done()
					}
				}
			}()
		}
	})
}

// A worker that has finished a task spins for spinFor waiting for the
// next before it goes back to sleep on the channel. Waking a sleeping
// goroutine on another core costs about 100 µs on the virtual machines
// dstune was measured on (a futex wake and an interrupt between
// processors), more than many kernels of a training step take; a
// spinning worker starts within a microsecond. At most GOMAXPROCS−1
// workers spin, so they never take a processor from the goroutine that
// hands them work.
const spinFor = 300 * time.Microsecond

var (
	spinMu   sync.Mutex
	spinners []*spinner // spinning workers no Parallel has claimed
)

// spinner is a pool worker's hand-off slot: Parallel claims a spinning
// worker, writes the item and sets ready; the worker sees ready and runs
// it.
type spinner struct {
	item  poolItem
	at    int64 // when the item was handed (UnixNano)
	ready atomic.Bool
}

// claimSpinner takes a spinning worker off the list, or returns nil.
func claimSpinner() *spinner {
	spinMu.Lock()
	defer spinMu.Unlock()
	n := len(spinners)
	if n == 0 {
		return nil
	}
	sp := spinners[n-1]
	spinners[n-1] = nil
	spinners = spinners[:n-1]
	return sp
}

// hand gives a claimed spinner its item.
func (sp *spinner) hand(it poolItem) {
	sp.item = it
	sp.at = time.Now().UnixNano()
	sp.ready.Store(true)
}

// Spinning only pays while every goroutine of a parallel call has a core:
// when another process takes one, a spinning caller waits for a worker the
// system has descheduled, and a spinning worker takes time the other
// process needs (a bert_bench step at two threads beside one busy process
// took 1.9× as long as without spinning). A worker that picks up its item
// more than lateHandOff after it was handed has not been running; a few
// such late hand-offs among the recent ones (lateness, +4 each, −1 for
// every prompt one) turn spinning off for spinPause. Single late ones
// happen on a quiet machine too (an interrupt) and change nothing.
const (
	lateHandOff = 50 * time.Microsecond
	spinPause   = time.Second
	lateLimit   = 12
)

var (
	// spinOffUntil is when spinning may resume (UnixNano; 0: it may).
	spinOffUntil atomic.Int64
	lateness     atomic.Int32
)

// handOffTook records how long a hand-off took.
func handOffTook(d int64, now int64) {
	if d <= int64(lateHandOff) {
		if lateness.Load() > 0 {
			lateness.Add(-1)
		}
		return
	}
	if lateness.Add(4) >= lateLimit {
		lateness.Store(0)
		spinOffUntil.Store(now + int64(spinPause))
	}
}

func spinAllowed() bool {
	until := spinOffUntil.Load()
	return until == 0 || time.Now().UnixNano() >= until
}

// wait spins for an item for spinFor and returns it; false when none came
// (or too many workers spin already) and the worker should sleep.
func (sp *spinner) wait() (poolItem, bool) {
	if !spinAllowed() {
		return poolItem{}, false
	}
	// GOMAXPROCS is read every time: the runtime may change it (a
	// container's CPU limit).
	spinMu.Lock()
	if len(spinners) >= runtime.GOMAXPROCS(0)-1 {
		spinMu.Unlock()
		return poolItem{}, false
	}
	spinners = append(spinners, sp)
	spinMu.Unlock()
	deadline := time.Now().Add(spinFor)
	for i := 1; ; i++ {
		if sp.ready.Load() {
			return sp.take(), true
		}
		if i%256 == 0 && time.Now().After(deadline) {
			break
		}
	}
	// Leave the list, unless a Parallel has claimed this worker already:
	// then its item is on the way.
	spinMu.Lock()
	for j, other := range spinners {
		if other == sp {
			spinners = append(spinners[:j], spinners[j+1:]...)
			spinMu.Unlock()
			return poolItem{}, false
		}
	}
	spinMu.Unlock()
	for !sp.ready.Load() {
	}
	return sp.take(), true
}

func (sp *spinner) take() poolItem {
	it := sp.item
	now := time.Now().UnixNano()
	handOffTook(now-sp.at, now)
	sp.item = poolItem{}
	sp.ready.Store(false)
	return it
}
