//go:build race

package kernels

import (
	"runtime"
	"unsafe"
)

// raceSgemmTile tells the race detector what a micro-kernel call reads and
// writes: the packed panels and, row by row, the rows×cols tile of C (the
// gaps between rows belong to other tiles, maybe other goroutines).
func raceSgemmTile(a, b, c []float32, ldc, rows, cols int) {
	runtime.RaceReadRange(unsafe.Pointer(unsafe.SliceData(a)), 4*len(a))
	runtime.RaceReadRange(unsafe.Pointer(unsafe.SliceData(b)), 4*len(b))
	for r := range rows {
		row := unsafe.Pointer(&c[r*ldc])
		runtime.RaceReadRange(row, 4*cols)
		runtime.RaceWriteRange(row, 4*cols)
	}
}

// racePack tells the race detector that a packer reads rows rows of width
// floats at stride ld from src.
func racePack(src []float32, ld, rows, width int) {
	for r := range rows {
		runtime.RaceReadRange(unsafe.Pointer(&src[r*ld]), 4*width)
	}
}
