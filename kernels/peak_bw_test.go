package kernels

import "testing"

// The bandwidth measurements are timed, so a test can only check that they
// run and return a plausible figure (any machine streams more than
// 0.1 GB/s and less than 10 TB/s); the figures themselves come from
// `dstune profile`.
func TestMeasureBandwidthRuns(t *testing.T) {
	for _, streams := range []int{1, 3} {
		if gb := measureRead(2, streams, 8<<20, 3); !(gb > 0.1 && gb < 10000) {
			t.Errorf("read bandwidth with %d streams = %v GB/s", streams, gb)
		}
	}
	if gb := measureCopy(2, 8<<20, 3); !(gb > 0.1 && gb < 10000) {
		t.Errorf("copy bandwidth = %v GB/s", gb)
	}
}

func TestBandwidthKernelsCopy(t *testing.T) {
	src := make([]float32, 4096)
	for i := range src {
		src[i] = float32(i)
	}
	for _, threads := range []int{1, 3} {
		dst := make([]float32, len(src))
		Parallel(threads, &bandwidthTask{arrays: [][]float32{src}, dst: dst})
		for i := range dst {
			if dst[i] != src[i] {
				t.Fatalf("threads=%d: copy[%d] = %v, want %v", threads, i, dst[i], src[i])
			}
		}
	}
}
