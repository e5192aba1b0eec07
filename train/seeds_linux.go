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
