package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/flock"
)

func TestWriteReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.txt")
	if err := Write(path, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Fatalf("content %q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	// A failing fill leaves the old file and no temporary file.
	boom := errors.New("boom")
	err := WriteWith(path, func(f *os.File) error {
		f.Write([]byte("partial"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Fatalf("a failed write changed the file: %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("%d files left in the directory", len(entries))
	}
	// Two files prepared together; one aborted.
	a, err := Prepare(filepath.Join(dir, "a"), func(f *os.File) error { _, err := f.Write([]byte("a")); return err })
	if err != nil {
		t.Fatal(err)
	}
	b, err := Prepare(filepath.Join(dir, "b"), func(f *os.File) error { _, err := f.WriteAt([]byte("b"), 3); return err })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
		t.Fatal("a prepared file is visible before Commit")
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	a.Abort()
	if got, _ := os.ReadFile(filepath.Join(dir, "b")); string(got) != "\x00\x00\x00b" {
		t.Fatalf("b is %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("%d files left in the directory, want f.txt and b", len(entries))
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
}

// A temporary file left by a killed writer (unlocked) is removed by the
// next write of the same target; one a live writer holds is not, nor are
// other targets' files.
func TestLeftoversOfKilledWritersAreRemoved(t *testing.T) {
	if !flock.Supported {
		t.Skip("no file locks on this system")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "delta.safetensors")
	dead := filepath.Join(dir, ".delta.safetensors.tmp123")
	live := filepath.Join(dir, ".delta.safetensors.tmp456")
	other := filepath.Join(dir, ".other.tmp789")
	for _, p := range []string{dead, live, other} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	holder, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := flock.LockFile(holder); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{dead: false, live: true, other: true, path: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists %v, want %v", filepath.Base(p), err == nil, want)
		}
	}
	// While prepared, a file is locked: another writer of the target
	// leaves it alone.
	p, err := Prepare(path, func(f *os.File) error { _, err := f.Write([]byte("newer")); return err })
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("meanwhile")); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil {
		t.Fatalf("a prepared file was taken for a leftover: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "newer" {
		t.Errorf("content %q", b)
	}
}

// A write into a directory that does not exist names the file asked for,
// not the temporary file beside it.
func TestWriteNamesTheTarget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "x.png")
	err := WriteWith(path, func(*os.File) error { return nil })
	if err == nil || err.Error() != "writing "+path+": no such file or directory" {
		t.Errorf("err = %v", err)
	}
}
