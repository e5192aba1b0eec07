package train

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/crashpoint"
	"github.com/dstune/dstune/internal/jsontext"
	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// A checkpoint is the directory RUN/checkpoint holding
//
//	state.json              CheckpointInfo: format, step, data position, optimizer,
//	                        method, the sha256 of every other file and its own
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
// names, and ReadCheckpoint looks for both. Then RUN/checkpoint.json
// records the step and state.json's hash (CheckpointRecord), so that a
// checkpoint deleted or swapped for another is noticed.
const (
	checkpointDir    = "checkpoint"
	checkpointOld    = "checkpoint.old"
	checkpointTmp    = ".checkpoint.tmp"
	checkpointRecord = "checkpoint.json"
	checkpointFormat = 2
)

// CheckpointInfo is a checkpoint's state.json.
type CheckpointInfo struct {
	Format     int               `json:"format"`
	Step       int64             `json:"step"`
	Position   Position          `json:"position"`
	Optimizer  string            `json:"optimizer"`
	Method     string            `json:"method"`
	MethodMeta map[string]string `json:"method_meta,omitempty"`
	// Steps is the step count the run asked for when the checkpoint was
	// written (config.json's; a resume may change it, recording the
	// change there). 0: a checkpoint written before it was recorded.
	Steps int64 `json:"steps,omitempty"`
	// Files maps every other file of the checkpoint to its sha256
	// (format 2; format 1 had none).
	Files map[string]string `json:"files,omitempty"`
	// Config is the run's configuration as config.json defines it,
	// without what a resume may change (runIdentity): it ties the
	// checkpoint to its run, so that another run's checkpoint, or a
	// config.json edited since, is refused. Checkpoints written before
	// it was recorded have none, and are not checked.
	Config json.RawMessage `json:"config,omitempty"`
	// SHA256 is the sha256 of state.json as written without this field.
	SHA256 string `json:"sha256,omitempty"`
}

// CheckpointRecord is RUN/checkpoint.json: the last checkpoint a run
// wrote.
type CheckpointRecord struct {
	Step        int64  `json:"step"`
	StateSHA256 string `json:"state_sha256"`
	// ConfigSHA256 is the sha256 of the checkpoint's Config (compact):
	// the run's identity, kept apart from config.json and the
	// checkpoint, which tells which of the two changed when they
	// disagree ("": the checkpoint recorded none).
	ConfigSHA256 string `json:"config_sha256,omitempty"`
}

// encodeState is state.json's bytes for info with its own hash (the
// sha256 of the bytes without it) filled in.
func encodeState(info CheckpointInfo) ([]byte, string, error) {
	info.SHA256 = ""
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(append(data, '\n'))
	info.SHA256 = hex.EncodeToString(sum[:])
	data, err = json.MarshalIndent(info, "", "  ")
	return append(data, '\n'), info.SHA256, err
}

// float32Bytes is v as little-endian bytes: a view of v's memory on a
// little-endian machine (no copy of a model's worth of values; v must not
// change while the bytes are in use), a copy elsewhere.
func float32Bytes(v []float32) []byte {
	if littleEndian && len(v) > 0 {
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// littleEndian: float32 values are stored as their little-endian bytes.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

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
// order) and the data position as RUN/checkpoint, atomically, then
// records it in RUN/checkpoint.json.
func WriteCheckpoint(run string, params []*ir.Param, st *EngineState, pos Position, optimizer, method string) error {
	return writeCheckpoint(run, params, st, pos, optimizer, method, nil, 0)
}

// writeCheckpoint is WriteCheckpoint recording the run's identity (its
// runIdentity; nil: none) in state.json.
func writeCheckpoint(run string, params []*ir.Param, st *EngineState, pos Position, optimizer, method string, identity json.RawMessage, steps int64) error {
	tmp := filepath.Join(run, checkpointTmp)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	// The new checkpoint replaces the last one: it takes its directory's
	// mode and its files' (a run made private stays private), a first
	// one what the umask leaves, as mkdir's.
	prev, prevMode := lastCheckpointDir(run)
	mkdirMode := fs.FileMode(0o777)
	if prev != "" {
		mkdirMode = 0o700 // the owner's alone until it is complete
	}
	if err := os.Mkdir(tmp, mkdirMode); err != nil {
		return err
	}
	like := func(name string) atomicfile.Options {
		if prev == "" {
			return atomicfile.Options{}
		}
		return atomicfile.Options{ModeOf: filepath.Join(prev, name)}
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
	files := map[string]string{}
	write := func(name string, meta map[string]string, tensors []safetensors.Tensor) error {
		sum, err := writeHashed(filepath.Join(tmp, name), like(name), meta, tensors)
		files[name] = sum
		return err
	}
	meta := map[string]string{"format": fmt.Sprint(checkpointFormat), "step": fmt.Sprint(st.Step)}
	if err := write("params.safetensors", meta, values); err != nil {
		return err
	}
	if err := write("optimizer.safetensors", map[string]string{"optimizer": optimizer}, slots); err != nil {
		return err
	}
	if len(st.Method.Tensors) > 0 {
		if err := write("method.safetensors", map[string]string{"method": method}, st.Method.Tensors); err != nil {
			return err
		}
	}
	info := CheckpointInfo{Format: checkpointFormat, Step: st.Step, Position: pos, Optimizer: optimizer, Method: method, MethodMeta: st.Method.Meta, Steps: steps, Files: files, Config: identity}
	state, _, err := encodeState(info)
	if err != nil {
		return err
	}
	if err := like("state.json").Write(filepath.Join(tmp, "state.json"), state); err != nil {
		return err
	}
	if prev != "" {
		if err := os.Chmod(tmp, prevMode); err != nil {
			return err
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	crashpoint.Hit("checkpoint.written")
	cur, old := filepath.Join(run, checkpointDir), filepath.Join(run, checkpointOld)
	if err := swapDir(run, tmp, cur, old, "checkpoint"); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	return recordCheckpoint(run)
}

// lastCheckpointDir is the checkpoint directory a new one replaces
// (checkpoint, or checkpoint.old where a crash mid-swap left none) and
// its permissions; "" when there is none.
func lastCheckpointDir(run string) (string, fs.FileMode) {
	for _, name := range []string{checkpointDir, checkpointOld} {
		dir := filepath.Join(run, name)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir, st.Mode().Perm()
		}
	}
	return "", 0
}

// recordCheckpoint writes RUN/checkpoint.json for the checkpoint in place.
func recordCheckpoint(run string) error {
	info, state, err := readState(os.DirFS(filepath.Join(run, checkpointDir)))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(state)
	return writeJSONFile(filepath.Join(run, checkpointRecord), CheckpointRecord{Step: info.Step, StateSHA256: hex.EncodeToString(sum[:]), ConfigSHA256: identitySHA256(info.Config)})
}

// writeHashed writes a safetensors file atomically, as opts say, and
// returns its sha256.
func writeHashed(path string, opts atomicfile.Options, meta map[string]string, tensors []safetensors.Tensor) (string, error) {
	h := sha256.New()
	err := opts.WriteWith(path, func(f *os.File) error {
		return safetensors.Encode(io.MultiWriter(f, h), meta, tensors)
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
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
// (which says what state each parameter has). Every file is checked
// against the sha256 state.json records, and state.json against its own;
// every tensor against the parameters' names and shapes.
func ReadCheckpoint(run string, params []*ir.Param, opt update.Optimizer, method string) (*EngineState, Position, error) {
	dir := filepath.Join(run, checkpointDir)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		old := filepath.Join(run, checkpointOld)
		if _, err2 := os.Stat(filepath.Join(old, "state.json")); err2 != nil {
			return nil, Position{}, fmt.Errorf("%s: no checkpoint (%w)", run, err)
		}
		dir = old
	}
	st, pos, err := readCheckpointFS(os.DirFS(dir), params, opt, method)
	if err != nil {
		return nil, Position{}, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	return st, pos, nil
}

// DamagedError is a checkpoint file whose bytes are not those its
// checkpoint recorded.
type DamagedError struct {
	File      string
	Got, Want string // sha256
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("%s: sha256 %s, the checkpoint records %s: the file was damaged (a flipped bit, a cut copy) or edited; restore the run directory from a copy, or start a new run", e.File, e.Got, e.Want)
}

// readState reads and verifies the state.json of the checkpoint in dir.
func readState(dir fs.FS) (CheckpointInfo, []byte, error) {
	var info CheckpointInfo
	data, err := readFSFile(dir, "state.json", 1<<20)
	if err != nil {
		return info, nil, err
	}
	if err := decodeJSONFile(data, &info, true); err != nil {
		return info, nil, fmt.Errorf("state.json: %w: the checkpoint was damaged (a flipped bit, a cut copy) or edited; restore the run directory from a copy, or start a new run", err)
	}
	if info.Format >= 2 {
		// Written by encodeState, the bytes are a function of the content.
		again, sum, err := encodeState(info)
		if err != nil {
			return info, nil, err
		}
		if sum != info.SHA256 || !bytes.Equal(again, data) {
			return info, nil, &DamagedError{File: "state.json", Got: sum, Want: info.SHA256}
		}
	}
	return info, data, nil
}

// readCheckpointFS reads the checkpoint held in dir (a directory, or
// files in memory).
func readCheckpointFS(dir fs.FS, params []*ir.Param, opt update.Optimizer, method string) (*EngineState, Position, error) {
	info, _, err := readState(dir)
	if err != nil {
		return nil, Position{}, err
	}
	optName := opt.Name
	switch {
	case info.Format != 1 && info.Format != checkpointFormat:
		return nil, Position{}, fmt.Errorf("state.json: format %d, this dstune reads 1 and %d", info.Format, checkpointFormat)
	case info.Step < 1:
		return nil, Position{}, fmt.Errorf("state.json: step %d", info.Step)
	case info.Optimizer != optName:
		return nil, Position{}, fmt.Errorf("state.json: written by optimizer %q, the run uses %q", info.Optimizer, optName)
	case info.Method != method:
		return nil, Position{}, fmt.Errorf("state.json: written by method %q, the run uses %q", info.Method, method)
	}
	read := func(name string) (*safetensors.File, error) {
		data, err := readFSFile(dir, name, math.MaxInt)
		if err != nil {
			return nil, err
		}
		if info.Format >= 2 {
			want, listed := info.Files[name]
			sum := sha256.Sum256(data)
			if got := hex.EncodeToString(sum[:]); !listed || got != want {
				if !listed {
					want = "no such file"
				}
				return nil, &DamagedError{File: name, Got: got, Want: want}
			}
		}
		f, err := safetensors.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return f, nil
	}
	if info.Format >= 2 {
		for name := range info.Files {
			if _, err := fs.Stat(dir, name); err != nil {
				return nil, Position{}, fmt.Errorf("%s, which state.json records, is missing: %w", name, err)
			}
		}
	}
	values, err := read("params.safetensors")
	if err != nil {
		return nil, Position{}, err
	}
	if step := values.Metadata["step"]; step != fmt.Sprint(info.Step) {
		return nil, Position{}, fmt.Errorf("params.safetensors holds step %q, state.json says %d", step, info.Step)
	}
	slots, err := read("optimizer.safetensors")
	if err != nil {
		return nil, Position{}, err
	}
	st := &EngineState{Step: info.Step, Params: map[string][]float32{}, Optimizer: map[string][]update.Slot{}}
	// The tensors by name, once: a lookup per parameter and slot in the
	// files' lists would be quadratic in the parameters.
	index := map[*safetensors.File]map[string]*safetensors.Tensor{}
	for _, f := range []*safetensors.File{values, slots} {
		index[f] = make(map[string]*safetensors.Tensor, len(f.Tensors))
		for i := range f.Tensors {
			index[f][f.Tensors[i].Name] = &f.Tensors[i]
		}
	}
	want := func(f *safetensors.File, file, name string, shape []int) ([]float32, error) {
		t := index[f][name]
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
		specs := opt.Slots(shape)
		ps := make([]update.Slot, len(specs))
		for i, spec := range specs {
			ps[i] = update.Slot{Name: spec.Name, Shape: spec.Shape}
			if ps[i].Data, err = want(slots, "optimizer.safetensors", p.Name+":"+spec.Name, spec.Shape); err != nil {
				return nil, Position{}, err
			}
		}
		st.Optimizer[p.Name] = ps
	}
	if n, m := len(values.Tensors), len(params); n != m {
		return nil, Position{}, fmt.Errorf("params.safetensors: %d tensors, the run trains %d parameters", n, m)
	}
	st.Method.Meta = info.MethodMeta
	if _, err := fs.Stat(dir, "method.safetensors"); err == nil {
		f, err := read("method.safetensors")
		if err != nil {
			return nil, Position{}, err
		}
		st.Method.Tensors = f.Tensors
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, Position{}, err
	}
	return st, info.Position, nil
}

// checkCheckpointRecord compares a run's checkpoint with the last one it
// recorded writing (RUN/checkpoint.json), and with the run's identity
// (runIdentity of its config.json; nil: not compared): a checkpoint that
// is missing or not a directory, another of the same step, or one
// written under other settings (another run's, or config.json edited
// since) is an error; an older one of the run, restored on purpose, is
// not.
func checkCheckpointRecord(run string, identity json.RawMessage) error {
	recPath := filepath.Join(run, checkpointRecord)
	var rec CheckpointRecord
	recorded := false
	data, err := regfile.ReadRegular(recPath, 1<<16)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := decodeJSONFile(data, &rec, false); err != nil {
			return fmt.Errorf("%s: %w: the file was damaged or edited; restore the run directory from a copy, or start a new run", recPath, err)
		}
		recorded = true
	}
	// (A checkpoint.old beside it would be taken for the checkpoint, and
	// then removed.)
	if st, err := os.Stat(filepath.Join(run, checkpointDir)); err == nil && !st.IsDir() {
		what := "the run's checkpoint"
		if recorded {
			what = fmt.Sprintf("the checkpoint of step %d, which %s records", rec.Step, checkpointRecord)
		}
		return fmt.Errorf("%s is not a directory (%s is in its place, not %s): put the checkpoint directory back, or start a new run in another directory; the run does not silently start over",
			filepath.Join(run, checkpointDir), regfile.Kind(st.Mode()), what)
	}
	if !HasCheckpoint(run) {
		if !recorded {
			return nil
		}
		return fmt.Errorf("%s: the checkpoint of step %d, which %s records, is missing (deleted or moved): restore it, or start a new run in another directory; the run does not silently start over",
			run, rec.Step, checkpointRecord)
	}
	dir := filepath.Join(run, checkpointDir)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		dir = filepath.Join(run, checkpointOld)
	}
	info, state, err := readState(os.DirFS(dir))
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	sum := sha256.Sum256(state)
	if recorded && info.Step == rec.Step && hex.EncodeToString(sum[:]) != rec.StateSHA256 {
		return fmt.Errorf("checkpoint %s: step %d, but not the checkpoint this run wrote at that step (%s records state.json's sha256 %s): it comes from another run",
			dir, info.Step, checkpointRecord, rec.StateSHA256)
	}
	return checkIdentity(run, dir, info, rec.ConfigSHA256, identity)
}

// readFSFile reads a regular file of at most limit bytes from fsys.
func readFSFile(fsys fs.FS, name string, limit int64) ([]byte, error) {
	// Looked at before it is opened: opening a FIFO waits for a writer.
	if st, err := fs.Stat(fsys, name); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes (%s)", name, limit, regfile.Kind(st.Mode()))
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > limit {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", name, limit)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return data, nil
}

// decodeJSONFile decodes a file's bytes, one JSON value, into v (unknown
// fields refused when strict); its errors say what is wrong with the
// file: empty, cut short, not JSON at a line and column, or followed by
// more text.
func decodeJSONFile(data []byte, v any, strict bool) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("the file is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("the file is cut short: its JSON ends before the object is closed (%w)", io.ErrUnexpectedEOF)
	case errors.As(err, &se):
		line, col := jsontext.LineColumn(data, se.Offset)
		return fmt.Errorf("line %d, column %d: %w", line, col, err)
	case err != nil:
		return err
	}
	rest := dec.InputOffset()
	for rest < int64(len(data)) && strings.IndexByte(" \t\r\n", data[rest]) >= 0 {
		rest++
	}
	if rest < int64(len(data)) {
		line, col := jsontext.LineColumn(data, rest+1)
		return fmt.Errorf("line %d, column %d: text after the JSON object (the file holds one object)", line, col)
	}
	return nil
}

// checkCheckpointSteps refuses a config.json whose step count is not the
// one the run's checkpoint was written under, unless config.json records
// that change (a resume with --steps that has not written a checkpoint
// since): the step count is no part of the checkpoint's identity, which a
// resume may change, but an edit of config.json is not such a change.
func checkCheckpointSteps(run string, stored Config) error {
	dir := filepath.Join(run, checkpointDir)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		dir = filepath.Join(run, checkpointOld)
	}
	info, _, err := readState(os.DirFS(dir))
	if err != nil || info.Steps == 0 || info.Steps == stored.Steps {
		return nil // no checkpoint (checked elsewhere), or an older one
	}
	if n := len(stored.StepsChanges); n > 0 {
		if c := stored.StepsChanges[n-1]; c.Step == info.Step && c.Was == info.Steps && c.Steps == stored.Steps {
			return nil
		}
	}
	return fmt.Errorf("resume: %s asks for %d steps, but the run's checkpoint (step %d) was written for %d and config.json records no such change: config.json was edited since (a resume changes the steps with --steps)",
		filepath.Join(run, ConfigFile), stored.Steps, info.Step, info.Steps)
}
