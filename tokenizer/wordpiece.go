package tokenizer

import (
	"unicode/utf8"
)

// wordPieceModel is BERT's greedy longest-match-first subword split: the
// longest vocabulary entry that starts the word, then the longest entry
// (with the continuing prefix, "##") that starts the rest, and so on; a
// word that cannot be covered, or is longer than maxChars, becomes the
// unknown token.
type wordPieceModel struct {
	vocab    map[string]int
	unk      int
	prefix   string
	maxChars int
	cache    *wordCache
}

func (m *wordPieceModel) tokenize(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	return m.cache.cachedTokenize(dst, word, m.split)
}

func (m *wordPieceModel) split(dst []int, word string) []int {
	var buf []byte
	if utf8.RuneCountInString(word) > m.maxChars {
		return append(dst, m.unk)
	}
	start := len(dst)
	for pos := 0; pos < len(word); {
		end := len(word)
		found := -1
		for end > pos {
			buf = buf[:0]
			if pos > 0 {
				buf = append(buf, m.prefix...)
			}
			buf = append(buf, word[pos:end]...)
			if id, ok := m.vocab[string(buf)]; ok {
				found = id
				break
			}
			_, w := utf8.DecodeLastRuneInString(word[pos:end])
			end -= w
		}
		if found < 0 {
			return append(dst[:start], m.unk)
		}
		dst = append(dst, found)
		pos = end
	}
	return dst
}

// wordLevelModel maps each whole piece to its id, or to the unknown token.
type wordLevelModel struct {
	vocab map[string]int
	unk   int // -1: none, the piece is dropped
}

func (m *wordLevelModel) tokenize(dst []int, word string) []int {
	if id, ok := m.vocab[word]; ok {
		return append(dst, id)
	}
	if m.unk >= 0 {
		return append(dst, m.unk)
	}
	return dst
}
