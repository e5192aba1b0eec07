package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"google.golang.org/protobuf/encoding/protowire"
)

// Builders for hand-made protobuf messages.

func fBytes(num protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

func fString(num protowire.Number, s string) []byte { return fBytes(num, []byte(s)) }

func fVarint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// tensorMsg builds a TensorProto: name, FLOAT (unless extra sets another
// data_type first), dims, and extra fields.
func tensorMsg(name string, dims []int64, extra ...[]byte) []byte {
	var packed []byte
	for _, d := range dims {
		packed = protowire.AppendVarint(packed, uint64(d))
	}
	parts := [][]byte{fBytes(1, packed), fVarint(2, uint64(Float)), fString(8, name)}
	return cat(append(parts, extra...)...)
}

func extEntry(key, value string) []byte {
	return fBytes(13, cat(fString(1, key), fString(2, value)))
}

func valueInfoMsg(name string) []byte {
	return cat(fString(1, name), fBytes(2, fBytes(1, cat(fVarint(1, uint64(Float))))))
}

// modelMsg builds a model y = Identity(x) (plus graph fields).
func modelMsg(graphExtra ...[]byte) []byte {
	node := cat(fString(1, "x"), fString(2, "y"), fString(3, "id0"), fString(4, "Identity"))
	graph := cat(append([][]byte{fBytes(1, node), fString(2, "main"), fBytes(11, valueInfoMsg("x")), fBytes(12, valueInfoMsg("y"))}, graphExtra...)...)
	return cat(fVarint(1, 8), fBytes(7, graph), fBytes(8, cat(fVarint(2, 17))))
}

func modelWithInitializer(tensor []byte) []byte { return modelMsg(fBytes(5, tensor)) }

func modelWithAttribute(attr []byte) []byte {
	node := cat(fString(1, "x"), fString(2, "y"), fString(3, "n0"), fString(4, "Foo"), fBytes(5, attr))
	graph := cat(fBytes(1, node), fString(2, "main"))
	return cat(fVarint(1, 8), fBytes(7, graph))
}

func nestedIfModel(depth int) []byte {
	g := cat(fString(2, "leaf"))
	for i := 0; i < depth; i++ {
		attr := cat(fString(1, "then_branch"), fVarint(20, uint64(AttrGraph)), fBytes(6, g))
		node := cat(fString(4, "If"), fBytes(5, attr))
		g = cat(fBytes(1, node), fString(2, fmt.Sprintf("level%d", i)))
	}
	return cat(fVarint(1, 8), fBytes(7, g))
}

func float32Raw(n int) []byte { return fBytes(9, make([]byte, 4*n)) }

// decodeChecked decodes buf from dir and checks what every decode of bad
// input must satisfy: no panic, allocation linear in the input (so no
// length or count taken from the file drives an allocation), and errors
// that start with "onnx: " and wrap one of the package's error kinds or an
// OS error.
func decodeChecked(t *testing.T, name string, buf []byte, dir string) error {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m, err := func() (m *Model, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("PANIC: %v", r)
			}
		}()
		return Decode(buf, dir)
	}()
	runtime.ReadMemStats(&after)
	if m != nil {
		m.Close()
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	if limit := uint64(64*len(buf) + 1<<20); allocated > limit {
		t.Errorf("%s: decoding %d bytes allocated %d bytes (limit %d)", name, len(buf), allocated, limit)
	}
	if err == nil {
		return nil
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "PANIC") {
		t.Errorf("%s: %s", name, msg)
		return err
	}
	var pathErr *os.PathError
	if !strings.HasPrefix(msg, "onnx: ") || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotSupported) || errors.Is(err, ErrUnsafePath) || errors.As(err, &pathErr)) {
		t.Errorf("%s: error %q does not start with \"onnx: \" or wraps no known kind", name, msg)
	}
	return err
}

func TestMalformedModels(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "w.bin"), make([]byte, 64), 0o644)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret.bin"), make([]byte, 64), 0o644)
	symlinks := map[string]string{
		"out.bin":    filepath.Join(outside, "secret.bin"),
		"outdir":     outside,
		"in.bin":     "w.bin",
		"passwd.bin": "/etc/passwd",
		"loop.bin":   "loop.bin",
	}
	for name, target := range symlinks {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Skipf("symlinks not available: %v", err)
		}
	}
	ext := func(location string, more ...[]byte) []byte {
		return modelWithInitializer(tensorMsg("w", []int64{4, 4}, cat(append([][]byte{extEntry("location", location)}, more...)...), fVarint(14, 1)))
	}

	tests := []struct {
		name string
		buf  []byte
		dir  string
		want error  // nil: must decode
		msg  string // substring the error must contain
	}{
		{"empty file", nil, dir, ErrMalformed, "no graph"},
		{"valid baseline", modelWithInitializer(tensorMsg("w", []int64{2, 3}, float32Raw(6))), dir, nil, ""},
		{"bad tag", []byte{0x80}, dir, ErrMalformed, "byte 0"},
		{"field number zero", []byte{0x00, 0x01}, dir, ErrMalformed, "field tag"},
		{"group wire type", cat(fVarint(1, 8), []byte{0x0b}), dir, ErrMalformed, "group"},
		{"ir_version as bytes", fString(1, "8"), dir, ErrMalformed, "ir_version"},
		{"graph as varint", fVarint(7, 5), dir, ErrMalformed, "graph"},
		{"node name as varint", modelMsg(fBytes(1, fVarint(3, 1))), dir, ErrMalformed, "node 1"},
		{"dims as fixed64", modelWithInitializer(cat(protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), 1), fString(8, "w"))), dir, ErrMalformed, `initializer 0 "w"`},
		{"attribute f as varint", modelWithAttribute(cat(fString(1, "alpha"), fVarint(2, 1))), dir, ErrMalformed, `node 0 "n0": attribute "alpha"`},
		{"invalid UTF-8 name", modelMsg(fBytes(1, fBytes(3, []byte{0xff, 0xfe}))), dir, ErrMalformed, "UTF-8"},
		{"length past end", cat(fVarint(1, 8), protowire.AppendVarint(protowire.AppendTag(nil, 7, protowire.BytesType), 1<<40)), dir, ErrMalformed, "field 7"},
		{"huge length varint", cat(protowire.AppendVarint(protowire.AppendTag(nil, 7, protowire.BytesType), 1<<62), []byte{1, 2, 3}), dir, ErrMalformed, "field 7"},
		{"overlong varint", cat(protowire.AppendTag(nil, 1, protowire.VarintType), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), dir, ErrMalformed, "field 1"},
		{"negative dim", modelWithInitializer(tensorMsg("w", []int64{-1}, float32Raw(1))), dir, ErrMalformed, "negative"},
		{"dims overflow", modelWithInitializer(tensorMsg("w", []int64{1 << 40, 1 << 40}, float32Raw(1))), dir, ErrMalformed, "overflow"},
		{"huge dims, no data", modelWithInitializer(tensorMsg("w", []int64{1 << 40})), dir, ErrMalformed, "no values"},
		{"huge dims, small raw", modelWithInitializer(tensorMsg("w", []int64{1 << 30, 1 << 20}, float32Raw(4))), dir, ErrMalformed, "want 4503599627370496"},
		{"raw size mismatch", modelWithInitializer(tensorMsg("w", []int64{3}, float32Raw(2))), dir, ErrMalformed, "raw_data has 8 bytes, want 12"},
		{"float_data count mismatch", modelWithInitializer(tensorMsg("w", []int64{3}, fBytes(4, make([]byte, 8)))), dir, ErrMalformed, "float_data has 2 entries, want 3"},
		{"packed floats not multiple of 4", modelWithInitializer(tensorMsg("w", []int64{1}, fBytes(4, make([]byte, 5)))), dir, ErrMalformed, "multiple of 4"},
		{"truncated packed varints", modelWithInitializer(cat(fBytes(1, []byte{0x80}), fString(8, "w"))), dir, ErrMalformed, "truncated"},
		{"int32_data for FLOAT", modelWithInitializer(tensorMsg("w", []int64{1}, fBytes(5, []byte{1}))), dir, ErrMalformed, "cannot hold FLOAT"},
		{"raw and typed data", modelWithInitializer(tensorMsg("w", []int64{1}, float32Raw(1), fBytes(4, make([]byte, 4)))), dir, ErrMalformed, "both"},
		{"unknown data type", modelWithInitializer(cat(fVarint(2, 99), fString(8, "w"))), dir, ErrMalformed, "DataType(99)"},
		{"data_type out of int32", modelWithInitializer(cat(fVarint(2, 1<<40), fString(8, "w"))), dir, ErrMalformed, "int32 range"},
		{"nested graphs too deep", nestedIfModel(maxNesting + 5), dir, ErrMalformed, "nested more than"},
		{"nested graphs within limit", nestedIfModel(maxNesting - 2), dir, nil, ""},
		{"model-local function", cat(modelMsg(), fBytes(25, fString(1, "MyFn"))), dir, nil, ""},
		{"model-local function, bad node", cat(modelMsg(), fBytes(25, cat(fString(1, "MyFn"), fBytes(7, []byte{0x80})))), dir, ErrMalformed, `model-local function 0 "MyFn": node 0`},
		{"model-local function, bad default", cat(modelMsg(), fBytes(25, cat(fString(1, "MyFn"), fBytes(11, cat(fString(1, "alpha"), fVarint(20, 99)))))), dir, ErrMalformed, `"MyFn": attribute "alpha"`},
		{"sparse initializer", modelMsg(fBytes(15, nil)), dir, ErrNotSupported, "sparse"},
		{"segmented tensor", modelWithInitializer(tensorMsg("w", []int64{1}, fBytes(3, nil))), dir, ErrNotSupported, "segment"},

		{"external ok", ext("w.bin"), dir, nil, ""},
		{"external in subdir", ext("sub/w.bin"), dir, nil, ""},
		{"external symlink inside", ext("in.bin"), dir, nil, ""},
		{"external ../x", ext("../x"), dir, ErrUnsafePath, `initializer 0 "w": external data "../x"`},
		{"external sub/../../x", ext("sub/../../w.bin"), dir, ErrUnsafePath, `".."`},
		{"external windows ..", ext(`sub\..\..\w.bin`), dir, ErrUnsafePath, `".."`},
		{"external /etc/passwd", ext("/etc/passwd"), dir, ErrUnsafePath, "absolute"},
		{"external drive letter", ext(`C:\x.bin`), dir, ErrUnsafePath, "absolute"},
		{"external symlink out", ext("out.bin"), dir, ErrUnsafePath, "outside the model directory"},
		{"external through dir symlink", ext("outdir/secret.bin"), dir, ErrUnsafePath, "outside the model directory"},
		{"external symlink to /etc/passwd", ext("passwd.bin"), dir, ErrUnsafePath, "outside the model directory"},
		{"external symlink loop", ext("loop.bin"), dir, nil, "loop.bin"},
		{"external missing file", ext("missing.bin"), dir, nil, "missing.bin"},
		{"external directory", ext("sub"), dir, nil, "not a regular file"},
		{"external past EOF", ext("w.bin", extEntry("offset", "16")), dir, ErrMalformed, "offset 16 + length 64 past end of file (size 64)"},
		{"external offset huge", ext("w.bin", extEntry("offset", "9223372036854775807")), dir, ErrMalformed, "past end of file"},
		{"external negative offset", ext("w.bin", extEntry("offset", "-8")), dir, ErrMalformed, "negative"},
		{"external bad offset", ext("w.bin", extEntry("offset", "12abc")), dir, ErrMalformed, "not an integer"},
		{"external length mismatch", ext("w.bin", extEntry("length", "32")), dir, ErrMalformed, "length 32"},
		{"external no location", modelWithInitializer(tensorMsg("w", []int64{4}, extEntry("offset", "0"), fVarint(14, 1))), dir, ErrMalformed, "without location"},
		{"external NUL", ext("w\x00.bin"), dir, ErrUnsafePath, "NUL"},
		{"external without dir", ext("w.bin"), "", ErrNotSupported, "without a directory"},
		{"external and raw", modelWithInitializer(tensorMsg("w", []int64{4, 4}, float32Raw(16), extEntry("location", "w.bin"), fVarint(14, 1))), dir, ErrMalformed, "both raw_data and external"},
		{"external_data without EXTERNAL", modelWithInitializer(tensorMsg("w", []int64{4, 4}, extEntry("location", "w.bin"))), dir, ErrMalformed, "data_location"},
	}
	for _, test := range tests {
		err := decodeChecked(t, test.name, test.buf, test.dir)
		switch {
		case test.want == nil && test.msg == "":
			if err != nil {
				t.Errorf("%s: unexpected error %v", test.name, err)
			}
		case err == nil:
			t.Errorf("%s: decoded without error", test.name)
		case test.want != nil && !errors.Is(err, test.want):
			t.Errorf("%s: error %q does not wrap %v", test.name, err, test.want)
		case !strings.Contains(err.Error(), test.msg):
			t.Errorf("%s: error %q does not mention %q", test.name, err, test.msg)
		}
	}
}

// TestTruncatedModels cuts real models at many offsets: every prefix must
// decode or fail cleanly (decodeChecked), and a prefix that cuts into the
// graph must fail.
func TestTruncatedModels(t *testing.T) {
	for _, rel := range []string{
		"models/tiny_gpt/model.onnx",
		"models/exports/edge/if_subgraph.onnx",
		"models/exports/edge/fp16_init.onnx",
		"models/exports/gpt2_like_op17_extdata.onnx",
		"onnx-backend/node/test_constant/model.onnx",
		"onnx-backend/node/test_layer_normalization_2d_axis0/model.onnx",
	} {
		p := sharedtest.Path(t, strings.Split(rel, "/")...)
		buf, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		step := 1
		if len(buf) > 2000 {
			step = len(buf)/1500 + 1
		}
		failures := 0
		for cut := 0; cut < len(buf); cut += step {
			// A fresh copy with no spare capacity, so reading past the cut
			// would be caught by the bounds checks.
			prefix := append([]byte(nil), buf[:cut]...)
			if decodeChecked(t, fmt.Sprintf("%s cut at %d", rel, cut), prefix, filepath.Dir(p)) != nil {
				failures++
			}
		}
		if failures == 0 {
			t.Errorf("%s: no truncation failed", rel)
		}
	}
}

func TestMalformedTensorFiles(t *testing.T) {
	good := tensorMsg("t", []int64{2}, float32Raw(2))
	for _, test := range []struct {
		name string
		buf  []byte
		want string
	}{
		{"truncated", good[:len(good)-3], "malformed"},
		{"external", tensorMsg("t", []int64{2}, extEntry("location", "x.bin"), fVarint(14, 1)), "without a directory"},
		{"sequence", cat(fString(1, "s"), fVarint(2, 1), fBytes(3, good)), "SequenceProto or OptionalProto of TENSOR"},
		{"optional of sequence", cat(fString(1, "o"), fVarint(2, 3), fBytes(5, cat(fVarint(2, 1), fBytes(3, good)))), "of SEQUENCE"},
	} {
		_, err := DecodeTensor(test.buf)
		if err == nil || !strings.Contains(err.Error(), test.want) || !strings.HasPrefix(err.Error(), "onnx: ") {
			t.Errorf("%s: got %v, want an error containing %q", test.name, err, test.want)
		}
	}
	tensor, err := DecodeTensor(good)
	if err != nil || tensor.Name != "t" || len(tensor.Raw) != 8 || tensor.RawOffset != int64(len(good)-8) {
		t.Errorf("good tensor: %+v, %v", tensor, err)
	}
}
