//go:build !race

package kernels

// raceSgemmTile reports a micro-kernel's memory use to the race detector
// in race builds; here it does nothing.
func raceSgemmTile(a, b, c []float32, ldc, rows, cols int) {}

// racePack reports a packer's reads to the race detector in race builds.
func racePack(src []float32, ld, rows, width int) {}
