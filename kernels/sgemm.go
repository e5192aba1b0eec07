package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32
// matrices, where op(X) is X or Xᵀ as transA/transB say; C is m×n, op(A) is
// m×k, op(B) is k×n; lda, ldb, ldc are the row strides. When beta is 0, C
// is not read (NaN in C does not propagate); when alpha is 0 or k is 0, A
// and B are not read. C must not overlap A or B. threads <= 0 means
// DefaultThreads(). The equivalent Go loop:
//
//	for i := range m {
//		for j := range n {
//			var s float32
//			for p := range k {
//				s += A(i, p) * B(p, j) // A(i,p) = a[i*lda+p], or a[p*lda+i] when transA
//			}
//			c[i*ldc+j] = alpha*s + beta*c[i*ldc+j] // just alpha*s when beta == 0
//		}
//	}
//
// The sum runs in a fixed order that depends on the ISA and the cache
// blocking but not on threads, so results are the same bits for any thread
// count on one machine. Steady-state calls do not allocate: pack buffers
// (a few MiB for the largest products) are kept in a free list for reuse,
// one set per concurrent call.
//
// Denormals: inputs and results are computed exactly, never flushed to
// zero. Go cannot set MXCSR's FTZ/DAZ bits per goroutine (the runtime may
// move a goroutine between threads at any call), so dstune does not try.
// On the SIMD paths that costs nothing on this project's Zen 5 machine:
// BenchmarkSgemmDenormal measured AVX-512 and AVX2 FMA at the same speed on
// normal operands, denormal inputs and denormal products (within 3%, 512³,
// thread CPU time). The generic path's scalar multiply and add do slow down
// on denormals (about 3× there); it is the fallback for CPUs without AVX2,
// not the training path. Intel cores take microcode assists on denormal
// results instead, which is the tenfold slowdown PyTorch shows; code that
// keeps many near-zero values (optimizer states, DST's reset weights) should
// flush them itself where that matters.
func Sgemm(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	call := getSgemmCall()
	call.set(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	call.run(sgemmWorkers(threads, gemmFlops(m, n, k)))
	putSgemmCall(call)
}

// SgemmBatched computes batch independent products with Sgemm's semantics;
// product i uses a[i*strideA:], b[i*strideB:] and c[i*strideC:]. It is the
// shape of attention (many small products). The products' parts of c must
// not overlap: they may be computed concurrently. With at least as many
// products as threads, each product runs whole on one goroutine; otherwise
// each is split like Sgemm. The results are the same bits either way.
func SgemmBatched(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	if batch < 0 {
		panic("kernels: SgemmBatched batch < 0")
	}
	if strideA < 0 || strideB < 0 || strideC < 0 {
		panic("kernels: SgemmBatched negative stride")
	}
	if m < 0 || n < 0 || k < 0 {
		panic("kernels: Sgemm negative dimension")
	}
	if batch == 0 || m == 0 || n == 0 {
		return
	}
	if strideC == 0 && batch > 1 {
		panic("kernels: SgemmBatched products overlap in c")
	}
	if threads <= 0 {
		threads = DefaultThreads()
	}
	last := batch - 1
	if len(c) < last*strideC {
		panic("kernels: SgemmBatched len(c) too short")
	}
	if k == 0 || alpha == 0 || batch < threads {
		for i := range batch {
			Sgemm(threads, transA, transB, m, n, k, alpha, tail(a, i*strideA), lda, tail(b, i*strideB), ldb, beta, c[i*strideC:], ldc)
		}
		return
	}
	if len(a) < last*strideA {
		panic("kernels: SgemmBatched len(a) too short")
	}
	if len(b) < last*strideB {
		panic("kernels: SgemmBatched len(b) too short")
	}
	// The last product has the shortest slices: if it fits, all do.
	checkGemmArgs(transA, transB, m, n, k, a[last*strideA:], lda, b[last*strideB:], ldb, c[last*strideC:], ldc)
	call := getSgemmCall()
	call.set(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	call.strideA, call.strideB, call.strideC, call.batch = strideA, strideB, strideC, batch
	workers := min(batch, sgemmWorkers(threads, float64(batch)*gemmFlops(m, n, k)))
	call.prepare(workers)
	for w := range workers {
		call.ws[w].b = growAligned(call.ws[w].b, call.bPackLen())
	}
	call.computeNext.Store(0)
	Parallel(workers, (*sgemmBatchTask)(call))
	putSgemmCall(call)
}

// tail is s[i:], or nil when i is past the end (a product that reads
// nothing from s, because k or alpha is 0).
func tail(s []float32, i int) []float32 {
	if i >= len(s) {
		return nil
	}
	return s[i:]
}

func checkGemmArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic("kernels: Sgemm negative dimension")
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if lda < max(ac, 1) {
		panic("kernels: Sgemm lda too small")
	}
	if ldb < max(bc, 1) {
		panic("kernels: Sgemm ldb too small")
	}
	if ldc < max(n, 1) {
		panic("kernels: Sgemm ldc too small")
	}
	if ar > 0 && ac > 0 && len(a) < (ar-1)*lda+ac {
		panic("kernels: Sgemm len(a) too short")
	}
	if br > 0 && bc > 0 && len(b) < (br-1)*ldb+bc {
		panic("kernels: Sgemm len(b) too short")
	}
	if m > 0 && n > 0 && len(c) < (m-1)*ldc+n {
		panic("kernels: Sgemm len(c) too short")
	}
}

// scaleC sets C = beta·C, or 0 when beta is 0 (without reading C).
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := range m {
		ci := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(ci)
		case 1:
		default:
			for j := range ci {
				ci[j] *= beta
			}
		}
	}
}

// sgemmGeneric is the reference: straightforward loops, i-p-j order so the
// inner loop streams rows of B and C.
func sgemmGeneric(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := range m {
		ci := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(ci)
		} else if beta != 1 {
			for j := range ci {
				ci[j] *= beta
			}
		}
		for p := range k {
			var aip float32
			if transA {
				aip = a[p*lda+i]
			} else {
				aip = a[i*lda+p]
			}
			s := alpha * aip
			if transB {
				for j := range ci {
					ci[j] += s * b[j*ldb+p]
				}
			} else {
				bp := b[p*ldb : p*ldb+n]
				for j := range ci {
					ci[j] += s * bp[j]
				}
			}
		}
	}
}

// sgemmMicroKernel computes rows×cols of C, one mr×nr tile per packed
// panel of A, against one packed panel of B (see sgemmKernelGo for the
// contract).
type sgemmMicroKernel func(kc int, a, b, c []float32, ldc int, alpha, beta float32, rows, cols int)

// sgemmPacker packs one full panel (see the sgemmPack* assembly for the
// two kinds: transposing and copying).
type sgemmPacker func(dst, src []float32, ld, kc int)

// sgemmKernel is one micro-kernel with its tile shape, cache blocking and
// the packers that feed it. Nil packers mean Go loops; the transposing
// ones take kc in multiples of packStep and Go packs the rest.
type sgemmKernel struct {
	name   string
	isa    ISA // the least ISA it needs
	mr, nr int
	run    sgemmMicroKernel
	block  sgemmBlocking

	packStep              int
	packTransA, packCopyA sgemmPacker // panels of mr rows of op(A)
	packTransB, packCopyB sgemmPacker // panels of nr columns of op(B)
}

// sgemmBlock is one step of the outer blocking loops: columns [jc, jc+nc)
// of C, inner indices [pc, pc+kc), and the beta that applies to it (the
// caller's for the first block of inner indices, then 1).
type sgemmBlock struct {
	jc, nc, pc, kc int
	beta           float32
}

// sgemmWorkspace holds one worker's packed panels.
type sgemmWorkspace struct {
	a, b []float32
}

// sgemmCall is one Sgemm or SgemmBatched call in flight: the arguments, the
// blocks of the outer loops and their progress, and the pack buffers.
// Calls are pooled so that steady-state use does not allocate.
type sgemmCall struct {
	kern           *sgemmKernel
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int

	strideA, strideB, strideC, batch int // SgemmBatched only

	// Sgemm only: the steps of the outer loops in order, and their
	// progress. Each block's part of C is handed out in chunks of chunk
	// rows (splitM) or columns, each block's B by panels; the workers claim
	// them from the counters (see sgemmRunTask). Block i's B is packed
	// into bPack[i%2].
	splitM    bool
	chunk     int
	blocks    []sgemmBlock
	sync      []sgemmBlockSync
	chunkDone []atomic.Bool // [i*maxChunks+ch]: chunk ch of block i is in C
	maxChunks int
	bPack     [2][]float32

	computeNext atomic.Int64 // SgemmBatched: the next product to claim

	ws []sgemmWorkspace // per worker
}

var sgemmCalls struct {
	sync.Mutex
	free []*sgemmCall
}

// getSgemmCall takes a call from the free list. A plain list rather than a
// sync.Pool keeps the pack buffers across garbage collections.
func getSgemmCall() *sgemmCall {
	sgemmCalls.Lock()
	defer sgemmCalls.Unlock()
	if n := len(sgemmCalls.free); n > 0 {
		c := sgemmCalls.free[n-1]
		sgemmCalls.free = sgemmCalls.free[:n-1]
		return c
	}
	return new(sgemmCall)
}

func putSgemmCall(c *sgemmCall) {
	c.a, c.b, c.c = nil, nil, nil
	sgemmCalls.Lock()
	sgemmCalls.free = append(sgemmCalls.free, c)
	sgemmCalls.Unlock()
}

func (c *sgemmCall) set(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	c.kern = sgemmKernelForISA()
	c.transA, c.transB = transA, transB
	c.m, c.n, c.k = m, n, k
	c.alpha, c.beta = alpha, beta
	c.a, c.b, c.c = a, b, cc
	c.lda, c.ldb, c.ldc = lda, ldb, ldc
	c.strideA, c.strideB, c.strideC, c.batch = 0, 0, 0, 0
}

// minFlopsPerWorker keeps small products on fewer goroutines: handing work
// to another goroutine costs microseconds. (A variable so that tests can
// split tiny products.)
var minFlopsPerWorker = 4 << 20

// sgemmWorkers is how many goroutines a product of flops gets: threads
// (DefaultThreads() when <= 0), fewer for small products.
func sgemmWorkers(threads int, flops float64) int {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	return max(1, min(threads, int(flops/float64(max(minFlopsPerWorker, 1)))))
}

func gemmFlops(m, n, k int) float64 { return 2 * float64(m) * float64(n) * float64(k) }

// prepare sizes the per-worker workspaces and chooses how each block's
// part of C is cut into chunks for the workers.
func (c *sgemmCall) prepare(workers int) {
	if cap(c.ws) < workers {
		c.ws = append(c.ws[:cap(c.ws)], make([]sgemmWorkspace, workers-cap(c.ws))...)
	}
	c.ws = c.ws[:workers]
	kern := c.kern
	tilesM := (c.m + kern.mr - 1) / kern.mr
	tilesN := (min(c.n, kern.block.nc) + kern.nr - 1) / kern.nr
	// Splitting by rows lets every worker pack only its own rows of A; it
	// needs enough row tiles to balance.
	c.splitM = tilesM >= 2*workers || tilesM >= tilesN
	// About four chunks per worker, for balance, each at most one block
	// of A (mc rows); columns go by whole panels.
	if c.splitM {
		c.chunk = min(kern.block.mc, roundUp((c.m+4*workers-1)/(4*workers), kern.mr))
	} else {
		c.chunk = roundUp((min(c.n, kern.block.nc)+4*workers-1)/(4*workers), kern.nr)
	}
	mc := min(kern.block.mc, roundUp(c.m, kern.mr))
	for w := range c.ws {
		c.ws[w].a = growAligned(c.ws[w].a, mc*min(c.k, kern.block.kc))
	}
}

// bPackLen is the size of one packed block of B.
func (c *sgemmCall) bPackLen() int {
	kern := c.kern
	return min(c.k, kern.block.kc) * roundUp(min(c.n, kern.block.nc), kern.nr)
}

// sgemmBlockSync counts one block's work: panels of B claimed and packed,
// chunks of C claimed and computed.
type sgemmBlockSync struct {
	packClaim, packDone atomic.Int64
	compClaim, compDone atomic.Int64
}

// run computes the product on workers goroutines in one Parallel call (see
// sgemmRunTask).
func (c *sgemmCall) run(workers int) {
	c.prepare(workers)
	for i := range c.bPack {
		c.bPack[i] = growAligned(c.bPack[i], c.bPackLen())
	}
	c.blocks = c.blocks[:0]
	for jc := 0; jc < c.n; jc += c.kern.block.nc {
		for pc := 0; pc < c.k; pc += c.kern.block.kc {
			c.blocks = append(c.blocks, c.block(jc, pc))
		}
	}
	if cap(c.sync) < len(c.blocks) {
		c.sync = make([]sgemmBlockSync, len(c.blocks))
	}
	c.sync = c.sync[:len(c.blocks)]
	c.maxChunks = 0
	for i := range c.sync {
		st := &c.sync[i]
		st.packClaim.Store(0)
		st.packDone.Store(0)
		st.compClaim.Store(0)
		st.compDone.Store(0)
		c.maxChunks = max(c.maxChunks, int(c.chunks(i)))
	}
	if n := len(c.blocks) * c.maxChunks; cap(c.chunkDone) < n {
		c.chunkDone = make([]atomic.Bool, n)
	} else {
		c.chunkDone = c.chunkDone[:n]
		for i := range c.chunkDone {
			c.chunkDone[i].Store(false)
		}
	}
	Parallel(workers, (*sgemmRunTask)(c))
}

// block is the outer-loop step at column jc and inner index pc.
func (c *sgemmCall) block(jc, pc int) sgemmBlock {
	bl := c.kern.block
	blk := sgemmBlock{jc: jc, nc: min(bl.nc, c.n-jc), pc: pc, kc: min(bl.kc, c.k-pc), beta: c.beta}
	if pc > 0 {
		blk.beta = 1
	}
	return blk
}

// sgemmRunTask is a whole product. Every worker walks the blocks in order:
// it helps pack block i's B into bPack[i%2] (once block i-2, which used
// that buffer, is computed), waits until it is packed, then computes
// chunks of block i's part of C, each after the same chunk of the previous
// block of inner indices (which adds into the same part of C) is done.
// Work is claimed from counters, not split in advance, so a worker that
// starts late or is slowed by other load on the machine just does less;
// results do not depend on who computes what. A worker that finishes its
// share of a block early goes on to pack the next block's B.
//
// The waits cannot deadlock even when Parallel runs workers one after
// another: a worker waits only for work already claimed, and whoever
// claimed it is running it without waiting on anything.
type sgemmRunTask sgemmCall

func (t *sgemmRunTask) Run(w, workers int) {
	c := (*sgemmCall)(t)
	for i := range c.blocks {
		if i >= 2 {
			waitFor(&c.sync[i-2].compDone, c.chunks(i-2))
		}
		c.packPanels(i)
		waitFor(&c.sync[i].packDone, c.panels(i))
		c.computeChunks(i, &c.ws[w])
	}
}

// panels and chunks are how many panels of B and chunks of C block i has.
func (c *sgemmCall) panels(i int) int64 {
	return int64((c.blocks[i].nc + c.kern.nr - 1) / c.kern.nr)
}

func (c *sgemmCall) chunks(i int) int64 {
	extent := c.blocks[i].nc
	if c.splitM {
		extent = c.m
	}
	return int64((extent + c.chunk - 1) / c.chunk)
}

// packPanels packs panels of block i's B, a few at a time, until none are
// left to claim.
func (c *sgemmCall) packPanels(i int) {
	const perClaim = 4
	st, blk, panels := &c.sync[i], &c.blocks[i], c.panels(i)
	for {
		lo := st.packClaim.Add(perClaim) - perClaim
		if lo >= panels {
			return
		}
		hi := min(lo+perClaim, panels)
		c.packB(c.bPack[i%2], c.b, blk, int(lo), int(hi))
		st.packDone.Add(hi - lo)
	}
}

// computeChunks computes chunks of block i's part of C until none are left
// to claim.
func (c *sgemmCall) computeChunks(i int, ws *sgemmWorkspace) {
	st, blk, chunks := &c.sync[i], &c.blocks[i], c.chunks(i)
	for {
		ch := st.compClaim.Add(1) - 1
		if ch >= chunks {
			return
		}
		if i > 0 && c.blocks[i-1].jc == blk.jc {
			prev := &c.chunkDone[(i-1)*c.maxChunks+int(ch)]
			for spins := 0; !prev.Load(); spins++ {
				if spins > 100 {
					runtime.Gosched()
				}
			}
		}
		lo := int(ch) * c.chunk
		if c.splitM {
			c.compute(ws, blk, c.bPack[i%2], c.a, c.c, lo, min(lo+c.chunk, c.m), 0, blk.nc)
		} else {
			c.compute(ws, blk, c.bPack[i%2], c.a, c.c, 0, c.m, lo, min(lo+c.chunk, blk.nc))
		}
		c.chunkDone[i*c.maxChunks+int(ch)].Store(true)
		st.compDone.Add(1)
	}
}

// waitFor spins until counter reaches target, yielding the processor after
// a short while: the work it waits for is running on another goroutine.
func waitFor(counter *atomic.Int64, target int64) {
	for spins := 0; counter.Load() < target; spins++ {
		if spins > 100 {
			runtime.Gosched()
		}
	}
}

// sgemmBatchTask runs whole products of a batch, each worker claiming the
// next one from computeNext until none are left.
type sgemmBatchTask sgemmCall

func (t *sgemmBatchTask) Run(w, workers int) {
	c := (*sgemmCall)(t)
	kern := c.kern
	ws := &c.ws[w]
	for {
		item := int(c.computeNext.Add(1)) - 1
		if item >= c.batch {
			return
		}
		a, b, cm := c.a[item*c.strideA:], c.b[item*c.strideB:], c.c[item*c.strideC:]
		for jc := 0; jc < c.n; jc += kern.block.nc {
			for pc := 0; pc < c.k; pc += kern.block.kc {
				blk := c.block(jc, pc)
				c.packB(ws.b, b, &blk, 0, (blk.nc+kern.nr-1)/kern.nr)
				c.compute(ws, &blk, ws.b, a, cm, 0, c.m, 0, blk.nc)
			}
		}
	}
}

// compute runs the micro-kernel over rows [i0, i1) and block columns
// [j0, j1) of C (j relative to blk.jc), packing A in blocks of mc rows
// into ws.a; bPack holds the block of B, packed.
func (c *sgemmCall) compute(ws *sgemmWorkspace, blk *sgemmBlock, bPack, a, cm []float32, i0, i1, j0, j1 int) {
	kern := c.kern
	mr, nr, kc, ldc := kern.mr, kern.nr, blk.kc, c.ldc
	for ic := i0; ic < i1; ic += kern.block.mc {
		mc := min(kern.block.mc, i1-ic)
		c.packA(ws.a, a, blk, ic, mc)
		ap := ws.a[:(mc+mr-1)/mr*kc*mr]
		for jr := j0; jr < j1; jr += nr {
			cols := min(nr, j1-jr)
			bp := bPack[(jr/nr)*kc*nr:][:kc*nr]
			off := ic*ldc + blk.jc + jr
			ct := cm[off : off+(mc-1)*ldc+cols]
			raceSgemmTile(ap, bp, ct, ldc, mc, cols)
			kern.run(kc, ap, bp, ct, ldc, c.alpha, blk.beta, mc, cols)
		}
	}
}

// packA packs rows [i0, i0+mc) and inner indices [pc, pc+kc) of op(A)
// into dst as panels of mr rows: panel t holds op(A)(i0+t·mr+r, pc+p) at
// dst[t·kc·mr + p·mr + r], rows past mc zero.
func (c *sgemmCall) packA(dst, a []float32, blk *sgemmBlock, i0, mc int) {
	kern := c.kern
	mr, kc, pc, lda := kern.mr, blk.kc, blk.pc, c.lda
	for ir := 0; ir < mc; ir += mr {
		rows := min(mr, mc-ir)
		panel := dst[(ir/mr)*kc*mr:][:kc*mr]
		if c.transA {
			// op(A)(i, p) = a[p*lda+i]: mr consecutive floats per p.
			start := pc*lda + i0 + ir
			if rows == mr && kern.packCopyA != nil {
				src := a[start : start+(kc-1)*lda+mr]
				racePack(src, lda, kc, mr)
				kern.packCopyA(panel, src, lda, kc)
				continue
			}
			packCopyGo(panel, a[start:], lda, kc, rows, mr)
			continue
		}
		// op(A)(i, p) = a[i*lda+p]: a transpose.
		start := (i0+ir)*lda + pc
		done := 0
		if rows == mr && kern.packTransA != nil {
			done = kc / kern.packStep * kern.packStep
			if done > 0 {
				src := a[start : start+(mr-1)*lda+done]
				racePack(src, lda, mr, done)
				kern.packTransA(panel[:done*mr], src, lda, done)
			}
		}
		packTransGo(panel[done*mr:], a[start+done:], lda, kc-done, rows, mr)
	}
}

// packB packs inner indices [pc, pc+kc) and the columns of panels
// [panel0, panel1) of the block (panel t covers block columns
// [t·nr, t·nr+nr)) of op(B) into dst: panel t holds op(B)(pc+p,
// jc+t·nr+j) at dst[t·kc·nr + p·nr + j], columns past the block zero.
func (c *sgemmCall) packB(dst, b []float32, blk *sgemmBlock, panel0, panel1 int) {
	kern := c.kern
	nr, kc, pc, ldb := kern.nr, blk.kc, blk.pc, c.ldb
	for t := panel0; t < panel1; t++ {
		j0 := blk.jc + t*nr
		cols := min(nr, blk.nc-t*nr)
		panel := dst[t*kc*nr:][:kc*nr]
		if !c.transB {
			// op(B)(p, j) = b[p*ldb+j]: nr consecutive floats per p.
			start := pc*ldb + j0
			if cols == nr && kern.packCopyB != nil {
				src := b[start : start+(kc-1)*ldb+nr]
				racePack(src, ldb, kc, nr)
				kern.packCopyB(panel, src, ldb, kc)
				continue
			}
			packCopyGo(panel, b[start:], ldb, kc, cols, nr)
			continue
		}
		// op(B)(p, j) = b[j*ldb+p]: a transpose.
		start := j0*ldb + pc
		done := 0
		if cols == nr && kern.packTransB != nil {
			done = kc / kern.packStep * kern.packStep
			if done > 0 {
				src := b[start : start+(nr-1)*ldb+done]
				racePack(src, ldb, nr, done)
				kern.packTransB(panel[:done*nr], src, ldb, done)
			}
		}
		packTransGo(panel[done*nr:], b[start+done:], ldb, kc-done, cols, nr)
	}
}

// packCopyGo packs kc rows of width floats (stride ld) into a panel of
// w-float rows, zero past width:
//
//	for p := range kc {
//		copy(dst[p*w:], src[p*ld:p*ld+width]); clear(dst[p*w+width:p*w+w])
//	}
func packCopyGo(dst, src []float32, ld, kc, width, w int) {
	for p := range kc {
		d := dst[p*w:][:w]
		copy(d, src[p*ld:][:width])
		clear(d[width:])
	}
}

// packTransGo packs the first kc columns of rows rows (stride ld) into a
// panel with the rows interleaved, w a step, zero past rows:
//
//	for p := range kc {
//		for r := range w {
//			dst[p*w+r] = src[r*ld+p] // 0 when r >= rows
//		}
//	}
func packTransGo(dst, src []float32, ld, kc, rows, w int) {
	if kc == 0 {
		return
	}
	for r := range rows {
		s := src[r*ld:][:kc]
		d := dst[r:]
		for p, v := range s {
			d[p*w] = v
		}
	}
	if rows < w {
		for p := range kc {
			clear(dst[p*w+rows : p*w+w])
		}
	}
}

func roundUp(x, m int) int { return (x + m - 1) / m * m }

// growAligned returns a slice of length n whose first element is 64-byte
// aligned (so packed panels never split a cache line), reusing buf when it
// is large enough.
func growAligned(buf []float32, n int) []float32 {
	if cap(buf) >= n && (len(buf) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(buf)))%64 == 0) {
		return buf[:n]
	}
	raw := make([]float32, n+16)
	off := 0
	if rem := uintptr(unsafe.Pointer(unsafe.SliceData(raw))) % 64; rem != 0 {
		off = int(64-rem) / 4
	}
	return raw[off : off+n : off+n]
}

// sgemmKernelGo is the portable micro-kernel: the same contract as the
// assembly ones with 4×4 tiles, so that the blocking and packing above are
// exercised (and useful) without SIMD:
//
//	for r := range rows {
//		panel := a[r/4*kc*4:]
//		for j := range cols {
//			var s float32
//			for p := range kc {
//				s += panel[p*4+r%4] * b[p*4+j]
//			}
//			c[r*ldc+j] = alpha*s + beta*c[r*ldc+j] // alpha*s when beta == 0
//		}
//	}
func sgemmKernelGo(kc int, a, b, c []float32, ldc int, alpha, beta float32, rows, cols int) {
	b = b[:kc*4]
	for r0 := 0; r0 < rows; r0 += 4 {
		panel := a[r0/4*kc*4:][:kc*4]
		var s00, s01, s02, s03, s10, s11, s12, s13 float32
		var s20, s21, s22, s23, s30, s31, s32, s33 float32
		for p := 0; p < kc; p++ {
			ap := panel[p*4 : p*4+4 : p*4+4]
			bp := b[p*4 : p*4+4 : p*4+4]
			a0, a1, a2, a3 := ap[0], ap[1], ap[2], ap[3]
			b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
			s00 += a0 * b0
			s01 += a0 * b1
			s02 += a0 * b2
			s03 += a0 * b3
			s10 += a1 * b0
			s11 += a1 * b1
			s12 += a1 * b2
			s13 += a1 * b3
			s20 += a2 * b0
			s21 += a2 * b1
			s22 += a2 * b2
			s23 += a2 * b3
			s30 += a3 * b0
			s31 += a3 * b1
			s32 += a3 * b2
			s33 += a3 * b3
		}
		tile := [4][4]float32{
			{s00, s01, s02, s03},
			{s10, s11, s12, s13},
			{s20, s21, s22, s23},
			{s30, s31, s32, s33},
		}
		for r := range min(4, rows-r0) {
			cr := c[(r0+r)*ldc:][:cols]
			for j := range cr {
				if beta == 0 {
					cr[j] = alpha * tile[r][j]
				} else {
					cr[j] = alpha*tile[r][j] + beta*cr[j]
				}
			}
		}
	}
}
