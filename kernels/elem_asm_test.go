package kernels

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// asmFunctions calls f with every function of the generated assembly
// files (the file, the function's name, its text) and returns how many
// there were.
func asmFunctions(t *testing.T, f func(file, name, text string)) int {
	t.Helper()
	files, err := filepath.Glob("*_amd64.s")
	if err != nil || len(files) == 0 {
		t.Fatalf("no assembly files found (%v)", err)
	}
	n := 0
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, fn := range strings.Split(string(src), "\nTEXT ")[1:] {
			f(file, fn[:strings.Index(fn, "(SB)")], fn)
			n++
		}
	}
	return n
}

// TestAVX2AssemblyIsVEX guards the generated AVX2 kernels (the functions
// whose names say AVX2, in every assembly file) against what the register
// allocator may pick but an AVX2-only CPU cannot run: vector registers
// 16-31 (EVEX-only), ZMM registers and opmask registers.
func TestAVX2AssemblyIsVEX(t *testing.T) {
	evexOnly := regexp.MustCompile(`\b([XY](1[6-9]|2[0-9]|3[01])|Z[0-9]+|K[1-7])\b`)
	avx2 := 0
	asmFunctions(t, func(file, name, text string) {
		if !strings.Contains(name, "AVX2") {
			return
		}
		avx2++
		if m := evexOnly.FindString(text); m != "" {
			t.Errorf("%s: %s uses %s, which needs AVX-512", file, name, m)
		}
	})
	// There are 55; far fewer means the names changed under the test.
	if avx2 < 40 {
		t.Fatalf("only %d AVX2 functions found in the assembly files", avx2)
	}
}

// TestAssemblyHasNoLegacySSE: no kernel mixes legacy-SSE instructions on
// XMM registers with AVX ones. Go's compiler emits SSE for float code and
// the kernels leave the vector state clean (VZEROUPPER) for it, but an SSE
// instruction inside a kernel, after a VEX one has written a full vector
// register, is an SSE/AVX transition that some x86 cores charge hundreds of
// cycles for (avo's Load of a float32 argument emits MOVSS; on a Zen 3 host
// that made LayerNorm's backward row passes 4× slower). The generators move
// floats with VEX instructions instead (package frame in asm/).
func TestAssemblyHasNoLegacySSE(t *testing.T) {
	// A mnemonic without the V prefix whose operands name an XMM register.
	// LDMXCSR and STMXCSR (legacy encodings, but no XMM operand) pass.
	legacy := regexp.MustCompile(`(?m)^\s+([A-Z][A-Z0-9]*)\s+[^\n]*\bX([0-9]|1[0-5])\b`)
	asmFunctions(t, func(file, name, text string) {
		for _, m := range legacy.FindAllStringSubmatch(text, -1) {
			if !strings.HasPrefix(m[1], "V") {
				t.Errorf("%s: %s uses the legacy-SSE %s: %s", file, name, m[1], strings.TrimSpace(m[0]))
			}
		}
	})
}
