//go:build unix

package train

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dstune/dstune/internal/regfile"
)

// A FIFO given as data is refused at once (os.Open would wait for a
// writer forever), by the reader and by the hash the run records.
func TestDataFIFORefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.jsonl")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	var nr *regfile.NotRegularError
	if _, err := LoadJSONL(path, DataOptions{Task: TaskLM, VocabSize: 10}); !errors.As(err, &nr) {
		t.Errorf("LoadJSONL of a FIFO: %v", err)
	}
	if _, _, err := fileSHA256Size(path); !errors.As(err, &nr) {
		t.Errorf("fileSHA256Size of a FIFO: %v", err)
	}
}

// A FIFO in place of a checkpoint file is refused, not waited on.
func TestCheckpointFIFORefused(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "state.json"), 0o644); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	if _, err := readFSFile(os.DirFS(dir), "state.json", 1<<20); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("readFSFile of a FIFO: %v", err)
	}
}
