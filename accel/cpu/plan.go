package cpu

import (
	"slices"
	"sort"
)

// slot is one buffer of the memory plan: a byte size and the span of
// steps during which it holds a live value (inclusive; -1 is "before the
// first step", len(steps) "after the last", i.e. a graph output).
type slot struct {
	size        int
	first, last int
	offset      int
}

// planAlign keeps every buffer on a cache line, which vector kernels like.
const planAlign = 64

// planMemory gives every slot an offset in one arena so that slots whose
// lifetimes overlap never overlap in memory, and returns the arena size.
// Greedy by size: the largest buffers are placed first, each at the lowest
// offset that fits between the already placed buffers it is alive with.
// The result depends only on the slots (ties broken by index), so a graph
// always gets the same layout.
func planMemory(slots []*slot) int {
	order := make([]int, len(slots))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return slots[order[a]].size > slots[order[b]].size })
	// placed is kept in offset order, so that the buffers alive with a
	// slot are met lowest first without sorting them for every slot (a
	// graph with thousands of values alive at once, a Sum of many
	// operands, spent seconds there).
	var placed []*slot
	total := 0
	for _, i := range order {
		s := slots[i]
		size := aligned(s.size)
		if size == 0 {
			s.offset = 0
			continue
		}
		off := 0
		for _, p := range placed {
			if p.first > s.last || s.first > p.last {
				continue // not alive at the same time
			}
			if p.offset-off >= size {
				break
			}
			off = max(off, p.offset+aligned(p.size))
		}
		s.offset = off
		total = max(total, off+size)
		at := sort.Search(len(placed), func(j int) bool { return placed[j].offset > off })
		placed = slices.Insert(placed, at, s)
	}
	return total
}

func aligned(size int) int { return (size + planAlign - 1) / planAlign * planAlign }
