package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func f32bytes(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func i64bytes(vs ...int64) []byte {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
	}
	return b
}

func sampleTensors() []Tensor {
	return []Tensor{
		{Name: "w.values", DType: F32, Shape: []int64{3}, Data: f32bytes(1.5, -2, 0.25)},
		{Name: "w.indices", DType: I64, Shape: []int64{3}, Data: i64bytes(0, 7, 1<<40)},
		{Name: "b", DType: F16, Shape: []int64{1, 3}, Data: []byte{0, 0x3c, 0, 0xc0, 1, 0}},
		{Name: "mask", DType: U8, Shape: []int64{5}, Data: []byte{1, 0, 1, 1, 0}},
		{Name: "scalar", DType: F32, Shape: []int64{}, Data: f32bytes(42)},
		{Name: "empty", DType: I32, Shape: []int64{0, 4}, Data: []byte{}},
	}
}

// TestLayoutByHand parses the encoded bytes without this package's decoder
// and checks every rule of the format.
func TestLayoutByHand(t *testing.T) {
	tensors := sampleTensors()
	meta := map[string]string{"format_version": "1", "note": "<a & b>"}
	var buf bytes.Buffer
	if err := Encode(&buf, meta, tensors); err != nil {
		t.Fatal(err)
	}
	file := buf.Bytes()
	n := binary.LittleEndian.Uint64(file[:8])
	if n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	header := file[8 : 8+n]
	body := file[8+n:]
	closing := bytes.LastIndexByte(header, '}')
	if pad := header[closing+1:]; len(bytes.Trim(pad, " ")) != 0 || len(pad) >= 8 {
		t.Errorf("header padding %q: want fewer than 8 spaces", pad)
	}
	if !bytes.Contains(header, []byte(`"<a & b>"`)) {
		t.Errorf("metadata was HTML-escaped: %s", header)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		t.Fatalf("header is not JSON: %v\n%s", err, header)
	}
	var gotMeta map[string]string
	if err := json.Unmarshal(raw["__metadata__"], &gotMeta); err != nil || !reflect.DeepEqual(gotMeta, meta) {
		t.Errorf("metadata = %v (%v), want %v", gotMeta, err, meta)
	}
	type info struct {
		DType       string  `json:"dtype"`
		Shape       []int64 `json:"shape"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	sizes := map[string]int64{"F32": 4, "I64": 8, "F16": 2, "U8": 1, "I32": 4}
	var spans [][2]int64
	for _, want := range tensors {
		var got info
		if err := json.Unmarshal(raw[want.Name], &got); err != nil {
			t.Fatalf("%s: %v", want.Name, err)
		}
		if got.DType != string(want.DType) || !reflect.DeepEqual(append([]int64{}, got.Shape...), append([]int64{}, want.Shape...)) {
			t.Errorf("%s: dtype %s shape %v, want %s %v", want.Name, got.DType, got.Shape, want.DType, want.Shape)
		}
		b, e := got.DataOffsets[0], got.DataOffsets[1]
		if e-b != int64(len(want.Data)) || !bytes.Equal(body[b:e], want.Data) {
			t.Errorf("%s: bytes at [%d,%d) = %x, want %x", want.Name, b, e, body[b:e], want.Data)
		}
		if abs := 8 + int64(n) + b; abs%sizes[got.DType] != 0 {
			t.Errorf("%s: file offset %d not aligned to its %d-byte elements", want.Name, abs, sizes[got.DType])
		}
		spans = append(spans, [2]int64{b, e})
	}
	if len(raw) != len(tensors)+1 {
		t.Errorf("header has %d keys, want %d", len(raw), len(tensors)+1)
	}
	// Sorted by offset the spans must tile the body exactly.
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			if spans[j][0] < spans[i][0] || (spans[j][0] == spans[i][0] && spans[j][1] < spans[i][1]) {
				spans[i], spans[j] = spans[j], spans[i]
			}
		}
	}
	var next int64
	for _, s := range spans {
		if s[0] != next {
			t.Errorf("span %v does not start at %d", s, next)
		}
		next = s[1]
	}
	if next != int64(len(body)) {
		t.Errorf("spans end at %d, body is %d bytes", next, len(body))
	}
}

func TestRoundTrip(t *testing.T) {
	tensors := sampleTensors()
	meta := map[string]string{"a": "1", "ü": "\"quoted\"\n"}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := WriteFile(path, meta, tensors); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Metadata, meta) {
		t.Errorf("metadata %v, want %v", f.Metadata, meta)
	}
	if len(f.Tensors) != len(tensors) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(tensors))
	}
	for _, want := range tensors {
		got := f.Tensor(want.Name)
		if got == nil {
			t.Fatalf("%s missing", want.Name)
		}
		if got.DType != want.DType || !reflect.DeepEqual(got.Shape, want.Shape) || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("%s: got %v %v %x, want %v %v %x", want.Name, got.DType, got.Shape, got.Data, want.DType, want.Shape, want.Data)
		}
	}
	// No metadata and no tensors is a valid (tiny) file too.
	var buf bytes.Buffer
	if err := Encode(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	if f, err := Decode(buf.Bytes()); err != nil || f.Metadata != nil || len(f.Tensors) != 0 {
		t.Errorf("empty file: %+v, %v", f, err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.safetensors")
	if err := WriteFile(path, nil, sampleTensors()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	bad := []Tensor{{Name: "x", DType: F32, Shape: []int64{2}, Data: []byte{1, 2, 3}}}
	err := WriteFile(path, nil, bad)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("bad write: %v, want an error naming the file and tensor", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a failed write changed the existing file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file (no temp files left)", len(entries))
	}
}

func TestEncodeRejects(t *testing.T) {
	cases := map[string][]Tensor{
		"empty name":   {{Name: "", DType: F32, Shape: []int64{}, Data: f32bytes(1)}},
		"reserved":     {{Name: MetadataKey, DType: F32, Shape: []int64{}, Data: f32bytes(1)}},
		"duplicate":    {{Name: "a", DType: U8, Shape: []int64{0}}, {Name: "a", DType: U8, Shape: []int64{0}}},
		"dtype":        {{Name: "a", DType: "F128", Shape: []int64{0}}},
		"short data":   {{Name: "a", DType: F32, Shape: []int64{2}, Data: f32bytes(1)}},
		"negative dim": {{Name: "a", DType: F32, Shape: []int64{-1}}},
		"overflow":     {{Name: "a", DType: F32, Shape: []int64{1 << 62, 4}}},
	}
	for name, ts := range cases {
		var buf bytes.Buffer
		err := Encode(&buf, nil, ts)
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Errorf("%s: err = %v, want a *FormatError", name, err)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes before failing", name, buf.Len())
		}
	}
}

// handmade builds a file from a literal header and body, padding the header
// with spaces to a multiple of 8 as a writer would.
func handmade(header string, body []byte) []byte {
	for len(header)%8 != 0 {
		header += " "
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, body...)
}

func TestDecodeHandmade(t *testing.T) {
	// Tensor order in the header differs from offset order; both are valid.
	data := handmade(`{"b":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},"a":{"shape":[1],"data_offsets":[0,4],"dtype":"F32"}}`,
		append(f32bytes(3), 7, 0, 0, 0))
	f, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 2 || f.Tensors[0].Name != "a" || f.Tensors[1].Name != "b" || !bytes.Equal(f.Tensors[1].Data, []byte{7, 0, 0, 0}) {
		t.Errorf("decoded %+v", f.Tensors)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	body8 := make([]byte, 8)
	cases := []struct {
		name, tensor, msg string
		data              []byte
	}{
		{"huge header length", "", "not a safetensors file: its first 8 bytes give a header of 4611686018427387904 bytes, more than the 0 bytes", binary.LittleEndian.AppendUint64(nil, 1<<62)},
		{"another format", "", "not a safetensors file: its first 8 bytes give a header of 8031177557570357256 bytes, more than the 11 bytes the file holds", []byte("\x08\x08\x12\x07pytorch\x1a\x061.13.0")},
		{"header longer than file", "", "header length 64 exceeds the 2 bytes after the length: the file is cut short", append(binary.LittleEndian.AppendUint64(nil, 64), `{}`...)},
		{"not an object", "", "JSON object", handmade(`[1,2]`, nil)},
		{"invalid utf8", "", "UTF-8", handmade("{\"\xff\":1}", nil)},
		{"trailing garbage", "", "after its JSON object", handmade(`{} x`, nil)},
		{"truncated json", "a", "not valid JSON", handmade(`{"a":{"dtype":"F32"`, nil)},
		{"overlap", "b", "overlap", handmade(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, body8)},
		{"gap", "b", "gap", handmade(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}`, body8)},
		{"end before begin", "a2", "end before", handmade(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"c":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"a2":{"dtype":"U8","shape":[0],"data_offsets":[8,7]}}`, body8)},
		{"past buffer", "a", "run past", handmade(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, body8)},
		{"uncovered tail", "", "cover 4 bytes", handmade(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, body8)},
		{"shape vs bytes", "a", "needs 4 bytes", handmade(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}`, body8)},
		{"shape overflow", "a", "overflows", handmade(`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`, body8)},
		{"unknown dtype", "a", "unknown dtype", handmade(`{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,8]}}`, body8)},
		{"dtype not string", "a", "expected a string", handmade(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,8]}}`, body8)},
		{"missing dtype", "a", "lacks dtype", handmade(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, body8)},
		{"missing offsets", "a", "lacks data_offsets", handmade(`{"a":{"dtype":"U8","shape":[8]}}`, body8)},
		{"unknown field", "a", "unknown field", handmade(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8],"x":1}}`, body8)},
		{"three offsets", "a", "3 entries", handmade(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8,8]}}`, body8)},
		{"negative offset", "a", "non-negative", handmade(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[-1,8]}}`, body8)},
		{"float offset", "a", "non-negative", handmade(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8.0]}}`, body8)},
		{"float dim", "a", "non-negative", handmade(`{"a":{"dtype":"U8","shape":[8e0],"data_offsets":[0,8]}}`, body8)},
		{"duplicate tensor", "a", "twice", handmade(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, body8)},
		{"duplicate field", "a", "twice", handmade(`{"a":{"dtype":"U8","dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, body8)},
		{"metadata value not string", "", "expected a string", handmade(`{"__metadata__":{"k":1}}`, nil)},
		{"metadata duplicate key", "", "twice", handmade(`{"__metadata__":{"k":"1","k":"2"}}`, nil)},
		{"empty name", "", "empty name", handmade(`{"":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, body8)},
		{"metadata twice", "__metadata__", "twice", handmade(`{"__metadata__":{},"__metadata__":{}}`, nil)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.data)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *FormatError", err)
			}
			if fe.Tensor != c.tensor || !strings.Contains(fe.Msg, c.msg) {
				t.Errorf("err = %v (tensor %q), want tensor %q and a message containing %q", err, fe.Tensor, c.tensor, c.msg)
			}
		})
	}
}

// TestDecodeHeaderLimit: a header length within the file but over
// MaxHeaderBytes is refused for the limit, before the header is read (the
// buffer of zeros is never touched, so costs no memory to speak of).
func TestDecodeHeaderLimit(t *testing.T) {
	data := make([]byte, 8+MaxHeaderBytes+8)
	binary.LittleEndian.PutUint64(data, MaxHeaderBytes+8)
	_, err := Decode(data)
	var fe *FormatError
	if !errors.As(err, &fe) || !strings.Contains(fe.Msg, fmt.Sprintf("header length %d exceeds the %d-byte limit", MaxHeaderBytes+8, MaxHeaderBytes)) {
		t.Errorf("err = %v, want the limit's", err)
	}
}

func TestDecodeTruncatedEverywhere(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, map[string]string{"k": "v"}, sampleTensors()); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	for n := 0; n < len(full); n++ {
		// A fresh copy of exactly n bytes, so reads past it would fault in
		// the race/ASan sense rather than see the rest of full.
		cut := bytes.Clone(full[:n])
		if _, err := Decode(cut); err == nil {
			t.Errorf("truncated to %d of %d bytes: no error", n, len(full))
		}
	}
	// Extra bytes at the end are also an error: the buffer must be tiled.
	if _, err := Decode(append(bytes.Clone(full), 0)); err == nil {
		t.Error("one extra trailing byte: no error")
	}
}

func TestReadFileErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(path, []byte{1, 2, 3}, 0o644)
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want it to name %s", err, path)
	}
	if _, err := ReadFile(dir); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Errorf("directory: err = %v", err)
	}
}

// TestReadFileMatchesDecode: ReadFile, which reads the header before the
// data, accepts and refuses what Decode of the whole file does, with the
// same messages.
func TestReadFileMatchesDecode(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, map[string]string{"k": "v"}, sampleTensors()); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	files := [][]byte{full, append(bytes.Clone(full), 0), handmade(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 8)),
		handmade(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 8)), handmade(`[1]`, nil)}
	for n := range len(full) {
		files = append(files, full[:n])
	}
	path := filepath.Join(t.TempDir(), "f.safetensors")
	for i, data := range files {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		want, wantErr := Decode(data)
		got, err := ReadFile(path)
		switch {
		case (err == nil) != (wantErr == nil):
			t.Errorf("file %d: ReadFile error %v, Decode error %v", i, err, wantErr)
		case err != nil:
			if !strings.HasPrefix(err.Error(), path+": ") || !strings.HasSuffix(err.Error(), wantErr.Error()) {
				t.Errorf("file %d: ReadFile error %q, Decode error %q", i, err, wantErr)
			}
		case !reflect.DeepEqual(got, want):
			t.Errorf("file %d: ReadFile %+v, Decode %+v", i, got, want)
		}
	}
}

// TestReadFileChecksHeaderFirst: a file of 1 GiB (sparse: it costs no
// disk) whose header describes 8 bytes is refused without reading, or
// allocating, the gigabyte.
func TestReadFileChecksHeaderFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.safetensors")
	if err := os.WriteFile(path, handmade(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 1<<30); err != nil {
		t.Skipf("cannot make a sparse file here: %v", err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadFile(path)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "tensors cover 8 bytes of the") {
		t.Fatalf("err = %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("refusing the file allocated %d bytes", alloc)
	}
}

func FuzzDecode(f *testing.F) {
	var buf bytes.Buffer
	Encode(&buf, map[string]string{"k": "v"}, sampleTensors())
	f.Add(buf.Bytes())
	f.Add(handmade(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32bytes(1)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Decode(data)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		// Whatever decodes re-encodes to a file that decodes to the same
		// tensors and metadata.
		var out bytes.Buffer
		if err := Encode(&out, file.Metadata, file.Tensors); err != nil {
			t.Fatalf("re-encoding a decoded file: %v", err)
		}
		again, err := Decode(out.Bytes())
		if err != nil {
			t.Fatalf("decoding the re-encoded file: %v", err)
		}
		if !reflect.DeepEqual(again.Metadata, file.Metadata) || len(again.Tensors) != len(file.Tensors) {
			t.Fatalf("re-encoded file differs: %+v vs %+v", again, file)
		}
		for _, t0 := range file.Tensors {
			t1 := again.Tensor(t0.Name)
			if t1 == nil || t1.DType != t0.DType || !reflect.DeepEqual(t1.Shape, t0.Shape) || !bytes.Equal(t1.Data, t0.Data) {
				t.Fatalf("tensor %q differs after re-encoding", t0.Name)
			}
		}
	})
}
