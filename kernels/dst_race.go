//go:build race

package kernels

import (
	"runtime"
	"unsafe"
)

// The race detector cannot see what assembly touches; these report it.

func raceReadFloats(s []float32) {
	if len(s) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&s[0]), 4*len(s))
	}
}

func raceWriteFloats(s []float32) {
	if len(s) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&s[0]), 4*len(s))
	}
}

func raceWriteInt32s(s []int32) {
	if len(s) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&s[0]), 4*len(s))
	}
}

func raceWriteUint32s(s []uint32) {
	if len(s) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&s[0]), 4*len(s))
	}
}
