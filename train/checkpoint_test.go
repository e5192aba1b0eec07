package train

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/update"
)

// crashedRun runs cfg into a new directory and stops it after step at, as
// a kill would (checkpoints every 4 steps: the one of step 4 remains).
func crashedRun(t *testing.T, cfg Config, at int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	crash := errors.New("killed")
	_, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), AfterStep: func(step int64) error {
		if step == at {
			return crash
		}
		return nil
	}})
	if !errors.Is(err, crash) {
		t.Fatalf("run: %v", err)
	}
	return dir
}

func resume(cfg Config, dir string, allowDataChange bool) (*Result, error) {
	return Run(context.Background(), cfg, RunOptions{Dir: dir, Resume: true, Source: newBigramSource(runVocab, 1), AllowDataChange: allowDataChange})
}

// A flipped bit in any checkpoint file, or an edited state.json, is
// refused on resume, naming the file; the intact checkpoint resumes.
func TestResumeVerifiesTheCheckpoint(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	dir := crashedRun(t, cfg, 6)
	ckpt := filepath.Join(dir, checkpointDir)
	edit := func(name string, change func([]byte) []byte) (restore func()) {
		path := filepath.Join(ckpt, name)
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, change(append([]byte{}, orig...)), 0o644); err != nil {
			t.Fatal(err)
		}
		return func() { os.WriteFile(path, orig, 0o644) }
	}
	flip := func(at int) func([]byte) []byte {
		return func(b []byte) []byte {
			b[len(b)-at] ^= 0x10
			return b
		}
	}
	for _, c := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"params.safetensors", flip(5)},
		{"optimizer.safetensors", flip(100)},
		{"state.json", func(b []byte) []byte { return []byte(strings.Replace(string(b), `"step": 4`, `"step": 5`, 1)) }},
		{"state.json", func(b []byte) []byte { return []byte(strings.Replace(string(b), `"index": `, `"index": 1`, 1)) }},
	} {
		restore := edit(c.name, c.change)
		_, err := resume(cfg, dir, false)
		var de *DamagedError
		if !errors.As(err, &de) || de.File != c.name || !strings.Contains(err.Error(), c.name+": sha256 ") {
			t.Errorf("%s changed: %v", c.name, err)
		}
		restore()
	}
	if err := os.Remove(filepath.Join(ckpt, "optimizer.safetensors")); err != nil {
		t.Fatal(err)
	}
	if _, err := resume(cfg, dir, false); err == nil || !strings.Contains(err.Error(), "optimizer.safetensors, which state.json records, is missing") {
		t.Errorf("a file gone: %v", err)
	}
	dir = crashedRun(t, cfg, 6)
	if res, err := resume(cfg, dir, false); err != nil || res.Step != 8 {
		t.Errorf("intact checkpoint: %+v, %v", res, err)
	}
}

// A checkpoint deleted (or another run's put in its place) is reported,
// not silently started over.
func TestResumeReportsAMissingCheckpoint(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	dir := crashedRun(t, cfg, 6)
	if err := os.RemoveAll(filepath.Join(dir, checkpointDir)); err != nil {
		t.Fatal(err)
	}
	_, err := resume(cfg, dir, false)
	if err == nil || !strings.Contains(err.Error(), "the checkpoint of step 4, which checkpoint.json records, is missing") {
		t.Errorf("deleted checkpoint: %v", err)
	}
	// Another run's checkpoint of the same step.
	other := cfg
	other.Seed++
	otherDir := crashedRun(t, other, 6)
	if err := os.Rename(filepath.Join(otherDir, checkpointDir), filepath.Join(dir, checkpointDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := resume(cfg, dir, false); err == nil || !strings.Contains(err.Error(), "it comes from another run") {
		t.Errorf("another run's checkpoint: %v", err)
	}
}

// Changed data is refused on resume unless allowed; an allowed change is
// recorded in config.json and the run goes on with a new epoch.
func TestResumeChecksTheData(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	dir := crashedRun(t, cfg, 6)
	f, err := os.OpenFile(cfg.Data, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"tokens":[1,2,3,4]}` + "\n")
	f.Close()
	_, err = resume(cfg, dir, false)
	if err == nil || !strings.Contains(err.Error(), "has changed since the run started") || !strings.Contains(err.Error(), "--allow-data-change") {
		t.Fatalf("changed data: %v", err)
	}
	res, err := resume(cfg, dir, true)
	if err != nil || res.Step != 8 {
		t.Fatalf("--allow-data-change: %+v, %v", res, err)
	}
	stored, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	sum, size, _ := fileSHA256Size(cfg.Data)
	if stored.DataSHA256 != sum || stored.DataSize != size || len(stored.DataChanges) != 1 ||
		stored.DataChanges[0].Step != 4 || stored.DataChanges[0].File != "data" || stored.DataChanges[0].SHA256 != sum {
		js, _ := json.Marshal(stored)
		t.Errorf("config.json after the change: %s", js)
	}
	st, pos, err := ReadCheckpoint(dir, bigramParams(runVocab, runVocab), cfg.Optimizer, MethodFull)
	if err != nil || st.Step != 8 || pos.Epoch != 1 {
		t.Errorf("after the change: step %v, position %+v (want epoch 1), %v", st, pos, err)
	}
	// The new data is the run's now.
	if _, err := resume(cfg, dir, false); err != nil {
		t.Errorf("resume on the recorded data: %v", err)
	}
}

// TestFloat32Bytes: the bytes a checkpoint writes are the values'
// little-endian encoding, signs, infinities and NaN payloads included.
func TestFloat32Bytes(t *testing.T) {
	v := []float32{0, float32(math.Copysign(0, -1)), 1.5, -3.25e-38, float32(math.Inf(-1)), math.Float32frombits(0x7fc00123), math.MaxFloat32}
	b := float32Bytes(v)
	if len(b) != 4*len(v) {
		t.Fatalf("%d bytes for %d values", len(b), len(v))
	}
	for i, x := range v {
		if got := binary.LittleEndian.Uint32(b[4*i:]); got != math.Float32bits(x) {
			t.Errorf("value %d: bytes %08x, want %08x", i, got, math.Float32bits(x))
		}
	}
	if w := bytesFloat32(b); !slices.EqualFunc(w, v, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
		t.Errorf("round trip: %v, want %v", w, v)
	}
}
