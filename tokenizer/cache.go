package tokenizer

import "sync"

// wordCache remembers the ids of recently encoded words (pre-tokenized
// pieces), which repeat a lot in text; it is safe for concurrent use and
// starts over when full.
type wordCache struct {
	mu sync.RWMutex
	m  map[string][]int32
}

const (
	wordCacheEntries = 1 << 14
	wordCacheMaxWord = 256 // longer words are not kept
)

// appendCached appends the cached ids of word to dst.
func (c *wordCache) appendCached(dst []int, word string) ([]int, bool) {
	c.mu.RLock()
	ids, ok := c.m[word]
	c.mu.RUnlock()
	if !ok {
		return dst, false
	}
	for _, id := range ids {
		dst = append(dst, int(id))
	}
	return dst, true
}

func (c *wordCache) store(word string, ids []int) {
	if len(word) > wordCacheMaxWord {
		return
	}
	kept := make([]int32, len(ids))
	for i, id := range ids {
		kept[i] = int32(id)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= wordCacheEntries {
		c.m = make(map[string][]int32)
	}
	c.m[word] = kept
	c.mu.Unlock()
}

// cachedTokenize appends the ids of word, computed by tokenize on a miss.
func (c *wordCache) cachedTokenize(dst []int, word string, tokenize func([]int, string) []int) []int {
	if out, ok := c.appendCached(dst, word); ok {
		return out
	}
	start := len(dst)
	dst = tokenize(dst, word)
	c.store(word, dst[start:])
	return dst
}
