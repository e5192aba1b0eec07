package cpu

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// operand is a MatMul operand as the GEMM reads it: its logical shape and
// the element strides of its storage (a transposed view of a stored tensor
// has permuted strides).
type operand struct {
	shape   ir.Shape
	strides []int
}

// logicalOperand describes the view Transpose(stored, perm) (perm nil: the
// stored tensor itself).
func logicalOperand(stored ir.Shape, perm []int) operand {
	st := stored.Strides()
	if perm == nil {
		return operand{stored, st}
	}
	o := operand{shape: make(ir.Shape, len(perm)), strides: make([]int, len(perm))}
	for i, p := range perm {
		o.shape[i], o.strides[i] = stored[p], st[p]
	}
	return o
}

// matrixLayout is how the GEMM reads every matrix of an operand: as stored
// with row stride ld, or (trans) as the transpose of a matrix with row
// stride ld.
type matrixLayout struct {
	trans bool
	ld    int
}

// stridedMatrix finds the layout of the last two axes of o (rank ≥ 2), or
// reports that neither axis has unit stride.
func stridedMatrix(o operand) (matrixLayout, bool) {
	r := len(o.shape)
	if r < 2 || o.shape.Size() == 0 {
		return matrixLayout{}, false
	}
	rows, cols := o.shape[r-2], o.shape[r-1]
	sr, sc := o.strides[r-2], o.strides[r-1]
	if rows == 1 {
		sr = cols
	}
	if cols == 1 {
		sc = 1
		if sr < 1 {
			sr = 1
		}
	}
	switch {
	case sc == 1 && sr >= cols:
		return matrixLayout{ld: sr}, true
	case sr == 1 && sc >= rows:
		return matrixLayout{trans: true, ld: sc}, true
	}
	return matrixLayout{}, false
}

// matmulKernel is a float32 MatMul as one Sgemm (batch folded into M when
// the right operand has no batch and the left one is row-contiguous), one
// SgemmBatched (batches at uniform strides), or a loop of Sgemm over
// precomputed offsets (general broadcasting and transposed views). C may
// itself be a transposed view (a Transpose of the product folded into it,
// see compiler.fuseTransposes): its rows ldc apart, its matrices at
// strideC or offC; a C whose columns are ldc apart is computed as Cᵀ =
// op(B)ᵀ·op(A)ᵀ.
type matmulKernel struct {
	threads        int
	prod           products
	a, b, c        []float32
	transA, transB bool
	m, n, k        int
	lda, ldb, ldc  int

	batch                     int
	strideA, strideB, strideC int
	offA, offB, offC          []int // general case: per batch entry

	epi *biasEpilogue // a single product's bias and activation, or nil

	// swapped: the GEMM computes Cᵀ, its A the MatMul's B (see
	// planMatMul).
	swapped bool
}

// biasEpilogue adds a bias row to every row of a product's C and, with
// act, writes act of the result to y: the nodes Add(MatMul(a, b), bias)
// and act(…) folded into the GEMM (see compiler.fuseEpilogues), computed
// while each block of C is in cache. Both are element-wise, with the
// kernels the nodes would run, so the bits are those of the nodes.
type biasEpilogue struct {
	c, bias, y []float32
	n          int // C's and y's row stride
	act        func(dst, src []float32)
}

func (e *biasEpilogue) Finish(i0, i1, j0, j1 int) {
	bias := e.bias[j0:j1]
	for i := i0; i < i1; i++ {
		row := e.c[i*e.n+j0 : i*e.n+j1]
		kernels.AddF32(row, row, bias)
		if e.act != nil {
			e.act(e.y[i*e.n+j0:i*e.n+j1], row)
		}
	}
}

// newMatMul compiles a MatMul of a and b into out; a non-nil permA (permB)
// says the operand is the view Transpose(a, permA) of the tensor given,
// read in place with strides, and a non-nil permOut that out is
// Transpose(product, permOut), written in place (see
// compiler.fuseTransposes).
func newMatMul(threads int, prod products, a *ir.Tensor, permA []int, b *ir.Tensor, permB []int, out *ir.Tensor, permOut []int) (kernel, error) {
	kn, err := planMatMul(a.Shape(), permA, b.Shape(), permB, out.Shape(), permOut)
	if err != nil {
		return nil, err
	}
	kn.threads, kn.prod = threads, prod
	kn.a, kn.b, kn.c = a.Float32s(), b.Float32s(), out.Float32s()
	if kn.swapped {
		kn.a, kn.b = kn.b, kn.a
	}
	return kn, nil
}

// sharesB reports whether every product of the batch multiplies the same
// B (packed once per product).
func (p *matmulKernel) sharesB() bool {
	if p.offB == nil {
		return p.strideB == 0
	}
	for _, o := range p.offB {
		if o != 0 {
			return false
		}
	}
	return true
}

// planMatMul lays out a MatMul of the views Transpose(a, permA) and
// Transpose(b, permB) (nil: as stored) into out, which is the product
// itself (permOut nil) or Transpose(product, permOut).
func planMatMul(a ir.Shape, permA []int, b ir.Shape, permB []int, out ir.Shape, permOut []int) (*matmulKernel, error) {
	oa, ob := logicalOperand(a, permA), logicalOperand(b, permB)
	d, err := ir.MatMulShapes(oa.shape, ob.shape)
	if err != nil {
		return nil, err
	}
	// A 1-D operand is a row (left) or a column (right).
	if len(oa.shape) == 1 {
		oa = operand{ir.Shape{1, d.K}, []int{d.K, 1}}
	}
	if len(ob.shape) == 1 {
		ob = operand{ir.Shape{d.K, 1}, []int{1, 1}}
	}
	// The product's logical shape and where each of its elements goes.
	oc := operand{shape: append(slices.Clone(d.Batch), d.M, d.N), strides: make([]int, len(d.Batch)+2)}
	switch {
	case permOut == nil:
		oc.strides = oc.shape.Strides()
	case len(permOut) == len(oc.shape):
		for k, s := range out.Strides() {
			oc.strides[permOut[k]] = s
		}
	default:
		return nil, fmt.Errorf("cpu: MatMul output transposed by %v, the product has rank %d", permOut, len(oc.shape))
	}
	if d.Batch.Size() == 0 {
		return &matmulKernel{}, nil // no matrices: an empty product, nothing to compute
	}
	kn := &matmulKernel{m: d.M, n: d.N, k: d.K}
	if d.M == 0 || d.N == 0 || d.K == 0 {
		kn.ldc = max(d.N, 1)
		return kn, nil
	}
	la, okA := stridedMatrix(oa)
	lb, okB := stridedMatrix(ob)
	lc, okC := stridedMatrix(oc)
	if !okA || !okB || !okC {
		return nil, fmt.Errorf("cpu: MatMul operand with no unit stride in its matrices")
	}
	kn.transA, kn.lda, kn.transB, kn.ldb, kn.ldc = la.trans, la.ld, lb.trans, lb.ld, lc.ld
	offA, offB, offC := batchOffsets(oa, d.Batch), batchOffsets(ob, d.Batch), batchOffsets(oc, d.Batch)
	if lc.trans {
		// C's columns are ldc apart: compute Cᵀ = op(B)ᵀ·op(A)ᵀ.
		kn.swapped = true
		kn.m, kn.n = kn.n, kn.m
		kn.transA, kn.transB = !lb.trans, !la.trans
		kn.lda, kn.ldb = lb.ld, la.ld
		offA, offB = offB, offA
	}
	kn.batch = len(offA)
	sa, uniA := uniformStride(offA)
	sb, uniB := uniformStride(offB)
	sc, uniC := uniformStride(offC)
	switch {
	case kn.batch == 1:
	case uniB && sb == 0 && uniA && !kn.transA && sa == kn.m*kn.lda && uniC && sc == kn.m*kn.ldc:
		// Every batch entry multiplies the same B, and A's and C's
		// matrices follow each other row after row: one product with the
		// rows stacked.
		kn.m *= kn.batch
		kn.batch = 1
	case uniA && uniB && uniC:
		kn.strideA, kn.strideB, kn.strideC = sa, sb, sc
	default:
		kn.offA, kn.offB, kn.offC = offA, offB, offC
	}
	return kn, nil
}

// batchOffsets lists the element offset of o's matrix for every entry of
// the broadcast batch shape.
func batchOffsets(o operand, batch ir.Shape) []int {
	r := len(o.shape)
	st := make([]int, len(batch))
	off := len(batch) - (r - 2)
	for i := range r - 2 {
		if o.shape[i] != 1 {
			st[off+i] = o.strides[i]
		}
	}
	out := make([]int, batch.Size())
	pos := make([]int, len(batch))
	for i := range out {
		for j, p := range pos {
			out[i] += p * st[j]
		}
		for j := len(pos) - 1; j >= 0; j-- {
			pos[j]++
			if pos[j] < batch[j] {
				break
			}
			pos[j] = 0
		}
	}
	return out
}

// uniformStride reports whether the offsets are i·step, and step.
func uniformStride(off []int) (int, bool) {
	if len(off) < 2 {
		return 0, true
	}
	step := off[1] - off[0]
	for i, o := range off {
		if o != i*step {
			return 0, false
		}
	}
	return step, true
}

func (k *matmulKernel) run() error {
	if k.m == 0 || k.n == 0 {
		return nil
	}
	if k.k == 0 { // empty sums
		clear(k.c)
		if k.epi != nil {
			k.epi.Finish(0, k.m, 0, k.n)
		}
		return nil
	}
	if k.rowwise() {
		k.runRowwise()
		return nil
	}
	switch {
	case k.epi != nil: // a single product
		k.prod.finished(k.threads, k.transA, k.transB, k.m, k.n, k.k, 1, k.a, k.lda, k.b, k.ldb, 0, k.c, k.ldc, k.epi)
	case k.offA != nil:
		for i := range k.batch {
			k.prod.gemm(k.threads, k.transA, k.transB, k.m, k.n, k.k, 1, k.a[k.offA[i]:], k.lda, k.b[k.offB[i]:], k.ldb, 0, k.c[k.offC[i]:], k.ldc)
		}
	case k.batch == 1:
		k.prod.gemm(k.threads, k.transA, k.transB, k.m, k.n, k.k, 1, k.a, k.lda, k.b, k.ldb, 0, k.c, k.ldc)
	default:
		k.prod.batched(k.threads, k.transA, k.transB, k.m, k.n, k.k, 1, k.a, k.lda, k.strideA, k.b, k.ldb, k.strideB, 0, k.c, k.ldc, k.strideC, k.batch)
	}
	return nil
}

// rowwise reports whether the product runs on kernels.Sgemv: few rows of
// an A read as stored — a decode step's one row a head, or one row
// through each weight matrix — whose B the GEMM would pack for every call
// while multiplying it by a single row. bfloat16 products stay on Sbgemm,
// which rounds the operands.
func (k *matmulKernel) rowwise() bool {
	return k.m <= kernels.SgemvRows && !k.transA && !k.prod.bf16
}

func (k *matmulKernel) runRowwise() {
	if k.offA != nil {
		for i := range k.batch {
			kernels.Sgemv(k.threads, k.transB, k.m, k.n, k.k, 1, k.a[k.offA[i]:], k.lda, k.b[k.offB[i]:], k.ldb, 0, k.c[k.offC[i]:], k.ldc)
		}
	} else {
		kernels.SgemvBatched(k.threads, k.transB, k.m, k.n, k.k, 1, k.a, k.lda, k.strideA, k.b, k.ldb, k.strideB, 0, k.c, k.ldc, k.strideC, k.batch)
	}
	if k.epi != nil {
		k.epi.Finish(0, k.m, 0, k.n)
	}
}

// gemmKernel is a float32 Gemm: out = beta·C (broadcast) then += alpha·A·B.
type gemmKernel struct {
	threads        int
	prod           products
	a, b, out      []float32
	c              []float32 // nil without C
	cLayout        ir.RunLayout
	idx, base      []int
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
}

func newGemm(threads int, prod products, op *ir.Gemm, in []*ir.Tensor, out *ir.Tensor) (kernel, error) {
	a, b := in[0], in[1]
	m, n := out.Shape()[0], out.Shape()[1]
	k := a.Shape()[1]
	if op.TransA {
		k = a.Shape()[0]
	}
	kn := &gemmKernel{threads: threads, prod: prod, a: a.Float32s(), b: b.Float32s(), out: out.Float32s(),
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
			switch {
			case step == 1 && k.beta == 1: // a bias row
				copy(dst, src[:len(dst)])
			case step == 1:
				kernels.ScaleF32(dst, k.beta, src[:len(dst)])
			default:
				for i := range dst {
					dst[i] = k.beta * src[i*step]
				}
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
	if k.rowwise() {
		// A is rows as stored, or one row stored as a column: lda is k.
		kernels.Sgemv(k.threads, k.transB, k.m, k.n, k.k, k.alpha, k.a, k.k, k.b, ldb, beta, k.out, k.n)
		return nil
	}
	k.prod.gemm(k.threads, k.transA, k.transB, k.m, k.n, k.k, k.alpha, k.a, lda, k.b, ldb, beta, k.out, k.n)
	return nil
}

// rowwise is matmulKernel.rowwise for a Gemm, whose A, transposed, is
// read as stored when it is one row (a column stored contiguously).
func (k *gemmKernel) rowwise() bool {
	return k.m <= kernels.SgemvRows && (!k.transA || k.m == 1) && !k.prod.bf16
}
