//go:build unix

package regfile

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A FIFO nobody writes is refused at once: os.Open would block forever.
func TestOpenRefusesFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	var notReg *NotRegularError
	_, _, err := Open(path)
	if !errors.As(err, &notReg) || !strings.Contains(err.Error(), "a FIFO") {
		t.Fatalf("Open of a FIFO: %v", err)
	}
	if _, err := ReadFile("/dev/zero", 1<<20); !errors.As(err, &notReg) || !strings.Contains(err.Error(), "a device") {
		t.Errorf("a device: %v", err)
	}
}
