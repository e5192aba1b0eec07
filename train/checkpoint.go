package train

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// A checkpoint is the directory RUN/checkpoint holding
//
//	state.json              CheckpointInfo: format, step, data position, optimizer, method
//	params.safetensors      every trainable parameter's values (F32), by ONNX name
//	optimizer.safetensors   every optimizer slot, named "PARAM:slot" (slots as the
//	                        optimizer's config documents; a slot name has no ':')
//	method.safetensors      the method's tensors, when it has any
//
// The data order is a function of (seed, Position), so the position is
// the whole random state of a run.
//
// It is written atomically: into RUN/.checkpoint.tmp, every file and the
// directory synced, then the previous checkpoint is renamed to
// RUN/checkpoint.old, the new one into place, and the old one removed. A
// crash at any point leaves a complete checkpoint under one of the two
// names, and ReadCheckpoint looks for both.
const (
	checkpointDir    = "checkpoint"
	checkpointOld    = "checkpoint.old"
	checkpointTmp    = ".checkpoint.tmp"
	checkpointFormat = 1
)

// CheckpointInfo is a checkpoint's state.json.
type CheckpointInfo struct {
	Format     int               `json:"format"`
	Step       int64             `json:"step"`
	Position   Position          `json:"position"`
	Optimizer  string            `json:"optimizer"`
	Method     string            `json:"method"`
	MethodMeta map[string]string `json:"method_meta,omitempty"`
}

func float32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesFloat32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func shape64(s []int) []int64 {
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

// WriteCheckpoint writes st (for the trainable parameters params, in
// order) and the data position as RUN/checkpoint, atomically.
func WriteCheckpoint(run string, params []*ir.Param, st *EngineState, pos Position, optimizer, method string) error {
	tmp := filepath.Join(run, checkpointTmp)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	var values, slots []safetensors.Tensor
	for _, p := range params {
		v, ok := st.Params[p.Name]
		if !ok {
			return fmt.Errorf("checkpoint: no values for parameter %q", p.Name)
		}
		values = append(values, safetensors.Tensor{Name: p.Name, DType: safetensors.F32, Shape: shape64(p.Tensor.Shape()), Data: float32Bytes(v)})
		ps, ok := st.Optimizer[p.Name]
		if !ok {
			return fmt.Errorf("checkpoint: no optimizer state for parameter %q", p.Name)
		}
		for _, s := range ps {
			slots = append(slots, safetensors.Tensor{Name: p.Name + ":" + s.Name, DType: safetensors.F32, Shape: shape64(s.Shape), Data: float32Bytes(s.Data)})
		}
	}
	meta := map[string]string{"format": fmt.Sprint(checkpointFormat), "step": fmt.Sprint(st.Step)}
	if err := safetensors.WriteFile(filepath.Join(tmp, "params.safetensors"), meta, values); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(tmp, "optimizer.safetensors"), map[string]string{"optimizer": optimizer}, slots); err != nil {
		return err
	}
	if len(st.Method.Tensors) > 0 {
		if err := safetensors.WriteFile(filepath.Join(tmp, "method.safetensors"), map[string]string{"method": method}, st.Method.Tensors); err != nil {
			return err
		}
	}
	info := CheckpointInfo{Format: checkpointFormat, Step: st.Step, Position: pos, Optimizer: optimizer, Method: method, MethodMeta: st.Method.Meta}
	if err := writeJSONFile(filepath.Join(tmp, "state.json"), info); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	cur, old := filepath.Join(run, checkpointDir), filepath.Join(run, checkpointOld)
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(cur, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, cur); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(run); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// writeJSONFile writes v as indented JSON to path atomically (temporary
// file, sync, rename).
func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'))
}

// HasCheckpoint reports whether run holds a checkpoint.
func HasCheckpoint(run string) bool {
	for _, name := range []string{checkpointDir, checkpointOld} {
		if _, err := os.Stat(filepath.Join(run, name, "state.json")); err == nil {
			return true
		}
	}
	return false
}

// ReadCheckpoint reads RUN/checkpoint (or RUN/checkpoint.old, left by a
// crash during a write) for the given trainable parameters and optimizer
// (which says what state each parameter has). Every tensor is checked
// against the parameters' names and shapes.
func ReadCheckpoint(run string, params []*ir.Param, opt update.Optimizer, method string) (*EngineState, Position, error) {
	dir := filepath.Join(run, checkpointDir)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		old := filepath.Join(run, checkpointOld)
		if _, err2 := os.Stat(filepath.Join(old, "state.json")); err2 != nil {
			return nil, Position{}, fmt.Errorf("%s: no checkpoint (%w)", run, err)
		}
		dir = old
	}
	st, pos, err := readCheckpointDir(dir, params, opt, method)
	if err != nil {
		return nil, Position{}, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	return st, pos, nil
}

func readCheckpointDir(dir string, params []*ir.Param, opt update.Optimizer, method string) (*EngineState, Position, error) {
	var info CheckpointInfo
	data, err := readSmallFile(filepath.Join(dir, "state.json"), 1<<20)
	if err != nil {
		return nil, Position{}, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, Position{}, fmt.Errorf("state.json: %w", err)
	}
	optName := opt.Name
	switch {
	case info.Format != checkpointFormat:
		return nil, Position{}, fmt.Errorf("state.json: format %d, this dstune reads %d", info.Format, checkpointFormat)
	case info.Step < 1:
		return nil, Position{}, fmt.Errorf("state.json: step %d", info.Step)
	case info.Optimizer != optName:
		return nil, Position{}, fmt.Errorf("state.json: written by optimizer %q, the run uses %q", info.Optimizer, optName)
	case info.Method != method:
		return nil, Position{}, fmt.Errorf("state.json: written by method %q, the run uses %q", info.Method, method)
	}
	values, err := safetensors.ReadFile(filepath.Join(dir, "params.safetensors"))
	if err != nil {
		return nil, Position{}, err
	}
	slots, err := safetensors.ReadFile(filepath.Join(dir, "optimizer.safetensors"))
	if err != nil {
		return nil, Position{}, err
	}
	st := &EngineState{Step: info.Step, Params: map[string][]float32{}, Optimizer: map[string][]update.Slot{}}
	want := func(f *safetensors.File, file, name string, shape []int) ([]float32, error) {
		t := f.Tensor(name)
		switch {
		case t == nil:
			return nil, fmt.Errorf("%s: no tensor %q", file, name)
		case t.DType != safetensors.F32 || !slices.Equal(t.Shape, shape64(shape)):
			return nil, fmt.Errorf("%s: tensor %q is %s%v, want F32%v", file, name, t.DType, t.Shape, shape)
		}
		return bytesFloat32(t.Data), nil
	}
	for _, p := range params {
		shape := []int(p.Tensor.Shape())
		v, err := want(values, "params.safetensors", p.Name, shape)
		if err != nil {
			return nil, Position{}, err
		}
		st.Params[p.Name] = v
		ps := opt.NewSlots(shape)
		for i := range ps {
			s := &ps[i]
			if s.Data, err = want(slots, "optimizer.safetensors", p.Name+":"+s.Name, s.Shape); err != nil {
				return nil, Position{}, err
			}
		}
		st.Optimizer[p.Name] = ps
	}
	if n, m := len(values.Tensors), len(params); n != m {
		return nil, Position{}, fmt.Errorf("params.safetensors: %d tensors, the run trains %d parameters", n, m)
	}
	st.Method.Meta = info.MethodMeta
	if f, err := safetensors.ReadFile(filepath.Join(dir, "method.safetensors")); err == nil {
		st.Method.Tensors = f.Tensors
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, Position{}, err
	}
	return st, info.Position, nil
}

// readSmallFile reads a regular file of at most limit bytes.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > limit {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, limit)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}
