package dst

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/dstune/dstune/internal/safetensors"
)

// DeltaFormatVersion is the "format_version" written into every delta file;
// ReadDelta rejects other versions.
const DeltaFormatVersion = "1"

// Metadata keys of a delta file's "__metadata__" (all values are strings,
// as safetensors requires).
const (
	metaFormatVersion = "format_version" // DeltaFormatVersion
	metaBaseSHA256    = "base_sha256"    // BaseHash of the base model's initializers, lowercase hex
	metaMethod        = "method"         // e.g. "dst"
	metaEpsilon       = "epsilon"        // ε, shortest decimal that round-trips a float64
	metaDistance      = "distance"       // inv-rel, rel, abs, random
	metaSilo          = "silo"           // module-layer, module, none
	metaSteps         = "steps"          // optimizer steps taken, decimal
	metaShapes        = "shapes"         // JSON object: initializer name → dims of the base tensor
)

// Suffixes of the two tensors a changed initializer NAME is stored as.
const (
	indicesSuffix = ".indices"
	valuesSuffix  = ".values"
)

// int32IndexLimit is the element count from which indices are stored as
// int64: positions of a tensor with fewer elements all fit in int32.
const int32IndexLimit = 1 << 31

// ValueDType is the element type a delta's values are stored as in the
// file. In memory values are float32, and F64 values are kept as float64
// besides (TensorDelta.Values64).
type ValueDType string

// Value types a delta file may store its values as. "" means F32.
const (
	ValuesF32  ValueDType = "F32"
	ValuesF16  ValueDType = "F16"
	ValuesBF16 ValueDType = "BF16"
	ValuesF64  ValueDType = "F64"
)

// Metadata is what a delta file records besides the changed entries.
type Metadata struct {
	BaseSHA256 string  // BaseHash of the base model; "" when unknown
	Method     string  // training method, e.g. "dst"
	Epsilon    float64 // fraction of free parameters ε
	Distance   string  // distance function
	Silo       string  // siloing
	Steps      int64   // optimizer steps taken

	// Extra holds any other metadata keys, written and read back as they
	// are. Keys of the fields above are not allowed in it.
	Extra map[string]string
}

// TensorDelta is the change to one initializer: Values[i] replaces the
// element at flat (row-major) position Indices[i] of the base tensor, whose
// shape is Dims. Indices are strictly ascending and within
// [0, numel(Dims)).
type TensorDelta struct {
	Name    string
	Dims    []int64
	Indices []int64
	Values  []float32

	// Values64, when not nil, holds the values at float64 precision, and
	// Values[i] is float32(Values64[i]). ReadDelta fills it for F64
	// values. Writing into a float64 tensor (or an F64 file) then takes
	// the values as they are, and into a float16 or bfloat16 one rounds
	// them once from float64: a float32 step first would lose precision,
	// or round twice.
	Values64 []float64

	// ValueDType is the type Values are stored as in the file ("" = F32);
	// writing rounds to it (to nearest, ties to even).
	ValueDType ValueDType
}

// Size is the number of elements of the base tensor.
func (t *TensorDelta) Size() int64 {
	n, ok := safetensors.NumElements(t.Dims)
	if !ok {
		return -1
	}
	return n
}

// Delta is a sparse change to a model's initializers, one TensorDelta per
// changed initializer (names unique).
type Delta struct {
	Meta    Metadata
	Tensors []TensorDelta
	// RoundedToSeed counts, in a delta of a half-precision model, the
	// kept entries whose value rounds to the stored seed (written in the
	// metadata as "rounded_to_seed"; not read back).
	RoundedToSeed int
}

// Tensor returns the change to the named initializer, or nil. It scans
// d.Tensors: code that looks up many names indexes them once instead.
func (d *Delta) Tensor(name string) *TensorDelta {
	for i := range d.Tensors {
		if d.Tensors[i].Name == name {
			return &d.Tensors[i]
		}
	}
	return nil
}

// NumChanged is the total number of changed entries.
func (d *Delta) NumChanged() int64 {
	var n int64
	for i := range d.Tensors {
		n += int64(len(d.Tensors[i].Indices))
	}
	return n
}

// Validate checks the invariants WriteDelta relies on and ReadDelta
// guarantees: unique non-empty names, valid dims, as many values as
// indices, indices strictly ascending within the tensor, finite values, a
// known value type, and Extra free of reserved keys.
func (d *Delta) Validate() error {
	for k := range d.Meta.Extra {
		if isReservedMetaKey(k) {
			return fmt.Errorf("metadata: Extra must not hold the reserved key %q", k)
		}
	}
	seen := make(map[string]bool, len(d.Tensors))
	for i := range d.Tensors {
		t := &d.Tensors[i]
		if t.Name == "" {
			return fmt.Errorf("tensor %d has an empty name", i)
		}
		if seen[t.Name] {
			return fmt.Errorf("tensor %q appears twice", t.Name)
		}
		seen[t.Name] = true
		if err := t.validate(); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

func (t *TensorDelta) validate() error {
	size := t.Size()
	if size < 0 {
		return fmt.Errorf("dims %v: negative dimension or element count overflows", t.Dims)
	}
	if len(t.Values) != len(t.Indices) {
		return fmt.Errorf("%d values for %d indices", len(t.Values), len(t.Indices))
	}
	if t.Values64 != nil && len(t.Values64) != len(t.Indices) {
		return fmt.Errorf("%d float64 values for %d indices", len(t.Values64), len(t.Indices))
	}
	if err := checkIndices(t.Indices, size); err != nil {
		return err
	}
	if t.ValueDType.size() == 0 {
		return fmt.Errorf("unsupported value type %q (want F32, F16, BF16 or F64)", string(t.ValueDType))
	}
	for i, v := range t.Values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("value %d (index %d) is %v", i, t.Indices[i], v)
		}
		if t.Values64 != nil && float32(t.Values64[i]) != v {
			return fmt.Errorf("value %d (index %d) is %v in float32 but %v in float64, which rounds to %v", i, t.Indices[i], v, t.Values64[i], float32(t.Values64[i]))
		}
	}
	return nil
}

// value is value i at the most precision t holds it.
func (t *TensorDelta) value(i int) float64 {
	if t.Values64 != nil {
		return t.Values64[i]
	}
	return float64(t.Values[i])
}

// valueText writes value i as the shortest decimal that reads back as
// the value at the precision t holds it.
func (t *TensorDelta) valueText(i int) string {
	if t.Values64 != nil {
		return strconv.FormatFloat(t.Values64[i], 'g', -1, 64)
	}
	return strconv.FormatFloat(float64(t.Values[i]), 'g', -1, 32)
}

// checkIndices verifies that idx is strictly ascending within [0, size).
func checkIndices(idx []int64, size int64) error {
	prev := int64(-1)
	for i, x := range idx {
		if x < 0 {
			return fmt.Errorf("index %d is %d, negative", i, x)
		}
		if x <= prev {
			if x == prev {
				return fmt.Errorf("index %d repeats position %d (indices must be unique and ascending)", i, x)
			}
			return fmt.Errorf("index %d is %d after %d (indices must be strictly ascending)", i, x, prev)
		}
		if x >= size {
			return fmt.Errorf("index %d is %d, outside the tensor's %d elements", i, x, size)
		}
		prev = x
	}
	return nil
}

func isReservedMetaKey(k string) bool {
	switch k {
	case metaFormatVersion, metaBaseSHA256, metaMethod, metaEpsilon, metaDistance, metaSilo, metaSteps, metaShapes:
		return true
	}
	return false
}

func (v ValueDType) size() int {
	switch v {
	case "", ValuesF32:
		return 4
	case ValuesF16, ValuesBF16:
		return 2
	case ValuesF64:
		return 8
	}
	return 0
}

func (v ValueDType) orF32() ValueDType {
	if v == "" {
		return ValuesF32
	}
	return v
}

// metadataMap is the file's "__metadata__" for d.
func (d *Delta) metadataMap() (map[string]string, error) {
	m := make(map[string]string, len(d.Meta.Extra)+8)
	for k, v := range d.Meta.Extra {
		m[k] = v
	}
	m[metaFormatVersion] = DeltaFormatVersion
	m[metaBaseSHA256] = d.Meta.BaseSHA256
	m[metaMethod] = d.Meta.Method
	m[metaEpsilon] = strconv.FormatFloat(d.Meta.Epsilon, 'g', -1, 64)
	m[metaDistance] = d.Meta.Distance
	m[metaSilo] = d.Meta.Silo
	m[metaSteps] = strconv.FormatInt(d.Meta.Steps, 10)
	shapes := make(map[string][]int64, len(d.Tensors))
	for i := range d.Tensors {
		dims := d.Tensors[i].Dims
		if dims == nil {
			dims = []int64{}
		}
		shapes[d.Tensors[i].Name] = dims
	}
	js, err := json.Marshal(shapes) // encoding/json sorts map keys: deterministic
	if err != nil {
		return nil, err
	}
	m[metaShapes] = string(js)
	return m, nil
}

// fileTensors lays d out as safetensors tensors: per TensorDelta NAME,
// NAME.indices (I32, or I64 when the base tensor has ≥ 2³¹ elements) and
// NAME.values (ValueDType), both of shape [len(Indices)].
func (d *Delta) fileTensors() ([]safetensors.Tensor, error) {
	out := make([]safetensors.Tensor, 0, 2*len(d.Tensors))
	for i := range d.Tensors {
		t := &d.Tensors[i]
		n := int64(len(t.Indices))
		var idx []byte
		idxType := safetensors.I32
		if t.Size() >= int32IndexLimit {
			idxType = safetensors.I64
			idx = make([]byte, 8*n)
			for j, x := range t.Indices {
				binary.LittleEndian.PutUint64(idx[8*j:], uint64(x))
			}
		} else {
			idx = make([]byte, 4*n)
			for j, x := range t.Indices {
				binary.LittleEndian.PutUint32(idx[4*j:], uint32(x))
			}
		}
		vt := t.ValueDType.orF32()
		vals, bad := t.encode(vt)
		if bad >= 0 {
			return nil, fmt.Errorf("tensor %q: value %d (%s) overflows %s", t.Name, bad, t.valueText(bad), vt)
		}
		out = append(out,
			safetensors.Tensor{Name: t.Name + indicesSuffix, DType: idxType, Shape: []int64{n}, Data: idx},
			safetensors.Tensor{Name: t.Name + valuesSuffix, DType: safetensors.DType(vt), Shape: []int64{n}, Data: vals})
	}
	return out, nil
}

// EncodeDelta writes d in the delta file format to w (see WriteDelta).
func EncodeDelta(w io.Writer, d *Delta) error {
	meta, tensors, err := d.prepare()
	if err != nil {
		return err
	}
	return safetensors.Encode(w, meta, tensors)
}

func (d *Delta) prepare() (map[string]string, []safetensors.Tensor, error) {
	if err := d.Validate(); err != nil {
		return nil, nil, err
	}
	meta, err := d.metadataMap()
	if err != nil {
		return nil, nil, err
	}
	tensors, err := d.fileTensors()
	if err != nil {
		return nil, nil, err
	}
	return meta, tensors, nil
}

// WriteDelta writes d to path as a safetensors file, atomically (a
// temporary file renamed over path). Per TensorDelta NAME the file holds
// NAME.indices (flat positions, int32, or int64 when the base tensor has
// ≥ 2³¹ elements) and NAME.values (the new values as ValueDType); the
// "__metadata__" holds format_version, base_sha256, method, epsilon,
// distance, silo, steps, shapes (a JSON object mapping each NAME to the
// base tensor's dims) and d.Meta.Extra. In Python:
//
//	from safetensors.numpy import load_file
//	d = load_file(path)
//	w.reshape(-1)[d[NAME + ".indices"]] = d[NAME + ".values"]
func WriteDelta(path string, d *Delta) error {
	meta, tensors, err := d.prepare()
	if err != nil {
		return fmt.Errorf("writing delta %s: %w", path, err)
	}
	if err := safetensors.WriteFile(path, meta, tensors); err != nil {
		return fmt.Errorf("writing delta: %w", err)
	}
	return nil
}

// ReadDelta reads a delta file written by WriteDelta (or by any tool that
// follows the same layout), validating it fully: see DecodeDelta. Errors
// name the file and the tensor.
func ReadDelta(path string) (*Delta, error) {
	f, err := safetensors.ReadFile(path)
	var pe *fs.PathError
	switch {
	case errors.As(err, &pe):
		return nil, fmt.Errorf("delta %s: %w", path, pe.Err) // not "delta open PATH: …"
	case err != nil:
		return nil, fmt.Errorf("delta %w", err) // the error starts with the path
	}
	d, err := fromFile(f)
	if err != nil {
		return nil, fmt.Errorf("delta %s: %w", path, err)
	}
	return d, nil
}

// DecodeDelta decodes a delta file held in data. Beyond the safetensors
// format it requires: format_version "1" and a shapes entry in the
// metadata; for every NAME in shapes exactly the tensors NAME.indices (I32
// or I64) and NAME.values (F32, F16, BF16 or F64), both 1-D and of equal
// length, and no other tensors; indices strictly ascending within the base
// tensor's size; finite values; epsilon and steps, when present, numbers.
func DecodeDelta(data []byte) (*Delta, error) {
	f, err := safetensors.Decode(data)
	if err != nil {
		return nil, err
	}
	return fromFile(f)
}

func fromFile(f *safetensors.File) (*Delta, error) {
	meta := f.Metadata
	if meta == nil {
		return nil, fmt.Errorf("no __metadata__: not a dstune delta")
	}
	if v, ok := meta[metaFormatVersion]; !ok {
		return nil, fmt.Errorf("metadata lacks %s: not a dstune delta", metaFormatVersion)
	} else if v != DeltaFormatVersion {
		return nil, fmt.Errorf("metadata %s is %q; this dstune reads version %s", metaFormatVersion, v, DeltaFormatVersion)
	}
	d := &Delta{}
	var err error
	if d.Meta, err = parseMetadata(meta); err != nil {
		return nil, err
	}
	shapes, err := parseShapes(meta[metaShapes])
	if err != nil {
		return nil, err
	}

	byName := make(map[string]*safetensors.Tensor, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		base, ok := strings.CutSuffix(t.Name, indicesSuffix)
		if !ok {
			base, ok = strings.CutSuffix(t.Name, valuesSuffix)
		}
		if !ok {
			return nil, fmt.Errorf("tensor %q: name ends in neither %s nor %s", t.Name, indicesSuffix, valuesSuffix)
		}
		if _, listed := shapes[base]; !listed {
			return nil, fmt.Errorf("tensor %q: %q is not listed in the metadata's shapes", t.Name, base)
		}
		byName[t.Name] = t
	}

	names := slices.Sorted(func(yield func(string) bool) {
		for k := range shapes {
			if !yield(k) {
				return
			}
		}
	})
	d.Tensors = make([]TensorDelta, 0, len(names))
	for _, name := range names {
		td, err := decodeTensor(name, shapes[name], byName[name+indicesSuffix], byName[name+valuesSuffix])
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		d.Tensors = append(d.Tensors, td)
	}
	return d, nil
}

func parseMetadata(meta map[string]string) (Metadata, error) {
	m := Metadata{
		BaseSHA256: meta[metaBaseSHA256],
		Method:     meta[metaMethod],
		Distance:   meta[metaDistance],
		Silo:       meta[metaSilo],
	}
	if v, ok := meta[metaEpsilon]; ok && v != "" {
		eps, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(eps) || eps < 0 || eps > 1 {
			return m, fmt.Errorf("metadata %s is %q, want a number in [0, 1]", metaEpsilon, v)
		}
		m.Epsilon = eps
	}
	if v, ok := meta[metaSteps]; ok && v != "" {
		steps, err := strconv.ParseInt(v, 10, 64)
		if err != nil || steps < 0 {
			return m, fmt.Errorf("metadata %s is %q, want a non-negative integer", metaSteps, v)
		}
		m.Steps = steps
	}
	if h := m.BaseSHA256; h != "" && !isLowerHex(h, 64) {
		return m, fmt.Errorf("metadata %s is %q, want 64 lowercase hex digits", metaBaseSHA256, h)
	}
	for k, v := range meta {
		if !isReservedMetaKey(k) {
			if m.Extra == nil {
				m.Extra = map[string]string{}
			}
			m.Extra[k] = v
		}
	}
	return m, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// parseShapes decodes the shapes metadata strictly: an object of arrays of
// non-negative integers, no duplicate names.
func parseShapes(s string) (map[string][]int64, error) {
	if s == "" {
		return nil, fmt.Errorf("metadata lacks %s (the base tensors' dims)", metaShapes)
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	bad := func(why string) error { return fmt.Errorf("metadata %s: %s", metaShapes, why) }
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, bad("not a JSON object")
	}
	shapes := map[string][]int64{}
	for dec.More() {
		tok, err := dec.Token()
		name, ok := tok.(string)
		if err != nil || !ok {
			return nil, bad("not a JSON object of names")
		}
		if _, dup := shapes[name]; dup {
			return nil, bad(fmt.Sprintf("%q appears twice", name))
		}
		if name == "" {
			return nil, bad("empty tensor name")
		}
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return nil, bad(fmt.Sprintf("%q: dims are not an array", name))
		}
		dims := []int64{}
		for dec.More() {
			tok, err := dec.Token()
			num, ok := tok.(json.Number)
			if err != nil || !ok {
				return nil, bad(fmt.Sprintf("%q: dims must be integers", name))
			}
			v, err := strconv.ParseInt(string(num), 10, 64)
			if err != nil || v < 0 {
				return nil, bad(fmt.Sprintf("%q: dim %s is not a non-negative integer", name, num))
			}
			dims = append(dims, v)
		}
		if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
			return nil, bad(fmt.Sprintf("%q: malformed dims", name))
		}
		if _, ok := safetensors.NumElements(dims); !ok {
			return nil, bad(fmt.Sprintf("%q: dims %v overflow", name, dims))
		}
		shapes[name] = dims
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, bad("malformed object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("content after the object")
	}
	return shapes, nil
}

func decodeTensor(name string, dims []int64, idxT, valT *safetensors.Tensor) (TensorDelta, error) {
	td := TensorDelta{Name: name, Dims: dims}
	if idxT == nil || valT == nil {
		missing := name + indicesSuffix
		if idxT != nil {
			missing = name + valuesSuffix
		}
		return td, fmt.Errorf("listed in shapes but the file has no tensor %q", missing)
	}
	if len(idxT.Shape) != 1 || len(valT.Shape) != 1 {
		return td, fmt.Errorf("indices shape %v and values shape %v: both must be 1-D", idxT.Shape, valT.Shape)
	}
	n := idxT.Shape[0]
	if valT.Shape[0] != n {
		return td, fmt.Errorf("%d values for %d indices", valT.Shape[0], n)
	}
	switch idxT.DType {
	case safetensors.I32:
		td.Indices = make([]int64, n)
		for i := range td.Indices {
			td.Indices[i] = int64(int32(binary.LittleEndian.Uint32(idxT.Data[4*i:])))
		}
	case safetensors.I64:
		td.Indices = make([]int64, n)
		for i := range td.Indices {
			td.Indices[i] = int64(binary.LittleEndian.Uint64(idxT.Data[8*i:]))
		}
	default:
		return td, fmt.Errorf("indices have dtype %s, want I32 or I64", idxT.DType)
	}
	vt := ValueDType(valT.DType)
	if vt.size() == 0 {
		return td, fmt.Errorf("values have dtype %s, want F32, F16, BF16 or F64", valT.DType)
	}
	td.ValueDType = vt
	if vt == ValuesF64 {
		if err := checkFloat64Values(td.Indices, valT.Data); err != nil {
			return td, err
		}
		td.Values64 = decodeFloat64s(valT.Data)
		td.Values = make([]float32, len(td.Values64))
		for i, v := range td.Values64 {
			td.Values[i] = float32(v)
		}
	} else {
		td.Values = decodeValues(vt, valT.Data)
	}
	if err := td.validate(); err != nil {
		return td, err
	}
	return td, nil
}

// checkFloat64Values reports a stored float64 value that is not finite or
// does not fit float32 (TensorDelta.Values), naming it as stored: 1e300
// is not "+Inf".
func checkFloat64Values(indices []int64, data []byte) error {
	for i := range indices {
		v := math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			return fmt.Errorf("value %d (index %d) is %v", i, indices[i], v)
		case math.IsInf(float64(float32(v)), 0):
			return fmt.Errorf("value %d (index %d) is %g, beyond float32's range (±%g), which a delta's values must fit", i, indices[i], v, math.MaxFloat32)
		}
	}
	return nil
}

// encode lays t's values out as vt, little-endian, each rounded once (to
// nearest, ties to even) from the most precision t holds it at. bad is the
// index of the first value that overflows vt (its bytes hold ±Inf), -1
// when none does.
func (t *TensorDelta) encode(vt ValueDType) (out []byte, bad int) {
	out = make([]byte, vt.size()*len(t.Values))
	bad = -1
	for i, v := range t.Values {
		switch vt {
		case ValuesF32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
			continue
		case ValuesF64:
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(t.value(i)))
			continue
		}
		if t.Values64 != nil {
			v = float32RoundToOdd(t.Values64[i])
		}
		var h uint16
		if vt == ValuesF16 {
			h = float32ToFloat16(v)
		} else {
			h = float32ToBFloat16(v)
		}
		binary.LittleEndian.PutUint16(out[2*i:], h)
		if back := decodeHalf(vt, h); bad < 0 && math.IsInf(float64(back), 0) {
			bad = i
		}
	}
	return out, bad
}

// decodeValues converts stored values to float32; F64 values round to the
// nearest float32 (decodeTensor keeps them as float64 too).
func decodeValues(vt ValueDType, data []byte) []float32 {
	n := len(data) / vt.size()
	out := make([]float32, n)
	for i := range out {
		switch vt {
		case ValuesF32:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		case ValuesF64:
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
		default:
			out[i] = decodeHalf(vt, binary.LittleEndian.Uint16(data[2*i:]))
		}
	}
	return out
}

func decodeHalf(vt ValueDType, h uint16) float32 {
	if vt == ValuesBF16 {
		return math.Float32frombits(uint32(h) << 16)
	}
	return float16ToFloat32(h)
}

func decodeFloat64s(data []byte) []float64 {
	out := make([]float64, len(data)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
	}
	return out
}
