//go:build unix

package train

import (
	"errors"
	"path/filepath"
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
