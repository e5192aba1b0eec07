package serve

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// Base is a model whose parameters deltas are written into: the model,
// its base hash (computed once, before any delta touches the weights) and
// its initializers' types and shapes.
type Base struct {
	Model *ir.Model
	Hash  string
	// ReadDelta reads a delta file (LoadDeltas, and a server's deltas);
	// nil reads DST deltas (dst.ReadDelta). dstune sets one that also
	// turns LoRA adapters into deltas.
	ReadDelta func(path string) (*dst.Delta, error)
	inits     map[string]initInfo
}

type initInfo struct {
	dtype string // safetensors name: F32, F16, BF16, F64, ...
	dims  []int64
}

// NewBase hashes the model's initializers; call it before any delta is
// applied to the model.
func NewBase(m *onnx.Model, model *ir.Model) (*Base, error) {
	inits, err := dst.InitializersOf(m)
	if err != nil {
		return nil, err
	}
	hash, err := dst.BaseHash(inits)
	if err != nil {
		return nil, err
	}
	b := &Base{Model: model, Hash: hash, inits: map[string]initInfo{}}
	for _, it := range inits {
		b.inits[it.Name] = initInfo{it.DType, it.Dims}
	}
	return b, nil
}

// Patch is a delta prepared for a base: for every parameter it changes,
// the flat positions and the new values already encoded in the
// parameter's element type (rounded as `dstune apply` rounds them). It
// holds about what the delta file holds: 4 bytes per position (8 for
// tensors of 2³¹ elements or more) and the values in the parameter's type.
type Patch struct {
	Meta    dst.Metadata
	Entries int64
	f32     []*patchTensor[float32]
	u16     []*patchTensor[uint16] // float16 and bfloat16, as bits
	f64     []*patchTensor[float64]
}

// element is a parameter element as its bits are copied: Go assignment
// copies floats bit for bit (NaN payloads included).
type element interface{ uint16 | float32 | float64 }

// patchTensor is one parameter's part of a patch.
type patchTensor[E element] struct {
	name   string
	data   []E     // the parameter's elements (the base model's storage)
	index  []int32 // positions, or
	index8 []int64 // for tensors of 2³¹ elements or more
	values []E
}

// saved holds the values a patch overwrote, by element type.
type saved struct {
	f32 []float32
	u16 []uint16
	f64 []float64
}

// ErrBaseMismatch is wrapped when a delta was made for another model.
var ErrBaseMismatch = dst.ErrBaseMismatch

// checkBase refuses a delta that does not record this base model's hash.
func (b *Base) checkBase(d *dst.Delta) error {
	if d.Meta.BaseSHA256 == "" {
		return fmt.Errorf("%w: the delta records no base hash", ErrBaseMismatch)
	}
	if d.Meta.BaseSHA256 != b.Hash {
		return fmt.Errorf("%w: delta base_sha256 %s, the model's initializers hash to %s", ErrBaseMismatch, d.Meta.BaseSHA256, b.Hash)
	}
	return nil
}

// NewPatch checks d against the base (its recorded base hash, the shapes
// and types of the tensors it changes) and prepares it.
func (b *Base) NewPatch(d *dst.Delta) (*Patch, error) {
	if err := b.checkBase(d); err != nil {
		return nil, err
	}
	p := &Patch{Meta: d.Meta}
	for i := range d.Tensors {
		td := &d.Tensors[i]
		info, ok := b.inits[td.Name]
		if !ok {
			return nil, fmt.Errorf("tensor %q: the model has no initializer of that name", td.Name)
		}
		if !slices.Equal(info.dims, td.Dims) {
			return nil, fmt.Errorf("tensor %q: delta is for dims %v, the model's initializer has %v", td.Name, td.Dims, info.dims)
		}
		param := b.Model.Param(td.Name)
		if param == nil {
			return nil, fmt.Errorf("tensor %q is not a parameter of the model", td.Name)
		}
		t := param.Tensor
		var err error
		switch t.DType() {
		case ir.Float32:
			err = addTensor(&p.f32, td, info.dtype, t.Float32s(), func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) })
		case ir.Float16, ir.BFloat16:
			err = addTensor(&p.u16, td, info.dtype, t.Uint16s(), binary.LittleEndian.Uint16)
		case ir.Float64:
			err = addTensor(&p.f64, td, info.dtype, t.Float64s(), func(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) })
		default:
			err = fmt.Errorf("tensor %q is %s: deltas change float32, float16, bfloat16 or float64 parameters", td.Name, t.DType())
		}
		if err != nil {
			return nil, err
		}
		p.Entries += int64(len(td.Indices))
	}
	return p, nil
}

// addTensor checks the delta's positions against the parameter and rounds
// its values to the parameter's type with the rounding `dstune apply`
// uses (dst.TensorDelta.EncodeValues, as ApplyRaw).
func addTensor[E element](list *[]*patchTensor[E], td *dst.TensorDelta, dtype string, data []E, decode func([]byte) E) error {
	n := len(td.Indices)
	if int64(len(data)) != td.Size() || len(td.Values) != n {
		return fmt.Errorf("tensor %q: %d values for %d positions of a %d-element tensor", td.Name, len(td.Values), n, len(data))
	}
	last := int64(-1)
	for _, x := range td.Indices {
		if x <= last || x >= int64(len(data)) {
			return fmt.Errorf("tensor %q: position %d out of order or outside [0, %d)", td.Name, x, len(data))
		}
		last = x
	}
	size := elemSize[E]()
	raw, err := td.EncodeValues(dtype)
	if err != nil {
		return err
	}
	t := &patchTensor[E]{name: td.Name, data: data, values: make([]E, n)}
	for i := range t.values {
		t.values[i] = decode(raw[i*size:])
	}
	if len(data) <= math.MaxInt32 {
		t.index = make([]int32, n)
		for i, x := range td.Indices {
			t.index[i] = int32(x)
		}
	} else {
		t.index8 = slices.Clone(td.Indices)
	}
	*list = append(*list, t)
	return nil
}

func elemSize[E element]() int {
	var e E
	switch any(e).(type) {
	case uint16:
		return 2
	case float32:
		return 4
	}
	return 8
}

// Bytes is the memory the patch holds (positions and values).
func (p *Patch) Bytes() int64 {
	return tensorBytes(p.f32) + tensorBytes(p.u16) + tensorBytes(p.f64)
}

func tensorBytes[E element](list []*patchTensor[E]) int64 {
	var n int64
	for _, t := range list {
		n += int64(4*len(t.index) + 8*len(t.index8) + len(t.values)*elemSize[E]())
	}
	return n
}

// Apply writes the patch into the base's parameters; with s it first
// keeps the values it overwrites, for Restore.
func (p *Patch) Apply(s *saved) {
	if s != nil {
		s.f32 = applyAll(p.f32, s.f32[:0], true)
		s.u16 = applyAll(p.u16, s.u16[:0], true)
		s.f64 = applyAll(p.f64, s.f64[:0], true)
		return
	}
	applyAll(p.f32, nil, false)
	applyAll(p.u16, nil, false)
	applyAll(p.f64, nil, false)
}

// Restore writes back the values Apply saved.
func (p *Patch) Restore(s *saved) {
	restoreAll(p.f32, s.f32)
	restoreAll(p.u16, s.u16)
	restoreAll(p.f64, s.f64)
}

func applyAll[E element](list []*patchTensor[E], keep []E, save bool) []E {
	for _, t := range list {
		if t.index8 != nil {
			for i, x := range t.index8 {
				if save {
					keep = append(keep, t.data[x])
				}
				t.data[x] = t.values[i]
			}
			continue
		}
		data, values := t.data, t.values[:len(t.index)]
		for i, x := range t.index {
			if save {
				keep = append(keep, data[x])
			}
			data[x] = values[i]
		}
	}
	return keep
}

func restoreAll[E element](list []*patchTensor[E], kept []E) {
	for _, t := range list {
		if t.index8 != nil {
			for _, x := range t.index8 {
				t.data[x], kept = kept[0], kept[1:]
			}
			continue
		}
		data, mine := t.data, kept[:len(t.index)]
		for i, x := range t.index {
			data[x] = mine[i]
		}
		kept = kept[len(t.index):]
	}
}

func (b *Base) readDelta(path string) (*dst.Delta, error) {
	if b.ReadDelta != nil {
		return b.ReadDelta(path)
	}
	return dst.ReadDelta(path)
}

// LoadDeltas reads delta files and composes them in order, as `dstune
// apply` does: two deltas changing one entry is an error.
func (b *Base) LoadDeltas(paths []string) (*Patch, error) {
	parts := make([]*dst.Delta, len(paths))
	for i, path := range paths {
		d, err := b.readDelta(path)
		if err != nil {
			return nil, err
		}
		// Each made for this model, checked before they are composed:
		// deltas of another model tell of nothing but that.
		if err := b.checkBase(d); err != nil {
			return nil, fmt.Errorf("delta %s: %w", path, err)
		}
		parts[i] = d
	}
	d := parts[0]
	if len(parts) > 1 {
		var err error
		d, _, err = dst.Compose(parts, false)
		var ce *dst.ConflictError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("deltas %s: %w (dstune apply MODEL %s -o OUT.onnx --force writes the model with both, the later one winning)", strings.Join(paths, ", "), err, strings.Join(paths, " "))
		}
		if err != nil {
			return nil, err
		}
	}
	p, err := b.NewPatch(d)
	if err != nil {
		if len(paths) == 1 {
			return nil, fmt.Errorf("delta %s: %w", paths[0], err)
		}
		return nil, fmt.Errorf("deltas %v: %w", paths, err)
	}
	return p, nil
}
