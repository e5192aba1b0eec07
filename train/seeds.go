package train

import (
	"unsafe"

	"github.com/dstune/dstune/internal/pages"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// seedStore is where a DST run's seed Θ0 lives. A small Θ0 stays in
// memory: read in place from the model file where its float32 bytes are
// aligned there, copied by the trainer otherwise. A large one (RunOptions.
// SeedFileMin, 256 MiB by default) costs the process as little resident
// memory as it can (update.Program.Seeds and SeedPages):
//
//   - float32 parameters whose stored bytes are aligned in a mapped model
//     file or its external data are read there in place;
//   - the others (unaligned in a single-file protobuf, or a model read
//     into memory) are written once to a seed file in the run directory,
//     mapped read-only and unlinked at once (the space goes when the run
//     ends, even a killed one);
//   - and the trainer maps a silo's seeds just before its selection and
//     drops their pages after (MADV_DONTNEED: the kernel's page cache
//     keeps them, and may evict them under memory pressure, to read them
//     from the file again), so Θ0 is resident one silo at a time.
//
// Should the seed file fail (a full disk), the trainer copies those
// seeds.
type seedStore struct {
	seeds map[string][]float32
	// mapped: the seeds (by first element) whose pages may be dropped.
	mapped map[*float32]bool
	unmap  func() error // the seed file's mapping, or nil
}

// defaultSeedFileMin is RunOptions.SeedFileMin's default: a smaller Θ0 is
// cheaper kept in memory than mapped silo by silo every step.
const defaultSeedFileMin = 256 << 20

// newSeedStore places the seeds of params, the trainable parameters of m
// (values as imported, not yet trained): in files when they come to
// fileMin bytes (0: the default; < 0: never), writing a seed file in dir
// for those not in place.
func newSeedStore(m *onnx.Model, params []*ir.Param, dir string, fileMin int64) *seedStore {
	s := &seedStore{seeds: fileSeeds(m), mapped: map[*float32]bool{}}
	if fileMin == 0 {
		fileMin = defaultSeedFileMin
	}
	var total int64
	for _, p := range params {
		if p.Tensor.DType() == ir.Float32 {
			total += 4 * int64(p.Tensor.Len())
		}
	}
	if fileMin < 0 || total == 0 || total < fileMin {
		return s
	}
	for _, seed := range s.seeds {
		if m.FileBacked(unsafe.Slice((*byte)(unsafe.Pointer(&seed[0])), 4*len(seed))) {
			s.mapped[&seed[0]] = true
		}
	}
	var rest []*ir.Param
	for _, p := range params {
		if p.Tensor.DType() == ir.Float32 && p.Tensor.Len() > 0 && !s.mapped[firstOf(s.seeds[p.Name])] {
			rest = append(rest, p)
		}
	}
	if len(rest) == 0 {
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

// fileSeeds views the float32 initializers of m whose stored bytes are
// raw little-endian data at an aligned address — in the model file or its
// external data, mapped or read — as float32 values, by name: a selection
// compares against the model's values there instead of a copy (the
// trainer checks that they are the parameters' values).
func fileSeeds(m *onnx.Model) map[string][]float32 {
	seeds := map[string][]float32{}
	for _, it := range m.Graph.Initializers {
		raw := it.Raw
		if it.DataType != onnx.Float || len(raw) < 4 || len(raw)%4 != 0 || uintptr(unsafe.Pointer(&raw[0]))%4 != 0 {
			continue
		}
		seeds[it.Name] = unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), len(raw)/4)
	}
	return seeds
}
