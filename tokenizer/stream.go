package tokenizer

import "strings"

// Stream decodes ids one at a time, as a model generates them, and
// returns each piece of text as soon as it is final: bytes that do not yet
// form a complete UTF-8 character are held back until the token that
// completes them arrives, and a decoder's position-dependent rules (the
// space a Llama decoder drops from the first token, WordPiece's "##" glue)
// come out as Decode of the whole sequence would give them.
//
// It keeps a short window of recent ids and emits the difference between
// the decoding of the window with and without the newest id. A Stream is
// not safe for concurrent use.
type Stream struct {
	t           *Tokenizer
	skipSpecial bool
	window      []int
	emitted     string // the raw decoding of window already returned
}

// maxStreamWindow bounds the window while bytes are held back (a model
// emitting byte tokens that never complete a character).
const maxStreamWindow = 64

// NewStream returns a stream decoder; with skipSpecial, special tokens
// produce no text.
func (t *Tokenizer) NewStream(skipSpecial bool) *Stream {
	return &Stream{t: t, skipSpecial: skipSpecial}
}

// Prime feeds ids that are already shown (a prompt) so that the next
// tokens decode in their context, without returning text.
func (s *Stream) Prime(ids []int) {
	for _, id := range ids {
		s.push(id)
	}
	s.trim()
}

// Next adds one id and returns the text that became final.
func (s *Stream) Next(id int) string {
	text := s.push(id)
	if len(s.window) > maxStreamWindow {
		text += s.Flush()
	}
	return text
}

// Flush returns whatever is held back (incomplete UTF-8 as U+FFFD) and
// starts afresh, as at the end of generation.
func (s *Stream) Flush() string {
	raw := s.t.decode(s.window, s.skipSpecial, true)
	var rest string
	if strings.HasPrefix(raw, s.emitted) {
		rest = raw[len(s.emitted):]
	}
	s.window, s.emitted = s.window[:0], ""
	return toValidUTF8(rest)
}

func (s *Stream) push(id int) string {
	s.window = append(s.window, id)
	raw := s.t.decode(s.window, s.skipSpecial, true)
	if !strings.HasPrefix(raw, s.emitted) {
		// The decoder rewrote earlier text; keep what was shown and go on
		// from the common part.
		n := commonPrefix(raw, s.emitted)
		s.emitted = raw[:n]
		return ""
	}
	tail := raw[len(s.emitted):]
	hold := incompleteSuffix(tail)
	out := tail[:len(tail)-hold]
	s.emitted += out
	if hold == 0 {
		s.trim()
	} else if len(s.window) > 4 {
		s.trimHolding(raw[len(raw)-hold:])
	}
	return toValidUTF8(out)
}

// trimHolding shortens the window to the fewest newest ids whose decoding
// still ends in the held bytes, so that a long run of bytes that never
// form a character does not grow it.
func (s *Stream) trimHolding(held string) {
	for k := 1; k < len(s.window); k++ {
		sub := s.t.decode(s.window[len(s.window)-k:], s.skipSpecial, true)
		if strings.HasSuffix(sub, held) {
			s.window = append(s.window[:0], s.window[len(s.window)-k:]...)
			s.emitted = sub[:len(sub)-len(held)]
			return
		}
	}
}

// trim keeps as context only the newest id that produces text (and the
// skipped special tokens after it, which can still matter, as BOS does to
// llama2.c's decoding) once nothing is held back.
func (s *Stream) trim() {
	keep := len(s.window) - 1
	for keep > 0 && s.skipSpecial && s.t.IsSpecial(s.window[keep]) {
		keep--
	}
	if keep <= 0 {
		return
	}
	s.window = append(s.window[:0], s.window[keep:]...)
	s.emitted = s.t.decode(s.window, s.skipSpecial, true)
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
