package kernels

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

type sumTask struct {
	data []int64
	out  []int64
}

func (s *sumTask) Run(w, workers int) {
	lo, hi := Split(len(s.data), w, workers, 16)
	var acc int64
	for _, v := range s.data[lo:hi] {
		acc += v
	}
	s.out[w] = acc
}

func TestParallelCoversEveryWorker(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 1000, 4097} {
		for _, workers := range []int{1, 2, 3, 8, 33} {
			data := make([]int64, n)
			var want int64
			for i := range data {
				data[i] = int64(i*7 + 1)
				want += data[i]
			}
			task := &sumTask{data: data, out: make([]int64, workers)}
			Parallel(workers, task)
			var got int64
			for _, v := range task.out {
				got += v
			}
			if got != want {
				t.Fatalf("n=%d workers=%d: sum %d, want %d", n, workers, got, want)
			}
		}
	}
}

func TestSplitPartitions(t *testing.T) {
	for _, n := range []int{0, 1, 5, 64, 100, 1023} {
		for _, workers := range []int{1, 2, 3, 7} {
			for _, align := range []int{1, 8, 16} {
				next := 0
				for w := range workers {
					lo, hi := Split(n, w, workers, align)
					if lo != next || hi < lo {
						t.Fatalf("n=%d workers=%d align=%d: worker %d got [%d,%d), want start %d", n, workers, align, w, lo, hi, next)
					}
					if lo%align != 0 && lo != n {
						t.Fatalf("n=%d align=%d: start %d not aligned", n, align, lo)
					}
					next = hi
				}
				if next != n {
					t.Fatalf("n=%d workers=%d align=%d: covered [0,%d)", n, workers, align, next)
				}
			}
		}
	}
}

type nestedTask struct{ hits atomic.Int64 }

func (n *nestedTask) Run(w, workers int) {
	inner := &countTask{hits: &n.hits}
	Parallel(4, inner)
}

type countTask struct{ hits *atomic.Int64 }

func (c *countTask) Run(w, workers int) { c.hits.Add(1) }

func TestParallelNestedDoesNotDeadlock(t *testing.T) {
	task := &nestedTask{}
	Parallel(64, task)
	if got := task.hits.Load(); got != 64*4 {
		t.Fatalf("nested hits = %d, want %d", got, 64*4)
	}
}

func BenchmarkParallelOverhead(b *testing.B) {
	task := &countTask{hits: new(atomic.Int64)}
	b.ReportAllocs()
	for b.Loop() {
		Parallel(2, task)
	}
}

// TestParallelConcurrentCallers: goroutines calling Parallel at once,
// back to back (so workers are handed tasks while spinning) and after
// pauses (so they have gone to sleep), each get every worker index run
// exactly once per call.
func TestParallelConcurrentCallers(t *testing.T) {
	done := make(chan error)
	for g := range 6 {
		go func() {
			var err error
			for call := range 400 {
				workers := 1 + (g+call)%4
				task := &countTask{hits: new(atomic.Int64)}
				Parallel(workers, task)
				if got := task.hits.Load(); got != int64(workers) && err == nil {
					err = fmt.Errorf("goroutine %d call %d: %d runs, want %d", g, call, got, workers)
				}
				if call%100 == 99 {
					time.Sleep(2 * spinFor)
				}
			}
			done <- err
		}()
	}
	for range 6 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestHandOffLateness: sporadic late hand-offs leave spinning on; a run of
// them turns it off for spinPause.
func TestHandOffLateness(t *testing.T) {
	defer func() { spinOffUntil.Store(0); lateness.Store(0) }()
	spinOffUntil.Store(0)
	lateness.Store(0)
	now := time.Now().UnixNano()
	late, prompt := int64(2*lateHandOff), int64(lateHandOff/2)
	for range 20 {
		handOffTook(late, now)
		for range 8 {
			handOffTook(prompt, now)
		}
	}
	if !spinAllowed() {
		t.Fatal("one late hand-off in nine turned spinning off")
	}
	for range 3 {
		handOffTook(late, now)
	}
	if spinAllowed() {
		t.Fatal("three late hand-offs in a row left spinning on")
	}
	if until := spinOffUntil.Load(); until != now+int64(spinPause) {
		t.Fatalf("spinning off until %d, want %d", until, now+int64(spinPause))
	}
}

// TestParallelOneProcessor: with GOMAXPROCS 1 nothing spins (a spinning
// goroutine would hold the only processor), and every worker index still
// runs once per call.
func TestParallelOneProcessor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for call := range 200 {
		task := &countTask{hits: new(atomic.Int64)}
		Parallel(3, task)
		if got := task.hits.Load(); got != 3 {
			t.Fatalf("call %d: %d runs, want 3", call, got)
		}
	}
}
