package tokenizer

import (
	"sort"
)

// byteTrie maps strings to values, for the longest-match and
// common-prefix searches of added tokens and Unigram pieces. Nodes are
// numbered in breadth-first order; node n's children are the edges
// lo[n]..lo[n+1], sorted by label.
type byteTrie struct {
	root   [256]int32 // child of the root per byte, 0 when none
	lo     []int32
	labels []byte
	next   []int32
	value  []int32 // per node, -1 when no key ends there
}

// newByteTrie builds the trie of keys (duplicates keep the first value).
func newByteTrie(keys []string, values []int32) *byteTrie {
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return keys[order[a]] < keys[order[b]] })
	sorted := make([]string, len(keys))
	vals := make([]int32, len(keys))
	for i, k := range order {
		sorted[i], vals[i] = keys[k], values[k]
	}
	t := &byteTrie{}
	type task struct{ lo, hi, depth int }
	queue := []task{{0, len(sorted), 0}}
	for n := 0; n < len(queue); n++ {
		q := queue[n]
		t.lo = append(t.lo, int32(len(t.labels)))
		v := int32(-1)
		i := q.lo
		for i < q.hi && len(sorted[i]) == q.depth {
			if v < 0 {
				v = vals[i]
			}
			i++
		}
		t.value = append(t.value, v)
		for i < q.hi {
			b := sorted[i][q.depth]
			j := i
			for j < q.hi && sorted[j][q.depth] == b {
				j++
			}
			t.labels = append(t.labels, b)
			t.next = append(t.next, int32(len(queue)))
			queue = append(queue, task{i, j, q.depth + 1})
			i = j
		}
	}
	t.lo = append(t.lo, int32(len(t.labels)))
	for e := t.lo[0]; e < t.lo[1]; e++ {
		t.root[t.labels[e]] = t.next[e]
	}
	return t
}

func (t *byteTrie) child(n int32, b byte) int32 {
	if n == 0 {
		return t.root[b]
	}
	lo, hi := int(t.lo[n]), int(t.lo[n+1])
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch l := t.labels[m]; {
		case l == b:
			return t.next[m]
		case l < b:
			lo = m + 1
		default:
			hi = m
		}
	}
	return 0
}

// longest returns the end of the longest key that s[pos:] starts with.
func (t *byteTrie) longest(s string, pos int) (end int, value int32, ok bool) {
	n := int32(0)
	for i := pos; i < len(s); i++ {
		if n = t.child(n, s[i]); n == 0 {
			break
		}
		if v := t.value[n]; v >= 0 {
			end, value, ok = i+1, v, true
		}
	}
	return end, value, ok
}

// prefixes calls fn for every key that s[pos:] starts with, shortest first.
func (t *byteTrie) prefixes(s string, pos int, fn func(end int, value int32)) {
	n := int32(0)
	for i := pos; i < len(s); i++ {
		if n = t.child(n, s[i]); n == 0 {
			return
		}
		if v := t.value[n]; v >= 0 {
			fn(i+1, v)
		}
	}
}
