package cpu

import (
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// The hottest float32 ops of a transformer's training step run on package
// kernels' element-wise and row kernels (AVX-512/AVX2 with a generic Go
// reference, float32 arithmetic within a few ulp, error bounds measured
// exhaustively there) instead of the float64 loops of this package, which
// stay for every other function: GELU (the feed-forward activations,
// B·T·4d values per layer) and softmax over the last axis (attention
// probabilities). The training kernels (grad_kernels.go) use the backward
// and fused cross-entropy kernels the same way. On the benchmark models this takes a step from
// ~430 to ~300 ms (bert) and ~650 to ~450 ms (gpt) at one thread; the
// losses still match PyTorch's to 1e-6 (tests/bench).
//
// Every kernel used here is element-wise or works row by row, so the
// results do not depend on how the executor splits the work.

// simdUnary returns the kernel computing fn element-wise, or nil.
func simdUnary(fn ir.UnaryFn) func(dst, src []float32) {
	switch fn {
	case ir.Gelu:
		return kernels.GeluF32
	case ir.GeluTanh:
		return kernels.GeluTanhF32
	}
	return nil
}

// softmaxRows computes rows of n contiguous values (one goroutine: the
// executor has already split the rows).
func softmaxRows(y, x []float32, rows, n int, log bool) {
	if log {
		kernels.LogSoftmax(1, rows, n, y, n, x, n)
	} else {
		kernels.Softmax(1, rows, n, y, n, x, n)
	}
}
