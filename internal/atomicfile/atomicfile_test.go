package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

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

// Without overwriting, a target that exists by the time the file is
// renamed into place (another writer's, made after the caller checked)
// is kept, and the write fails naming it.
func TestNoReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.onnx")
	fill := func(s string) func(*os.File) error {
		return func(f *os.File) error { _, err := f.Write([]byte(s)); return err }
	}
	noReplace := Options{NoReplace: true}
	a, err := noReplace.Prepare(path, fill("a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := noReplace.Prepare(path, fill("b"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	err = b.Commit()
	var ee *ExistsError
	if !errors.As(err, &ee) || ee.Path != path || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second commit: %v, want an ExistsError for %s", err, path)
	}
	if got, _ := os.ReadFile(path); string(got) != "a" {
		t.Errorf("the first writer's file was replaced: %q", got)
	}
	if err := noReplace.Write(path, []byte("c")); !errors.As(err, &ee) {
		t.Errorf("write over an existing file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files in the directory, want the target alone", len(entries))
	}
	// A dangling symbolic link is a name taken too.
	link := filepath.Join(dir, "link")
	if err := os.Symlink("nowhere", link); err != nil {
		t.Fatal(err)
	}
	if err := noReplace.Write(link, []byte("d")); !errors.As(err, &ee) {
		t.Errorf("write over a dangling link: %v", err)
	}
	// The hard-link way, for systems without renameat2's RENAME_NOREPLACE.
	tmp := filepath.Join(dir, ".tmp")
	if err := os.WriteFile(tmp, []byte("e"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := linkNoReplace(tmp, path); !errors.As(err, &ee) && !errors.Is(err, fs.ErrExist) {
		t.Errorf("link over an existing file: %v", err)
	}
	fresh := filepath.Join(dir, "fresh")
	if err := linkNoReplace(tmp, fresh); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(fresh); string(got) != "e" {
		t.Errorf("linked file holds %q", got)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the temporary name stays: %v", err)
	}
}

// The temporary file of path SYMLINK/../NAME is made where the kernel
// puts NAME (the parent of the directory the link leads to), not where
// the path cleaned lexically would: a rename from there could cross file
// systems, and would write another file's leftovers.
func TestDotDotThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(real, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "link") + string(filepath.Separator) + ".." + string(filepath.Separator) + "x"
	if got, want := Dir(path), filepath.Join(dir, "link")+string(filepath.Separator)+".."; got != want {
		t.Errorf("Dir(%s) = %s, want %s", path, got, want)
	}
	p, err := Prepare(path, func(f *os.File) error { _, err := f.Write([]byte("x")); return err })
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(Dir(p.tmp))
	want, _ := os.Stat(filepath.Join(dir, "a"))
	if err != nil || !os.SameFile(st, want) {
		t.Errorf("temporary file %s is not in %s", p.tmp, filepath.Join(dir, "a"))
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "a", "x")); err != nil || string(got) != "x" {
		t.Errorf("a/x: %q, %v", got, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("%d entries in the directory, want a and link", len(entries))
	}
	for _, c := range []struct{ path, dir, beside string }{
		{"x", ".", "y"},
		{"/x", "/", "/y"},
		{"d//x", "d", "d//y"},
		{"l/../x", "l/..", "l/../y"},
	} {
		c.path, c.dir, c.beside = filepath.FromSlash(c.path), filepath.FromSlash(c.dir), filepath.FromSlash(c.beside)
		if got := Dir(c.path); got != c.dir {
			t.Errorf("Dir(%q) = %q, want %q", c.path, got, c.dir)
		}
		if got := Beside(c.path, "y"); got != c.beside {
			t.Errorf("Beside(%q, y) = %q, want %q", c.path, got, c.beside)
		}
	}
}

// A name as long as file systems take (255 bytes) is written: the
// temporary file's name, which adds to it, is cut to fit; and the
// leftovers of a killed writer of it are removed.
func TestLongName(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{
		strings.Repeat("a", 245) + ".onnx",
		strings.Repeat("b", 250) + ".onnx",
		strings.Repeat("é", 125) + ".onnx",          // cut inside no character
		"\xe9" + strings.Repeat("c", 249) + ".onnx", // Latin-1, not UTF-8: cut at the room
	} {
		path := filepath.Join(dir, name)
		if f, err := os.Create(path); err != nil {
			t.Skipf("the file system takes no %d-byte name: %v", len(name), err)
		} else {
			f.Close()
			os.Remove(path)
		}
		prefix := tempPrefix(path)
		if len(prefix)+tempDigits > maxName || len(prefix)+tempDigits < maxName-utf8.UTFMax || utf8.ValidString(name) && !utf8.ValidString(prefix) {
			t.Errorf("temporary prefix %q (%d bytes) leaves no room", prefix, len(prefix))
		}
		if flock.Supported {
			if err := os.WriteFile(filepath.Join(dir, prefix+"1"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := Write(path, []byte(name)); err != nil {
			t.Fatalf("%d-byte name: %v", len(name), err)
		}
		if got, _ := os.ReadFile(path); string(got) != name {
			t.Errorf("content %q", got)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("%d files in the directory, want the target alone", len(entries))
		}
		os.Remove(path)
	}
}

// TestConcurrentWritersOfOnePath: writers of one path clean each other's
// leftovers; a temporary file removed by another writer's cleaning before
// it was locked is made again, not an error (two concurrent applies of
// one output failed with "no such file" this way).
func TestConcurrentWritersOfOnePath(t *testing.T) {
	if !flock.Supported {
		t.Skip("no flock here: nothing cleans leftovers")
	}
	path := filepath.Join(t.TempDir(), "out.bin")
	var wg sync.WaitGroup
	errs := make(chan error, 8*100)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				if err := Write(path, []byte(strconv.Itoa(w*1000+i))); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
