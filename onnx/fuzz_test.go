package onnx

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode: any input decodes or fails with an error, never panics, and
// whatever decodes re-encodes to a model that decodes to the same thing.
// External data may be resolved against a directory holding one 64-byte
// file. Run with: go test -fuzz FuzzDecode ./onnx
func FuzzDecode(f *testing.F) {
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 64), 0o644); err != nil {
		f.Fatal(err)
	}
	f.Add(modelWithInitializer(tensorMsg("w", []int64{2, 3}, float32Raw(6))))
	f.Add(modelWithInitializer(tensorMsg("w", []int64{4, 4}, extEntry("location", "w.bin"), fVarint(14, 1))))
	f.Add(nestedIfModel(3))
	// A graph and a type written in two parts, which merge.
	f.Add(cat(modelMsg(), fBytes(7, fString(10, "edited"))))
	f.Add(modelMsg(fBytes(11, cat(fString(1, "z"), fBytes(2, typeMsg(Float, nil)), fBytes(2, typeMsg(Float, []int64{2}))))))
	f.Add(modelWithAttribute(cat(fString(1, "alpha"), fVarint(20, uint64(AttrFloats)), fBytes(7, make([]byte, 8)))))
	// Real models as seeds when the shared test data is there (without it
	// the crafted seeds above still run).
	if testdata := seedTestdataDir(); testdata != "" {
		for _, rel := range [][]string{
			{"models", "exports", "edge", "if_subgraph.onnx"},
			{"models", "exports", "edge", "fp16_init.onnx"},
			{"models", "exports", "edge", "int8_init.onnx"},
			{"onnx-backend", "node", "test_constant", "model.onnx"},
			{"onnx-backend", "node", "test_layer_normalization_2d_axis0", "model.onnx"},
			{"onnx-backend", "node", "test_identity_sequence", "model.onnx"},
		} {
			if b, err := os.ReadFile(filepath.Join(append([]string{testdata}, rel...)...)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		m, err := Decode(buf, dir)
		if err != nil {
			return
		}
		defer m.Close()
		enc, err := Encode(m)
		if err != nil {
			return // e.g. a nil graph inside an attribute cannot be written
		}
		back, err := Decode(enc, dir)
		if err != nil {
			t.Fatalf("re-encoded model does not decode: %v", err)
		}
		defer back.Close()
		if d := diff(m, back); d != "" {
			t.Fatalf("round trip differs at %s", d)
		}
	})
}

// FuzzDecodeTensor: tensor files decode or fail cleanly; what decodes has
// consistent sizes.
func FuzzDecodeTensor(f *testing.F) {
	f.Add(tensorMsg("t", []int64{2}, float32Raw(2)))
	f.Add(cat(fString(1, "s"), fVarint(2, 1), fBytes(3, tensorMsg("t", []int64{2}, float32Raw(2)))))
	f.Fuzz(func(t *testing.T, buf []byte) {
		tensor, err := DecodeTensor(buf)
		if err != nil {
			return
		}
		if tensor.Raw != nil {
			size, err := tensor.ByteSize()
			if err != nil || size != int64(len(tensor.Raw)) {
				t.Fatalf("decoded tensor with %d raw bytes, ByteSize %d, %v", len(tensor.Raw), size, err)
			}
		}
		if _, err := tensor.Bytes(); err != nil && tensor.DataType != String {
			t.Fatalf("Bytes of a decoded tensor: %v", err)
		}
	})
}

func seedTestdataDir() string {
	for _, d := range []string{os.Getenv("DSTUNE_TESTDATA"), filepath.Join("..", "..", "shared", "testdata")} {
		if st, err := os.Stat(d); d != "" && err == nil && st.IsDir() {
			return d
		}
	}
	return ""
}
