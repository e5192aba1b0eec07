package tokenizer

import (
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

// A preTokenizer cuts each piece into smaller ones (and may rewrite them).
type preTokenizer interface {
	preTokenize(dst []piece, p piece) []piece
}

type preTokenizerSequence []preTokenizer

func (seq preTokenizerSequence) preTokenize(dst []piece, p piece) []piece {
	cur := []piece{p}
	var next []piece
	for _, pt := range seq {
		next = next[:0]
		for _, q := range cur {
			next = pt.preTokenize(next, q)
		}
		cur, next = next, cur
	}
	return append(dst, cur...)
}

// pattern is a Split or Replace pattern: a literal string or a regex.
type pattern struct {
	literal string
	re      *regex
}

// matches calls fn for each non-overlapping match, leftmost first.
func (p pattern) matches(s string, fn func(start, end int)) {
	if p.re != nil {
		p.re.findAll(s, fn)
		return
	}
	if p.literal == "" {
		return
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
	var b strings.Builder
	last := 0
	p.matches(s, func(start, end int) {
		b.WriteString(s[last:start])
		b.WriteString(content)
		last = end
	})
	if last == 0 && b.Len() == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
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

// splitSpans cuts s at the spans (which cover s in order) as behavior
// says, appending the non-empty pieces to dst.
func splitSpans(dst []piece, p piece, spans []span, behavior splitBehavior) []piece {
	emit := func(start, end int) {
		if end > start {
			dst = append(dst, piece{text: p.text[start:end], atStart: p.atStart && start == 0})
		}
	}
	switch behavior {
	case splitRemoved:
		for _, sp := range spans {
			if !sp.match {
				emit(sp.start, sp.end)
			}
		}
	case splitIsolated:
		for _, sp := range spans {
			emit(sp.start, sp.end)
		}
	case splitContiguous, splitMergedWithPrevious:
		var cur span
		have, prevMatch := false, false
		for _, sp := range spans {
			merge := sp.match == prevMatch
			if behavior == splitMergedWithPrevious {
				merge = sp.match && !prevMatch
			}
			if merge && have {
				cur.end = sp.end
			} else {
				if have {
					emit(cur.start, cur.end)
				}
				cur, have = sp, true
			}
			prevMatch = sp.match
		}
		if have {
			emit(cur.start, cur.end)
		}
	case splitMergedWithNext:
		var out []span
		prevMatch := false
		for i := len(spans) - 1; i >= 0; i-- {
			sp := spans[i]
			if sp.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].start = sp.start
			} else {
				out = append(out, sp)
			}
			prevMatch = sp.match
		}
		for i := len(out) - 1; i >= 0; i-- {
			emit(out[i].start, out[i].end)
		}
	}
	return dst
}

// matchSpans returns the spans of s: the matches of find and the text
// between them, in order, covering s.
func matchSpans(s string, matches func(string, func(int, int)), invert bool) []span {
	var spans []span
	prev := 0
	matches(s, func(start, end int) {
		if start > prev {
			spans = append(spans, span{prev, start, invert})
		}
		spans = append(spans, span{start, end, !invert})
		prev = end
	})
	if prev < len(s) {
		spans = append(spans, span{prev, len(s), invert})
	}
	return spans
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

func (t splitPreTokenizer) preTokenize(dst []piece, p piece) []piece {
	return splitSpans(dst, p, matchSpans(p.text, t.pattern.matches, t.invert), t.behavior)
}

// runeSplitPreTokenizer splits at single code points (whitespace for
// WhitespaceSplit, punctuation, digits, a delimiter character).
type runeSplitPreTokenizer struct {
	is       func(rune) bool
	behavior splitBehavior
}

func (t runeSplitPreTokenizer) preTokenize(dst []piece, p piece) []piece {
	return splitSpans(dst, p, matchSpans(p.text, runeMatches(t.is), false), t.behavior)
}

// whitespacePreTokenizer keeps the matches of \w+|[^\w\s]+.
type whitespacePreTokenizer struct{}

func (whitespacePreTokenizer) preTokenize(dst []piece, p piece) []piece {
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
		dst = append(dst, piece{text: s[i:j], atStart: p.atStart && i == 0})
		i = j
	}
	return dst
}

// bertPreTokenizer splits on whitespace (removed) and isolates each
// punctuation character.
type bertPreTokenizer struct{}

func (bertPreTokenizer) preTokenize(dst []piece, p piece) []piece {
	var words []piece
	words = runeSplitPreTokenizer{isWhitespace, splitRemoved}.preTokenize(words, p)
	for _, w := range words {
		dst = runeSplitPreTokenizer{isPunctuation, splitIsolated}.preTokenize(dst, w)
	}
	return dst
}

// byteLevelPreTokenizer is GPT-2's: an optional leading space, the GPT-2
// word pattern, then every byte mapped to its byte-level code point.
type byteLevelPreTokenizer struct {
	addPrefixSpace bool
	useRegex       bool
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

func (t byteLevelPreTokenizer) preTokenize(dst []piece, p piece) []piece {
	if t.addPrefixSpace && !strings.HasPrefix(p.text, " ") {
		p.text = " " + p.text
	}
	start := len(dst)
	if t.useRegex {
		dst = splitSpans(dst, p, matchSpans(p.text, gpt2Regex.findAll, false), splitIsolated)
	} else if p.text != "" {
		dst = append(dst, p)
	}
	for i := start; i < len(dst); i++ {
		dst[i].text = byteLevelEncode(dst[i].text)
	}
	return dst
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

func (t metaspacePreTokenizer) preTokenize(dst []piece, p piece) []piece {
	rep := string(t.replacement)
	s := strings.ReplaceAll(p.text, " ", rep)
	if !strings.HasPrefix(s, rep) && s != "" &&
		(t.scheme == prependAlways || t.scheme == prependFirst && p.atStart) {
		s = rep + s
	}
	q := piece{text: s, atStart: p.atStart}
	if !t.split {
		if s != "" {
			dst = append(dst, q)
		}
		return dst
	}
	is := func(r rune) bool { return r == t.replacement }
	return splitSpans(dst, q, matchSpans(s, runeMatches(is), false), splitMergedWithNext)
}

// fixedLengthPreTokenizer cuts pieces every length code points.
type fixedLengthPreTokenizer struct{ length int }

func (t fixedLengthPreTokenizer) preTokenize(dst []piece, p piece) []piece {
	s := p.text
	start, n := 0, 0
	for i := range s {
		if n == t.length {
			dst = append(dst, piece{text: s[start:i], atStart: p.atStart && start == 0})
			start, n = i, 0
		}
		n++
	}
	if start < len(s) {
		dst = append(dst, piece{text: s[start:], atStart: p.atStart && start == 0})
	}
	return dst
}
