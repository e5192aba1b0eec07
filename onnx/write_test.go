package onnx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

// canonical encodes m with every initializer inline as raw_data: two
// models with equal canonical bytes hold the same graph and values,
// wherever their bytes were stored.
func canonical(t *testing.T, m *Model) []byte {
	t.Helper()
	var inits []*Tensor
	collectInitializers(m.Graph, &inits, 0)
	place := map[*Tensor]*ExternalData{}
	for _, init := range inits {
		place[init] = nil
	}
	b, err := encodeModel(m, place)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestWriteFileModes(t *testing.T) {
	models := []string{
		"models/tiny_gpt/model.onnx",
		"models/exports/gpt2_like_op17_extdata.onnx",
		"models/exports/edge/if_subgraph.onnx",
		"models/exports/edge/fp16_init.onnx",
		"onnx-backend/node/test_constant/model.onnx",
	}
	for _, rel := range models {
		src, err := ReadFile(sharedtest.Path(t, strings.Split(rel, "/")...))
		if err != nil {
			t.Fatal(err)
		}
		want := canonical(t, src)
		for _, test := range []struct {
			name      string
			opts      WriteOptions
			limit     int64 // maxModelSize during the write
			externals bool  // expect a data file with tensors in it
		}{
			{"never", WriteOptions{ExternalData: ExternalNever}, maxModelSize, false},
			{"auto-small", WriteOptions{}, maxModelSize, false},
			{"always", WriteOptions{ExternalData: ExternalAlways, Threshold: 256}, maxModelSize, true},
			{"auto-over-limit", WriteOptions{DataFile: "weights/w.bin", Threshold: 100}, 64 << 10, true},
		} {
			t.Run(strings.ReplaceAll(rel, "/", "_")+"/"+test.name, func(t *testing.T) {
				dir := t.TempDir()
				if strings.Contains(test.opts.DataFile, "/") {
					os.Mkdir(filepath.Join(dir, "weights"), 0o755)
				}
				path := filepath.Join(dir, "out.onnx")
				old := maxModelSize
				maxModelSize = test.limit
				err := WriteFile(path, src, test.opts)
				maxModelSize = old
				if err != nil {
					t.Fatal(err)
				}
				noTempFiles(t, dir)
				back, err := ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				defer back.Close()
				var inits []*Tensor
				collectInitializers(back.Graph, &inits, 0)
				external := 0
				for _, init := range inits {
					if init.External != nil {
						external++
						if init.External.Offset%64 != 0 {
							t.Errorf("%q at unaligned offset %d", init.Name, init.External.Offset)
						}
					}
				}
				hasBig := false
				var srcInits []*Tensor
				collectInitializers(src.Graph, &srcInits, 0)
				for _, init := range srcInits {
					if n, _ := init.ByteSize(); n >= 256 {
						hasBig = true
					}
				}
				if test.externals && hasBig && external == 0 {
					t.Errorf("no initializer went to external data")
				}
				if !test.externals && external != 0 {
					t.Errorf("%d initializers in external data, want none", external)
				}
				if got := canonical(t, back); !bytes.Equal(got, want) {
					t.Errorf("written model reads back differently")
				}
			})
		}
		src.Close()
	}
}

func TestWriteFileRefusesEscapingDataFile(t *testing.T) {
	m, err := ReadFile(sharedtest.Path(t, "models", "tiny_gpt", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, bad := range []string{"../w.bin", "/tmp/w.bin", `sub\..\..\w.bin`} {
		err := WriteFile(filepath.Join(dir, "m.onnx"), m, WriteOptions{ExternalData: ExternalAlways, DataFile: bad})
		if !errors.Is(err, ErrUnsafePath) {
			t.Errorf("DataFile %q: got %v, want ErrUnsafePath", bad, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "m.onnx")); !os.IsNotExist(err) {
		t.Errorf("a model file was written despite the error")
	}
	old := maxModelSize
	maxModelSize = 1000
	defer func() { maxModelSize = old }()
	if _, err := Encode(m); err == nil || !strings.Contains(err.Error(), "external data") {
		t.Errorf("Encode over the size limit: got %v, want an error pointing to external data", err)
	}
	err = WriteFile(filepath.Join(dir, "m.onnx"), m, WriteOptions{ExternalData: ExternalNever})
	if err == nil {
		t.Errorf("WriteFile ExternalNever over the size limit succeeded")
	}
	noTempFiles(t, dir)
}

// scaled returns the float32 raw bytes of t multiplied by factor.
func scaled(t *testing.T, tensor *Tensor, factor float32) []byte {
	t.Helper()
	vals, err := tensor.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v*factor))
	}
	return out
}

func TestPatchFile(t *testing.T) {
	srcPath := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	srcBytes, err := os.ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, mmap := range []bool{false, true} {
		threshold := int64(1 << 62)
		if mmap {
			threshold = 0
		}
		restore := setMmapThreshold(threshold)
		m, err := ReadFile(srcPath)
		restore()
		if err != nil {
			t.Fatal(err)
		}
		patches := map[string][]byte{}
		for _, name := range []string{"wte.weight", "h.1.mlp_fc.weight", "ln_f.bias"} {
			init := m.Graph.Initializer(name)
			if init == nil {
				t.Fatalf("no initializer %q", name)
			}
			patches[name] = scaled(t, init, -1.5)
		}
		dst := filepath.Join(t.TempDir(), "patched.onnx")
		if err := PatchFile(srcPath, dst, m, patches); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(srcBytes) {
			t.Fatalf("patched file has %d bytes, source %d", len(got), len(srcBytes))
		}
		// Outside the patched ranges the bytes are identical; inside they
		// are the new values.
		expect := append([]byte{}, srcBytes...)
		for name, v := range patches {
			init := m.Graph.Initializer(name)
			copy(expect[init.RawOffset:], v)
		}
		if !bytes.Equal(got, expect) {
			t.Fatalf("patched file differs from source outside the patched ranges or inside them")
		}
		back, err := ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		for _, init := range back.Graph.Initializers {
			want := m.Graph.Initializer(init.Name).Raw
			if p, ok := patches[init.Name]; ok {
				want = p
			}
			if !bytes.Equal(init.Raw, want) {
				t.Errorf("%q reads back wrong", init.Name)
			}
		}
		back.Close()
		m.Close()
	}
}

func TestPatchFileErrors(t *testing.T) {
	dir := t.TempDir()
	gptPath := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	gpt, err := ReadFile(gptPath)
	if err != nil {
		t.Fatal(err)
	}
	defer gpt.Close()
	extPath := sharedtest.Path(t, "models", "exports", "gpt2_like_op17_extdata.onnx")
	ext, err := ReadFile(extPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	constPath := sharedtest.Path(t, "onnx-backend", "node", "test_add", "model.onnx")
	other, err := ReadFile(constPath)
	if err != nil {
		t.Fatal(err)
	}
	wte := gpt.Graph.Initializer("wte.weight")
	for _, test := range []struct {
		name, src string
		m         *Model
		values    map[string][]byte
		want      string
	}{
		{"size", gptPath, gpt, map[string][]byte{"wte.weight": wte.Raw[:len(wte.Raw)-4]}, "new value has"},
		{"unknown", gptPath, gpt, map[string][]byte{"nope": {1}}, "no such"},
		{"external", extPath, ext, map[string][]byte{"wte.weight": make([]byte, 256000)}, "external data"},
		{"other model", constPath, gpt, map[string][]byte{"wte.weight": wte.Raw}, "is m the model"},
	} {
		dst := filepath.Join(dir, test.name+".onnx")
		err := PatchFile(test.src, dst, test.m, test.values)
		if err == nil || !strings.Contains(err.Error(), test.want) {
			t.Errorf("%s: got %v, want an error containing %q", test.name, err, test.want)
		}
		if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Errorf("%s: output written despite the error", test.name)
		}
	}
	other.Close()
	noTempFiles(t, dir)
}
