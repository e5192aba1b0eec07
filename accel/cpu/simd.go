package cpu

import (
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// The float32 element-wise ops run on package kernels' element-wise and
// row kernels (AVX-512/AVX2 with a generic Go reference, float32
// arithmetic within a few ulp, error bounds measured exhaustively there)
// instead of float64 loops in this package, which stay for every other
// function: the transcendental activations (GELU — the feed-forward
// activations, B·T·4d values per layer —, tanh, erf, exp, the sigmoid;
// 14 to 40 times the float64 loop's speed on this machine), the
// arithmetic of same-shape and scalar operands (exactly rounded, so the
// same bits as a plain loop, 2 to 5 times faster), and softmax over the
// last axis (attention probabilities). The training kernels (grad_kernels.go) use the backward
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
	case ir.Tanh:
		return kernels.TanhF32
	case ir.Erf:
		return kernels.ErfF32
	case ir.Exp:
		return kernels.ExpF32
	case ir.Sigmoid:
		return kernels.SigmoidF32
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
