package tokenizer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// precompiledNormalizer is sentencepiece's normalization table (the
// "Precompiled" normalizer of T5, ALBERT and XLM-R files): a darts-clone
// double-array trie from UTF-8 strings to offsets of NUL-terminated
// replacements. As in the Rust library, each grapheme cluster shorter than
// 6 bytes is replaced whole when a key is a prefix of it (the shortest such
// key decides); otherwise each character is looked up on its own.
type precompiledNormalizer struct {
	units       []uint32
	replacement []byte
	longest     int // bytes of the longest replacement
}

func newPrecompiled(charsmap string) (normalizer, error) {
	data, err := base64.StdEncoding.DecodeString(charsmap)
	if err != nil {
		return nil, fmt.Errorf("precompiled_charsmap: %w", err)
	}
	if len(data) < 4 {
		return nil, errors.New("precompiled_charsmap: shorter than its 4-byte trie size")
	}
	size := binary.LittleEndian.Uint32(data)
	if size%4 != 0 || uint64(size) > uint64(len(data)-4) {
		return nil, fmt.Errorf("precompiled_charsmap: trie of %d bytes in %d", size, len(data)-4)
	}
	p := &precompiledNormalizer{units: make([]uint32, size/4), replacement: data[4+size:]}
	for i := range p.units {
		p.units[i] = binary.LittleEndian.Uint32(data[4+4*i:])
	}
	if len(p.units) == 0 {
		return nil, errors.New("precompiled_charsmap: empty trie")
	}
	if !utf8.Valid(p.replacement) {
		return nil, errors.New("precompiled_charsmap: replacements are not valid UTF-8")
	}
	// Replacements end at a NUL; every one replaces at least a byte.
	for _, r := range strings.Split(string(p.replacement), "\x00") {
		p.longest = max(p.longest, len(r))
	}
	return p, nil
}

func dartsOffset(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }
func dartsHasLeaf(u uint32) bool  { return (u>>8)&1 == 1 }
func dartsLabel(u uint32) uint32  { return u & (1<<31 | 0xFF) }
func dartsValue(u uint32) uint32  { return u & (1<<31 - 1) }

// transform returns the replacement of the shortest key that starts s.
func (p *precompiledNormalizer) transform(s string) (string, bool) {
	pos := dartsOffset(p.units[0])
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 {
			return "", false
		}
		pos ^= uint32(c)
		if pos >= uint32(len(p.units)) {
			return "", false
		}
		u := p.units[pos]
		if dartsLabel(u) != uint32(c) {
			return "", false
		}
		pos ^= dartsOffset(u)
		if dartsHasLeaf(u) {
			if pos >= uint32(len(p.units)) {
				return "", false
			}
			start := int(dartsValue(p.units[pos]))
			if start > len(p.replacement) {
				return "", false
			}
			end := start
			for end < len(p.replacement) && p.replacement[end] != 0 {
				end++
			}
			r := string(p.replacement[start:end])
			if !utf8.ValidString(r) {
				return "", false
			}
			return r, true
		}
	}
	return "", false
}

func (p *precompiledNormalizer) normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for len(s) > 0 {
		n := graphemeLen(s)
		g := s[:n]
		s = s[n:]
		if n < 6 {
			if r, ok := p.transform(g); ok {
				b.WriteString(r)
				continue
			}
		}
		for len(g) > 0 {
			_, w := utf8.DecodeRuneInString(g)
			if r, ok := p.transform(g[:w]); ok {
				b.WriteString(r)
			} else {
				b.WriteString(g[:w])
			}
			g = g[w:]
		}
	}
	return b.String()
}

// graphemeBreak is a code point's Grapheme_Cluster_Break class, as far as
// the rules below need it.
type graphemeBreak uint8

const (
	gbOther graphemeBreak = iota
	gbCR
	gbLF
	gbControl
	gbExtend
	gbZWJ
	gbRegional
	gbPrepend
	gbSpacingMark
	gbL
	gbV
	gbT
	gbLV
	gbLVT
	gbPictographic
)

func graphemeClass(r rune) graphemeBreak {
	switch {
	case r == '\r':
		return gbCR
	case r == '\n':
		return gbLF
	case r == 0x200D:
		return gbZWJ
	case r == 0x200C || unicode.In(r, unicode.Mn, unicode.Me, unicode.Other_Grapheme_Extend) ||
		0x1F3FB <= r && r <= 0x1F3FF || 0xFF9E <= r && r <= 0xFF9F:
		return gbExtend
	case 0x1F1E6 <= r && r <= 0x1F1FF:
		return gbRegional
	case unicode.Is(unicode.Prepended_Concatenation_Mark, r):
		return gbPrepend
	case unicode.In(r, unicode.Cc, unicode.Zl, unicode.Zp) || unicode.Is(unicode.Cf, r) && r != 0x200C && r != 0x200D:
		return gbControl
	case unicode.Is(unicode.Mc, r):
		return gbSpacingMark
	case 0x1100 <= r && r <= 0x115F || 0xA960 <= r && r <= 0xA97C:
		return gbL
	case 0x1160 <= r && r <= 0x11A7 || 0xD7B0 <= r && r <= 0xD7C6:
		return gbV
	case 0x11A8 <= r && r <= 0x11FF || 0xD7CB <= r && r <= 0xD7FB:
		return gbT
	case 0xAC00 <= r && r <= 0xD7A3:
		if (r-0xAC00)%28 == 0 {
			return gbLV
		}
		return gbLVT
	case isPictographic(r):
		return gbPictographic
	}
	return gbOther
}

// isPictographic approximates Extended_Pictographic (which Go's tables
// lack) by the emoji and pictograph blocks.
func isPictographic(r rune) bool {
	return 0x1F000 <= r && r <= 0x1FAFF || 0x2600 <= r && r <= 0x27BF || 0x2300 <= r && r <= 0x23FF ||
		0x2B00 <= r && r <= 0x2BFF || r == 0xA9 || r == 0xAE || r == 0x203C || r == 0x2049 ||
		r == 0x2122 || r == 0x2139 || 0x2194 <= r && r <= 0x21AA || r == 0x3030 || r == 0x303D ||
		r == 0x3297 || r == 0x3299
}

// graphemeLen returns the length in bytes of the extended grapheme cluster
// that starts s (Unicode's UAX #29 rules GB3 to GB13, without the Indic
// conjunct rule).
func graphemeLen(s string) int {
	r, w := utf8.DecodeRuneInString(s)
	prev := graphemeClass(r)
	n := w
	regional := 0
	if prev == gbRegional {
		regional = 1
	}
	pictSeq := prev == gbPictographic // ExtPict Extend* so far
	for n < len(s) {
		r, w := utf8.DecodeRuneInString(s[n:])
		cur := graphemeClass(r)
		join := false
		switch {
		case prev == gbCR && cur == gbLF:
			join = true
		case prev == gbControl || prev == gbCR || prev == gbLF || cur == gbControl || cur == gbCR || cur == gbLF:
			join = false
		case prev == gbL && (cur == gbL || cur == gbV || cur == gbLV || cur == gbLVT):
			join = true
		case (prev == gbLV || prev == gbV) && (cur == gbV || cur == gbT):
			join = true
		case (prev == gbLVT || prev == gbT) && cur == gbT:
			join = true
		case cur == gbExtend || cur == gbZWJ || cur == gbSpacingMark || prev == gbPrepend:
			join = true
		case prev == gbZWJ && cur == gbPictographic && pictSeq:
			join = true
		case prev == gbRegional && cur == gbRegional && regional%2 == 1:
			join = true
		}
		if !join {
			break
		}
		if cur == gbRegional {
			regional++
		}
		switch {
		case cur == gbPictographic:
			pictSeq = true
		case cur == gbExtend && pictSeq:
		case cur == gbZWJ && pictSeq:
		default:
			pictSeq = false
		}
		prev = cur
		n += w
	}
	return n
}
