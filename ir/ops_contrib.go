package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// onnxruntime's contrib operators (domain com.microsoft) that its
// transformer optimizer and the genai model builder write in place of the
// spelled-out normalizations, activations and rotary embeddings, imported
// as the same compositions as their ONNX counterparts.

const contribDomain = "com.microsoft"

func init() {
	registerOp(contribDomain, "SkipLayerNormalization", importSkipNorm(false))
	registerOp(contribDomain, "SkipSimplifiedLayerNormalization", importSkipNorm(true))
	// onnxruntime registers SimplifiedLayerNormalization in the default
	// domain, as it does its LayerNormalization for opsets before 17
	// (which the default domain's import covers).
	registerOp("", "SimplifiedLayerNormalization", importRMSNorm("scale", true))
	registerOp(contribDomain, "Gelu", importContribGelu(Gelu, false))
	registerOp(contribDomain, "BiasGelu", importContribGelu(Gelu, true))
	registerOp(contribDomain, "FastGelu", importContribGelu(GeluTanh, true))
	registerOp(contribDomain, "QuickGelu", importQuickGelu)
	registerOp(contribDomain, "BiasAdd", importBiasAdd)
	registerOp(contribDomain, "RotaryEmbedding", importContribRotary)
	// The contrib versions of the opset-27 recurrent layers
	// (ops_linear_attention.go) take the same inputs and attributes.
	registerOp(contribDomain, "LinearAttention", importLinearAttention)
	registerOp(contribDomain, "CausalConvWithState", importCausalConvWithState)
}

// defaultSkipNormEpsilon is onnxruntime's epsilon for the skip
// normalizations when the node has none.
const defaultSkipNormEpsilon = 1e-12

// importSkipNorm: SkipLayerNormalization (input, skip, gamma, beta, bias)
// and SkipSimplifiedLayerNormalization (input, skip, gamma, bias).
// s = input + skip (+ bias) is normalized over its last axis (layer norm,
// or RMS norm when simplified) and scaled by gamma (plus beta). Outputs:
// the result, mean and inv_std_var [.., 1] (float32; no mean when
// simplified), and s.
func importSkipNorm(simplified bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		maxIn := 5
		if simplified {
			maxIn = 4
		}
		if err := wantIn(in, 3, maxIn); err != nil {
			return nil, err
		}
		x, skip, gamma := in[0], in[1], in[2]
		var beta, bias *Value
		if simplified {
			bias = optIn(in, 3)
		} else {
			beta, bias = optIn(in, 3), optIn(in, 4)
		}
		names := []string{"input", "skip", "gamma", "beta", "bias"}
		if _, err := sameFloatInputs(names, x, skip, gamma, beta, bias); err != nil {
			return nil, err
		}
		if r := len(x.Shape); r != 2 && r != 3 {
			return nil, fmt.Errorf("input has shape %v, want [batch, seq, hidden] or [tokens, hidden]", x.Shape)
		}
		hidden := x.Shape[len(x.Shape)-1]
		if b, err := BroadcastShapes(x.Shape, skip.Shape); err != nil || !b.Equal(x.Shape) || skip.Shape[len(skip.Shape)-1] != hidden {
			return nil, fmt.Errorf("skip has shape %v, want one broadcastable to input's %v", skip.Shape, x.Shape)
		}
		for i, v := range []*Value{gamma, beta, bias} {
			if v != nil && !v.Shape.Equal(Shape{hidden}) {
				return nil, fmt.Errorf("%s has shape %v, want [%d]", []string{"gamma", "beta", "bias"}[i], v.Shape, hidden)
			}
		}
		if simplified && wants(n, 1) {
			return nil, fmt.Errorf("%w: the mean output of SkipSimplifiedLayerNormalization (an RMS norm has none)", ErrNotSupported)
		}
		eps, err := n.AttrFloat("epsilon", defaultSkipNormEpsilon)
		if err != nil {
			return nil, err
		}
		c := &composer{im: im}
		sum := c.add(x, skip)
		if bias != nil {
			sum = c.add(sum, bias)
		}
		axis := len(x.Shape) - 1
		var y, mean, invStd *Value
		if simplified {
			y, invStd = c.rmsNorm(sum, gamma, axis, float64(eps), Float32)
		} else {
			outs := c.ops(&LayerNorm{Axis: axis, Epsilon: eps}, sum, gamma, beta)
			if outs != nil {
				y, mean, invStd = outs[0], outs[1], outs[2]
			}
		}
		return []*Value{y, c.cast(mean, Float32), c.cast(invStd, Float32), sum}, c.err
	}
}

// importContribGelu: Gelu (X), BiasGelu (A, B) and FastGelu (X, optional
// bias): fn (the erf GELU or its tanh approximation) of the operands'
// sum.
func importContribGelu(fn UnaryFn, withBias bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		hi := 1
		if withBias {
			hi = 2
		}
		if err := wantIn(in, 1, hi); err != nil {
			return nil, err
		}
		x, bias := in[0], optIn(in, 1)
		if n.OpType == "BiasGelu" && bias == nil {
			return nil, fmt.Errorf("input 1 (bias) is required")
		}
		if _, err := sameFloatInputs([]string{"input", "bias"}, x, bias); err != nil {
			return nil, err
		}
		c := &composer{im: im}
		if bias != nil {
			if !bias.Shape.Equal(x.Shape[len(x.Shape)-1:]) && !bias.Shape.Equal(x.Shape) {
				return nil, fmt.Errorf("bias has shape %v, want [%d] or %v", bias.Shape, x.Shape[len(x.Shape)-1], x.Shape)
			}
			x = c.add(x, bias)
		}
		return one(c.unary(fn, x), c.err)
	}
}

// importQuickGelu: QuickGelu, x·sigmoid(alpha·x) (alpha 1.702 by default).
func importQuickGelu(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if _, err := sameFloatInputs([]string{"X"}, x); err != nil {
		return nil, err
	}
	alpha, err := n.AttrFloat("alpha", 1.702)
	if err != nil {
		return nil, err
	}
	c := &composer{im: im}
	return one(c.mul(x, c.unary(Sigmoid, c.scale(x, float64(alpha)))), c.err)
}

// importBiasAdd: BiasAdd, X [B, S, C] + bias [C] + skip [B, S, C].
func importBiasAdd(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	x, bias, skip := in[0], in[1], in[2]
	if _, err := sameFloatInputs([]string{"X", "bias", "skip"}, x, bias, skip); err != nil {
		return nil, err
	}
	if len(x.Shape) != 3 || !skip.Shape.Equal(x.Shape) || !bias.Shape.Equal(Shape{x.Shape[2]}) {
		return nil, fmt.Errorf("X %v, bias %v, skip %v: want [batch, seq, channels], [channels] and X's shape", x.Shape, bias.Shape, skip.Shape)
	}
	c := &composer{im: im}
	return one(c.add(c.add(x, bias), skip), c.err)
}

// importContribRotary: com.microsoft RotaryEmbedding (input, position_ids,
// cos_cache, sin_cache). input is [batch, seq, hidden] or
// [batch, heads, seq, head_size]; position_ids is [batch, seq] or [1], an
// offset added to 0..seq-1; the caches are [max_position, rotary_dim/2].
// For 3-D input without num_heads, the head size is twice the caches'
// width.
func importContribRotary(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 4, 4); err != nil {
		return nil, err
	}
	x, pos, cosCache, sinCache := in[0], in[1], in[2], in[3]
	if _, err := sameFloatInputs([]string{"input", "cos_cache", "sin_cache"}, x, cosCache, sinCache); err != nil {
		return nil, err
	}
	interleaved, heads, rotaryDim, err := rotaryAttrs(n)
	if err != nil {
		return nil, err
	}
	if packed, err := attrInt(n, "is_packed_batching", 0); err != nil {
		return nil, err
	} else if packed != 0 {
		return nil, fmt.Errorf("%w: RotaryEmbedding with is_packed_batching", ErrNotSupported)
	}
	if s, _, err := attrFloatOpt(n, "scale"); err != nil {
		return nil, err
	} else if s != 0 && s != 1 {
		return nil, fmt.Errorf("%w: RotaryEmbedding with scale %g", ErrNotSupported, s)
	}
	if len(cosCache.Shape) != 2 || !sinCache.Shape.Equal(cosCache.Shape) {
		return nil, fmt.Errorf("cos_cache %v and sin_cache %v, want both [max_position, rotary_dim/2]", cosCache.Shape, sinCache.Shape)
	}
	half := cosCache.Shape[1]
	var batch, seq, headSize int
	switch len(x.Shape) {
	case 4:
		batch, seq, headSize = x.Shape[0], x.Shape[2], x.Shape[3]
	case 3:
		batch, seq = x.Shape[0], x.Shape[1]
		switch {
		case heads > 0:
			if x.Shape[2]%heads != 0 {
				return nil, fmt.Errorf("input's hidden size %d is not a multiple of num_heads %d", x.Shape[2], heads)
			}
			headSize = x.Shape[2] / heads
		case rotaryDim > 0:
			return nil, fmt.Errorf("rotary_embedding_dim needs num_heads for a 3-D input")
		default:
			headSize = 2 * half
			if headSize == 0 || x.Shape[2]%headSize != 0 {
				return nil, fmt.Errorf("input's hidden size %d is not a multiple of the head size %d the caches imply", x.Shape[2], headSize)
			}
			heads = x.Shape[2] / headSize
		}
	default:
		return nil, fmt.Errorf("input has shape %v, want rank 3 or 4", x.Shape)
	}
	if rotaryDim == 0 {
		rotaryDim = headSize
	}
	if rotaryDim > headSize || rotaryDim%2 != 0 || rotaryDim/2 != half {
		return nil, fmt.Errorf("rotary dimension %d (head size %d) and caches %v: want an even rotary dimension twice the caches' width, at most the head size", rotaryDim, headSize, cosCache.Shape)
	}
	if pos.DType != Int64 {
		return nil, fmt.Errorf("position_ids is %s, want int64", pos.DType)
	}
	c := &composer{im: im}
	switch {
	case pos.Shape.Equal(Shape{batch, seq}):
	case pos.Shape.Equal(Shape{1}):
		steps := c.table(Int64, Shape{1, seq}, func(_, s int) float64 { return float64(s) })
		pos = c.add(c.reshape(pos, Shape{1, 1}), steps)
	default:
		return nil, fmt.Errorf("position_ids has shape %v, want %v or [1]", pos.Shape, Shape{batch, seq})
	}
	cos := c.op(&Gather{Axis: 0}, cosCache, pos)
	sin := c.op(&Gather{Axis: 0}, sinCache, pos)
	return one(c.rotateHeads(x, cos, sin, heads, headSize, rotaryDim, interleaved), c.err)
}
