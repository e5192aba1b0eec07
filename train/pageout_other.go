//go:build !linux

package train

// pageOut is a no-op where the kernel offers no MADV_PAGEOUT.
func pageOut([]byte) {}
