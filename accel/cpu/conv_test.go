package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// TestConvKernels differential-tests the convolution kernels (Conv,
// ConvGradInput as in ConvTranspose and training, ConvGradWeight) against
// the reference in package ir, on every ISA: 1-D, 2-D and 3-D windows,
// groups (depthwise too), strides, dilations, asymmetric padding, a bias,
// the 1×1 kernel that reads its input directly, and im2col in chunks; the
// runs of the columns and the depthwise sums short and long (loops and
// vector kernels), starting and ending in padding or all padding, joined
// across rows ("same" padding) or not (dilations, strides).
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
		// Runs: rows long enough for the vector add (16 and more), rows
		// that start and end in padding, kernel positions that read only
		// padding (kernel wider than the input), dilations with unit
		// strides (contiguous runs a dilation apart), strided rows, rows
		// split between chunks (width 20 in chunks of 64).
		{ir.Shape{2, 5, 40}, ir.Shape{4, 5, 5}, []int{1}, []int{2, 2}, []int{1}, 1, true},
		{ir.Shape{2, 3, 3}, ir.Shape{4, 3, 7}, []int{1}, []int{4, 5}, []int{1}, 1, true},
		{ir.Shape{1, 2, 2, 3}, ir.Shape{3, 2, 5, 5}, []int{1, 1}, []int{3, 4, 4, 3}, []int{1, 1}, 1, false},
		{ir.Shape{2, 3, 20, 20}, ir.Shape{4, 3, 3, 3}, []int{1, 1}, []int{1, 1, 1, 1}, []int{1, 1}, 1, true},
		{ir.Shape{1, 3, 18, 21}, ir.Shape{4, 3, 3, 3}, []int{1, 1}, []int{2, 3, 0, 1}, []int{2, 3}, 1, false},
		{ir.Shape{2, 4, 19, 37}, ir.Shape{4, 2, 3, 4}, []int{2, 3}, []int{1, 2, 1, 0}, []int{1, 1}, 2, true},
		{ir.Shape{1, 2, 3, 5, 22}, ir.Shape{3, 2, 2, 2, 3}, []int{1, 1, 1}, []int{1, 0, 1, 0, 1, 1}, []int{1, 1, 2}, 1, true},
		{ir.Shape{2, 3, 4, 2}, ir.Shape{2, 3, 3, 3}, []int{1, 1}, []int{1, 1, 1, 1}, []int{1, 1}, 1, true}, // padding one apart
		// Depthwise runs: long rows (the four-way dot product and its
		// tail), strides, dilations, rows all padding.
		{ir.Shape{2, 4, 43}, ir.Shape{8, 1, 5}, []int{1}, []int{2, 2}, []int{1}, 4, true},
		{ir.Shape{2, 3, 21, 22}, ir.Shape{3, 1, 3, 3}, []int{1, 1}, []int{1, 1, 1, 1}, []int{2, 1}, 3, false},
		{ir.Shape{1, 2, 17, 35}, ir.Shape{4, 1, 3, 5}, []int{2, 3}, []int{0, 2, 2, 1}, []int{1, 2}, 2, true},
		{ir.Shape{1, 2, 2, 3}, ir.Shape{2, 1, 5, 5}, []int{1, 1}, []int{3, 4, 4, 3}, []int{1, 1}, 2, true},
		{ir.Shape{2, 2, 3, 4, 18}, ir.Shape{2, 1, 2, 3, 3}, []int{1, 1, 2}, []int{1, 1, 0, 0, 1, 2}, []int{2, 1, 1}, 2, false},
	}
	defer func(n, m, c, r int) {
		convChunkFloats, convRunsMax, convColsMax, convRowRunsMax = n, m, c, r
	}(convChunkFloats, convRunsMax, convColsMax, convRowRunsMax)
	rng := rand.New(rand.NewPCG(4, 5))
	// Chunk 1: chunks of 64 output positions, or of the few output rows
	// whose runs fit in 64, and the depthwise runs of a row in blocks of
	// 2 kernel positions. Slices 1280: the columns in K-slices of 20
	// rows (several channels, or part of one), chunks of 64 and plans of
	// at most 64 runs; slices 1: of one row and one output position.
	configs := []struct{ chunk, runs, cols, rowRuns int }{
		{2 << 20, 1 << 16, 2 << 20, 1 << 10},
		{1, 64, 2 << 20, 2},
		{2 << 20, 64, 1280, 1 << 10},
		{2 << 20, 1 << 16, 1, 1 << 10},
	}
	for _, cf := range configs {
		convChunkFloats, convRunsMax, convColsMax, convRowRunsMax = cf.chunk, cf.runs, cf.cols, cf.rowRuns
		for i, c := range cases {
			op := ir.Conv{Strides: c.strides, Pads: c.pads, Dilations: c.dilations, Group: c.group}
			t.Run(fmt.Sprintf("chunk%d_slices%d/%d_%v_%v", cf.chunk, cf.cols, i, c.x, c.w), func(t *testing.T) {
				forISAs(t, func(t *testing.T) {
					g, feeds := convTestGraph(t, rng, c.x, c.w, op, c.bias)
					checkGraph(t, g, feeds, 1e-5, 1e-5)
				})
			})
		}
	}
}

// convTestGraph is a convolution with both its gradients as one graph,
// inputs x, w, b (when bias) and dy, and random inputs for it.
func convTestGraph(t testing.TB, rng *rand.Rand, x, w ir.Shape, op ir.Conv, bias bool) (*ir.Graph, []*ir.Tensor) {
	b := ir.NewBuilder("conv")
	xv, wv := b.Input("x", ir.Float32, x), b.Input("w", ir.Float32, w)
	ins := []*ir.Value{xv, wv}
	feeds := []*ir.Tensor{randTensor(rng, ir.Float32, x, -1, 1), randTensor(rng, ir.Float32, w, -1, 1)}
	if bias {
		ins = append(ins, b.Input("b", ir.Float32, ir.Shape{w[0]}))
		feeds = append(feeds, randTensor(rng, ir.Float32, ir.Shape{w[0]}, -1, 1))
	}
	y := b.Op1(&op, ins...)
	dy := b.Input("dy", ir.Float32, y.Shape)
	feeds = append(feeds, randTensor(rng, ir.Float32, y.Shape, -1, 1))
	b.Output("y", y)
	b.Output("dx", b.Op1(&ir.ConvGradInput{Conv: op, InputShape: x}, dy, wv))
	b.Output("dw", b.Op1(&ir.ConvGradWeight{Conv: op, WeightShape: w}, dy, xv))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	return g, feeds
}

// TestConvThreadsSameBits: the convolution kernels give the same bits on
// any number of threads, with the columns and the depthwise sums split
// over workers (shapes large enough to split), in one chunk and in many;
// and they run without allocating.
func TestConvThreadsSameBits(t *testing.T) {
	cases := []struct {
		x, w  ir.Shape
		pads  []int
		group int
	}{
		{ir.Shape{4, 64, 256}, ir.Shape{64, 64, 5}, []int{2, 2}, 1},
		{ir.Shape{2, 16, 32, 32}, ir.Shape{16, 8, 3, 3}, []int{1, 1, 1, 1}, 2},
		{ir.Shape{4, 8, 32, 33}, ir.Shape{8, 1, 3, 3}, []int{1, 0, 1, 2}, 8},
		{ir.Shape{2, 6, 300}, ir.Shape{12, 1, 7}, []int{3, 3}, 6},
	}
	defer func(n int) { convChunkFloats = n }(convChunkFloats)
	rng := rand.New(rand.NewPCG(6, 7))
	for _, chunk := range []int{2 << 20, 1 << 12} {
		convChunkFloats = chunk
		for i, c := range cases {
			t.Run(fmt.Sprintf("chunk%d/%d_%v_%v", chunk, i, c.x, c.w), func(t *testing.T) {
				spatial := len(c.x) - 2
				op := ir.Conv{Strides: make([]int, spatial), Pads: c.pads, Dilations: make([]int, spatial), Group: c.group}
				for d := range spatial {
					op.Strides[d], op.Dilations[d] = 1, 1
				}
				g, feeds := convTestGraph(t, rng, c.x, c.w, op, true)
				var want []*ir.Tensor
				for _, threads := range []int{1, 2, 3} {
					exe, err := Compile(g, accel.Options{Threads: threads})
					if err != nil {
						t.Fatal(err)
					}
					got, err := exe.Run(feeds)
					if err != nil {
						t.Fatal(err)
					}
					if want == nil {
						want = got
						if !raceEnabled {
							if n := testing.AllocsPerRun(3, func() { _, _ = exe.Run(feeds) }); n != 0 {
								t.Errorf("a run allocates %v times, want 0", n)
							}
						}
						continue
					}
					for o := range got {
						a, b := want[o].Float32s(), got[o].Float32s()
						for j := range a {
							if math.Float32bits(a[j]) != math.Float32bits(b[j]) {
								t.Fatalf("output %q[%d] on %d threads: %v, on 1: %v", g.Outputs[o].Name, j, threads, b[j], a[j])
							}
						}
					}
				}
			})
		}
	}
}

// BenchmarkConv times a convolution with both its gradients (Conv,
// ConvGradInput, ConvGradWeight: one training step's work for the layer)
// on 1 and 2 threads, reporting the work rate at 3·2·M·(C/groups)·K FLOPs
// an output position.
func BenchmarkConv(b *testing.B) {
	type convCase struct {
		name   string
		x, w   ir.Shape
		pads   []int
		stride int
		group  int
	}
	cases := []convCase{
		{"1d_64x256_k5", ir.Shape{8, 64, 256}, ir.Shape{64, 64, 5}, []int{2, 2}, 1, 1},
		{"2d_16to32_16x16_k3", ir.Shape{8, 16, 16, 16}, ir.Shape{32, 16, 3, 3}, []int{1, 1, 1, 1}, 1, 1},
		{"2d_32x16x16_k3", ir.Shape{8, 32, 16, 16}, ir.Shape{32, 32, 3, 3}, []int{1, 1, 1, 1}, 1, 1},
		{"2d_64x56x56_k3_s2", ir.Shape{2, 64, 56, 56}, ir.Shape{64, 64, 3, 3}, []int{1, 1, 1, 1}, 2, 1},
		{"depthwise_256x112x112_k3", ir.Shape{1, 256, 112, 112}, ir.Shape{256, 1, 3, 3}, []int{1, 1, 1, 1}, 1, 256},
	}
	for _, c := range cases {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads=%d", c.name, threads), func(b *testing.B) {
				spatial := len(c.x) - 2
				op := ir.Conv{Strides: make([]int, spatial), Pads: c.pads, Dilations: make([]int, spatial), Group: c.group}
				for d := range spatial {
					op.Strides[d], op.Dilations[d] = c.stride, 1
				}
				g, in := convTestGraph(b, rand.New(rand.NewPCG(1, 2)), c.x, c.w, op, true)
				exe, err := Compile(g, accel.Options{Threads: threads})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := exe.Run(in); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if _, err := exe.Run(in); err != nil {
						b.Fatal(err)
					}
				}
				flops := 3 * 2 * float64(g.Outputs[0].Value.Shape.Size()) * float64(c.w[1:].Size())
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// TestConvScratchBounded: a convolution whose columns would be huge (a
// 4096×4096 kernel over a padded 8×8 input, 33 million rows of columns)
// plans its scratch within convColsMax floats and convRunsMax runs, its
// tables by axis; and one big enough to be computed in K-slices under the
// default bounds matches the reference, its scratch within them.
func TestConvScratchBounded(t *testing.T) {
	op := ir.Conv{Strides: []int{1, 1}, Pads: []int{2048, 2048, 2048, 2048}, Dilations: []int{1, 1}, Group: 1}
	g := newConvGeom(op, ir.Shape{1, 2, 8, 8}, ir.Shape{1, 2, 4096, 4096}, ir.Shape{1, 1, 9, 9}, &convScratch{}, 2)
	if cols := g.chunk * g.sliceCh * g.sliceK; cols > convColsMax || cols == 0 {
		t.Errorf("columns of %d floats a slice (chunk %d, %d channels × %d kernel positions), want at most %d", cols, g.chunk, g.sliceCh, g.sliceK, convColsMax)
	}
	if runs := g.sliceK * (g.chunk/g.ow + 2); runs > convRunsMax {
		t.Errorf("plans of up to %d runs, want at most %d", runs, convRunsMax)
	}
	if len(g.taps) != 4096 || len(g.tapOuter) != 1 || len(g.tapOuter[0]) != 4096 {
		t.Errorf("tables of %d and %d reaches, want 4096 each", len(g.taps), len(g.tapOuter))
	}

	// A 300×300 kernel: 90000 kernel positions a channel, more than
	// convRunsMax/2, and columns of 180000 rows.
	op = ir.Conv{Strides: []int{1, 1}, Pads: []int{150, 149, 150, 149}, Dilations: []int{1, 1}, Group: 1}
	rng := rand.New(rand.NewPCG(8, 9))
	xs, ws := ir.Shape{1, 2, 8, 8}, ir.Shape{3, 2, 300, 300}
	gr, feeds := convTestGraph(t, rng, xs, ws, op, true)
	checkGraph(t, gr, feeds, 1e-4, 1e-5)

	scratch := &convScratch{}
	y := ir.NewTensor(ir.Float32, gr.Outputs[0].Value.Shape)
	k := newConvKernel(2, scratch, &op, feeds[:3], []*ir.Tensor{y})
	if err := k.run(); err != nil {
		t.Fatal(err)
	}
	if n := cap(scratch.buf); n > convColsMax {
		t.Errorf("columns of %d floats, want at most %d", n, convColsMax)
	}
	// A run is at most a move and two zero-fills.
	if n := len(scratch.plan.moves) + len(scratch.plan.zeros); n > 3*convRunsMax {
		t.Errorf("a plan of %d moves and zero-fills, want at most %d", n, 3*convRunsMax)
	}
}
