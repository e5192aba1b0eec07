package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dstune/dstune/generate"
)

// Bounds of what one completion request may ask for.
const (
	// MaxChoices bounds the completions a request generates: its prompts
	// times best_of (or n).
	MaxChoices = 128
	// MaxLogprobs bounds logprobs, the most likely tokens listed at each
	// position (OpenAI's bound).
	MaxLogprobs = 5
	// maxTemperature is OpenAI's bound of temperature.
	maxTemperature = 2
	// maxBias and maxPenalty bound logit_bias and the penalties.
	maxBias    = 100
	maxPenalty = 2
)

// request is a completion request, read and checked.
type request struct {
	model   string
	prompts [][]int64
	// n completions are answered for each prompt, the best of bestOf
	// generated (by their mean logprob) when bestOf > n.
	n, bestOf int
	echo      bool
	// logprobs is the most likely tokens to list at each position; -1:
	// no logprobs.
	logprobs int
	stream   bool
	// includeUsage: the stream ends with a chunk of the usage
	// (stream_options.include_usage).
	includeUsage bool
	// gen holds the options every completion shares; its seed is the
	// request's, from which each completion's is derived (choiceSeed).
	gen   generate.Request
	patch *Patch
}

// choiceSeed is the seed of the j-th completion of each prompt: the
// request's for the first, the top 53 bits of SplitMix64 of seed +
// j·0x9e3779b97f4a7c15 for the others, so that they differ, each is
// reproducible, and a client reading JSON numbers as doubles (JavaScript)
// reads them exactly.
func choiceSeed(seed uint64, j int) uint64 {
	if j == 0 {
		return seed
	}
	z := seed + uint64(j)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return (z ^ z>>31) >> (64 - seedBits)
}

// seedBits bounds the seeds the server makes (drawn, or derived for a
// choice): below 2^53, a double holds them exactly.
const seedBits = 53

// prepare checks a request and finds its delta.
func (s *Server) prepare(req *completionRequest) (*request, error) {
	if req.Model == "" {
		return nil, badRequest("model is required: %q for the base model or a delta's name (GET /v1/models lists them)", BaseName)
	}
	if len(req.Suffix) > 0 && string(req.Suffix) != "null" {
		return nil, badRequest("suffix is not supported: the model completes text left to right only")
	}
	if req.StreamOptions != nil && !req.Stream {
		return nil, badRequest("stream_options: only with stream true")
	}
	rq := &request{model: req.Model, echo: req.Echo, stream: req.Stream, logprobs: -1,
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	prompts, err := s.prompts(req.Prompt)
	if err != nil {
		return nil, err
	}
	rq.prompts = prompts
	stop, err := stopStrings(req.Stop)
	if err != nil {
		return nil, err
	}
	seed, err := requestSeed(req.Seed)
	if err != nil {
		return nil, err
	}
	if err := rq.readCounts(req); err != nil {
		return nil, err
	}
	if err := rq.readLogprobs(req.Logprobs); err != nil {
		return nil, err
	}
	gen := generate.Request{MaxTokens: DefaultMaxTokens, Stop: stop, StopTokens: s.cfg.StopTokens,
		Sampling: generate.Sampling{Temperature: 1, TopP: 1, Seed: seed}}
	if err := readSampling(req, &gen.Sampling, s.cfg.Decoder.Vocab()); err != nil {
		return nil, err
	}
	field := "max_tokens"
	if req.maxTokensField != "" {
		field = req.maxTokensField
	}
	maxTokens, given, err := integer(field, req.MaxTokens)
	switch {
	case err != nil:
		return nil, err
	case given && maxTokens < 0, given && maxTokens == 0 && !rq.echo:
		return nil, badRequest("%s %d: want at least 1 (0 only with echo, to score the prompt)", field, maxTokens)
	case given:
		gen.MaxTokens = int(min(maxTokens, math.MaxInt32))
	}
	ctxLen := s.cfg.Decoder.Context()
	for i, prompt := range rq.prompts {
		gen.Prompt = prompt
		which := ""
		if len(rq.prompts) > 1 {
			which = fmt.Sprintf("prompt %d: ", i)
		}
		if n := gen.MaxTokens; given && n > ctxLen-len(prompt)+1 && len(prompt) <= ctxLen {
			return nil, badRequest("%s%s %d: the prompt's %d tokens leave room for at most %d in the context of %d positions", which, field, n, len(prompt), ctxLen-len(prompt)+1, ctxLen)
		}
		if err := gen.Check(s.cfg.Decoder, s.cfg.Tokenizer); err != nil {
			if which != "" {
				err = fmt.Errorf("%s%w", which, err)
			}
			return nil, err
		}
	}
	gen.Prompt = nil
	rq.gen = gen
	if req.Model == BaseName {
		return rq, nil
	}
	rq.patch, err = s.deltas.get(req.Model)
	return rq, err
}

// readCounts reads n and best_of and bounds the completions.
func (rq *request) readCounts(req *completionRequest) error {
	n, hasN, err := integer("n", req.N)
	if err != nil {
		return err
	}
	bestOf, hasBestOf, err := integer("best_of", req.BestOf)
	if err != nil {
		return err
	}
	if !hasN {
		n = 1
	}
	if !hasBestOf {
		bestOf = n
	}
	switch {
	case n < 1:
		return badRequest("n %d: want at least 1 completion per prompt", n)
	case bestOf < n:
		return badRequest("best_of %d is less than n %d: best_of completions are generated and the n best answered", bestOf, n)
	case bestOf > MaxChoices || int64(len(rq.prompts))*bestOf > MaxChoices:
		field := "n"
		if bestOf > n {
			field = "best_of"
		}
		return badRequest("%d prompts × %s %d: at most %d completions a request", len(rq.prompts), field, bestOf, MaxChoices)
	case bestOf > n && rq.stream:
		return badRequest("best_of %d with n %d cannot stream: the best are known only once all are generated", bestOf, n)
	}
	rq.n, rq.bestOf = int(n), int(bestOf)
	return nil
}

// readLogprobs reads logprobs: an integer in [0, MaxLogprobs], or null
// or false for none.
func (rq *request) readLogprobs(raw json.RawMessage) error {
	if string(raw) == "false" {
		return nil
	}
	k, given, err := integer("logprobs", raw)
	switch {
	case err != nil:
		return badRequest("logprobs %s: want an integer in [0, %d] (the most likely tokens to list at each position), or null", truncateJSON(raw), MaxLogprobs)
	case given && (k < 0 || k > MaxLogprobs):
		return badRequest("logprobs %d: want an integer in [0, %d] (the most likely tokens to list at each position), or null", k, MaxLogprobs)
	case given:
		rq.logprobs = int(k)
	}
	return nil
}

// readSampling reads the sampling options into o.
func readSampling(req *completionRequest, o *generate.Sampling, vocab int) error {
	if t := req.Temperature; t != nil {
		if !(*t >= 0 && *t <= maxTemperature) {
			return badRequest("temperature %g: want a number in [0, %d] (0 is greedy)", *t, maxTemperature)
		}
		o.Temperature = *t
	}
	if p := req.TopP; p != nil {
		if !(*p > 0 && *p <= 1) {
			return badRequest("top_p %g: want a number in (0, 1] (1 keeps every token; 0 would keep none)", *p)
		}
		o.TopP = *p
	}
	k, _, err := integer("top_k", req.TopK)
	if err != nil {
		return err
	}
	if k < 0 {
		return badRequest("top_k %d: want at least 0 (0 keeps every token)", k)
	}
	o.TopK = int(min(k, math.MaxInt32))
	for _, pen := range []struct {
		name string
		v    *float64
		dst  *float64
	}{{"presence_penalty", req.PresencePenalty, &o.PresencePenalty}, {"frequency_penalty", req.FrequencyPenalty, &o.FrequencyPenalty}} {
		if pen.v == nil {
			continue
		}
		if !(*pen.v >= -maxPenalty && *pen.v <= maxPenalty) {
			return badRequest("%s %g: want a number in [-%d, %d]", pen.name, *pen.v, maxPenalty, maxPenalty)
		}
		*pen.dst = *pen.v
	}
	if len(req.LogitBias) == 0 || string(req.LogitBias) == "null" {
		return nil
	}
	var bias map[string]float64
	if err := json.Unmarshal(req.LogitBias, &bias); err != nil {
		return badRequest("logit_bias must be an object of token ids (as strings) to numbers in [-%d, %d]", maxBias, maxBias)
	}
	for key, b := range bias {
		id, err := strconv.Atoi(key)
		switch {
		case err != nil:
			return badRequest("logit_bias[%q]: want a token id", key)
		case id < 0 || id >= vocab:
			return badRequest("logit_bias[%q]: token id %d is outside the vocabulary [0, %d)", key, id, vocab)
		case !(b >= -maxBias && b <= maxBias):
			return badRequest("logit_bias[%q] %g: want a number in [-%d, %d]", key, b, maxBias, maxBias)
		}
		if o.LogitBias == nil {
			o.LogitBias = map[int]float64{}
		}
		o.LogitBias[id] += b
	}
	return nil
}

// integer reads an integer field; absent or null, given is false. An
// integral number written as a float (3.0, 1e2) is that integer, as
// OpenAI's server takes it.
func integer(field string, raw json.RawMessage) (v int64, given bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	if i, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return i, true, nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false, badRequest("%s %s: want an integer", field, truncateJSON(raw))
	}
	if f != math.Trunc(f) || math.Abs(f) >= 1<<63 {
		return 0, false, badRequest("%s %s: want an integer", field, truncateJSON(raw))
	}
	return int64(f), true, nil
}

// prompts reads the prompt: a string (with a tokenizer) or token ids, or
// a batch of those (an array of strings or of arrays of ids).
func (s *Server) prompts(raw json.RawMessage) ([][]int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt is required: a string or an array of token ids, or an array of those")
	}
	ids, err := s.onePrompt(raw)
	if err == nil {
		return [][]int64{ids}, nil
	}
	if err != errNotAPrompt {
		return nil, err
	}
	var batch []json.RawMessage
	if json.Unmarshal(raw, &batch) != nil {
		return nil, badRequest("prompt must be a string or an array of token ids, or an array of those")
	}
	prompts := make([][]int64, len(batch))
	for i, p := range batch {
		ids, err := s.onePrompt(p)
		switch {
		case err == errNotAPrompt:
			return nil, badRequest("prompt %d of the batch must be a string or an array of token ids", i)
		case err != nil && len(batch) > 1:
			return nil, badRequest("prompt %d: %v", i, err)
		case err != nil:
			return nil, err
		}
		prompts[i] = ids
	}
	return prompts, nil
}

// errNotAPrompt: the JSON value is neither a string nor token ids.
var errNotAPrompt = errors.New("not a prompt")

// onePrompt reads a string (with a tokenizer) or token ids.
func (s *Server) onePrompt(raw json.RawMessage) ([]int64, error) {
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		if err := checkJSONText("prompt", raw); err != nil {
			return nil, err
		}
		if s.cfg.Tokenizer == nil {
			return nil, badRequest("this server has no tokenizer: send the prompt as an array of token ids")
		}
		ids, err := s.cfg.Tokenizer.Encode(text)
		if err != nil {
			return nil, badRequest("prompt: %v", err)
		}
		out := make([]int64, len(ids))
		for i, id := range ids {
			out[i] = int64(id)
		}
		return out, nil
	}
	var ids []int64
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, errNotAPrompt
	}
	return ids, nil
}

// requestSeed reads a request's seed: an integer (a negative one stands
// for the unsigned integer of its two's complement); absent or null, a
// seed drawn for the request.
func requestSeed(raw json.RawMessage) (uint64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return rand.Uint64() >> (64 - seedBits), nil
	}
	var u uint64
	if err := json.Unmarshal(raw, &u); err == nil {
		return u, nil
	}
	if i, given, err := integer("seed", raw); err == nil && given {
		return uint64(i), nil
	}
	return 0, badRequest("seed %s: want an integer", truncateJSON(raw))
}

// ---------------------------------------------------------------- generating

// job is one completion being generated: sample j of prompt i.
type job struct {
	prompt, sample int
	seed           uint64
	res            generate.Result
	// What a stream has sent of it: the sequence so far (for the names of
	// its tokens) and the characters of text.
	seq    []int64
	offset int
}

// hooks are called as the completions progress (from several goroutines,
// one per completion at a time).
type hooks struct {
	prefilled func(j *job, prompt []generate.TokenLogprobs, text string) error
	token     func(j *job, ev generate.Event) error
}

// prefill is a prompt's prefill, which its completions share: the first
// of them to start feeds the prompt (in its lease's passes; scoring it
// for echo with logprobs) while the others wait, and each goes on from a
// copy of the caches. N completions of a prompt thus cost one prefill and
// N decodes.
type prefill struct {
	once   sync.Once
	prefix *generate.Prefix
	err    error
}

// generateAll generates every completion of rq, at most as many at once
// as the decoder runs passes at once, each with its own lease on the
// request's delta. The first error ends the others and is returned.
func (s *Server) generateAll(ctx context.Context, rq *request, h hooks) ([]*job, error) {
	var jobs []*job
	for i := range rq.prompts {
		for j := range rq.bestOf {
			jobs = append(jobs, &job{prompt: i, sample: j, seed: choiceSeed(rq.gen.Sampling.Seed, j)})
		}
	}
	prefills := make([]prefill, len(rq.prompts))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	next := make(chan *job)
	for range min(len(jobs), max(1, s.cfg.Decoder.Executables())) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				if err := s.generateOne(ctx, rq, j, &prefills[j.prompt], h); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return jobs, firstErr
}

// generateOne generates completion j from its prompt's prefill.
func (s *Server) generateOne(ctx context.Context, rq *request, j *job, pre *prefill, h hooks) error {
	lease := s.sched.Lease(rq.patch)
	defer lease.Close()
	gen := rq.gen
	gen.Prompt = rq.prompts[j.prompt]
	gen.Sampling.Seed = j.seed
	gen.Schedule = lease.Run
	// Choosing the best of several needs each one's logprobs.
	gen.Logprobs = rq.logprobs >= 0 || rq.bestOf > rq.n
	gen.TopLogprobs = max(rq.logprobs, 0)
	gen.PromptLogprobs = rq.echo && rq.logprobs >= 0
	pre.once.Do(func() {
		pre.prefix, pre.err = generate.Prefill(ctx, s.cfg.Decoder, s.cfg.Tokenizer, gen, rq.bestOf)
	})
	if pre.err != nil {
		return pre.err
	}
	if h.prefilled != nil {
		gen.Prefilled = func(lp []generate.TokenLogprobs, text string) error { return h.prefilled(j, lp, text) }
	}
	emit := func(generate.Event) error { return nil }
	if h.token != nil {
		emit = func(ev generate.Event) error { return h.token(j, ev) }
	}
	var err error
	j.res, err = pre.prefix.Run(ctx, gen, emit)
	return err
}

// best orders the completions of each prompt for the answer: by sample
// when every one is answered, else the n of the highest mean logprob
// first (an empty completion last). It returns the answered ones,
// prompt-major: the k-th is choice k.
func best(rq *request, jobs []*job) []*job {
	var out []*job
	for i := range rq.prompts {
		mine := slices.Clone(jobs[i*rq.bestOf : (i+1)*rq.bestOf])
		if rq.bestOf > rq.n {
			score := func(j *job) float64 {
				if len(j.res.Logprobs) == 0 {
					return math.Inf(-1)
				}
				sum := 0.0
				for _, lp := range j.res.Logprobs {
					sum += lp.Logprob
				}
				return sum / float64(len(j.res.Logprobs))
			}
			slices.SortStableFunc(mine, func(a, b *job) int {
				sa, sb := score(a), score(b)
				switch {
				case sa > sb || !math.IsNaN(sa) && math.IsNaN(sb):
					return -1
				case sa < sb || math.IsNaN(sa) && !math.IsNaN(sb):
					return 1
				}
				return 0
			})
		}
		out = append(out, mine[:rq.n]...)
	}
	return out
}

// totals are a request's usage and times, summed over its completions.
func (s *Server) totals(rq *request, jobs []*job, start time.Time) (usage, time.Duration) {
	var u usage
	for _, p := range rq.prompts {
		u.PromptTokens += len(p)
	}
	var first time.Duration
	for _, j := range jobs {
		u.CompletionTokens += len(j.res.Tokens)
		if f := j.res.FirstToken; f > 0 && (first == 0 || f < first) {
			first = f
		}
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	s.metrics.done(rq.model, u.PromptTokens, u.CompletionTokens, first, time.Since(start))
	return u, first
}

// generateAnswered generates every completion of a request answered in one
// JSON and counts it; on an error it answers that (ok false).
func (s *Server) generateAnswered(w http.ResponseWriter, r *http.Request, rq *request) (jobs []*job, u usage, ok bool) {
	start := time.Now()
	jobs, err := s.generateAll(r.Context(), rq, hooks{})
	if err != nil {
		s.fail(w, r, rq.model, err)
		return nil, usage{}, false
	}
	u, _ = s.totals(rq, jobs, start)
	return jobs, u, true
}

// seedOf is the seed completion j's choice names: its own when the
// request generates more than one completion (sent alone with it, its
// prompt gives that completion), else none.
func (rq *request) seedOf(j *job) *uint64 {
	if len(rq.prompts)*rq.bestOf == 1 {
		return nil
	}
	return &j.seed
}

// answerAll generates every completion and answers them in one JSON.
func (s *Server) answerAll(w http.ResponseWriter, r *http.Request, rq *request, id string, created int64) {
	jobs, u, ok := s.generateAnswered(w, r, rq)
	if !ok {
		return
	}
	names := s.tokenNames()
	var choices []choice
	for k, j := range best(rq, jobs) {
		finish := j.res.FinishReason
		c := choice{Index: k, Text: j.res.Text, Tokens: nonNil(j.res.Tokens), FinishReason: &finish, Seed: rq.seedOf(j)}
		if rq.echo {
			c.Text = j.res.PromptText + c.Text
		}
		if rq.logprobs >= 0 {
			c.Logprobs = newChoiceLogprobs()
			prompt := rq.prompts[j.prompt]
			seq := append(slices.Clone(prompt), j.res.Tokens...)
			offset := 0
			if rq.echo {
				offset = c.Logprobs.addPrompt(names, prompt, j.res.PromptLogprobs, rq.logprobs)
			} else {
				offset = utf8.RuneCountInString(j.res.PromptText)
			}
			for t, lp := range j.res.Logprobs {
				offset = c.Logprobs.add(names, seq[:len(prompt)+t], lp, rq.logprobs, offset)
			}
		}
		choices = append(choices, c)
	}
	writeJSON(w, http.StatusOK, completion{
		ID: id, Object: "text_completion", Created: created, Model: rq.model,
		Choices: choices, Usage: usageField{u: &u}, Seed: &rq.gen.Sampling.Seed,
	})
}

// stream answers with server-sent events (eventStream): a chunk per token
// of each completion, naming its choice's index. With echo, a chunk of
// each prompt's text (and logprobs) comes before its completion's tokens.
// An error after the first byte ends the stream with an error event.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, rq *request, id string, created int64) {
	start := time.Now()
	e := newEventStream[choice](w, rq, id, "text_completion", created)
	index := func(j *job) int { return j.prompt*rq.n + j.sample }
	names := s.tokenNames()
	h := hooks{
		prefilled: func(j *job, prompt []generate.TokenLogprobs, text string) error {
			j.seq = slices.Clone(rq.prompts[j.prompt])
			j.offset = utf8.RuneCountInString(text)
			if !rq.echo {
				return nil
			}
			c := choice{Index: index(j), Text: text, Tokens: []int64{}}
			if rq.logprobs >= 0 {
				c.Logprobs = newChoiceLogprobs()
				j.offset = c.Logprobs.addPrompt(names, j.seq, prompt, rq.logprobs)
			}
			return e.send(c)
		},
		token: func(j *job, ev generate.Event) error {
			c := choice{Index: index(j), Text: ev.Text, Tokens: []int64{}}
			if ev.Token >= 0 {
				c.Tokens = []int64{ev.Token}
				if ev.Logprob != nil && rq.logprobs >= 0 {
					c.Logprobs = newChoiceLogprobs()
					j.offset = c.Logprobs.add(names, j.seq, *ev.Logprob, rq.logprobs, j.offset)
				}
				j.seq = append(j.seq, ev.Token)
			}
			return e.send(c)
		},
	}
	e.run(s, r, h, start, func(j *job) choice {
		finish := j.res.FinishReason
		return choice{Index: index(j), Tokens: []int64{}, FinishReason: &finish, Seed: rq.seedOf(j)}
	})
}
