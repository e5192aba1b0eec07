package cpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/dstune/dstune/ir"
)

// softmaxKernel is a float32 Softmax (or LogSoftmax) over the last axis.
type softmaxKernel struct {
	x, y *ir.Tensor
	log  bool
}

func (k *softmaxKernel) run() error {
	s := k.x.Shape()
	n := s[len(s)-1]
	if n == 0 {
		return nil
	}
	x, y := k.x.Float32s(), k.y.Float32s()
	for off := 0; off < len(x); off += n {
		softmaxRow(y[off:off+n], x[off:off+n], k.log)
	}
	return nil
}

// softmaxRow: y = exp(x - max) / Σ exp(x - max), or with log
// y = x - max - log Σ exp(x - max); the sum accumulates in float64.
func softmaxRow(y, x []float32, log bool) {
	y = y[:len(x)]
	m := float32(math.Inf(-1))
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - m))
		if !log {
			y[i] = float32(e)
		}
		sum += e
	}
	if log {
		ls := float32(math.Log(sum))
		for i, v := range x {
			y[i] = v - m - ls
		}
		return
	}
	inv := float32(1 / sum)
	for i := range y {
		y[i] *= inv
	}
}

// layerNormKernel is a float32 LayerNorm over the trailing axes with
// scale (and bias) of exactly the normalized shape.
type layerNormKernel struct {
	x, scale, bias, y []float32
	mean, invStd      []float32
	n                 int
	eps               float64
}

func newLayerNorm(op *ir.LayerNorm, in, out []*ir.Tensor) kernel {
	k := &layerNormKernel{x: in[0].Float32s(), scale: in[1].Float32s(), y: out[0].Float32s(),
		n: in[0].Shape()[op.Axis:].Size(), eps: float64(op.Epsilon)}
	if len(in) > 2 && in[2] != nil {
		k.bias = in[2].Float32s()
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
	n := k.n
	if n == 0 {
		return nil
	}
	for r, off := 0, 0; off < len(k.x); r, off = r+1, off+n {
		x, y := k.x[off:off+n], k.y[off:off+n]
		var sum float64
		for _, v := range x {
			sum += float64(v)
		}
		mean := sum / float64(n)
		var sq float64
		for _, v := range x {
			d := float64(v) - mean
			sq += d * d
		}
		inv := 1 / math.Sqrt(sq/float64(n)+k.eps)
		m32, i32 := float32(mean), float32(inv)
		scale := k.scale[:n]
		if k.bias != nil {
			bias := k.bias[:n]
			for i, v := range x {
				y[i] = (v-m32)*i32*scale[i] + bias[i]
			}
		} else {
			for i, v := range x {
				y[i] = (v - m32) * i32 * scale[i]
			}
		}
		if k.mean != nil {
			k.mean[r] = m32
		}
		if k.invStd != nil {
			k.invStd[r] = i32
		}
	}
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

// transposeKernel permutes axes for any element width: it walks the output
// in order, reading the input with the permuted strides.
type transposeKernel struct {
	x, y    []byte
	width   int
	shape   []int // output shape
	strides []int // input element strides, permuted to the output's axes
	idx     []int
}

func newTranspose(op *ir.Transpose, x, y *ir.Tensor) kernel {
	st := x.Shape().Strides()
	k := &transposeKernel{x: x.Bytes(), y: y.Bytes(), width: x.DType().Size(), shape: y.Shape().Clone(),
		strides: make([]int, len(op.Perm)), idx: make([]int, len(op.Perm))}
	for i, p := range op.Perm {
		k.strides[i] = st[p]
	}
	return k
}

func (k *transposeKernel) run() error {
	switch k.width {
	case 4:
		transposeWords(words[uint32](k.y), words[uint32](k.x), k.shape, k.strides, k.idx)
	case 8:
		transposeWords(words[uint64](k.y), words[uint64](k.x), k.shape, k.strides, k.idx)
	case 2:
		transposeWords(words[uint16](k.y), words[uint16](k.x), k.shape, k.strides, k.idx)
	default:
		transposeWords(k.y, k.x, k.shape, k.strides, k.idx)
	}
	return nil
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

func transposeWords[W uint8 | uint16 | uint32 | uint64](y, x []W, shape, strides, idx []int) {
	r := len(shape)
	if len(y) == 0 {
		return
	}
	if r == 0 {
		y[0] = x[0]
		return
	}
	clear(idx)
	inner, step := shape[r-1], strides[r-1]
	base := 0
	for o := 0; o < len(y); o += inner {
		row := y[o : o+inner]
		for i := range row {
			row[i] = x[base+i*step]
		}
		d := r - 2
		for ; d >= 0; d-- {
			idx[d]++
			base += strides[d]
			if idx[d] < shape[d] {
				break
			}
			base -= strides[d] * shape[d]
			idx[d] = 0
		}
		if d < 0 {
			return
		}
	}
}
