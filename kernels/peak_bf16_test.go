package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkPeakBF16 reports the bfloat16 dot-product peak on 1 and 2
// goroutines at each ISA (below AVX512: the portable emulation), the
// ceiling for the Sbgemm benchmarks.
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
