package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// Rearrangements that import as Reshape, Expand and Transpose — exact,
// differentiable and lowered wherever those are: Tile, DepthToSpace and
// SpaceToDepth.

func init() {
	registerOp("", "Tile", importTile)
	registerOp("", "DepthToSpace", importDepthToSpace)
	registerOp("", "SpaceToDepth", importSpaceToDepth)
	// repeats (and, before opset 6, tiles and axis) decide the shape.
	registerStaticOperands("", "Tile", 1, 2)
}

func importTile(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if im.opset < 6 {
		// Tile-1: tile `tiles` times along `axis`, both scalar inputs.
		if err := wantIn(in, 3, 3); err != nil {
			return nil, err
		}
		tiles, _, err := im.constInts(in, 1, "tiles")
		if err != nil {
			return nil, err
		}
		axis, _, err := im.constInts(in, 2, "axis")
		if err != nil {
			return nil, err
		}
		if len(tiles) != 1 || len(axis) != 1 {
			return nil, fmt.Errorf("tiles and axis have %d and %d elements, want one each", len(tiles), len(axis))
		}
		a, err := normAxis(axis[0], len(in[0].Shape))
		if err != nil {
			return nil, err
		}
		repeats := ones(len(in[0].Shape))
		repeats[a] = tiles[0]
		return one(im.tile(in[0], repeats))
	}
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	repeats, _, err := im.constInts(in, 1, "repeats")
	if err != nil {
		return nil, err
	}
	return one(im.tile(in[0], repeats))
}

// tile repeats x repeats[d] times along every axis d: x reshaped with a
// unit axis before every repeated axis, expanded along the unit axes, and
// reshaped to the tiled shape (out[i] = x[i mod n] on every axis).
func (im *importer) tile(x *Value, repeats []int) (*Value, error) {
	if len(repeats) != len(x.Shape) {
		return nil, fmt.Errorf("%d repeats for rank %d", len(repeats), len(x.Shape))
	}
	var split, expanded Shape
	for d, n := range x.Shape {
		r := repeats[d]
		if r < 0 || r > maxTensorBytes {
			return nil, fmt.Errorf("repeats %v: %d for axis %d", repeats, r, d)
		}
		if r != 1 {
			split = append(split, 1)
			expanded = append(expanded, r)
		}
		split = append(split, n)
		expanded = append(expanded, n)
	}
	if len(split) == len(x.Shape) {
		return x, nil // every repeat is 1
	}
	// The expanded shape holds the tiled one's factors: checking its size
	// first keeps the products below from overflowing.
	if err := checkAmplified(expanded, x.DType.Size(), maxTensorBytes); err != nil {
		return nil, fmt.Errorf("tiling %v by %v: %w", x.Shape, repeats, err)
	}
	tiled := make(Shape, len(x.Shape))
	for d, n := range x.Shape {
		tiled[d] = n * repeats[d]
	}
	return im.rearrange(x, split, &Expand{Shape: expanded}, tiled)
}

// blockAttr reads DepthToSpace's and SpaceToDepth's blocksize and checks
// the input is NCHW.
func blockAttr(n *onnx.Node, x *Value) (int, error) {
	b, err := attrInt(n, "blocksize", 0)
	if err != nil {
		return 0, err
	}
	if n.Attr("blocksize") == nil {
		return 0, fmt.Errorf("attribute blocksize is required")
	}
	if b < 1 {
		return 0, fmt.Errorf("blocksize %d, want a positive size", b)
	}
	if b > maxTensorBytes/b {
		// A b×b block would exceed any tensor (and the products below
		// overflow).
		return 0, fmt.Errorf("blocksize %d is beyond any tensor's size", b)
	}
	if len(x.Shape) != 4 {
		return 0, fmt.Errorf("input %v, want rank 4 (NCHW)", x.Shape)
	}
	return b, nil
}

// rearrange is Reshape to split, op (a Transpose, an Expand), Reshape to
// out.
func (im *importer) rearrange(x *Value, split Shape, op Op, out Shape) (*Value, error) {
	v, err := im.reshape(x, split)
	if err != nil {
		return nil, err
	}
	if v, err = im.emit1(op, v); err != nil {
		return nil, err
	}
	return im.reshape(v, out)
}

// importDepthToSpace moves blocks of channels into b×b spatial blocks.
// DCR (the default) takes the block offset from the outer channel
// digits: out[n, c, h·b+i, w·b+j] = x[n, (i·b+j)·C' + c, h, w] with
// C' = C/b²; CRD from the inner ones: x[n, c·b² + i·b + j, h, w].
func importDepthToSpace(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	b, err := blockAttr(n, x)
	if err != nil {
		return nil, err
	}
	mode, err := n.AttrString("mode", "DCR")
	if err != nil {
		return nil, err
	}
	N, C, H, W := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if C%(b*b) != 0 {
		return nil, fmt.Errorf("%d channels do not split into blocks of %d×%d", C, b, b)
	}
	c := C / (b * b)
	out := Shape{N, c, H * b, W * b}
	switch mode {
	case "DCR":
		return one(im.rearrange(x, Shape{N, b, b, c, H, W}, &Transpose{Perm: []int{0, 3, 4, 1, 5, 2}}, out))
	case "CRD":
		return one(im.rearrange(x, Shape{N, c, b, b, H, W}, &Transpose{Perm: []int{0, 1, 4, 2, 5, 3}}, out))
	}
	return nil, fmt.Errorf("DepthToSpace mode %q, want DCR or CRD", mode)
}

// importSpaceToDepth is DepthToSpace's DCR inverse: out[n, (i·b+j)·C + c,
// h, w] = x[n, c, h·b+i, w·b+j].
func importSpaceToDepth(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	b, err := blockAttr(n, x)
	if err != nil {
		return nil, err
	}
	N, C, H, W := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if H%b != 0 || W%b != 0 {
		return nil, fmt.Errorf("spatial size %d×%d does not split into blocks of %d×%d", H, W, b, b)
	}
	return one(im.rearrange(x, Shape{N, C, H / b, b, W / b, b}, &Transpose{Perm: []int{0, 3, 5, 1, 2, 4}}, Shape{N, C * b * b, H / b, W / b}))
}
