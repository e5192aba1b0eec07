package cpu

import (
	"sort"
	"unsafe"

	"github.com/dstune/dstune/internal/pages"
	"github.com/dstune/dstune/ir"
)

// dropDead lets the kernel take back about n bytes (when there are as
// many) of the arena's pages that hold none of keep (the outputs of the
// last Run a caller still reads): until the next Run they hold only dead
// values, and it writes every value before reading it, so they may come
// back as zeros. It returns the bytes dropped; restoreDead maps them
// again.
//
// A DST step calls it before its selection reads seeds from files, so
// that those pages take the place of dead activations instead of adding
// to the step's peak.
func (e *Executable) dropDead(keep []*ir.Tensor, n int) int {
	if n <= 0 || len(e.arena) == 0 {
		return 0
	}
	base := uintptr(unsafe.Pointer(&e.arena[0]))
	type span struct{ lo, hi uintptr }
	var live []span
	for _, t := range keep {
		b := t.Bytes()
		if len(b) == 0 {
			continue
		}
		lo := uintptr(unsafe.Pointer(&b[0]))
		if lo >= base && lo < base+uintptr(len(e.arena)) {
			live = append(live, span{lo - base, lo - base + uintptr(len(b))})
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].lo < live[j].lo })
	dropped := 0
	at := uintptr(0)
	e.dropped = e.dropped[:0]
	drop := func(lo, hi uintptr) {
		hi = min(hi, lo+uintptr(n-dropped))
		if dropped < n && hi > lo {
			b := e.arena[lo:hi]
			dropped += pages.Drop(b)
			e.dropped = append(e.dropped, b)
		}
	}
	for _, s := range live {
		drop(at, s.lo)
		at = max(at, s.hi)
	}
	drop(at, uintptr(len(e.arena)))
	return dropped
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
