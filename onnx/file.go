package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"unsafe"
)

// mmapThreshold is the file size from which ReadFile maps files instead of
// reading them: mapping costs a system call and page faults, reading a copy;
// above a few MiB not copying wins, and RSS then counts only pages touched.
// Tests lower it to run both paths.
var mmapThreshold int64 = 16 << 20

var errNotRegular = errors.New("not a regular file")

// ReadFile reads the model at path and its external data (resolved against
// the model's directory). Large files are memory-mapped copy-on-write:
// writing Tensor.Raw changes the bytes this process sees, never the file.
// Call Close when the model's tensors are no longer used.
func ReadFile(path string) (*Model, error) {
	buf, release, err := loadFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	m, err := decodeModelBuffer(buf, filepath.Dir(path))
	if err != nil {
		safetensors := looksLikeSafetensors(buf)
		if release != nil {
			_ = release()
		}
		if safetensors {
			return nil, fmt.Errorf("onnx: %s is a safetensors file, not an ONNX model (a delta or an adapter: give it with --delta, or to dstune apply, beside its base model)", path)
		}
		return nil, fmt.Errorf("onnx: %s: %w", path, err)
	}
	m.Path = path
	if release != nil {
		m.resources = append(m.resources, release)
		m.mapped = append(m.mapped, buf)
	}
	return m, nil
}

// looksLikeSafetensors reports whether buf starts as a safetensors file
// does: a little-endian 8-byte header length that fits the file, then the
// header's JSON object.
func looksLikeSafetensors(buf []byte) bool {
	if len(buf) < 10 {
		return false
	}
	n := binary.LittleEndian.Uint64(buf)
	return n >= 2 && n <= uint64(len(buf)-8) && buf[8] == '{'
}

// FileBacked reports whether b lies wholly inside one of the model's file
// mappings (ReadFile maps the model file and its external data when they
// are large): memory whose pages the kernel can drop and read again from
// the file, unchanged, as long as nothing writes to them.
func (m *Model) FileBacked(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(&b[0]))
	hi := lo + uintptr(len(b))
	for _, region := range m.mapped {
		if len(region) == 0 {
			continue
		}
		start := uintptr(unsafe.Pointer(&region[0]))
		if lo >= start && hi <= start+uintptr(len(region)) {
			return true
		}
	}
	return false
}

// ReadTensorFile reads a serialized TensorProto (test_data_set_N/*.pb).
func ReadTensorFile(path string) (*Tensor, error) {
	buf, release, err := loadFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	if release != nil {
		// Tensor files are small; never keep a mapping without an owner.
		buf = append([]byte(nil), buf...)
		_ = release()
	}
	t, err := DecodeTensor(buf)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return t, nil
}

// Close releases the memory mappings behind the model's buffers. Every
// Tensor.Raw of the model (and of its subgraphs) is invalid afterwards;
// touching one may crash the program. Close is idempotent; a model that is
// never closed keeps its mappings (address space, not memory) until exit.
func (m *Model) Close() error {
	var errs []error
	for _, r := range m.resources {
		errs = append(errs, r())
	}
	m.resources = nil
	m.buf = nil
	m.mapped = nil
	return errors.Join(errs...)
}

// loadFile returns the contents of a regular file, mapped when large (then
// release unmaps it) or read into memory (release nil). noFollow refuses a
// symlink as the last component (external data paths arrive resolved).
func loadFile(path string, noFollow bool) (data []byte, release func() error, err error) {
	f, err := openFile(path, noFollow)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w (mode %v)", path, errNotRegular, st.Mode())
	}
	size := st.Size()
	if size > math.MaxInt || size < 0 {
		return nil, nil, fmt.Errorf("%s: %d bytes exceed this platform's address space", path, size)
	}
	if size >= mmapThreshold && size > 0 {
		data, release, err = mapFile(f, size)
		if err == nil {
			return data, release, nil
		}
		// Mapping can fail on odd filesystems: fall back to reading.
	}
	data = make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, nil, fmt.Errorf("%s: %w (file changed while reading?)", path, err)
	}
	return data, nil, nil
}
