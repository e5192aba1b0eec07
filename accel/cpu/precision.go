package cpu

import (
	"sync"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// products are the GEMM routines a product kernel calls: Sgemm's pair, or
// Sbgemm's for bfloat16 operands.
type products struct {
	gemm    func(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	batched func(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int)
	// finished is gemm with an epilogue.
	finished func(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, epi kernels.GemmEpilogue)
	bf16     bool
}

var (
	fp32Products = products{gemm: kernels.Sgemm, batched: kernels.SgemmBatched, finished: kernels.SgemmEpilogue}
	bf16Products = products{gemm: kernels.Sbgemm, batched: kernels.SbgemmBatched, finished: kernels.SbgemmEpilogue, bf16: true}
)

// productsFor is the arithmetic of product node n.
func (c *compiler) productsFor(n *ir.Node) products {
	if c.bf16[n] {
		return bf16Products
	}
	return fp32Products
}

// markBF16Products picks, under accel.PrecisionBF16, the float32 MatMul
// and Gemm nodes that take bfloat16 operands: those with an operand that
// depends on a parameter. The others multiply inputs and constants alone
// — rotary angles (positions × frequencies) and the like, where rounding
// to 8 significant bits would be visible — and stay float32.
func (c *compiler) markBF16Products() {
	c.bf16 = map[*ir.Node]bool{}
	if c.precision != accel.PrecisionBF16 {
		return
	}
	fromParam := map[*ir.Value]bool{}
	for _, n := range c.g.Nodes { // topological order
		dep := false
		for _, v := range n.Inputs {
			if v != nil && (v.Kind == ir.ParamValue || fromParam[v]) {
				dep = true
				break
			}
		}
		if !dep {
			continue
		}
		for _, v := range n.Outputs {
			if v != nil {
				fromParam[v] = true
			}
		}
		switch n.Op.(type) {
		case *ir.MatMul, *ir.Gemm:
			if n.Inputs[0].DType == ir.Float32 && n.Inputs[1].DType == ir.Float32 {
				c.bf16[n] = true
			}
		}
	}
}

var _ accel.PeakReporter = (*Backend)(nil)

// peaks caches the measured peaks by thread count and precision.
var peaks sync.Map // peakKey → float64

type peakKey struct {
	threads int
	bf16    bool
}

// PeakGFLOPS is the peak of the arithmetic the products of opts run on,
// measured on the spot once per thread count and precision: the float32
// FMA loop of kernels.MeasurePeakGFLOPS, or the bfloat16 dot-product loop
// of kernels.MeasurePeakBF16GFLOPS where the CPU has those instructions
// (without them Sbgemm runs on the FMA kernels or, below AVX2, emulates
// them in Go, and the FMA peak is the honest ceiling).
func (b *Backend) PeakGFLOPS(opts accel.Options) float64 {
	threads := opts.Threads
	if threads <= 0 {
		threads = kernels.DefaultThreads()
	}
	p, err := accel.ParsePrecision(string(opts.Precision))
	if err != nil {
		return 0
	}
	key := peakKey{threads, p == accel.PrecisionBF16 && kernels.SbgemmAccelerated()}
	if v, ok := peaks.Load(key); ok {
		return v.(float64)
	}
	var v float64
	if key.bf16 {
		v = kernels.MeasurePeakBF16GFLOPS(threads)
	} else {
		v = kernels.MeasurePeakGFLOPS(threads)
	}
	peaks.Store(key, v)
	return v
}
