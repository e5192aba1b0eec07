package tokenizer

import (
	"fmt"
	"math"
	"unicode/utf8"
)

// unigramModel is sentencepiece's unigram language model: the split of a
// piece whose pieces' log-probabilities sum highest (Viterbi over the
// lattice of vocabulary entries), with an unknown token of score
// min - 10 for characters no entry covers. Consecutive unknowns fuse.
type unigramModel struct {
	pieces       []string
	scores       []float64
	vocab        map[string]int
	trie         *byteTrie
	unk          int // -1: none
	unkScore     float64
	byteFallback bool
	byteIDs      [256]int32
	// laterOnTies makes an equal-scoring later path win instead of the
	// first; tests use it to find strings whose best segmentations tie.
	laterOnTies bool
	cache       *wordCache
}

const unigramUnknownPenalty = 10.0

func newUnigram(pieces []string, scores []float64, unk int, byteFallback bool) (*unigramModel, error) {
	m := &unigramModel{pieces: pieces, scores: scores, unk: unk, byteFallback: byteFallback, cache: &wordCache{}}
	m.vocab = make(map[string]int, len(pieces))
	ids := make([]int32, len(pieces))
	minScore := math.Inf(1)
	if len(pieces) == 0 {
		return nil, fmt.Errorf("vocab is empty: a Unigram model needs pieces")
	}
	for i, p := range pieces {
		if j, dup := m.vocab[p]; dup {
			return nil, fmt.Errorf("vocab[%d]: piece %q is also vocab[%d]: a piece is one token", i, p, j)
		}
		m.vocab[p] = i
		ids[i] = int32(i)
		if s := scores[i]; s < minScore {
			minScore = s
		}
		if math.IsNaN(scores[i]) {
			return nil, fmt.Errorf("vocab[%d]: score is NaN", i)
		}
	}
	if unk >= len(pieces) {
		return nil, fmt.Errorf("unk_id %d is outside the vocabulary of %d pieces", unk, len(pieces))
	}
	m.unkScore = minScore - unigramUnknownPenalty
	m.trie = newByteTrie(pieces, ids)
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := m.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = int32(id)
		}
	}
	return m, nil
}

type latticeNode struct {
	score float64
	start int32 // -1: not reached
	id    int32
}

func (m *unigramModel) tokenize(dst []int, word string) []int {
	dst, _ = m.tokenizeChecked(dst, word)
	return dst
}

// tokenizeChecked appends the ids of word. Without an unknown token, a
// character no piece covers is an error, as in the Rust library (and is
// left out of the ids).
func (m *unigramModel) tokenizeChecked(dst []int, word string) ([]int, error) {
	if word == "" {
		return dst, nil
	}
	if m.laterOnTies {
		return m.viterbi(dst, word)
	}
	if out, ok := m.cache.appendCached(dst, word); ok {
		return out, nil
	}
	start := len(dst)
	dst, err := m.viterbi(dst, word)
	if err == nil {
		m.cache.store(word, dst[start:])
	}
	return dst, err
}

// viterbi finds the best segmentation of word. Without an unknown token,
// it fails where the Rust library does: where the lattice would take an
// unknown character as the best way to a position so far (even when the
// best segmentation of the whole word then avoids it).
func (m *unigramModel) viterbi(dst []int, word string) ([]int, error) {
	var uncovered error
	best := make([]latticeNode, len(word)+1)
	for i := range best {
		best[i].start = -1
	}
	best[0].start = 0
	for pos := 0; pos < len(word); {
		r, charLen := utf8.DecodeRuneInString(word[pos:])
		if best[pos].start < 0 && pos > 0 {
			// Unreachable positions (inside a character) are skipped.
			pos += charLen
			continue
		}
		base := best[pos].score
		single := false
		m.trie.prefixes(word, pos, func(end int, id int32) {
			cand := base + m.scores[id]
			if n := &best[end]; n.start < 0 || cand > n.score || m.laterOnTies && cand == n.score {
				*n = latticeNode{score: cand, start: int32(pos), id: id}
			}
			if end-pos == charLen {
				single = true
			}
		})
		if !single {
			cand := base + m.unkScore
			if n := &best[pos+charLen]; n.start < 0 || cand > n.score {
				*n = latticeNode{score: cand, start: int32(pos), id: int32(m.unk)}
				if m.unk < 0 && uncovered == nil {
					uncovered = fmt.Errorf("cannot encode %q (U+%04X) at byte %d of the word %s: the Unigram model has no piece for the character alone and no unk_id",
						word[pos:pos+charLen], r, pos, excerpt(word, pos))
				}
			}
		}
		pos += charLen
	}
	// Walk back from the end, fusing runs of unknowns.
	var spans [][2]int
	for end := len(word); end > 0; {
		n := best[end]
		start := int(n.start)
		if m.unk >= 0 && int(n.id) == m.unk && len(spans) > 0 && spans[len(spans)-1][1] < 0 {
			spans[len(spans)-1][0] = start
		} else if m.unk >= 0 && int(n.id) == m.unk {
			spans = append(spans, [2]int{start, -end}) // negative end marks an unknown run
		} else {
			spans = append(spans, [2]int{start, end})
		}
		end = start
	}
	for i := len(spans) - 1; i >= 0; i-- {
		start, end := spans[i][0], spans[i][1]
		if end < 0 {
			end = -end
		}
		text := word[start:end]
		if id, ok := m.vocab[text]; ok {
			dst = append(dst, id)
			continue
		}
		if m.byteFallback && m.allBytes(text) {
			for j := 0; j < len(text); j++ {
				dst = append(dst, int(m.byteIDs[text[j]]))
			}
			continue
		}
		if m.unk >= 0 {
			dst = append(dst, m.unk)
		}
	}
	return dst, uncovered
}

// excerpt quotes s, or for a long s the part around byte pos.
func excerpt(s string, pos int) string {
	const context = 24
	if len(s) <= 3*context {
		return fmt.Sprintf("%q", s)
	}
	start, end := max(pos-context, 0), min(pos+context, len(s))
	for start > 0 && !utf8.RuneStart(s[start]) {
		start--
	}
	for end < len(s) && !utf8.RuneStart(s[end]) {
		end++
	}
	out := fmt.Sprintf("%q", s[start:end])
	if start > 0 {
		out = "…" + out
	}
	if end < len(s) {
		out += "…"
	}
	return out
}

func (m *unigramModel) allBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if m.byteIDs[s[i]] < 0 {
			return false
		}
	}
	return true
}
