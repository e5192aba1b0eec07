package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The blocked, packed, threaded engine under Sgemm and Sbgemm. It follows
// the classic layout of fast GEMMs: the outer loops cut C into blocks of
// nc columns and the inner dimension into blocks of kc; each block of op(B)
// is packed once into panels of nr columns, and each block of mc rows of
// op(A) is laid out row-major (or read in place); a micro-kernel then
// computes mr×nr tiles of C with the tile in registers. The engine is
// generic over the element the kernels multiply: float32 for Sgemm, a pair
// of bfloat16 values (uint32) for Sbgemm.

// packed is the element type of a kernel's operands.
type packed interface{ float32 | uint32 }

// gemmMicroKernel computes rows×cols of C, mr×nr tiles at a time: row r of
// A (kc elements) at a[r*lda:], the panel of B (kc×nr elements) at b,
// C(r, j) at c[r*ldc+j] set to alpha·(A·B)(r, j) + beta·C(r, j) (just
// alpha·(A·B)(r, j) when beta is 0, without reading C). Meanwhile it may
// prefetch pfRows rows of pfRowLines cache lines from address pf, pfSkip
// bytes between the end of one row and the start of the next (a hint; the
// memory is not read).
type gemmMicroKernel[P packed] func(kc int, a []P, lda int, b []P, c []float32, ldc int, alpha, beta float32, rows, cols int, pf uintptr, pfRows, pfRowLines, pfSkip int)

// gemmPacker lays out op(A) and op(B) for a kernel. The packers may use
// scratch (scratchLen elements, the caller's own) along the way.
type gemmPacker[P packed] interface {
	// packA writes rows [i0, i0+mc) and inner indices [pc, pc+kc) of
	// op(A) into dst, row r at dst[r*ldd:], elems(kc) elements each
	// (⌈kc/kStep⌉, or kc rounded up to even for pairs).
	packA(dst []P, ldd int, scratch []P, a []float32, lda int, transA bool, i0, mc, pc, kc int)
	// packB writes inner indices [pc, pc+kc) and columns [j0, j0+cols)
	// of op(B) into a panel: element (p, j) at dst[p*nr+j], elems(kc)
	// rows, columns past cols zero.
	packB(dst []P, scratch []P, b []float32, ldb int, transB bool, pc, kc, j0, cols int)
	scratchLen() int
	// direct returns a itself as the kernel's operand when the kernel
	// multiplies float32 (so that A can be read in place).
	direct(a []float32) ([]P, bool)
}

// gemmKernel is one micro-kernel with its tile shape, cache blocking and
// packer.
type gemmKernel[P packed] struct {
	name   string
	isa    ISA // the least ISA it needs
	mr, nr int
	kStep  int // inner indices per element: 1 (float32) or 2 (bfloat16 pair)
	// pairs: float32 elements whose inner indices go in pairs (see
	// sbgemmWidePacker), so blocks hold an even number of them.
	pairs bool
	run   gemmMicroKernel[P]
	block gemmBlocking // kc in inner indices, a multiple of kMultiple()
	pack  gemmPacker[P]
}

// elems is how many elements kc inner indices take.
func (k *gemmKernel[P]) elems(kc int) int { return roundUp(kc, k.kMultiple()) / k.kStep }

// kMultiple is what blocks of inner indices other than the last are a
// multiple of.
func (k *gemmKernel[P]) kMultiple() int {
	if k.pairs {
		return 2
	}
	return k.kStep
}

// gemmBlock is one step of the outer blocking loops: columns [jc, jc+nc)
// of C, inner indices [pc, pc+kc), and the beta that applies to it (the
// caller's for the first block of inner indices, then 1).
type gemmBlock struct {
	jc, nc, pc, kc int
	beta           float32
}

// gemmWorkspace holds one worker's packed block of A (and, for batched
// products, of B), its packers' scratch and what its kernels are to
// prefetch.
type gemmWorkspace[P packed] struct {
	a, b, scratch []P
	next          gemmPrefetch
}

// gemmCall is one call in flight: the arguments, the blocks of the outer
// loops and their progress, and the pack buffers. Calls are pooled so that
// steady-state use does not allocate.
type gemmCall[P packed] struct {
	kern           *gemmKernel[P]
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
	directA        bool         // the kernel reads A in place
	epi            GemmEpilogue // single products only, or nil
	kc             int          // the block of inner indices: kern's, evened out over k

	strideA, strideB, strideC, batch int // batched calls only

	// A stacked product (a batch sharing one B, see gemmBatched) reads
	// op(A)'s rows in groups of groupRows, group g's matrix at
	// a[g*groupStride:]; groupRows 0: one matrix.
	groupRows, groupStride int

	// Single products only: the steps of the outer loops in order, and
	// their progress. Each block's part of C is handed out in chunks of
	// chunk rows (splitM) or columns, each block's B by panels; the
	// workers claim them from the counters (see gemmRunTask). Block i's B
	// is packed into bPack[i%2].
	splitM    bool
	chunk     int
	blocks    []gemmBlock
	sync      []gemmBlockSync
	chunkDone []atomic.Bool // [i*maxChunks+ch]: chunk ch of block i is in C
	maxChunks int
	bPack     [2][]P

	computeNext atomic.Int64 // batched calls: the next product to claim

	ws []gemmWorkspace[P] // per worker
}

// gemmCalls is a free list of calls. A plain list rather than a sync.Pool
// keeps the pack buffers across garbage collections.
type gemmCalls[P packed] struct {
	sync.Mutex
	free []*gemmCall[P]
}

func (l *gemmCalls[P]) get() *gemmCall[P] {
	l.Lock()
	defer l.Unlock()
	if n := len(l.free); n > 0 {
		c := l.free[n-1]
		l.free = l.free[:n-1]
		return c
	}
	return new(gemmCall[P])
}

func (l *gemmCalls[P]) put(c *gemmCall[P]) {
	c.a, c.b, c.c, c.epi = nil, nil, nil, nil
	l.Lock()
	l.free = append(l.free, c)
	l.Unlock()
}

func (c *gemmCall[P]) set(kern *gemmKernel[P], transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	c.kern = kern
	c.transA, c.transB = transA, transB
	c.m, c.n, c.k = m, n, k
	c.alpha, c.beta = alpha, beta
	c.a, c.b, c.c = a, b, cc
	c.lda, c.ldb, c.ldc = lda, ldb, ldc
	c.strideA, c.strideB, c.strideC, c.batch = 0, 0, 0, 0
	c.groupRows, c.groupStride = 0, 0
	// Blocks of equal size (a multiple of kMultiple) rather than full ones and
	// a remnant: a short last block would run short kernel loops and add
	// into C once more for little work.
	blocks := (k + kern.block.kc - 1) / max(kern.block.kc, 1)
	c.kc = roundUp((k+blocks-1)/max(blocks, 1), kern.kMultiple())
	_, inPlace := kern.pack.direct(nil) // whether the kernel multiplies float32
	c.directA = inPlace && !transA && readsInPlaceWell(lda, kern.mr, min(m, kern.block.mc))
}

// readsInPlaceWell reports whether a kernel reading rows of A in place, at
// a stride of lda floats, keeps them apart in the caches: a tile's mr rows
// (read side by side) at most two to an L1 set, a block's mc rows at most
// four to an L2 set. Strides that are multiples of large powers of two put
// every row into the same few sets, where they evict each other and the
// panel of B; A is then copied into a block with a padded stride instead.
func readsInPlaceWell(lda, mr, mc int) bool {
	_, l2, _ := cacheSizes()
	return rowsPerCacheSet(lda, mr, 64) <= 2 && rowsPerCacheSet(lda, mc, max(l2/(64*16), 64)) <= 4
}

// rowsPerCacheSet is about the largest number of rows, of rows rows at a
// stride of ld floats, whose starts fall into one of sets cache sets of 64
// bytes: the starts repeat, modulo the sets, every period rows.
func rowsPerCacheSet(ld, rows, sets int) int {
	span := 64 * sets
	period := span / gcd(4*ld%span+span, span)
	return (rows + period - 1) / period
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// packedStride is the row stride of a packed block of A whose rows hold
// elems elements: rounded up to whole cache lines plus one, so that rows
// neither share lines nor line up in the same cache sets.
func packedStride(elems int) int { return roundUp(elems, 16) + 16 }

// minFlopsPerWorker keeps small products on fewer goroutines: handing work
// to another goroutine costs microseconds. (A variable so that tests can
// split tiny products.)
var minFlopsPerWorker = 4 << 20

// gemmWorkers is how many goroutines a product of flops gets: threads
// (DefaultThreads() when <= 0), fewer for small products.
func gemmWorkers(threads int, flops float64) int {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	return max(1, min(threads, int(flops/float64(max(minFlopsPerWorker, 1)))))
}

func gemmFlops(m, n, k int) float64 { return 2 * float64(m) * float64(n) * float64(k) }

// prepare sizes the per-worker workspaces and chooses how each block's
// part of C is cut into chunks for the workers.
func (c *gemmCall[P]) prepare(workers int) {
	if cap(c.ws) < workers {
		c.ws = append(c.ws[:cap(c.ws)], make([]gemmWorkspace[P], workers-cap(c.ws))...)
	}
	c.ws = c.ws[:workers]
	kern := c.kern
	for w := range c.ws {
		c.ws[w].scratch = growAligned(c.ws[w].scratch, kern.pack.scratchLen())
	}
	tilesM := (c.m + kern.mr - 1) / kern.mr
	tilesN := (min(c.n, kern.block.nc) + kern.nr - 1) / kern.nr
	// Splitting by rows lets every worker pack only its own rows of A; it
	// needs enough row tiles to balance.
	c.splitM = tilesM >= 2*workers || tilesM >= tilesN
	// About four chunks per worker, for balance, each at most one block
	// of A (mc rows); columns go by whole panels. A single worker takes
	// whole blocks: every chunk sweeps all of B's panels, so smaller ones
	// would only read B more often.
	if c.splitM {
		c.chunk = kern.block.mc
		if workers > 1 {
			c.chunk = min(c.chunk, roundUp((c.m+4*workers-1)/(4*workers), kern.mr))
		}
		// Chunks of about equal size: a short last one would sweep the
		// whole block of B for a few rows.
		chunks := (c.m + c.chunk - 1) / c.chunk
		c.chunk = roundUp((c.m+chunks-1)/chunks, kern.mr)
	} else {
		c.chunk = roundUp((min(c.n, kern.block.nc)+4*workers-1)/(4*workers), kern.nr)
	}
	if !c.directA {
		mc := min(kern.block.mc, c.m)
		for w := range c.ws {
			c.ws[w].a = growAligned(c.ws[w].a, mc*packedStride(kern.elems(c.kc)))
		}
	}
}

// bPackLen is the size of one packed block of B.
func (c *gemmCall[P]) bPackLen() int {
	kern := c.kern
	return kern.elems(c.kc) * roundUp(min(c.n, kern.block.nc), kern.nr)
}

// gemmBlockSync counts one block's work: panels of B claimed and packed,
// chunks of C claimed and computed.
type gemmBlockSync struct {
	packClaim, packDone atomic.Int64
	compClaim, compDone atomic.Int64
}

// run computes the product on workers goroutines in one Parallel call (see
// gemmRunTask).
func (c *gemmCall[P]) run(workers int) {
	c.prepare(workers)
	for i := range c.bPack {
		c.bPack[i] = growAligned(c.bPack[i], c.bPackLen())
	}
	c.blocks = c.blocks[:0]
	for jc := 0; jc < c.n; jc += c.kern.block.nc {
		for pc := 0; pc < c.k; pc += c.kc {
			c.blocks = append(c.blocks, c.block(jc, pc))
		}
	}
	if cap(c.sync) < len(c.blocks) {
		c.sync = make([]gemmBlockSync, len(c.blocks))
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
	Parallel(workers, (*gemmRunTask[P])(c))
}

// runBatch computes the products of a batched call on workers goroutines,
// each product whole on one of them (see gemmBatchTask).
func (c *gemmCall[P]) runBatch(workers int) {
	c.prepare(workers)
	for w := range workers {
		c.ws[w].b = growAligned(c.ws[w].b, c.bPackLen())
	}
	c.computeNext.Store(0)
	Parallel(workers, (*gemmBatchTask[P])(c))
}

// block is the outer-loop step at column jc and inner index pc.
func (c *gemmCall[P]) block(jc, pc int) gemmBlock {
	bl := c.kern.block
	blk := gemmBlock{jc: jc, nc: min(bl.nc, c.n-jc), pc: pc, kc: min(c.kc, c.k-pc), beta: c.beta}
	if pc > 0 {
		blk.beta = 1
	}
	return blk
}

// gemmRunTask is a whole product. Every worker walks the blocks in order:
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
type gemmRunTask[P packed] gemmCall[P]

func (t *gemmRunTask[P]) Run(w, workers int) {
	c := (*gemmCall[P])(t)
	for i := range c.blocks {
		if i >= 2 {
			waitFor(&c.sync[i-2].compDone, c.chunks(i-2))
		}
		c.packPanels(i, &c.ws[w])
		waitFor(&c.sync[i].packDone, c.panels(i))
		c.computeChunks(i, &c.ws[w])
	}
}

// panels and chunks are how many panels of B and chunks of C block i has.
func (c *gemmCall[P]) panels(i int) int64 {
	return int64((c.blocks[i].nc + c.kern.nr - 1) / c.kern.nr)
}

func (c *gemmCall[P]) chunks(i int) int64 {
	extent := c.blocks[i].nc
	if c.splitM {
		extent = c.m
	}
	return int64((extent + c.chunk - 1) / c.chunk)
}

// packPanels packs panels of block i's B, a few at a time, until none are
// left to claim.
func (c *gemmCall[P]) packPanels(i int, ws *gemmWorkspace[P]) {
	const perClaim = 4
	st, blk, panels := &c.sync[i], &c.blocks[i], c.panels(i)
	for {
		lo := st.packClaim.Add(perClaim) - perClaim
		if lo >= panels {
			return
		}
		hi := min(lo+perClaim, panels)
		c.packB(c.bPack[i%2], ws.scratch, c.b, blk, int(lo), int(hi))
		st.packDone.Add(hi - lo)
	}
}

// computeChunks computes chunks of block i's part of C until none are left
// to claim.
func (c *gemmCall[P]) computeChunks(i int, ws *gemmWorkspace[P]) {
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
		next := &ws.next
		*next = gemmPrefetch{}
		i0, i1, j0, j1 := lo, min(lo+c.chunk, c.m), 0, blk.nc
		if !c.splitM {
			i0, i1, j0, j1 = 0, c.m, lo, min(lo+c.chunk, blk.nc)
		}
		c.compute(ws, blk, c.bPack[i%2], c.a, c.c, i0, i1, j0, j1, next)
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

// gemmBatchTask runs whole products of a batch, each worker claiming the
// next one from computeNext until none are left.
type gemmBatchTask[P packed] gemmCall[P]

func (t *gemmBatchTask[P]) Run(w, workers int) {
	c := (*gemmCall[P])(t)
	kern := c.kern
	ws := &c.ws[w]
	for {
		item := int(c.computeNext.Add(1)) - 1
		if item >= c.batch {
			return
		}
		a, b, cm := c.a[item*c.strideA:], c.b[item*c.strideB:], c.c[item*c.strideC:]
		// While computing this product, bring in the operands of the
		// product this worker is likely to claim next (the claims go
		// round in turn when the workers keep pace).
		next := &ws.next
		*next = gemmPrefetch{}
		if after := item + workers; after < c.batch {
			next.add(c.a[after*c.strideA:], c.lda, c.transA, 0, c.m, 0, c.k)
			next.add(c.b[after*c.strideB:], c.ldb, c.transB, 0, c.k, 0, c.n)
		}
		for jc := 0; jc < c.n; jc += kern.block.nc {
			for pc := 0; pc < c.k; pc += c.kc {
				blk := c.block(jc, pc)
				c.packB(ws.b, ws.scratch, b, &blk, 0, (blk.nc+kern.nr-1)/kern.nr)
				c.compute(ws, &blk, ws.b, a, cm, 0, c.m, 0, blk.nc, next)
				*next = gemmPrefetch{} // once is enough
			}
		}
	}
}

// compute runs the micro-kernel over rows [i0, i1) and block columns
// [j0, j1) of C (j relative to blk.jc), taking A in blocks of mc rows;
// bPack holds the block of B, packed. The kernel calls prefetch next,
// shared out among them.
func (c *gemmCall[P]) compute(ws *gemmWorkspace[P], blk *gemmBlock, bPack []P, a, cm []float32, i0, i1, j0, j1 int, next *gemmPrefetch) {
	kern := c.kern
	nr, ldc := kern.nr, c.ldc
	kp := kern.elems(blk.kc)
	calls := ((i1 - i0 + kern.block.mc - 1) / kern.block.mc) * ((j1 - j0 + nr - 1) / nr)
	call := 0
	final := c.epi != nil && blk.pc+blk.kc == c.k // this block's C is final
	for ic := i0; ic < i1; ic += kern.block.mc {
		mc := min(kern.block.mc, i1-ic)
		ap, lda := c.blockA(ws, blk, a, ic, mc)
		finished := j0 // the epilogue has run on columns [j0, finished)
		for jr := j0; jr < j1; jr += nr {
			cols := min(nr, j1-jr)
			bp := bPack[(jr/nr)*kp*nr:][:kp*nr]
			off := ic*ldc + blk.jc + jr
			ct := cm[off : off+(mc-1)*ldc+cols]
			pf := next.share(call, calls)
			if next.n == 0 && jr+nr < j1 {
				// Bring the next panel of B from L3.
				pf = prefetchRows{rows: 1, rowLines: kp * nr * 4 / 64}
				pf.start = uintptr(unsafe.Pointer(&bPack[(jr/nr+1)*kp*nr]))
			}
			raceGemmTile(ap, lda, mc, kp, bp, ct, ldc, cols)
			kern.run(kp, ap, lda, bp, ct, ldc, c.alpha, blk.beta, mc, cols, pf.start, pf.rows, pf.rowLines, pf.skip)
			call++
			if end := jr + cols; final && (end-finished >= epilogueCols || end == j1) {
				// Finish these columns of the mc rows while they are in L2.
				c.epi.Finish(ic, ic+mc, blk.jc+finished, blk.jc+end)
				finished = end
			}
		}
	}
}

// epilogueCols is about how many columns of a block of rows the epilogue
// finishes at a time: mc rows of 256 floats (half of L2 for the AVX-512
// kernels' mc) are still in L2 when it runs, and each of its row segments
// is long enough to make a call worth it.
const epilogueCols = 256

// gemmPrefetch is memory the kernels are to prefetch while they compute:
// up to two ranges of rows of cache lines.
type gemmPrefetch struct {
	ranges [2]prefetchRows
	n      int
}

// prefetchRows is rows rows of rowLines cache lines, the first at start,
// each skip bytes after the end of the one before.
type prefetchRows struct {
	start                uintptr
	rows, rowLines, skip int
}

// add appends the range holding rows [r0, r1) and columns [c0, c1) of the
// matrix x with stride ld, stored transposed when trans, if there is
// room.
func (p *gemmPrefetch) add(x []float32, ld int, trans bool, r0, r1, c0, c1 int) {
	if trans {
		r0, r1, c0, c1 = c0, c1, r0, r1
	}
	if p == nil || p.n == len(p.ranges) || r0 >= r1 || c0 >= c1 || (r1-1)*ld+c1 > len(x) {
		return
	}
	first := uintptr(unsafe.Pointer(&x[r0*ld+c0]))
	start := first &^ 63
	lines := int((first + uintptr(4*(c1-c0)) - start + 63) / 64)
	p.ranges[p.n] = prefetchRows{start: start, rows: r1 - r0, rowLines: lines, skip: 4*ld - 64*lines}
	p.n++
}

// share is the part of the ranges that kernel call i of n prefetches: an
// n-th of their rows, cut short where it would cross from one range to
// the next.
func (p *gemmPrefetch) share(i, n int) prefetchRows {
	if p == nil || p.n == 0 {
		return prefetchRows{}
	}
	total := 0
	for _, r := range p.ranges[:p.n] {
		total += r.rows
	}
	per := (total + n - 1) / n
	lo, hi := i*per, min((i+1)*per, total)
	for _, r := range p.ranges[:p.n] {
		if lo < r.rows {
			part := r
			part.start += uintptr(lo * (64*r.rowLines + r.skip))
			part.rows = min(hi, r.rows) - lo
			return part
		}
		lo, hi = lo-r.rows, hi-r.rows
		if hi <= 0 {
			break
		}
	}
	return prefetchRows{}
}

// blockA returns rows [i0, i0+mc) and the block's inner indices of op(A)
// as the kernel reads them, with their row stride: A itself when the
// kernel reads it in place, else packed into ws.a.
func (c *gemmCall[P]) blockA(ws *gemmWorkspace[P], blk *gemmBlock, a []float32, i0, mc int) ([]P, int) {
	kp := c.kern.elems(blk.kc)
	if c.directA {
		if in, ok := c.kern.pack.direct(a); ok {
			start := i0*c.lda + blk.pc
			return in[start : start+(mc-1)*c.lda+kp], c.lda
		}
	}
	ldd := packedStride(kp)
	if g := c.groupRows; g > 0 {
		// Each group's rows are one matrix of the stack.
		for r := i0; r < i0+mc; {
			local := r % g
			run := min(g-local, i0+mc-r)
			c.kern.pack.packA(ws.a[(r-i0)*ldd:], ldd, ws.scratch, a[r/g*c.groupStride:], c.lda, c.transA, local, run, blk.pc, blk.kc)
			r += run
		}
	} else {
		c.kern.pack.packA(ws.a, ldd, ws.scratch, a, c.lda, c.transA, i0, mc, blk.pc, blk.kc)
	}
	return ws.a[:(mc-1)*ldd+kp], ldd
}

// packB packs the panels [panel0, panel1) of the block of B (panel t
// covers block columns [t·nr, t·nr+nr)) into dst, panel t at
// dst[t·kp·nr:].
func (c *gemmCall[P]) packB(dst, scratch []P, b []float32, blk *gemmBlock, panel0, panel1 int) {
	kern := c.kern
	nr, kp := kern.nr, kern.elems(blk.kc)
	for t := panel0; t < panel1; t++ {
		cols := min(nr, blk.nc-t*nr)
		kern.pack.packB(dst[t*kp*nr:][:kp*nr], scratch, b, c.ldb, c.transB, blk.pc, blk.kc, blk.jc+t*nr, cols)
	}
}

func roundUp(x, m int) int { return (x + m - 1) / m * m }

// growAligned returns a slice of length n whose first element is 64-byte
// aligned (so packed panels never split a cache line), reusing buf when it
// is large enough.
func growAligned[P packed](buf []P, n int) []P {
	if cap(buf) >= n && (len(buf) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(buf)))%64 == 0) {
		return buf[:n]
	}
	raw := make([]P, n+16)
	off := 0
	if rem := uintptr(unsafe.Pointer(unsafe.SliceData(raw))) % 64; rem != 0 {
		off = int(64-rem) / 4
	}
	return raw[off : off+n : off+n]
}
