//go:build !race

package kernels

// raceGemmTile reports a micro-kernel's memory use to the race detector in
// race builds; here it does nothing.
func raceGemmTile[P packed](a []P, lda, rows, kc int, b []P, c []float32, ldc, cols int) {}

// racePack reports a packer's reads to the race detector in race builds.
func racePack(src []float32, ld, rows, width int) {}
