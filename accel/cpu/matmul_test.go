package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// rowsProduct is a MatMul of few rows under test: x [..., rows, K] times
// y, stored as y and read through Transpose(y, perm) when perm is set.
type rowsProduct struct {
	name string
	x, y ir.Shape // x with its rows axis (-2) left for the test to set
	perm []int
	// stacked: the batch is folded into the rows (one B for all), so the
	// product has batch·rows rows.
	stacked bool
	// one: only one row (the products large enough to split across
	// threads, whose other row counts add nothing but time).
	one bool
}

func (p rowsProduct) xShape(rows int) ir.Shape {
	s := p.x.Clone()
	s[len(s)-2] = rows
	return s
}

func (p rowsProduct) graph(t *testing.T, dt ir.DType, rows int) *ir.Graph {
	t.Helper()
	b := ir.NewBuilder("g")
	x, y := b.Input("x", dt, p.xShape(rows)), b.Input("y", dt, p.y)
	if p.perm != nil {
		y = b.Op1(&ir.Transpose{Perm: p.perm}, y)
	}
	b.Output("z", b.Op1(&ir.MatMul{}, x, y))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// runProduct compiles g and runs it; rowwise says whether its MatMul ran
// on kernels.Sgemv.
func runProduct(t *testing.T, g *ir.Graph, threads int, in []*ir.Tensor) (z *ir.Tensor, rowwise bool) {
	t.Helper()
	exe, err := Compile(g, accel.Options{Threads: threads})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range exe.steps {
		if mk, ok := s.k.(*matmulKernel); ok {
			rowwise = mk.rowwise()
		}
	}
	out, err := exe.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	return out[0].Clone(), rowwise
}

// interpret64 runs g's float64 twin (built by graph) on the inputs widened
// to float64, each first mapped by f: the exact product up to float64
// rounding (the reference MatMul sums in float64), and with f = |·| the
// sum of the terms' magnitudes that bounds float32 rounding.
func interpret64(t *testing.T, g *ir.Graph, in []*ir.Tensor, f func(float64) float64) []float64 {
	t.Helper()
	named := map[string]*ir.Tensor{}
	for i, v := range g.Inputs {
		w := ir.Convert(in[i], ir.Float64)
		for j, x := range w.Float64s() {
			w.Float64s()[j] = f(x)
		}
		named[v.Name] = w
	}
	out, err := ir.Interpret(g, named)
	if err != nil {
		t.Fatal(err)
	}
	return out[g.Outputs[0].Name].Float64s()
}

// TestMatMulFewRows: products of one to four rows run on kernels.Sgemv —
// B as stored and transposed (a weight read through Transpose, attention's
// keys), odd and long sizes (1, 3, 17, 33, 1031, 4100), batched with
// uniform strides and with either operand broadcast over a batch axis —
// and agree, on every ISA, with the float64 product within the rounding
// bound of any summation order, and with the GEMM computing the same rows
// among eight (twice that bound); 2 and 3 threads give the bits of one
// (the wide cases split across two and three workers).
func TestMatMulFewRows(t *testing.T) {
	cases := []rowsProduct{
		{name: "1x1", x: ir.Shape{0, 1}, y: ir.Shape{1, 1}},
		{name: "plain", x: ir.Shape{0, 33}, y: ir.Shape{33, 1031}},
		{name: "weight transposed", x: ir.Shape{0, 17}, y: ir.Shape{1031, 17}, perm: []int{1, 0}},
		{name: "long inner", x: ir.Shape{0, 1031}, y: ir.Shape{1031, 3}},
		{name: "wide", x: ir.Shape{0, 1536}, y: ir.Shape{1536, 4100}, one: true},
		{name: "wide transposed", x: ir.Shape{0, 2048}, y: ir.Shape{2053, 2048}, perm: []int{1, 0}, one: true},
		{name: "heads", x: ir.Shape{5, 0, 33}, y: ir.Shape{5, 33, 17}},
		{name: "attention scores", x: ir.Shape{1, 4, 0, 64}, y: ir.Shape{1, 4, 1031, 64}, perm: []int{0, 1, 3, 2}},
		{name: "attention values", x: ir.Shape{1, 4, 0, 1031}, y: ir.Shape{1, 4, 1031, 64}},
		{name: "B broadcast", x: ir.Shape{2, 3, 0, 17}, y: ir.Shape{1, 3, 17, 33}},
		{name: "A broadcast", x: ir.Shape{1, 3, 0, 17}, y: ir.Shape{2, 3, 33, 17}, perm: []int{0, 1, 3, 2}},
		{name: "one weight for a batch", x: ir.Shape{3, 0, 17}, y: ir.Shape{17, 33}, stacked: true},
	}
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(51, 52))
		for _, p := range cases {
			for rows := 1; rows <= kernels.SgemvRows && (rows == 1 || !p.one); rows++ {
				t.Run(fmt.Sprintf("%s/rows=%d", p.name, rows), func(t *testing.T) {
					const gemmRows = 8
					xs, ys := p.xShape(gemmRows), p.y
					x8, y := randTensor(rng, ir.Float32, xs, -1, 1), randTensor(rng, ir.Float32, ys, -1, 1)
					x := firstRows(x8, rows)
					in := []*ir.Tensor{x, y}
					g := p.graph(t, ir.Float32, rows)
					got, rowwise := runProduct(t, g, 1, in)
					if want := !p.stacked || rows*p.x[0] <= kernels.SgemvRows; rowwise != want {
						t.Fatalf("rowwise = %v, want %v", rowwise, want)
					}
					g64 := p.graph(t, ir.Float64, rows)
					ref, terms := interpret64(t, g64, in, func(v float64) float64 { return v }), interpret64(t, g64, in, math.Abs)
					k := float64(xs[len(xs)-1])
					tol := func(i int) float64 { return (k + 3) * 0x1p-23 * terms[i] }
					z := got.Float32s()
					for i, w := range ref {
						if math.Abs(float64(z[i])-w) > tol(i) {
							t.Fatalf("z[%d] = %v, float64 product %v ± %.3g", i, z[i], w, tol(i))
						}
					}
					gemm, rowwise := runProduct(t, p.graph(t, ir.Float32, gemmRows), 1, []*ir.Tensor{x8, y})
					if rowwise {
						t.Fatalf("%d rows ran on Sgemv", gemmRows)
					}
					same := firstRows(gemm, rows).Float32s()
					for i := range z {
						if math.Abs(float64(z[i]-same[i])) > 2*tol(i) {
							t.Fatalf("z[%d] = %v, the GEMM's %v ± %.3g", i, z[i], same[i], 2*tol(i))
						}
					}
					for _, threads := range []int{2, 3} {
						if z2, _ := runProduct(t, g, threads, in); string(z2.Bytes()) != string(got.Bytes()) {
							t.Fatalf("threads=%d differs from threads=1: %v", threads, ir.Compare(z2, got, 0, 0))
						}
					}
				})
			}
		}
	})
}

// firstRows is x's first rows along axis -2 (every batch entry's).
func firstRows(x *ir.Tensor, rows int) *ir.Tensor {
	s := x.Shape()
	r, cols := s[len(s)-2], s[len(s)-1]
	out := s.Clone()
	out[len(out)-2] = rows
	y := ir.NewTensor(x.DType(), out)
	for b := range s[:len(s)-2].Size() {
		copy(y.Float32s()[b*rows*cols:(b+1)*rows*cols], x.Float32s()[b*r*cols:])
	}
	return y
}

// TestGemmFewRows: a Gemm of one row — A as stored or transposed (a
// column), B either way, with a bias C and alpha, beta ≠ 1 — runs on
// kernels.Sgemv and matches the float64 reference on every ISA.
func TestGemmFewRows(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(53, 54))
		const k, n = 33, 1031
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				t.Run(fmt.Sprintf("transA=%v/transB=%v", ta, tb), func(t *testing.T) {
					as, bs := ir.Shape{1, k}, ir.Shape{k, n}
					if ta {
						as = ir.Shape{k, 1}
					}
					if tb {
						bs = ir.Shape{n, k}
					}
					build := func(dt ir.DType) *ir.Graph {
						b := ir.NewBuilder("g")
						in := []*ir.Value{b.Input("a", dt, as), b.Input("b", dt, bs), b.Input("c", dt, ir.Shape{n})}
						b.Output("y", b.Op1(&ir.Gemm{TransA: ta, TransB: tb, Alpha: 0.75, Beta: 1.5}, in...))
						g, err := b.Graph()
						if err != nil {
							t.Fatal(err)
						}
						return g
					}
					in := []*ir.Tensor{randTensor(rng, ir.Float32, as, -1, 1), randTensor(rng, ir.Float32, bs, -1, 1), randTensor(rng, ir.Float32, ir.Shape{n}, -1, 1)}
					exe, err := Compile(build(ir.Float32), accel.Options{Threads: 2})
					if err != nil {
						t.Fatal(err)
					}
					if gk, ok := exe.steps[0].k.(*gemmKernel); !ok || !gk.rowwise() {
						t.Fatalf("the Gemm does not run on Sgemv (%T)", exe.steps[0].k)
					}
					out, err := exe.Run(in)
					if err != nil {
						t.Fatal(err)
					}
					g64 := build(ir.Float64)
					ref, terms := interpret64(t, g64, in, func(v float64) float64 { return v }), interpret64(t, g64, in, math.Abs)
					for i, w := range ref {
						if got, tol := float64(out[0].Float32s()[i]), (k+4)*0x1p-23*terms[i]; math.Abs(got-w) > tol {
							t.Fatalf("y[%d] = %v, float64 %v ± %.3g", i, got, w, tol)
						}
					}
				})
			}
		}
	})
}
