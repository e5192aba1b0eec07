package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// Col2Im and its adjoint Im2Col: the sliding-window rearrangements
// between an image and the columns of its blocks.

func init() {
	registerOp("", "Col2Im", importCol2Im)
	// image_shape and block_shape decide the output shape.
	registerStaticOperands("", "Col2Im", 1, 2)
}

// BlockWindow is the sliding window of Col2Im and Im2Col over an image of
// N×C×Image: blocks of shape Block, dilated by Dilations, placed every
// Strides over the image padded by Pads (begins, then ends). Blocks
// counts the windows along each axis.
type BlockWindow struct {
	Image, Block, Dilations, Pads, Strides []int
}

// check validates the window and returns the number of windows along
// every spatial axis.
func (w *BlockWindow) check() ([]int, error) {
	s := len(w.Image)
	if s == 0 || len(w.Block) != s || len(w.Dilations) != s || len(w.Strides) != s || len(w.Pads) != 2*s {
		return nil, fmt.Errorf("image %v, block %v, dilations %v, strides %v, pads %v: want %d of each (pads twice)", w.Image, w.Block, w.Dilations, w.Strides, w.Pads, s)
	}
	counts := make([]int, s)
	for d := range s {
		img, blk, dil, str, pb, pe := w.Image[d], w.Block[d], w.Dilations[d], w.Strides[d], w.Pads[d], w.Pads[s+d]
		for _, v := range []int{img, blk, dil, str, pb, pe} {
			if v < 0 || v > maxTensorBytes {
				return nil, fmt.Errorf("axis %d: image %d, block %d, dilation %d, stride %d, pads %d, %d: want sizes within any tensor's", d, img, blk, dil, str, pb, pe)
			}
		}
		if blk < 1 || dil < 1 || str < 1 {
			return nil, fmt.Errorf("axis %d: block %d, dilation %d, stride %d, want positive", d, blk, dil, str)
		}
		if blk > 1 && dil > maxTensorBytes/(blk-1) {
			return nil, fmt.Errorf("axis %d: block %d dilated by %d spans more than any tensor", d, blk, dil)
		}
		span := dil*(blk-1) + 1
		if span > img+pb+pe {
			return nil, fmt.Errorf("axis %d: a block spanning %d does not fit the padded image of %d", d, span, img+pb+pe)
		}
		counts[d] = (img+pb+pe-span)/str + 1
	}
	// The products of these are taken below.
	for _, sh := range []Shape{w.Image, w.Block, counts} {
		if err := checkShape(sh, 1, maxTensorBytes); err != nil {
			return nil, err
		}
	}
	return counts, nil
}

// columnsShape is the shape of the columns of an image of n×c×Image.
func (w *BlockWindow) columnsShape(n, c int, counts []int) (Shape, error) {
	blk := Shape(w.Block).Size()
	cols := Shape(counts).Size()
	if err := checkShape(Shape{n, c, blk, cols}, 1, maxTensorBytes); err != nil {
		return nil, err
	}
	return Shape{n, c * blk, cols}, nil
}

// walk calls fn(col, img) for every column element that reads an image
// element (not the padding): col is its flat index in the N×(C·B)×L
// columns, img in the N×C×Image image.
func (w *BlockWindow) walk(n, c int, counts []int, fn func(col, img int)) {
	s := len(w.Image)
	blk := Shape(w.Block).Size()
	cols := Shape(counts).Size()
	imgSize := Shape(w.Image).Size()
	imgStrides := Shape(w.Image).Strides()
	kpos := make([]int, s)
	lpos := make([]int, s)
	for k := range blk {
		unflatten(k, w.Block, kpos)
		for l := range cols {
			unflatten(l, counts, lpos)
			off, inside := 0, true
			for d := range s {
				p := lpos[d]*w.Strides[d] - w.Pads[d] + kpos[d]*w.Dilations[d]
				if p < 0 || p >= w.Image[d] {
					inside = false
					break
				}
				off += p * imgStrides[d]
			}
			if !inside {
				continue
			}
			for b := range n {
				for ch := range c {
					fn(((b*c+ch)*blk+k)*cols+l, (b*c+ch)*imgSize+off)
				}
			}
		}
	}
}

// ---------------------------------------------------------------- Col2Im

// Col2Im sums columns back into an image: its input has shape
// N×(C·∏Block)×L (L windows), its output N×C×Image, and every column
// element adds into the image element its window position covers
// (elements over the padding are dropped).
type Col2Im struct {
	BlockWindow
}

func (op *Col2Im) Name() string { return "Col2Im" }

func (op *Col2Im) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if !isComputable(x.DType) {
		return nil, fmt.Errorf("input is %s, want a number type", x.DType)
	}
	counts, err := op.check()
	if err != nil {
		return nil, err
	}
	if len(x.Shape) != 3 {
		return nil, fmt.Errorf("input %v, want rank 3 (N, C·block, blocks)", x.Shape)
	}
	blk := Shape(op.Block).Size()
	if x.Shape[1]%blk != 0 {
		return nil, fmt.Errorf("input %v: %d rows are not a multiple of the block size %d", x.Shape, x.Shape[1], blk)
	}
	cols, err := op.columnsShape(x.Shape[0], x.Shape[1]/blk, counts)
	if err != nil {
		return nil, err
	}
	if !cols.Equal(x.Shape) {
		return nil, fmt.Errorf("input %v, want %v columns for image %v and block %v", x.Shape, cols, op.Image, op.Block)
	}
	return []Type{{x.DType, append(Shape{x.Shape[0], x.Shape[1] / blk}, op.Image...)}}, nil
}

func (op *Col2Im) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	x, y := in[0], out[0]
	counts, _ := op.check()
	n, c := y.shape[0], y.shape[1]
	if x.dtype.IsFloat() {
		src := Convert(x, Float64).Float64s()
		res := make([]float64, y.Len())
		op.walk(n, c, counts, func(col, img int) { res[img] += src[col] })
		storeFloats(y, res)
		return nil
	}
	res := make([]int64, y.Len())
	op.walk(n, c, counts, func(col, img int) { res[img] += x.Int64At(col) })
	for i, v := range res {
		storeInt(y, i, v, true, RoundUp)
	}
	return nil
}

// gradRule: Col2Im is linear; its adjoint is Im2Col.
func (op *Col2Im) gradRule(d *differ, c *gradCtx) error {
	c.add(0, d.emit1(&Im2Col{BlockWindow: op.BlockWindow}, c.dy[0]))
	return nil
}

// ---------------------------------------------------------------- Im2Col

// Im2Col cuts an N×C×Image image into the columns Col2Im sums: out has
// shape N×(C·∏Block)×L and holds, for every window and block position,
// the image element there (zero over the padding).
type Im2Col struct {
	BlockWindow
}

func (op *Im2Col) Name() string { return "Im2Col" }

func (op *Im2Col) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	counts, err := op.check()
	if err != nil {
		return nil, err
	}
	if len(x.Shape) != 2+len(op.Image) || !x.Shape[2:].Equal(op.Image) {
		return nil, fmt.Errorf("input %v, want N×C×%v", x.Shape, op.Image)
	}
	cols, err := op.columnsShape(x.Shape[0], x.Shape[1], counts)
	if err != nil {
		return nil, err
	}
	return []Type{{x.DType, cols}}, nil
}

func (op *Im2Col) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	counts, _ := op.check()
	es := x.dtype.Size()
	clear(y.data)
	op.walk(x.shape[0], x.shape[1], counts, func(col, img int) {
		copy(y.data[col*es:(col+1)*es], x.data[img*es:(img+1)*es])
	})
	return nil
}

// gradRule: Im2Col's adjoint is Col2Im.
func (op *Im2Col) gradRule(d *differ, c *gradCtx) error {
	c.add(0, d.emit1(&Col2Im{BlockWindow: op.BlockWindow}, c.dy[0]))
	return nil
}

func importCol2Im(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	image, _, err := im.constInts(in, 1, "image_shape")
	if err != nil {
		return nil, err
	}
	block, _, err := im.constInts(in, 2, "block_shape")
	if err != nil {
		return nil, err
	}
	w := BlockWindow{Image: image, Block: block}
	s := len(image)
	if w.Dilations, err = spatialAttr(n, "dilations", s, 1); err != nil {
		return nil, err
	}
	if w.Strides, err = spatialAttr(n, "strides", s, 1); err != nil {
		return nil, err
	}
	if w.Pads, err = spatialAttr(n, "pads", 2*s, 0); err != nil {
		return nil, err
	}
	return one(im.emit1(&Col2Im{BlockWindow: w}, in[0]))
}

// spatialAttr reads an INTS attribute of length want, def in every
// element when absent.
func spatialAttr(n *onnx.Node, name string, want, def int) ([]int, error) {
	v, ok, err := attrInts(n, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		v = make([]int, want)
		for i := range v {
			v[i] = def
		}
	}
	if len(v) != want {
		return nil, fmt.Errorf("attribute %s has %d elements, want %d", name, len(v), want)
	}
	return v, nil
}
