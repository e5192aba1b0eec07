package serve

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/jsontext"
)

// Config sets up a Server.
type Config struct {
	Base    *Base
	Decoder *generate.Decoder
	// Tokenizer, when set, lets prompts be text and completions carry
	// text; without one prompts are token ids.
	Tokenizer generate.Tokenizer
	// DeltaDir holds the deltas (NAME.safetensors) served as model NAME.
	DeltaDir string
	// StopTokens end every completion (an end-of-sequence id).
	StopTokens []int64
	// MaxInFlight bounds the requests being served; more are answered
	// 429 (0: 256).
	MaxInFlight int
	// MaxBodyBytes bounds a request body (0: 1 MiB).
	MaxBodyBytes int64
	// BodyTimeout bounds the time a request's body may take to arrive
	// (0: 30 s); a request takes one of MaxInFlight only once it has.
	BodyTimeout time.Duration
	// ReceiveWait bounds how long a request waits for a place to receive
	// its body when all are taken (0: BodyTimeout, by when each body
	// holding one has arrived or been cut off).
	ReceiveWait time.Duration
	// DeltaCacheBytes bounds the memory of the loaded deltas; the least
	// recently used go first (0: the base model's parameters' bytes, at
	// least 256 MiB).
	DeltaCacheBytes int64
	// Chat, when set, lets the server answer chat completions;
	// ChatMissing says why it is not (the answer to a chat request).
	Chat        *Chat
	ChatMissing string
	// Log receives one line per failed request, and a warning about each
	// file of DeltaDir that looks like a delta but is not served (nil:
	// discarded).
	Log *log.Logger
	// APIKey, when set, is required of every request to the API's routes
	// (/v1/...) as "Authorization: Bearer KEY", as OpenAI's clients send
	// it; others are answered 401. /healthz and /metrics stay open. It
	// must not start or end with white space (a request's key is read
	// without).
	APIKey string
	// CORSOrigins are the origins whose pages a browser lets call the
	// server ("*": any): their requests are answered with
	// Access-Control-Allow-Origin, and their preflight requests
	// (OPTIONS) with the methods and headers the API takes.
	CORSOrigins []string
}

// Server serves completions of a base model and its deltas.
type Server struct {
	cfg      Config
	deltas   *deltaStore
	sched    Scheduler
	inFlight chan struct{}
	// receiving bounds the bodies being read at once (each up to
	// MaxBodyBytes, for up to BodyTimeout): bodiesPerSlot a place.
	receiving chan struct{}
	// stopping is closed by Stop: requests waiting for a place give up.
	stopping chan struct{}
	stopOnce sync.Once
	started  time.Time
	nextID   atomic.Int64
	metrics  metrics
}

// New makes a server; Handler serves its API.
func New(cfg Config) *Server {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.ReceiveWait <= 0 {
		cfg.ReceiveWait = cfg.BodyTimeout
	}
	if cfg.Log == nil {
		cfg.Log = log.New(io.Discard, "", 0)
	}
	deltas := newDeltaStore(cfg.DeltaDir, cfg.Base)
	if cfg.DeltaCacheBytes > 0 {
		deltas.maxBytes = cfg.DeltaCacheBytes
	}
	deltas.warn = cfg.Log.Printf
	return &Server{
		cfg:       cfg,
		deltas:    deltas,
		inFlight:  make(chan struct{}, cfg.MaxInFlight),
		receiving: make(chan struct{}, bodiesPerSlot*cfg.MaxInFlight),
		stopping:  make(chan struct{}),
		started:   time.Now(),
		metrics:   metrics{byModel: map[string]*modelCounters{}},
	}
}

// Stop makes requests still waiting for a place to receive their body
// give up (503), so that a graceful shutdown need not wait for them;
// requests being received or served go on.
func (s *Server) Stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// receivingBodies is the number of request bodies being received.
func (s *Server) receivingBodies() int { return len(s.receiving) }

// InFlight is the number of completion requests being served.
func (s *Server) InFlight() int64 { return s.metrics.inFlight.Load() }

// Handler routes the API. A route it does not have, or a method a route
// does not take, is answered as every other error is, in the API's JSON
// shape: OpenAI's clients read the error from it.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	routes := []struct {
		method, path string
		h            http.HandlerFunc
	}{
		{"POST", "/v1/completions", s.completions},
		{"POST", "/v1/chat/completions", s.chatCompletions},
		{"GET", "/v1/models", s.models},
		{"GET", "/v1/models/{model}", s.model},
		{"GET", "/healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "ok\n")
		}},
		{"GET", "/metrics", s.serveMetrics},
	}
	var list []string
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.path, rt.h)
		allow := rt.method
		if rt.method == "GET" {
			allow += ", HEAD" // a GET route answers HEAD too
		}
		mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, &httpError{http.StatusMethodNotAllowed, "invalid_request_error", fmt.Sprintf("%s %s: this route takes %s", r.Method, r.URL.Path, allow)})
		})
		list = append(list, rt.method+" "+rt.path)
	}
	routeList := strings.Join(list, ", ")
	// Neither is a completion request: the metrics do not count them.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &httpError{http.StatusNotFound, "not_found_error", fmt.Sprintf("no route %s %s: this server answers %s", r.Method, r.URL.Path, routeList)})
	})
	if s.cfg.APIKey == "" && len(s.cfg.CORSOrigins) == 0 {
		return mux
	}
	return s.guard(mux)
}

// guard answers what comes before the routes: a browser's cross-origin
// requests (Config.CORSOrigins) and the API key (Config.APIKey). A
// preflight request carries no credentials, so it is answered before
// the key is asked for; the rest reach next only with the key.
func (s *Server) guard(next http.Handler) http.Handler {
	keySum := sha256.Sum256([]byte(s.cfg.APIKey))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.cfg.CORSOrigins) > 0 {
			// Answers differ by origin: a cache must keep them apart.
			w.Header().Add("Vary", "Origin")
		}
		if origin := r.Header.Get("Origin"); origin != "" && s.allowsOrigin(origin) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST")
				// OpenAI's JavaScript client sends headers of its own
				// (x-stainless-...): whatever the page asks for may come.
				if asked := r.Header.Get("Access-Control-Request-Headers"); asked != "" {
					h.Set("Access-Control-Allow-Headers", asked)
				}
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if s.cfg.APIKey != "" && strings.HasPrefix(r.URL.Path, "/v1/") {
			// The scheme is case-insensitive (RFC 7235). The key is
			// compared as a hash, in constant time: the answer's timing
			// tells nothing of it, its length included.
			scheme, got, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
			found := strings.EqualFold(scheme, "Bearer")
			gotSum := sha256.Sum256([]byte(strings.TrimSpace(got)))
			if !found || subtle.ConstantTimeCompare(gotSum[:], keySum[:]) != 1 {
				msg := "this server needs an API key: send it as the header Authorization: Bearer KEY"
				if found {
					msg = "the API key given (Authorization: Bearer ...) is not this server's"
				}
				s.cfg.Log.Printf("%s %q: %d %s", r.Method, r.URL.Path, http.StatusUnauthorized, msg)
				w.Header().Set("WWW-Authenticate", `Bearer realm="dstune"`)
				// OpenAI's answer to a wrong key, code included.
				writeJSON(w, http.StatusUnauthorized, map[string]apiError{"error": {Message: msg, Type: "invalid_request_error", Code: "invalid_api_key"}})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// allowsOrigin reports whether a page of origin may call the server.
func (s *Server) allowsOrigin(origin string) bool {
	for _, o := range s.cfg.CORSOrigins {
		if o == "*" || o == origin {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- API types

// completionRequest is the body of POST /v1/completions. Integer fields
// are read from their JSON (an integral number such as 3.0 is taken as
// OpenAI's server takes it).
type completionRequest struct {
	Model     string          `json:"model"`
	Prompt    json.RawMessage `json:"prompt"`
	MaxTokens json.RawMessage `json:"max_tokens"`
	// maxTokensField names MaxTokens in errors: a chat request's may be
	// max_completion_tokens ("" is max_tokens).
	maxTokensField string
	Temperature    *float64        `json:"temperature"`
	TopP           *float64        `json:"top_p"`
	TopK           json.RawMessage `json:"top_k"`
	// Seed is an integer, negative ones included; absent or null, each
	// request draws its own.
	Seed          json.RawMessage `json:"seed"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	Stop          json.RawMessage `json:"stop"`
	N             json.RawMessage `json:"n"`
	BestOf        json.RawMessage `json:"best_of"`
	Echo          bool            `json:"echo"`
	Logprobs      json.RawMessage `json:"logprobs"`
	// Suffix (text after the completion, for insertion) is refused rather
	// than ignored: the model completes left to right only.
	Suffix           json.RawMessage `json:"suffix"`
	LogitBias        json.RawMessage `json:"logit_bias"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
}

// Bounds of the stop strings a request may give.
const (
	maxStops     = 16
	maxStopBytes = 256
)

type choice struct {
	Index        int             `json:"index"`
	Text         string          `json:"text"`
	Tokens       []int64         `json:"tokens"`
	Logprobs     *choiceLogprobs `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
	// Seed (dstune's addition, in requests for several completions) is
	// the seed this choice sampled with: sent alone with it, its prompt
	// gives this completion.
	Seed *uint64 `json:"seed,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// answer is a completion's or chat completion's answer, or a chunk of its
// stream; C is its choices' type.
type answer[C any] struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []C        `json:"choices"`
	Usage   usageField `json:"usage,omitzero"`
	// Seed (dstune's addition, in a whole answer and a stream's last
	// chunk) is the sampling seed the request used, drawn or given: sent
	// again, it gives the same completions.
	Seed *uint64 `json:"seed,omitempty"`
}

type completion = answer[choice]

// usageField is an answer's usage: absent (the zero value), null, or the
// usage. A stream has the usage only when the request asks for it
// (stream_options.include_usage), as OpenAI's streams do: then in a last
// chunk of its own, and null in every other.
type usageField struct {
	u    *usage
	null bool
}

func (f usageField) IsZero() bool                 { return f.u == nil && !f.null }
func (f usageField) MarshalJSON() ([]byte, error) { return json.Marshal(f.u) }

// streamOptions are a streamed request's options.
type streamOptions struct {
	// IncludeUsage adds a last chunk of no choices holding the usage.
	IncludeUsage bool `json:"include_usage"`
}

type apiError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
}

// unknownModel labels the metrics of requests naming no known model.
const unknownModel = "(unknown)"

// DefaultMaxTokens is max_tokens when a request does not say.
const DefaultMaxTokens = 16

// ---------------------------------------------------------------- errors

// httpError is an error with the status and type the API answers.
type httpError struct {
	status int
	kind   string // invalid_request_error, not_found_error, ...
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) *httpError {
	return &httpError{http.StatusBadRequest, "invalid_request_error", fmt.Sprintf(format, args...)}
}

// classify maps an error to the API's status and type.
func classify(err error) *httpError {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, ErrUnknownDelta):
		return &httpError{http.StatusNotFound, "not_found_error", err.Error()}
	case errors.Is(err, ErrBaseMismatch):
		return &httpError{http.StatusConflict, "base_mismatch", err.Error()}
	case errors.Is(err, ErrDeltaUnusable):
		return &httpError{http.StatusUnprocessableEntity, "delta_unusable", err.Error()}
	case errors.Is(err, generate.ErrPromptTooLong), errors.Is(err, generate.ErrBadRequest):
		return &httpError{http.StatusBadRequest, "invalid_request_error", err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &httpError{http.StatusGatewayTimeout, "timeout", err.Error()}
	case errors.Is(err, context.Canceled):
		// The request's context ends when its client goes away.
		return &httpError{499, "client_closed", "the client went away"}
	}
	return &httpError{http.StatusInternalServerError, "server_error", err.Error()}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, model string, err error) {
	he := classify(err)
	if he.status == http.StatusNotFound || !s.knownModel(model) {
		model = unknownModel // clients choose names: count them under one label
	}
	s.metrics.request(model, he.status)
	s.answer(w, r, model, err, he)
}

// answer logs a failed request and answers it, without counting it (a
// request of another route than completions).
func (s *Server) answer(w http.ResponseWriter, r *http.Request, model string, err error, he *httpError) {
	if he == nil {
		he = classify(err)
	}
	// The client is told of delta files by their names in the delta
	// directory; the server's log has where it keeps them.
	logged := he.msg
	var rn *renamedError
	if errors.As(err, &rn) {
		logged = strings.Replace(logged, rn.msg, rn.err.Error(), 1)
	}
	s.cfg.Log.Printf("%s %s model %q: %d %s", r.Method, r.URL.Path, model, he.status, logged)
	writeError(w, he)
}

// writeError answers he in the API's error shape.
func writeError(w http.ResponseWriter, he *httpError) {
	switch he.status {
	case http.StatusConflict:
		// OpenAI's clients retry a 409 unless told not to: a delta of
		// another base model stays one.
		w.Header().Set("X-Should-Retry", "false")
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, he.status, map[string]apiError{"error": {Message: he.msg, Type: he.kind}})
}

// knownModel reports whether name is the base model or has a delta file
// (served or not): the metrics count requests by such names only.
func (s *Server) knownModel(name string) bool {
	if name == BaseName {
		return true
	}
	if !validName(name) || s.cfg.DeltaDir == "" {
		return false
	}
	_, err := os.Lstat(filepath.Join(s.cfg.DeltaDir, name+DeltaExt))
	return err == nil
}

// ---------------------------------------------------------------- completions

// bodiesPerSlot is how many request bodies may be in arrival for each of
// MaxInFlight: enough that slow senders do not keep others out, few
// enough to bound the memory they hold (4 × 256 × 1 MiB at most by
// default).
const bodiesPerSlot = 4

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	created := time.Now().Unix() // of every chunk of the answer
	var req completionRequest
	release, ok := s.receive(w, r, &req, func() string { return req.Model })
	if !ok {
		return
	}
	defer release()

	rq, err := s.prepare(&req)
	if err != nil {
		s.fail(w, r, req.Model, err)
		return
	}
	id := fmt.Sprintf("cmpl-%d-%d", s.started.Unix(), s.nextID.Add(1))
	if rq.stream {
		s.stream(w, r, rq, id, created)
		return
	}
	s.answerAll(w, r, rq, id, created)
}

// receive reads a request's body into req (model tells the model it
// names, once read) and takes one of MaxInFlight for it, counted in the
// in-flight metric, which the caller gives back with release; on failure
// it answers the request and returns ok false.
func (s *Server) receive(w http.ResponseWriter, r *http.Request, req any, model func() string) (release func(), ok bool) {
	if r.ContentLength > s.cfg.MaxBodyBytes {
		// Refused before waiting for a place to receive it, or reading
		// it: a client sending "Expect: 100-continue" is not asked for
		// it, and none is told to retry what can never be served.
		w.Header().Set("Connection", "close")
		s.fail(w, r, "", &httpError{http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("the request body of %d bytes exceeds %d bytes", r.ContentLength, s.cfg.MaxBodyBytes)})
		return nil, false
	}
	// The body first, within BodyTimeout, and only then a slot: a client
	// that sends headers and then trickles (or withholds) its body must
	// not hold one of MaxInFlight. While every place to receive a body is
	// taken the request waits for one, up to ReceiveWait, so that stalling
	// clients delay others rather than turn them away.
	wait := time.NewTimer(s.cfg.ReceiveWait)
	select {
	case s.receiving <- struct{}{}:
		wait.Stop()
	case <-wait.C:
		w.Header().Set("Connection", "close")
		s.fail(w, r, "", &httpError{http.StatusTooManyRequests, "rate_limit_error", fmt.Sprintf("the server was receiving %d requests for all of %v", cap(s.receiving), s.cfg.ReceiveWait)})
		return nil, false
	case <-r.Context().Done():
		wait.Stop()
		return nil, false
	case <-s.stopping:
		wait.Stop()
		w.Header().Set("Connection", "close")
		s.fail(w, r, "", &httpError{http.StatusServiceUnavailable, "server_error", "the server is shutting down"})
		return nil, false
	}
	read := s.readRequest(w, r, req, model)
	<-s.receiving
	if !read {
		return nil, false
	}
	select {
	case s.inFlight <- struct{}{}:
		s.metrics.inFlight.Add(1)
		return func() {
			s.metrics.inFlight.Add(-1)
			<-s.inFlight
		}, true
	default:
		s.fail(w, r, model(), &httpError{http.StatusTooManyRequests, "rate_limit_error", fmt.Sprintf("the server is serving %d requests already", cap(s.inFlight))})
		return nil, false
	}
}

// readRequest decodes the body of a completion request into req, allowing
// it BodyTimeout to arrive; on failure it answers the request and returns
// false.
func (s *Server) readRequest(w http.ResponseWriter, r *http.Request, req any, model func() string) bool {
	rc := http.NewResponseController(w)
	// Not every ResponseWriter has deadlines (a test recorder does not):
	// then the body is read without one.
	deadline := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) == nil
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	err := dec.Decode(req)
	if err == nil && dec.More() {
		err = badRequest("the body holds more than one JSON value")
	}
	if err == nil {
		if deadline {
			rc.SetReadDeadline(time.Time{})
		}
		return true
	}
	// The deadline stays: before answering, the server reads what is left
	// of an unread body, and would wait for a stalled client without one.
	// The connection is closed after the answer.
	w.Header().Set("Connection", "close")
	var tooBig *http.MaxBytesError
	var he *httpError
	switch {
	case errors.As(err, &he):
		s.fail(w, r, model(), err)
	case errors.As(err, &tooBig):
		s.fail(w, r, "", &httpError{http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("the request body exceeds %d bytes", tooBig.Limit)})
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.fail(w, r, "", &httpError{http.StatusRequestTimeout, "invalid_request_error", fmt.Sprintf("the request body did not arrive within %v", s.cfg.BodyTimeout)})
	default:
		what := "completion"
		if strings.Contains(r.URL.Path, "/chat/") {
			what = "chat completion"
		}
		s.fail(w, r, "", badRequest("the body is not a %s request in JSON: %v", what, err))
	}
	return false
}

func nonNil(t []int64) []int64 {
	if t == nil {
		return []int64{}
	}
	return t
}

// truncateJSON is raw, shortened to quote in a message.
func truncateJSON(raw json.RawMessage) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "…"
	}
	return string(raw)
}

func stopStrings(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if err := checkJSONText("stop", raw); err != nil {
		return nil, err
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if len(one) > maxStopBytes {
			return nil, badRequest("a stop string of %d bytes: at most %d", len(one), maxStopBytes)
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, badRequest("stop must be a string or an array of strings")
	}
	if len(many) > maxStops {
		return nil, badRequest("%d stop strings: at most %d", len(many), maxStops)
	}
	for _, s := range many {
		if len(s) > maxStopBytes {
			return nil, badRequest("a stop string of %d bytes: at most %d", len(s), maxStopBytes)
		}
	}
	return many, nil
}

// checkJSONText refuses, in the raw JSON of a request field, what
// encoding/json would silently decode as U+FFFD: bytes that are not
// UTF-8, and a \uXXXX escape of half a UTF-16 surrogate pair without the
// other half (it stands for no character).
func checkJSONText(field string, raw json.RawMessage) error {
	if at := jsontext.InvalidUTF8(raw); at >= 0 {
		return badRequest("%s: not valid UTF-8 at byte %d of its JSON (request text must be UTF-8)", field, at+1)
	}
	if i := jsontext.LoneSurrogate(raw); i >= 0 {
		return badRequest("%s: lone surrogate escape %s at byte %d of its JSON: half of a UTF-16 pair stands for no character (request text must be valid Unicode)", field, raw[i:i+6], i+1)
	}
	return nil
}

// ---------------------------------------------------------------- models

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// dstune's additions: for deltas, whether it is loaded, the memory it
	// holds, its changed entries and file size; the error of the last
	// load when it failed.
	Loaded    *bool  `json:"loaded,omitempty"`
	Bytes     int64  `json:"bytes,omitempty"`
	Entries   int64  `json:"entries,omitempty"`
	FileBytes int64  `json:"file_bytes,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	list, err := s.modelList()
	if err != nil {
		s.answer(w, r, "", err, nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

// model answers GET /v1/models/{model}: the model's entry of the list.
func (s *Server) model(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	list, err := s.modelList()
	if err != nil {
		s.answer(w, r, "", err, nil)
		return
	}
	for _, e := range list {
		if e.ID == name {
			writeJSON(w, http.StatusOK, e)
			return
		}
	}
	s.answer(w, r, name, fmt.Errorf("%w: %q (GET /v1/models lists the models served)", ErrUnknownDelta, name), nil)
}

func (s *Server) modelList() ([]modelEntry, error) {
	list := []modelEntry{{ID: BaseName, Object: "model", Created: s.started.Unix(), OwnedBy: "dstune"}}
	deltas, err := s.deltas.list()
	if err != nil {
		return nil, err
	}
	for _, d := range deltas {
		loaded := d.Loaded
		e := modelEntry{ID: d.Name, Object: "model", Created: s.started.Unix(), OwnedBy: "dstune",
			Loaded: &loaded, Bytes: d.Bytes, Entries: d.Entries, FileBytes: d.File}
		if d.Err != nil {
			e.Error = d.Err.Error()
		}
		list = append(list, e)
	}
	return list, nil
}
