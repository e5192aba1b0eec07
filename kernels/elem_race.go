//go:build race

package kernels

import (
	"runtime"
	"unsafe"
)

// elemRaceRead and elemRaceWrite tell the race detector which memory an
// assembly kernel is about to read or write, since it cannot see inside
// assembly.
func elemRaceRead(slices ...[]float32) {
	for _, s := range slices {
		if len(s) > 0 {
			runtime.RaceReadRange(unsafe.Pointer(&s[0]), 4*len(s))
		}
	}
}

func elemRaceWrite(slices ...[]float32) {
	for _, s := range slices {
		if len(s) > 0 {
			runtime.RaceWriteRange(unsafe.Pointer(&s[0]), 4*len(s))
		}
	}
}
