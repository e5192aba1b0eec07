package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// Rotary position embeddings, imported as slices, products and a concat:
// the rotation of each pair (x1, x2) of a head's first rotary_dim
// channels by the angle whose cosine and sine the caches hold.

func init() {
	registerOp("", "RotaryEmbedding", importRotaryEmbedding)
}

// importRotaryEmbedding: RotaryEmbedding (opset 23). X is
// [batch, heads, seq, head_size] or [batch, seq, heads·head_size] (then
// num_heads is required); with position_ids [batch, seq] the caches are
// [max_position, rotary_dim/2] tables indexed by them, without they are
// [batch, seq, rotary_dim/2].
func importRotaryEmbedding(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 4); err != nil {
		return nil, err
	}
	x, cosCache, sinCache, pos := in[0], in[1], in[2], optIn(in, 3)
	if _, err := sameFloatInputs([]string{"X", "cos_cache", "sin_cache"}, x, cosCache, sinCache); err != nil {
		return nil, err
	}
	interleaved, heads, rotaryDim, err := rotaryAttrs(n)
	if err != nil {
		return nil, err
	}
	var batch, seq, headSize int
	switch len(x.Shape) {
	case 4:
		batch, seq, headSize = x.Shape[0], x.Shape[2], x.Shape[3]
		if heads != 0 && heads != x.Shape[1] {
			return nil, fmt.Errorf("num_heads %d, but X %v has %d heads", heads, x.Shape, x.Shape[1])
		}
	case 3:
		if heads == 0 {
			return nil, fmt.Errorf("X %v is 3-D ([batch, seq, hidden]): the num_heads attribute is required", x.Shape)
		}
		if x.Shape[2]%heads != 0 {
			return nil, fmt.Errorf("X's hidden size %d is not a multiple of num_heads %d", x.Shape[2], heads)
		}
		batch, seq, headSize = x.Shape[0], x.Shape[1], x.Shape[2]/heads
	default:
		return nil, fmt.Errorf("X has shape %v, want rank 3 or 4", x.Shape)
	}
	if rotaryDim == 0 {
		rotaryDim = headSize
	}
	if rotaryDim > headSize || rotaryDim%2 != 0 {
		return nil, fmt.Errorf("rotary_embedding_dim %d, want an even number no larger than the head size %d", rotaryDim, headSize)
	}
	half := rotaryDim / 2
	if !cosCache.Shape.Equal(sinCache.Shape) {
		return nil, fmt.Errorf("cos_cache %v and sin_cache %v differ in shape", cosCache.Shape, sinCache.Shape)
	}
	c := &composer{im: im}
	cos, sin := cosCache, sinCache
	if pos != nil {
		if !isIndex(pos.DType) || !pos.Shape.Equal(Shape{batch, seq}) {
			return nil, fmt.Errorf("position_ids is %s%v, want int64 %v", pos.DType, pos.Shape, Shape{batch, seq})
		}
		if len(cosCache.Shape) != 2 || cosCache.Shape[1] != half {
			return nil, fmt.Errorf("with position_ids the caches are [max_position, %d], got %v", half, cosCache.Shape)
		}
		cos = c.op(&Gather{Axis: 0}, cosCache, pos)
		sin = c.op(&Gather{Axis: 0}, sinCache, pos)
	} else {
		want := Shape{batch, seq, half}
		if b, err := BroadcastShapes(cosCache.Shape, want); err != nil || len(cosCache.Shape) != 3 || !b.Equal(want) {
			return nil, fmt.Errorf("without position_ids the caches are [batch, seq, rotary_dim/2] = %v, got %v", want, cosCache.Shape)
		}
	}
	return one(c.rotateHeads(x, cos, sin, heads, headSize, rotaryDim, interleaved), c.err)
}

// rotaryAttrs reads the attributes the rotary embeddings share (0 for an
// absent count).
func rotaryAttrs(n *onnx.Node) (interleaved bool, heads, rotaryDim int, err error) {
	if interleaved, err = attrBool(n, "interleaved"); err != nil {
		return
	}
	if heads, err = attrCount(n, "num_heads"); err != nil {
		return
	}
	rotaryDim, err = attrCount(n, "rotary_embedding_dim")
	return
}

// rotateHeads rotates x, [batch, heads, seq, headSize] or
// [batch, seq, heads·headSize], by the angles whose cosine and sine are
// cos and sin, [batch or 1, seq, rotaryDim/2].
func (c *composer) rotateHeads(x, cos, sin *Value, heads, headSize, rotaryDim int, interleaved bool) *Value {
	if c.err != nil {
		return nil
	}
	// Line the caches up with the sequence axis of x as it is laid out.
	b, seq, half := cos.Shape[0], cos.Shape[1], cos.Shape[2]
	x4, cacheShape := x, Shape{b, 1, seq, half}
	if len(x.Shape) == 3 {
		x4, cacheShape = c.reshape(x, Shape{x.Shape[0], seq, heads, headSize}), Shape{b, seq, 1, half}
	}
	y := c.rotate(x4, c.reshape(cos, cacheShape), c.reshape(sin, cacheShape), rotaryDim, interleaved)
	return c.reshape(y, x.Shape)
}

// rotate applies the rotary embedding to the last axis of x (the head
// channels): the first rotaryDim channels form pairs (x1, x2), halves of
// them or, interleaved, adjacent (even, odd) channels, which become
// (cos·x1 − sin·x2, sin·x1 + cos·x2); the rest pass through. cos and sin
// broadcast to x's shape with rotaryDim/2 as the last dimension.
func (c *composer) rotate(x, cos, sin *Value, rotaryDim int, interleaved bool) *Value {
	if c.err != nil {
		return nil
	}
	last := len(x.Shape) - 1
	headSize, half := x.Shape[last], rotaryDim/2
	var x1, x2 *Value
	if interleaved {
		x1 = c.slice(x, last, 0, half, 2)
		x2 = c.slice(x, last, 1, half, 2)
	} else {
		x1 = c.slice(x, last, 0, half, 1)
		x2 = c.slice(x, last, half, half, 1)
	}
	first := c.binary(Sub, c.mul(cos, x1), c.mul(sin, x2))
	second := c.add(c.mul(sin, x1), c.mul(cos, x2))
	if c.err != nil {
		return nil
	}
	var rotated *Value
	if interleaved {
		pairs := append(first.Shape.Clone(), 1)
		both := c.concat(last+1, c.reshape(first, pairs), c.reshape(second, pairs))
		if c.err != nil {
			return nil
		}
		rotated = c.reshape(both, append(first.Shape[:last].Clone(), rotaryDim))
	} else {
		rotated = c.concat(last, first, second)
	}
	if rotaryDim == headSize {
		return rotated
	}
	return c.concat(last, rotated, c.slice(x, last, rotaryDim, headSize-rotaryDim, 1))
}
