package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkPeakFMA reports the FMA peak per ISA on 1 and 2 goroutines, the
// ceiling for the GEMM benchmarks.
func BenchmarkPeakFMA(b *testing.B) {
	for _, threads := range []int{1, 2} {
		for _, isa := range SupportedISAs() {
			b.Run(fmt.Sprintf("threads=%d/isa=%v", threads, isa), func(b *testing.B) {
				defer SetMaxISA(isa)()
				var g float64
				for b.Loop() {
					g = MeasurePeakGFLOPS(threads)
				}
				b.ReportMetric(g, "GFLOP/s")
			})
		}
	}
}
