package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// addedToken is an entry of tokenizer.json's "added_tokens": a token
// found in the text before any normalization or model runs.
type addedToken struct {
	id         int
	content    string
	singleWord bool // only where it is not part of a longer word
	lstrip     bool // swallow the whitespace before it
	rstrip     bool // swallow the whitespace after it
	normalized bool // matched against the normalized text
	special    bool // skipped by Decode(ids, true)
}

// addedVocab finds added tokens in text the way the Rust tokenizers
// library does: tokens that are not normalized are matched in the
// original text (leftmost, longest), then the text between them is
// normalized and searched for the normalized tokens.
type addedVocab struct {
	tokens []addedToken
	raw    *byteTrie // contents of the tokens matched before normalization
	norm   *byteTrie // normalized contents of the others
}

// section is text between added tokens (token < 0) or one added token.
type section struct {
	text    string
	token   int // index into addedVocab.tokens, or -1
	atStart bool
}

func newAddedVocab(tokens []addedToken, n normalizer) (*addedVocab, error) {
	v := &addedVocab{tokens: tokens}
	var rawKeys, normKeys []string
	var rawVals, normVals []int32
	for i, t := range tokens {
		if t.content == "" {
			continue
		}
		if t.normalized {
			content := t.content
			if n != nil {
				var err error
				if content, err = normalizeBounded(n, content); err != nil {
					return nil, fmt.Errorf("added token %d (%s): %w", t.id, clipText(t.content), err)
				}
			}
			if content == "" {
				continue
			}
			normKeys = append(normKeys, content)
			normVals = append(normVals, int32(i))
		} else {
			rawKeys = append(rawKeys, t.content)
			rawVals = append(rawVals, int32(i))
		}
	}
	if len(rawKeys) > 0 {
		v.raw = newByteTrie(rawKeys, rawVals)
	}
	if len(normKeys) > 0 {
		v.norm = newByteTrie(normKeys, normVals)
	}
	return v, nil
}

// extract splits text into sections, normalizing the text between added
// tokens with n.
func (v *addedVocab) extract(text string, n normalizer) ([]section, error) {
	var out []section
	for _, s := range v.split(nil, section{text: text, token: -1, atStart: true}, v.raw) {
		if s.token >= 0 {
			out = append(out, s)
			continue
		}
		if n != nil {
			var err error
			if s.text, err = normalizeBounded(n, s.text); err != nil {
				return nil, err
			}
		}
		out = v.split(out, s, v.norm)
	}
	return out, nil
}

// split cuts s at the tokens of trie, appending non-empty sections to dst.
func (v *addedVocab) split(dst []section, s section, trie *byteTrie) []section {
	text := s.text
	if trie == nil {
		if text != "" {
			dst = append(dst, s)
		}
		return dst
	}
	startOffset := 0
	emit := func(start, end, token int) {
		if end > start {
			dst = append(dst, section{text: text[start:end], token: token, atStart: s.atStart && start == 0})
		}
	}
	for pos := 0; pos < len(text); {
		if trie.root[text[pos]] == 0 {
			pos++
			continue
		}
		end, idx, ok := trie.longest(text, pos)
		if !ok {
			pos++
			continue
		}
		tok := &v.tokens[idx]
		start := pos
		pos = end
		if tok.singleWord {
			before := start > 0 && endsWithWordChar(text[:start])
			after := end < len(text) && startsWithWordChar(text[end:])
			if before || after {
				continue
			}
		}
		if tok.lstrip {
			start = max(startOffset, len(trimRightSpace(text[:start])))
		}
		if tok.rstrip {
			end = len(text) - len(trimLeftSpace(text[end:]))
			pos = end
		}
		emit(startOffset, start, -1)
		dst = append(dst, section{text: text[start:end], token: int(idx), atStart: s.atStart && start == 0})
		startOffset = end
	}
	emit(startOffset, len(text), -1)
	return dst
}

func endsWithWordChar(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWordChar(r)
}

func startsWithWordChar(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordChar(r)
}

func trimRightSpace(s string) string {
	for len(s) > 0 {
		r, w := utf8.DecodeLastRuneInString(s)
		if !isWhitespace(r) {
			break
		}
		s = s[:len(s)-w]
	}
	return s
}

func trimLeftSpace(s string) string {
	for len(s) > 0 {
		r, w := utf8.DecodeRuneInString(s)
		if !isWhitespace(r) {
			break
		}
		s = s[w:]
	}
	return s
}

// clipText quotes s for a message, its first 40 bytes when longer.
func clipText(s string) string {
	if len(s) <= 40 {
		return fmt.Sprintf("%q", s)
	}
	cut := 40
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}
