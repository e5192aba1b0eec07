package pages

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// mapped writes want to a file and maps it private and writable, as the
// ONNX reader maps models.
func mapped(t *testing.T, want []byte) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}

func pattern() []byte {
	want := make([]byte, 5*os.Getpagesize()+123)
	for i := range want {
		want[i] = byte(i * 7)
	}
	return want
}

// TestPageOut: the pages of a file mapping and of the heap handed back
// with PageOut read back the same bytes, ragged ends included.
func TestPageOut(t *testing.T) {
	want := pattern()
	m := mapped(t, want)
	m[1] ^= 0xff // a page copied on write keeps its contents too
	heap := bytes.Clone(want)
	for _, b := range [][]byte{m, m[100 : len(m)-100], heap, heap[:10], nil} {
		PageOut(b)
	}
	m[1] ^= 0xff
	if !bytes.Equal(m, want) || !bytes.Equal(heap, want) {
		t.Error("the bytes changed")
	}
}

// TestDropPopulate: a file mapping's pages dropped and mapped again read
// the file's bytes; anonymous memory's whole pages read as zeros after
// Drop, its ragged ends keep their bytes; Drop counts whole pages only.
func TestDropPopulate(t *testing.T) {
	page := os.Getpagesize()
	want := pattern()
	m := mapped(t, want)
	if n := Drop(m); n != 5*page {
		t.Fatalf("Drop dropped %d bytes of a %d-byte mapping, want %d", n, len(m), 5*page)
	}
	Populate(m, false)
	if !bytes.Equal(m, want) {
		t.Error("a file mapping's bytes changed")
	}
	if n := Drop(m[1:page]); n != 0 {
		t.Errorf("Drop dropped %d bytes of less than a page", n)
	}

	anon, err := unix.Mmap(-1, 0, 3*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(anon)
	for i := range anon {
		anon[i] = 1
	}
	if n := Drop(anon[10:]); n != 2*page {
		t.Fatalf("Drop dropped %d bytes, want %d", n, 2*page)
	}
	Populate(anon, true)
	for i, x := range anon {
		if want := byte(0); i < page {
			want = 1
			if x != want {
				t.Fatalf("byte %d of the ragged first page is %d, want 1", i, x)
			}
		} else if x != want {
			t.Fatalf("byte %d of a dropped page is %d, want 0", i, x)
		}
	}
}
