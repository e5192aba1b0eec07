package cpu

import (
	"fmt"

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
// grown on first use. Where each column element comes from (an offset in
// the input channel, the same for every image, group and channel) is
// kept in one table per geometry when it is small, else computed per
// chunk. ConvTranspose imports as ConvGradInput.

// convChunkFloats bounds the im2col columns of one chunk (8 MiB; a
// variable for the tests).
var convChunkFloats = 2 << 20

// convOffsetsShared bounds the offset tables kept whole (16 MiB): a
// larger one is computed chunk by chunk instead (a variable for the
// tests).
var convOffsetsShared = 4 << 20

// convScratch is what the conv kernels of one executable share: the
// im2col buffer, the buffer of a chunk's offsets, and the whole offset
// tables of the geometries small enough to keep (a convolution and its
// two gradients have one).
type convScratch struct {
	buf    []float32
	offs   []int32
	tables map[string][]int32
}

func (s *convScratch) get(n int) []float32 {
	if len(s.buf) < n {
		s.buf = make([]float32, n)
	}
	return s.buf[:n]
}

func (s *convScratch) getOffsets(n int) []int32 {
	if len(s.offs) < n {
		s.offs = make([]int32, n)
	}
	return s.offs[:n]
}

// convGeom is a convolution's shapes, flattened: N images of C channels
// over spatial dims in, M output channels over out, kernel kern, groups
// of cg input and mg output channels.
type convGeom struct {
	op            ir.Conv
	n, c, m       int
	cg, mg        int
	in, out, kern ir.Shape
	inSize        int // positions of an input channel
	outSize       int // O: positions of an output channel
	kSize         int // K: positions of the kernel
	chunk         int // output positions per im2col chunk
	// direct: a 1×1 kernel with unit strides and no padding reads the
	// input itself as its columns.
	direct  bool
	table   []int32 // offsets over every output position, when kept whole
	scratch *convScratch
}

func newConvGeom(op ir.Conv, x, w, y ir.Shape, scratch *convScratch) *convGeom {
	g := &convGeom{op: op, n: x[0], c: x[1], m: w[0], in: x[2:], out: y[2:], kern: w[2:], scratch: scratch}
	g.cg, g.mg = g.c/op.Group, g.m/op.Group
	g.inSize, g.outSize, g.kSize = g.in.Size(), g.out.Size(), g.kern.Size()
	rows := max(g.cg*g.kSize, 1)
	g.chunk = min(g.outSize, max(64, convChunkFloats/rows))
	g.direct = g.kSize == 1
	for d := range g.in {
		g.direct = g.direct && op.Strides[d] == 1 && op.Pads[d] == 0 && op.Pads[len(g.in)+d] == 0 && g.in[d] == g.out[d]
	}
	if !g.direct && g.kSize*g.outSize <= convOffsetsShared {
		key := fmt.Sprint(g.in, g.out, g.kern, op.Strides, op.Pads, op.Dilations)
		if g.table = scratch.tables[key]; g.table == nil {
			g.table = make([]int32, g.kSize*g.outSize)
			g.offsets(g.table, 0, g.outSize)
			if scratch.tables == nil {
				scratch.tables = map[string][]int32{}
			}
			scratch.tables[key] = g.table
		}
	}
	return g
}

// offsets fills offs[kp·(o1−o0) + o−o0] with the input position kernel
// position kp of output position o ∈ [o0, o1) reads, −1 in the padding.
// They are the same for every image, group and channel.
func (g *convGeom) offsets(offs []int32, o0, o1 int) {
	k := len(g.in)
	outPos := make([]int, k)
	kPos := make([]int, k)
	inStr := g.in.Strides()
	width := o1 - o0
	for kp := range g.kSize {
		unflattenInts(kp, g.kern, kPos)
		for o := o0; o < o1; o++ {
			unflattenInts(o, g.out, outPos)
			off := 0
			for d := range k {
				p := outPos[d]*g.op.Strides[d] - g.op.Pads[d] + kPos[d]*g.op.Dilations[d]
				if p < 0 || p >= g.in[d] {
					off = -1
					break
				}
				off += p * inStr[d]
			}
			offs[kp*width+o-o0] = int32(off)
		}
	}
}

// chunkOffsets are the offsets of output positions [o0, o1) and the
// distance between kernel positions in them: a window of the whole table,
// or computed into the scratch.
func (g *convGeom) chunkOffsets(o0, o1 int) ([]int32, int) {
	if g.table != nil {
		return g.table[o0:], g.outSize
	}
	offs := g.scratch.getOffsets(g.kSize * (o1 - o0))
	g.offsets(offs, o0, o1)
	return offs, o1 - o0
}

// im2col fills col [cg·K, width] with the windows of a chunk of width
// output positions over channels x [cg][inSize], offs and stride from
// chunkOffsets.
func (g *convGeom) im2col(col, x []float32, offs []int32, stride, width int) {
	for ic := range g.cg {
		xs := x[ic*g.inSize : (ic+1)*g.inSize]
		for kp := range g.kSize {
			row := col[(ic*g.kSize+kp)*width : (ic*g.kSize+kp+1)*width]
			for j, off := range offs[kp*stride : kp*stride+width] {
				if off >= 0 {
					row[j] = xs[off]
				} else {
					row[j] = 0
				}
			}
		}
	}
}

// col2im adds col [cg·K, width] into the channels dx [cg][inSize] at the
// windows' positions (im2col's arguments).
func (g *convGeom) col2im(dx, col []float32, offs []int32, stride, width int) {
	for ic := range g.cg {
		xs := dx[ic*g.inSize : (ic+1)*g.inSize]
		for kp := range g.kSize {
			row := col[(ic*g.kSize+kp)*width : (ic*g.kSize+kp+1)*width]
			for j, off := range offs[kp*stride : kp*stride+width] {
				if off >= 0 {
					xs[off] += row[j]
				}
			}
		}
	}
}

// A depthwise convolution (one input channel a group) sums only the K
// products of each output: computed directly, without columns, whose
// product would be one row a channel. y, w and x (dy, dx, dw) are the
// group's; offs and stride come from chunkOffsets for [o0, o1).
func (g *convGeom) depthwise(y, w, x []float32, offs []int32, stride, o0, o1 int) {
	for oc := range g.mg {
		row := y[oc*g.outSize+o0 : oc*g.outSize+o1]
		for kp := range g.kSize {
			wv := w[oc*g.kSize+kp]
			for j, off := range offs[kp*stride : kp*stride+len(row)] {
				if off >= 0 {
					row[j] += wv * x[off]
				}
			}
		}
	}
}

func (g *convGeom) depthwiseGradInput(dx, w, dy []float32, offs []int32, stride, o0, o1 int) {
	for oc := range g.mg {
		row := dy[oc*g.outSize+o0 : oc*g.outSize+o1]
		for kp := range g.kSize {
			wv := w[oc*g.kSize+kp]
			for j, off := range offs[kp*stride : kp*stride+len(row)] {
				if off >= 0 {
					dx[off] += wv * row[j]
				}
			}
		}
	}
}

func (g *convGeom) depthwiseGradWeight(dw, dy, x []float32, offs []int32, stride, o0, o1 int) {
	for oc := range g.mg {
		row := dy[oc*g.outSize+o0 : oc*g.outSize+o1]
		for kp := range g.kSize {
			var s float32
			for j, off := range offs[kp*stride : kp*stride+len(row)] {
				if off >= 0 {
					s += row[j] * x[off]
				}
			}
			dw[oc*g.kSize+kp] += s
		}
	}
}

// empty reports whether the products are of empty matrices (no input
// channels or kernel positions, no output positions or channels), which
// the GEMM does not take.
func (g *convGeom) empty() bool { return g.cg*g.kSize == 0 || g.outSize == 0 || g.mg == 0 }

func unflattenInts(i int, s ir.Shape, pos []int) {
	for d := len(s) - 1; d >= 0; d-- {
		pos[d] = i % s[d]
		i /= s[d]
	}
}

// convKernel computes Conv: y = conv(x, w) + bias.
type convKernel struct {
	g          *convGeom
	threads    int
	x, w, b, y []float32
}

func newConvKernel(threads int, scratch *convScratch, op *ir.Conv, in, out []*ir.Tensor) kernel {
	k := &convKernel{g: newConvGeom(*op, in[0].Shape(), in[1].Shape(), out[0].Shape(), scratch), threads: threads,
		x: in[0].Float32s(), w: in[1].Float32s(), y: out[0].Float32s()}
	if len(in) > 2 && in[2] != nil {
		k.b = in[2].Float32s()
	}
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
	for n := range g.n {
		for grp := range g.op.Group {
			x := k.x[(n*g.c+grp*g.cg)*g.inSize:]
			w := k.w[grp*g.mg*rows:]
			y := k.y[(n*g.m+grp*g.mg)*g.outSize:]
			beta := float32(0)
			if k.b != nil {
				for oc := range g.mg {
					row := y[oc*g.outSize : (oc+1)*g.outSize]
					for i := range row {
						row[i] = k.b[grp*g.mg+oc]
					}
				}
				beta = 1
			}
			if g.direct {
				kernels.Sgemm(k.threads, false, false, g.mg, g.outSize, rows, 1, w, rows, x, g.inSize, beta, y, g.outSize)
				continue
			}
			if g.cg == 1 && beta == 0 {
				clear(y[:g.mg*g.outSize])
			}
			for o0 := 0; o0 < g.outSize; o0 += g.chunk {
				o1 := min(o0+g.chunk, g.outSize)
				offs, stride := g.chunkOffsets(o0, o1)
				if g.cg == 1 {
					g.depthwise(y, w, x, offs, stride, o0, o1)
					continue
				}
				col := g.scratch.get(rows * (o1 - o0))
				g.im2col(col, x, offs, stride, o1-o0)
				kernels.Sgemm(k.threads, false, false, g.mg, o1-o0, rows, 1, w, rows, col, o1-o0, beta, y[o0:], g.outSize)
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
}

func newConvGradInputKernel(threads int, scratch *convScratch, op *ir.ConvGradInput, in, out []*ir.Tensor) kernel {
	return &convGradInputKernel{g: newConvGeom(op.Conv, op.InputShape, in[1].Shape(), in[0].Shape(), scratch), threads: threads,
		dy: in[0].Float32s(), w: in[1].Float32s(), dx: out[0].Float32s()}
}

func (k *convGradInputKernel) run() error {
	g := k.g
	rows := g.cg * g.kSize
	if g.empty() {
		clear(k.dx) // no output depends on the input
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
				offs, stride := g.chunkOffsets(o0, o1)
				if g.cg == 1 {
					g.depthwiseGradInput(dx, w, dy, offs, stride, o0, o1)
					continue
				}
				col := g.scratch.get(rows * (o1 - o0))
				kernels.Sgemm(k.threads, true, false, rows, o1-o0, g.mg, 1, w, rows, dy[o0:], g.outSize, 0, col, o1-o0)
				g.col2im(dx, col, offs, stride, o1-o0)
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
}

func newConvGradWeightKernel(threads int, scratch *convScratch, op *ir.ConvGradWeight, in, out []*ir.Tensor) kernel {
	return &convGradWeightKernel{g: newConvGeom(op.Conv, in[1].Shape(), op.WeightShape, in[0].Shape(), scratch), threads: threads,
		dy: in[0].Float32s(), x: in[1].Float32s(), dw: out[0].Float32s()}
}

func (k *convGradWeightKernel) run() error {
	g := k.g
	rows := g.cg * g.kSize
	if g.empty() {
		clear(k.dw) // no output depends on the weights
		return nil
	}
	for grp := range g.op.Group {
		dw := k.dw[grp*g.mg*rows : (grp+1)*g.mg*rows]
		beta := float32(0)
		for n := range g.n {
			x := k.x[(n*g.c+grp*g.cg)*g.inSize:]
			dy := k.dy[(n*g.m+grp*g.mg)*g.outSize:]
			if g.direct {
				kernels.Sgemm(k.threads, false, true, g.mg, rows, g.outSize, 1, dy, g.outSize, x, g.inSize, beta, dw, rows)
				beta = 1
				continue
			}
			for o0 := 0; o0 < g.outSize; o0 += g.chunk {
				o1 := min(o0+g.chunk, g.outSize)
				offs, stride := g.chunkOffsets(o0, o1)
				if g.cg == 1 {
					if beta == 0 {
						clear(dw)
					}
					g.depthwiseGradWeight(dw, dy, x, offs, stride, o0, o1)
					beta = 1
					continue
				}
				col := g.scratch.get(rows * (o1 - o0))
				g.im2col(col, x, offs, stride, o1-o0)
				kernels.Sgemm(k.threads, false, true, g.mg, rows, o1-o0, 1, dy[o0:], g.outSize, col, o1-o0, beta, dw, rows)
				beta = 1
			}
		}
		if beta == 0 { // no images or no output positions
			clear(dw)
		}
	}
	return nil
}
