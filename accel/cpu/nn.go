package cpu

import (
	"fmt"
	"unsafe"

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

// stridedKernel copies a strided view of its input into a dense output,
// for any element width: it walks the output in order, reading the input
// at offset + Σ index·stride. Transpose (permuted strides) and Slice
// (scaled strides and a start offset) are both this.
type stridedKernel struct {
	x, y    []byte
	width   int
	shape   []int   // output shape
	strides []int   // input element strides, one per output axis
	offset  int     // input element of the output's first
	idx     [][]int // per worker
	workers int
	split   splitter
}

// finish sets up the per-worker state once shape and strides are known;
// the work is split by output rows (the innermost dimension).
func (k *stridedKernel) finish(threads int) kernel {
	n := ir.Shape(k.shape).Size()
	k.workers = workersFor(threads, n)
	for range k.workers {
		k.idx = append(k.idx, make([]int, len(k.shape)))
	}
	rows := 1
	if len(k.shape) > 0 {
		rows = ir.Shape(k.shape[:len(k.shape)-1]).Size()
		if k.shape[len(k.shape)-1] == 0 {
			rows = 0
		}
	}
	k.split = splitter{units: rows, align: 1, share: k.share}
	return k
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

func (k *stridedKernel) run() error {
	if len(k.shape) == 0 {
		copy(k.y, k.x[k.offset*k.width:(k.offset+1)*k.width])
		return nil
	}
	k.split.run(k.workers)
	return nil
}

// share copies output rows [lo, hi).
func (k *stridedKernel) share(lo, hi, w int) {
	r := len(k.shape)
	inner := k.shape[r-1]
	idx := k.idx[w]
	// idx and the input offset of row lo
	base := k.offset
	row := lo
	for d := r - 2; d >= 0; d-- {
		idx[d] = row % k.shape[d]
		row /= k.shape[d]
		base += idx[d] * k.strides[d]
	}
	y0, y1 := lo*inner, hi*inner
	switch k.width {
	case 4:
		gatherRows(words[uint32](k.y)[y0:y1], words[uint32](k.x), base, k.shape, k.strides, idx)
	case 8:
		gatherRows(words[uint64](k.y)[y0:y1], words[uint64](k.x), base, k.shape, k.strides, idx)
	case 2:
		gatherRows(words[uint16](k.y)[y0:y1], words[uint16](k.x), base, k.shape, k.strides, idx)
	default:
		gatherRows(k.y[y0:y1], k.x, base, k.shape, k.strides, idx)
	}
}

// words views a byte buffer (8-byte aligned, from the arena or a tensor)
// as a slice of W.
func words[W uint16 | uint32 | uint64](b []byte) []W {
	var z W
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*W)(unsafe.Pointer(&b[0])), len(b)/int(unsafe.Sizeof(z)))
}

// gatherRows fills y, whole rows of the output (row-major over shape,
// rank ≥ 1), with x[base + Σ index·stride]; idx (len(shape)) and base
// describe the first row and advance like an odometer. Strides may be
// negative (a reversed slice).
func gatherRows[W uint8 | uint16 | uint32 | uint64](y, x []W, base int, shape, strides, idx []int) {
	r := len(shape)
	inner, step := shape[r-1], strides[r-1]
	for o := 0; o < len(y); o += inner {
		row := y[o : o+inner]
		for i := range row {
			row[i] = x[base+i*step]
		}
		for d := r - 2; d >= 0; d-- {
			idx[d]++
			base += strides[d]
			if idx[d] < shape[d] {
				break
			}
			base -= strides[d] * shape[d]
			idx[d] = 0
		}
	}
}
