//go:build unix

package train

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/dstune/dstune/update"
)

// A run directory named through a symbolic link and "..": the kernel
// reads LINK/.. as the parent of what the link leads to, which is where
// the directory is made, and so where its lock and files must be (not
// where LINK/.. cleaned lexically would be); a new run that fails removes
// the directory it made there.
func TestRunDirThroughSymlinkDotDot(t *testing.T) {
	base := t.TempDir()
	if err := os.MkdirAll(filepath.Join(base, "a", "b"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "a", "b"), filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	through := func(name string) string { return base + "/link/../" + name }
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: through("run"), Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ConfigFile, MetricsFile, LockFile, checkpointDir} {
		if _, err := os.Stat(filepath.Join(base, "a", "run", name)); err != nil {
			t.Errorf("a/run/%s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "run")); err == nil {
		t.Error("the run wrote into the lexical reading of link/../run")
	}
	if _, err := resume(cfg, through("run"), false); err != nil {
		t.Errorf("resume: %v", err)
	}
	cfg.Data = filepath.Join(base, "missing.jsonl")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: through("new"), Source: newBigramSource(runVocab, 1)}); err == nil {
		t.Fatal("a run of a missing data file started")
	}
	if _, err := os.Lstat(filepath.Join(base, "a", "new")); err == nil {
		t.Error("a new run that failed left the directory it made")
	}
}

// A run's directories and files get what the umask leaves (of 0777 and
// 0666, as mkdir's and cp's), and a run made private stays private when
// it is resumed: the new checkpoint takes the old one's modes. Not
// parallel: the umask is the process's.
func TestRunModes(t *testing.T) {
	old := syscall.Umask(0o002)
	t.Cleanup(func() { syscall.Umask(old) })
	mode := func(path string) fs.FileMode {
		t.Helper()
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	dir := crashedRun(t, cfg, 6)
	ckpt := filepath.Join(dir, checkpointDir)
	for path, want := range map[string]fs.FileMode{
		dir: 0o775, ckpt: 0o775,
		filepath.Join(ckpt, "params.safetensors"): 0o664, filepath.Join(ckpt, "state.json"): 0o664,
		filepath.Join(dir, ConfigFile): 0o664, filepath.Join(dir, MetricsFile): 0o664, filepath.Join(dir, LockFile): 0o664,
	} {
		if got := mode(path); got != want {
			t.Errorf("%s under umask 002: %v, want %v", path, got, want)
		}
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chmod(path, mode(path)&^0o077)
	})
	if err != nil {
		t.Fatal(err)
	}
	syscall.Umask(0o022)
	if res, err := resume(cfg, dir, false); err != nil || res.Step != 8 {
		t.Fatalf("resume: %+v, %v", res, err)
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && mode(path)&0o077 != 0 {
			t.Errorf("%s is %v in a run made private", path, mode(path))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := mode(filepath.Join(ckpt, "optimizer.safetensors")); got != 0o600 {
		t.Errorf("the new checkpoint's optimizer.safetensors: %v, want 0600", got)
	}
}
