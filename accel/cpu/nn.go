package cpu

import (
	"fmt"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// softmaxKernel is a float32 Softmax (or LogSoftmax) over the last axis,
// rows split across workers (simd.go).
type softmaxKernel struct {
	x, y    []float32
	n       int
	log     bool
	workers int
	split   splitter
}

func newSoftmax(threads int, op *ir.Softmax, x, y *ir.Tensor) kernel {
	s := x.Shape()
	n := s[len(s)-1]
	k := &softmaxKernel{x: x.Float32s(), y: y.Float32s(), n: n, log: op.Log, workers: workersFor(threads, x.Len())}
	if n > 0 {
		k.split = splitter{units: x.Len() / n, align: 1, share: k.share}
	}
	return k
}

func (k *softmaxKernel) run() error {
	if k.n > 0 {
		k.split.run(k.workers)
	}
	return nil
}

func (k *softmaxKernel) share(lo, hi, w int) {
	n := k.n
	softmaxRows(k.y[lo*n:hi*n], k.x[lo*n:hi*n], hi-lo, n, k.log)
}

// layerNormKernel is a float32 LayerNorm over the trailing axes with
// scale (and bias) of exactly the normalized shape: kernels.LayerNorm,
// rows split across threads, each row's statistics summed in float32
// vector lanes (two passes, so no cancellation when |mean| >> std) and
// finished in float64. A row's result does not depend on the thread count.
type layerNormKernel struct {
	threads      int
	rows, n      int
	x, y         []float32
	scale, bias  []float32 // bias is zeros when the node has none
	mean, invStd []float32 // nil when the node does not output them
	eps          float32
}

func newLayerNorm(threads int, op *ir.LayerNorm, in, out []*ir.Tensor) kernel {
	n := in[0].Shape()[op.Axis:].Size()
	k := &layerNormKernel{threads: threads, n: n, x: in[0].Float32s(), y: out[0].Float32s(),
		scale: in[1].Float32s(), eps: op.Epsilon}
	if n > 0 {
		k.rows = in[0].Len() / n
	}
	if len(in) > 2 && in[2] != nil {
		k.bias = in[2].Float32s()
	} else {
		k.bias = make([]float32, n)
	}
	if len(out) > 1 && out[1] != nil {
		k.mean = out[1].Float32s()
	}
	if len(out) > 2 && out[2] != nil {
		k.invStd = out[2].Float32s()
	}
	return k
}

func (k *layerNormKernel) run() error {
	kernels.LayerNorm(k.threads, k.rows, k.n, k.y, k.n, k.x, k.n, k.scale, k.bias, k.eps, k.mean, k.invStd)
	return nil
}

// gatherKernel copies slices along an axis by index, any dtype (the
// embedding lookup when the axis is 0).
type gatherKernel struct {
	data, out []byte
	idx32     []int32
	idx64     []int64
	outer, n  int
	inner     int // bytes per slice
	nIdx      int
}

func newGather(op *ir.Gather, data, idx, out *ir.Tensor) kernel {
	s := data.Shape()
	k := &gatherKernel{data: data.Bytes(), out: out.Bytes(), outer: s[:op.Axis].Size(), n: s[op.Axis],
		inner: s[op.Axis+1:].Size() * data.DType().Size(), nIdx: idx.Len()}
	if idx.DType() == ir.Int32 {
		k.idx32 = idx.Int32s()
	} else {
		k.idx64 = idx.Int64s()
	}
	return k
}

func (k *gatherKernel) index(j int) int {
	if k.idx32 != nil {
		return int(k.idx32[j])
	}
	return int(k.idx64[j])
}

func (k *gatherKernel) run() error {
	for j := range k.nIdx {
		if i := k.index(j); i < -k.n || i >= k.n {
			return fmt.Errorf("Gather index %d out of range [%d, %d)", i, -k.n, k.n)
		}
	}
	in := k.inner
	for o := range k.outer {
		src := k.data[o*k.n*in:]
		dst := k.out[o*k.nIdx*in:]
		for j := range k.nIdx {
			i := k.index(j)
			if i < 0 {
				i += k.n
			}
			copy(dst[j*in:(j+1)*in], src[i*in:(i+1)*in])
		}
	}
	return nil
}

func newTranspose(threads int, op *ir.Transpose, x, y *ir.Tensor) kernel {
	st := x.Shape().Strides()
	k := &stridedKernel{x: x.Bytes(), y: y.Bytes(), width: x.DType().Size(), shape: y.Shape().Clone(),
		strides: make([]int, len(op.Perm))}
	for i, p := range op.Perm {
		k.strides[i] = st[p]
	}
	return k.finish(threads)
}

// concatKernel is ir.Concat for any element type: every row of the
// output (all axes before the concatenation axis) is the inputs' rows one
// after the other, memmoves; the rows are split across workers.
type concatKernel struct {
	y       []byte
	xs      [][]byte
	chunks  []int // bytes of each input's row
	row     int   // bytes of an output row
	workers int
	split   splitter
}

func newConcat(threads int, op *ir.Concat, in []*ir.Tensor, y *ir.Tensor) kernel {
	es := y.DType().Size()
	inner := y.Shape()[op.Axis+1:].Size() * es
	k := &concatKernel{y: y.Bytes(), row: y.Shape()[op.Axis] * inner, workers: workersFor(threads, y.Len())}
	for _, x := range in {
		k.xs = append(k.xs, x.Bytes())
		k.chunks = append(k.chunks, x.Shape()[op.Axis]*inner)
	}
	k.split = splitter{units: y.Shape()[:op.Axis].Size(), align: 1, share: k.share}
	if k.row == 0 {
		k.split.units = 0
	}
	return k
}

func (k *concatKernel) run() error {
	k.split.run(k.workers)
	return nil
}

func (k *concatKernel) share(lo, hi, _ int) {
	for o := lo; o < hi; o++ {
		dst := k.y[o*k.row : (o+1)*k.row]
		for i, x := range k.xs {
			c := k.chunks[i]
			copy(dst[:c], x[o*c:(o+1)*c])
			dst = dst[c:]
		}
	}
}

func newSlice(threads int, op *ir.Slice, x, y *ir.Tensor) kernel {
	st := x.Shape().Strides()
	k := &stridedKernel{x: x.Bytes(), y: y.Bytes(), width: x.DType().Size(), shape: y.Shape().Clone(),
		strides: make([]int, len(st))}
	for d := range st {
		k.strides[d] = st[d] * op.Steps[d]
		k.offset += st[d] * op.Starts[d]
	}
	return k.finish(threads)
}
