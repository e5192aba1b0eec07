package cpu

import (
	"math"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
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
	case ir.Add, ir.Sub, ir.Mul, ir.Div, ir.Pow:
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
	case ir.Pow:
		return pow32(x, y)
	}
	return x / y
}

// pow32 is Pow as the op's reference computes it: in float64, rounded
// once.
func pow32(x, y float32) float32 { return float32(math.Pow(float64(x), float64(y))) }

// binaryVV: out[i] = a[i] op b[i], on package kernels' SIMD loops
// (exactly rounded, so the same bits as the plain loop).
func binaryVV(fn ir.BinaryFn, out, a, b []float32) {
	switch fn {
	case ir.Add:
		kernels.AddF32(out, a, b)
	case ir.Sub:
		kernels.SubF32(out, a, b)
	case ir.Mul:
		kernels.MulF32(out, a, b)
	case ir.Div:
		kernels.DivF32(out, a, b)
	case ir.Pow:
		b = b[:len(out)]
		for i, x := range a[:len(out)] {
			out[i] = pow32(x, b[i])
		}
	}
}

// binaryVS: out[i] = a[i] op s (Add, Mul, Div and Pow by 2 on package kernels' SIMD
// loops, exactly rounded as the plain loop).
func binaryVS(fn ir.BinaryFn, out, a []float32, s float32) {
	a = a[:len(out)]
	switch fn {
	case ir.Add:
		kernels.AddScalarF32(out, s, a)
	case ir.Sub:
		for i := range out {
			out[i] = a[i] - s
		}
	case ir.Mul:
		kernels.ScaleF32(out, s, a)
	case ir.Div:
		divScalar(out, a, s, false)
	case ir.Pow:
		if s == 2 {
			// RMSNorm's square: x·x in float32 is the correctly rounded
			// square, as float64's exact one rounded once is.
			kernels.MulF32(out, a, a)
			return
		}
		for i, x := range a {
			out[i] = pow32(x, s)
		}
	}
}

// binarySV: out[i] = s op b[i] (Add, Mul and Div as binaryVS).
func binarySV(fn ir.BinaryFn, out []float32, s float32, b []float32) {
	b = b[:len(out)]
	switch fn {
	case ir.Add:
		kernels.AddScalarF32(out, s, b)
	case ir.Sub:
		for i := range out {
			out[i] = s - b[i]
		}
	case ir.Mul:
		kernels.ScaleF32(out, s, b)
	case ir.Div:
		divScalar(out, b, s, true)
	case ir.Pow:
		for i, y := range b {
			out[i] = pow32(s, y)
		}
	}
}

// unaryKernel is a float32 element-wise function. The transcendental ones
// (Tanh, Erf, Exp, Sigmoid, Gelu, GeluTanh) run on package kernels' SIMD
// versions (simd.go: float32 within a few ulp, bounds measured
// exhaustively there); Neg, Relu (relu) and Abs are plain loops; every other
// function is computed in float64 by the op's reference (ir.UnaryFloat64)
// and rounded once, on blocks converted to float64 first: converting
// inside the loop that calls it chains the iterations through the
// conversion's partial register write, five times slower on this machine.
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
	k.simd = simdUnary(op.Fn)
	switch {
	case k.simd != nil:
	case op.Fn == ir.Neg || op.Fn == ir.Relu || op.Fn == ir.Abs:
	default:
		fn := op.Fn
		k.block = func(b []float64, alpha float64) {
			for i, v := range b {
				b[i] = ir.UnaryFloat64(fn, alpha, v)
			}
		}
		for range k.workers {
			k.scratch = append(k.scratch, make([]float64, blockLen))
		}
	}
	k.split = splitter{units: len(k.x), align: blockLen, share: k.share}
	return k
}

// blockLen is the float64 block the reference functions work on.
const blockLen = 256

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
		relu(y, x)
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

// relu sets y[i] = max(x[i], 0) as ir.Relu does: +0 for the negatives and
// −0, a NaN kept with its sign and payload, quieted. It works on the
// bits, without branches, which random signs would mispredict.
func relu(y, x []float32) {
	y = y[:len(x)]
	for i, v := range x {
		b := math.Float32bits(v)
		neg := uint32(int32(b) >> 31)                         // all ones for a sign bit
		nan := uint32(int32(0x7f800000-(b&0x7fffffff)) >> 31) // all ones for a NaN
		y[i] = math.Float32frombits(b&^(neg&^nan) | nan&0x00400000)
	}
}
