package cpu

import (
	"math"

	"github.com/dstune/dstune/ir"
)

// binaryKernel is a float32 Add/Sub/Mul/Div with broadcasting, walked in
// runs along the innermost (merged) dimension, split by elements across
// workers.
type binaryKernel struct {
	fn        ir.BinaryFn
	a, b, out []float32
	layout    ir.RunLayout
	idx, base [][]int // per worker
	workers   int
	split     splitter
}

func newBinary(threads int, fn ir.BinaryFn, a, b, out *ir.Tensor) kernel {
	switch fn {
	case ir.Add, ir.Sub, ir.Mul, ir.Div:
	default:
		return nil
	}
	l := ir.NewRunLayout(out.Shape(), a.Shape(), b.Shape())
	k := &binaryKernel{fn: fn, a: a.Float32s(), b: b.Float32s(), out: out.Float32s(), layout: l,
		workers: workersFor(threads, out.Len())}
	for range k.workers {
		k.idx = append(k.idx, make([]int, len(l.Outer)))
		k.base = append(k.base, make([]int, 2))
	}
	k.split = splitter{units: out.Len(), align: 16, share: k.share}
	return k
}

func (k *binaryKernel) run() error {
	if k.layout.Runs() > 0 {
		k.split.run(k.workers)
	}
	return nil
}

// share computes output elements [lo, hi).
func (k *binaryKernel) share(lo, hi, w int) {
	l := &k.layout
	n := l.Inner
	sa, sb := l.Step[0], l.Step[1]
	idx, base := k.idx[w], k.base[w]
	r := lo / n
	l.Seek(r, idx, base)
	for o := lo; o < hi; r++ {
		start, end := o-r*n, min(n, hi-r*n)
		out := k.out[r*n+start : r*n+end]
		ia, ib := base[0]+start*sa, base[1]+start*sb
		m := len(out)
		switch {
		case sa == 1 && sb == 1:
			binaryVV(k.fn, out, k.a[ia:ia+m], k.b[ib:ib+m])
		case sa == 1 && sb == 0:
			binaryVS(k.fn, out, k.a[ia:ia+m], k.b[ib])
		case sa == 0 && sb == 1:
			binarySV(k.fn, out, k.a[ia], k.b[ib:ib+m])
		default:
			for i := range out {
				out[i] = arith32(k.fn, k.a[ia+i*sa], k.b[ib+i*sb])
			}
		}
		o = r*n + end
		if o < hi {
			l.Next(idx, base)
		}
	}
}

func arith32(fn ir.BinaryFn, x, y float32) float32 {
	switch fn {
	case ir.Add:
		return x + y
	case ir.Sub:
		return x - y
	case ir.Mul:
		return x * y
	}
	return x / y
}

// binaryVV: out[i] = a[i] op b[i].
func binaryVV(fn ir.BinaryFn, out, a, b []float32) {
	a, b = a[:len(out)], b[:len(out)]
	switch fn {
	case ir.Add:
		for i := range out {
			out[i] = a[i] + b[i]
		}
	case ir.Sub:
		for i := range out {
			out[i] = a[i] - b[i]
		}
	case ir.Mul:
		for i := range out {
			out[i] = a[i] * b[i]
		}
	case ir.Div:
		for i := range out {
			out[i] = a[i] / b[i]
		}
	}
}

// binaryVS: out[i] = a[i] op s.
func binaryVS(fn ir.BinaryFn, out, a []float32, s float32) {
	a = a[:len(out)]
	switch fn {
	case ir.Add:
		for i := range out {
			out[i] = a[i] + s
		}
	case ir.Sub:
		for i := range out {
			out[i] = a[i] - s
		}
	case ir.Mul:
		for i := range out {
			out[i] = a[i] * s
		}
	case ir.Div:
		for i := range out {
			out[i] = a[i] / s
		}
	}
}

// binarySV: out[i] = s op b[i].
func binarySV(fn ir.BinaryFn, out []float32, s float32, b []float32) {
	b = b[:len(out)]
	switch fn {
	case ir.Add:
		for i := range out {
			out[i] = s + b[i]
		}
	case ir.Sub:
		for i := range out {
			out[i] = s - b[i]
		}
	case ir.Mul:
		for i := range out {
			out[i] = s * b[i]
		}
	case ir.Div:
		for i := range out {
			out[i] = s / b[i]
		}
	}
}

// unaryKernel is a float32 element-wise function. GELU runs on package
// kernels' SIMD version (simd.go); the other transcendental ones
// are computed in float64 and rounded once (mathf.go), so that deep stacks
// still match PyTorch within 1e-4 relative. They run on blocks converted to
// float64 first: converting inside the loop that calls them chains the
// iterations through the conversion's partial register write, five times
// slower on this machine.
type unaryKernel struct {
	fn      ir.UnaryFn
	alpha   float64
	x, y    []float32
	block   func(b []float64, alpha float64) // nil: a float32 loop
	simd    func(dst, src []float32)         // a kernels function (simd.go), used instead of block
	scratch [][]float64                      // per worker
	workers int
	split   splitter
}

func newUnary(threads int, op *ir.Unary, x, y *ir.Tensor) kernel {
	if op.Fn == ir.Not {
		return nil
	}
	k := &unaryKernel{fn: op.Fn, alpha: float64(op.Alpha), x: x.Float32s(), y: y.Float32s(), workers: workersFor(threads, x.Len())}
	switch op.Fn {
	case ir.Neg, ir.Relu, ir.Abs:
	case ir.Tanh:
		k.block = tanhBlock
	case ir.Erf:
		k.block = erfBlock
	case ir.Exp:
		k.block = expBlock
	case ir.Sigmoid:
		k.block = sigmoidBlock
	case ir.Gelu:
		k.block = geluBlock
	case ir.GeluTanh:
		k.block = geluTanhBlock
	default:
		fn := op.Fn
		k.block = func(b []float64, alpha float64) {
			for i, v := range b {
				b[i] = ir.UnaryFloat64(fn, alpha, v)
			}
		}
	}
	if k.simd = simdUnary(op.Fn); k.simd != nil {
		k.block = nil
	}
	if k.block != nil {
		for range k.workers {
			k.scratch = append(k.scratch, make([]float64, blockLen))
		}
	}
	k.split = splitter{units: len(k.x), align: blockLen, share: k.share}
	return k
}

// blockLen is the float64 block the transcendental kernels work on.
const blockLen = 256

const sqrt2OverPi = 0.7978845608028654 // √(2/π)

func tanhBlock(b []float64, _ float64) {
	for i, v := range b {
		b[i] = tanh64(v)
	}
}

func erfBlock(b []float64, _ float64) {
	for i, v := range b {
		b[i] = erf64(v)
	}
}

func expBlock(b []float64, _ float64) {
	for i, v := range b {
		b[i] = exp64(v)
	}
}

func sigmoidBlock(b []float64, _ float64) {
	for i, v := range b {
		b[i] = 1 / (1 + exp64(-v))
	}
}

func geluBlock(b []float64, _ float64) {
	for i, v := range b {
		b[i] = 0.5 * v * (1 + erf64(v*(1/math.Sqrt2)))
	}
}

func geluTanhBlock(b []float64, _ float64) {
	for i, v := range b {
		b[i] = 0.5 * v * (1 + tanh64(sqrt2OverPi*(v+0.044715*v*v*v)))
	}
}

func (k *unaryKernel) run() error {
	k.split.run(k.workers)
	return nil
}

// share computes elements [lo, hi).
func (k *unaryKernel) share(lo, hi, w int) {
	x, y := k.x[lo:hi], k.y[lo:hi]
	if k.simd != nil {
		k.simd(y, x)
		return
	}
	if k.block != nil {
		buf := k.scratch[w]
		for off := 0; off < len(x); off += len(buf) {
			n := min(len(buf), len(x)-off)
			b := buf[:n]
			for i, v := range x[off : off+n] {
				b[i] = float64(v)
			}
			k.block(b, k.alpha)
			out := y[off : off+n]
			for i, v := range b {
				out[i] = float32(v)
			}
		}
		return
	}
	switch k.fn {
	case ir.Neg:
		for i, v := range x {
			y[i] = -v
		}
	case ir.Relu:
		for i, v := range x {
			if v < 0 {
				v = 0
			}
			y[i] = v
		}
	case ir.Abs:
		for i, v := range x {
			y[i] = float32(math.Abs(float64(v)))
		}
	}
}

// whereKernel is a float32 Where with broadcasting, split by elements.
type whereKernel struct {
	cond      []bool
	x, y, out []float32
	layout    ir.RunLayout
	idx, base [][]int
	workers   int
	split     splitter
}

func newWhere(threads int, cond, x, y, out *ir.Tensor) kernel {
	l := ir.NewRunLayout(out.Shape(), cond.Shape(), x.Shape(), y.Shape())
	k := &whereKernel{cond: cond.Bools(), x: x.Float32s(), y: y.Float32s(), out: out.Float32s(), layout: l,
		workers: workersFor(threads, out.Len())}
	for range k.workers {
		k.idx = append(k.idx, make([]int, len(l.Outer)))
		k.base = append(k.base, make([]int, 3))
	}
	k.split = splitter{units: out.Len(), align: 16, share: k.share}
	return k
}

func (k *whereKernel) run() error {
	if k.layout.Runs() > 0 {
		k.split.run(k.workers)
	}
	return nil
}

func (k *whereKernel) share(lo, hi, w int) {
	l := &k.layout
	n := l.Inner
	sc, sx, sy := l.Step[0], l.Step[1], l.Step[2]
	idx, base := k.idx[w], k.base[w]
	r := lo / n
	l.Seek(r, idx, base)
	for o := lo; o < hi; r++ {
		start, end := o-r*n, min(n, hi-r*n)
		out := k.out[r*n+start : r*n+end]
		c, x, y := base[0]+start*sc, base[1]+start*sx, base[2]+start*sy
		for i := range out {
			if k.cond[c+i*sc] {
				out[i] = k.x[x+i*sx]
			} else {
				out[i] = k.y[y+i*sy]
			}
		}
		o = r*n + end
		if o < hi {
			l.Next(idx, base)
		}
	}
}
