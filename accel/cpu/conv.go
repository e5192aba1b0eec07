package cpu

import (
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// Convolutions as matrix products. For one image and group, the input's
// window elements are laid out as columns (im2col): col[(c, kp), o] is
// input channel c at kernel position kp of output position o (0 where the
// window reads padding). Then
//
//	Conv:           y_g  = W_g · col            [mg, O] = [mg, cg·K]·[cg·K, O]
//	ConvGradInput:  dcol = W_gᵀ · dy_g, dx += col2im(dcol)
//	ConvGradWeight: dW_g += dy_g · colᵀ
//
// on kernels.Sgemm. Output positions go in chunks whose columns fit
// convChunkFloats, so the scratch stays bounded for any image size; the
// scratch is one buffer per executable (its nodes run one at a time),
// grown on first use. ConvTranspose imports as ConvGradInput.
//
// The columns are built a run at a time (convRun): for one kernel
// position, the output positions of one output row (along the last
// spatial axis) read input positions a stride apart in one input row, with
// padding only at the row's two ends or over the whole row. With stride 1
// a run is a copy (im2col) or a vector add (col2im) of contiguous
// elements, whatever the dilation, and the padding is zero-filled; runs
// that continue one another in the input are joined (convPlan), so that
// with "same" padding a column row is one copy and a few zero-fills. A
// chunk's plan is the same for every channel, image and group; it is
// made once and kept while they go. Channels are split over the threads.
//
// Where even 64 output positions' columns would pass convColsMax (many
// channels or a huge kernel), or one output row's runs convRunsMax, the
// columns are also split along the reduction: K-slices of whole
// channels, or of a few kernel positions of one channel, each a run of
// consecutive rows of W_g's columns, whose products accumulate (beta 1)
// into y and dW, and whose dcol go to col2im in turn. The scratch then
// stays under convColsMax floats and convRunsMax runs whatever the
// geometry, though the sums of Conv go in another order than in one
// slice: only convolutions that big take them.

// convChunkFloats bounds the im2col columns of one chunk (8 MiB; a
// variable for the tests).
var convChunkFloats = 2 << 20

// convRunsMax bounds the runs of one chunk, a run being one output row
// of one kernel position (a chunk's plan takes at most 56 bytes a run, a
// depthwise convolution's table 40: 3.5 MiB; a variable for the tests): a
// chunk spans at most convRunsMax/K − 1 output rows.
var convRunsMax = 1 << 16

// convColsMax bounds the columns of one K-slice (8 MiB; a variable for
// the tests): convolutions whose columns of 64 output positions would
// pass it are computed in K-slices.
var convColsMax = 2 << 20

// convRowRunsMax bounds a depthwise worker's runs of a row (40 bytes
// each; a variable for the tests): the kernel positions go in blocks of
// it where the runs are not all kept.
var convRowRunsMax = 1 << 10

// convScratch is what the conv kernels of one executable share: the
// im2col buffer and its plan, the plan of output positions [o0, o1) and
// kernel positions [k0, k1) of geometry owner (the same for the next
// image and group).
type convScratch struct {
	buf            []float32
	plan           convPlan
	owner          *convGeom
	o0, o1, k0, k1 int
}

func (s *convScratch) get(n int) []float32 {
	if len(s.buf) < n {
		s.buf = make([]float32, n)
	}
	return s.buf[:n]
}

// convGeom is a convolution's shapes, flattened: N images of C channels
// over spatial dims in, M output channels over out, kernel kern, groups
// of cg input and mg output channels.
type convGeom struct {
	op            ir.Conv
	n, c, m       int
	cg, mg        int
	in, out, kern ir.Shape
	inStrides     []int
	inSize        int // positions of an input channel
	outSize       int // O: positions of an output channel
	kSize         int // K: positions of the kernel
	chunk         int // output positions per im2col chunk
	// The columns' K-slices: sliceCh whole channels, or (sliceCh 1)
	// sliceK < kSize kernel positions of one channel.
	sliceCh, sliceK int
	// direct: a 1×1 kernel with unit strides and no padding reads the
	// input itself as its columns.
	direct bool
	// The last spatial axis: output and input positions, stride.
	ow, iw, stride int
	// taps[j]: the reach of the kernel positions at j along the last
	// axis.
	taps []convTap
	// tapOuter[d][j] is the reach of kernel positions at j along spatial
	// axis d < k−1: output position p there reads input position
	// p·stride + tapOuter[d][j].
	tapOuter [][]int
	scratch  *convScratch
	workers  int // for im2col, col2im and the depthwise sums
	cols     convColsTask
	wk       []convWorker
	// dwRuns[row·K + kp]: a depthwise convolution's runs, the same for
	// every image and channel, kept when there are at most convRunsMax.
	dwRuns []convRun
}

// A convSlice is a K-slice of the columns: channels [c0, c1) at kernel
// positions [k0, k1), whole channels (k0 = 0, k1 = K) or part of one.
type convSlice struct{ c0, c1, k0, k1 int }

// rows are the slice's rows of the columns, [r0, r1) in W_g's columns.
func (s convSlice) rows(kSize int) (r0, r1 int) {
	return s.c0*kSize + s.k0, (s.c1-1)*kSize + s.k1
}

// sliceAt is the K-slice whose first row is r0.
func (g *convGeom) sliceAt(r0 int) convSlice {
	c0, k0 := r0/g.kSize, r0%g.kSize
	if g.sliceK == g.kSize {
		return convSlice{c0: c0, c1: min(c0+g.sliceCh, g.cg), k0: 0, k1: g.kSize}
	}
	return convSlice{c0: c0, c1: c0 + 1, k0: k0, k1: min(k0+g.sliceK, g.kSize)}
}

// A convTap is one kernel position's reach along the last spatial axis:
// output position p reads input position p·stride + shift, which lies in
// the input for p ∈ [lo, hi).
type convTap struct {
	lo, hi, shift int
}

func newConvGeom(op ir.Conv, x, w, y ir.Shape, scratch *convScratch, threads int) *convGeom {
	g := &convGeom{op: op, n: x[0], c: x[1], m: w[0], in: x[2:], out: y[2:], kern: w[2:], scratch: scratch}
	g.cg, g.mg = g.c/op.Group, g.m/op.Group
	g.inSize, g.outSize, g.kSize = g.in.Size(), g.out.Size(), g.kern.Size()
	g.inStrides = g.in.Strides()
	rows := max(g.cg*g.kSize, 1)
	g.chunk = min(g.outSize, max(64, convChunkFloats/rows))
	k := len(g.in)
	g.ow, g.iw, g.stride = g.out[k-1], g.in[k-1], op.Strides[k-1]
	g.chunk = min(g.chunk, max(convRunsMax/max(g.kSize, 1)-1, 1)*g.ow)
	g.sliceCh, g.sliceK = g.cg, g.kSize
	if rows*min(g.outSize, 64) > convColsMax || 2*g.kSize > convRunsMax {
		g.sliceColumns()
	}
	g.direct = g.kSize == 1
	for d := range g.in {
		g.direct = g.direct && op.Strides[d] == 1 && op.Pads[d] == 0 && op.Pads[len(g.in)+d] == 0 && g.in[d] == g.out[d]
	}
	g.tapOuter = make([][]int, k-1)
	for d := range k - 1 {
		g.tapOuter[d] = make([]int, g.kern[d])
		for j := range g.kern[d] {
			g.tapOuter[d][j] = j*op.Dilations[d] - op.Pads[d]
		}
	}
	g.taps = make([]convTap, g.kern[k-1])
	for j := range g.kern[k-1] {
		shift := j*op.Dilations[k-1] - op.Pads[k-1]
		// lo: the first p with p·stride + shift ≥ 0; hi: the first with
		// p·stride + shift ≥ iw.
		lo := min(ceilDivNonNeg(-shift, g.stride), g.ow)
		hi := max(min(ceilDivNonNeg(g.iw-shift, g.stride), g.ow), lo)
		g.taps[j] = convTap{lo: lo, hi: hi, shift: shift}
	}
	// The column work is split over channels; the depthwise sums over
	// images and groups (or groups alone, for the weights' gradient).
	g.workers = max(workersFor(threads, g.n*g.m*g.outSize*g.kSize), 1)
	g.cols.g = g
	g.wk = make([]convWorker, g.workers)
	for w := range g.wk {
		g.wk[w].pos = make([]int, k-1)
	}
	if g.cg == 1 && !g.direct && g.outSize > 0 {
		rows := g.outSize / g.ow
		for w := range g.wk {
			g.wk[w].tmp = make([]float32, g.ow)
			if g.kSize*rows > convRunsMax {
				g.wk[w].runs = make([]convRun, min(g.kSize, max(convRowRunsMax, 1)))
			}
		}
		if g.kSize*rows <= convRunsMax {
			g.dwRuns = make([]convRun, g.kSize*rows)
			pos := g.wk[0].pos
			for row := range rows {
				start := g.rowStart(row, pos)
				for kp := range g.kSize {
					g.dwRuns[row*g.kSize+kp] = g.run(pos, kp, start, start, start+g.ow)
				}
			}
		}
	}
	return g
}

// sliceColumns sets the K-slices and the chunk of columns too big for
// one slice: chunks of 64 output positions (fewer under a smaller
// convColsMax), slices of as many whole channels as fit in convColsMax
// floats, or of as many kernel positions of one channel as fit in it and
// keep the plan within convRunsMax runs.
func (g *convGeom) sliceColumns() {
	g.chunk = min(g.outSize, 64, max(convColsMax, 1))
	sliceRows := max(convColsMax/max(g.chunk, 1), 1)
	spans := g.chunk/max(g.ow, 1) + 2 // output rows a chunk meets, at most
	kMax := max(convRunsMax/spans, 1)
	if g.kSize <= min(sliceRows, kMax) {
		g.sliceCh, g.sliceK = min(sliceRows/g.kSize, g.cg), g.kSize
		return
	}
	g.sliceCh, g.sliceK = 1, min(sliceRows, kMax)
}

// ceilDivNonNeg is ⌈a/b⌉ for b > 0, or 0 where that is negative.
func ceilDivNonNeg(a, b int) int {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// empty reports whether the products are of empty matrices (no input
// channels or kernel positions, no output positions or channels), which
// the GEMM does not take.
func (g *convGeom) empty() bool { return g.cg*g.kSize == 0 || g.outSize == 0 || g.mg == 0 }

// A convRun is the output positions [a, b) of one output row for one
// kernel position: [va, vb) of them read the input at x0, x0+stride, …
// (positions in an input channel), the rest read padding.
type convRun struct {
	a, b, va, vb, x0 int
}

// rowStart sets pos to the input positions that output row row reads at
// kernel offset 0 along the axes but the last (output position ×
// stride), and returns the row's first output position.
func (g *convGeom) rowStart(row int, pos []int) int {
	q := row
	for d := len(pos) - 1; d >= 0; d-- {
		pos[d] = q % g.out[d] * g.op.Strides[d]
		q /= g.out[d]
	}
	return row * g.ow
}

// run is the run of kernel position kp over output positions [a, b) of
// the row that starts at start, pos from rowStart.
func (g *convGeom) run(pos []int, kp, start, a, b int) convRun {
	r := convRun{a: a, b: b, va: a, vb: a}
	last := len(pos)
	q := kp / g.kern[last]
	base := 0
	for d := last - 1; d >= 0; d-- {
		p := pos[d] + g.tapOuter[d][q%g.kern[d]]
		q /= g.kern[d]
		if p < 0 || p >= g.in[d] {
			return r
		}
		base += p * g.inStrides[d]
	}
	t := g.taps[kp%g.kern[last]]
	r.va = min(max(start+t.lo, a), b)
	r.vb = min(max(start+t.hi, r.va), b)
	r.x0 = base + (r.va-start)*g.stride + t.shift
	return r
}

// A convWorker is one worker's buffers: rowStart's positions, and for a
// depthwise convolution its products of a run and the runs of a row
// (where they are not all kept).
type convWorker struct {
	pos  []int
	tmp  []float32
	runs []convRun
}

// A convPlan is how one chunk's columns are filled from an input channel,
// the same for every channel: for kernel position k0+j of the plan's
// [k0, k1), the moves moves[movesAt[j]:movesAt[j+1]] and the zero-fills
// zeros[zerosAt[j]:zerosAt[j+1]] of its column row. The runs of
// consecutive output rows that read the input as one arithmetic sequence
// (stride 1 with as many output as input positions a row, as with "same"
// padding) are one move, which also crosses the padding between them: the
// zero-fills come after the moves in im2col, and before them (on the
// columns) in col2im, which adds only what the moves name.
type convPlan struct {
	moves            []convMove
	zeros            []convZero
	movesAt, zerosAt []int
}

// A convMove is n column elements from col on, read from the input
// channel at x, x+stride, ….
type convMove struct{ col, x, n int }

// A convZero is n column elements of padding from col on.
type convZero struct{ col, n int }

// chunkPlan is the plan of output positions [o0, o1) and kernel
// positions [k0, k1), kept in the scratch for the next image or group.
func (g *convGeom) chunkPlan(o0, o1, k0, k1 int) *convPlan {
	s := g.scratch
	p := &s.plan
	if s.owner == g && s.o0 == o0 && s.o1 == o1 && s.k0 == k0 && s.k1 == k1 {
		return p
	}
	s.owner, s.o0, s.o1, s.k0, s.k1 = g, o0, o1, k0, k1
	p.moves, p.zeros = p.moves[:0], p.zeros[:0]
	p.movesAt, p.zerosAt = append(p.movesAt[:0], 0), append(p.zerosAt[:0], 0)
	pos := g.wk[0].pos
	for kp := k0; kp < k1; kp++ {
		move, zero := len(p.moves), len(p.zeros)
		for a := o0; a < o1; {
			start := g.rowStart(a/g.ow, pos)
			r := g.run(pos, kp, start, a, min(o1, start+g.ow))
			a = r.b
			p.zeros = addZero(p.zeros, zero, r.a-o0, r.va-r.a)
			p.zeros = addZero(p.zeros, zero, r.vb-o0, r.b-r.vb)
			if r.va == r.vb {
				continue
			}
			m := convMove{col: r.va - o0, x: r.x0, n: r.vb - r.va}
			if last := len(p.moves) - 1; last >= move {
				if l := &p.moves[last]; m.x-l.x == (m.col-l.col)*g.stride {
					l.n = m.col + m.n - l.col
					continue
				}
			}
			p.moves = append(p.moves, m)
		}
		p.movesAt, p.zerosAt = append(p.movesAt, len(p.moves)), append(p.zerosAt, len(p.zeros))
	}
	return p
}

// addZero appends the zero-fill of n elements from col, joined to the
// last one from first on where they meet.
func addZero(zeros []convZero, first, col, n int) []convZero {
	if n == 0 {
		return zeros
	}
	if last := len(zeros) - 1; last >= first && zeros[last].col+zeros[last].n == col {
		zeros[last].n += n
		return zeros
	}
	return append(zeros, convZero{col, n})
}

// convColsTask is im2col or col2im over channels [lo, hi) of a split of
// the slice's.
type convColsTask struct {
	g       *convGeom
	col, x  []float32
	width   int
	s       convSlice
	plan    *convPlan
	scatter bool // col2im
}

func (t *convColsTask) Run(worker, workers int) {
	lo, hi := kernels.Split(t.s.c1-t.s.c0, worker, workers, 1)
	lo, hi = lo+t.s.c0, hi+t.s.c0
	if t.scatter {
		t.g.col2imChannels(t.x, t.col, t.width, lo, hi, t.s, t.plan)
	} else {
		t.g.im2colChannels(t.col, t.x, t.width, lo, hi, t.s, t.plan)
	}
}

// im2col fills col [rows of slice s, o1−o0] with the windows of output
// positions [o0, o1) over channels x [cg][inSize].
func (g *convGeom) im2col(col, x []float32, o0, o1 int, s convSlice) {
	t := &g.cols
	t.col, t.x, t.width, t.s, t.scatter = col, x, o1-o0, s, false
	t.plan = g.chunkPlan(o0, o1, s.k0, s.k1)
	kernels.Parallel(g.colWorkers(o1-o0, s), t)
}

// col2im adds col [rows of slice s, o1−o0] into the channels dx
// [cg][inSize] at the windows' positions (im2col's arguments). It clears
// col's padding.
func (g *convGeom) col2im(dx, col []float32, o0, o1 int, s convSlice) {
	t := &g.cols
	t.col, t.x, t.width, t.s, t.scatter = col, dx, o1-o0, s, true
	t.plan = g.chunkPlan(o0, o1, s.k0, s.k1)
	kernels.Parallel(g.colWorkers(o1-o0, s), t)
}

// colWorkers is how many workers share the columns of slice s in a chunk
// of width output positions: they are split by channel, each channel's
// elements handled exactly as by one worker.
func (g *convGeom) colWorkers(width int, s convSlice) int {
	return min(workersFor(g.workers, (s.c1-s.c0)*(s.k1-s.k0)*width), s.c1-s.c0)
}

// im2colChannels fills the rows of channels [c0, c1) of col, slice s's
// columns (width of them), from x by the plan, a column row at a time.
func (g *convGeom) im2colChannels(col, x []float32, width, c0, c1 int, s convSlice, p *convPlan) {
	nk := s.k1 - s.k0
	for ic := c0; ic < c1; ic++ {
		xs := x[ic*g.inSize : (ic+1)*g.inSize]
		for j := range nk {
			r := (ic-s.c0)*nk + j
			dst := col[r*width : (r+1)*width]
			for _, m := range p.moves[p.movesAt[j]:p.movesAt[j+1]] {
				gather(dst[m.col:m.col+m.n], xs, m.x, g.stride)
			}
			for _, z := range p.zeros[p.zerosAt[j]:p.zerosAt[j+1]] {
				zero(dst[z.col : z.col+z.n])
			}
		}
	}
}

// col2imChannels adds the rows of channels [c0, c1) of col into dx by the
// plan (im2colChannels' arguments), clearing their padding first.
func (g *convGeom) col2imChannels(dx, col []float32, width, c0, c1 int, s convSlice, p *convPlan) {
	nk := s.k1 - s.k0
	for ic := c0; ic < c1; ic++ {
		xs := dx[ic*g.inSize : (ic+1)*g.inSize]
		for j := range nk {
			r := (ic-s.c0)*nk + j
			src := col[r*width : (r+1)*width]
			for _, z := range p.zeros[p.zerosAt[j]:p.zerosAt[j+1]] {
				zero(src[z.col : z.col+z.n])
			}
			for _, m := range p.moves[p.movesAt[j]:p.movesAt[j+1]] {
				scatterAdd(xs, m.x, g.stride, src[m.col:m.col+m.n])
			}
		}
	}
}

// shortRun is the run length below which a loop beats a call of copy,
// clear or the vector add.
const shortRun = 16

// zero clears dst, which is mostly a few elements of padding.
func zero(dst []float32) {
	if len(dst) >= shortRun {
		clear(dst)
		return
	}
	for j := range dst {
		dst[j] = 0
	}
}

// gather sets dst[j] = src[x0 + j·stride].
func gather(dst, src []float32, x0, stride int) {
	if len(dst) == 0 {
		return
	}
	if stride == 1 {
		s := src[x0 : x0+len(dst)]
		if len(dst) >= shortRun {
			copy(dst, s)
			return
		}
		for j := range dst {
			dst[j] = s[j]
		}
		return
	}
	src = src[x0 : x0+(len(dst)-1)*stride+1]
	for j, i := 0, 0; j < len(dst); j, i = j+1, i+stride {
		dst[j] = src[i]
	}
}

// scatterAdd adds src[j] to dst[x0 + j·stride].
func scatterAdd(dst []float32, x0, stride int, src []float32) {
	if len(src) == 0 {
		return
	}
	if stride == 1 {
		d := dst[x0 : x0+len(src)]
		if len(src) >= shortRun {
			kernels.AddF32(d, d, src)
			return
		}
		for j, v := range src {
			d[j] += v
		}
		return
	}
	dst = dst[x0 : x0+(len(src)-1)*stride+1]
	i := 0
	for _, v := range src {
		dst[i] += v
		i += stride
	}
}

// convBias is the GEMM epilogue that adds each output channel's bias to
// its row of the product.
type convBias struct {
	b, c []float32
	ldc  int
}

func (e *convBias) Finish(i0, i1, j0, j1 int) {
	for i := i0; i < i1; i++ {
		row := e.c[i*e.ldc+j0 : i*e.ldc+j1]
		kernels.AddScalarF32(row, e.b[i], row)
	}
}

// convKernel computes Conv: y = conv(x, w) + bias.
type convKernel struct {
	g          *convGeom
	threads    int
	x, w, b, y []float32
	bias       convBias
	dw         depthwiseTask
}

func newConvKernel(threads int, scratch *convScratch, op *ir.Conv, in, out []*ir.Tensor) kernel {
	k := &convKernel{g: newConvGeom(*op, in[0].Shape(), in[1].Shape(), out[0].Shape(), scratch, threads), threads: threads,
		x: in[0].Float32s(), w: in[1].Float32s(), y: out[0].Float32s()}
	if len(in) > 2 && in[2] != nil {
		k.b = in[2].Float32s()
	}
	k.dw = depthwiseTask{g: k.g, kind: depthwiseForward, y: k.y, w: k.w, x: k.x, b: k.b}
	return k
}

func (k *convKernel) run() error {
	g := k.g
	rows := g.cg * g.kSize
	if g.empty() {
		// No terms (no input channels, an empty kernel) or no outputs:
		// the bias alone.
		for i := range k.y {
			k.y[i] = 0
			if k.b != nil {
				k.y[i] = k.b[i/g.outSize%g.m]
			}
		}
		return nil
	}
	if g.cg == 1 && !g.direct {
		k.dw.run()
		return nil
	}
	var epi kernels.GemmEpilogue
	if k.b != nil {
		epi = &k.bias
	}
	for n := range g.n {
		for grp := range g.op.Group {
			x := k.x[(n*g.c+grp*g.cg)*g.inSize:]
			w := k.w[grp*g.mg*rows:]
			y := k.y[(n*g.m+grp*g.mg)*g.outSize:]
			if k.b != nil {
				k.bias.b = k.b[grp*g.mg : (grp+1)*g.mg]
			}
			if g.direct {
				k.bias.c, k.bias.ldc = y, g.outSize
				kernels.SgemmEpilogue(k.threads, false, false, g.mg, g.outSize, rows, 1, w, rows, x, g.inSize, 0, y, g.outSize, epi)
				continue
			}
			for o0 := 0; o0 < g.outSize; o0 += g.chunk {
				o1 := min(o0+g.chunk, g.outSize)
				k.bias.c, k.bias.ldc = y[o0:], g.outSize
				for r0, r1 := 0, 0; r0 < rows; r0 = r1 {
					s := g.sliceAt(r0)
					_, r1 = s.rows(g.kSize)
					col := g.scratch.get((r1 - r0) * (o1 - o0))
					g.im2col(col, x, o0, o1, s)
					// The slices' products add up in y; the bias goes
					// with the last.
					beta, e := float32(1), kernels.GemmEpilogue(nil)
					if r0 == 0 {
						beta = 0
					}
					if r1 == rows {
						e = epi
					}
					kernels.SgemmEpilogue(k.threads, false, false, g.mg, o1-o0, r1-r0, 1, w[r0:], rows, col, o1-o0, beta, y[o0:], g.outSize, e)
				}
			}
		}
	}
	return nil
}

// convGradInputKernel computes ConvGradInput (and ConvTranspose): dx, the
// gradient of a convolution's input, from dy and w.
type convGradInputKernel struct {
	g         *convGeom
	threads   int
	dy, w, dx []float32
	dw        depthwiseTask
}

func newConvGradInputKernel(threads int, scratch *convScratch, op *ir.ConvGradInput, in, out []*ir.Tensor) kernel {
	k := &convGradInputKernel{g: newConvGeom(op.Conv, op.InputShape, in[1].Shape(), in[0].Shape(), scratch, threads), threads: threads,
		dy: in[0].Float32s(), w: in[1].Float32s(), dx: out[0].Float32s()}
	k.dw = depthwiseTask{g: k.g, kind: depthwiseGradInput, y: k.dy, w: k.w, x: k.dx}
	return k
}

func (k *convGradInputKernel) run() error {
	g := k.g
	rows := g.cg * g.kSize
	if g.empty() {
		clear(k.dx) // no output depends on the input
		return nil
	}
	if g.cg == 1 && !g.direct {
		k.dw.run()
		return nil
	}
	if !g.direct {
		clear(k.dx)
	}
	for n := range g.n {
		for grp := range g.op.Group {
			dx := k.dx[(n*g.c+grp*g.cg)*g.inSize:]
			w := k.w[grp*g.mg*rows:]
			dy := k.dy[(n*g.m+grp*g.mg)*g.outSize:]
			if g.direct {
				kernels.Sgemm(k.threads, true, false, rows, g.outSize, g.mg, 1, w, rows, dy, g.outSize, 0, dx, g.inSize)
				continue
			}
			for o0 := 0; o0 < g.outSize; o0 += g.chunk {
				o1 := min(o0+g.chunk, g.outSize)
				for r0, r1 := 0, 0; r0 < rows; r0 = r1 {
					s := g.sliceAt(r0)
					_, r1 = s.rows(g.kSize)
					col := g.scratch.get((r1 - r0) * (o1 - o0))
					kernels.Sgemm(k.threads, true, false, r1-r0, o1-o0, g.mg, 1, w[r0:], rows, dy[o0:], g.outSize, 0, col, o1-o0)
					g.col2im(dx, col, o0, o1, s)
				}
			}
		}
	}
	return nil
}

// convGradWeightKernel computes ConvGradWeight: dw, the gradient of a
// convolution's weights, from dy and x (summed over the images in order).
type convGradWeightKernel struct {
	g         *convGeom
	threads   int
	dy, x, dw []float32
	dwTask    depthwiseTask
}

func newConvGradWeightKernel(threads int, scratch *convScratch, op *ir.ConvGradWeight, in, out []*ir.Tensor) kernel {
	k := &convGradWeightKernel{g: newConvGeom(op.Conv, in[1].Shape(), op.WeightShape, in[0].Shape(), scratch, threads), threads: threads,
		dy: in[0].Float32s(), x: in[1].Float32s(), dw: out[0].Float32s()}
	k.dwTask = depthwiseTask{g: k.g, kind: depthwiseGradWeight, y: k.dy, w: k.dw, x: k.x}
	return k
}

func (k *convGradWeightKernel) run() error {
	g := k.g
	rows := g.cg * g.kSize
	if g.empty() {
		clear(k.dw) // no output depends on the weights
		return nil
	}
	if g.cg == 1 && !g.direct {
		k.dwTask.run()
		return nil
	}
	for grp := range g.op.Group {
		dw := k.dw[grp*g.mg*rows : (grp+1)*g.mg*rows]
		if g.n == 0 {
			clear(dw)
			continue
		}
		for n := range g.n {
			x := k.x[(n*g.c+grp*g.cg)*g.inSize:]
			dy := k.dy[(n*g.m+grp*g.mg)*g.outSize:]
			if g.direct {
				kernels.Sgemm(k.threads, false, true, g.mg, rows, g.outSize, 1, dy, g.outSize, x, g.inSize, betaAfter(n == 0), dw, rows)
				continue
			}
			for o0 := 0; o0 < g.outSize; o0 += g.chunk {
				o1 := min(o0+g.chunk, g.outSize)
				for r0, r1 := 0, 0; r0 < rows; r0 = r1 {
					s := g.sliceAt(r0)
					_, r1 = s.rows(g.kSize)
					col := g.scratch.get((r1 - r0) * (o1 - o0))
					g.im2col(col, x, o0, o1, s)
					kernels.Sgemm(k.threads, false, true, g.mg, r1-r0, o1-o0, 1, dy[o0:], g.outSize, col, o1-o0, betaAfter(n == 0 && o0 == 0), dw[r0:], rows)
				}
			}
		}
	}
	return nil
}

// betaAfter is the GEMM's beta for a product that starts a sum (first)
// or adds to it.
func betaAfter(first bool) float32 {
	if first {
		return 0
	}
	return 1
}
