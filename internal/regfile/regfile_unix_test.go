//go:build unix

package regfile

import (
	"errors"
	"fmt"
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
	// A pipe as a shell's <(…) hands it over: a /dev/fd path to the read
	// end, the writer done or still writing. (A FIFO a goroutine opens to
	// write would race: a read that finds no writer yet ends, and its
	// close throws away what the writer then puts in.)
	fdDir := ""
	for _, dir := range []string{"/proc/self/fd", "/dev/fd"} {
		if _, err := os.Stat(dir); err == nil {
			fdDir = dir
			break
		}
	}
	for _, writerDone := range []bool{true, false} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("through ")); err != nil {
			t.Fatal(err)
		}
		wrote := make(chan error, 1)
		rest := func() {
			_, err := w.Write([]byte("a pipe"))
			w.Close()
			wrote <- err
		}
		if writerDone {
			rest()
		} else {
			// The writer goes on after the reader has started: the read
			// waits for the end.
			go func() { time.Sleep(20 * time.Millisecond); rest() }()
		}
		if fdDir == "" {
			t.Log("no /proc/self/fd or /dev/fd here: a pipe with data is not read")
		} else if b, err := ReadFile(fmt.Sprintf("%s/%d", fdDir, r.Fd()), 100); err != nil || string(b) != "through a pipe" {
			t.Errorf("a pipe (writer done first: %v): %q, %v", writerDone, b, err)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		r.Close()
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
