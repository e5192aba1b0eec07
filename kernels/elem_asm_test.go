package kernels

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAVX2AssemblyIsVEX guards the generated AVX2 kernels (every assembly
// file's functions named …AVX2) against what the register allocator may
// pick but an AVX2-only CPU cannot run: vector registers 16-31 (EVEX-only),
// ZMM registers and opmask registers.
func TestAVX2AssemblyIsVEX(t *testing.T) {
	files, err := filepath.Glob("*_amd64.s")
	if err != nil || len(files) == 0 {
		t.Fatalf("no assembly files found (%v)", err)
	}
	evexOnly := regexp.MustCompile(`\b([XY](1[6-9]|2[0-9]|3[01])|Z[0-9]+|K[1-7])\b`)
	functions := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, fn := range strings.Split(string(src), "\nTEXT ")[1:] {
			name := fn[:strings.Index(fn, "(SB)")]
			if !strings.HasSuffix(name, "AVX2") && !strings.Contains(name, "AVX2FTZ") {
				continue
			}
			functions++
			if m := evexOnly.FindString(fn); m != "" {
				t.Errorf("%s: %s uses %s, which needs AVX-512", f, name, m)
			}
		}
	}
	if functions < 40 {
		t.Fatalf("only %d AVX2 functions found in the assembly files", functions)
	}
}

// TestAssemblyHasNoLegacySSE: no kernel mixes legacy-SSE instructions on
// XMM registers with AVX ones. Go's compiler emits SSE for float code and
// the kernels leave the vector state clean (VZEROUPPER) for it, but an SSE
// instruction inside a kernel, after a VEX one has written a full vector
// register, is an SSE/AVX transition that some x86 cores charge hundreds of
// cycles for (avo's Load of a float32 argument emits MOVSS; on a Zen 3 host
// that made LayerNorm's backward row passes 4× slower). The generators move
// floats with VEX instructions (VBROADCASTSS, VMOVSS) instead.
func TestAssemblyHasNoLegacySSE(t *testing.T) {
	files, err := filepath.Glob("*_amd64.s")
	if err != nil || len(files) == 0 {
		t.Fatalf("no assembly files found (%v)", err)
	}
	// A mnemonic without the V prefix whose operands name an XMM register.
	// LDMXCSR and STMXCSR (legacy encodings, but no XMM operand) pass.
	legacy := regexp.MustCompile(`(?m)^\s+([A-Z][A-Z0-9]*)\s+[^\n]*\bX([0-9]|1[0-5])\b`)
	checked := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, fn := range strings.Split(string(src), "\nTEXT ")[1:] {
			name := fn[:strings.Index(fn, "(SB)")]
			checked++
			for _, m := range legacy.FindAllStringSubmatch(fn, -1) {
				if !strings.HasPrefix(m[1], "V") {
					t.Errorf("%s: %s uses the legacy-SSE %s: %s", f, name, m[1], strings.TrimSpace(m[0]))
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no functions found in the assembly files")
	}
}
