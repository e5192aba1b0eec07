package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

func init() {
	registerOp("", "GridSample", importGridSample)
	registerOp("", "AffineGrid", importAffineGrid)
	registerStaticOperands("", "AffineGrid", 1)
}

// ---------------------------------------------------------------- GridSample

// GridSampleMode is how GridSample interpolates.
type GridSampleMode uint8

const (
	GridLinear GridSampleMode = iota
	GridNearest
	GridCubic
)

// GridPadding is how GridSample treats coordinates outside the input.
type GridPadding uint8

const (
	GridZeros GridPadding = iota
	GridBorder
	GridReflection
)

// GridSample samples X [N, C, D1..Dr] at the positions of grid
// [N, O1..Or, r] (normalized to [-1, 1], the last axis listing the
// coordinate of Dr first): output [N, C, O1..Or]. A coordinate maps to the
// input's extent (the centers of the corner elements with AlignCorners,
// their outer edges without); positions outside read zeros, the border or
// the reflection, as Padding says. Linear and cubic (Keys, a = -0.75)
// interpolation are separable over the axes; nearest rounds half to even
// (as the ONNX backend tests' outputs do for every rank).
type GridSample struct {
	Mode         GridSampleMode
	Padding      GridPadding
	AlignCorners bool
}

func (op *GridSample) Name() string { return "GridSample" }

func (op *GridSample) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	x, grid := in[0], in[1]
	if !isFloat(x.DType) || !isFloat(grid.DType) {
		return nil, fmt.Errorf("input %s and grid %s, want float types", x.DType, grid.DType)
	}
	r := len(x.Shape) - 2
	if r < 1 || len(grid.Shape) != r+2 || grid.Shape[0] != x.Shape[0] || grid.Shape[r+1] != r {
		return nil, fmt.Errorf("input %v and grid %v, want N×C×D1..Dr and N×O1..Or×r", x.Shape, grid.Shape)
	}
	out := append(Shape{x.Shape[0], x.Shape[1]}, grid.Shape[1:r+1]...)
	return []Type{{x.DType, out}}, nil
}

// gridTap is one input position an output reads along one axis, with its
// weight and the weight's derivative with respect to the normalized grid
// coordinate; index -1 reads zero (padding zeros).
type gridTap struct {
	index         int
	weight, slope float64
}

// reflect folds x into [lo, hi] by reflecting at the borders.
func reflect(x, lo, hi float64) float64 {
	y, _ := reflectSlope(x, lo, hi)
	return y
}

// reflectSlope is reflect and its derivative (±1).
func reflectSlope(x, lo, hi float64) (float64, float64) {
	span := hi - lo
	if span <= 0 {
		return lo, 0
	}
	switch {
	case x < lo:
		d := lo - x
		n := math.Trunc(d / span)
		r := d - n*span
		if math.Mod(n, 2) == 0 {
			return lo + r, -1
		}
		return hi - r, 1
	case x > hi:
		d := x - hi
		n := math.Trunc(d / span)
		r := d - n*span
		if math.Mod(n, 2) == 0 {
			return hi - r, -1
		}
		return lo + r, 1
	}
	return x, 1
}

// cubicKernelSlope is the derivative of cubicKernel at x ≥ 0.
func cubicKernelSlope(x, a float64) float64 {
	switch {
	case x <= 1:
		return (3*(a+2)*x - 2*(a+3)) * x
	case x < 2:
		return (3*a*x-10*a)*x + 8*a
	}
	return 0
}

// taps appends the positions along an axis of length size that a sample at
// normalized coordinate g reads. With narrow (a grid of float32 or
// narrower) the coordinate is rounded to float32, as ONNX's definition
// computes it.
func (op *GridSample) taps(dst []gridTap, g float64, size int, narrow bool) []gridTap {
	var x, slope float64 // slope: dx/dg
	if op.AlignCorners {
		x, slope = (g+1)/2*float64(size-1), float64(size-1)/2
	} else {
		x, slope = ((g+1)*float64(size)-1)/2, float64(size)/2
	}
	if narrow {
		x = float64(float32(x))
	}
	lo, hi := -0.5, float64(size)-0.5
	if op.AlignCorners {
		lo, hi = 0, float64(size-1)
	}
	if op.Mode == GridNearest {
		x, slope = math.RoundToEven(x), 0
	}
	if x < lo || x > hi {
		switch op.Padding {
		case GridBorder:
			x, slope = min(max(x, 0), float64(size-1)), 0
		case GridReflection:
			var s float64
			x, s = reflectSlope(x, lo, hi)
			slope *= s
		}
	}
	at := func(i int) int {
		if i >= 0 && i < size {
			return i
		}
		switch op.Padding {
		case GridBorder:
			return min(max(i, 0), size-1)
		case GridReflection:
			return int(reflect(float64(i), lo, hi))
		}
		return -1
	}
	switch op.Mode {
	case GridNearest:
		return append(dst, gridTap{at(int(x)), 1, 0})
	case GridLinear:
		x0 := math.Floor(x)
		t := x - x0
		i := int(x0)
		return append(dst, gridTap{at(i), 1 - t, -slope}, gridTap{at(i + 1), t, slope})
	default:
		x0 := math.Floor(x)
		t := x - x0
		i := int(x0)
		const a = -0.75
		return append(dst,
			gridTap{at(i - 1), cubicKernel(t+1, a), cubicKernelSlope(t+1, a) * slope},
			gridTap{at(i), cubicKernel(t, a), cubicKernelSlope(t, a) * slope},
			gridTap{at(i + 1), cubicKernel(1-t, a), -cubicKernelSlope(1-t, a) * slope},
			gridTap{at(i + 2), cubicKernel(2-t, a), -cubicKernelSlope(2-t, a) * slope})
	}
}

// gridWalk calls f for every output position of a GridSample of x
// (shape xShape) at grid (values gv, shape gShape), with the taps of each
// spatial axis.
func (op *GridSample) gridWalk(xShape, gShape Shape, gv []float64, narrow bool, f func(b, o int, perAxis [][]gridTap)) {
	r := len(xShape) - 2
	spatial := xShape[2:]
	outSize := gShape[1 : r+1].Size()
	perAxis := make([][]gridTap, r)
	for b := range xShape[0] {
		for o := range outSize {
			coords := gv[(b*outSize+o)*r : (b*outSize+o+1)*r]
			for d := range r {
				// The grid lists the innermost axis first.
				perAxis[d] = op.taps(perAxis[d][:0], coords[r-1-d], spatial[d], narrow)
			}
			f(b, o, perAxis)
		}
	}
}

// tapProduct calls f for every combination of one tap per axis that reads
// inside the input, with the combination's weight, its flat offset in
// the spatial plane and the chosen taps (pick[d] indexes perAxis[d]).
func tapProduct(perAxis [][]gridTap, strides []int, pick []int, f func(weight float64, off int)) {
	r := len(perAxis)
	clear(pick)
	for {
		w, off := 1.0, 0
		for d := range r {
			t := perAxis[d][pick[d]]
			if t.index < 0 {
				w, off = 0, -1
				break
			}
			w *= t.weight
			off += t.index * strides[d]
		}
		if off >= 0 {
			f(w, off)
		}
		d := r - 1
		for ; d >= 0; d-- {
			pick[d]++
			if pick[d] < len(perAxis[d]) {
				break
			}
			pick[d] = 0
		}
		if d < 0 {
			return
		}
	}
}

func (op *GridSample) Eval(in, out []*Tensor) error {
	x, grid, y := in[0], in[1], out[0]
	xv := Convert(x, Float64).Float64s()
	c := x.shape[1]
	inSize := x.shape[2:].Size()
	inStr := x.shape[2:].Strides()
	outSize := y.shape[2:].Size()
	res := make([]float64, y.Len())
	pick := make([]int, len(x.shape)-2)
	op.gridWalk(x.shape, grid.shape, Convert(grid, Float64).Float64s(), grid.dtype != Float64, func(b, o int, perAxis [][]gridTap) {
		for ch := range c {
			plane := xv[(b*c+ch)*inSize : (b*c+ch+1)*inSize]
			sum := 0.0
			tapProduct(perAxis, inStr, pick, func(w float64, off int) {
				if w != 0 {
					sum += w * plane[off]
				}
			})
			res[(b*c+ch)*outSize+o] = sum
		}
	})
	storeFloats(y, res)
	return nil
}

// gradRule of GridSample: both gradients come from GridSampleGrad.
func (op *GridSample) gradRule(d *differ, c *gradCtx) error {
	if !c.needs(0) && !c.needs(1) {
		return nil
	}
	outs := d.emit(&GridSampleGrad{GridSample: *op}, c.dy[0], c.in(0), c.in(1))
	if c.needs(0) {
		c.add(0, outs[0])
	}
	if c.needs(1) {
		c.add(1, outs[1])
	}
	return nil
}

// GridSampleGrad is the gradient of GridSample (the embedded attributes):
// inputs dy (the output's gradient), X and grid; outputs dX, the sampling
// weights scattering dy back onto X, and dgrid, dy times the derivative of
// each sample with respect to its normalized coordinates (zero for
// nearest, and where border padding clamps the coordinate).
type GridSampleGrad struct {
	GridSample
}

func (op *GridSampleGrad) Name() string { return "GridSampleGrad" }

func (op *GridSampleGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 3, 3); err != nil {
		return nil, err
	}
	fwd, err := op.GridSample.Infer(in[1:])
	if err != nil {
		return nil, err
	}
	if !in[0].Shape.Equal(fwd[0].Shape) || in[0].DType != fwd[0].DType {
		return nil, fmt.Errorf("dy is %v, GridSample's output %v", in[0], fwd[0])
	}
	return []Type{in[1], in[2]}, nil
}

func (op *GridSampleGrad) Eval(in, out []*Tensor) error {
	dy, x, grid := in[0], in[1], in[2]
	dyv, xv := Convert(dy, Float64).Float64s(), Convert(x, Float64).Float64s()
	r := len(x.shape) - 2
	c := x.shape[1]
	inSize := x.shape[2:].Size()
	inStr := x.shape[2:].Strides()
	outSize := dy.shape[2:].Size()
	dx := make([]float64, x.Len())
	dgrid := make([]float64, grid.Len())
	pick := make([]int, r)
	op.gridWalk(x.shape, grid.shape, Convert(grid, Float64).Float64s(), grid.dtype != Float64, func(b, o int, perAxis [][]gridTap) {
		for ch := range c {
			g := dyv[(b*c+ch)*outSize+o]
			base := (b*c + ch) * inSize
			tapProduct(perAxis, inStr, pick, func(w float64, off int) {
				dx[base+off] += g * w
				v := g * xv[base+off]
				for d := range r {
					// The weight's derivative along axis d: its own
					// tap's slope times the other axes' weights.
					s := perAxis[d][pick[d]].slope
					for e := range r {
						if e != d && s != 0 {
							s *= perAxis[e][pick[e]].weight
						}
					}
					dgrid[(b*outSize+o)*r+r-1-d] += v * s
				}
			})
		}
	})
	if out[0] != nil {
		storeFloats(out[0], dx)
	}
	if len(out) > 1 && out[1] != nil {
		storeFloats(out[1], dgrid)
	}
	return nil
}

func importGridSample(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	op := &GridSample{}
	def := "linear"
	if im.opset < 20 {
		def = "bilinear"
	}
	mode, err := n.AttrString("mode", def)
	if err != nil {
		return nil, err
	}
	switch mode {
	case "linear", "bilinear":
		op.Mode = GridLinear
	case "nearest":
		op.Mode = GridNearest
	case "cubic", "bicubic":
		op.Mode = GridCubic
	default:
		return nil, fmt.Errorf("mode %q, want linear, nearest or cubic", mode)
	}
	padding, err := n.AttrString("padding_mode", "zeros")
	if err != nil {
		return nil, err
	}
	switch padding {
	case "zeros":
		op.Padding = GridZeros
	case "border":
		op.Padding = GridBorder
	case "reflection":
		op.Padding = GridReflection
	default:
		return nil, fmt.Errorf("padding_mode %q, want zeros, border or reflection", padding)
	}
	align, err := attrInt(n, "align_corners", 0)
	if err != nil {
		return nil, err
	}
	if align != 0 && align != 1 {
		return nil, fmt.Errorf("align_corners %d, want 0 or 1", align)
	}
	op.AlignCorners = align == 1
	return one(im.emit1(op, in...))
}

// ---------------------------------------------------------------- AffineGrid

// importAffineGrid: the grid for theta [N, 2, 3] and size [N, C, H, W]
// (or [N, 3, 4] and [N, C, D, H, W]) is the matrix product of the base
// grid, every output position's normalized coordinates (x, y[, z], 1), with
// theta transposed: grid[n, h, w] = theta[n]·(x_w, y_h, 1). The base grid
// is a constant, so the grid is one MatMul, differentiable in theta.
func importAffineGrid(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	theta := in[0]
	size, _, err := im.constInts(in, 1, "size")
	if err != nil {
		return nil, err
	}
	align, err := attrInt(n, "align_corners", 0)
	if err != nil {
		return nil, err
	}
	if align != 0 && align != 1 {
		return nil, fmt.Errorf("align_corners %d, want 0 or 1", align)
	}
	if len(size) != 4 && len(size) != 5 {
		return nil, fmt.Errorf("size %v, want N, C, H, W or N, C, D, H, W", size)
	}
	r := len(size) - 2
	if !isFloat(theta.DType) || !theta.Shape.Equal(Shape{size[0], r, r + 1}) {
		return nil, fmt.Errorf("theta is %v, want a float tensor [%d, %d, %d]", theta.Type, size[0], r, r+1)
	}
	spatial := Shape(size[2:])
	for _, s := range spatial {
		if s < 0 {
			return nil, fmt.Errorf("size %v", size)
		}
	}
	points := spatial.Size()
	if err := checkShape(Shape{points, r + 1}, 8, maxFoldBytes); err != nil {
		return nil, fmt.Errorf("size %v: %w", size, err)
	}
	// linspace over [-1, 1]: element centers, or the corner elements at
	// ±1 with align_corners (where a single element sits at -1, as in
	// ONNX's definition; PyTorch puts it at 0).
	coord := func(i, length int) float64 {
		if align == 1 {
			if length <= 1 {
				return -1
			}
			return -1 + 2*float64(i)/float64(length-1)
		}
		return -1 + (2*float64(i)+1)/float64(length)
	}
	base := make([]float64, points*(r+1))
	pos := make([]int, r)
	for p := range points {
		unflatten(p, spatial, pos)
		row := base[p*(r+1) : (p+1)*(r+1)]
		for d := range r {
			// x (the last axis) comes first.
			row[d] = coord(pos[r-1-d], spatial[r-1-d])
		}
		row[r] = 1
	}
	bt := NewTensor(theta.DType, Shape{points, r + 1})
	storeFloats(bt, base)
	thetaT, err := im.emit1(&Transpose{Perm: []int{0, 2, 1}}, theta)
	if err != nil {
		return nil, err
	}
	grid, err := im.emit1(&MatMul{}, im.constant(bt), thetaT)
	if err != nil {
		return nil, err
	}
	out := append(Shape{size[0]}, spatial...)
	return one(im.reshape(grid, append(out, r)))
}
