package cpu

import (
	"slices"
	"unsafe"

	"github.com/dstune/dstune/internal/pages"
)

// dropDead lets the kernel take back about n bytes (when there are as
// many) of the arena's pages that hold none of the executable's outputs:
// after a Run, until the next, those pages hold only dead values, and a
// Run writes every value before reading it, so they may come back as
// zeros. It returns the bytes dropped; restoreDead maps them again.
//
// A DST step calls it before its selection reads seeds from files, so
// that those pages take the place of dead activations instead of adding
// to the step's peak. The outputs are fixed views of the arena, so the
// dead spans are found once.
func (e *Executable) dropDead(n int) int {
	if n <= 0 || len(e.arena) == 0 {
		return 0
	}
	if e.dead == nil {
		e.dead = e.deadSpans()
	}
	dropped := 0
	e.dropped = e.dropped[:0]
	for _, b := range e.dead {
		if dropped >= n {
			break
		}
		b = b[:min(len(b), n-dropped)]
		dropped += pages.Drop(b)
		e.dropped = append(e.dropped, b)
	}
	return dropped
}

// deadSpans is the arena outside its outputs, in order (never nil).
func (e *Executable) deadSpans() [][]byte {
	base := uintptr(unsafe.Pointer(&e.arena[0]))
	type span struct{ lo, hi uintptr }
	var live []span
	for _, t := range e.outputs {
		b := t.Bytes()
		if len(b) == 0 {
			continue
		}
		lo := uintptr(unsafe.Pointer(&b[0]))
		if lo >= base && lo < base+uintptr(len(e.arena)) {
			live = append(live, span{lo - base, lo - base + uintptr(len(b))})
		}
	}
	slices.SortFunc(live, func(a, b span) int { return int(a.lo) - int(b.lo) })
	dead := [][]byte{}
	at := uintptr(0)
	for _, s := range append(live, span{uintptr(len(e.arena)), uintptr(len(e.arena))}) {
		if s.lo > at {
			dead = append(dead, e.arena[at:s.lo])
		}
		at = max(at, s.hi)
	}
	return dead
}

// restoreDead maps the pages dropDead dropped again, as zeros, in one
// call each (MADV_POPULATE_WRITE) rather than a page fault each in the
// next Run.
func (e *Executable) restoreDead() {
	for _, b := range e.dropped {
		pages.Populate(b, true)
	}
	e.dropped = e.dropped[:0]
}
