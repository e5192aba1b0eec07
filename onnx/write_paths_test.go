package onnx

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/sharedtest"
)

// Without overwriting, a model file (or its external data) that exists by
// the time the new one is put in place — another writer's, made after
// the caller checked — is kept, and the write fails naming it.
func TestWriteNoReplace(t *testing.T) {
	srcPath := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	m, err := ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := t.TempDir()
	other := []byte("another writer's")
	var ee *atomicfile.ExistsError
	for _, c := range []struct {
		name  string
		write func(path string) error
	}{
		{"WriteFile", func(path string) error { return WriteFile(path, m, WriteOptions{NoReplace: true}) }},
		{"WriteFile external", func(path string) error {
			return WriteFile(path, m, WriteOptions{NoReplace: true, ExternalData: ExternalAlways})
		}},
		{"PatchFileWith", func(path string) error {
			return PatchFileWith(srcPath, path, m, nil, PatchOptions{NoReplace: true})
		}},
	} {
		path := filepath.Join(dir, c.name+".onnx")
		if err := c.write(path); err != nil {
			t.Fatalf("%s to a new file: %v", c.name, err)
		}
		if err := os.WriteFile(path, other, 0o666); err != nil {
			t.Fatal(err)
		}
		err := c.write(path)
		// The external data is put in place first: it is the one found.
		if !errors.As(err, &ee) || (ee.Path != path && ee.Path != path+".data") || !errors.Is(err, fs.ErrExist) {
			t.Errorf("%s over an existing file: %v", c.name, err)
		}
		if got, _ := os.ReadFile(path); string(got) != string(other) {
			t.Errorf("%s replaced the existing file", c.name)
		}
	}
	// The model's name taken but not its data's: the data file put in
	// place first is removed again, not left without its model.
	path := filepath.Join(dir, "taken.onnx")
	if err := os.WriteFile(path, other, 0o666); err != nil {
		t.Fatal(err)
	}
	err = WriteFile(path, m, WriteOptions{NoReplace: true, ExternalData: ExternalAlways})
	if !errors.As(err, &ee) || ee.Path != path {
		t.Errorf("external data, the model's name taken: %v", err)
	}
	if _, err := os.Lstat(path + ".data"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data file stayed without its model: %v", err)
	}
	noTempFiles(t, dir)
}

// A model written to LINK/../NAME with external data gets its data file
// where the kernel puts the model (the parent of what the link leads to),
// where the model's Location leads; not beside LINK/.. read lexically.
func TestWriteFileThroughSymlinkDotDot(t *testing.T) {
	m, err := ReadFile(sharedtest.Path(t, "models", "tiny_gpt", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "a", "b"), filepath.Join(dir, "link")); err != nil {
		t.Skipf("no symbolic links: %v", err)
	}
	path := dir + string(filepath.Separator) + "link" + string(filepath.Separator) + ".." + string(filepath.Separator) + "m.onnx"
	if err := WriteFile(path, m, WriteOptions{ExternalData: ExternalAlways}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"m.onnx", "m.onnx.data"} {
		if _, err := os.Stat(filepath.Join(dir, "a", name)); err != nil {
			t.Errorf("a/%s: %v", name, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s written beside link/.. read lexically", name)
		}
	}
	back, err := ReadFile(filepath.Join(dir, "a", "m.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	back.Close()
}
