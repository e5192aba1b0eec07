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
type Lock struct{ f *os.File }

// TryLock opens path (creating it), takes an exclusive lock on it without
// waiting and writes holder (say "pid 12 (dstune train)") into it for
// whoever finds it locked: a *HeldError naming the holder.
func TryLock(path, holder string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
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
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(holder+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// readHolder reads what the lock's holder wrote, waiting a moment for a
// holder that has just taken it.
func readHolder(path string) string {
	for range 20 {
		b, err := os.ReadFile(path)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ""
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
