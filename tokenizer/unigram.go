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
	for i, p := range pieces {
		if _, dup := m.vocab[p]; !dup {
			m.vocab[p] = i
		}
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
	if len(pieces) == 0 {
		minScore = 0
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
	if word == "" {
		return dst
	}
	if m.laterOnTies {
		return m.viterbi(dst, word)
	}
	return m.cache.cachedTokenize(dst, word, m.viterbi)
}

// viterbi finds the best segmentation of word.
func (m *unigramModel) viterbi(dst []int, word string) []int {
	best := make([]latticeNode, len(word)+1)
	for i := range best {
		best[i].start = -1
	}
	best[0].start = 0
	for pos := 0; pos < len(word); {
		_, charLen := utf8.DecodeRuneInString(word[pos:])
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
	return dst
}

func (m *unigramModel) allBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if m.byteIDs[s[i]] < 0 {
			return false
		}
	}
	return true
}
