//go:build unix

package regfile

import (
	"os"
	"syscall"
)

// openNonblocking opens path read-only; O_NONBLOCK makes the open of a
// FIFO return at once (it changes nothing for regular files).
func openNonblocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
