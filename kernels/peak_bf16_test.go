package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkPeakBF16 reports the peak of what Sbgemm multiplies on, on 1
// and 2 goroutines at each ISA (VDPBF16PS; without it the FMA peak, or the
// portable emulation at the generic ISA), the ceiling for the Sbgemm
// benchmarks.
func BenchmarkPeakBF16(b *testing.B) {
	for _, threads := range []int{1, 2} {
		for _, isa := range SupportedISAs() {
			b.Run(fmt.Sprintf("threads=%d/isa=%v", threads, isa), func(b *testing.B) {
				defer SetMaxISA(isa)()
				var g float64
				for b.Loop() {
					g = MeasurePeakBF16GFLOPS(threads)
				}
				b.ReportMetric(g, "GFLOP/s")
			})
		}
	}
}
