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
