package dst

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/safetensors"
)

const testHash = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// sampleDelta has a small tensor with F32 values and one of 3·2³⁰
// elements, whose indices must be stored as int64, with F16 values.
func sampleDelta() *Delta {
	return &Delta{
		Meta: Metadata{BaseSHA256: testHash, Method: "dst", Epsilon: 1e-3, Distance: "inv-rel", Silo: "module-layer", Steps: 250,
			Extra: map[string]string{"note": "hello"}},
		Tensors: []TensorDelta{
			{Name: "layer.0.weight", Dims: []int64{4, 5}, Indices: []int64{0, 3, 19}, Values: []float32{1.5, -0.25, 3e-5}},
			{Name: "big", Dims: []int64{3, 1 << 30}, Indices: []int64{5, 1 << 31, 3<<30 - 1}, Values: []float32{0.5, -2, 65504}, ValueDType: ValuesF16},
		},
	}
}

func encodeDelta(t *testing.T, d *Delta) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := EncodeDelta(&b, d); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestDeltaFileByHand checks the bytes of a delta file against the format
// description, parsing the header without the package's reader.
func TestDeltaFileByHand(t *testing.T) {
	data := encodeDelta(t, sampleDelta())
	n := binary.LittleEndian.Uint64(data)
	if n%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", n)
	}
	header, body := data[8:8+n], data[8+n:]
	if trail := header[bytes.LastIndexByte(header, '}')+1:]; strings.Trim(string(trail), " ") != "" {
		t.Errorf("header padded with %q, want spaces", trail)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(header, &h); err != nil {
		t.Fatal(err)
	}
	var meta map[string]string
	if err := json.Unmarshal(h["__metadata__"], &meta); err != nil {
		t.Fatal(err)
	}
	wantMeta := map[string]string{
		"format_version": "1", "base_sha256": testHash, "method": "dst", "epsilon": "0.001",
		"distance": "inv-rel", "silo": "module-layer", "steps": "250", "note": "hello",
		"shapes": `{"big":[3,1073741824],"layer.0.weight":[4,5]}`,
	}
	if !reflect.DeepEqual(meta, wantMeta) {
		t.Errorf("metadata\n got %v\nwant %v", meta, wantMeta)
	}
	type info struct {
		DType   string   `json:"dtype"`
		Shape   []int64  `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	le32 := func(vs ...uint32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
		return b
	}
	le64 := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		return b
	}
	want := map[string]struct {
		dtype string
		data  []byte
	}{
		"layer.0.weight.indices": {"I32", le32(0, 3, 19)},
		"layer.0.weight.values":  {"F32", le32(math.Float32bits(1.5), math.Float32bits(-0.25), math.Float32bits(3e-5))},
		"big.indices":            {"I64", le64(5, 1<<31, 3<<30-1)},
		"big.values":             {"F16", []byte{0x00, 0x38, 0x00, 0xc0, 0xff, 0x7b}}, // 0.5, -2, 65504 in binary16
	}
	if len(h) != len(want)+1 {
		t.Errorf("header has %d entries, want %d", len(h), len(want)+1)
	}
	var end int64
	for name, w := range want {
		var got info
		if err := json.Unmarshal(h[name], &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.DType != w.dtype || !slices.Equal(got.Shape, []int64{3}) {
			t.Errorf("%s: %s %v, want %s [3]", name, got.DType, got.Shape, w.dtype)
		}
		if seg := body[got.Offsets[0]:got.Offsets[1]]; !bytes.Equal(seg, w.data) {
			t.Errorf("%s: bytes %x, want %x", name, seg, w.data)
		}
		end = max(end, got.Offsets[1])
	}
	if end != int64(len(body)) {
		t.Errorf("tensors end at %d, body has %d bytes", end, len(body))
	}
}

func normalized(d *Delta) *Delta {
	c := *d
	c.Tensors = slices.Clone(d.Tensors)
	for i := range c.Tensors {
		t := &c.Tensors[i]
		t.ValueDType = t.ValueDType.orF32()
		if t.ValueDType == ValuesF64 && t.Values64 == nil { // reading keeps F64 values as float64
			t.Values64 = make([]float64, len(t.Values))
			for j, v := range t.Values {
				t.Values64[j] = float64(v)
			}
		}
	}
	slices.SortFunc(c.Tensors, func(a, b TensorDelta) int { return strings.Compare(a.Name, b.Name) })
	return &c
}

func TestDeltaRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, vt := range []ValueDType{"", ValuesF32, ValuesF16, ValuesBF16, ValuesF64} {
		d := sampleDelta()
		d.Tensors[0].ValueDType = vt
		d.Tensors[0].Values = []float32{1.5, -0.25, 0.125} // exact in every type
		path := filepath.Join(dir, "delta.safetensors")
		if err := WriteDelta(path, d); err != nil {
			t.Fatal(err)
		}
		got, err := ReadDelta(path)
		if err != nil {
			t.Fatal(err)
		}
		if w := normalized(d); !reflect.DeepEqual(got, w) {
			t.Errorf("%q: read back\n%+v\nwant\n%+v", vt, got, w)
		}
	}
	// An empty delta (nothing changed) is a valid file.
	empty := &Delta{Meta: Metadata{Method: "dst"}}
	got, err := DecodeDelta(encodeDelta(t, empty))
	if err != nil || len(got.Tensors) != 0 || got.Meta.Method != "dst" {
		t.Errorf("empty delta: %+v, %v", got, err)
	}
}

func TestValuesRounding(t *testing.T) {
	d := &Delta{Tensors: []TensorDelta{{Name: "w", Dims: []int64{2}, Indices: []int64{0, 1}, Values: []float32{1 + 1.0/4096, 0.1}, ValueDType: ValuesF16}}}
	got, err := DecodeDelta(encodeDelta(t, d))
	if err != nil {
		t.Fatal(err)
	}
	// 1+2⁻¹² is a tie between 1 and 1+2⁻¹⁰ in binary16: even mantissa wins.
	if v := got.Tensors[0].Values; v[0] != 1 || v[1] != float16ToFloat32(float32ToFloat16(0.1)) {
		t.Errorf("F16 values read back as %v", v)
	}
	d.Tensors[0].Values[1] = 70000 // beyond the largest binary16
	if err := EncodeDelta(&bytes.Buffer{}, d); err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("overflowing F16 value: err = %v", err)
	}
}

// deltaFile builds a file with the given metadata and tensors through the
// safetensors codec, bypassing the delta writer's checks.
func deltaFile(t *testing.T, meta map[string]string, tensors ...safetensors.Tensor) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := safetensors.Encode(&b, meta, tensors); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func i32s(vs ...int32) safetensors.Tensor {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return safetensors.Tensor{DType: safetensors.I32, Shape: []int64{int64(len(vs))}, Data: b}
}

func f32s(vs ...float32) safetensors.Tensor {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return safetensors.Tensor{DType: safetensors.F32, Shape: []int64{int64(len(vs))}, Data: b}
}

func f64s(vs ...float64) safetensors.Tensor {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	return safetensors.Tensor{DType: safetensors.F64, Shape: []int64{int64(len(vs))}, Data: b}
}

func named(name string, t safetensors.Tensor) safetensors.Tensor {
	t.Name = name
	return t
}

func TestDeltaCorrupt(t *testing.T) {
	meta := func(kv ...string) map[string]string {
		m := map[string]string{"format_version": "1", "shapes": `{"w":[2,5]}`}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "<delete>" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	okIdx, okVal := named("w.indices", i32s(1, 4, 9)), named("w.values", f32s(1, 2, 3))
	i64idx := okIdx
	i64idx.DType, i64idx.Data = safetensors.I64, binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 1), 4), 9)
	cases := []struct {
		name string
		data []byte
		want []string // substrings of the error
	}{
		{"valid", deltaFile(t, meta(), okIdx, okVal), nil},
		{"valid int64 indices", deltaFile(t, meta(), i64idx, okVal), nil},
		{"no metadata", deltaFile(t, nil, okIdx, okVal), []string{"not a dstune delta"}},
		{"no version", deltaFile(t, meta("format_version", "<delete>"), okIdx, okVal), []string{"format_version"}},
		{"future version", deltaFile(t, meta("format_version", "2"), okIdx, okVal), []string{"format_version", `"2"`}},
		{"no shapes", deltaFile(t, meta("shapes", "<delete>"), okIdx, okVal), []string{"shapes"}},
		{"shapes not json", deltaFile(t, meta("shapes", `{"w":[2,5]`), okIdx, okVal), []string{"shapes"}},
		{"shapes negative", deltaFile(t, meta("shapes", `{"w":[-2,5]}`), okIdx, okVal), []string{"shapes", `"w"`}},
		{"shapes float", deltaFile(t, meta("shapes", `{"w":[2.5,5]}`), okIdx, okVal), []string{"shapes", `"w"`}},
		{"shapes duplicate", deltaFile(t, meta("shapes", `{"w":[2,5],"w":[10]}`), okIdx, okVal), []string{"twice"}},
		{"bad epsilon", deltaFile(t, meta("epsilon", "lots"), okIdx, okVal), []string{"epsilon"}},
		{"bad steps", deltaFile(t, meta("steps", "-3"), okIdx, okVal), []string{"steps"}},
		{"bad hash", deltaFile(t, meta("base_sha256", "XYZ"), okIdx, okVal), []string{"base_sha256"}},
		{"unsorted indices", deltaFile(t, meta(), named("w.indices", i32s(4, 1, 9)), okVal), []string{`"w"`, "ascending"}},
		{"duplicate indices", deltaFile(t, meta(), named("w.indices", i32s(1, 4, 4)), okVal), []string{`"w"`, "repeats"}},
		{"index past size", deltaFile(t, meta(), named("w.indices", i32s(1, 4, 10)), okVal), []string{`"w"`, "outside"}},
		{"negative index", deltaFile(t, meta(), named("w.indices", i32s(-1, 4, 9)), okVal), []string{`"w"`, "negative"}},
		{"float indices", deltaFile(t, meta(), named("w.indices", f32s(1, 4, 9)), okVal), []string{`"w"`, "indices have dtype F32"}},
		{"int values", deltaFile(t, meta(), okIdx, named("w.values", i32s(1, 2, 3))), []string{`"w"`, "values have dtype I32"}},
		{"count mismatch", deltaFile(t, meta(), okIdx, named("w.values", f32s(1, 2))), []string{`"w"`, "2 values for 3 indices"}},
		{"nan value", deltaFile(t, meta(), okIdx, named("w.values", f32s(1, float32(math.NaN()), 3))), []string{`"w"`, "NaN"}},
		// A float64 value beyond float32 is named as stored, not as ±Inf.
		{"f64 beyond float32", deltaFile(t, meta(), okIdx, named("w.values", f64s(1, -1e300, 3))), []string{`"w"`, "value 1 (index 4) is -1e+300, beyond float32's range"}},
		{"f64 just beyond float32", deltaFile(t, meta(), okIdx, named("w.values", f64s(1, 2, 3.5e38))), []string{`"w"`, "value 2 (index 9) is 3.5e+38"}},
		{"f64 inf", deltaFile(t, meta(), okIdx, named("w.values", f64s(math.Inf(1), 2, 3))), []string{`"w"`, "value 0 (index 1) is +Inf"}},
		{"f64 largest float32", deltaFile(t, meta(), okIdx, named("w.values", f64s(1, 2, math.MaxFloat32))), nil},
		{"2-D indices", deltaFile(t, meta(), safetensors.Tensor{Name: "w.indices", DType: safetensors.I32, Shape: []int64{3, 1}, Data: okIdx.Data}, okVal), []string{`"w"`, "1-D"}},
		{"missing values", deltaFile(t, meta(), okIdx), []string{`"w"`, `"w.values"`}},
		{"unlisted tensor", deltaFile(t, meta(), okIdx, okVal, named("v.indices", i32s(0)), named("v.values", f32s(0))), []string{`"v.indices"`, "shapes"}},
		{"stray tensor", deltaFile(t, meta(), okIdx, okVal, named("w", f32s(0))), []string{`"w"`, "neither"}},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors")
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadDelta(path)
			if c.want == nil {
				if err != nil {
					t.Fatalf("valid file rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(c.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDeltaTruncatedEverywhere(t *testing.T) {
	full := encodeDelta(t, sampleDelta())
	for n := range len(full) {
		if _, err := DecodeDelta(bytes.Clone(full[:n])); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(full))
		}
	}
	// Flipping any single header byte either still decodes to a valid
	// delta or fails cleanly, never panics.
	hl := int(binary.LittleEndian.Uint64(full))
	for i := 8; i < 8+hl; i++ {
		bad := bytes.Clone(full)
		bad[i] ^= 0x21
		if d, err := DecodeDelta(bad); err == nil {
			if err := d.Validate(); err != nil {
				t.Fatalf("byte %d flipped: decoded an invalid delta: %v", i, err)
			}
		}
	}
}

func TestWriteDeltaRejectsInvalid(t *testing.T) {
	bad := map[string]func(d *Delta){
		"unsorted":       func(d *Delta) { d.Tensors[0].Indices = []int64{3, 0, 19} },
		"out of range":   func(d *Delta) { d.Tensors[0].Indices[2] = 20 },
		"lengths":        func(d *Delta) { d.Tensors[0].Values = d.Tensors[0].Values[:2] },
		"duplicate name": func(d *Delta) { d.Tensors[1].Name = d.Tensors[0].Name },
		"value type":     func(d *Delta) { d.Tensors[0].ValueDType = "I8" },
		"infinite":       func(d *Delta) { d.Tensors[0].Values[1] = float32(math.Inf(-1)) },
		"reserved extra": func(d *Delta) { d.Meta.Extra["shapes"] = "{}" },
	}
	dir := t.TempDir()
	for name, mutate := range bad {
		d := sampleDelta()
		mutate(d)
		path := filepath.Join(dir, "x.safetensors")
		if err := WriteDelta(path, d); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err = %v, want an error naming %s", name, err, path)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s: a file was left behind", name)
		}
	}
}

// baseHashByHand builds the hashed stream exactly as BaseHash documents it.
func baseHashByHand(inits []Initializer) string {
	sorted := slices.Clone(inits)
	slices.SortFunc(sorted, func(a, b Initializer) int { return strings.Compare(a.Name, b.Name) })
	var b bytes.Buffer
	b.WriteString("dstune base initializers v1\x00")
	for _, in := range sorted {
		b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(in.Name))))
		b.WriteString(in.Name)
		b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(in.DType))))
		b.WriteString(in.DType)
		b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(in.Dims))))
		for _, d := range in.Dims {
			b.Write(binary.LittleEndian.AppendUint64(nil, uint64(d)))
		}
		b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(in.Data))))
		b.Write(in.Data)
	}
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:])
}

func sampleInits() []Initializer {
	return []Initializer{
		{Name: "w", DType: "F32", Dims: []int64{2, 2}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
		{Name: "b", DType: "F32", Dims: []int64{2}, Data: make([]byte, 8)},
		{Name: "ids", DType: "I64", Dims: []int64{}, Data: make([]byte, 8)},
	}
}

func TestBaseHash(t *testing.T) {
	inits := sampleInits()
	h, err := BaseHash(inits)
	if err != nil {
		t.Fatal(err)
	}
	if want := baseHashByHand(inits); h != want {
		t.Errorf("BaseHash = %s, the documented stream hashes to %s", h, want)
	}
	// An empty model hashes to the hash of the domain string alone.
	if h0, _ := BaseHash(nil); h0 != hex.EncodeToString(func() []byte { s := sha256.Sum256([]byte("dstune base initializers v1\x00")); return s[:] }()) {
		t.Errorf("BaseHash(nil) = %s", h0)
	}
	// Order of initializers does not matter.
	rev := slices.Clone(inits)
	slices.Reverse(rev)
	if h2, _ := BaseHash(rev); h2 != h {
		t.Error("hash depends on initializer order")
	}
	// Any change to a name, type, shape or byte changes it, including
	// changes that keep the concatenated bytes the same.
	changes := map[string]func([]Initializer){
		"byte":          func(s []Initializer) { s[0].Data = bytes.Clone(s[0].Data); s[0].Data[15] ^= 1 },
		"dims":          func(s []Initializer) { s[0].Dims = []int64{4, 1} },
		"rank":          func(s []Initializer) { s[0].Dims = []int64{2, 2, 1} },
		"dtype":         func(s []Initializer) { s[0].DType = "I32" },
		"name":          func(s []Initializer) { s[1].Name = "bias" },
		"name boundary": func(s []Initializer) { s[0].Name, s[0].DType = "wF", "32" },
		"data boundary": func(s []Initializer) { s[1].Data = append(s[1].Data, s[0].Data[0]); s[0].Data = s[0].Data[1:] },
		"dropped":       func(s []Initializer) { s[2] = Initializer{Name: "ids", DType: "I64", Dims: []int64{0}} },
	}
	for name, change := range changes {
		c := slices.Clone(sampleInits())
		change(c)
		if h2, _ := BaseHash(c); h2 == h {
			t.Errorf("%s: hash unchanged", name)
		}
	}
	dup := append(sampleInits(), Initializer{Name: "w", DType: "F32"})
	if _, err := BaseHash(dup); err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("duplicate initializer: err = %v", err)
	}
}

func TestCheckBaseAndShapes(t *testing.T) {
	inits := sampleInits()
	h, _ := BaseHash(inits)
	d := &Delta{Meta: Metadata{BaseSHA256: h}, Tensors: []TensorDelta{{Name: "w", Dims: []int64{2, 2}, Indices: []int64{1}, Values: []float32{7}}}}
	if err := d.CheckBase(inits); err != nil {
		t.Errorf("matching base: %v", err)
	}
	if err := d.CheckShapes(inits); err != nil {
		t.Errorf("matching shapes: %v", err)
	}
	other := sampleInits()
	other[1].Data = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if err := d.CheckBase(other); !errors.Is(err, ErrBaseMismatch) {
		t.Errorf("other base: err = %v, want ErrBaseMismatch", err)
	}
	d.Meta.BaseSHA256 = ""
	if err := d.CheckBase(inits); !errors.Is(err, ErrBaseMismatch) {
		t.Errorf("no recorded hash: err = %v, want ErrBaseMismatch", err)
	}
	d.Tensors[0].Dims = []int64{4}
	if err := d.CheckShapes(inits); err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("dims mismatch: err = %v", err)
	}
	d.Tensors[0].Name = "missing"
	if err := d.CheckShapes(inits); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("unknown tensor: err = %v", err)
	}
}

// randomDeltaFor draws a delta over the given tensor sizes, each changing a
// random subset with random values.
func randomDeltaFor(rng *rand.Rand, sizes map[string]int64, density float64) *Delta {
	d := &Delta{Meta: Metadata{BaseSHA256: testHash, Method: "dst", Steps: 10}}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range sizes {
			if !yield(k) {
				return
			}
		}
	}) {
		if rng.Float64() < 0.2 {
			continue // this delta leaves the tensor alone
		}
		td := TensorDelta{Name: name, Dims: []int64{sizes[name]}}
		for i := range sizes[name] {
			if rng.Float64() < density {
				td.Indices = append(td.Indices, i)
				td.Values = append(td.Values, float32(rng.NormFloat64()))
			}
		}
		d.Tensors = append(d.Tensors, td)
	}
	return d
}

func TestApplyTo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	sizes := map[string]int64{"a": 50, "b": 7, "c": 300}
	base := map[string][]float32{}
	for name, n := range sizes {
		base[name] = make([]float32, n)
		for i := range base[name] {
			base[name][i] = float32(i) + 0.5
		}
	}
	clone := func(m map[string][]float32) map[string][]float32 {
		c := map[string][]float32{}
		for k, v := range m {
			c[k] = slices.Clone(v)
		}
		return c
	}
	d := randomDeltaFor(rng, sizes, 0.1)
	params := clone(base)
	if err := d.ApplyTo(params); err != nil {
		t.Fatal(err)
	}
	for name, p := range params {
		changed := map[int64]float32{}
		if td := d.Tensor(name); td != nil {
			for j, x := range td.Indices {
				changed[x] = td.Values[j]
			}
		}
		for i, v := range p {
			want, ok := changed[int64(i)]
			if !ok {
				want = base[name][i]
			}
			if v != want {
				t.Fatalf("%s[%d] = %v, want %v", name, i, v, want)
			}
		}
	}
	// Failures leave params untouched, even when earlier tensors were fine.
	for name, p := range map[string]map[string][]float32{
		"unknown tensor": func() map[string][]float32 { c := clone(base); delete(c, "c"); return c }(),
		"wrong size":     func() map[string][]float32 { c := clone(base); c["c"] = c["c"][:299]; return c }(),
	} {
		before := clone(p)
		err := d.ApplyTo(p)
		if err == nil || !strings.Contains(err.Error(), `"c"`) {
			t.Errorf("%s: err = %v, want one naming tensor \"c\"", name, err)
		}
		if !reflect.DeepEqual(p, before) {
			t.Errorf("%s: params changed by a failed apply", name)
		}
	}
}

func TestApplyRaw(t *testing.T) {
	td := TensorDelta{Name: "w", Dims: []int64{4}, Indices: []int64{1, 3}, Values: []float32{0.5, -3}}
	for _, dt := range []string{"F32", "F16", "BF16", "F64"} {
		vt := ValueDType(dt)
		data := make([]byte, 4*vt.size())
		for i := range data {
			data[i] = 0xab
		}
		if err := td.ApplyRaw(dt, data); err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		got := decodeValues(vt, data)
		untouched := decodeValues(vt, bytes.Repeat([]byte{0xab}, vt.size()))[0]
		want := []float32{untouched, 0.5, untouched, -3}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Errorf("%s: element %d = %v, want %v", dt, i, got[i], want[i])
			}
		}
	}
	if err := td.ApplyRaw("I8", make([]byte, 4)); err == nil {
		t.Error("I8 target: no error")
	}
	if err := td.ApplyRaw("F32", make([]byte, 12)); err == nil || !strings.Contains(err.Error(), "3") {
		t.Errorf("3-element target: err = %v", err)
	}
}

func TestCompose(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := map[string]int64{"a": 40, "b": 9, "c": 200}
	for trial := range 50 {
		parts := []*Delta{randomDeltaFor(rng, sizes, 0.2), randomDeltaFor(rng, sizes, 0.2), randomDeltaFor(rng, sizes, 0.05)}
		parts = parts[:2+trial%2]
		// Reference: apply in order to dense tensors, counting how many
		// parts touch each position.
		dense := map[string][]float32{}
		touched := map[string][]int{}
		for name, n := range sizes {
			dense[name] = make([]float32, n)
			touched[name] = make([]int, n)
		}
		for _, p := range parts {
			for _, td := range p.Tensors {
				for j, x := range td.Indices {
					dense[td.Name][x] = td.Values[j]
					touched[td.Name][x]++
				}
			}
		}
		wantConflicts := map[string]int64{}
		for name, tc := range touched {
			for _, c := range tc {
				if c > 1 {
					wantConflicts[name]++
				}
			}
		}

		_, conflicts, err := Compose(parts, false)
		if len(wantConflicts) > 0 {
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("trial %d: err = %v, want a *ConflictError", trial, err)
			}
		} else if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		got := map[string]int64{}
		for _, c := range conflicts {
			got[c.Tensor] = c.Count
			for _, x := range c.Examples {
				if touched[c.Tensor][x] < 2 {
					t.Errorf("trial %d: example position %d of %q is not a conflict", trial, x, c.Tensor)
				}
			}
			if len(c.Examples) != int(min(c.Count, maxConflictExamples)) {
				t.Errorf("trial %d: %d examples for %d conflicts", trial, len(c.Examples), c.Count)
			}
		}
		if !reflect.DeepEqual(got, wantConflicts) {
			t.Fatalf("trial %d: conflicts %v, want %v", trial, got, wantConflicts)
		}

		merged, _, err := Compose(parts, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := merged.Validate(); err != nil {
			t.Fatalf("trial %d: composed delta invalid: %v", trial, err)
		}
		params := map[string][]float32{}
		for name, n := range sizes {
			params[name] = make([]float32, n)
		}
		if err := merged.ApplyTo(params); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(params, dense) {
			t.Fatalf("trial %d: applying the composition differs from applying the parts in order", trial)
		}
		if merged.Meta.Steps != int64(10*len(parts)) || merged.Meta.Method != "compose" || merged.Meta.BaseSHA256 != testHash {
			t.Errorf("trial %d: metadata %+v", trial, merged.Meta)
		}
	}
}

func TestComposeRefusals(t *testing.T) {
	a := &Delta{Meta: Metadata{BaseSHA256: testHash}, Tensors: []TensorDelta{{Name: "w", Dims: []int64{10}, Indices: []int64{1, 2, 3}, Values: []float32{1, 2, 3}}}}
	b := &Delta{Meta: Metadata{BaseSHA256: strings.Repeat("f", 64)}, Tensors: []TensorDelta{{Name: "w", Dims: []int64{10}, Indices: []int64{3, 4}, Values: []float32{9, 9}}}}
	if _, _, err := Compose([]*Delta{a, b}, false); !errors.Is(err, ErrBaseMismatch) {
		t.Errorf("different bases: err = %v, want ErrBaseMismatch", err)
	}
	b.Meta.BaseSHA256 = testHash
	_, _, err := Compose([]*Delta{a, b}, false)
	if err == nil || !strings.Contains(err.Error(), `tensor "w": 1 (e.g. positions [3])`) {
		t.Errorf("conflict message: %v", err)
	}
	got, conflicts, err := Compose([]*Delta{a, b}, true)
	if err != nil || len(conflicts) != 1 || !slices.Equal(got.Tensors[0].Indices, []int64{1, 2, 3, 4}) || !slices.Equal(got.Tensors[0].Values, []float32{1, 2, 9, 9}) {
		t.Errorf("forced: %+v, %v, %v", got, conflicts, err)
	}
	b.Tensors[0].Dims = []int64{2, 5}
	if _, _, err := Compose([]*Delta{a, b}, true); err == nil || !strings.Contains(err.Error(), "dims") {
		t.Errorf("dims mismatch under force: err = %v", err)
	}
}

func TestHalfConversions(t *testing.T) {
	// Every binary16 value converts to float32 and back unchanged.
	for h := range 1 << 16 {
		f := float16ToFloat32(uint16(h))
		back := float32ToFloat16(f)
		if f != f { // NaN: stays NaN with the sign
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 || back&0x8000 != uint16(h)&0x8000 {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("%#04x → %g → %#04x", h, f, back)
		}
	}
	// Random float32 values round to the nearest binary16 (ties to even).
	halves := make([]float64, 0, 1<<15)
	for h := range 0x7c01 { // +0 … +Inf
		halves = append(halves, float64(float16ToFloat32(uint16(h))))
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for range 200000 {
		f := math.Float32frombits(rng.Uint32() & 0x7fffffff)
		if f != f || f > 70000 {
			f = float32(rng.Float64() * math.Pow(2, float64(rng.IntN(45)-30)))
		}
		got := float32ToFloat16(f)
		x := float64(f)
		i, _ := slices.BinarySearch(halves, x)
		best := i
		if i == len(halves) || (i > 0 && x-halves[i-1] < halves[i]-x) || (i > 0 && x-halves[i-1] == halves[i]-x && (i-1)%2 == 0) {
			best = i - 1
		}
		if x >= 65520 { // halfway to the next power of two past the max: overflow
			best = 0x7c00
		}
		if int(got) != best {
			t.Fatalf("float32ToFloat16(%g) = %#04x (%g), want %#04x (%g)", f, got, float16ToFloat32(got), best, halves[min(best, len(halves)-1)])
		}
		if neg := float32ToFloat16(-f); neg != got|0x8000 {
			t.Fatalf("float32ToFloat16(%g) = %#04x, want the sign of %#04x", -f, neg, got)
		}
	}
	// bfloat16 keeps the top half of a float32, rounding to nearest even.
	for _, c := range []struct {
		in   uint32
		want uint16
	}{{0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, {0x3f818000, 0x3f82}, {0x3f808001, 0x3f81}, {0x7f7fffff, 0x7f80}, {0x7fc00001, 0x7fc0}, {0xff800000, 0xff80}} {
		if got := float32ToBFloat16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("float32ToBFloat16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
}

// TestPythonReadsDelta loads a delta with Python's safetensors.numpy when
// it is installed, as users will. Where it is missing the test says so.
func TestPythonReadsDelta(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found; skipping the cross-check with safetensors.numpy")
	}
	if out, err := exec.Command(py, "-c", "import numpy, safetensors.numpy").CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Skipf("python3 cannot import numpy and safetensors.numpy (%s); skipping the cross-check", lines[len(lines)-1])
	}
	d := sampleDelta()
	path := filepath.Join(t.TempDir(), "d.safetensors")
	if err := WriteDelta(path, d); err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys
from safetensors import safe_open
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
with safe_open(sys.argv[1], "numpy") as f:
    meta = f.metadata()
print(json.dumps({"meta": meta, "tensors": {k: {"dtype": str(v.dtype), "values": [float(x) for x in v]} for k, v in t.items()}}))
`
	out, err := exec.Command(py, "-c", script, path).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var got struct {
		Meta    map[string]string
		Tensors map[string]struct {
			DType  string
			Values []float64
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Meta["base_sha256"] != testHash || got.Meta["format_version"] != "1" {
		t.Errorf("python metadata: %v", got.Meta)
	}
	want := map[string]string{"layer.0.weight.indices": "int32", "layer.0.weight.values": "float32", "big.indices": "int64", "big.values": "float16"}
	for name, dt := range want {
		if got.Tensors[name].DType != dt {
			t.Errorf("%s: python sees %s, want %s", name, got.Tensors[name].DType, dt)
		}
	}
	for _, td := range d.Tensors {
		for j, x := range td.Indices {
			if got.Tensors[td.Name+".indices"].Values[j] != float64(x) || float32(got.Tensors[td.Name+".values"].Values[j]) != td.Values[j] {
				t.Errorf("%s entry %d differs in python", td.Name, j)
			}
		}
	}
}

func FuzzDecodeDelta(f *testing.F) {
	var b bytes.Buffer
	EncodeDelta(&b, sampleDelta())
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeDelta(data)
		if err != nil {
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("decoded an invalid delta: %v", err)
		}
		var out bytes.Buffer
		if err := EncodeDelta(&out, d); err != nil {
			t.Fatalf("re-encoding a decoded delta: %v", err)
		}
		again, err := DecodeDelta(out.Bytes())
		if err != nil {
			t.Fatalf("decoding the re-encoded delta: %v", err)
		}
		if !reflect.DeepEqual(normalized(again), normalized(d)) {
			t.Fatalf("round trip changed the delta")
		}
	})
}
