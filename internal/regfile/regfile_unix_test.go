//go:build unix

package regfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// ReadFile reads a pipe to its end (a shell's <(…)); a FIFO nobody writes
// reads as empty at once. ReadRegular refuses both.
func TestReadFilePipes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	if b, err := ReadFile(path, 10); err != nil || len(b) != 0 {
		t.Errorf("a FIFO nobody writes: %q, %v", b, err)
	}
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.Write([]byte("through a pipe"))
			f.Close()
		}
		done <- err
	}()
	var b []byte
	var err error
	for range 100 { // until the writer has opened its end
		if b, err = ReadFile(path, 100); err != nil || len(b) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || string(b) != "through a pipe" {
		t.Errorf("a pipe: %q, %v", b, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var nr *NotRegularError
	if _, err := ReadRegular(path, 10); !errors.As(err, &nr) {
		t.Errorf("ReadRegular of a FIFO: %v", err)
	}
	// A file of /proc tells 0 bytes and holds more.
	if b, err := ReadFile("/proc/self/stat", 1<<20); err == nil && len(b) == 0 {
		t.Error("/proc/self/stat read as empty")
	}
}
