// Package atomicfile writes files so that a reader sees the old file or the
// complete new one, never a partial file, even after a crash: the content
// goes to a temporary file beside the target (".NAME.tmp…"), is synced,
// and is renamed over the target. Every file dstune writes goes through
// it.
//
// A new file gets the mode the umask leaves of 0666 (as cp and shells
// make files); a file that replaces another keeps the mode of the one it
// replaces, so a file the user made private stays private.
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
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dstune/dstune/internal/crashpoint"
	"github.com/dstune/dstune/internal/flock"
)

// Options change how a file is written. The zero value replaces an
// existing target.
type Options struct {
	// NoReplace fails the write with an *ExistsError, rather than replace
	// the target, when a file is at the path by the time the new one is
	// renamed into place: for an output that was checked not to exist
	// (overwriting was not asked for), which another process may have
	// created since.
	NoReplace bool
	// ModeOf names a file whose permissions a new target takes: the file
	// it stands for, written elsewhere (a checkpoint's files are written
	// into a new directory that replaces the old one). "", or a file that
	// does not exist: none. A target that exists keeps its own.
	ModeOf string
}

// ExistsError is a NoReplace write whose target exists.
type ExistsError struct{ Path string }

func (e *ExistsError) Error() string { return e.Path + " exists" }

// Is makes errors.Is(err, fs.ErrExist) hold.
func (e *ExistsError) Is(target error) bool { return target == fs.ErrExist }

// Write writes data to path atomically.
func Write(path string, data []byte) error { return Options{}.Write(path, data) }

// WriteWith writes to path atomically what fill writes into the temporary
// file (fill may write at offsets; it must not close the file).
func WriteWith(path string, fill func(f *os.File) error) error {
	return Options{}.WriteWith(path, fill)
}

// Prepare is Options{}.Prepare.
func Prepare(path string, fill func(f *os.File) error) (*Pending, error) {
	return Options{}.Prepare(path, fill)
}

// Write writes data to path atomically.
func (o Options) Write(path string, data []byte) error {
	return o.WriteWith(path, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteWith writes to path atomically what fill writes into the temporary
// file (fill may write at offsets; it must not close the file).
func (o Options) WriteWith(path string, fill func(f *os.File) error) error {
	p, err := o.Prepare(path, fill)
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
	noReplace bool
	written   os.FileInfo // the file, as Commit renames it
}

// maxName is the longest file name most file systems take (NAME_MAX).
const maxName = 255

// tempDigits is the most digits of a temporary file's random suffix.
const tempDigits = 10

// tempPrefix is the start of the names of path's temporary files:
// ".NAME.tmp", NAME cut (at a character) so that the random suffix still
// fits in a file name when the target's name takes nearly all of it.
// Targets whose names are cut alike share the prefix: a write of one
// removes the other's leftovers too, which is no harm, as no live writer
// holds them.
func tempPrefix(path string) string {
	name := filepath.Base(path)
	if room := maxName - len(".") - len(".tmp") - tempDigits; len(name) > room {
		// Cut before a character the room would split (a name that is
		// not UTF-8 at all is cut at the room).
		cut := room
		for k := 0; k < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(name[cut]); k++ {
			cut--
		}
		name = name[:cut]
	}
	return "." + name + ".tmp"
}

// Dir is the directory path's file is in, as the kernel finds it: path up
// to its last element, as it is spelled. filepath.Dir cleans it, which
// takes "link/.." for "." where the kernel, link being a symbolic link,
// goes to the parent of the directory the link leads to; a temporary file
// made there would not be beside the target.
func Dir(path string) string {
	d := Beside(path, "")
	vol := len(filepath.VolumeName(d))
	for len(d) > vol+1 && os.IsPathSeparator(d[len(d)-1]) {
		d = d[:len(d)-1]
	}
	if len(d) == vol {
		return d + "."
	}
	return d
}

// Beside is the path of the file name in the directory of path's file
// (Dir), spelled so that the kernel finds the same directory.
func Beside(path, name string) string {
	i := len(path) - 1
	for i >= len(filepath.VolumeName(path)) && !os.IsPathSeparator(path[i]) {
		i--
	}
	return path[:i+1] + name
}

// Prepare writes a new temporary file beside path through fill, syncs and
// closes it, and keeps it locked until Commit or Abort; it first removes
// what killed writers of path left behind. On failure nothing is left
// behind.
func (o Options) Prepare(path string, fill func(f *os.File) error) (*Pending, error) {
	RemoveStale(path)
	mode, keep := o.keptMode(path)
	f, lock, err := createLocked(path, mode, keep)
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	err = fill(f)
	crashpoint.Hit2("atomicfile.filled", filepath.Base(path))
	if err == nil && keep {
		// Created with what the umask left of it (and the owner's
		// read and write, for the lock): now exactly the old mode.
		err = f.Chmod(mode)
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
	return &Pending{lock: lock, tmp: tmp, path: path, noReplace: o.NoReplace}, nil
}

// keptMode is the mode of the file path replaces (the file it leads to,
// for a symbolic link) or else of o.ModeOf, when either exists.
func (o Options) keptMode(path string) (fs.FileMode, bool) {
	for _, p := range []string{path, o.ModeOf} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return st.Mode().Perm(), true
		}
	}
	return 0, false
}

// createLocked creates a temporary file for path and locks it through a
// second descriptor (so that the file can be closed, and its errors seen,
// before it is renamed). A cleaner (RemoveStale of another writer) may
// take the new file for a leftover between its creation and the lock, and
// remove it: then it is made again.
//
// The file is made with mode (keep: the mode of the file it replaces, but
// readable and writable by its owner until it is complete) or else 0666,
// the umask taking its share: not os.CreateTemp, whose 0600 would need
// the umask to be read, process-wide, to be widened as cp would.
func createLocked(path string, mode fs.FileMode, keep bool) (f, lock *os.File, err error) {
	perm := fs.FileMode(0o666)
	if keep {
		perm = mode | 0o600
	}
	prefix := Beside(path, tempPrefix(path))
	for {
		f, err := openNew(prefix, perm)
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// Name the file being written, not the temporary one.
			return nil, nil, fmt.Errorf("writing %s: %w", path, pe.Err)
		}
		if err != nil {
			return nil, nil, err
		}
		lock, err := os.Open(f.Name())
		if errors.Is(err, fs.ErrNotExist) {
			f.Close() // removed by a cleaner before it could be locked
			continue
		}
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
		if stillLinked(lock) && sameFile(f, lock) {
			return f, lock, nil
		}
		lock.Close()
		f.Close()
	}
}

// openNew creates a file named prefix and a random number, as
// os.CreateTemp does, with perm (less the umask).
func openNew(prefix string, perm fs.FileMode) (*os.File, error) {
	for range 10000 {
		name := prefix + strconv.FormatUint(uint64(rand.Uint32()), 10)
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, &fs.PathError{Op: "createtemp", Path: prefix + "*", Err: fs.ErrExist}
}

// SameVersion reports whether a and b, stats of a path taken at two
// times, are of one version of its file: the same file (one renamed over
// it is another, whatever its size and time), of the same size and
// modification time. Readers that keep what they read from a file use
// it to notice the file replaced or rewritten.
func SameVersion(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// sameFile reports whether a and b are descriptors of one file.
func sameFile(a, b *os.File) bool {
	sa, errA := a.Stat()
	sb, errB := b.Stat()
	return errA == nil && errB == nil && os.SameFile(sa, sb)
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
	dir, prefix := Dir(path), tempPrefix(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		name := Beside(path, e.Name())
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrPermission) {
			// A leftover with the mode of a write-only target: a lock
			// needs a descriptor, not reading.
			f, err = os.OpenFile(name, os.O_WRONLY, 0)
		}
		if err != nil {
			continue
		}
		if ok, err := flock.TryLockFile(f); err == nil && ok && stillLinked(f) {
			os.Remove(name)
		}
		f.Close()
	}
}

// Commit renames the file over its target (removing it when that fails);
// with NoReplace, an existing target fails it with an *ExistsError.
func (p *Pending) Commit() error {
	defer p.lock.Close()
	p.written, _ = p.lock.Stat()
	crashpoint.Hit2("atomicfile.rename", filepath.Base(p.path))
	rename := os.Rename
	if p.noReplace {
		rename = renameNoReplace
	}
	if err := rename(p.tmp, p.path); err != nil {
		os.Remove(p.tmp)
		return err
	}
	return nil
}

// Revert removes a committed NoReplace file again while it is still the
// file this write put there: the first of two files that go together
// (a model's external data), when the second could not be put in place.
func (p *Pending) Revert() {
	if !p.noReplace || p.written == nil {
		return
	}
	if st, err := os.Lstat(p.path); err == nil && os.SameFile(st, p.written) {
		os.Remove(p.path)
	}
}

// renameNoReplace renames tmp to path unless something is at path, in
// one step where the system can (renameat2's RENAME_NOREPLACE), else
// through linkNoReplace.
func renameNoReplace(tmp, path string) error {
	err := renameExclusive(tmp, path)
	if errors.Is(err, errors.ErrUnsupported) {
		err = linkNoReplace(tmp, path)
	}
	if errors.Is(err, fs.ErrExist) {
		return &ExistsError{Path: path}
	}
	return err
}

// linkNoReplace gives tmp the name path as a hard link, which fails where
// the name is taken, and removes the name tmp. On a file system without
// hard links it checks and renames, which a writer in between can still
// race.
func linkNoReplace(tmp, path string) error {
	err := os.Link(tmp, path)
	if err == nil {
		os.Remove(tmp)
		return nil
	}
	if errors.Is(err, fs.ErrExist) || !(errors.Is(err, errors.ErrUnsupported) || errors.Is(err, fs.ErrPermission)) {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		return &ExistsError{Path: path}
	}
	return os.Rename(tmp, path)
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
