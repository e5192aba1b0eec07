//go:build unix

package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A new file gets what the umask leaves of 0666, as cp's would; a file
// that replaces another (also through a symbolic link, or standing for
// the file ModeOf names) keeps its mode, the umask notwithstanding. Not
// parallel: the umask is the process's.
func TestModes(t *testing.T) {
	dir := t.TempDir()
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	mode := func(path string) fs.FileMode {
		t.Helper()
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	write := func(o Options, path string) {
		t.Helper()
		if err := o.Write(path, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	private := filepath.Join(dir, "private")
	write(Options{}, private)
	if m := mode(private); m != 0o600 {
		t.Errorf("new file under umask 077: %v, want 0600", m)
	}
	syscall.Umask(0o002)
	shared := filepath.Join(dir, "shared")
	write(Options{}, shared)
	if m := mode(shared); m != 0o664 {
		t.Errorf("new file under umask 002: %v, want 0664", m)
	}
	syscall.Umask(0o022)
	for _, m := range []fs.FileMode{0o600, 0o640, 0o664, 0o444, 0o200} {
		if err := os.Chmod(private, m); err != nil {
			t.Fatal(err)
		}
		write(Options{}, private)
		if got := mode(private); got != m {
			t.Errorf("replaced file of mode %v: %v", m, got)
		}
	}
	if err := os.Chmod(private, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("private", link); err != nil {
		t.Fatal(err)
	}
	write(Options{}, link)
	if m := mode(link); m != 0o600 {
		t.Errorf("file written over a link to a 0600 file: %v", m)
	}
	like := filepath.Join(dir, "like")
	write(Options{ModeOf: private}, like)
	if m := mode(like); m != 0o600 {
		t.Errorf("new file with ModeOf a 0600 file: %v", m)
	}
	write(Options{ModeOf: filepath.Join(dir, "missing")}, filepath.Join(dir, "other"))
	if m := mode(filepath.Join(dir, "other")); m != 0o644 {
		t.Errorf("new file with ModeOf a missing file, umask 022: %v", m)
	}
}
