// Package atomicfile writes files so that a reader sees the old file or the
// complete new one, never a partial file, even after a crash: the content
// goes to a temporary file beside the target (".NAME.tmp…"), is synced and
// given mode 0644, and is renamed over the target. Every file dstune
// writes goes through it.
//
// A writer holds its temporary file locked (flock) until it is renamed or
// removed. A writer killed before that leaves the file behind, unlocked:
// the next write of the same target removes it, and any other such
// leftover of that target, so no crash leaves them forever. (Where the
// system has no file locks, leftovers stay.)
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dstune/dstune/internal/crashpoint"
	"github.com/dstune/dstune/internal/flock"
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
// before either is committed. Until then it stays locked.
type Pending struct {
	lock      *os.File // a second descriptor of the file, holding its lock
	tmp, path string
}

// tempPrefix is the start of the names of path's temporary files.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp" }

// Prepare writes a new temporary file beside path through fill, syncs and
// closes it, and keeps it locked until Commit or Abort; it first removes
// what killed writers of path left behind. On failure nothing is left
// behind.
func Prepare(path string, fill func(f *os.File) error) (*Pending, error) {
	RemoveStale(path)
	f, lock, err := createLocked(path)
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	err = fill(f)
	crashpoint.Hit2("atomicfile.filled", filepath.Base(path))
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
		lock.Close()
		return nil, err
	}
	return &Pending{lock: lock, tmp: tmp, path: path}, nil
}

// createLocked creates a temporary file for path and locks it through a
// second descriptor (so that the file can be closed, and its errors seen,
// before it is renamed). A cleaner (RemoveStale of another writer) may
// take the new file for a leftover between its creation and the lock, and
// remove it: then it is made again.
func createLocked(path string) (f, lock *os.File, err error) {
	for {
		f, err := os.CreateTemp(filepath.Dir(path), tempPrefix(path)+"*")
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// Name the file being written, not the temporary one.
			return nil, nil, fmt.Errorf("writing %s: %w", path, pe.Err)
		}
		if err != nil {
			return nil, nil, err
		}
		lock, err := os.Open(f.Name())
		if err == nil {
			if err = flock.LockFile(lock); err != nil {
				lock.Close()
			}
		}
		if err != nil {
			os.Remove(f.Name())
			f.Close()
			return nil, nil, err
		}
		if stillLinked(lock) {
			return f, lock, nil
		}
		lock.Close()
		f.Close()
	}
}

// stillLinked reports whether f's name still leads to f.
func stillLinked(f *os.File) bool {
	a, errA := f.Stat()
	b, errB := os.Lstat(f.Name())
	return errA == nil && errB == nil && os.SameFile(a, b)
}

// RemoveStale removes the temporary files of path that no live writer
// holds (left by writers that were killed). It reports nothing: a file it
// cannot remove stays.
func RemoveStale(path string) {
	if !flock.Supported {
		return
	}
	dir, prefix := filepath.Dir(path), tempPrefix(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		name := filepath.Join(dir, e.Name())
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		if ok, err := flock.TryLockFile(f); err == nil && ok && stillLinked(f) {
			os.Remove(name)
		}
		f.Close()
	}
}

// Commit renames the file over its target (removing it when that fails).
func (p *Pending) Commit() error {
	defer p.lock.Close()
	crashpoint.Hit2("atomicfile.rename", filepath.Base(p.path))
	if err := os.Rename(p.tmp, p.path); err != nil {
		os.Remove(p.tmp)
		return err
	}
	return nil
}

// Abort removes the file.
func (p *Pending) Abort() {
	os.Remove(p.tmp)
	p.lock.Close()
}

// SyncDir syncs a directory, so that renames inside it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
