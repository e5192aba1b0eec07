package tokenizer

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// llama2.c's tokenizer.bin: a little-endian int32 max_token_length, then
// for each token in id order a float32 score, an int32 byte length and the
// token's bytes (sentencepiece pieces with ▁ already turned into spaces;
// id 0 is <unk>, 1 BOS, 2 EOS, 3..258 the byte tokens <0x00>..<0xFF>).
// The file does not store the vocabulary size: tokens run to the end.

type llama2cModel struct {
	pieces []string
	scores []float32
	ids    map[string]int // piece → lowest id with that piece
	maxLen int
	// splitWords: " " is a piece and no piece has a space right after
	// another character, so no merge joins a character to a following
	// space and the text can be merged word by word (each cached), which
	// gives the same tokens as merging it whole.
	splitWords bool

	cache *wordCache
}

const (
	llama2cBOS = 1
	llama2cEOS = 2
	// llama2cByteBase is the id of <0x00>: byte b is token b+3.
	llama2cByteBase = 3
)

// ParseLlama2C reads a llama2.c tokenizer.bin (name is used in errors).
// Ids 3..258 must be the byte tokens <0x00>..<0xFF>, which llama2.c's
// byte fallback emits without looking them up; a file without them (one
// cut short, since the format does not store its length) is refused.
func ParseLlama2C(name string, data []byte) (*Tokenizer, error) {
	fail := func(off int, format string, args ...any) (*Tokenizer, error) {
		return nil, &FormatError{File: name, Part: fmt.Sprintf("byte %d", off), Err: fmt.Errorf(format, args...)}
	}
	if len(data) < 4 {
		return fail(0, "%d bytes: too short for a llama2.c tokenizer.bin", len(data))
	}
	maxLen := int32(binary.LittleEndian.Uint32(data))
	if maxLen <= 0 || maxLen > maxTokenBytes {
		return fail(0, "max_token_length %d out of range 1..%d", maxLen, maxTokenBytes)
	}
	m := &llama2cModel{maxLen: int(maxLen), ids: map[string]int{}, cache: &wordCache{}}
	var offsets []int // where each token starts, for errors
	for off := 4; off < len(data); {
		if len(data)-off < 8 {
			return fail(off, "token %d: %d trailing bytes, want a score and a length", len(m.pieces), len(data)-off)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int32(binary.LittleEndian.Uint32(data[off+4:]))
		if math.IsNaN(float64(score)) {
			return fail(off, "token %d: score is NaN", len(m.pieces))
		}
		if n < 0 || n > maxLen {
			return fail(off+4, "token %d: length %d outside 0..max_token_length %d", len(m.pieces), n, maxLen)
		}
		if len(data)-off-8 < int(n) {
			return fail(off+8, "token %d: %d bytes announced, %d left", len(m.pieces), n, len(data)-off-8)
		}
		piece := string(data[off+8 : off+8+int(n)])
		if _, dup := m.ids[piece]; !dup {
			m.ids[piece] = len(m.pieces)
		}
		m.pieces = append(m.pieces, piece)
		m.scores = append(m.scores, score)
		offsets = append(offsets, off)
		off += 8 + int(n)
	}
	if len(m.pieces) <= llama2cEOS {
		return fail(len(data), "%d tokens: fewer than <unk>, BOS and EOS", len(m.pieces))
	}
	// encode's byte fallback emits byte b as id b+3 without looking it up:
	// a file without those 256 tokens (one cut short, say) would give ids
	// that are not its tokens, and text would be lost.
	for b := range 256 {
		id := llama2cByteBase + b
		want := fmt.Sprintf("<0x%02X>", b)
		switch {
		case id >= len(m.pieces):
			return fail(len(data), "the file ends after %d tokens: ids %d..%d must be the byte tokens <0x00>..<0xFF>, and id %d (%s) is missing; is the file cut short?",
				len(m.pieces), llama2cByteBase, llama2cByteBase+255, id, want)
		case !isLlama2CByteToken(m.pieces[id], byte(b)):
			return fail(offsets[id], "token %d is %q, want the byte token %s (ids %d..%d are the byte tokens <0x00>..<0xFF>)",
				id, m.pieces[id], want, llama2cByteBase, llama2cByteBase+255)
		}
	}
	_, hasSpace := m.ids[" "]
	m.splitWords = hasSpace
	for _, p := range m.pieces {
		for i := 1; i < len(p); i++ {
			if p[i] == ' ' && p[i-1] != ' ' {
				m.splitWords = false
			}
		}
	}

	t := &Tokenizer{
		name: name, kind: "llama2.c", llama: m,
		vocab: m.pieces, ids: m.ids, special: make([]bool, len(m.pieces)),
		bos: llama2cBOS, eos: llama2cEOS, pad: -1, unk: 0,
	}
	t.special[llama2cBOS], t.special[llama2cEOS] = true, true
	return t, nil
}

// encode is llama2.c's encode(): a dummy-prefix space, each UTF-8 code
// point looked up (unknown ones as byte tokens, id byte+3), then greedily
// the adjacent pair whose concatenation is the highest-scoring token is
// merged, leftmost on ties, until no pair is a token.
func (m *llama2cModel) encode(text string, bos bool) []int {
	var ids []int
	if bos {
		ids = append(ids, llama2cBOS)
	}
	if text == "" {
		return ids
	}
	if !m.splitWords {
		return append(ids, m.mergeText(text, true)...)
	}
	// The dummy prefix " " starts the first word.
	text = " " + text
	start := 0
	for i := 1; i < len(text); i++ {
		if text[i] == ' ' && text[i-1] != ' ' {
			ids = m.mergeCached(ids, text[start:i], start == 0)
			start = i
		}
	}
	return m.mergeCached(ids, text[start:], start == 0)
}

// mergeCached appends the tokens of one word of " "+text; first marks the
// word that starts with the dummy prefix.
func (m *llama2cModel) mergeCached(dst []int, word string, first bool) []int {
	if first {
		word = word[1:]
	}
	key := word
	if first {
		key = "\x00" + word // the dummy prefix makes it another word
	}
	return m.cache.cachedTokenize(dst, key, func(dst []int, _ string) []int {
		return append(dst, m.mergeText(word, first)...)
	})
}

// mergeText is llama2.c's symbol split and merge of text, after the dummy
// prefix when prefix is set.
func (m *llama2cModel) mergeText(text string, prefix bool) []int {
	var syms []int
	if id, ok := m.ids[" "]; ok && prefix {
		syms = append(syms, id)
	}
	for i := 0; i < len(text); {
		// A code point: one byte, then up to three continuation bytes.
		j := i + 1
		for j < len(text) && j-i < 4 && text[j]&0xC0 == 0x80 {
			j++
		}
		if id, ok := m.ids[text[i:j]]; ok {
			syms = append(syms, id)
		} else {
			for k := i; k < j; k++ {
				syms = append(syms, int(text[k])+llama2cByteBase)
			}
		}
		i = j
	}
	return m.merge(syms)
}

// llamaMerge is a candidate: the pair starting at symbol pos merges into id.
type llamaMerge struct {
	pos   int
	id    int
	score float32
}

type llamaQueue []llamaMerge

func (q llamaQueue) Len() int { return len(q) }
func (q llamaQueue) Less(i, j int) bool {
	if q[i].score != q[j].score {
		return q[i].score > q[j].score
	}
	return q[i].pos < q[j].pos
}
func (q llamaQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *llamaQueue) Push(x any)   { *q = append(*q, x.(llamaMerge)) }
func (q *llamaQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// merge applies llama2.c's merge loop with a priority queue: the same
// choice (best score, then leftmost) in O(n log n) instead of O(n²).
func (m *llama2cModel) merge(syms []int) []int {
	n := len(syms)
	next := make([]int, n)
	prev := make([]int, n)
	alive := make([]bool, n)
	for i := range syms {
		next[i], prev[i], alive[i] = i+1, i-1, true
	}
	if n > 0 {
		next[n-1] = -1
	}
	var q llamaQueue
	var buf strings.Builder
	candidate := func(i int) {
		j := next[i]
		if j < 0 {
			return
		}
		a, b := m.piece(syms[i]), m.piece(syms[j])
		if len(a)+len(b) > m.maxLen {
			return
		}
		buf.Reset()
		buf.WriteString(a)
		buf.WriteString(b)
		if id, ok := m.ids[buf.String()]; ok {
			heap.Push(&q, llamaMerge{pos: i, id: id, score: m.scores[id]})
		}
	}
	for i := 0; i+1 < n; i++ {
		candidate(i)
	}
	for q.Len() > 0 {
		top := heap.Pop(&q).(llamaMerge)
		i := top.pos
		j := next[i]
		if !alive[i] || j < 0 {
			continue
		}
		// Stale when either side changed since the entry was queued.
		if id, ok := m.ids[m.piece(syms[i])+m.piece(syms[j])]; !ok || id != top.id {
			continue
		}
		syms[i] = top.id
		alive[j] = false
		next[i] = next[j]
		if next[j] >= 0 {
			prev[next[j]] = i
		}
		if prev[i] >= 0 {
			candidate(prev[i])
		}
		candidate(i)
	}
	out := make([]int, 0, n)
	for i := 0; i >= 0 && i < n; i = next[i] {
		out = append(out, syms[i])
	}
	return out
}

func (m *llama2cModel) piece(id int) string {
	if id < 0 || id >= len(m.pieces) {
		return ""
	}
	return m.pieces[id]
}

// decode is llama2.c's decode() over a sequence: a piece right after BOS
// loses its leading space, and <0xHH> pieces stand for their byte.
func (m *llama2cModel) decode(ids []int, skipSpecial, raw bool) string {
	var b strings.Builder
	prev := -1
	for _, id := range ids {
		if id < 0 || id >= len(m.pieces) {
			continue
		}
		if skipSpecial && (id == llama2cBOS || id == llama2cEOS) {
			prev = id
			continue
		}
		p := m.pieces[id]
		if prev == llama2cBOS && strings.HasPrefix(p, " ") {
			p = p[1:]
		}
		if c, ok := llama2cByte(p); ok {
			b.WriteByte(c)
		} else {
			b.WriteString(p)
		}
		prev = id
	}
	if raw {
		return b.String()
	}
	return toValidUTF8(b.String())
}

// isLlama2CByteToken reports whether p is byte b's token "<0xHH>" (hex
// digits in either case, as llama2.c's decode reads them).
func isLlama2CByteToken(p string, b byte) bool {
	if len(p) != 6 || !strings.HasPrefix(p, "<0x") || p[5] != '>' {
		return false
	}
	hi, ok1 := hexValue(p[3])
	lo, ok2 := hexValue(p[4])
	return ok1 && ok2 && hi<<4|lo == b
}

// llama2cByte reads a "<0xHH>" piece as llama2.c's sscanf("<0x%02hhX>")
// does: "<0x" and one or two hex digits.
func llama2cByte(p string) (byte, bool) {
	if !strings.HasPrefix(p, "<0x") || len(p) < 4 {
		return 0, false
	}
	v, ok := hexValue(p[3])
	if !ok {
		return 0, false
	}
	if len(p) > 4 {
		if lo, ok := hexValue(p[4]); ok {
			v = v<<4 | lo
		}
	}
	return v, true
}
