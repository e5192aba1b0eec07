package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// BenchmarkStridedCopies times the transposes and slices of the GPT
// benchmark model's training step (batch 16×128, d 256, 4 heads), one
// thread.
func BenchmarkStridedCopies(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		shape ir.Shape
		op    ir.Op
	}{
		{ir.Shape{64, 128, 64}, &ir.Transpose{Perm: []int{1, 0, 2}}},
		{ir.Shape{128, 16, 256}, &ir.Transpose{Perm: []int{1, 0, 2}}},
		{ir.Shape{128, 64, 64}, &ir.Transpose{Perm: []int{1, 2, 0}}},
		{ir.Shape{64, 64, 128}, &ir.Transpose{Perm: []int{2, 0, 1}}},
		{ir.Shape{128, 16, 768}, &ir.Slice{Starts: []int{0, 0, 256}, Steps: []int{1, 1, 1}, Sizes: []int{128, 16, 256}}},
	} {
		bld := ir.NewBuilder("g")
		x := bld.Input("x", ir.Float32, c.shape)
		bld.Output("y", bld.Op1(c.op, x))
		g, err := bld.Graph()
		if err != nil {
			b.Fatal(err)
		}
		exe, err := Compile(g, accel.Options{Threads: 1})
		if err != nil {
			b.Fatal(err)
		}
		in := []*ir.Tensor{randTensor(rng, ir.Float32, c.shape, -1, 1)}
		b.Run(fmt.Sprintf("%s/%v/%v", c.op.Name(), c.shape, c.op), func(b *testing.B) {
			b.SetBytes(int64(2 * g.Outputs[0].Value.Shape.Size() * 4))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := exe.Run(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
