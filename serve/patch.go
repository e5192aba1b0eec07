package serve

import (
	"errors"
	"fmt"
	"math"
	"slices"

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
	inits map[string]initInfo
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
// tensors of 2³¹ elements or more) and the values' bytes.
type Patch struct {
	Meta    dst.Metadata
	Entries int64
	tensors []patchTensor
}

type patchTensor struct {
	name   string
	data   []byte // the parameter's bytes (the base model's storage)
	size   int    // bytes per element
	index  []int32
	index8 []int64 // instead of index for very large tensors
	values []byte
}

// ErrBaseMismatch is wrapped when a delta was made for another model.
var ErrBaseMismatch = dst.ErrBaseMismatch

// NewPatch checks d against the base (its recorded base hash, the shapes
// and types of the tensors it changes) and prepares it.
func (b *Base) NewPatch(d *dst.Delta) (*Patch, error) {
	if d.Meta.BaseSHA256 == "" {
		return nil, fmt.Errorf("%w: the delta records no base hash", ErrBaseMismatch)
	}
	if d.Meta.BaseSHA256 != b.Hash {
		return nil, fmt.Errorf("%w: delta base_sha256 %s, the model's initializers hash to %s", ErrBaseMismatch, d.Meta.BaseSHA256, b.Hash)
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
		pt, err := encodeTensor(td, info.dtype, param.Tensor)
		if err != nil {
			return nil, err
		}
		p.tensors = append(p.tensors, pt)
		p.Entries += int64(len(td.Indices))
	}
	return p, nil
}

// encodeTensor rounds the delta's values to the parameter's type with the
// rounding `dstune apply` uses (dst.TensorDelta.ApplyRaw applied to a
// buffer holding just the values).
func encodeTensor(td *dst.TensorDelta, dtype string, param *ir.Tensor) (patchTensor, error) {
	size := param.DType().Size()
	n := len(td.Indices)
	if int64(param.Len()) != td.Size() || len(td.Values) != n {
		return patchTensor{}, fmt.Errorf("tensor %q: %d values for %d positions of a %d-element tensor", td.Name, len(td.Values), n, param.Len())
	}
	seq := make([]int64, n)
	for i := range seq {
		seq[i] = int64(i)
	}
	dense := dst.TensorDelta{Name: td.Name, Dims: []int64{int64(n)}, Indices: seq, Values: td.Values}
	values := make([]byte, n*size)
	if err := dense.ApplyRaw(dtype, values); err != nil {
		return patchTensor{}, err
	}
	pt := patchTensor{name: td.Name, data: param.Bytes(), size: size, values: values}
	last := int64(-1)
	for _, x := range td.Indices {
		if x <= last || x >= int64(param.Len()) {
			return patchTensor{}, fmt.Errorf("tensor %q: position %d out of order or outside [0, %d)", td.Name, x, param.Len())
		}
		last = x
	}
	if param.Len() <= math.MaxInt32 {
		pt.index = make([]int32, n)
		for i, x := range td.Indices {
			pt.index[i] = int32(x)
		}
	} else {
		pt.index8 = slices.Clone(td.Indices)
	}
	return pt, nil
}

// Bytes is the memory the patch holds (positions and values).
func (p *Patch) Bytes() int64 {
	var n int64
	for _, t := range p.tensors {
		n += int64(4*len(t.index) + 8*len(t.index8) + len(t.values))
	}
	return n
}

// savedBytes is the size of the buffer Apply saves the originals into.
func (p *Patch) savedBytes() int {
	n := 0
	for _, t := range p.tensors {
		n += len(t.values)
	}
	return n
}

func (t *patchTensor) positions() int { return len(t.values) / t.size }

func (t *patchTensor) offset(i int) int {
	if t.index != nil {
		return int(t.index[i]) * t.size
	}
	return int(t.index8[i]) * t.size
}

// Apply writes the patch into the base's parameters; with saved (of
// savedBytes) it first keeps the values it overwrites, for Restore.
func (p *Patch) Apply(saved []byte) {
	at := 0
	for ti := range p.tensors {
		t := &p.tensors[ti]
		for i := range t.positions() {
			off := t.offset(i)
			if saved != nil {
				copy(saved[at:at+t.size], t.data[off:off+t.size])
			}
			copy(t.data[off:off+t.size], t.values[i*t.size:(i+1)*t.size])
			at += t.size
		}
	}
}

// Restore writes back the values Apply saved.
func (p *Patch) Restore(saved []byte) {
	at := 0
	for ti := range p.tensors {
		t := &p.tensors[ti]
		for i := range t.positions() {
			off := t.offset(i)
			copy(t.data[off:off+t.size], saved[at:at+t.size])
			at += t.size
		}
	}
}

// LoadDeltas reads delta files and composes them in order, as `dstune
// apply` does: two deltas changing one entry is an error.
func (b *Base) LoadDeltas(paths []string) (*Patch, error) {
	parts := make([]*dst.Delta, len(paths))
	for i, path := range paths {
		d, err := dst.ReadDelta(path)
		if err != nil {
			return nil, err
		}
		parts[i] = d
	}
	d := parts[0]
	if len(parts) > 1 {
		var err error
		d, _, err = dst.Compose(parts, false)
		var ce *dst.ConflictError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("%s: %w", paths, err)
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
