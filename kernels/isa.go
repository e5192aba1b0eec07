package kernels

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
)

// ISA names an instruction-set level that kernels are dispatched on.
type ISA int32

const (
	// Generic is the portable Go reference.
	Generic ISA = iota
	// AVX2 is AVX2 with FMA3 (Haswell and later).
	AVX2
	// AVX512 is AVX-512 F, BW, DQ and VL (Skylake-SP and later).
	AVX512
)

func (i ISA) String() string {
	switch i {
	case Generic:
		return "generic"
	case AVX2:
		return "avx2"
	case AVX512:
		return "avx512"
	}
	return fmt.Sprintf("ISA(%d)", int32(i))
}

// ParseISA parses the names printed by ISA.String.
func ParseISA(s string) (ISA, error) {
	switch strings.ToLower(s) {
	case "generic", "purego", "go":
		return Generic, nil
	case "avx2":
		return AVX2, nil
	case "avx512":
		return AVX512, nil
	}
	return Generic, fmt.Errorf("kernels: unknown ISA %q (want generic, avx2 or avx512)", s)
}

// hardwareISA is the best level this CPU (and this build) supports; it is
// computed once at start-up from the CPU feature bits (cpu_*.go).
var hardwareISA = detectISA()

// activeISA is what kernels dispatch on: hardwareISA unless lowered.
var activeISA atomic.Int32

func init() { activeISA.Store(int32(hardwareISA)) }

// HardwareISA reports the best ISA this CPU and build support.
func HardwareISA() ISA { return hardwareISA }

// ActiveISA reports the ISA kernels currently dispatch on.
func ActiveISA() ISA { return ISA(activeISA.Load()) }

// SupportedISAs lists every ISA this CPU and build can run, best first.
func SupportedISAs() []ISA {
	var out []ISA
	for i := hardwareISA; i >= Generic; i-- {
		out = append(out, i)
	}
	return out
}

// SetMaxISA caps dispatch at isa (or at the hardware's level if that is
// lower) and returns a function restoring the previous setting. Tests use it
// to run every path on one machine; `dstune profile --isa` uses it to measure
// each. It is not meant to be changed while kernels run concurrently.
func SetMaxISA(isa ISA) (restore func()) {
	prev := activeISA.Load()
	if isa > hardwareISA {
		isa = hardwareISA
	}
	activeISA.Store(int32(isa))
	return func() { activeISA.Store(prev) }
}

// useAVX512 and useAVX2 are what dispatch functions test, best first.
func useAVX512() bool { return activeISA.Load() >= int32(AVX512) }
func useAVX2() bool   { return activeISA.Load() >= int32(AVX2) }

// DefaultThreads is the number of goroutines kernels split work across when
// the caller passes threads <= 0: GOMAXPROCS.
func DefaultThreads() int { return runtime.GOMAXPROCS(0) }
