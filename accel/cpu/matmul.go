package cpu

import (
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// matmulKernel is a float32 MatMul as one Sgemm (batch folded into M when
// the right operand has no batch), one SgemmBatched (equal or broadcast
// batches with uniform strides), or a loop of Sgemm over precomputed
// offsets (general broadcasting).
type matmulKernel struct {
	threads        int
	a, b, c        []float32
	transA, transB bool
	m, n, k        int
	lda, ldb       int

	batch            int
	strideA, strideB int
	offA, offB       []int // general broadcasting: per batch entry
}

// newMatMul compiles a MatMul of a and b into out; with transA (transB) the
// tensor given is the operand's transpose in its last two axes (a fused
// Transpose), so the GEMM reads it transposed.
func newMatMul(threads int, a, b, out *ir.Tensor, transA, transB bool) (kernel, error) {
	as, bs := a.Shape().Clone(), b.Shape().Clone()
	if transA {
		as[len(as)-1], as[len(as)-2] = as[len(as)-2], as[len(as)-1]
	}
	if transB {
		bs[len(bs)-1], bs[len(bs)-2] = bs[len(bs)-2], bs[len(bs)-1]
	}
	d, err := ir.MatMulShapes(as, bs)
	if err != nil {
		return nil, err
	}
	kn := &matmulKernel{threads: threads, a: a.Float32s(), b: b.Float32s(), c: out.Float32s(),
		transA: transA, transB: transB, m: d.M, n: d.N, k: d.K}
	kn.lda, kn.ldb = d.K, d.N
	if transA {
		kn.lda = d.M
	}
	if transB {
		kn.ldb = d.K
	}
	kn.batch = d.Batch.Size()
	aBatch, bBatch := d.ABatch.Size(), d.BBatch.Size()
	switch {
	case bBatch == 1 && !transA:
		// Every batch entry multiplies the same B: stack A's rows.
		// (B has no batch, so the batch is A's own and A is contiguous.)
		kn.m *= kn.batch
		kn.batch = 1
	case (aBatch == kn.batch || aBatch == 1) && (bBatch == kn.batch || bBatch == 1):
		if aBatch == kn.batch {
			kn.strideA = d.M * d.K
		}
		if bBatch == kn.batch {
			kn.strideB = d.K * d.N
		}
	default:
		aStr := ir.BroadcastStrides(d.ABatch, d.Batch)
		bStr := ir.BroadcastStrides(d.BBatch, d.Batch)
		pos := make([]int, len(d.Batch))
		for range kn.batch {
			oa, ob := 0, 0
			for i, p := range pos {
				oa += p * aStr[i]
				ob += p * bStr[i]
			}
			kn.offA = append(kn.offA, oa*d.M*d.K)
			kn.offB = append(kn.offB, ob*d.K*d.N)
			for i := len(pos) - 1; i >= 0; i-- {
				pos[i]++
				if pos[i] < d.Batch[i] {
					break
				}
				pos[i] = 0
			}
		}
	}
	return kn, nil
}

func (k *matmulKernel) run() error {
	if k.m == 0 || k.n == 0 {
		return nil
	}
	if k.k == 0 { // empty sums
		clear(k.c)
		return nil
	}
	switch {
	case k.offA != nil:
		mn := k.m * k.n
		for i := range k.batch {
			kernels.Sgemm(k.threads, k.transA, k.transB, k.m, k.n, k.k, 1, k.a[k.offA[i]:], k.lda, k.b[k.offB[i]:], k.ldb, 0, k.c[i*mn:], k.n)
		}
	case k.batch == 1:
		kernels.Sgemm(k.threads, k.transA, k.transB, k.m, k.n, k.k, 1, k.a, k.lda, k.b, k.ldb, 0, k.c, k.n)
	default:
		kernels.SgemmBatched(k.threads, k.transA, k.transB, k.m, k.n, k.k, 1, k.a, k.lda, k.strideA, k.b, k.ldb, k.strideB, 0, k.c, k.n, k.m*k.n, k.batch)
	}
	return nil
}

// gemmKernel is a float32 Gemm: out = beta·C (broadcast) then += alpha·A·B.
type gemmKernel struct {
	threads        int
	a, b, out      []float32
	c              []float32 // nil without C
	cLayout        ir.RunLayout
	idx, base      []int
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
}

func newGemm(threads int, op *ir.Gemm, in []*ir.Tensor, out *ir.Tensor) (kernel, error) {
	a, b := in[0], in[1]
	m, n := out.Shape()[0], out.Shape()[1]
	k := a.Shape()[1]
	if op.TransA {
		k = a.Shape()[0]
	}
	kn := &gemmKernel{threads: threads, a: a.Float32s(), b: b.Float32s(), out: out.Float32s(),
		transA: op.TransA, transB: op.TransB, m: m, n: n, k: k, alpha: op.Alpha, beta: op.Beta}
	if len(in) > 2 && in[2] != nil && op.Beta != 0 {
		kn.c = in[2].Float32s()
		kn.cLayout = ir.NewRunLayout(out.Shape(), in[2].Shape())
		kn.idx = make([]int, len(kn.cLayout.Outer))
		kn.base = make([]int, 1)
	}
	return kn, nil
}

func (k *gemmKernel) run() error {
	if k.m == 0 || k.n == 0 {
		return nil
	}
	beta := float32(0)
	if k.c != nil {
		l := &k.cLayout
		clear(k.idx)
		k.base[0] = 0
		step := l.Step[0]
		for o, r := 0, 0; r < l.Runs(); r, o = r+1, o+l.Inner {
			src, dst := k.c[k.base[0]:], k.out[o:o+l.Inner]
			for i := range dst {
				dst[i] = k.beta * src[i*step]
			}
			l.Next(k.idx, k.base)
		}
		beta = 1
	}
	if k.k == 0 { // empty sums: out is beta·C (already written) or 0
		if k.c == nil {
			clear(k.out)
		}
		return nil
	}
	lda, ldb := k.k, k.n
	if k.transA {
		lda = k.m
	}
	if k.transB {
		ldb = k.k
	}
	kernels.Sgemm(k.threads, k.transA, k.transB, k.m, k.n, k.k, k.alpha, k.a, lda, k.b, ldb, beta, k.out, k.n)
	return nil
}
