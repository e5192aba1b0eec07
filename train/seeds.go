package train

import (
	"unsafe"

	"github.com/dstune/dstune/internal/pages"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// seedStore is where a DST run's seed Θ0 lives, so that it costs the
// process as little resident memory as it can (update.Program.Seeds and
// SeedPages):
//
//   - float32 parameters whose stored bytes are aligned in a mapped model
//     file or its external data are read there in place;
//   - the others (unaligned in a single-file protobuf, or a model read
//     into memory), when they come to 16 MiB or more (the size from which
//     model files are mapped; RunOptions.SeedFileMin), are written once
//     to a seed file in the run directory, mapped read-only and unlinked
//     at once (the space goes when the run ends, even a killed one);
//   - what cannot be placed in a file is copied by the trainer, as before.
//
// The trainer drops the pages of mapped seeds after each silo's
// selection has read them (MADV_DONTNEED: the kernel's page cache keeps
// them, and may evict them under memory pressure, to read them from the
// file again), so Θ0 is resident one silo at a time.
type seedStore struct {
	seeds map[string][]float32
	// mapped: the seeds (by first element) whose pages may be dropped.
	mapped map[*float32]bool
	unmap  func() error // the seed file's mapping, or nil
}

// defaultSeedFileMin is RunOptions.SeedFileMin's default: smaller seeds
// are cheaper copied.
const defaultSeedFileMin = 16 << 20

// newSeedStore places the seeds of params, the trainable parameters of m
// (values as imported, not yet trained), writing a seed file in dir for
// those not in place when they come to fileMin bytes (0: the default;
// < 0: never).
func newSeedStore(m *onnx.Model, params []*ir.Param, dir string, fileMin int64) *seedStore {
	s := &seedStore{seeds: map[string][]float32{}, mapped: map[*float32]bool{}}
	for name, seed := range fileSeeds(m) {
		s.seeds[name] = seed
		if m.FileBacked(unsafe.Slice((*byte)(unsafe.Pointer(&seed[0])), 4*len(seed))) {
			s.mapped[&seed[0]] = true
		}
	}
	if fileMin == 0 {
		fileMin = defaultSeedFileMin
	}
	var rest []*ir.Param
	var bytes int64
	for _, p := range params {
		if p.Tensor.DType() != ir.Float32 || p.Tensor.Len() == 0 || s.mapped[firstOf(s.seeds[p.Name])] {
			continue
		}
		rest = append(rest, p)
		bytes += 4 * int64(p.Tensor.Len())
	}
	if fileMin < 0 || bytes == 0 || bytes < fileMin {
		return s
	}
	spilled, unmap, err := spillSeeds(dir, rest)
	if err != nil {
		return s // the trainer copies them
	}
	s.unmap = unmap
	for name, seed := range spilled {
		s.seeds[name] = seed
		s.mapped[&seed[0]] = true
	}
	return s
}

func firstOf(x []float32) *float32 {
	if len(x) == 0 {
		return nil
	}
	return &x[0]
}

// Fetch maps the pages of a mapped seed in one call; other seeds are
// left be (update.SeedPager).
func (s *seedStore) Fetch(seed []float32) {
	if len(seed) > 0 && s.mapped[&seed[0]] {
		pages.Populate(unsafe.Slice((*byte)(unsafe.Pointer(&seed[0])), 4*len(seed)), false)
	}
}

// Release drops the pages lying wholly inside a mapped seed from the
// process's resident memory; other seeds are left be.
func (s *seedStore) Release(seed []float32) {
	if len(seed) > 0 && s.mapped[&seed[0]] {
		pages.Drop(unsafe.Slice((*byte)(unsafe.Pointer(&seed[0])), 4*len(seed)))
	}
}

// inPlace reports whether the seed of the initializer is its stored
// bytes.
func (s *seedStore) inPlace(it *onnx.Tensor) bool {
	if s == nil || len(it.Raw) == 0 {
		return false
	}
	seed := s.seeds[it.Name]
	return len(seed) > 0 && unsafe.Pointer(&seed[0]) == unsafe.Pointer(&it.Raw[0])
}

// close unmaps the seed file; the trainer must not read the seeds after.
func (s *seedStore) close() error {
	if s == nil || s.unmap == nil {
		return nil
	}
	err := s.unmap()
	s.unmap, s.seeds, s.mapped = nil, nil, nil
	return err
}
