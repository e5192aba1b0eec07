package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// externalFiles opens each external-data file of one model once and keeps
// its contents (mapped or read) for the model's lifetime.
type externalFiles struct {
	dir      string
	files    map[string][]byte // by cleaned location
	releases []func() error
	mapped   [][]byte // the files that are mapped, not read
}

func newExternalFiles(dir string) *externalFiles {
	return &externalFiles{dir: dir, files: map[string][]byte{}}
}

func (e *externalFiles) release() {
	for _, r := range e.releases {
		_ = r()
	}
	e.releases = nil
}

// resolveExternal reads a tensor's external_data entries, checks them, and
// points t.Raw at the bytes in the external file.
func (d *decoder) resolveExternal(t *Tensor, entries []StringPair) error {
	if t.Raw != nil {
		return fmt.Errorf("%w: both raw_data and external data", ErrMalformed)
	}
	x := &ExternalData{}
	hasLength := false
	for _, p := range entries {
		var err error
		switch p.Key {
		case "location":
			x.Location = p.Value
		case "offset":
			x.Offset, err = strconv.ParseInt(p.Value, 10, 64)
		case "length":
			x.Length, err = strconv.ParseInt(p.Value, 10, 64)
			hasLength = true
		case "checksum":
			x.Checksum = p.Value
		}
		if err != nil {
			return fmt.Errorf("%w: external data %s %q: not an integer", ErrMalformed, p.Key, p.Value)
		}
	}
	if x.Location == "" {
		return fmt.Errorf("%w: external data without location", ErrMalformed)
	}
	if x.Offset < 0 || x.Length < 0 {
		return fmt.Errorf("%w: external data %q: negative offset %d or length %d", ErrMalformed, x.Location, x.Offset, x.Length)
	}
	size, err := t.ByteSize()
	if err != nil {
		return err
	}
	if hasLength && x.Length != size {
		return fmt.Errorf("%w: external data %q: length %d, but %s %v takes %d bytes", ErrMalformed, x.Location, x.Length, t.DataType, t.Dims, size)
	}
	if d.dir == "" {
		return fmt.Errorf("external data %q: %w: the model was decoded from memory without a directory to resolve it against", x.Location, ErrNotSupported)
	}
	data, err := d.ext.open(x.Location)
	if err != nil {
		return err
	}
	if x.Offset > int64(len(data)) || size > int64(len(data))-x.Offset {
		return fmt.Errorf("%w: external data %q: offset %d + length %d past end of file (size %d)", ErrMalformed, x.Location, x.Offset, size, len(data))
	}
	t.Raw = data[x.Offset : x.Offset+size : x.Offset+size]
	t.External = x
	return nil
}

// open returns the contents of the external file at location, checking
// that it stays inside the model directory.
func (e *externalFiles) open(location string) ([]byte, error) {
	key := filepath.Clean(filepath.FromSlash(location))
	if data, ok := e.files[key]; ok {
		return data, nil
	}
	path, err := resolveInside(e.dir, location)
	if err != nil {
		return nil, err
	}
	data, release, err := loadFile(path, true)
	if errors.Is(err, errNotRegular) {
		err = fmt.Errorf("%w: %w", ErrUnsafePath, err)
	}
	if err != nil {
		return nil, fmt.Errorf("external data %q: %w", location, err)
	}
	if release != nil {
		e.releases = append(e.releases, release)
		e.mapped = append(e.mapped, data)
	}
	e.files[key] = data
	return data, nil
}

// resolveInside returns the real path of location (relative to dir) after
// checking that it names a file inside dir: no absolute path, no ".."
// component, no symlink resolving outside dir (the path traversals of
// CVE-2022-25882 and CVE-2024-27318).
func resolveInside(dir, location string) (string, error) {
	if strings.ContainsRune(location, 0) {
		return "", fmt.Errorf("external data %q: %w: NUL in path", location, ErrUnsafePath)
	}
	if filepath.IsAbs(location) || strings.HasPrefix(location, "/") || strings.HasPrefix(location, `\`) || filepath.VolumeName(location) != "" || (len(location) >= 2 && location[1] == ':') {
		return "", fmt.Errorf("external data %q: %w: absolute path", location, ErrUnsafePath)
	}
	for _, part := range strings.FieldsFunc(location, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return "", fmt.Errorf("external data %q: %w: \"..\" component", location, ErrUnsafePath)
		}
	}
	realDir, err := realPath(dir)
	if err != nil {
		return "", fmt.Errorf("model directory %q: %w", dir, err)
	}
	real, err := realPath(filepath.Join(dir, filepath.FromSlash(location)))
	if err != nil {
		return "", fmt.Errorf("external data %q: %w", location, err)
	}
	rel, err := filepath.Rel(realDir, real)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", fmt.Errorf("external data %q: %w: resolves to %s, outside the model directory %s", location, ErrUnsafePath, real, realDir)
	}
	return real, nil
}

func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return "", pe
		}
		// Symlink loops and the like: refuse rather than guess.
		return "", fmt.Errorf("%w: cannot resolve %s: %v", ErrUnsafePath, p, err)
	}
	return real, nil
}
