package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// A normalizer rewrites the text of a section (the text between added
// tokens) before it is split into words, as tokenizer.json's "normalizer".
type normalizer interface {
	normalize(s string) string
}

type normalizerSequence []normalizer

// maxNormalizedBytes bounds the text normalizing one section of an input
// may make: a tokenizer.json whose normalizers replace a character with a
// long string, or repeat one that doubles the text, would otherwise turn
// a few bytes into gigabytes.
var maxNormalizedBytes int64 = 256 << 20

// normalizeBounded applies n to s, each normalizer of a sequence after
// the other, refusing before a step whose result could be longer than
// maxNormalizedBytes.
func normalizeBounded(n normalizer, s string) (string, error) {
	if seq, ok := n.(normalizerSequence); ok {
		for _, m := range seq {
			var err error
			if s, err = normalizeBounded(m, s); err != nil {
				return "", err
			}
		}
		return s, nil
	}
	if r, ok := n.(replaceNormalizer); ok {
		// Sized as it is built, in one pass over the matches.
		out, size, ok := r.pattern.replaceAllLimited(s, r.content, maxNormalizedBytes)
		if !ok {
			return "", growthError(len(s), size)
		}
		return out, nil
	}
	if bound := normalizedBound(n, s); bound > maxNormalizedBytes {
		return "", growthError(len(s), bound)
	}
	return n.normalize(s), nil
}

func growthError(from int, to int64) error {
	return fmt.Errorf("the normalizer would make %d bytes of text as many as %d, more than the %d allowed", from, to, maxNormalizedBytes)
}

// normalizedBound is at least the length of n.normalize(s) for the
// normalizers but Replace (sized as it is built): exact for a prefix or a
// suffix, else the normalizer's largest growth per byte.
func normalizedBound(n normalizer, s string) int64 {
	size := int64(len(s))
	switch n := n.(type) {
	case prependNormalizer:
		return size + int64(len(n.prefix))
	case appendNormalizer:
		return size + int64(len(n.suffix))
	case *precompiledNormalizer:
		return size * int64(max(n.longest, 1))
	case unicodeNormalizer:
		if n.form == norm.NFKC || n.form == norm.NFKD {
			return 11 * size // U+FDFA: 3 bytes, 33 decomposed
		}
		return 3 * size // a Hangul syllable: 3 bytes, 9 decomposed
	}
	// An invalid byte becomes U+FFFD (3 bytes) wherever text is mapped
	// by characters; BERT's accent stripping decomposes a Hangul
	// syllable into three jamo (3 bytes become 9); lowercasing (İ, 2
	// bytes, becomes 3), byte-level code points (2 bytes a byte) and the
	// spaces around CJK ideographs (3 bytes become 5) grow less.
	return 3 * size
}

func (seq normalizerSequence) normalize(s string) string {
	for _, n := range seq {
		s = n.normalize(s)
	}
	return s
}

// unicodeNormalizer applies a Unicode normalization form the way the Rust
// library does, with Unicode 9.0 data: a code point that Unicode 9.0 does
// not assign has no decomposition and combining class 0, so the text is
// normalized in stretches between such code points, which pass unchanged.
type unicodeNormalizer struct{ form norm.Form }

func (u unicodeNormalizer) normalize(s string) string { return normalize9(u.form, s) }

func normalize9(form norm.Form, s string) string {
	start, cut := 0, false
	var b strings.Builder
	for i, r := range s {
		if r < 0x378 || unicode.Is(assigned9, r) {
			continue
		}
		if !cut {
			b.Grow(len(s))
			cut = true
		}
		b.WriteString(form.String(s[start:i]))
		n := utf8.RuneLen(r)
		if r == utf8.RuneError {
			n = 1
		}
		b.WriteString(s[i : i+n])
		start = i + n
	}
	if !cut {
		return form.String(s)
	}
	b.WriteString(form.String(s[start:]))
	return b.String()
}

type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(s string) string { return lowercase(s) }

// lowercase lowers each code point on its own (Rust's char::to_lowercase,
// which has no final-sigma rule).
func lowercase(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		appendLower(&b, r)
	}
	return b.String()
}

type stripNormalizer struct{ left, right bool }

func (n stripNormalizer) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, isWhitespace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, isWhitespace)
	}
	return s
}

// stripAccentsNormalizer removes combining marks (Unicode 9.0's M, as the
// Rust library); it does not decompose first, so it is used after NFD or
// NFKD.
type stripAccentsNormalizer struct{}

func (stripAccentsNormalizer) normalize(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.Is(mark9, r) {
			return -1
		}
		return r
	}, s)
}

type replaceNormalizer struct {
	pattern pattern
	content string
}

func (n replaceNormalizer) normalize(s string) string { return n.pattern.replaceAll(s, n.content) }

type prependNormalizer struct{ prefix string }

func (n prependNormalizer) normalize(s string) string {
	if s == "" {
		return s
	}
	return n.prefix + s
}

type appendNormalizer struct{ suffix string }

func (n appendNormalizer) normalize(s string) string {
	if s == "" {
		return s
	}
	return s + n.suffix
}

// byteLevelNormalizer maps every byte to its byte-level code point.
type byteLevelNormalizer struct{}

func (byteLevelNormalizer) normalize(s string) string { return byteLevelEncode(s) }

// nmtNormalizer is sentencepiece's "nmt" cleanup: drop some control
// characters, turn some spacing characters into a space.
type nmtNormalizer struct{}

func (nmtNormalizer) normalize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 0x1 <= r && r <= 0x8, r == 0xB, 0xE <= r && r <= 0x1F, r == 0x7F, r == 0x8F, r == 0x9F:
			return -1
		case r == 0x9, r == 0xA, r == 0xC, r == 0xD, r == 0x1680, 0x200B <= r && r <= 0x200F,
			r == 0x2028, r == 0x2029, r == 0x2581, r == 0xFEFF, r == 0xFFFD:
			return ' '
		}
		return r
	}, s)
}

// bertNormalizer is BERT's basic cleanup: drop control characters (and
// NUL and U+FFFD), turn whitespace into spaces, surround CJK ideographs
// with spaces, strip accents (after NFD) and lowercase. The categories are
// Unicode 9.0's, as in the Rust library.
type bertNormalizer struct {
	cleanText, chineseChars, stripAccents, lowercase bool
}

func (n bertNormalizer) normalize(s string) string {
	if n.cleanText {
		s = strings.Map(func(r rune) rune {
			switch {
			case r == 0 || r == 0xFFFD:
				return -1
			case r == '\t' || r == '\n' || r == '\r':
				return ' '
			case unicode.Is(other9, r):
				return -1
			case isWhitespace(r):
				return ' '
			}
			return r
		}, s)
	}
	if n.chineseChars {
		var b strings.Builder
		b.Grow(len(s))
		for _, r := range s {
			if isChineseChar(r) {
				b.WriteByte(' ')
				b.WriteRune(r)
				b.WriteByte(' ')
			} else {
				b.WriteRune(r)
			}
		}
		s = b.String()
	}
	if n.stripAccents {
		s = strings.Map(func(r rune) rune {
			if unicode.Is(nonspacingMark9, r) {
				return -1
			}
			return r
		}, normalize9(norm.NFD, s))
	}
	if n.lowercase {
		s = lowercase(s)
	}
	return s
}

// isChineseChar is BERT's test for a CJK ideograph.
func isChineseChar(r rune) bool {
	switch {
	case 0x4E00 <= r && r <= 0x9FFF, 0x3400 <= r && r <= 0x4DBF,
		0x20000 <= r && r <= 0x2A6DF, 0x2A700 <= r && r <= 0x2B73F,
		0x2B740 <= r && r <= 0x2B81F, 0x2B920 <= r && r <= 0x2CEAF,
		0xF900 <= r && r <= 0xFAFF, 0x2F800 <= r && r <= 0x2FA1F:
		return true
	}
	return false
}

// toValidUTF8 replaces each maximal invalid subsequence of s with U+FFFD,
// as Rust's String::from_utf8_lossy and the WHATWG decoder do (Go's
// strings.ToValidUTF8 would merge a run of them into one).
func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			b.WriteByte(c)
			i++
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || w > 1 {
			b.WriteString(s[i : i+w])
			i += w
			continue
		}
		b.WriteRune(utf8.RuneError)
		i += maximalSubpart(s[i:])
	}
	return b.String()
}

// maximalSubpart returns the length of the longest prefix of s (which does
// not start with a valid sequence) that is the start of some valid UTF-8
// sequence, at least 1.
func maximalSubpart(s string) int {
	c := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case 0xC2 <= c && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case 0xE1 <= c && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case 0xF1 <= c && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(s); k++ {
		b := s[n]
		if b < lo || b > hi {
			break
		}
		lo, hi = 0x80, 0xBF
		n++
	}
	return n
}

// incompleteSuffix returns how many trailing bytes of s form the start of
// a UTF-8 sequence that more bytes could still complete.
func incompleteSuffix(s string) int {
	for n := 1; n <= 3 && n <= len(s); n++ {
		c := s[len(s)-n]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 { // a lead byte
			tail := s[len(s)-n:]
			if maximalSubpart(tail) == n && n < utf8.UTFMax && !utf8.FullRuneInString(tail) {
				return n
			}
			return 0
		}
	}
	return 0
}
