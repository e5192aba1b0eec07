package outpath

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	other := filepath.Join(dir, "other.bin")
	for _, p := range []string{in, other} {
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link, hard, dangling := filepath.Join(dir, "link"), filepath.Join(dir, "hard"), filepath.Join(dir, "dangling")
	if err := os.Symlink("in.bin", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(in, hard); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", dangling); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	input := Input{Path: in, What: "the input"}
	for _, c := range []struct {
		out       string
		overwrite bool
		input     bool // an InputError
		exists    bool // an ExistsError
	}{
		{filepath.Join(dir, "new.bin"), false, false, false},
		{in, true, true, false},
		{filepath.Join(dir, "sub", "..", "in.bin"), true, true, false},
		{link, true, true, false},
		{hard, true, true, false},
		{other, false, false, true},
		{other, true, false, false},
		{dangling, false, false, true},
		{dangling, true, false, false},
	} {
		err := Check(c.out, c.overwrite, input)
		var ie *InputError
		var ee *ExistsError
		if errors.As(err, &ie) != c.input || errors.As(err, &ee) != c.exists || (err != nil) != (c.input || c.exists) {
			t.Errorf("Check(%s, overwrite %v): %v", c.out, c.overwrite, err)
		}
	}
	// Never replaced, whatever overwrite says: a device (also behind a
	// link, as /dev/stdout is), a directory.
	devLink := filepath.Join(dir, "devnull")
	if err := os.Symlink(os.DevNull, devLink); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ out, kind string }{{os.DevNull, "a device"}, {devLink, "a device"}, {filepath.Join(dir, "sub"), "a directory"}} {
		var nr *NotRegularError
		if err := Check(c.out, true, input); !errors.As(err, &nr) || nr.Kind != c.kind {
			t.Errorf("Check(%s, overwrite): %v, want it refused as %s", c.out, err, c.kind)
		}
	}
	if err := Check(link, true, Input{Path: filepath.Join(dir, "missing"), What: "x"}); err != nil {
		t.Errorf("an input that does not exist: %v", err)
	}
	if !Same(link, hard) || Same(in, other) || Same(in, filepath.Join(dir, "missing")) {
		t.Error("Same")
	}
}

// Resolve spells a path with ".." after a symbolic link as the kernel
// reads it, so that filepath.Join on it names files where the kernel
// would find them.
func TestResolve(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir()) // the results have the links resolved
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("a", "b"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "a", "b"), filepath.Join(dir, "abs")); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"loop": "loop", "dangling": "nowhere"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	sep := string(filepath.Separator)
	for _, c := range []struct{ path, want string }{
		{dir + sep + "link" + sep + ".." + sep + "run", filepath.Join(dir, "a", "run")},
		// Paths the kernel cannot follow stay as they are, to fail there.
		{dir + sep + "loop" + sep + ".." + sep + "run", dir + sep + "loop" + sep + ".." + sep + "run"},
		{dir + sep + "dangling" + sep + ".." + sep + "run", dir + sep + "dangling" + sep + ".." + sep + "run"},
		{dir + sep + "file" + sep + ".." + sep + "run", dir + sep + "file" + sep + ".." + sep + "run"},
		{dir + sep + "abs" + sep + ".." + sep + ".." + sep + "run", filepath.Join(dir, "run")},
		{dir + sep + "link" + sep + ".." + sep + "new" + sep + ".." + sep + "run", filepath.Join(dir, "a", "run")},
		{dir + sep + "a" + sep + "b" + sep + ".." + sep + "run", filepath.Join(dir, "a", "run")},
		{dir + sep + "link" + sep + ".." + sep + "..", dir},
		{dir + sep + "link" + sep + "run", dir + sep + "link" + sep + "run"}, // no "..": as it is
		{".." + sep + "run", ".." + sep + "run"},
	} {
		got := Resolve(c.path)
		if runtime.GOOS == "windows" {
			c.want = c.path
		}
		if got != c.want {
			t.Errorf("Resolve(%s) = %s, want %s", c.path, got, c.want)
		}
	}
	// Relative to the working directory, as given.
	t.Chdir(dir)
	if got, want := Resolve("link"+sep+".."+sep+"run"), filepath.Join("a", "run"); got != want && runtime.GOOS != "windows" {
		t.Errorf("Resolve(link/../run) = %s, want %s", got, want)
	}
}
