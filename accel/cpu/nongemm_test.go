package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// checkThreads compiles g with 1, 2 and 3 threads: every output must be
// bit-identical to the single-threaded one, and match the reference
// interpreter within atol + rtol·|want|.
func checkThreads(t *testing.T, g *ir.Graph, inputs []*ir.Tensor, rtol, atol float64) {
	t.Helper()
	var serial []*ir.Tensor
	for _, threads := range []int{1, 2, 3} {
		exe, err := Compile(g, accel.Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		out, err := exe.Run(inputs)
		if err != nil {
			t.Fatal(err)
		}
		if threads == 1 {
			for _, o := range out {
				serial = append(serial, o.Clone())
			}
			continue
		}
		for i, o := range out {
			if string(o.Bytes()) != string(serial[i].Bytes()) {
				t.Errorf("%s with %d threads differs from 1 thread: %v", g.Outputs[i].Name, threads, ir.Compare(o, serial[i], 0, 0))
			}
		}
	}
	checkGraph(t, g, inputs, rtol, atol)
}

// TestLayerNormShapes compares the LayerNorm kernel with the float64
// reference over row lengths that cross every vector width and tail,
// with and without bias and statistics outputs, and rows whose mean is
// far larger than their spread, on every instruction-set level.
func TestLayerNormShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, n := range []int{1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 129, 256, 257} {
		for _, offset := range []float64{0, 1000} {
			t.Run(fmt.Sprintf("n=%d/offset=%g", n, offset), func(t *testing.T) {
				s := ir.Shape{5, 3, n}
				b := ir.NewBuilder("g")
				x := b.Input("x", ir.Float32, s)
				scale := b.Param("scale", randTensor(rng, ir.Float32, ir.Shape{n}, 0.5, 1.5))
				bias := b.Param("bias", randTensor(rng, ir.Float32, ir.Shape{n}, -1, 1))
				ln := b.Op(&ir.LayerNorm{Axis: 2, Epsilon: 1e-5}, x, scale, bias)
				b.Output("y", ln[0])
				b.Output("mean", ln[1])
				b.Output("invstd", ln[2])
				b.Output("nobias", b.Op1(&ir.LayerNorm{Axis: 2, Epsilon: 1e-3}, x, scale))
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				// Entries offset±3: the relative error of the variance of
				// float32 inputs grows with offset/spread.
				in := randTensor(rng, ir.Float32, s, offset-3, offset+3)
				tol := 1e-5
				if offset != 0 {
					tol = 1e-3
				}
				forISAs(t, func(t *testing.T) { checkThreads(t, g, []*ir.Tensor{in}, tol, tol) })
			})
		}
	}
}

// TestStridedCopies compares Transpose, Slice and Expand with the
// reference, exactly, over every element width and views that take each
// copy path: contiguous rows, batched matrix transposes with sides that
// are and are not multiples of the tile, and element-by-element gathers
// (negative and zero strides). Some are large enough to be split across
// threads.
func TestStridedCopies(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	type view struct {
		shape ir.Shape
		op    ir.Op
	}
	views := []view{
		{ir.Shape{16, 128, 64}, &ir.Transpose{Perm: []int{1, 0, 2}}},
		{ir.Shape{2, 33, 3, 17}, &ir.Transpose{Perm: []int{0, 2, 1, 3}}},
		{ir.Shape{2, 3, 33, 17}, &ir.Transpose{Perm: []int{0, 1, 3, 2}}},
		{ir.Shape{128, 64, 64}, &ir.Transpose{Perm: []int{1, 2, 0}}},
		{ir.Shape{64, 64, 129}, &ir.Transpose{Perm: []int{2, 0, 1}}},
		{ir.Shape{1, 31, 1, 47}, &ir.Transpose{Perm: []int{3, 2, 1, 0}}},
		{ir.Shape{5, 1}, &ir.Transpose{Perm: []int{1, 0}}},
		{ir.Shape{1, 1}, &ir.Transpose{Perm: []int{1, 0}}},
		{ir.Shape{257, 130}, &ir.Transpose{Perm: []int{1, 0}}},
		{ir.Shape{3, 4, 5, 6, 7}, &ir.Transpose{Perm: []int{4, 1, 3, 0, 2}}},
		{ir.Shape{3, 0, 5}, &ir.Transpose{Perm: []int{2, 1, 0}}},
		{ir.Shape{7}, &ir.Transpose{Perm: []int{0}}},
		{ir.Shape{128, 16, 768}, &ir.Slice{Starts: []int{0, 0, 256}, Steps: []int{1, 1, 1}, Sizes: []int{128, 16, 256}}},
		{ir.Shape{9, 17, 40}, &ir.Slice{Starts: []int{8, 1, 39}, Steps: []int{-2, 3, -1}, Sizes: []int{5, 5, 40}}},
		{ir.Shape{9, 17, 40}, &ir.Slice{Starts: []int{0, 16, 3}, Steps: []int{1, -1, 1}, Sizes: []int{9, 17, 30}}},
		{ir.Shape{9, 17, 40}, &ir.Slice{Starts: []int{4, 0, 0}, Steps: []int{1, 1, 1}, Sizes: []int{1, 17, 40}}},
		{ir.Shape{9, 17, 40}, &ir.Slice{Starts: []int{4, 2, 5}, Steps: []int{1, 1, 1}, Sizes: []int{1, 1, 1}}},
	}
	for _, dt := range []ir.DType{ir.Float32, ir.Float64, ir.Float16, ir.Bool} {
		for _, v := range views {
			t.Run(fmt.Sprintf("%v/%v/%+v", dt, v.shape, v.op), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x := b.Input("x", dt, v.shape)
				b.Output("y", b.Op1(v.op, x))
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				checkThreads(t, g, []*ir.Tensor{randTensor(rng, dt, v.shape, -5, 5)}, 0, 0)
			})
		}
	}
}

// TestScalarDivision compares division by a scalar and of a scalar with
// the reference, exactly, over lengths that cross the SIMD widths and the
// blocks of the scalar buffer, with zeros, infinities, NaN, -0 and
// denormals among the operands, on every instruction-set level.
func TestScalarDivision(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-40, -3e-39, 3.4e38}
	for _, n := range []int{1, 2, 15, 16, 17, 255, 256, 257, 1000, 40000} {
		for _, s := range []float32{3, -0.7, 0, float32(math.Inf(1)), 1e-40} {
			t.Run(fmt.Sprintf("n=%d/s=%g", n, s), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x := b.Input("x", ir.Float32, ir.Shape{n})
				st := ir.NewTensor(ir.Float32, ir.Shape{})
				st.Float32s()[0] = s
				c := b.Const(st)
				b.Output("xs", b.Op1(&ir.Binary{Fn: ir.Div}, x, c))
				b.Output("sx", b.Op1(&ir.Binary{Fn: ir.Div}, c, x))
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				in := randTensor(rng, ir.Float32, ir.Shape{n}, -4, 4)
				for i, v := range special {
					if i*7 < n {
						in.Float32s()[i*7] = v
					}
				}
				forISAs(t, func(t *testing.T) { checkThreads(t, g, []*ir.Tensor{in}, 0, 0) })
			})
		}
	}
}

// TestReduceColumns: ReduceSum over the leading rows (a bias gradient's
// shape) sums every column's rows in order in float64 (the reference
// interpreter's order), bit for bit, with
// row counts around the kernel's four-row passes and any thread count.
func TestReduceColumns(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for _, rows := range []int{1, 3, 4, 5, 8, 130} {
		for _, cols := range []int{1, 17, 300} {
			t.Run(fmt.Sprintf("%dx%d", rows, cols), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x := b.Input("x", ir.Float32, ir.Shape{2, rows, cols})
				y := b.Op(&ir.Reduce{Fn: ir.ReduceSum, Axes: []int{0, 1}}, x)
				b.Output("y", y[0])
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				// Magnitudes from 2⁻⁶⁰ to 2⁶⁰.
				in := ir.NewTensor(ir.Float32, ir.Shape{2, rows, cols})
				for i := range in.Float32s() {
					in.Float32s()[i] = float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(121)-60))
				}
				if 2*rows >= 4 {
					// Column 0 starts 2⁵³, 1, 1, −2⁵³: 0 in order, 2 if the
					// ones were added to each other first.
					for r, v := range []float32{0x1p53, 1, 1, -0x1p53} {
						in.Float32s()[r*cols] = v
					}
				}
				for threads := 1; threads <= 3; threads++ {
					exe, err := Compile(g, accel.Options{Threads: threads})
					if err != nil {
						t.Fatal(err)
					}
					out, err := exe.Run([]*ir.Tensor{in})
					if err != nil {
						t.Fatal(err)
					}
					xs, got := in.Float32s(), out[0].Float32s()
					for c := range cols {
						var s float64
						for r := range 2 * rows {
							s += float64(xs[r*cols+c])
						}
						if math.Float32bits(got[c]) != math.Float32bits(float32(s)) {
							t.Fatalf("%d threads: column %d: %v, want %v", threads, c, got[c], float32(s))
						}
					}
				}
			})
		}
	}
}
