// Package flock takes advisory locks on files (flock(2) on Unix): a lock
// is held by an open file and ends with it, also when the process dies, so
// a crash never leaves a stale lock behind.
package flock

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ErrHeld is wrapped by the error of TryLock on a file another open file
// (of this or another process) holds locked.
var ErrHeld = errors.New("locked")

// HeldError names the holder of a lock TryLock could not take: what the
// holder wrote into the file (its pid and command), "" when it wrote
// nothing yet.
type HeldError struct {
	Path   string
	Holder string
}

func (e *HeldError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("%s is locked by another process", e.Path)
	}
	return fmt.Sprintf("%s is locked by %s", e.Path, e.Holder)
}

func (e *HeldError) Unwrap() error { return ErrHeld }

// Lock is a held lock.
type Lock struct {
	f    *os.File
	path string
}

// TryLock opens path (creating it), takes an exclusive lock on it without
// waiting and writes holder (say "pid 12 (dstune train)") into it for
// whoever finds it locked: a *HeldError naming the holder.
//
// A lock file may be removed by its holder (Remove): a process that opened
// it just before then holds a lock on a file no longer at path, so TryLock
// checks that path still names the file it locked, and tries again when
// it does not.
func TryLock(path, holder string) (*Lock, error) {
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return nil, err
		}
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if !ok {
			f.Close()
			return nil, &HeldError{Path: path, Holder: readHolder(path)}
		}
		if !namesFile(path, f) {
			f.Close()
			continue
		}
		if err := f.Truncate(0); err == nil {
			f.WriteAt([]byte(holder+"\n"), 0)
		}
		return &Lock{f: f, path: path}, nil
	}
	return nil, fmt.Errorf("locking %s: the file was removed and created again ten times while it was being locked", path)
}

// namesFile reports whether path is the open file f.
func namesFile(path string, f *os.File) bool {
	at, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, err := f.Stat()
	return err == nil && os.SameFile(at, st)
}

// readHolder reads what the lock's holder wrote, waiting up to two
// seconds for a holder that has just taken it (on a loaded machine the
// holder may not run again for a while between its lock and its write).
func readHolder(path string) string {
	for range 200 {
		b, err := os.ReadFile(path)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ""
}

// Remove removes the lock file and releases the lock: for a holder that
// leaves nothing behind (a run that failed before it began). Whoever
// opened the file before it was removed finds it gone once it has the
// lock, and tries again.
func (l *Lock) Remove() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(l.path)
	if cerr := l.Unlock(); err == nil {
		err = cerr
	}
	return err
}

// Unlock releases the lock (the file stays).
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// TryLockFile takes an exclusive lock on an open file without waiting;
// false when another open file holds it. Closing f releases it.
func TryLockFile(f *os.File) (bool, error) { return tryLock(f) }

// LockFile takes an exclusive lock on an open file, waiting for it.
func LockFile(f *os.File) error { return lock(f) }
