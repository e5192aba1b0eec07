//go:build unix

package flock

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A lock file gets what the umask leaves of 0666, as other files do. Not
// parallel: the umask is the process's.
func TestLockFileMode(t *testing.T) {
	old := syscall.Umask(0o002)
	t.Cleanup(func() { syscall.Umask(old) })
	path := filepath.Join(t.TempDir(), "lock")
	l, err := TryLock(path, "pid 1 (test)")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o664 {
		t.Errorf("lock file under umask 002: %v, want 0664", st.Mode().Perm())
	}
}
