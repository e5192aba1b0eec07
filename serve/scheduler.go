package serve

import (
	"context"
	"sync"
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
// same), so for sparse deltas a switch is far cheaper than a forward
// pass; every pass computes with exactly the weights `dstune apply`
// writes.
type Scheduler struct {
	mu       sync.Mutex
	active   *Patch
	running  int
	queue    []*ticket
	saved    []byte
	switches int64
}

type ticket struct {
	patch    *Patch
	admitted chan struct{}
}

// Run calls step with p applied. It returns ctx's error without calling
// step when ctx ends while it waits.
func (s *Scheduler) Run(ctx context.Context, p *Patch, step func() error) error {
	if err := s.acquire(ctx, p); err != nil {
		return err
	}
	defer s.release()
	return step()
}

// Switches counts the delta switches so far.
func (s *Scheduler) Switches() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.switches
}

func (s *Scheduler) acquire(ctx context.Context, p *Patch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if len(s.queue) == 0 && (s.active == p || s.running == 0) {
		s.switchTo(p)
		s.running++
		s.mu.Unlock()
		return nil
	}
	t := &ticket{patch: p, admitted: make(chan struct{})}
	s.queue = append(s.queue, t)
	s.mu.Unlock()
	select {
	case <-t.admitted:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.queue {
		if q == t {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return ctx.Err()
		}
	}
	// Admitted while giving up: hand the slot back.
	s.running--
	s.admitNext()
	return ctx.Err()
}

func (s *Scheduler) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	s.admitNext()
}

// admitNext switches to the delta of the first waiting pass once nothing
// runs, and admits every waiting pass of that delta.
func (s *Scheduler) admitNext() {
	if s.running > 0 || len(s.queue) == 0 {
		return
	}
	p := s.queue[0].patch
	s.switchTo(p)
	rest := s.queue[:0]
	for _, t := range s.queue {
		if t.patch == p {
			s.running++
			close(t.admitted)
		} else {
			rest = append(rest, t)
		}
	}
	clear(s.queue[len(rest):])
	s.queue = rest
}

// switchTo restores the applied delta and applies p; nothing runs.
func (s *Scheduler) switchTo(p *Patch) {
	if s.active == p {
		return
	}
	if s.active != nil {
		s.active.Restore(s.saved)
	}
	if p != nil {
		if n := p.savedBytes(); cap(s.saved) < n {
			s.saved = make([]byte, n)
		} else {
			s.saved = s.saved[:n]
		}
		p.Apply(s.saved)
	}
	s.active = p
	s.switches++
}
