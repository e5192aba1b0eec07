package outpath

import (
	"errors"
	"os"
	"path/filepath"
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
