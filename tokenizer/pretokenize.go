package tokenizer

import (
	"math"
	"strings"
	"unicode/utf8"
)

// A piece is a stretch of normalized text on its way to the model: the
// pre-tokenizers cut sections into pieces, and the model turns each piece
// into tokens. atStart records whether the piece begins the original
// text, which Metaspace's "first" scheme asks.
type piece struct {
	text    string
	atStart bool
}

// A preTokenizer cuts a piece into smaller ones (and may rewrite them),
// passing each to emit in order, so that a long text never needs a list
// of all its words.
type preTokenizer interface {
	preTokenize(p piece, emit func(piece))
}

type preTokenizerSequence []preTokenizer

func (seq preTokenizerSequence) preTokenize(p piece, emit func(piece)) {
	seq.from(0, p, emit)
}

func (seq preTokenizerSequence) from(i int, p piece, emit func(piece)) {
	if i == len(seq) {
		emit(p)
		return
	}
	seq[i].preTokenize(p, func(q piece) { seq.from(i+1, q, emit) })
}

// pattern is a Split or Replace pattern: a literal string or a regex.
type pattern struct {
	literal string
	re      *regex
}

// matches calls fn for each non-overlapping match, leftmost first. Empty
// text has none, as in the Rust library (where a regex that matches the
// empty string would otherwise match there).
func (p pattern) matches(s string, fn func(start, end int)) {
	if s == "" {
		return
	}
	if p.re != nil {
		p.re.findAll(s, fn)
		return
	}
	if p.literal == "" {
		return // the zero pattern; compile makes a regex of an empty String
	}
	for i := 0; ; {
		j := strings.Index(s[i:], p.literal)
		if j < 0 {
			return
		}
		fn(i+j, i+j+len(p.literal))
		i += j + len(p.literal)
	}
}

func (p pattern) replaceAll(s string, content string) string {
	out, _, _ := p.replaceAllLimited(s, content, math.MaxInt64)
	return out
}

// replaceAllLimited is replaceAll that stops building the result once it
// would pass limit bytes: ok is false then, and size is the length the
// whole result would have had (the matches are still counted, in the same
// pass).
func (p pattern) replaceAllLimited(s, content string, limit int64) (out string, size int64, ok bool) {
	var b strings.Builder
	last := 0
	size = int64(len(s))
	p.matches(s, func(start, end int) {
		size += int64(len(content) - (end - start))
		if size > limit {
			return
		}
		b.WriteString(s[last:start])
		b.WriteString(content)
		last = end
	})
	switch {
	case size > limit:
		return "", size, false
	case last == 0 && b.Len() == 0:
		return s, size, true
	}
	b.WriteString(s[last:])
	return b.String(), size, true
}

// splitBehavior says what becomes of the matched delimiters of a split.
type splitBehavior uint8

const (
	splitRemoved splitBehavior = iota
	splitIsolated
	splitMergedWithPrevious
	splitMergedWithNext
	splitContiguous
)

type span struct {
	start, end int
	match      bool
}

// splitter cuts a piece at spans that arrive in order and cover it,
// keeping or merging the matched delimiters as its behavior says (the
// Rust library's rules, applied as the spans stream by).
type splitter struct {
	p         piece
	behavior  splitBehavior
	emit      func(piece)
	pend      span // the last piece, which the next span may still extend
	havePend  bool
	prevMatch bool
}

func (sp *splitter) out(start, end int) {
	if end > start {
		sp.emit(piece{text: sp.p.text[start:end], atStart: sp.p.atStart && start == 0})
	}
}

func (sp *splitter) add(s span) {
	switch sp.behavior {
	case splitRemoved:
		if !s.match {
			sp.out(s.start, s.end)
		}
	case splitIsolated:
		sp.out(s.start, s.end)
	case splitContiguous, splitMergedWithPrevious:
		merge := s.match == sp.prevMatch
		if sp.behavior == splitMergedWithPrevious {
			merge = s.match && !sp.prevMatch
		}
		if merge && sp.havePend {
			sp.pend.end = s.end
		} else {
			if sp.havePend {
				sp.out(sp.pend.start, sp.pend.end)
			}
			sp.pend, sp.havePend = s, true
		}
		sp.prevMatch = s.match
	case splitMergedWithNext:
		// A delimiter joins the text right after it.
		switch {
		case s.match:
			if sp.havePend {
				sp.out(sp.pend.start, sp.pend.end)
			}
			sp.pend, sp.havePend = s, true
		case sp.havePend:
			sp.out(sp.pend.start, s.end)
			sp.havePend = false
		default:
			sp.out(s.start, s.end)
		}
	}
}

func (sp *splitter) finish() {
	if sp.havePend {
		sp.out(sp.pend.start, sp.pend.end)
	}
}

// splitAt cuts p at the matches of matches (their complement with invert).
func splitAt(p piece, matches func(string, func(int, int)), invert bool, behavior splitBehavior, emit func(piece)) {
	sp := &splitter{p: p, behavior: behavior, emit: emit}
	prev := 0
	matches(p.text, func(start, end int) {
		if start > prev {
			sp.add(span{prev, start, invert})
		}
		sp.add(span{start, end, !invert})
		prev = end
	})
	if prev < len(p.text) {
		sp.add(span{prev, len(p.text), invert})
	}
	sp.finish()
}

// runeMatches reports each code point for which is returns true.
func runeMatches(is func(rune) bool) func(string, func(int, int)) {
	return func(s string, fn func(int, int)) {
		for i, r := range s {
			if is(r) {
				fn(i, i+utf8.RuneLen(r))
			}
		}
	}
}

type splitPreTokenizer struct {
	pattern  pattern
	behavior splitBehavior
	invert   bool
}

func (t splitPreTokenizer) preTokenize(p piece, emit func(piece)) {
	splitAt(p, t.pattern.matches, t.invert, t.behavior, emit)
}

// runeSplitPreTokenizer splits at single code points (whitespace for
// WhitespaceSplit, punctuation, digits, a delimiter character).
type runeSplitPreTokenizer struct {
	is       func(rune) bool
	behavior splitBehavior
}

func (t runeSplitPreTokenizer) preTokenize(p piece, emit func(piece)) {
	splitAt(p, runeMatches(t.is), false, t.behavior, emit)
}

// whitespacePreTokenizer keeps the matches of \w+|[^\w\s]+.
type whitespacePreTokenizer struct{}

func (whitespacePreTokenizer) preTokenize(p piece, emit func(piece)) {
	s := p.text
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if isWhitespace(r) && !isWordChar(r) {
			i += w
			continue
		}
		word := isWordChar(r)
		j := i + w
		for j < len(s) {
			r2, w2 := utf8.DecodeRuneInString(s[j:])
			if isWordChar(r2) != word || !word && isWhitespace(r2) {
				break
			}
			j += w2
		}
		emit(piece{text: s[i:j], atStart: p.atStart && i == 0})
		i = j
	}
}

// bertPreTokenizer splits on whitespace (removed) and isolates each
// punctuation character.
type bertPreTokenizer struct{}

func (bertPreTokenizer) preTokenize(p piece, emit func(piece)) {
	runeSplitPreTokenizer{isWhitespace, splitRemoved}.preTokenize(p, func(w piece) {
		runeSplitPreTokenizer{isPunctuation, splitIsolated}.preTokenize(w, emit)
	})
}

// byteLevelPreTokenizer is GPT-2's: an optional leading space, the GPT-2
// word pattern, then every byte mapped to its byte-level code point.
type byteLevelPreTokenizer struct {
	addPrefixSpace bool
	useRegex       bool
	// rawBytes leaves the mapping to the model (a BPE model that maps
	// each byte to its symbol itself), saving a string per word.
	rawBytes bool
}

// gpt2Pattern is the word pattern of GPT-2's byte-level pre-tokenizer.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var gpt2Regex = func() *regex {
	re, err := compileRegex(gpt2Pattern)
	if err != nil {
		panic("tokenizer: " + err.Error())
	}
	return re
}()

func (t byteLevelPreTokenizer) preTokenize(p piece, emit func(piece)) {
	if t.addPrefixSpace && !strings.HasPrefix(p.text, " ") {
		p.text = " " + p.text
	}
	encode := emit
	if !t.rawBytes {
		encode = func(q piece) {
			q.text = byteLevelEncode(q.text)
			emit(q)
		}
	}
	if t.useRegex {
		splitAt(p, gpt2Regex.findAll, false, splitIsolated, encode)
	} else if p.text != "" {
		encode(p)
	}
}

type prependScheme uint8

const (
	prependAlways prependScheme = iota
	prependFirst
	prependNever
)

// metaspacePreTokenizer is sentencepiece's whitespace handling: spaces
// become the replacement character (▁), a ▁ is prepended, and the text is
// split before each ▁.
type metaspacePreTokenizer struct {
	replacement rune
	scheme      prependScheme
	split       bool
}

func (t metaspacePreTokenizer) preTokenize(p piece, emit func(piece)) {
	rep := string(t.replacement)
	s := strings.ReplaceAll(p.text, " ", rep)
	if !strings.HasPrefix(s, rep) && s != "" &&
		(t.scheme == prependAlways || t.scheme == prependFirst && p.atStart) {
		s = rep + s
	}
	q := piece{text: s, atStart: p.atStart}
	if !t.split {
		if s != "" {
			emit(q)
		}
		return
	}
	is := func(r rune) bool { return r == t.replacement }
	splitAt(q, runeMatches(is), false, splitMergedWithNext, emit)
}

// fixedLengthPreTokenizer cuts pieces every length code points.
type fixedLengthPreTokenizer struct{ length int }

func (t fixedLengthPreTokenizer) preTokenize(p piece, emit func(piece)) {
	s := p.text
	start, n := 0, 0
	for i := range s {
		if n == t.length {
			emit(piece{text: s[start:i], atStart: p.atStart && start == 0})
			start, n = i, 0
		}
		n++
	}
	if start < len(s) {
		emit(piece{text: s[start:], atStart: p.atStart && start == 0})
	}
}
