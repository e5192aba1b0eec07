package cpu

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// Kernels for the ops of training graphs: the internal gradient ops of
// package ir (UnaryGrad, SoftmaxGrad, LayerNormGrad, ScatterAddRows,
// SliceGrad, SoftmaxCELoss) and the reduction and broadcast ops backward
// passes are made of (Reduce, Expand). They are float32 (Expand: any
// element width), split their work across the executable's threads with
// kernels.Parallel, allocate nothing when they run, and give the same bits
// for any thread count: work is split over independent rows or columns,
// and sums across rows are taken in a fixed order (LayerNormGrad sums
// fixed blocks of rows, then the blocks in order). Once the SIMD row and
// element-wise kernels of package kernels are available, the inner loops
// of UnaryGrad, SoftmaxGrad, LayerNormGrad and SoftmaxCELoss map onto
// them one to one.

// ---------------------------------------------------------------- UnaryGrad

// unaryGradKernel is dx = dy·f'(t) (ir.UnaryGrad): package kernels' SIMD
// backward functions for Tanh, Sigmoid, Gelu and GeluTanh; the other
// derivatives that need transcendental functions are computed in float64
// on blocks of t converted first, as the forward unary kernel does.
type unaryGradKernel struct {
	fn        ir.UnaryFn
	alpha     float64
	dy, t, dx []float32
	deriv     func(b []float64, alpha float64) // b[i] = f'(b[i]); nil: a float32 loop
	scratch   [][]float64                      // per worker
	workers   int
	split     splitter
}

func newUnaryGrad(threads int, op *ir.UnaryGrad, dy, t, dx *ir.Tensor) kernel {
	k := &unaryGradKernel{fn: op.Fn, alpha: float64(op.Alpha), dy: dy.Float32s(), t: t.Float32s(), dx: dx.Float32s(),
		workers: workersFor(threads, dx.Len())}
	switch op.Fn {
	case ir.Tanh, ir.Sigmoid, ir.Gelu, ir.GeluTanh, ir.Relu:
		// package kernels' SIMD backward functions, or a plain loop
	case ir.Erf:
		k.deriv = erfDerivBlock
	default:
		fn := op.Fn
		k.deriv = func(b []float64, alpha float64) {
			for i, v := range b {
				b[i] = ir.UnaryDerivative(fn, alpha, v)
			}
		}
	}
	if k.deriv != nil {
		for range k.workers {
			k.scratch = append(k.scratch, make([]float64, blockLen))
		}
	}
	k.split = splitter{units: len(k.dx), align: blockLen, share: k.share}
	return k
}

// erfDerivBlock: erf'(x) = 2/√π·exp(−x²).
func erfDerivBlock(b []float64, _ float64) {
	for i, x := range b {
		b[i] = (2 / math.SqrtPi) * exp64(-x*x)
	}
}

func (k *unaryGradKernel) run() error {
	k.split.run(k.workers)
	return nil
}

// share computes elements [lo, hi).
func (k *unaryGradKernel) share(lo, hi, w int) {
	dx, dy, t := k.dx[lo:hi], k.dy[lo:hi], k.t[lo:hi]
	if k.deriv != nil {
		buf := k.scratch[w]
		for off := 0; off < len(t); off += len(buf) {
			n := min(len(buf), len(t)-off)
			b := buf[:n]
			for i, v := range t[off : off+n] {
				b[i] = float64(v)
			}
			k.deriv(b, k.alpha)
			g, out := dy[off:off+n], dx[off:off+n]
			for i, d := range b {
				out[i] = float32(float64(g[i]) * d)
			}
		}
		return
	}
	switch k.fn {
	case ir.Tanh:
		kernels.TanhBackwardF32(dx, t, dy)
	case ir.Sigmoid:
		kernels.SigmoidBackwardF32(dx, t, dy)
	case ir.Gelu:
		kernels.GeluBackwardF32(dx, t, dy)
	case ir.GeluTanh:
		kernels.GeluTanhBackwardF32(dx, t, dy)
	case ir.Relu:
		reluGrad(dx, dy, t)
	}
}

// reluGrad sets dx[i] = dy[i] where y[i] > 0, else +0 (y −0, negative or
// NaN). It works on the bits, without branches, which random signs would
// mispredict.
func reluGrad(dx, dy, y []float32) {
	dx, dy = dx[:len(y)], dy[:len(y)]
	for i, v := range y {
		b := math.Float32bits(v)
		// b|(b−1) has the sign bit for +0 (b−1 wraps), −0 and the
		// negatives; the second term is all ones for the NaNs.
		pos := uint32(int32(b|(b-1))>>31) | uint32(int32(0x7f800000-(b&0x7fffffff))>>31)
		dx[i] = math.Float32frombits(math.Float32bits(dy[i]) &^ pos)
	}
}

// ---------------------------------------------------------------- SoftmaxGrad

// softmaxGradKernel is ir.SoftmaxGrad over the last axis:
// kernels.SoftmaxBackward or LogSoftmaxBackward (rows split across
// threads, same bits for any count).
type softmaxGradKernel struct {
	threads   int
	log       bool
	n         int // row length
	dy, y, dx []float32
}

func (k *softmaxGradKernel) run() error {
	if k.n == 0 {
		return nil
	}
	rows := len(k.dx) / k.n
	if k.log {
		kernels.LogSoftmaxBackward(k.threads, rows, k.n, k.dx, k.n, k.y, k.n, k.dy, k.n)
	} else {
		kernels.SoftmaxBackward(k.threads, rows, k.n, k.dx, k.n, k.y, k.n, k.dy, k.n)
	}
	return nil
}

// ---------------------------------------------------------------- LayerNormGrad

// layerNormGradRows is the block of rows whose dscale/dbias partial sums
// are taken together; the blocks are then summed in order, so the result
// does not depend on the thread count.
const layerNormGradRows = 64

// layerNormGradKernel is ir.LayerNormGrad over the trailing axes with a
// scale of exactly the normalized shape: kernels.LayerNormBackward when dx
// is wanted; otherwise (only the parameter gradients) one pass over dy
// and x taking the partial dscale/dbias sums of each block of rows, and a
// second, small pass summing the blocks.
type layerNormGradKernel struct {
	threads           int
	n, rows           int
	dy, x, scale      []float32
	mean, inv         []float32
	dx, dscale, dbias []float32 // outputs; nil when nobody reads them
	scratch           []float32 // the parameter gradient nobody reads
	partial           []float64 // without dx, per block: n sums of dy·x̂, then n of dy
	phase             int
}

func newLayerNormGrad(threads int, op *ir.LayerNormGrad, in, out []*ir.Tensor) kernel {
	x := in[1]
	n := x.Shape()[op.Axis:].Size()
	rows := x.Shape()[:op.Axis].Size()
	k := &layerNormGradKernel{threads: threads, n: n, rows: rows, dy: in[0].Float32s(), x: x.Float32s(), scale: in[2].Float32s(),
		mean: in[3].Float32s(), inv: in[4].Float32s()}
	if out[0] != nil {
		k.dx = out[0].Float32s()
	}
	if len(out) > 1 && out[1] != nil {
		k.dscale = out[1].Float32s()
	}
	if len(out) > 2 && out[2] != nil {
		k.dbias = out[2].Float32s()
	}
	switch {
	case k.dx != nil && (k.dscale == nil) != (k.dbias == nil):
		k.scratch = make([]float32, n)
	case k.dx == nil && (k.dscale != nil || k.dbias != nil):
		blocks := (rows + layerNormGradRows - 1) / layerNormGradRows
		k.partial = make([]float64, blocks*2*n)
	}
	return k
}

func (k *layerNormGradKernel) run() error {
	if k.n == 0 || k.rows == 0 {
		return nil
	}
	if k.dx != nil {
		// kernels.LayerNormBackward wants both parameter gradients or
		// neither: a missing one goes to scratch.
		dscale, dbias := k.dscale, k.dbias
		if dscale != nil || dbias != nil {
			if dscale == nil {
				dscale = k.scratch
			}
			if dbias == nil {
				dbias = k.scratch
			}
			clear(dscale)
			clear(dbias)
		}
		kernels.LayerNormBackward(k.threads, k.rows, k.n, k.dx, k.n, k.dy, k.n, k.x, k.n, k.scale, k.mean, k.inv, dscale, dbias)
		return nil
	}
	k.phase = 0
	kernels.Parallel(workersFor(k.threads, k.rows*k.n), k)
	if k.partial != nil {
		k.phase = 1
		kernels.Parallel(workersFor(k.threads, len(k.partial)), k)
	}
	return nil
}

func (k *layerNormGradKernel) Run(w, workers int) {
	n := k.n
	blocks := (k.rows + layerNormGradRows - 1) / layerNormGradRows
	if k.phase == 1 {
		// Sum the blocks' partial sums, columns split across workers.
		lo, hi := kernels.Split(n, w, workers, 16)
		for j := lo; j < hi; j++ {
			var gs, bs float64
			for b := range blocks {
				p := k.partial[b*2*n:]
				gs += p[j]
				bs += p[n+j]
			}
			if k.dscale != nil {
				k.dscale[j] = float32(gs)
			}
			if k.dbias != nil {
				k.dbias[j] = float32(bs)
			}
		}
		return
	}
	// Partial sums of dy·x̂ and dy per block of rows.
	blo, bhi := kernels.Split(blocks, w, workers, 1)
	for b := blo; b < bhi; b++ {
		pg, pb := k.partial[b*2*n:b*2*n+n], k.partial[b*2*n+n:(b+1)*2*n]
		clear(pg)
		clear(pb)
		for r := b * layerNormGradRows; r < min(k.rows, (b+1)*layerNormGradRows); r++ {
			x, dy := k.x[r*n:(r+1)*n], k.dy[r*n:(r+1)*n]
			mean, inv := k.mean[r], k.inv[r]
			for i, v := range x {
				xh := (v - mean) * inv
				pg[i] += float64(dy[i]) * float64(xh)
				pb[i] += float64(dy[i])
			}
		}
	}
}

// ---------------------------------------------------------------- ScatterAddRows

// scatterAddRowsKernel is ir.ScatterAddRows: the output starts as the
// base (or zeros) and the slices of dy are added at their rows in index
// order; the output's rows are split across workers (each one's rows
// whole, in memory order), and every worker walks all the indices, so
// every element sees its terms in the same order whatever the thread
// count.
type scatterAddRowsKernel struct {
	threads      int
	dy, base, y  []float32
	idx32        []int32
	idx64        []int64
	outer, rows  int
	nIdx, inner  int
	badIndex     int64
	badIndexSeen bool
}

func newScatterAddRows(threads int, op *ir.ScatterAddRows, in []*ir.Tensor, out *ir.Tensor) kernel {
	dy, idx := in[0], in[1]
	s := out.Shape()
	k := &scatterAddRowsKernel{threads: threads, dy: dy.Float32s(), y: out.Float32s(), outer: s[:op.Axis].Size(), rows: op.Rows,
		nIdx: idx.Len(), inner: s[op.Axis+1:].Size()}
	if len(in) > 2 && in[2] != nil {
		k.base = in[2].Float32s()
	}
	if idx.DType() == ir.Int32 {
		k.idx32 = idx.Int32s()
	} else {
		k.idx64 = idx.Int64s()
	}
	return k
}

func (k *scatterAddRowsKernel) index(j int) int64 {
	if k.idx32 != nil {
		return int64(k.idx32[j])
	}
	return k.idx64[j]
}

func (k *scatterAddRowsKernel) run() error {
	n := int64(k.rows)
	for j := range k.nIdx {
		if i := k.index(j); i < -n || i >= n {
			return fmt.Errorf("ScatterAddRows index %d out of range [%d, %d)", i, -n, n)
		}
	}
	kernels.Parallel(workersFor(k.threads, len(k.y)+len(k.dy)), k)
	return nil
}

func (k *scatterAddRowsKernel) Run(w, workers int) {
	rlo, rhi := kernels.Split(k.rows, w, workers, 1)
	if rlo >= rhi {
		return
	}
	in := k.inner
	inPlace := k.base != nil && len(k.y) > 0 && &k.base[0] == &k.y[0]
	for o := range k.outer {
		off, end := (o*k.rows+rlo)*in, (o*k.rows+rhi)*in
		switch dst := k.y[off:end]; {
		case inPlace:
		case k.base != nil:
			copy(dst, k.base[off:end])
		default:
			clear(dst)
		}
		for j := range k.nIdx {
			i := int(k.index(j))
			if i < 0 {
				i += k.rows
			}
			if i < rlo || i >= rhi {
				continue
			}
			dst := k.y[(o*k.rows+i)*in : (o*k.rows+i+1)*in]
			kernels.AddF32(dst, dst, k.dy[(o*k.nIdx+j)*in:(o*k.nIdx+j+1)*in])
		}
	}
}

// ---------------------------------------------------------------- SliceGrad

// sliceGradKernel is ir.SliceGrad: copy the base (or zero), then add dy at
// the sliced positions, walking dy in row-major order.
type sliceGradKernel struct {
	dy, base, y []float32
	shape       []int // dy's shape
	strides     []int // output element strides times the slice steps
	offset      int
	idx         []int
}

func newSliceGrad(op *ir.SliceGrad, in []*ir.Tensor, out *ir.Tensor) kernel {
	st := op.Shape.Strides()
	k := &sliceGradKernel{dy: in[0].Float32s(), y: out.Float32s(), shape: in[0].Shape().Clone(),
		strides: make([]int, len(st)), idx: make([]int, len(st))}
	for d := range st {
		k.strides[d] = st[d] * op.Steps[d]
		k.offset += st[d] * op.Starts[d]
	}
	if len(in) > 1 && in[1] != nil {
		k.base = in[1].Float32s()
	}
	return k
}

func (k *sliceGradKernel) run() error {
	switch {
	case k.base == nil:
		clear(k.y)
	case len(k.y) > 0 && &k.base[0] == &k.y[0]: // in place
	default:
		copy(k.y, k.base)
	}
	if len(k.dy) == 0 {
		return nil
	}
	r := len(k.shape)
	if r == 0 {
		k.y[k.offset] += k.dy[0]
		return nil
	}
	clear(k.idx)
	inner, step := k.shape[r-1], k.strides[r-1]
	base := k.offset
	for o := 0; o < len(k.dy); o += inner {
		row := k.dy[o : o+inner]
		if step == 1 {
			dst := k.y[base : base+inner]
			for i, v := range row {
				dst[i] += v
			}
		} else {
			for i, v := range row {
				k.y[base+i*step] += v
			}
		}
		d := r - 2
		for ; d >= 0; d-- {
			k.idx[d]++
			base += k.strides[d]
			if k.idx[d] < k.shape[d] {
				break
			}
			base -= k.strides[d] * k.shape[d]
			k.idx[d] = 0
		}
		if d < 0 {
			break
		}
	}
	return nil
}

// ---------------------------------------------------------------- SoftmaxCELoss

// crossEntropyKernel is ir.SoftmaxCELoss: kernels.SoftmaxCrossEntropy,
// which reads every row of logits once for the loss and the gradient (in
// place over the logits when the plan says so), rows split across threads
// with the row losses summed in order. The targets are checked first (an
// error, not a panic, for one out of range) and copied to int32 with the
// ignored ones mapped to -1. With the op's denominator input the loss and
// the gradient divide by it instead of by the count of targets; the
// two-input form divides by the count exactly as before.
type crossEntropyKernel struct {
	threads  int
	c        int // classes
	ignore   int64
	logits   []float32
	targets  []int64
	targets2 []int32
	target32 []int32   // the targets as the kernel takes them
	denom    []float32 // the denominator input (one element), nil without one
	loss     []float32 // one element
	dlogits  []float32 // nil when nobody reads the gradient
}

// ignoredTarget is what an ignored target becomes in target32.
const ignoredTarget = -1

func newCrossEntropy(threads int, op *ir.SoftmaxCELoss, in, out []*ir.Tensor) kernel {
	logits, targets := in[0], in[1]
	s := logits.Shape()
	k := &crossEntropyKernel{threads: threads, ignore: op.IgnoreIndex, c: s[len(s)-1], logits: logits.Float32s(),
		loss: out[0].Float32s(), target32: make([]int32, targets.Len())}
	if len(out) > 1 && out[1] != nil {
		k.dlogits = out[1].Float32s()
	}
	if len(in) > 2 && in[2] != nil {
		k.denom = in[2].Float32s()
	}
	if targets.DType() == ir.Int32 {
		k.targets2 = targets.Int32s()
	} else {
		k.targets = targets.Int64s()
	}
	return k
}

func (k *crossEntropyKernel) target(r int) int64 {
	if k.targets2 != nil {
		return int64(k.targets2[r])
	}
	return k.targets[r]
}

func (k *crossEntropyKernel) run() error {
	count := 0
	for r := range k.target32 {
		t := k.target(r)
		if t == k.ignore {
			k.target32[r] = ignoredTarget
			continue
		}
		if t < 0 || t >= int64(k.c) {
			return fmt.Errorf("target %d at position %d out of range [0, %d) (ignore index %d)", t, r, k.c, k.ignore)
		}
		k.target32[r] = int32(t)
		count++
	}
	div := float64(count)
	if k.denom != nil {
		div = float64(k.denom[0])
	}
	var scale float32
	if div != 0 {
		scale = float32(1 / div)
	}
	rows := len(k.target32)
	sum, _ := kernels.SoftmaxCrossEntropy(k.threads, rows, k.c, k.logits, k.c, k.target32, ignoredTarget, k.dlogits, k.c, scale)
	if div != 0 {
		sum /= div
	} else {
		sum = 0 // D = 0: the step has no target
	}
	k.loss[0] = float32(sum)
	return nil
}

// ---------------------------------------------------------------- Reduce

// reduceKernel is a float32 ReduceSum or ReduceMean whose reduced axes are
// contiguous once size-1 axes are dropped: the input is viewed as
// [outer, reduced, inner] and every output element sums its column of the
// reduced axis in order, in float64.
type reduceKernel struct {
	threads           int
	mean              bool
	x, y              []float32
	outer, red, inner int
	acc               []float64 // per worker, inner float64 accumulators
}

// newReduce returns nil when the reduced axes are not one contiguous block.
func newReduce(threads int, op *ir.Reduce, x, y *ir.Tensor) kernel {
	if op.Fn != ir.ReduceSum && op.Fn != ir.ReduceMean {
		return nil
	}
	s := x.Shape()
	reduced := make([]bool, len(s))
	for _, a := range op.Axes {
		reduced[a] = true
	}
	// Walk the non-unit axes: kept ones, then reduced ones, then kept.
	outer, red, inner := 1, 1, 1
	stage := 0 // 0 outer, 1 reduced, 2 inner
	for d, n := range s {
		if n == 1 {
			continue
		}
		switch {
		case reduced[d] && stage == 0:
			stage = 1
		case reduced[d] && stage == 2:
			return newReduceAround(threads, op, x, y, reduced)
		case !reduced[d] && stage == 1:
			stage = 2
		}
		switch stage {
		case 0:
			outer *= n
		case 1:
			red *= n
		default:
			inner *= n
		}
	}
	if stage == 0 { // no axis of size > 1 reduced: a copy
		inner, outer = outer, 1
	}
	return &reduceKernel{threads: threads, mean: op.Fn == ir.ReduceMean, x: x.Float32s(), y: y.Float32s(),
		outer: outer, red: red, inner: inner, acc: make([]float64, max(1, threads)*inner)}
}

func (k *reduceKernel) run() error {
	if len(k.y) == 0 {
		return nil
	}
	kernels.Parallel(workersFor(k.threads, len(k.x)), k)
	return nil
}

func (k *reduceKernel) Run(w, workers int) {
	scale := 1.0
	if k.mean {
		scale = 1 / float64(k.red)
	}
	if k.inner == 1 {
		// Sums of contiguous runs: outer rows split across workers.
		lo, hi := kernels.Split(k.outer, w, workers, 1)
		for o := lo; o < hi; o++ {
			var s float64
			for _, v := range k.x[o*k.red : (o+1)*k.red] {
				s += float64(v)
			}
			k.y[o] = float32(s * scale)
		}
		return
	}
	// Column sums: split the inner columns (or, with few of them and many
	// outer blocks, the outer blocks) across workers.
	acc := k.acc[w*k.inner : (w+1)*k.inner]
	olo, ohi, ilo, ihi := 0, k.outer, 0, k.inner
	if k.outer >= workers && k.inner < 256*workers {
		olo, ohi = kernels.Split(k.outer, w, workers, 1)
	} else {
		ilo, ihi = kernels.Split(k.inner, w, workers, 16)
	}
	for o := olo; o < ohi; o++ {
		a := acc[ilo:ihi]
		clear(a)
		kernels.ColumnSumsF64(a, k.x[o*k.red*k.inner+ilo:], k.inner, k.red)
		dst := k.y[o*k.inner+ilo : o*k.inner+ihi]
		for i, s := range a {
			dst[i] = float32(s * scale)
		}
	}
}

// reduceAroundKernel sums the axes before and after a run of kept ones:
// y[c] = Σ_a Σ_b x[a][c][b] (a convolution's bias gradient, over the
// batch and the positions). Each worker sums whole outputs, in one order,
// so the result does not depend on the thread count.
type reduceAroundKernel struct {
	threads int
	mean    bool
	x, y    []float32
	a, c, b int
}

// newReduceAround is the kernel of a reduction whose non-unit axes are
// reduced, then kept, then reduced (nil for other patterns).
func newReduceAround(threads int, op *ir.Reduce, x, y *ir.Tensor, reduced []bool) kernel {
	a, c, b := 1, 1, 1
	stage := 0 // 0 the leading reduced axes, 1 kept, 2 trailing reduced
	for d, n := range x.Shape() {
		if n == 1 {
			continue
		}
		switch {
		case stage == 0 && !reduced[d], stage == 1 && reduced[d]:
			stage++
		case stage == 2 && !reduced[d]:
			return nil
		}
		switch stage {
		case 0:
			a *= n
		case 1:
			c *= n
		default:
			b *= n
		}
	}
	return &reduceAroundKernel{threads: threads, mean: op.Fn == ir.ReduceMean, x: x.Float32s(), y: y.Float32s(), a: a, c: c, b: b}
}

func (k *reduceAroundKernel) run() error {
	if len(k.y) == 0 {
		return nil
	}
	kernels.Parallel(workersFor(k.threads, len(k.x)), k)
	return nil
}

func (k *reduceAroundKernel) Run(w, workers int) {
	scale := 1.0
	if k.mean {
		scale = 1 / float64(k.a*k.b)
	}
	lo, hi := kernels.Split(k.c, w, workers, 1)
	for ci := lo; ci < hi; ci++ {
		var s float64
		for ai := range k.a {
			for _, v := range k.x[(ai*k.c+ci)*k.b : (ai*k.c+ci+1)*k.b] {
				s += float64(v)
			}
		}
		k.y[ci] = float32(s * scale)
	}
}

// ---------------------------------------------------------------- Expand

// newExpand is Expand as a strided copy: stride 0 along broadcast axes.
func newExpand(threads int, x, y *ir.Tensor) kernel {
	k := &stridedKernel{x: x.Bytes(), y: y.Bytes(), width: x.DType().Size(), shape: y.Shape().Clone(),
		strides: ir.BroadcastStrides(x.Shape(), y.Shape())}
	return k.finish(threads)
}

// trainingKernel picks the kernel for the ops of training graphs (nil: the
// op or dtype has none here, kernelFor goes on).
func (c *compiler) trainingKernel(n *ir.Node, in, out []*ir.Tensor) kernel {
	f32 := func(ts ...*ir.Tensor) bool {
		for _, t := range ts {
			if t != nil && t.DType() != ir.Float32 {
				return false
			}
		}
		return true
	}
	switch op := n.Op.(type) {
	case *ir.Reduce:
		if f32(in[0]) {
			if k := newReduce(c.threads, op, in[0], out[0]); k != nil {
				return k
			}
		}
	case *ir.Expand:
		return newExpand(c.threads, in[0], out[0])
	case *ir.UnaryGrad:
		if f32(in...) {
			return newUnaryGrad(c.threads, op, in[0], in[1], out[0])
		}
	case *ir.SoftmaxGrad:
		if f32(in...) && op.Axis == len(in[0].Shape())-1 {
			return &softmaxGradKernel{threads: c.threads, log: op.Log, n: in[0].Shape()[op.Axis],
				dy: in[0].Float32s(), y: in[1].Float32s(), dx: out[0].Float32s()}
		}
	case *ir.LayerNormGrad:
		if f32(in...) && in[2].Shape().Equal(in[1].Shape()[op.Axis:]) {
			return newLayerNormGrad(c.threads, op, in, out)
		}
	case *ir.ScatterAddRows:
		if f32(in[0]) {
			return newScatterAddRows(c.threads, op, in, out[0])
		}
	case *ir.SliceGrad:
		if f32(in...) {
			return newSliceGrad(op, in, out[0])
		}
	case *ir.SoftmaxCELoss:
		if f32(in[0]) {
			return newCrossEntropy(c.threads, op, in, out)
		}
	}
	return nil
}
