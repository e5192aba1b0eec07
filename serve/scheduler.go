package serve

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Scheduler runs forward passes with a delta written into the base
// model's parameters, one delta at a time: passes of the delta that is
// applied run together (concurrently, each on its own executable); a pass
// for another delta waits until they are done, then the applied delta is
// restored and the next one written. Waiting passes are served in arrival
// order, each switch admitting every waiting pass of the new delta, so
// requests of one delta are batched and none starves. A nil patch is the
// base model.
//
// Writing a delta costs a copy of its entries (and restoring it the
// same): for sparse deltas far less than a forward pass, but entries
// scattered over a large model each miss the cache. So that switching
// every pass does not add up, a Lease lets a request's later passes
// follow its first without queueing while its delta has held the weights
// for less than YieldFactor times the last switch's time (and MinHold);
// then the weights go to the delta waiting longest. Switching thus costs at most
// about 1/YieldFactor of the time spent computing. A lease never holds
// the weights while no pass runs beyond that time (a client that stops
// reading delays nobody). Every pass computes with exactly the weights
// `dstune apply` writes.
type Scheduler struct {
	mu      sync.Mutex
	active  *Patch
	epoch   int64 // counts switches; a lease's claim holds within one epoch
	running int   // passes in progress
	holders int   // leases of this epoch not yet closed
	queue   []*ticket
	saved   saved
	timer   *time.Timer // armed to switch when the active delta's time is up

	switchedAt time.Time
	switchCost time.Duration // of the last switch

	passes atomic.Int64
}

// YieldFactor bounds the time spent switching deltas: a delta keeps the
// weights for YieldFactor times the last switch's time (at least MinHold)
// before passes of its leases queue behind other deltas' passes.
const YieldFactor = 50

// MinHold is the least time a delta keeps the weights while its leases
// have passes to run: handing the weights to another request's goroutine
// costs a wake-up even when the delta is tiny.
const MinHold = 2 * time.Millisecond

// hold is how long the active delta may keep the weights; s.mu is held.
func (s *Scheduler) hold() time.Duration { return max(MinHold, YieldFactor*s.switchCost) }

type ticket struct {
	patch    *Patch
	lease    bool
	admitted chan struct{}
}

// Run calls step with p applied. It returns ctx's error without calling
// step when ctx ends while it waits.
func (s *Scheduler) Run(ctx context.Context, p *Patch, step func() error) error {
	if _, err := s.acquire(ctx, p, false); err != nil {
		return err
	}
	defer s.release()
	return s.pass(step)
}

// pass runs step, one pass, counting it.
func (s *Scheduler) pass(step func() error) error {
	s.passes.Add(1)
	return step()
}

// Passes counts the passes run so far.
func (s *Scheduler) Passes() int64 { return s.passes.Load() }

// Switches counts the delta switches so far.
func (s *Scheduler) Switches() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Lease runs the passes of one request with a delta applied.
type Lease struct {
	s     *Scheduler
	p     *Patch
	epoch int64 // the epoch the lease holds a claim in; -1 none
}

// Lease starts a request's lease on p; Close it when the request ends.
func (s *Scheduler) Lease(p *Patch) *Lease { return &Lease{s: s, p: p, epoch: -1} }

// Run calls step with the lease's delta applied.
func (l *Lease) Run(ctx context.Context, step func() error) error {
	s := l.s
	s.mu.Lock()
	if l.epoch == s.epoch {
		if len(s.queue) == 0 || !s.timeUp() {
			s.running++
			s.mu.Unlock()
			defer s.release()
			return s.pass(step)
		}
		// Its delta has had its time and others wait: queue behind them.
		l.drop()
	}
	s.mu.Unlock()
	epoch, err := s.acquire(ctx, l.p, true)
	if err != nil {
		return err
	}
	l.epoch = epoch
	defer s.release()
	return s.pass(step)
}

// Close ends the lease's claim on the weights.
func (l *Lease) Close() {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.drop()
	l.s.admitNext()
}

// drop gives up the lease's claim; s.mu is held.
func (l *Lease) drop() {
	if l.epoch == l.s.epoch {
		l.s.holders--
	}
	l.epoch = -1
}

// timeUp reports whether the active delta has held the weights for its
// share; s.mu is held.
func (s *Scheduler) timeUp() bool {
	return time.Since(s.switchedAt) >= s.hold()
}

// acquire waits until p is applied and a pass may run; with lease, the
// pass's lease holds a claim in the returned epoch.
func (s *Scheduler) acquire(ctx context.Context, p *Patch, lease bool) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	if len(s.queue) == 0 && (s.active == p || s.running == 0 && s.holders == 0) {
		s.switchTo(p)
		s.running++
		if lease {
			s.holders++
		}
		epoch := s.epoch
		s.mu.Unlock()
		return epoch, nil
	}
	t := &ticket{patch: p, lease: lease, admitted: make(chan struct{})}
	s.queue = append(s.queue, t)
	s.admitNext() // nothing may be running
	s.mu.Unlock()
	select {
	case <-t.admitted:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.epoch, nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.queue {
		if q == t {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return 0, ctx.Err()
		}
	}
	// Admitted while giving up: hand the pass and the claim back.
	s.running--
	if lease {
		s.holders--
	}
	s.admitNext()
	return 0, ctx.Err()
}

func (s *Scheduler) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	s.admitNext()
}

// admitNext switches to the delta of the first waiting pass once no pass
// runs and the leases of the active delta have closed or had their time,
// and admits every waiting pass of that delta. While leases still have
// time it arms a timer for when it is up. s.mu is held.
func (s *Scheduler) admitNext() {
	if s.running > 0 || len(s.queue) == 0 {
		return
	}
	if s.holders > 0 && s.queue[0].patch != s.active {
		if !s.timeUp() {
			if s.timer == nil {
				wait := s.hold() - time.Since(s.switchedAt)
				s.timer = time.AfterFunc(wait, func() {
					s.mu.Lock()
					defer s.mu.Unlock()
					s.timer = nil
					s.admitNext()
				})
			}
			return
		}
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	p := s.queue[0].patch
	if p != s.active {
		s.switchTo(p)
		s.holders = 0 // the claims of the old epoch lapse
	}
	rest := s.queue[:0]
	for _, t := range s.queue {
		if t.patch != p {
			rest = append(rest, t)
			continue
		}
		s.running++
		if t.lease {
			s.holders++
		}
		close(t.admitted)
	}
	clear(s.queue[len(rest):])
	s.queue = rest
}

// switchTo restores the applied delta and applies p; nothing runs.
func (s *Scheduler) switchTo(p *Patch) {
	if s.active == p {
		return
	}
	start := time.Now()
	if s.active != nil {
		s.active.Restore(&s.saved)
	}
	if p != nil {
		p.Apply(&s.saved)
	}
	s.active = p
	s.epoch++
	s.switchedAt = time.Now()
	s.switchCost = s.switchedAt.Sub(start)
}
