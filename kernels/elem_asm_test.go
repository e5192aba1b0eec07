package kernels

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestAVX2AssemblyIsVEX guards the generated AVX2 kernels against what the
// register allocator may pick but an AVX2-only CPU cannot run: vector
// registers 16-31 (EVEX-only), ZMM registers and opmask registers.
func TestAVX2AssemblyIsVEX(t *testing.T) {
	src, err := os.ReadFile("elem_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	evexOnly := regexp.MustCompile(`\b([XY](1[6-9]|2[0-9]|3[01])|Z[0-9]+|K[1-7])\b`)
	functions := 0
	for _, fn := range strings.Split(string(src), "\nTEXT ")[1:] {
		name := fn[:strings.Index(fn, "(SB)")]
		if !strings.HasSuffix(name, "AVX2") {
			continue
		}
		functions++
		if m := evexOnly.FindString(fn); m != "" {
			t.Errorf("%s uses %s, which needs AVX-512", name, m)
		}
	}
	if functions == 0 {
		t.Fatal("no AVX2 functions found in elem_amd64.s")
	}
}
