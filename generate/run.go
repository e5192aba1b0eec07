package generate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Tokenizer turns text into token ids and back. Decode of a sequence's
// ids is its text; streaming decodes the growing sequence (TextStream).
type Tokenizer interface {
	Encode(text string) ([]int, error)
	Decode(ids []int) (string, error)
}

// Request is one generation.
type Request struct {
	Prompt    []int64 // token ids, at least one
	MaxTokens int     // tokens to generate at most (≥ 1)
	Sampling  Sampling
	// Stop ends the text before the first occurrence of any of these
	// strings (needs a tokenizer); StopTokens ends it at any of these ids
	// (an end-of-sequence token), which is not part of the result.
	Stop       []string
	StopTokens []int64
	// Schedule runs each forward pass (nil: directly); a server runs
	// them with the request's delta applied.
	Schedule func(ctx context.Context, step func() error) error
	// Logprobs has Run give each generated token's log-probability under
	// the model (the log-softmax of its logits as the model computes them,
	// before temperature, top-k, top-p, biases and penalties) and those of
	// the TopLogprobs most likely tokens. PromptLogprobs gives the prompt's
	// tokens' too (from the second on: the first has no context), from the
	// logits feeding the prompt computes anyway.
	Logprobs       bool
	TopLogprobs    int
	PromptLogprobs bool
	// Prefilled, when set, is called once the prompt has been fed, before
	// the first token is drawn, with the prompt's logprobs (when
	// PromptLogprobs) and text (with a tokenizer, as Result.PromptText).
	Prefilled func(prompt []TokenLogprobs, text string) error
}

// TokenLogprobs is a token's log-probability and those of the most likely
// tokens at its position, the most likely first (equal ones by id).
type TokenLogprobs struct {
	Token   int64
	Logprob float64
	Top     []Logprob
}

// Logprob is one token's log-probability.
type Logprob struct {
	Token   int64
	Logprob float64
}

// LogprobsOf returns token's log-probability under logits (their
// log-softmax, in float64; NaN logits count for nothing, and a token whose
// logit is NaN gets NaN) and the k most likely tokens'.
func LogprobsOf(logits []float32, token int64, k int) TokenLogprobs {
	top := math.Inf(-1)
	for _, x := range logits {
		if x := float64(x); x > top {
			top = x
		}
	}
	sum := 0.0
	for _, x := range logits {
		if !math.IsNaN(float64(x)) {
			sum += math.Exp(float64(x) - top)
		}
	}
	lse := top + math.Log(sum)
	lp := TokenLogprobs{Token: token, Logprob: float64(logits[token]) - lse}
	if k > 0 {
		for _, id := range topK(nil, logits, min(k, len(logits))) {
			lp.Top = append(lp.Top, Logprob{int64(id), float64(logits[id]) - lse})
		}
	}
	return lp
}

// Event is one generated token and the text it completes (empty while a
// multi-byte character or a possible stop string is incomplete), with its
// logprobs when the request asks for them.
type Event struct {
	Token   int64
	Text    string
	Logprob *TokenLogprobs
}

// Finish reasons, as completion APIs name them.
const (
	FinishLength = "length" // max tokens, or the context is full
	FinishStop   = "stop"   // a stop string or stop token
)

// Result is a finished generation.
type Result struct {
	Tokens       []int64
	Text         string // with a tokenizer
	FinishReason string
	PromptTokens int
	// PromptText is the prompt's text that Text continues (with a
	// tokenizer): a character the prompt's last tokens leave incomplete is
	// Text's.
	PromptText string
	// Logprobs are the generated tokens' (Request.Logprobs),
	// PromptLogprobs the prompt's from its second token on
	// (Request.PromptLogprobs).
	Logprobs, PromptLogprobs []TokenLogprobs
	// FirstToken is the time to the first generated token (the prompt's
	// forward pass included), Total the whole generation.
	FirstToken, Total time.Duration
}

// ErrPromptTooLong is wrapped when the prompt leaves no room to generate.
var ErrPromptTooLong = errors.New("the prompt does not fit the model's context")

// ErrBadRequest is wrapped by errors in a request's values.
var ErrBadRequest = errors.New("bad request")

// Check reports a request that cannot run on d.
func (r *Request) Check(d *Decoder, tok Tokenizer) error {
	switch {
	case len(r.Prompt) == 0:
		return fmt.Errorf("%w: the prompt is empty", ErrBadRequest)
	case r.MaxTokens < 0:
		return fmt.Errorf("%w: max tokens %d: want at least 0", ErrBadRequest, r.MaxTokens)
	case r.TopLogprobs < 0:
		return fmt.Errorf("%w: top logprobs %d: want at least 0", ErrBadRequest, r.TopLogprobs)
	case len(r.Stop) > 0 && tok == nil:
		return fmt.Errorf("%w: stop strings need a tokenizer", ErrBadRequest)
	case len(r.Prompt) > d.Context():
		return fmt.Errorf("%w: %d prompt tokens, the context holds %d positions", ErrPromptTooLong, len(r.Prompt), d.Context())
	}
	for _, s := range r.Stop {
		if s == "" {
			return fmt.Errorf("%w: an empty stop string", ErrBadRequest)
		}
	}
	for _, t := range r.Prompt {
		if t < 0 || t >= int64(d.Vocab()) {
			return fmt.Errorf("%w: token id %d is outside the vocabulary [0, %d)", ErrBadRequest, t, d.Vocab())
		}
	}
	for id := range r.Sampling.LogitBias {
		if id >= d.Vocab() {
			return fmt.Errorf("%w: a logit bias for token id %d, outside the vocabulary [0, %d)", ErrBadRequest, id, d.Vocab())
		}
	}
	if err := r.Sampling.Check(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
}

// schedule runs step as one of r's forward passes: through r.Schedule,
// directly without one.
func (r *Request) schedule(ctx context.Context, step func() error) error {
	if r.Schedule == nil {
		return step()
	}
	return r.Schedule(ctx, step)
}

// Run generates from r.Prompt on a new session of d, calling emit for
// every token (emit's error stops the generation and is returned). It
// ends after r.MaxTokens tokens, at a stop string or token, when the
// context is full (FinishLength), or when ctx is done (ctx's error). With
// r.MaxTokens 0 it feeds the prompt only for its logprobs, and nothing at
// all without them.
func Run(ctx context.Context, d *Decoder, tok Tokenizer, r Request, emit func(Event) error) (Result, error) {
	p, err := Prefill(ctx, d, tok, r, 1)
	if err != nil {
		return Result{PromptTokens: len(r.Prompt), FinishReason: FinishLength}, err
	}
	return p.Run(ctx, r, emit)
}

// Prefix is a prompt fed once for several generations that continue it
// (n completions of one prompt): each goes on from a copy of its caches,
// so that n generations cost one prefill and n decodes and each gives the
// bits Run gives it alone.
type Prefix struct {
	d      *Decoder
	tok    Tokenizer
	prompt []int64
	start  time.Time
	// promptLogprobs are the prompt's, when the prefill scored it.
	promptLogprobs []TokenLogprobs

	mu   sync.Mutex
	s    *Session // nil once the last run has taken it
	runs int      // runs left: all but the last copy s
}

// Prefill feeds r.Prompt on a new session of d, in r.Schedule's passes,
// for runs generations from it (Prefix.Run): scoring it with
// r.PromptLogprobs (r.TopLogprobs most likely tokens at each position),
// feeding nothing when r.MaxTokens is 0 and it is not scored.
func Prefill(ctx context.Context, d *Decoder, tok Tokenizer, r Request, runs int) (*Prefix, error) {
	start := time.Now()
	if err := r.Check(d, tok); err != nil {
		return nil, err
	}
	s := d.NewSession()
	p := &Prefix{d: d, tok: tok, prompt: r.Prompt, start: start, s: s, runs: runs}
	if !r.PromptLogprobs {
		if r.MaxTokens == 0 {
			return p, nil
		}
		return p, r.schedule(ctx, func() error {
			_, err := s.Feed(ctx, r.Prompt)
			return err
		})
	}
	// Scored a chunk at a time, each chunk's rows turned into the
	// logprobs of the tokens they predict outside the scheduled pass and
	// dropped.
	vocab := d.Vocab()
	for done := 0; done < len(r.Prompt); {
		chunk := r.Prompt[done : done+s.chunkLen(len(r.Prompt)-done)]
		var rows []float32
		if err := r.schedule(ctx, func() error {
			var err error
			rows, err = s.FeedAll(ctx, chunk)
			return err
		}); err != nil {
			return nil, err
		}
		done += len(chunk)
		for i := range chunk {
			if at := done - len(chunk) + i + 1; at < len(r.Prompt) {
				p.promptLogprobs = append(p.promptLogprobs, LogprobsOf(rows[i*vocab:(i+1)*vocab], r.Prompt[at], r.TopLogprobs))
			}
		}
	}
	return p, nil
}

// session is the session a run goes on from: a copy of the prefix's, the
// last run's the prefix's own.
func (p *Prefix) session() (*Session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.runs {
	case 0:
		return nil, fmt.Errorf("generate: every run of the prefix has started")
	case 1:
		s := p.s
		p.s, p.runs = nil, 0
		return s, nil
	}
	p.runs--
	return p.s.Fork(), nil
}

// Run generates from the prefix as Run does from its prompt, r being the
// prefill's request with, it may be, other sampling options, maximum,
// stops, logprobs, schedule and Prefilled: its Prompt and PromptLogprobs
// are ignored, the result holding the prompt's logprobs when the prefill
// scored it. The time to the first token counts from the prefill's start.
// Runs may go on at once.
func (p *Prefix) Run(ctx context.Context, r Request, emit func(Event) error) (Result, error) {
	res := Result{PromptTokens: len(p.prompt), FinishReason: FinishLength, PromptLogprobs: p.promptLogprobs}
	r.Prompt = p.prompt
	if err := r.Check(p.d, p.tok); err != nil {
		return res, err
	}
	s, err := p.session()
	if err != nil {
		return res, err
	}
	if r.MaxTokens > 0 && s.Len() == 0 {
		return res, fmt.Errorf("%w: %d tokens to generate from a prefix fed for none (max tokens 0)", ErrBadRequest, r.MaxTokens)
	}
	var text *TextStream
	if p.tok != nil {
		if text, err = NewTextStream(p.tok, p.prompt, r.Stop); err != nil {
			return res, err
		}
		res.PromptText = text.PromptText()
	}
	if r.Prefilled != nil {
		if err := r.Prefilled(res.PromptLogprobs, res.PromptText); err != nil {
			return res, err
		}
	}
	sampler := NewSampler(r.Sampling)
	logits := s.last
	for r.MaxTokens > 0 {
		id := int64(sampler.Next(logits))
		if len(res.Tokens) == 0 {
			res.FirstToken = time.Since(p.start)
		}
		if slices.Contains(r.StopTokens, id) {
			res.FinishReason = FinishStop
			break
		}
		res.Tokens = append(res.Tokens, id)
		ev := Event{Token: id}
		if r.Logprobs {
			lp := LogprobsOf(logits, id, r.TopLogprobs)
			res.Logprobs = append(res.Logprobs, lp)
			ev.Logprob = &res.Logprobs[len(res.Logprobs)-1]
		}
		stopped := false
		if text != nil {
			if ev.Text, stopped, err = text.Push(int(id)); err != nil {
				return res, err
			}
		}
		if err := emit(ev); err != nil {
			return res, err
		}
		if stopped {
			res.FinishReason = FinishStop
			break
		}
		if len(res.Tokens) == r.MaxTokens || s.Len()+1 > p.d.Context() {
			break
		}
		if err := r.schedule(ctx, func() error {
			var err error
			logits, err = s.Feed(ctx, []int64{id})
			return err
		}); err != nil {
			return res, err
		}
	}
	if text != nil {
		rest := text.Flush()
		if rest != "" {
			if err := emit(Event{Token: -1, Text: rest}); err != nil {
				return res, err
			}
		}
		res.Text = text.Text()
	}
	res.Total = time.Since(p.start)
	return res, nil
}

// TextStream turns a growing sequence of token ids into text, piece by
// piece: it decodes the whole sequence after every token and hands out
// what is final, holding back an incomplete UTF-8 character, a run of
// byte tokens still open (ByteTokens) and any tail that may still become
// a stop string. What it hands out adds up to Text.
type TextStream struct {
	tok        Tokenizer
	bytes      ByteTokens // nil: the tokenizer does not say
	ids        []int
	prefix     int    // bytes of the prompt's text before the generated text
	promptText string // those bytes
	text       string // generated text so far (decoded)
	emitted    int    // bytes of text handed out
	runFrom    int    // where an open run of byte tokens starts in text (-1: none)
	stop       []string
	stopped    bool
}

// ByteTokens is implemented by tokenizers that tell their byte tokens
// (<0xE4>, a byte-fallback BPE's or llama2.c's): a run of them decodes
// as a whole — Hugging Face's ByteFallback turns a run that is not valid
// UTF-8 into one U+FFFD per byte, valid bytes before an invalid one
// included — so the text of a run is final only once it has ended.
type ByteTokens interface {
	IsByteToken(id int) bool
}

// ByteValues is implemented by tokenizers that tell the byte a byte
// token stands for: a prompt ending in byte tokens then leaves to the
// generated text only bytes that more bytes could make a character of,
// not bytes that are invalid whatever follows (0xFF).
type ByteValues interface {
	ByteToken(id int) (b byte, ok bool)
}

// NewTextStream starts after the prompt's ids. A prompt ending inside a
// character (an incomplete UTF-8 sequence, of byte tokens or not) leaves
// that character to the generated text, which completes it; the rest of
// the prompt, complete characters of a trailing run of byte tokens
// included, is the prompt's text.
func NewTextStream(tok Tokenizer, prompt []int64, stop []string) (*TextStream, error) {
	ts := &TextStream{tok: tok, stop: stop, runFrom: -1}
	ts.bytes, _ = tok.(ByteTokens)
	for _, id := range prompt {
		ts.ids = append(ts.ids, int(id))
	}
	p, err := tok.Decode(ts.ids)
	if err != nil {
		return nil, err
	}
	ts.prefix = len(p) - IncompleteTail(p)
	run := len(ts.ids) // where the prompt's trailing run of byte tokens starts
	if ts.bytes != nil {
		for run > 0 && ts.bytes.IsByteToken(ts.ids[run-1]) {
			run--
		}
		if run < len(ts.ids) {
			ts.runFrom = 0
		}
	}
	if values, ok := tok.(ByteValues); ok && run < len(ts.ids) {
		// The run's own bytes say how many of its last tokens start a
		// character still to come: those (at most 3) are the generated
		// text's, the rest, invalid bytes included, the prompt's.
		var raw []byte
		for _, id := range ts.ids[run:] {
			b, _ := values.ByteToken(id)
			raw = append(raw, b)
		}
		if hold := openCharacter(raw); hold > 0 {
			if p, err = tok.Decode(ts.ids[:len(ts.ids)-hold]); err != nil {
				return nil, err
			}
		}
		ts.promptText, ts.prefix = p, len(p)
		return ts, nil
	}
	if ts.prefix < len(p) && run < len(ts.ids) {
		// A run cut short decodes as a whole to U+FFFD (ByteFallback), its
		// complete characters too: they are the text of the run without
		// the incomplete character's bytes (at most 3).
		p = p[:ts.prefix]
		for cut := len(ts.ids) - 1; cut >= max(run, len(ts.ids)-3); cut-- {
			q, err := tok.Decode(ts.ids[:cut])
			if err != nil {
				return nil, err
			}
			if IncompleteTail(q) == 0 {
				p, ts.prefix = q, len(q)
				break
			}
		}
	}
	ts.promptText = p[:ts.prefix]
	return ts, nil
}

// seam returns where the generated text starts in full, the text of the
// prompt's ids and the generated ones.
func (ts *TextStream) seam(full string) int {
	if strings.HasPrefix(full, ts.promptText) {
		return ts.prefix
	}
	// A run of byte tokens going on from the prompt into the generated
	// ids that is not valid UTF-8 decodes as one U+FFFD per byte
	// (ByteFallback), the prompt's bytes of it included: the generated
	// text starts after those.
	n := 0
	for n < len(full) && n < len(ts.promptText) && full[n] == ts.promptText[n] {
		n++
	}
	for n > 0 && n < len(ts.promptText) && !utf8.RuneStart(ts.promptText[n]) {
		n--
	}
	at := n
	for range len(ts.promptText) - n {
		if !strings.HasPrefix(full[at:], "\uFFFD") {
			return min(n, len(full))
		}
		at += len("\uFFFD")
	}
	return at
}

// openCharacter is how many trailing bytes of b start a UTF-8 character
// that more bytes could complete (0 to 3): utf8.FullRune is false for
// exactly those (an invalid start counts as a full, one-byte error).
func openCharacter(b []byte) int {
	for n := 1; n <= min(3, len(b)); n++ {
		c := b[len(b)-n]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 { // a lead byte, or an invalid one
			if !utf8.FullRune(b[len(b)-n:]) {
				return n
			}
			return 0
		}
	}
	return 0
}

// IncompleteTail is the length of what may still change at the end of a
// decoded text: invalid bytes and U+FFFD (decoders show a character cut
// short as either).
func IncompleteTail(text string) int {
	n := len(text)
	for n > 0 {
		r, size := utf8.DecodeLastRuneInString(text[:n])
		if r != utf8.RuneError {
			break
		}
		n -= size
	}
	return len(text) - n
}

// Push adds a token and returns the text now final; stopped reports a
// stop string (the text ends before it).
func (ts *TextStream) Push(id int) (string, bool, error) {
	if ts.stopped {
		return "", true, nil
	}
	before := len(ts.text)
	ts.ids = append(ts.ids, id)
	full, err := ts.tok.Decode(ts.ids)
	if err != nil {
		return "", false, err
	}
	ts.text = full[ts.seam(full):]
	if ts.emitted > len(ts.text) {
		ts.emitted = len(ts.text)
	}
	if ts.bytes != nil {
		switch {
		case !ts.bytes.IsByteToken(id):
			ts.runFrom = -1
		case ts.runFrom < 0:
			ts.runFrom = min(before, len(ts.text))
		}
	}
	// The final part: not an open byte run, not a character cut short.
	final := len(ts.text)
	if ts.runFrom >= 0 {
		final = min(final, ts.runFrom)
	}
	final -= IncompleteTail(ts.text[:final])
	final = max(final, ts.emitted)
	cut := -1
	for _, s := range ts.stop {
		if i := strings.Index(ts.text[ts.emitted:final], s); i >= 0 && (cut < 0 || ts.emitted+i < cut) {
			cut = ts.emitted + i
		}
	}
	if cut >= 0 {
		ts.text = ts.text[:cut]
		ts.stopped = true
		return ts.Flush(), true, nil
	}
	ready := final
	// A tail that may grow into a stop string.
	for _, s := range ts.stop {
		for k := min(len(s)-1, ready-ts.emitted); k > 0; k-- {
			if strings.HasSuffix(ts.text[:ready], s[:k]) {
				ready -= k
				break
			}
		}
	}
	if ready <= ts.emitted {
		return "", false, nil
	}
	out := ts.text[ts.emitted:ready]
	ts.emitted = ready
	return out, false, nil
}

// Flush hands out everything held back, up to a stop string in it.
func (ts *TextStream) Flush() string {
	if !ts.stopped {
		cut := -1
		for _, s := range ts.stop {
			if i := strings.Index(ts.text[ts.emitted:], s); i >= 0 && (cut < 0 || ts.emitted+i < cut) {
				cut = ts.emitted + i
			}
		}
		if cut >= 0 {
			ts.text, ts.stopped = ts.text[:cut], true
		}
	}
	if ts.emitted >= len(ts.text) {
		return ""
	}
	out := ts.text[ts.emitted:]
	ts.emitted = len(ts.text)
	return out
}

// PromptText is the prompt's text before the generated text: without a
// character its last tokens leave incomplete, which the generated text
// completes.
func (ts *TextStream) PromptText() string { return ts.promptText }

// Text is the generated text so far.
func (ts *TextStream) Text() string { return ts.text }
