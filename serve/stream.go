package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// eventStream answers a request with server-sent events, as both
// completion routes stream: a chunk of one choice at a time as the
// completions progress (their chunks interleave), then each choice's
// finish, then — when the request asks for the usage — a chunk of no
// choices holding it, then [DONE]. With the usage asked for every other
// chunk has "usage": null, without it none has a usage (OpenAI's streams
// do both). The request's seed comes in the last chunk. C is the
// choices' type.
type eventStream[C any] struct {
	w       http.ResponseWriter
	flusher http.Flusher
	rq      *request
	head    answer[C] // every chunk's fields but its choices

	mu      sync.Mutex // the completions' hooks and the final writes share w
	started bool
}

func newEventStream[C any](w http.ResponseWriter, rq *request, id, object string, created int64) *eventStream[C] {
	e := &eventStream[C]{w: w, rq: rq, head: answer[C]{ID: id, Object: object, Created: created, Model: rq.model}}
	e.flusher, _ = w.(http.Flusher)
	if rq.includeUsage {
		e.head.Usage = usageField{null: true}
	}
	return e
}

// send writes a chunk of choice c.
func (e *eventStream[C]) send(c C) error {
	a := e.head
	a.Choices = []C{c}
	return e.write(a)
}

// write writes an event of v's JSON.
func (e *eventStream[C]) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return e.event(b)
}

// event writes an event of data, the answer's header before the first.
func (e *eventStream[C]) event(data []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started {
		e.w.Header().Set("Content-Type", "text/event-stream")
		e.w.Header().Set("Cache-Control", "no-cache")
		e.w.WriteHeader(http.StatusOK)
		e.started = true
	}
	if _, err := fmt.Fprintf(e.w, "data: %s\n\n", data); err != nil {
		return err
	}
	if e.flusher != nil {
		e.flusher.Flush()
	}
	return nil
}

// run generates every choice of the stream's request, h's hooks sending their
// events as they come, then ends the stream: with the finished chunks and
// the usage, or with the error.
func (e *eventStream[C]) run(s *Server, r *http.Request, h hooks, start time.Time, finished func(*job) C) {
	jobs, err := s.generateAll(r.Context(), e.rq, h)
	if err != nil {
		e.fail(s, r, err)
		return
	}
	u, _ := s.totals(e.rq, jobs, start)
	e.finish(jobs, u, finished)
}

// finish ends the stream once every completion is done: a chunk of each
// one's finish (finished(j) its choice), the usage u when the request asks
// for it, then [DONE].
func (e *eventStream[C]) finish(jobs []*job, u usage, finished func(*job) C) {
	seed := &e.rq.gen.Sampling.Seed
	for k, j := range jobs {
		a := e.head
		a.Choices = []C{finished(j)}
		if k == len(jobs)-1 && !e.rq.includeUsage {
			a.Seed = seed
		}
		if e.write(a) != nil {
			return
		}
	}
	if e.rq.includeUsage {
		a := e.head
		a.Choices, a.Usage, a.Seed = []C{}, usageField{u: &u}, seed
		if e.write(a) != nil {
			return
		}
	}
	e.event([]byte("[DONE]"))
}

// fail answers the stream's error: an ordinary error answer before its
// first event, else a last event holding the error (499 in the metrics
// when the client went away).
func (e *eventStream[C]) fail(s *Server, r *http.Request, err error) {
	e.mu.Lock()
	started := e.started
	e.mu.Unlock()
	if !started {
		s.fail(e.w, r, e.rq.model, err)
		return
	}
	he := classify(err)
	if r.Context().Err() != nil {
		he = &httpError{499, "client_closed", "the client went away"}
	}
	s.metrics.request(e.rq.model, he.status)
	e.write(map[string]apiError{"error": {Message: he.msg, Type: he.kind}})
}
