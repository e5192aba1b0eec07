package kernels

import "testing"

// forISAs runs f once per ISA this machine supports, with dispatch capped at
// that ISA, as a subtest named after it.
func forISAs(t *testing.T, f func(t *testing.T, isa ISA)) {
	t.Helper()
	for _, isa := range SupportedISAs() {
		t.Run(isa.String(), func(t *testing.T) {
			restore := SetMaxISA(isa)
			defer restore()
			if ActiveISA() != isa {
				t.Fatalf("SetMaxISA(%v) left ActiveISA = %v", isa, ActiveISA())
			}
			f(t, isa)
		})
	}
}

func TestParseISA(t *testing.T) {
	for _, isa := range []ISA{Generic, AVX2, AVX512} {
		got, err := ParseISA(isa.String())
		if err != nil || got != isa {
			t.Errorf("ParseISA(%q) = %v, %v", isa.String(), got, err)
		}
	}
	if _, err := ParseISA("sse9"); err == nil {
		t.Error("ParseISA(sse9) gave no error")
	}
}

func TestSetMaxISARestores(t *testing.T) {
	before := ActiveISA()
	restore := SetMaxISA(Generic)
	if ActiveISA() != Generic {
		t.Fatalf("ActiveISA = %v after SetMaxISA(Generic)", ActiveISA())
	}
	restore()
	if ActiveISA() != before {
		t.Fatalf("ActiveISA = %v after restore, want %v", ActiveISA(), before)
	}
}

// TestISAPathsOnThisCPU says which dispatch paths this machine exercises:
// each ISA the CPU has must be the one the GEMM kernels and Sbgemm then
// dispatch to, and a path the CPU lacks is skipped with the reason, so a
// run on a smaller CPU shows what it did not test (the tests of each
// kernel simply have fewer ISAs to loop over there).
func TestISAPathsOnThisCPU(t *testing.T) {
	native := bf16Path{"avx512bf16", HardwareISA()}.has() // VDPBF16PS
	for _, isa := range []ISA{AVX512, AVX2, Generic} {
		t.Run(isa.String(), func(t *testing.T) {
			if HardwareISA() < isa {
				t.Skipf("this CPU and build lack %v (they have %v): its kernels are not exercised here", isa, HardwareISA())
			}
			defer SetMaxISA(isa)()
			if got := sgemmKernelForISA().isa; got != isa {
				t.Errorf("SetMaxISA(%v): Sgemm dispatches to a %v kernel", isa, got)
			}
			want := "go"
			switch {
			case isa >= AVX512 && native:
				want = "avx512bf16"
			case isa >= AVX2:
				want = "fma"
			}
			if got := SbgemmPath(); got != want {
				t.Errorf("SetMaxISA(%v) on a CPU with AVX512_BF16=%v: Sbgemm runs on %q, want %q", isa, native, got, want)
			}
		})
	}
	t.Run("avx512bf16", func(t *testing.T) {
		if !native {
			t.Skip("this CPU and build lack AVX512_BF16: Sbgemm's VDPBF16PS kernels are not exercised here")
		}
		// The bfloat16 dot products retire twice the FMA's flops a lane.
		if bf, fp := MeasurePeakBF16GFLOPS(1), MeasurePeakGFLOPS(1); !(bf > 1.3*fp) {
			t.Errorf("bfloat16 dot-product peak %.0f GFLOP/s against an FMA peak of %.0f: the VDPBF16PS loop is not what runs", bf, fp)
		}
	})
}
