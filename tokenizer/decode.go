package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// A decoder turns token strings back into text (tokenizer.json's
// "decoder"), as a chain over the list of token strings. In raw mode the
// byte-producing decoders (ByteLevel, ByteFallback) leave incomplete or
// invalid UTF-8 as bytes, for the stream decoder to hold back; otherwise
// they replace it with U+FFFD as the Rust library does.
type decoder interface {
	decodeChain(tokens []string, raw bool) []string
}

type decoderSequence []decoder

func (seq decoderSequence) decodeChain(tokens []string, raw bool) []string {
	for _, d := range seq {
		tokens = d.decodeChain(tokens, raw)
	}
	return tokens
}

type byteLevelDecoder struct{}

func (byteLevelDecoder) decodeChain(tokens []string, raw bool) []string {
	var buf []byte
	for _, t := range tokens {
		buf = byteLevelDecode(buf, t)
	}
	if raw {
		return []string{string(buf)}
	}
	return []string{toValidUTF8(string(buf))}
}

// byteFallbackDecoder turns runs of <0xHH> tokens into the bytes they
// stand for; a run that is not valid UTF-8 becomes one U+FFFD per byte.
type byteFallbackDecoder struct{}

func byteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexValue(t[3])
	lo, ok2 := hexValue(t[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func (byteFallbackDecoder) decodeChain(tokens []string, raw bool) []string {
	out := make([]string, 0, len(tokens))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if raw || utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			for range run {
				out = append(out, "\uFFFD")
			}
		}
		run = run[:0]
	}
	for _, t := range tokens {
		if b, ok := byteToken(t); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// metaspaceDecoder turns ▁ back into spaces, dropping those of the first
// token when the pre-tokenizer prepends one.
type metaspaceDecoder struct {
	replacement rune
	scheme      prependScheme
}

func (d metaspaceDecoder) decodeChain(tokens []string, raw bool) []string {
	rep := string(d.replacement)
	out := make([]string, len(tokens))
	for i, t := range tokens {
		with := " "
		if i == 0 && d.scheme != prependNever {
			with = ""
		}
		out[i] = strings.ReplaceAll(t, rep, with)
	}
	return out
}

// wordPieceDecoder glues continuation pieces (##) to the previous one and
// puts a space before the others.
type wordPieceDecoder struct {
	prefix  string
	cleanup bool
}

func (d wordPieceDecoder) decodeChain(tokens []string, raw bool) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		if i != 0 {
			if strings.HasPrefix(t, d.prefix) {
				t = strings.Replace(t, d.prefix, "", 1)
			} else {
				t = " " + t
			}
		}
		if d.cleanup {
			t = cleanupTokenization(t)
		}
		out[i] = t
	}
	return out
}

// cleanupTokenization removes the spaces that word-level detokenization
// leaves before punctuation and English contractions.
func cleanupTokenization(s string) string {
	return cleanupReplacer.Replace(s)
}

var cleanupReplacer = sequentialReplacer{
	{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
	{" n't", "n't"}, {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"},
	{" 've", "'ve"}, {" 're", "'re"},
}

// sequentialReplacer applies each replacement to the result of the
// previous one (unlike strings.Replacer, which makes one pass).
type sequentialReplacer [][2]string

func (r sequentialReplacer) Replace(s string) string {
	for _, p := range r {
		if strings.Contains(s, p[0]) {
			s = strings.ReplaceAll(s, p[0], p[1])
		}
	}
	return s
}

// bpeDecoder replaces the end-of-word suffix (</w>) with a space, except
// in the last token.
type bpeDecoder struct{ suffix string }

func (d bpeDecoder) decodeChain(tokens []string, raw bool) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		with := " "
		if i == len(tokens)-1 {
			with = ""
		}
		out[i] = strings.ReplaceAll(t, d.suffix, with)
	}
	return out
}

// ctcDecoder collapses repeated tokens, drops the pad token and turns the
// word delimiter into spaces.
type ctcDecoder struct {
	pad, delimiter string
	cleanup        bool
}

func (d ctcDecoder) decodeChain(tokens []string, raw bool) []string {
	var out []string
	for i, t := range tokens {
		if i > 0 && t == tokens[i-1] {
			continue
		}
		t = strings.ReplaceAll(t, d.pad, "")
		if d.cleanup {
			t = strings.ReplaceAll(cleanupTokenization(t), d.delimiter, " ")
		}
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

type fuseDecoder struct{}

func (fuseDecoder) decodeChain(tokens []string, raw bool) []string {
	return []string{strings.Join(tokens, "")}
}

// stripDecoder removes up to start leading and stop trailing copies of
// content from each token.
type stripDecoder struct {
	content     rune
	start, stop int
}

func (d stripDecoder) decodeChain(tokens []string, raw bool) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		lo := 0
		for n := 0; n < d.start && lo < len(t); n++ {
			r, w := utf8.DecodeRuneInString(t[lo:])
			if r != d.content || r == utf8.RuneError && w <= 1 {
				break
			}
			lo += w
		}
		hi := len(t)
		for n := 0; n < d.stop && hi > lo; n++ {
			r, w := utf8.DecodeLastRuneInString(t[lo:hi])
			if r != d.content || r == utf8.RuneError && w <= 1 {
				break
			}
			hi -= w
		}
		out[i] = t[lo:hi]
	}
	return out
}

type replaceDecoder struct {
	pattern pattern
	content string
}

func (d replaceDecoder) decodeChain(tokens []string, raw bool) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		out[i] = d.pattern.replaceAll(t, d.content)
	}
	return out
}
