package train

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pageOut asks the kernel to reclaim the pages lying wholly inside b
// (MADV_PAGEOUT): the pages of a file mapping are dropped from this
// process's resident memory and read again when touched; nothing's
// contents change. A kernel without MADV_PAGEOUT (before Linux 5.4)
// leaves them be.
func pageOut(b []byte) {
	page := uintptr(os.Getpagesize())
	if len(b) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	first := (start + page - 1) &^ (page - 1)
	last := (start + uintptr(len(b))) &^ (page - 1)
	if last <= first {
		return
	}
	unix.Madvise(b[first-start:last-start], unix.MADV_PAGEOUT)
}
