package dst

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Initializer describes one initializer of a base model for BaseHash and
// the shape checks, independently of how the model file stores it.
type Initializer struct {
	Name string
	// DType names the element type; dstune uses the safetensors names
	// (F32, F16, BF16, F64, I8, U8, I16, U16, I32, U32, I64, U64, BOOL).
	DType string
	Dims  []int64
	// Data is the elements as raw little-endian bytes, whether the model
	// keeps them in raw_data, in typed fields or in external data.
	Data []byte
}

// baseHashDomain starts every hashed stream, so the hash cannot collide
// with a hash of anything else laid out the same way.
const baseHashDomain = "dstune base initializers v1\x00"

// BaseHash identifies a base model by its initializers: the lowercase hex
// SHA-256 of
//
//	"dstune base initializers v1\x00"
//	for each initializer, in ascending byte order of Name:
//	    u64(len(Name)) Name  u64(len(DType)) DType
//	    u64(len(Dims)) i64(Dims[0]) … i64(Dims[r−1])
//	    u64(len(Data)) Data
//
// with u64/i64 8-byte little-endian. The length prefixes make the encoding
// unambiguous. The hash depends only on names, types, shapes and values:
// not on the graph, the initializers' order in the file, or how the file
// stores the bytes. Two initializers with one name are an error.
func BaseHash(inits []Initializer) (string, error) {
	order := make([]*Initializer, len(inits))
	for i := range inits {
		order[i] = &inits[i]
	}
	slices.SortFunc(order, func(a, b *Initializer) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	h.Write([]byte(baseHashDomain))
	var word [8]byte
	u64 := func(v uint64) {
		binary.LittleEndian.PutUint64(word[:], v)
		h.Write(word[:])
	}
	for i, init := range order {
		if i > 0 && order[i-1].Name == init.Name {
			return "", fmt.Errorf("initializer %q appears twice", init.Name)
		}
		u64(uint64(len(init.Name)))
		h.Write([]byte(init.Name))
		u64(uint64(len(init.DType)))
		h.Write([]byte(init.DType))
		u64(uint64(len(init.Dims)))
		for _, d := range init.Dims {
			u64(uint64(d))
		}
		u64(uint64(len(init.Data)))
		h.Write(init.Data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ErrBaseMismatch is wrapped by the error CheckBase returns when the delta
// was made for other initializers (or records no base hash), the case
// `dstune apply --force` overrides.
var ErrBaseMismatch = errors.New("delta was made for a different base model")

// CheckBase verifies that d was made from the base model whose
// initializers are inits: d's recorded base hash must equal BaseHash(inits).
// A mismatch (or a delta that records no hash) wraps ErrBaseMismatch.
func (d *Delta) CheckBase(inits []Initializer) error {
	got, err := BaseHash(inits)
	if err != nil {
		return err
	}
	if d.Meta.BaseSHA256 == "" {
		return fmt.Errorf("%w: the delta records no base hash", ErrBaseMismatch)
	}
	if d.Meta.BaseSHA256 != got {
		return fmt.Errorf("%w: delta base_sha256 %s, model initializers hash to %s", ErrBaseMismatch, d.Meta.BaseSHA256, got)
	}
	return nil
}

// CheckShapes verifies that every tensor d changes is an initializer in
// inits with the same dims. Unlike CheckBase it is not a matter of
// --force: a delta cannot be applied to a tensor of another shape.
func (d *Delta) CheckShapes(inits []Initializer) error {
	byName := make(map[string]*Initializer, len(inits))
	for i := range inits {
		byName[inits[i].Name] = &inits[i]
	}
	for i := range d.Tensors {
		t := &d.Tensors[i]
		init, ok := byName[t.Name]
		if !ok {
			return fmt.Errorf("tensor %q: the model has no initializer of that name", t.Name)
		}
		if !slices.Equal(init.Dims, t.Dims) {
			return fmt.Errorf("tensor %q: delta is for dims %v, the model's initializer has %v", t.Name, t.Dims, init.Dims)
		}
	}
	return nil
}

// ApplyTo writes d's values into params (initializer name → flat float32
// elements): params[t.Name][t.Indices[i]] = t.Values[i]. Everything is
// checked before anything is written, so on error params are unchanged:
// every tensor must be in params with exactly numel(Dims) elements, and the
// indices valid.
func (d *Delta) ApplyTo(params map[string][]float32) error {
	for i := range d.Tensors {
		t := &d.Tensors[i]
		p, ok := params[t.Name]
		if !ok {
			return fmt.Errorf("tensor %q: no such parameter", t.Name)
		}
		if err := t.checkTarget(int64(len(p))); err != nil {
			return err
		}
	}
	for i := range d.Tensors {
		t := &d.Tensors[i]
		p := params[t.Name]
		for j, x := range t.Indices {
			p[x] = t.Values[j]
		}
	}
	return nil
}

func (t *TensorDelta) checkTarget(n int64) error {
	if size := t.Size(); size != n {
		return fmt.Errorf("tensor %q: delta is for %d elements (dims %v), the parameter has %d", t.Name, size, t.Dims, n)
	}
	if len(t.Values) != len(t.Indices) {
		return fmt.Errorf("tensor %q: %d values for %d indices", t.Name, len(t.Values), len(t.Indices))
	}
	if t.Values64 != nil && len(t.Values64) != len(t.Indices) {
		return fmt.Errorf("tensor %q: %d float64 values for %d indices", t.Name, len(t.Values64), len(t.Indices))
	}
	if err := checkIndices(t.Indices, n); err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return nil
}

// ApplyRaw writes t's values into data, the raw little-endian bytes of the
// base tensor with element type dtype (F32, F16, BF16 or F64). Each value
// is rounded once, to nearest, ties to even, from the most precision t
// holds it at (Values64 when set). It checks sizes, indices and values
// before writing anything: a value that overflows dtype is an
// *OverflowError naming the element.
func (t *TensorDelta) ApplyRaw(dtype string, data []byte) error {
	vt := ValueDType(dtype)
	size := vt.size()
	if dtype == "" || size == 0 {
		return fmt.Errorf("tensor %q: cannot write values into a %s tensor (want F32, F16, BF16 or F64)", t.Name, dtype)
	}
	if len(data)%size != 0 {
		return fmt.Errorf("tensor %q: %d bytes is not a whole number of %s elements", t.Name, len(data), dtype)
	}
	if err := t.checkTarget(int64(len(data) / size)); err != nil {
		return err
	}
	enc, err := t.EncodeValues(dtype)
	if err != nil {
		return err
	}
	for j, x := range t.Indices {
		copy(data[x*int64(size):], enc[j*size:(j+1)*size])
	}
	return nil
}

// EncodeValues returns t's values rounded to dtype (F32, F16, BF16 or
// F64) as ApplyRaw writes them, in t's order, little-endian: for a caller
// that keeps the values apart from the tensor (serve's patches), or only
// checks that they fit (an *OverflowError naming the element).
func (t *TensorDelta) EncodeValues(dtype string) ([]byte, error) {
	vt := ValueDType(dtype)
	if dtype == "" || vt.size() == 0 {
		return nil, fmt.Errorf("tensor %q: cannot write values into a %s tensor (want F32, F16, BF16 or F64)", t.Name, dtype)
	}
	enc, bad := t.encode(vt)
	if bad >= 0 {
		return nil, &OverflowError{Tensor: t.Name, Position: t.Indices[bad], Index: unflatten(t.Indices[bad], t.Dims), Entry: bad,
			Value: t.value(bad), DType: dtype, Result: float64(decodeHalf(vt, binary.LittleEndian.Uint16(enc[2*bad:]))),
			valueText: t.valueText(bad)}
	}
	return enc, nil
}

// OverflowError is ApplyRaw's error for a value that the tensor's element
// type cannot hold: rounded to it, the value becomes infinite.
type OverflowError struct {
	Tensor   string
	Position int64   // the element's flat (row-major) index in the tensor
	Index    []int64 // Position as an index into the tensor's dims
	// Entry is the value's index in the TensorDelta: in a delta read from
	// a file, its index in the file; in a composed delta, in no file.
	Entry  int
	Value  float64 // the delta's value
	DType  string  // the element type: F16 or BF16
	Result float64 // what the value rounds to: ±Inf

	valueText string // Value at the precision the delta held it
}

func (e *OverflowError) Error() string {
	value := e.valueText
	if value == "" {
		value = strconv.FormatFloat(e.Value, 'g', -1, 64)
	}
	return fmt.Sprintf("tensor %q: element %d %s: value %s overflows %s (rounds to %v; the largest finite %s is %s)",
		e.Tensor, e.Position, formatIndex(e.Index), value, dtypeWord(e.DType), e.Result,
		dtypeWord(e.DType), strconv.FormatFloat(largestFinite(e.DType), 'g', -1, 32))
}

// unflatten is the row-major index into dims of flat position pos.
func unflatten(pos int64, dims []int64) []int64 {
	idx := make([]int64, len(dims))
	for k := len(dims) - 1; k >= 0; k-- {
		if dims[k] > 0 {
			idx[k], pos = pos%dims[k], pos/dims[k]
		}
	}
	return idx
}

// formatIndex writes a multi-dimensional index as [i,j,k].
func formatIndex(idx []int64) string {
	parts := make([]string, len(idx))
	for i, x := range idx {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// dtypeWord names a half-precision element type as a sentence does.
func dtypeWord(dtype string) string {
	if dtype == "BF16" {
		return "bfloat16"
	}
	return "float16"
}

// largestFinite is the largest finite value of a half-precision element
// type (the only ones a delta's float32 values can overflow).
func largestFinite(dtype string) float64 {
	if dtype == "BF16" {
		return float64(math.Float32frombits(0x7f7f0000))
	}
	return 65504
}

// Conflict reports entries of one tensor that more than one composed delta
// changes.
type Conflict struct {
	Tensor   string
	Count    int64   // positions changed by two or more of the deltas
	Examples []int64 // the first few such positions, ascending
}

// maxConflictExamples bounds Conflict.Examples.
const maxConflictExamples = 5

// ConflictError is Compose's error when deltas change the same entries and
// force is off.
type ConflictError struct {
	Conflicts []Conflict
}

func (e *ConflictError) Error() string {
	var b strings.Builder
	var total int64
	for _, c := range e.Conflicts {
		total += c.Count
	}
	fmt.Fprintf(&b, "deltas change the same %d entries", total)
	for i, c := range e.Conflicts {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%stensor %q: %d (e.g. positions %v)", sep, c.Tensor, c.Count, c.Examples)
	}
	return b.String()
}

// Compose merges deltas applied in order into one: applying the result
// equals applying parts[0], then parts[1], and so on.
//
// Policy: all parts must record the same base hash, and no two parts may
// change the same entry of the same tensor; either is an error (a
// *ConflictError for shared entries, listing per tensor how many and a
// few positions) unless force is set, in which case the later part's value
// wins and the conflicts are still returned for the caller to report. A
// tensor's dims must agree across parts, forced or not.
//
// The result's metadata: the first part's base hash; Method "compose";
// Epsilon, Distance and Silo kept where all parts agree (else zero values);
// Steps summed; no Extra. A tensor's ValueDType is its last part's.
func Compose(parts []*Delta, force bool) (*Delta, []Conflict, error) {
	out := &Delta{Meta: Metadata{Method: "compose"}}
	if len(parts) == 0 {
		return out, nil, nil
	}
	first := parts[0].Meta
	out.Meta.BaseSHA256 = first.BaseSHA256
	out.Meta.Epsilon, out.Meta.Distance, out.Meta.Silo = first.Epsilon, first.Distance, first.Silo
	for i, p := range parts {
		if err := p.Validate(); err != nil {
			return nil, nil, fmt.Errorf("delta %d: %w", i+1, err)
		}
		m := p.Meta
		if m.BaseSHA256 != first.BaseSHA256 && !force {
			return nil, nil, fmt.Errorf("%w: delta %d has base_sha256 %q, delta 1 has %q", ErrBaseMismatch, i+1, m.BaseSHA256, first.BaseSHA256)
		}
		if m.Epsilon != out.Meta.Epsilon {
			out.Meta.Epsilon = 0
		}
		if m.Distance != out.Meta.Distance {
			out.Meta.Distance = ""
		}
		if m.Silo != out.Meta.Silo {
			out.Meta.Silo = ""
		}
		if m.Steps > math.MaxInt64-out.Meta.Steps {
			out.Meta.Steps = math.MaxInt64
		} else {
			out.Meta.Steps += m.Steps
		}
	}

	var names []string
	merged := map[string]*TensorDelta{}
	changedBy := map[string][]int{} // tensor → how many parts changed each merged entry so far
	var conflicts []Conflict
	for pi, p := range parts {
		for ti := range p.Tensors {
			t := &p.Tensors[ti]
			acc, ok := merged[t.Name]
			if !ok {
				c := &TensorDelta{Name: t.Name, Dims: slices.Clone(t.Dims), Indices: slices.Clone(t.Indices),
					Values: slices.Clone(t.Values), Values64: slices.Clone(t.Values64), ValueDType: t.ValueDType}
				merged[t.Name] = c
				changedBy[t.Name] = make([]int, len(t.Indices))
				names = append(names, t.Name)
				continue
			}
			if !slices.Equal(acc.Dims, t.Dims) {
				return nil, nil, fmt.Errorf("tensor %q: delta %d has dims %v, an earlier delta %v", t.Name, pi+1, t.Dims, acc.Dims)
			}
			changedBy[t.Name] = mergeInto(acc, changedBy[t.Name], t)
		}
	}
	slices.Sort(names)
	out.Tensors = make([]TensorDelta, len(names))
	for i, name := range names {
		out.Tensors[i] = *merged[name]
		c := Conflict{Tensor: name}
		for j, n := range changedBy[name] {
			if n > 0 {
				c.Count++
				if len(c.Examples) < maxConflictExamples {
					c.Examples = append(c.Examples, out.Tensors[i].Indices[j])
				}
			}
		}
		if c.Count > 0 {
			conflicts = append(conflicts, c)
		}
	}
	if len(conflicts) > 0 && !force {
		return nil, conflicts, &ConflictError{Conflicts: conflicts}
	}
	return out, conflicts, nil
}

// mergeInto merges t into acc (both ascending); on a shared position t's
// value wins and that entry's repeat count goes up. It returns the repeat
// counts for acc's new entries. When either holds float64 values the
// merged tensor does, for every entry.
func mergeInto(acc *TensorDelta, repeats []int, t *TensorDelta) []int {
	n := len(acc.Indices) + len(t.Indices)
	idx := make([]int64, 0, n)
	val := make([]float32, 0, n)
	rep := make([]int, 0, n)
	var val64 []float64
	if acc.Values64 != nil || t.Values64 != nil {
		val64 = make([]float64, 0, n)
	}
	take := func(from *TensorDelta, k, repeat int) {
		idx, val, rep = append(idx, from.Indices[k]), append(val, from.Values[k]), append(rep, repeat)
		if val64 != nil {
			val64 = append(val64, from.value(k))
		}
	}
	i, j := 0, 0
	for i < len(acc.Indices) || j < len(t.Indices) {
		switch {
		case j == len(t.Indices) || i < len(acc.Indices) && acc.Indices[i] < t.Indices[j]:
			take(acc, i, repeats[i])
			i++
		case i == len(acc.Indices) || t.Indices[j] < acc.Indices[i]:
			take(t, j, 0)
			j++
		default:
			take(t, j, repeats[i]+1)
			i++
			j++
		}
	}
	acc.Indices, acc.Values, acc.Values64 = idx, val, val64
	acc.ValueDType = t.ValueDType
	return rep
}
