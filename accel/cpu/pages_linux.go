package cpu

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pageSpan is the part of b made of whole pages.
func pageSpan(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&b[0]))
	first := (start + page - 1) &^ (page - 1)
	last := (start + uintptr(len(b))) &^ (page - 1)
	if last <= first {
		return nil
	}
	return b[first-start : last-start]
}

// populatePages maps the whole pages of b in one call
// (MADV_POPULATE_READ, or _WRITE for memory about to be written) instead
// of a page fault each; kernels before Linux 5.14 leave them to fault.
func populatePages(b []byte, write bool) {
	advice := unix.MADV_POPULATE_READ
	if write {
		advice = unix.MADV_POPULATE_WRITE
	}
	if span := pageSpan(b); span != nil {
		unix.Madvise(span, advice)
	}
}

// dropPages drops the pages lying wholly inside b (MADV_DONTNEED): anonymous
// memory reads as zeros afterwards. It returns the bytes dropped.
func dropPages(b []byte) int {
	span := pageSpan(b)
	if span == nil || unix.Madvise(span, unix.MADV_DONTNEED) != nil {
		return 0
	}
	return len(span)
}
