package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// BenchmarkRelu times Relu and its gradient on one thread, on random
// values half of them negative.
func BenchmarkRelu(b *testing.B) {
	for _, n := range []int{1 << 12, 1 << 16, 1 << 20} {
		rng := rand.New(rand.NewPCG(1, 2))
		x, t := ir.NewTensor(ir.Float32, ir.Shape{n}), ir.NewTensor(ir.Float32, ir.Shape{n})
		for i := range n {
			x.Float32s()[i] = float32(rng.NormFloat64())
			t.Float32s()[i] = float32(rng.NormFloat64())
		}
		y := ir.NewTensor(ir.Float32, ir.Shape{n})
		fwd := newUnary(1, &ir.Unary{Fn: ir.Relu}, x, y)
		bwd := newUnaryGrad(1, &ir.UnaryGrad{Fn: ir.Relu}, x, t, y)
		for _, c := range []struct {
			name string
			k    kernel
		}{{"Relu", fwd}, {"ReluGrad", bwd}} {
			b.Run(fmt.Sprintf("%s/n=%d", c.name, n), func(b *testing.B) {
				b.SetBytes(int64(4 * n))
				for b.Loop() {
					if err := c.k.run(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// reluSpecials are the values whose Relu and gradient need care: NaNs of
// either sign with payloads, ±0, ±Inf, denormals, the extremes.
var reluSpecials = []float32{
	float32(math.NaN()), -float32(math.NaN()),
	math.Float32frombits(0x7fc12345), math.Float32frombits(0xffc54321), math.Float32frombits(0x7f800001), math.Float32frombits(0xff812345),
	0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)),
	math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, math.Float32frombits(0x007fffff), math.Float32frombits(0x807fffff),
	math.MaxFloat32, -math.MaxFloat32, 1, -1,
}

// reluValues are n values: the specials in turn, and random ones.
func reluValues(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		if rng.IntN(2) == 0 {
			v[i] = reluSpecials[rng.IntN(len(reluSpecials))]
		} else {
			v[i] = float32(rng.NormFloat64())
		}
	}
	return v
}

// TestReluMatchesReference: relu gives the reference's bits (ir.Relu:
// +0 for −0 and the negatives, NaNs kept, signaling ones quieted), over every length 0..130,
// with NaN guard words around the output, and in place; and through the
// kernel.
func TestReluMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const guard = 0x7fc0dead
	for n := range 131 {
		x := reluValues(rng, n)
		want := ir.NewTensor(ir.Float32, ir.Shape{n})
		if err := (&ir.Unary{Fn: ir.Relu}).Eval([]*ir.Tensor{ir.FromFloat32s(ir.Shape{n}, append([]float32(nil), x...))}, []*ir.Tensor{want}); err != nil {
			t.Fatal(err)
		}
		buf := make([]float32, n+2)
		buf[0], buf[n+1] = math.Float32frombits(guard), math.Float32frombits(guard)
		relu(buf[1:n+1], x)
		if math.Float32bits(buf[0]) != guard || math.Float32bits(buf[n+1]) != guard {
			t.Fatalf("n=%d: a guard word overwritten", n)
		}
		inPlace := append([]float32(nil), x...)
		relu(inPlace, inPlace)
		for i, w := range want.Float32s() {
			if math.Float32bits(buf[1+i]) != math.Float32bits(w) || math.Float32bits(inPlace[i]) != math.Float32bits(w) {
				t.Fatalf("n=%d: relu(%v [%#08x]) = %v [%#08x] (in place %#08x), want %v [%#08x]", n, x[i], math.Float32bits(x[i]),
					buf[1+i], math.Float32bits(buf[1+i]), math.Float32bits(inPlace[i]), w, math.Float32bits(w))
			}
		}
	}
	x := ir.FromFloat32s(ir.Shape{4099}, reluValues(rng, 4099))
	got, want := ir.NewTensor(ir.Float32, x.Shape()), ir.NewTensor(ir.Float32, x.Shape())
	if err := newUnary(2, &ir.Unary{Fn: ir.Relu}, x, got).run(); err != nil {
		t.Fatal(err)
	}
	if err := (&ir.Unary{Fn: ir.Relu}).Eval([]*ir.Tensor{x}, []*ir.Tensor{want}); err != nil {
		t.Fatal(err)
	}
	for i, w := range want.Float32s() {
		if g := got.Float32s()[i]; math.Float32bits(g) != math.Float32bits(w) {
			t.Fatalf("Relu(%v)[%d] = %v, want %v", x.Float32s()[i], i, g, w)
		}
	}
}

// TestReluGrad: reluGrad passes dy's bits where y > 0 (from the smallest
// denormal to +Inf) and gives +0 elsewhere (−0, negatives, NaNs), over
// every length 0..130 with guard words; and agrees in value with the
// reference (dy·f′ in float64) wherever dy is finite, through the kernel.
func TestReluGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const guard = 0x7fc0dead
	for n := range 131 {
		y, dy := reluValues(rng, n), reluValues(rng, n)
		buf := make([]float32, n+2)
		buf[0], buf[n+1] = math.Float32frombits(guard), math.Float32frombits(guard)
		reluGrad(buf[1:n+1], dy, y)
		if math.Float32bits(buf[0]) != guard || math.Float32bits(buf[n+1]) != guard {
			t.Fatalf("n=%d: a guard word overwritten", n)
		}
		inPlace := append([]float32(nil), dy...)
		reluGrad(inPlace, inPlace, y)
		for i := range n {
			want := float32(0)
			if y[i] > 0 {
				want = dy[i]
			}
			if math.Float32bits(buf[1+i]) != math.Float32bits(want) || math.Float32bits(inPlace[i]) != math.Float32bits(want) {
				t.Fatalf("n=%d: reluGrad(dy %v, y %v [%#08x]) = %v (in place %v), want %v", n, dy[i], y[i], math.Float32bits(y[i]), buf[1+i], inPlace[i], want)
			}
		}
	}
	n := 4099
	y, dy := reluValues(rng, n), make([]float32, n)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	yt, dyt := ir.FromFloat32s(ir.Shape{n}, y), ir.FromFloat32s(ir.Shape{n}, dy)
	got, want := ir.NewTensor(ir.Float32, ir.Shape{n}), ir.NewTensor(ir.Float32, ir.Shape{n})
	op := &ir.UnaryGrad{Fn: ir.Relu}
	if err := newUnaryGrad(2, op, dyt, yt, got).run(); err != nil {
		t.Fatal(err)
	}
	if err := op.Eval([]*ir.Tensor{dyt, yt}, []*ir.Tensor{want}); err != nil {
		t.Fatal(err)
	}
	for i, w := range want.Float32s() {
		if g := got.Float32s()[i]; g != w {
			t.Fatalf("ReluGrad(dy %v, y %v) = %v, want %v", dy[i], y[i], g, w)
		}
	}
}

// TestPowMatchesReference: Pow, a binary kernel of its own, gives the
// reference's bits (float64, rounded once) — by a scalar 2 (RMSNorm's
// square, computed as x·x), by other scalars, and element-wise — over
// signed zeros, infinities, denormals, values whose square overflows, and
// NaN (any NaN for a NaN).
func TestPowMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	special := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 2, -3.5, float32(math.Inf(1)), float32(math.Inf(-1)),
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 1e-20, -1e-20, 1e20, -1e20, math.MaxFloat32, float32(math.NaN())}
	n := 301
	x := make([]float32, n)
	for i := range x {
		if i < len(special) {
			x[i] = special[i]
			continue
		}
		x[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(10)-5)))
	}
	same := func(a, b float32) bool {
		return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
	}
	for _, e := range []float32{2, 0.5, 3, -1, 1.7} {
		b := ir.NewBuilder("g")
		in := b.Input("x", ir.Float32, ir.Shape{n})
		b.Output("y", b.Op1(&ir.Binary{Fn: ir.Pow}, in, b.Const(ir.FromFloat32s(ir.Shape{}, []float32{e}))))
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		exe, err := Compile(g, accel.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		out, err := exe.Run([]*ir.Tensor{ir.FromFloat32s(ir.Shape{n}, x)})
		if err != nil {
			t.Fatal(err)
		}
		for i, got := range out[0].Float32s() {
			if want := float32(ir.ArithFloat64(ir.Pow, float64(x[i]), float64(e))); !same(got, want) {
				t.Fatalf("pow(%g, %g) = %g (%#x), the reference %g (%#x)", x[i], e, got, math.Float32bits(got), want, math.Float32bits(want))
			}
		}
	}
}
