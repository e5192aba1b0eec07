//go:build race

package kernels

import (
	"runtime"
	"unsafe"
)

// raceGemmTile tells the race detector what a micro-kernel call reads and
// writes: rows rows of kc elements of A at stride lda, the packed panel of
// B and, row by row, the rows×cols tile of C (the gaps between rows belong
// to other tiles, maybe other goroutines).
func raceGemmTile[P packed](a []P, lda, rows, kc int, b []P, c []float32, ldc, cols int) {
	for r := range rows {
		runtime.RaceReadRange(unsafe.Pointer(&a[r*lda]), 4*kc)
	}
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
