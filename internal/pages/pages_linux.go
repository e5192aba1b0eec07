package pages

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// span is the part of b made of whole pages (nil: none).
func span(b []byte) []byte {
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

// PageOut asks the kernel to reclaim the pages lying wholly inside b
// (MADV_PAGEOUT): the pages of a file mapping are dropped from this
// process's resident memory and read again when touched; nothing's
// contents change. A kernel without MADV_PAGEOUT (before Linux 5.4)
// leaves them be.
func PageOut(b []byte) {
	if s := span(b); s != nil {
		unix.Madvise(s, unix.MADV_PAGEOUT)
	}
}

// Drop drops the pages lying wholly inside b from this process's resident
// memory (MADV_DONTNEED) and returns how many bytes they hold. The pages
// of a file mapping nothing wrote to stay in the kernel's page cache and
// are mapped again, unchanged, when touched; anonymous memory reads as
// zeros afterwards.
func Drop(b []byte) int {
	s := span(b)
	if s == nil || unix.Madvise(s, unix.MADV_DONTNEED) != nil {
		return 0
	}
	return len(s)
}

// Populate maps the pages lying wholly inside b in one call
// (MADV_POPULATE_READ, or _WRITE for memory about to be written) instead
// of a page fault each; kernels before Linux 5.14 leave them to fault in.
func Populate(b []byte, write bool) {
	advice := unix.MADV_POPULATE_READ
	if write {
		advice = unix.MADV_POPULATE_WRITE
	}
	if s := span(b); s != nil {
		unix.Madvise(s, advice)
	}
}
