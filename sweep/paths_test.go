//go:build unix

package sweep

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/dstune/dstune/dst"
)

// A sweep directory named through a symbolic link and ".." is where the
// kernel reads it (the parent of what the link leads to), and what the
// sweep makes there gets what the umask leaves, as mkdir's and cp's. Not
// parallel: the umask is the process's.
func TestSweepDirThroughSymlinkDotDot(t *testing.T) {
	old := syscall.Umask(0o002)
	t.Cleanup(func() { syscall.Umask(old) })
	dir, model := sweepFixture(t)
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "a", "b"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	s := writeSpec(t, dir, model, "s.json", `, "steps": 2`, `{"method": "dst", "eps": [0.05]}`)
	if _, err := Execute(context.Background(), s, testOptions(dir+"/link/../out", true)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "a", "out")
	if _, err := os.Stat(filepath.Join(out, ResultsFile)); err != nil {
		t.Errorf("the sweep is not where the kernel reads link/../out: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("the sweep wrote into the lexical reading of link/../out")
	}
	names := runNames(t, out)
	if len(names) != 1 {
		t.Fatalf("runs: %v", names)
	}
	run := filepath.Join(out, runsDir, names[0])
	for path, want := range map[string]fs.FileMode{
		filepath.Join(out, runsDir): 0o775, run: 0o775, filepath.Join(run, LogFile): 0o664, filepath.Join(out, ResultsFile): 0o664,
	} {
		if st, err := os.Stat(path); err != nil {
			t.Error(err)
		} else if st.Mode().Perm() != want {
			t.Errorf("%s under umask 002: %v, want %v", path, st.Mode().Perm(), want)
		}
	}
}

// The copies of a checkpoint's delta keep the delta's mode: a run made
// private keeps them private.
func TestKeptFilesKeepTheirMode(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, dst.DeltaFile), []byte("delta"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, dst.DeltaFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := keepCheckpointFiles(dir, 3); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(KeptStepDir(dir, 3), dst.DeltaFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("kept delta: %v, want 0600", st.Mode().Perm())
	}
}
