//go:build cgo

package tpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPJRTOffsets compiles a C program against the PJRT C API header
// that ships in gopjrt's module and checks the offsets the execute shim
// relies on.
func TestPJRTOffsets(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/gomlx/gopjrt").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Skipf("gopjrt's module directory is not available (go list: %v)", err)
	}
	header := filepath.Join(dir, "pjrt", "pjrt_c_api.h")
	if _, err := os.Stat(header); err != nil {
		t.Skipf("no PJRT C API header: %v", err)
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	src := filepath.Join(t.TempDir(), "offsets.c")
	bin := filepath.Join(t.TempDir(), "offsets")
	prog := `#include <stdio.h>
#include <stddef.h>
#include "pjrt_c_api.h"
int main(void) {
	printf("%zu %zu %zu\n", offsetof(PJRT_Api, PJRT_LoadedExecutable_Execute),
		offsetof(PJRT_LoadedExecutable_Execute_Args, options), sizeof(PJRT_ExecuteOptions));
	return 0;
}
`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command(cc, "-I", filepath.Dir(header), "-o", bin, src).CombinedOutput(); err != nil {
		t.Skipf("cannot compile against the header with %s: %v\n%s", cc, err, msg)
	}
	got, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "480 24 112"; strings.TrimSpace(string(got)) != want {
		t.Fatalf("PJRT offsets (execute entry, options pointer, options size) = %s, the shim assumes %s", got, want)
	}
}

func TestLearnOptionsSize(t *testing.T) {
	defer resetOptionsSize()
	for _, c := range []struct {
		msg  string
		want bool
	}{
		{"INVALID_ARGUMENT: Unexpected PJRT_ExecuteOptions size: expected 136, got 112. Check installed software versions.", true},
		{"Unexpected PJRT_ExecuteOptions size: expected at least 144, got 112", true},
		{"Unexpected PJRT_ExecuteOptions size: expected 144, got 136", false}, // already learned
		{"Unexpected PJRT_Buffer size: expected 200, got 100", false},
		{"out of memory", false},
	} {
		if got := learnOptionsSize(errString(c.msg)); got != c.want {
			t.Errorf("%q: learned %v, want %v", c.msg, got, c.want)
		}
	}
	if n := optionsSize(); n != 144 {
		t.Errorf("options size %d, want 144", n)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestPreloadLibrariesTolerant(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "libbroken.so.1"), []byte("not ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := preloadLibraries([]string{dir, filepath.Join(dir, "missing")}); n != 0 {
		t.Errorf("loaded %d libraries from junk", n)
	}
}
