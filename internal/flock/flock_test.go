package flock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestTryLock(t *testing.T) {
	if !Supported {
		t.Skip("no file locks on this system")
	}
	path := filepath.Join(t.TempDir(), "lock")
	l, err := TryLock(path, "pid 1 (first)")
	if err != nil {
		t.Fatal(err)
	}
	// Another open file of the same process is another holder.
	_, err = TryLock(path, "pid 2 (second)")
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.Holder != "pid 1 (first)" {
		t.Fatalf("second lock: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := TryLockFile(f); ok || err != nil {
		t.Errorf("TryLockFile on a held lock: %v, %v", ok, err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if ok, err := TryLockFile(f); !ok || err != nil {
		t.Errorf("TryLockFile after Unlock: %v, %v", ok, err)
	}
	f.Close()
	l2, err := TryLock(path, "pid 3 (third)")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Unlock()
	if b, _ := os.ReadFile(path); string(b) != "pid 3 (third)\n" {
		t.Errorf("lock file holds %q", b)
	}
}

// A removed lock file leaves nothing behind, and a process that opened it
// before it was removed does not take it for the lock at that path.
func TestRemove(t *testing.T) {
	if !Supported {
		t.Skip("no file locks on this system")
	}
	path := filepath.Join(t.TempDir(), "lock")
	l, err := TryLock(path, "pid 1 (first)")
	if err != nil {
		t.Fatal(err)
	}
	early, err := os.Open(path) // opened before the removal
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("lock file after Remove: %v", err)
	}
	if ok, err := TryLockFile(early); !ok || err != nil {
		t.Fatalf("TryLockFile after Remove: %v, %v", ok, err)
	}
	if namesFile(path, early) {
		t.Error("the removed file counts as the file at its path")
	}
	// The file at path now is another: TryLock takes it although the
	// removed one is still locked.
	l2, err := TryLock(path, "pid 2 (second)")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Unlock()
	if !namesFile(path, l2.f) {
		t.Error("TryLock's file is not the file at its path")
	}
	if err := l.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}
