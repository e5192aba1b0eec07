package train

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// checkpointFiles are the files of a checkpoint the fuzzer replaces.
var checkpointFiles = []string{"state.json", "params.safetensors", "optimizer.safetensors", "method.safetensors"}

// FuzzReadCheckpoint replaces one file of a valid checkpoint with the
// fuzzer's bytes — with state.json's hashes left as they were (the file
// is then refused as damaged) or recomputed, so that the bytes reach the
// decoders and the checks of names, shapes, step and state. Reading must
// never panic, and what it accepts must fit the parameters.
func FuzzReadCheckpoint(f *testing.F) {
	params := []*ir.Param{
		{Name: "w", Tensor: ir.NewTensor(ir.Float32, ir.Shape{3, 4})},
		{Name: "b", Tensor: ir.NewTensor(ir.Float32, ir.Shape{4})},
	}
	opt := mustDefault(update.OptimizerAdamW)
	st := &EngineState{Step: 7, Params: map[string][]float32{}, Optimizer: map[string][]update.Slot{},
		Method: MethodState{Meta: map[string]string{"k": "v"}, Tensors: []safetensors.Tensor{{Name: "m", DType: safetensors.U8, Shape: []int64{2}, Data: []byte{1, 0}}}}}
	for _, p := range params {
		n := p.Tensor.Shape().Size()
		st.Params[p.Name] = make([]float32, n)
		for i := range n {
			st.Params[p.Name][i] = float32(i) / 3
		}
		st.Optimizer[p.Name] = opt.NewSlots(p.Tensor.Shape())
	}
	dir := f.TempDir()
	if err := WriteCheckpoint(dir, params, st, Position{Epoch: 1, Index: 2}, opt.Name, "fuzz"); err != nil {
		f.Fatal(err)
	}
	valid := fstest.MapFS{}
	for i, name := range checkpointFiles {
		b, err := os.ReadFile(filepath.Join(dir, checkpointDir, name))
		if err != nil {
			f.Fatal(err)
		}
		valid[name] = &fstest.MapFile{Data: b, Mode: 0o644}
		f.Add(uint8(i), b, true)
		f.Add(uint8(i), b[:len(b)/2], true)
		f.Add(uint8(i), b, false)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte, rehash bool) {
		files := maps.Clone(valid)
		files[checkpointFiles[int(which)%len(checkpointFiles)]] = &fstest.MapFile{Data: data, Mode: 0o644}
		if rehash {
			rehashCheckpoint(files)
		}
		got, _, err := readCheckpointFS(files, params, opt, "fuzz")
		if err != nil {
			return
		}
		if got.Step < 1 {
			t.Fatalf("accepted step %d", got.Step)
		}
		for _, p := range params {
			if n := p.Tensor.Shape().Size(); len(got.Params[p.Name]) != n {
				t.Fatalf("parameter %s: %d values, want %d", p.Name, len(got.Params[p.Name]), n)
			}
			specs := opt.Slots(p.Tensor.Shape())
			if len(got.Optimizer[p.Name]) != len(specs) {
				t.Fatalf("parameter %s: %d slots", p.Name, len(got.Optimizer[p.Name]))
			}
			for i, s := range got.Optimizer[p.Name] {
				if s.Name != specs[i].Name || !slices.Equal(s.Shape, specs[i].Shape) || len(s.Data) != update.NumElements(s.Shape) {
					t.Fatalf("parameter %s: slot %s%v of %d values", p.Name, s.Name, s.Shape, len(s.Data))
				}
			}
		}
	})
}

// rehashCheckpoint rewrites state.json with the sha256 of the files as
// they are (its own hash too), as a careful forger would.
func rehashCheckpoint(files fstest.MapFS) {
	var info CheckpointInfo
	if json.Unmarshal(files["state.json"].Data, &info) != nil {
		return
	}
	info.Files = map[string]string{}
	for _, name := range checkpointFiles[1:] {
		sum := sha256.Sum256(files[name].Data)
		info.Files[name] = hex.EncodeToString(sum[:])
	}
	if state, _, err := encodeState(info); err == nil {
		files["state.json"] = &fstest.MapFile{Data: state, Mode: 0o644}
	}
}
