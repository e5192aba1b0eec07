//go:build unix

package onnx

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func openFile(path string, noFollow bool) (*os.File, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK // a FIFO must not block the open
	if noFollow {
		flags |= syscall.O_NOFOLLOW
	}
	return os.OpenFile(path, flags, 0)
}

// mapFile maps size bytes of f private and copy-on-write: a write through
// the slice copies the page for this process and never reaches the file
// (so tensors viewing the mapping can be updated in memory, as tensors
// read into memory can).
func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return unix.Munmap(data) }, nil
}
