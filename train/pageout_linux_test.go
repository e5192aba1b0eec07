package train

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPageOut: the pages of a file mapping and of the heap handed back
// with pageOut read back the same bytes, ragged ends included.
func TestPageOut(t *testing.T) {
	want := make([]byte, 5*os.Getpagesize()+123)
	for i := range want {
		want[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mapped, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mapped)
	mapped[1] ^= 0xff // a page copied on write keeps its contents too
	heap := bytes.Clone(want)
	for _, b := range [][]byte{mapped, mapped[100 : len(mapped)-100], heap, heap[:10], nil} {
		pageOut(b)
	}
	mapped[1] ^= 0xff
	if !bytes.Equal(mapped, want) || !bytes.Equal(heap, want) {
		t.Error("the bytes changed")
	}
}
