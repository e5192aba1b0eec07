package cpu

import (
	"math"

	"github.com/dstune/dstune/ir"
)

// binaryKernel is a float32 Add/Sub/Mul/Div with broadcasting, walked in
// runs along the innermost (merged) dimension.
type binaryKernel struct {
	fn        ir.BinaryFn
	a, b, out []float32
	layout    ir.RunLayout
	idx, base []int
}

func newBinary(fn ir.BinaryFn, a, b, out *ir.Tensor) kernel {
	switch fn {
	case ir.Add, ir.Sub, ir.Mul, ir.Div:
	default:
		return nil
	}
	l := ir.NewRunLayout(out.Shape(), a.Shape(), b.Shape())
	return &binaryKernel{fn: fn, a: a.Float32s(), b: b.Float32s(), out: out.Float32s(), layout: l,
		idx: make([]int, len(l.Outer)), base: make([]int, 2)}
}

func (k *binaryKernel) run() error {
	l := &k.layout
	runs := l.Runs()
	clear(k.idx)
	k.base[0], k.base[1] = 0, 0
	n := l.Inner
	sa, sb := l.Step[0], l.Step[1]
	for r, o := 0, 0; r < runs; r, o = r+1, o+n {
		out := k.out[o : o+n]
		ia, ib := k.base[0], k.base[1]
		switch {
		case sa == 1 && sb == 1:
			binaryVV(k.fn, out, k.a[ia:ia+n], k.b[ib:ib+n])
		case sa == 1 && sb == 0:
			binaryVS(k.fn, out, k.a[ia:ia+n], k.b[ib])
		case sa == 0 && sb == 1:
			binarySV(k.fn, out, k.a[ia], k.b[ib:ib+n])
		default:
			for i := range out {
				out[i] = arith32(k.fn, k.a[ia+i*sa], k.b[ib+i*sb])
			}
		}
		l.Next(k.idx, k.base)
	}
	return nil
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

// unaryKernel is a float32 element-wise function; the transcendental ones
// are computed in float64 and rounded once (accuracy to match PyTorch
// within 1e-4 relative through deep stacks).
type unaryKernel struct {
	fn    ir.UnaryFn
	alpha float64
	x, y  []float32
}

func newUnary(op *ir.Unary, x, y *ir.Tensor) kernel {
	if op.Fn == ir.Not {
		return nil
	}
	return &unaryKernel{fn: op.Fn, alpha: float64(op.Alpha), x: x.Float32s(), y: y.Float32s()}
}

const sqrt2OverPi = 0.7978845608028654 // √(2/π)

func (k *unaryKernel) run() error {
	x, y := k.x, k.y[:len(k.x)]
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
	case ir.Tanh:
		for i, v := range x {
			y[i] = float32(math.Tanh(float64(v)))
		}
	case ir.Erf:
		for i, v := range x {
			y[i] = float32(math.Erf(float64(v)))
		}
	case ir.Exp:
		for i, v := range x {
			y[i] = float32(math.Exp(float64(v)))
		}
	case ir.Sqrt:
		for i, v := range x {
			y[i] = float32(math.Sqrt(float64(v)))
		}
	case ir.Gelu:
		for i, v := range x {
			f := float64(v)
			y[i] = float32(0.5 * f * (1 + math.Erf(f/math.Sqrt2)))
		}
	case ir.GeluTanh:
		for i, v := range x {
			f := float64(v)
			y[i] = float32(0.5 * f * (1 + math.Tanh(sqrt2OverPi*(f+0.044715*f*f*f))))
		}
	default:
		for i, v := range x {
			y[i] = float32(ir.UnaryFloat64(k.fn, k.alpha, float64(v)))
		}
	}
	return nil
}

// whereKernel is a float32 Where with broadcasting.
type whereKernel struct {
	cond      []bool
	x, y, out []float32
	layout    ir.RunLayout
	idx, base []int
}

func newWhere(cond, x, y, out *ir.Tensor) kernel {
	l := ir.NewRunLayout(out.Shape(), cond.Shape(), x.Shape(), y.Shape())
	return &whereKernel{cond: cond.Bools(), x: x.Float32s(), y: y.Float32s(), out: out.Float32s(), layout: l,
		idx: make([]int, len(l.Outer)), base: make([]int, 3)}
}

func (k *whereKernel) run() error {
	l := &k.layout
	clear(k.idx)
	clear(k.base)
	sc, sx, sy := l.Step[0], l.Step[1], l.Step[2]
	for r, o := 0, 0; r < l.Runs(); r, o = r+1, o+l.Inner {
		c, x, y := k.base[0], k.base[1], k.base[2]
		out := k.out[o : o+l.Inner]
		for i := range out {
			if k.cond[c+i*sc] {
				out[i] = k.x[x+i*sx]
			} else {
				out[i] = k.y[y+i*sy]
			}
		}
		l.Next(k.idx, k.base)
	}
	return nil
}
