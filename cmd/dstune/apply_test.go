package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// testDTypes names ONNX element types the way delta files do, written out
// here rather than taken from the command's table.
var testDTypes = map[onnx.DataType]string{onnx.Float: "F32", onnx.Float16: "F16", onnx.Int64: "I64", onnx.Double: "F64"}

// initializerHash is dst.BaseHash over a model file's top-level
// initializers.
func initializerHash(t *testing.T, path string) string {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var inits []dst.Initializer
	for _, it := range m.Graph.Initializers {
		dt, ok := testDTypes[it.DataType]
		if !ok {
			t.Fatalf("%s: initializer %q of type %s", path, it.Name, it.DataType)
		}
		data, err := it.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		inits = append(inits, dst.Initializer{Name: it.Name, DType: dt, Dims: it.Dims, Data: bytes.Clone(data)})
	}
	h, err := dst.BaseHash(inits)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func writeDelta(t *testing.T, dir, name string, d *dst.Delta) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := dst.WriteDelta(path, d); err != nil {
		t.Fatal(err)
	}
	return path
}

// initializerBytes reads every top-level initializer's raw bytes.
func initializerBytes(t *testing.T, path string) map[string][]byte {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := map[string][]byte{}
	for _, it := range m.Graph.Initializers {
		data, err := it.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		out[it.Name] = bytes.Clone(data)
	}
	return out
}

// expectApplied checks that got holds base's initializers with exactly the
// float32 entries in want changed (name → flat position → value, bit for
// bit) and nothing else.
func expectApplied(t *testing.T, base, got map[string][]byte, want map[string]map[int64]float32) {
	t.Helper()
	if len(got) != len(base) {
		t.Fatalf("%d initializers, the base has %d", len(got), len(base))
	}
	for name, b := range base {
		g := got[name]
		if len(g) != len(b) {
			t.Errorf("%s: %d bytes, base %d", name, len(g), len(b))
			continue
		}
		for i := 0; i < len(b); i += 4 {
			wantBits := binary.LittleEndian.Uint32(b[i:])
			if v, ok := want[name][int64(i/4)]; ok {
				wantBits = math.Float32bits(v)
			}
			if gotBits := binary.LittleEndian.Uint32(g[i:]); gotBits != wantBits {
				t.Errorf("%s[%d] = %g, want %g", name, i/4, math.Float32frombits(gotBits), math.Float32frombits(wantBits))
			}
		}
	}
}

// tinyGPTDeltas are three deltas for tiny_gpt: a and c change different
// entries, b changes ln_f.bias[5] like a.
func tinyGPTDeltas(hash string) (a, b, c *dst.Delta) {
	meta := dst.Metadata{BaseSHA256: hash, Method: "dst", Epsilon: 1e-3, Distance: "inv-rel", Silo: "module-layer", Steps: 10}
	a = &dst.Delta{Meta: meta, Tensors: []dst.TensorDelta{
		{Name: "h.0.c_attn.weight", Dims: []int64{192, 64}, Indices: []int64{0, 100, 12287}, Values: []float32{0.5, -0.25, 1e-3}},
		{Name: "ln_f.bias", Dims: []int64{64}, Indices: []int64{0, 5, 63}, Values: []float32{1, -2, 3}},
	}}
	b = &dst.Delta{Meta: meta, Tensors: []dst.TensorDelta{
		{Name: "h.1.mlp_fc.bias", Dims: []int64{256}, Indices: []int64{3}, Values: []float32{7}},
		{Name: "ln_f.bias", Dims: []int64{64}, Indices: []int64{5, 10}, Values: []float32{-20, 0.125}},
	}}
	c = &dst.Delta{Meta: meta, Tensors: []dst.TensorDelta{
		{Name: "wpe.weight", Dims: []int64{64, 64}, Indices: []int64{7, 4095}, Values: []float32{-0.5, 0.75}},
	}}
	return a, b, c
}

// TestApplyPatchesInPlace: the written model is the base file with exactly
// the delta's entries replaced (bytes outside them identical), and the
// command says what changed.
func TestApplyPatchesInPlace(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	tmp := t.TempDir()
	a, _, _ := tinyGPTDeltas(initializerHash(t, model))
	deltaA := writeDelta(t, tmp, "a.safetensors", a)
	out := filepath.Join(tmp, "tuned.onnx")
	code, stdout, stderr := dstune("apply", model, deltaA, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"h.0.c_attn.weight", "ln_f.bias", "12,288", "2 tensors, 6 entries", "24 bytes rewritten", "patched in place", "120,576 parameters"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	expectApplied(t, initializerBytes(t, model), initializerBytes(t, out), map[string]map[int64]float32{
		"h.0.c_attn.weight": {0: 0.5, 100: -0.25, 12287: 1e-3},
		"ln_f.bias":         {0: 1, 5: -2, 63: 3},
	})

	// Byte for byte: only the 6 changed float32s differ, at the offsets
	// where the base file keeps those entries.
	baseFile, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	outFile, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(outFile) != len(baseFile) {
		t.Fatalf("%d bytes, base %d", len(outFile), len(baseFile))
	}
	m, err := onnx.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	allowed := map[int]bool{}
	for _, td := range a.Tensors {
		off := m.Graph.Initializer(td.Name).RawOffset
		for _, x := range td.Indices {
			for k := range 4 {
				allowed[int(off)+4*int(x)+k] = true
			}
		}
	}
	for i := range baseFile {
		if baseFile[i] != outFile[i] && !allowed[i] {
			t.Fatalf("byte %d differs outside the changed entries", i)
		}
	}
}

// TestApplyCompose: deltas applied in order; two deltas changing one entry
// are refused with a per-tensor report, or with --force the later wins.
// run --delta composes the same way.
func TestApplyCompose(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := filepath.Join(dir, "model.onnx")
	tmp := t.TempDir()
	a, b, c := tinyGPTDeltas(initializerHash(t, model))
	pa, pb, pc := writeDelta(t, tmp, "a.safetensors", a), writeDelta(t, tmp, "b.safetensors", b), writeDelta(t, tmp, "c.safetensors", c)
	base := initializerBytes(t, model)

	ac := filepath.Join(tmp, "ac.onnx")
	if code, o, e := dstune("apply", model, pa, pc, "-o", ac); code != 0 {
		t.Fatalf("apply a c: exit %d\n%s%s", code, o, e)
	}
	expectApplied(t, base, initializerBytes(t, ac), map[string]map[int64]float32{
		"h.0.c_attn.weight": {0: 0.5, 100: -0.25, 12287: 1e-3},
		"ln_f.bias":         {0: 1, 5: -2, 63: 3},
		"wpe.weight":        {7: -0.5, 4095: 0.75},
	})
	// run --delta a --delta c gives the logits of the applied model
	// exactly.
	input := filepath.Join(dir, "test_data_set_0", "input_0.pb")
	ref := filepath.Join(tmp, "ref")
	if code, o, e := dstune("run", ac, "--input", "tokens="+input, "--output-dir", ref); code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, o, e)
	}
	copyFile(t, input, filepath.Join(ref, "input_0.pb"))
	if code, o, e := dstune("run", model, "--delta", pa, "--delta", pc, "--check", ref, "--rtol", "0", "--atol", "0"); code != 0 {
		t.Errorf("run --delta a --delta c vs apply a c: exit %d\n%s%s", code, o, e)
	}

	ab := filepath.Join(tmp, "ab.onnx")
	code, o, e := dstune("apply", model, pa, pb, "-o", ab)
	if code != 1 || !strings.Contains(e, "1 entry is changed by more than one delta") || !strings.Contains(e, "ln_f.bias") ||
		!strings.Contains(e, "(flat position 5)") || !strings.Contains(e, "--force") {
		t.Errorf("conflicting deltas: exit %d\n%s%s", code, o, e)
	}
	if _, err := os.Stat(ab); err == nil {
		t.Errorf("a refused apply wrote %s", ab)
	}
	if code, _, e := dstune("run", model, "--delta", pa, "--delta", pb, "--check", ref); code != 1 || !strings.Contains(e, "more than one delta") {
		t.Errorf("run with conflicting deltas: exit %d, %s", code, e)
	}
	code, o, e = dstune("apply", model, pa, pb, "-o", ab, "--force")
	if code != 0 || !strings.Contains(e, "ln_f.bias") || !strings.Contains(e, "later delta") {
		t.Fatalf("--force: exit %d\n%s%s", code, o, e)
	}
	expectApplied(t, base, initializerBytes(t, ab), map[string]map[int64]float32{
		"h.0.c_attn.weight": {0: 0.5, 100: -0.25, 12287: 1e-3},
		"ln_f.bias":         {0: 1, 5: -20, 10: 0.125, 63: 3},
		"h.1.mlp_fc.bias":   {3: 7},
	})
	// In the other order a's value wins.
	ba := filepath.Join(tmp, "ba.onnx")
	if code, o, e := dstune("apply", model, pb, pa, "-o", ba, "--force"); code != 0 {
		t.Fatalf("apply b a --force: exit %d\n%s%s", code, o, e)
	}
	if got := initializerBytes(t, ba)["ln_f.bias"]; math.Float32frombits(binary.LittleEndian.Uint32(got[20:])) != -2 {
		t.Errorf("apply b a: ln_f.bias[5] = %g, want a's -2", math.Float32frombits(binary.LittleEndian.Uint32(got[20:])))
	}
}

// TestApplyRefuses: a delta for another base model (unless --force), one
// that does not fit the model's shapes (even with --force), the base model
// as output, and bad usage; a refused apply leaves no file behind.
func TestApplyRefuses(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	tmp := t.TempDir()
	hash := initializerHash(t, model)
	a, _, _ := tinyGPTDeltas(strings.Repeat("ab", 32))
	foreign := writeDelta(t, tmp, "foreign.safetensors", a)
	out := filepath.Join(tmp, "out.onnx")
	code, o, e := dstune("apply", model, foreign, "-o", out)
	if code != 1 || !strings.Contains(e, "different base model") || !strings.Contains(e, "foreign.safetensors") || !strings.Contains(e, "--force") {
		t.Errorf("foreign delta: exit %d\n%s%s", code, o, e)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("refused apply wrote %s", out)
	}
	code, o, e = dstune("apply", model, foreign, "-o", out, "--force")
	if code != 0 || !strings.Contains(e, "warning") || !strings.Contains(e, "different base model") {
		t.Errorf("foreign delta with --force: exit %d\n%s%s", code, o, e)
	}
	noHash, _, _ := tinyGPTDeltas("")
	if code, _, e := dstune("apply", model, writeDelta(t, tmp, "nohash.safetensors", noHash), "-o", filepath.Join(tmp, "nohash.onnx")); code != 1 || !strings.Contains(e, "records no base hash") {
		t.Errorf("delta without a base hash: exit %d, %s", code, e)
	}

	for _, c := range []struct {
		name string
		td   dst.TensorDelta
		want string
	}{
		{"shape", dst.TensorDelta{Name: "ln_f.bias", Dims: []int64{32}, Indices: []int64{1}, Values: []float32{1}}, "dims [32]"},
		{"name", dst.TensorDelta{Name: "ln_g.bias", Dims: []int64{64}, Indices: []int64{1}, Values: []float32{1}}, `"ln_g.bias"`},
	} {
		d := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash}, Tensors: []dst.TensorDelta{c.td}}
		path := writeDelta(t, tmp, c.name+".safetensors", d)
		bad := filepath.Join(tmp, c.name+".onnx")
		code, o, e := dstune("apply", model, path, "-o", bad, "--force")
		if code != 1 || !strings.Contains(e, "does not fit") || !strings.Contains(e, c.want) {
			t.Errorf("%s: exit %d\n%s%s", c.name, code, o, e)
		}
		if _, err := os.Stat(bad); err == nil {
			t.Errorf("%s: refused apply wrote %s", c.name, bad)
		}
	}

	// A delta for another model that does not fit this one says that it
	// was made for another base model, the likely story.
	other := &dst.Delta{Meta: dst.Metadata{BaseSHA256: strings.Repeat("cd", 32)}, Tensors: []dst.TensorDelta{{Name: "encoder.weight", Dims: []int64{4}, Indices: []int64{1}, Values: []float32{1}}}}
	code, o, e = dstune("apply", model, writeDelta(t, tmp, "other.safetensors", other), "-o", filepath.Join(tmp, "other.onnx"))
	if code != 1 || !strings.Contains(e, "does not fit") || !strings.Contains(e, "it was made for another base model: its base_sha256 is cdcd") {
		t.Errorf("a delta of another model: exit %d\n%s%s", code, o, e)
	}

	own := filepath.Join(tmp, "own.onnx")
	copyFile(t, model, own)
	good, _, _ := tinyGPTDeltas(hash)
	if code, _, e := dstune("apply", own, writeDelta(t, tmp, "good.safetensors", good), "-o", own); code != 2 || !strings.Contains(e, "is the base model") {
		t.Errorf("-o MODEL: exit %d, %s", code, e)
	}
	for _, args := range [][]string{{"apply", model}, {"apply", model, foreign}} {
		if code, _, _ := dstune(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	garbage := filepath.Join(tmp, "garbage.safetensors")
	if err := os.WriteFile(garbage, []byte("not a delta at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, e := dstune("apply", model, garbage, "-o", filepath.Join(tmp, "garbage.onnx")); code != 1 || !strings.Contains(e, "garbage.safetensors") {
		t.Errorf("garbage delta: exit %d, %s", code, e)
	}
	// Nothing but the inputs and the one forced output is left in tmp (no
	// temporary files).
	entries, _ := os.ReadDir(tmp)
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("left behind: %s", en.Name())
		}
	}
}

// TestApplyFloat16: values written into a float16 initializer are rounded
// to float16 (to nearest, ties to even, as onnx.Float32ToHalf does); a
// value beyond float16's range is refused without writing anything.
func TestApplyFloat16(t *testing.T) {
	model := sharedtest.Path(t, "models", "exports", "edge", "fp16_init.onnx")
	tmp := t.TempDir()
	hash := initializerHash(t, model)
	values := []float32{0.1, 1.0 / 3, -65504, 1e-6, 2049} // 2049 is a tie between 2048 and 2050
	d := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash}, Tensors: []dst.TensorDelta{
		{Name: "w16", Dims: []int64{4, 4}, Indices: []int64{0, 3, 7, 8, 15}, Values: values},
	}}
	out := filepath.Join(tmp, "out.onnx")
	code, o, e := dstune("apply", model, writeDelta(t, tmp, "d.safetensors", d), "-o", out)
	if code != 0 || !strings.Contains(o, "float16") || !strings.Contains(o, "10 bytes rewritten") {
		t.Fatalf("exit %d\n%s%s", code, o, e)
	}
	base, got := initializerBytes(t, model)["w16"], initializerBytes(t, out)["w16"]
	changed := map[int]uint16{}
	for i, x := range d.Tensors[0].Indices {
		changed[int(x)] = onnx.Float32ToHalf(values[i])
	}
	if changed[15] != 0x6800 {
		t.Errorf("reference rounding of 2049: %#x, want 0x6800 (2048)", changed[15])
	}
	for i := range 16 {
		want := binary.LittleEndian.Uint16(base[2*i:])
		if h, ok := changed[i]; ok {
			want = h
		}
		if g := binary.LittleEndian.Uint16(got[2*i:]); g != want {
			t.Errorf("w16[%d] = %#x, want %#x", i, g, want)
		}
	}

	over := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash}, Tensors: []dst.TensorDelta{
		{Name: "w16", Dims: []int64{4, 4}, Indices: []int64{2}, Values: []float32{70000}},
	}}
	bad := filepath.Join(tmp, "bad.onnx")
	if code, _, e := dstune("apply", model, writeDelta(t, tmp, "over.safetensors", over), "-o", bad); code != 1 || !strings.Contains(e, "overflows") || !strings.Contains(e, "w16") {
		t.Errorf("overflowing value: exit %d, %s", code, e)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Errorf("refused apply wrote %s", bad)
	}
}

// TestApplyExternalData: a changed initializer in external data, or a
// model with external data written to another directory, makes apply
// re-encode the model (self-contained) and say why; in the model's own
// directory, inline initializers are still patched in place.
func TestApplyExternalData(t *testing.T) {
	src := sharedtest.Path(t, "models", "exports", "gpt2_like_op17_extdata.onnx")
	tmp := t.TempDir()
	hash := initializerHash(t, src)
	base := initializerBytes(t, src)
	ext := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash}, Tensors: []dst.TensorDelta{
		{Name: "wte.weight", Dims: []int64{1000, 64}, Indices: []int64{1, 63999}, Values: []float32{0.5, -0.5}},
	}}
	inline := &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash}, Tensors: []dst.TensorDelta{
		{Name: "h.0.ln1.weight", Dims: []int64{64}, Indices: []int64{2}, Values: []float32{1.5}},
	}}
	pExt, pInline := writeDelta(t, tmp, "ext.safetensors", ext), writeDelta(t, tmp, "inline.safetensors", inline)

	out := filepath.Join(tmp, "ext.onnx")
	code, o, e := dstune("apply", src, pExt, "-o", out)
	if code != 0 || !strings.Contains(o, "re-encoded") || !strings.Contains(o, `"wte.weight" is stored in the external-data file`) {
		t.Fatalf("external initializer: exit %d\n%s%s", code, o, e)
	}
	expectApplied(t, base, initializerBytes(t, out), map[string]map[int64]float32{"wte.weight": {1: 0.5, 63999: -0.5}})

	out2 := filepath.Join(tmp, "inline.onnx")
	code, o, e = dstune("apply", src, pInline, "-o", out2)
	if code != 0 || !strings.Contains(o, "re-encoded") || !strings.Contains(o, "another directory") {
		t.Fatalf("inline initializer, other directory: exit %d\n%s%s", code, o, e)
	}
	expectApplied(t, base, initializerBytes(t, out2), map[string]map[int64]float32{"h.0.ln1.weight": {2: 1.5}})

	// Beside the model (and its data file) the inline change is patched.
	own := filepath.Join(tmp, "own")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, src, filepath.Join(own, filepath.Base(src)))
	copyFile(t, src+".data", filepath.Join(own, filepath.Base(src)+".data"))
	out3 := filepath.Join(own, "tuned.onnx")
	code, o, e = dstune("apply", filepath.Join(own, filepath.Base(src)), pInline, "-o", out3)
	if code != 0 || !strings.Contains(o, "patched in place") {
		t.Fatalf("inline initializer, same directory: exit %d\n%s%s", code, o, e)
	}
	expectApplied(t, base, initializerBytes(t, out3), map[string]map[int64]float32{"h.0.ln1.weight": {2: 1.5}})

	// Beside the model by name only: own/link/.. is the parent of what
	// link leads to (own/a), so the model is re-encoded, not patched with
	// a reference to a data file that is not there.
	if err := os.MkdirAll(filepath.Join(own, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(own, "a", "b"), filepath.Join(own, "link")); err != nil {
		t.Fatal(err)
	}
	code, o, e = dstune("apply", filepath.Join(own, filepath.Base(src)), pInline, "-o", own+"/link/../far.onnx") // not Join, which cleans it
	if code != 0 || !strings.Contains(o, "re-encoded") {
		t.Fatalf("-o link/../far.onnx: exit %d\n%s%s", code, o, e)
	}
	expectApplied(t, base, initializerBytes(t, filepath.Join(own, "a", "far.onnx")), map[string]map[int64]float32{"h.0.ln1.weight": {2: 1.5}})

	// The model's external-data file is an input: -o may not replace it,
	// even with --force.
	data := filepath.Join(own, filepath.Base(src)+".data")
	before := sha256File(t, data)
	code, _, e = dstune("apply", filepath.Join(own, filepath.Base(src)), pInline, "-o", data, "--force")
	if code != 2 || !strings.Contains(e, "the model's external data") || sha256File(t, data) != before {
		t.Errorf("-o the external-data file: exit %d, %s", code, e)
	}
}

// TestApplyOutputIsNoInput: -o naming an input by any path (the delta,
// a symbolic or hard link to the model or a delta) is refused even with
// --force, and leaves the input as it was; -o over an unrelated existing
// file needs --force.
func TestApplyOutputIsNoInput(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	tmp := t.TempDir()
	good, _, _ := tinyGPTDeltas(initializerHash(t, model))
	delta := writeDelta(t, tmp, "d.safetensors", good)
	other := writeDelta(t, tmp, "other.safetensors", good)
	linkToModel, hardToDelta := filepath.Join(tmp, "link.onnx"), filepath.Join(tmp, "hard.safetensors")
	if err := os.Symlink(model, linkToModel); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(other, hardToDelta); err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{model: sha256File(t, model), delta: sha256File(t, delta), other: sha256File(t, other)}
	for _, c := range []struct {
		out, want string
	}{
		{delta, "is delta 1"},
		{filepath.Join(tmp, ".", "sub", "..", "d.safetensors"), "is delta 1"},
		{linkToModel, "is the base model"},
		{hardToDelta, "is delta 2"},
	} {
		if err := os.MkdirAll(filepath.Join(tmp, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, force := range []bool{false, true} {
			args := []string{"apply", model, delta, other, "-o", c.out}
			if force {
				args = append(args, "--force")
			}
			code, _, e := dstune(args...)
			if code != 2 || !strings.Contains(e, c.want) || !strings.Contains(e, "write to another file") {
				t.Errorf("-o %s (force %v): exit %d, %s", c.out, force, code, e)
			}
		}
	}
	for path, sum := range sums {
		if got := sha256File(t, path); got != sum {
			t.Errorf("%s changed", path)
		}
	}

	existing := filepath.Join(tmp, "notes.txt")
	if err := os.WriteFile(existing, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, e := dstune("apply", model, delta, "-o", existing); code != 2 || !strings.Contains(e, "exists (--force overwrites it)") {
		t.Errorf("-o an existing file: exit %d, %s", code, e)
	}
	if b, _ := os.ReadFile(existing); string(b) != "mine" {
		t.Error("the existing file was overwritten without --force")
	}
	if code, _, e := dstune("apply", model, delta, "-o", existing, "--force"); code != 0 {
		t.Errorf("-o an existing file with --force: exit %d, %s", code, e)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
