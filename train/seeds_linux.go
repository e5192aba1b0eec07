package train

import (
	"bufio"
	"os"
	"unsafe"

	"github.com/dstune/dstune/ir"
	"golang.org/x/sys/unix"
)

// seedAlign places every seed of a seed file on its own pages, so that
// dropping one's pages never touches another's.
const seedAlign = 4096

// spillSeeds writes the values of params to a new file in dir, each at a
// page boundary, maps it read-only and removes the file (the mapping
// keeps its data until unmapped), and views the mapping as each
// parameter's seed.
func spillSeeds(dir string, params []*ir.Param) (map[string][]float32, func() error, error) {
	f, err := os.CreateTemp(dir, ".seed-*")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	defer os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	offsets := make([]int64, len(params))
	var off int64
	var pad [seedAlign]byte
	for i, p := range params {
		offsets[i] = off
		v := p.Tensor.Float32s()
		b := unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
		n := (int64(len(b)) + seedAlign - 1) / seedAlign * seedAlign
		if _, err := w.Write(b); err != nil {
			return nil, nil, err
		}
		if _, err := w.Write(pad[:n-int64(len(b))]); err != nil {
			return nil, nil, err
		}
		off += n
	}
	if err := w.Flush(); err != nil {
		return nil, nil, err
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(off), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	seeds := make(map[string][]float32, len(params))
	for i, p := range params {
		seeds[p.Name] = unsafe.Slice((*float32)(unsafe.Pointer(&data[offsets[i]])), p.Tensor.Len())
	}
	return seeds, func() error { return unix.Munmap(data) }, nil
}

// populatePages maps the pages lying wholly inside b, a file mapping, in
// one call (MADV_POPULATE_READ) instead of a page fault each; kernels
// before Linux 5.14 leave them to fault in.
func populatePages(b []byte) {
	if span := pageSpan(b); span != nil {
		unix.Madvise(span, unix.MADV_POPULATE_READ)
	}
}

// pageSpan is the part of b made of whole pages (nil: none).
func pageSpan(b []byte) []byte {
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&b[0]))
	first := (start + page - 1) &^ (page - 1)
	last := (start + uintptr(len(b))) &^ (page - 1)
	if last <= first {
		return nil
	}
	return b[first-start : last-start]
}

// dropPages drops the pages lying wholly inside b, a read-only or
// never-written file mapping, from this process's resident memory
// (MADV_DONTNEED): they stay in the kernel's page cache and are mapped
// again, unchanged, when touched.
func dropPages(b []byte) {
	if span := pageSpan(b); span != nil {
		unix.Madvise(span, unix.MADV_DONTNEED)
	}
}
