// Package atomicfile writes files so that a reader sees the old file or the
// complete new one, never a partial file, even after a crash: the content
// goes to a temporary file beside the target (".NAME.tmp…"), is synced and
// given mode 0644, and is renamed over the target. Every file dstune
// writes goes through it.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes data to path atomically.
func Write(path string, data []byte) error {
	return WriteWith(path, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteWith writes to path atomically what fill writes into the temporary
// file (fill may write at offsets; it must not close the file).
func WriteWith(path string, fill func(f *os.File) error) error {
	p, err := Prepare(path, fill)
	if err != nil {
		return err
	}
	return p.Commit()
}

// Pending is a complete, synced temporary file waiting to replace its
// target: Commit renames it into place, Abort removes it. Two files that
// belong together (a model and its external data) are both prepared
// before either is committed.
type Pending struct {
	tmp, path string
}

// Prepare writes a new temporary file beside path through fill, syncs and
// closes it. On failure nothing is left behind.
func Prepare(path string, fill func(f *os.File) error) (*Pending, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	err = fill(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return &Pending{tmp: tmp, path: path}, nil
}

// Commit renames the file over its target (removing it when that fails).
func (p *Pending) Commit() error {
	if err := os.Rename(p.tmp, p.path); err != nil {
		os.Remove(p.tmp)
		return err
	}
	return nil
}

// Abort removes the file.
func (p *Pending) Abort() { os.Remove(p.tmp) }

// SyncDir syncs a directory, so that renames inside it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
