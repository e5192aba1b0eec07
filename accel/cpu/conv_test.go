package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/ir"
)

// TestConvKernels differential-tests the convolution kernels (Conv,
// ConvGradInput as in ConvTranspose and training, ConvGradWeight) against
// the reference in package ir, on every ISA: 1-D, 2-D and 3-D windows,
// groups (depthwise too), strides, dilations, asymmetric padding, a bias,
// the 1×1 kernel that reads its input directly, and im2col in chunks.
func TestConvKernels(t *testing.T) {
	type convCase struct {
		x, w                     ir.Shape
		strides, pads, dilations []int
		group                    int
		bias                     bool
	}
	cases := []convCase{
		{ir.Shape{2, 3, 9}, ir.Shape{4, 3, 3}, []int{1}, []int{1, 1}, []int{1}, 1, true},
		{ir.Shape{1, 4, 17}, ir.Shape{6, 2, 5}, []int{2}, []int{3, 0}, []int{2}, 2, false},
		{ir.Shape{2, 3, 7, 8}, ir.Shape{5, 3, 3, 3}, []int{1, 1}, []int{1, 1, 1, 1}, []int{1, 1}, 1, true},
		{ir.Shape{1, 6, 11, 10}, ir.Shape{6, 1, 3, 3}, []int{2, 1}, []int{0, 2, 1, 0}, []int{1, 2}, 6, true}, // depthwise
		{ir.Shape{2, 3, 9}, ir.Shape{6, 1, 3}, []int{2}, []int{2, 1}, []int{2}, 3, false},                    // depthwise, 2 outputs a channel
		{ir.Shape{2, 2, 4, 5, 3}, ir.Shape{2, 1, 2, 3, 2}, []int{1, 1, 2}, []int{1, 0, 1, 0, 1, 1}, []int{1, 2, 1}, 2, true},
		{ir.Shape{2, 8, 6, 5}, ir.Shape{4, 8, 1, 1}, []int{1, 1}, []int{0, 0, 0, 0}, []int{1, 1}, 1, true},  // 1×1: direct
		{ir.Shape{2, 8, 6, 5}, ir.Shape{4, 4, 1, 1}, []int{2, 2}, []int{0, 0, 0, 0}, []int{1, 1}, 2, false}, // 1×1 strided
		{ir.Shape{2, 8, 6, 5}, ir.Shape{6, 4, 1, 1}, []int{1, 1}, []int{0, 0, 0, 0}, []int{1, 1}, 2, true},  // 1×1 direct, grouped
		{ir.Shape{1, 2, 5, 6, 4}, ir.Shape{3, 2, 2, 3, 2}, []int{1, 2, 1}, []int{1, 0, 1, 1, 0, 1}, []int{1, 1, 2}, 1, true},
		{ir.Shape{3, 4, 12, 12}, ir.Shape{8, 2, 3, 3}, []int{1, 1}, []int{1, 1, 1, 1}, []int{1, 1}, 2, true},
		// Empty: no input channels (the bias alone), no images, no output
		// channels; an input of no positions, padded.
		{ir.Shape{2, 0, 9}, ir.Shape{3, 0, 3}, []int{1}, []int{0, 0}, []int{1}, 1, true},
		{ir.Shape{2, 0, 9}, ir.Shape{3, 0, 1}, []int{1}, []int{0, 0}, []int{1}, 1, false},
		{ir.Shape{0, 3, 9}, ir.Shape{4, 3, 3}, []int{1}, []int{1, 1}, []int{1}, 1, true},
		{ir.Shape{2, 3, 9}, ir.Shape{0, 3, 3}, []int{1}, []int{1, 1}, []int{1}, 1, false},
		{ir.Shape{2, 3, 0}, ir.Shape{4, 3, 1}, []int{1}, []int{1, 0}, []int{1}, 1, true},
	}
	defer func(n, m int) { convChunkFloats, convOffsetsShared = n, m }(convChunkFloats, convOffsetsShared)
	rng := rand.New(rand.NewPCG(4, 5))
	// 1: chunks of 64 output positions, their offsets computed per chunk.
	for _, chunk := range []int{2 << 20, 1} {
		convChunkFloats, convOffsetsShared = chunk, 2*chunk
		for i, c := range cases {
			op := ir.Conv{Strides: c.strides, Pads: c.pads, Dilations: c.dilations, Group: c.group}
			t.Run(fmt.Sprintf("chunk%d/%d_%v_%v", chunk, i, c.x, c.w), func(t *testing.T) {
				forISAs(t, func(t *testing.T) {
					b := ir.NewBuilder("conv")
					x, w := b.Input("x", ir.Float32, c.x), b.Input("w", ir.Float32, c.w)
					ins := []*ir.Value{x, w}
					feeds := []*ir.Tensor{randTensor(rng, ir.Float32, c.x, -1, 1), randTensor(rng, ir.Float32, c.w, -1, 1)}
					if c.bias {
						ins = append(ins, b.Input("b", ir.Float32, ir.Shape{c.w[0]}))
						feeds = append(feeds, randTensor(rng, ir.Float32, ir.Shape{c.w[0]}, -1, 1))
					}
					y := b.Op1(&op, ins...)
					dy := b.Input("dy", ir.Float32, y.Shape)
					feeds = append(feeds, randTensor(rng, ir.Float32, y.Shape, -1, 1))
					b.Output("y", y)
					b.Output("dx", b.Op1(&ir.ConvGradInput{Conv: op, InputShape: c.x}, dy, w))
					b.Output("dw", b.Op1(&ir.ConvGradWeight{Conv: op, WeightShape: c.w}, dy, x))
					g, err := b.Graph()
					if err != nil {
						t.Fatal(err)
					}
					checkGraph(t, g, feeds, 1e-5, 1e-5)
				})
			})
		}
	}
}
