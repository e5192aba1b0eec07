package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// A model turns one pre-tokenized piece into token ids.
type model interface {
	tokenize(dst []int, word string) []int
}

// bpeModel is byte-pair encoding as the Rust tokenizers library does it:
// the word's characters (with byte fallback or an unknown token for those
// not in the vocabulary) are merged pair by pair, always the pair whose
// merge rule comes first, leftmost on ties.
type bpeModel struct {
	vocab        map[string]int
	merges       map[uint64]uint64 // pair (a<<32|b) → rank<<32 | merged id
	unk          int               // -1: none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix
	byteIDs      [256]int32
	// splitMetaspace: no vocabulary entry has ▁ right after another
	// character, so no merge crosses the start of a ▁-word, and a long
	// piece (sentencepiece-style models have no pre-tokenizer, so the
	// whole text is one piece) is encoded word by word, each cached.
	splitMetaspace bool
	// rawBytes: the words arrive as raw bytes from a ByteLevel
	// pre-tokenizer that leaves the mapping to byte-level characters to
	// the model, which maps each byte straight to its symbol (rawVocab
	// holds the vocabulary by raw bytes for ignore_merges).
	rawBytes bool
	rawVocab map[string]int

	cache *wordCache
}

// takeRawBytes makes the model map raw bytes to byte-level symbols itself.
func (m *bpeModel) takeRawBytes() bool {
	if m.prefix != "" || m.suffix != "" {
		return false
	}
	m.rawBytes = true
	if m.ignoreMerges {
		m.rawVocab = make(map[string]int, len(m.vocab))
		for tok, id := range m.vocab {
			if raw, ok := byteLevelRaw(tok); ok {
				m.rawVocab[raw] = id
			}
		}
	}
	return true
}

// byteLevelRaw returns the bytes a byte-level token stands for.
func byteLevelRaw(tok string) (string, bool) {
	buf := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := runeToByte[r]
		if !ok {
			return "", false
		}
		buf = append(buf, b)
	}
	return string(buf), true
}

// bpeOptions are the BPE model's settings in tokenizer.json.
type bpeOptions struct {
	fuseUnk, byteFallback, ignoreMerges bool
	prefix, suffix                      string
}

func pairKey(a, b int) uint64 { return uint64(a)<<32 | uint64(uint32(b)) }

// newBPE checks the merges against the vocabulary: each side and the
// merged token must be in it.
func newBPE(vocab map[string]int, merges [][2]string, unk string, opts bpeOptions) (*bpeModel, error) {
	m := &bpeModel{
		vocab: vocab, fuseUnk: opts.fuseUnk, byteFallback: opts.byteFallback,
		ignoreMerges: opts.ignoreMerges, prefix: opts.prefix, suffix: opts.suffix,
		cache: &wordCache{},
	}
	m.unk = -1
	if unk != "" {
		id, ok := vocab[unk]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocabulary", unk)
		}
		m.unk = id
	}
	m.merges = make(map[uint64]uint64, len(merges))
	for rank, mg := range merges {
		a, ok := vocab[mg[0]]
		if !ok {
			return nil, fmt.Errorf("merges[%d]: %q is not in the vocabulary", rank, mg[0])
		}
		b, ok := vocab[mg[1]]
		if !ok {
			return nil, fmt.Errorf("merges[%d]: %q is not in the vocabulary", rank, mg[1])
		}
		right := mg[1]
		if len(right) < len(m.prefix) || right[:len(m.prefix)] != m.prefix {
			if m.prefix != "" {
				return nil, fmt.Errorf("merges[%d]: %q does not start with the continuing-subword prefix %q", rank, right, m.prefix)
			}
		}
		merged, ok := vocab[mg[0]+right[len(m.prefix):]]
		if !ok {
			return nil, fmt.Errorf("merges[%d]: the merged token %q is not in the vocabulary", rank, mg[0]+right[len(m.prefix):])
		}
		m.merges[pairKey(a, b)] = uint64(rank)<<32 | uint64(merged)
	}
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = int32(id)
		}
	}
	m.splitMetaspace = canSplitBefore(vocab, '▁') && !m.ignoreMerges && m.prefix == "" && m.suffix == ""
	return m, nil
}

// canSplitBefore reports whether sep is a token and no token has sep
// right after another character, so that merges never join a character
// to a following sep.
func canSplitBefore(vocab map[string]int, sep rune) bool {
	if _, ok := vocab[string(sep)]; !ok {
		return false
	}
	for tok := range vocab {
		prev := sep
		for _, r := range tok {
			if r == sep && prev != sep {
				return false
			}
			prev = r
		}
	}
	return true
}

func (m *bpeModel) tokenize(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	if m.ignoreMerges {
		vocab := m.vocab
		if m.rawBytes {
			vocab = m.rawVocab
		}
		if id, ok := vocab[word]; ok {
			return append(dst, id)
		}
	}
	if m.splitMetaspace && len(word) > wordCacheMaxWord {
		return m.tokenizeMetaspaceWords(dst, word)
	}
	return m.tokenizeWord(dst, word)
}

// tokenizeMetaspaceWords encodes word in parts, cut before each ▁ that
// follows another character.
func (m *bpeModel) tokenizeMetaspaceWords(dst []int, word string) []int {
	const sep = "▁"
	start := 0
	for i := 1; i < len(word); {
		j := strings.Index(word[i:], sep)
		if j < 0 {
			break
		}
		i += j
		if !strings.HasSuffix(word[:i], sep) {
			dst = m.tokenizeWord(dst, word[start:i])
			start = i
		}
		i += len(sep)
	}
	return m.tokenizeWord(dst, word[start:])
}

func (m *bpeModel) tokenizeWord(dst []int, word string) []int {
	return m.cache.cachedTokenize(dst, word, m.merge)
}

// merge is BPE proper on one word.
func (m *bpeModel) merge(dst []int, word string) []int {
	for _, s := range m.mergeAll(m.symbols(word)) {
		if s.len > 0 {
			dst = append(dst, int(s.id))
		}
	}
	return dst
}

type bpeSymbol struct {
	id         int32
	prev, next int32
	len        int32 // bytes of the word covered; 0 once merged away
}

// symbols splits the word into its initial symbols.
func (m *bpeModel) symbols(word string) []bpeSymbol {
	syms := make([]bpeSymbol, 0, len(word))
	add := func(id, n int) {
		syms = append(syms, bpeSymbol{id: int32(id), len: int32(n)})
	}
	unkID, unkLen := -1, 0
	for i := 0; i < len(word); {
		var s string
		var w int
		if m.rawBytes {
			s, w = byteToString[word[i]], 1
		} else {
			_, w = utf8.DecodeRuneInString(word[i:])
			s = word[i : i+w]
		}
		if i > 0 && m.prefix != "" {
			s = m.prefix + s
		}
		if i+w == len(word) && m.suffix != "" {
			s += m.suffix
		}
		i += w
		if id, ok := m.vocab[s]; ok {
			if unkID >= 0 {
				add(unkID, unkLen)
				unkID = -1
			}
			add(id, w)
			continue
		}
		if m.byteFallback && m.allBytes(s) {
			for j := 0; j < len(s); j++ {
				add(int(m.byteIDs[s[j]]), 1)
			}
			continue
		}
		if m.unk >= 0 {
			switch {
			case unkID >= 0 && m.fuseUnk:
				unkLen += w
			case unkID >= 0:
				add(unkID, unkLen)
				unkID, unkLen = m.unk, w
			default:
				unkID, unkLen = m.unk, w
			}
		}
	}
	if unkID >= 0 {
		add(unkID, unkLen)
	}
	for i := range syms {
		syms[i].prev = int32(i - 1)
		syms[i].next = int32(i + 1)
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

func (m *bpeModel) allBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if m.byteIDs[s[i]] < 0 {
			return false
		}
	}
	return true
}

type bpeMerge struct {
	pos, rank int32
	merged    int32
}

// mergeQueue is a binary min-heap of candidate merges ordered by rank,
// then position (written out rather than through container/heap, whose
// interface calls dominate the time on long words).
type mergeQueue []bpeMerge

func (q mergeQueue) less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}

func (q *mergeQueue) push(x bpeMerge) {
	*q = append(*q, x)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *mergeQueue) pop() bpeMerge {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && h.less(r, l) {
			c = r
		}
		if !h.less(c, i) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	*q = h
	return top
}

func (q *mergeQueue) init() {
	h := *q
	for i := len(h)/2 - 1; i >= 0; i-- {
		for j := i; ; {
			l := 2*j + 1
			if l >= len(h) {
				break
			}
			c := l
			if r := l + 1; r < len(h) && h.less(r, l) {
				c = r
			}
			if !h.less(c, j) {
				break
			}
			h[j], h[c] = h[c], h[j]
			j = c
		}
	}
}

func (m *bpeModel) lookup(a, b int32) (rank, merged int32, ok bool) {
	v, ok := m.merges[pairKey(int(a), int(b))]
	return int32(v >> 32), int32(uint32(v)), ok
}

// mergeAll applies the merges with a priority queue of candidate pairs,
// skipping entries that earlier merges made stale.
func (m *bpeModel) mergeAll(syms []bpeSymbol) []bpeSymbol {
	if len(syms) < 2 {
		return syms
	}
	q := make(mergeQueue, 0, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if rank, merged, ok := m.lookup(syms[i].id, syms[i+1].id); ok {
			q = append(q, bpeMerge{pos: int32(i), rank: rank, merged: merged})
		}
	}
	q.init()
	for len(q) > 0 {
		top := q.pop()
		cur := &syms[top.pos]
		if cur.len == 0 || cur.next < 0 {
			continue
		}
		right := syms[cur.next]
		if _, merged, ok := m.lookup(cur.id, right.id); !ok || merged != top.merged {
			continue
		}
		cur.id = top.merged
		cur.len += right.len
		syms[cur.next].len = 0
		cur.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if rank, merged, ok := m.lookup(syms[cur.prev].id, cur.id); ok {
				q.push(bpeMerge{pos: cur.prev, rank: rank, merged: merged})
			}
		}
		if cur.next >= 0 {
			if rank, merged, ok := m.lookup(cur.id, syms[cur.next].id); ok {
				q.push(bpeMerge{pos: top.pos, rank: rank, merged: merged})
			}
		}
	}
	return syms
}
