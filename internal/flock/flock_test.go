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
