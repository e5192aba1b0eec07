package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// onnxruntime's contrib attention operators, imported onto the same
// scaled dot-product attention as ONNX Attention (ops_attention.go): the
// input projections, biases, caches, masks and rotary embeddings they fuse
// become the ops they stand for.

func init() {
	registerOp(contribDomain, "MultiHeadAttention", importMultiHeadAttention)
	registerOp(contribDomain, "GroupQueryAttention", importGroupQueryAttention)
	registerOp(contribDomain, "Attention", importContribAttention)
	registerStaticOperands(contribDomain, "GroupQueryAttention", 6)
}

// contribScale reads the scale attribute (0 or absent: 1/√head_size).
func contribScale(n *onnx.Node, headSize int) (float64, error) {
	s, _, err := attrFloatOpt(n, "scale")
	if err != nil {
		return 0, err
	}
	if s == 0 {
		s = 1 / math.Sqrt(float64(headSize))
	}
	return s, nil
}

// unsupportedInputs rejects the node's inputs at positions dstune does not
// implement.
func unsupportedInputs(in []*Value, names map[int]string) error {
	for i, name := range names {
		if optIn(in, i) != nil {
			return fmt.Errorf("%w: the %s input", ErrNotSupported, name)
		}
	}
	return nil
}

// maskWhere is a bias of dt: 0 where keep, fill elsewhere.
func (c *composer) maskWhere(keep *Value, dt DType, fill float64) *Value {
	return c.op(&Where{}, keep, c.scalar(dt, 0), c.scalar(dt, fill))
}

// causalBias masks key j for query i when j > i + offset (offset a
// constant, or per batch entry an int64 [B] value): a [q, total] or
// [B, 1, q, total] bias of dt with fill at masked places. window > 0 also
// masks keys at least window positions behind the query.
func (c *composer) causalBias(q, total, offset int, perBatch *Value, window int, dt DType, fill float64) *Value {
	if c.err != nil {
		return nil
	}
	if perBatch == nil {
		return c.table(dt, Shape{q, total}, func(i, j int) float64 {
			if j > i+offset || (window > 0 && i+offset-j >= window) {
				return fill
			}
			return 0
		})
	}
	jmi := c.table(Int64, Shape{1, q, total}, func(i, j int) float64 { return float64(j - i) })
	b := perBatch.Shape[0]
	off := c.reshape(perBatch, Shape{b, 1, 1})
	keep := c.binary(LessOrEqual, jmi, off)
	if window > 0 {
		// i + offset − j < window  ⇔  j − i > offset − window
		keep = c.binary(And, keep, c.binary(Greater, jmi, c.binary(Sub, off, c.im.constant(ScalarInt64(int64(window))))))
	}
	return c.reshape(c.maskWhere(keep, dt, fill), Shape{b, 1, q, total})
}

// sumBiases adds the non-nil biases.
func (c *composer) sumBiases(bs ...*Value) *Value {
	var sum *Value
	for _, b := range bs {
		switch {
		case b == nil:
		case sum == nil:
			sum = b
		default:
			sum = c.add(sum, b)
		}
	}
	return sum
}

// checkBias checks an attention_bias input against the scores
// [B, N, S, T] it is added to.
func checkBias(bias *Value, dt DType, scores Shape) error {
	if bias == nil {
		return nil
	}
	if bias.DType != dt {
		return fmt.Errorf("attention_bias is %s, want %s", bias.DType, dt)
	}
	if b, err := BroadcastShapes(bias.Shape, scores); err != nil || len(bias.Shape) != 4 || !b.Equal(scores) {
		return fmt.Errorf("attention_bias has shape %v, want one broadcastable to %v", bias.Shape, scores)
	}
	return nil
}

// keyPaddingBias turns an int32 key mask into a bias of dt against
// scores [B, N, S, T]: [B, T] or [B, S, T] (0 masks, fill added), [B]
// (valid lengths: keys from there on masked) or [2B] (exclusive ends, then
// inclusive starts).
func (c *composer) keyPaddingBias(mask *Value, b, s, t int, dt DType, fill float64) *Value {
	if c.err != nil || mask == nil {
		return nil
	}
	if mask.DType != Int32 {
		c.fail("the key mask is %s, want int32", mask.DType)
		return nil
	}
	switch {
	case mask.Shape.Equal(Shape{b, t}):
		return c.reshape(c.maskWhere(c.nonzero(mask), dt, fill), Shape{b, 1, 1, t})
	case mask.Shape.Equal(Shape{b, s, t}):
		return c.reshape(c.maskWhere(c.nonzero(mask), dt, fill), Shape{b, 1, s, t})
	case mask.Shape.Equal(Shape{b}):
		keep := c.binary(Less, c.keyRange(t), c.reshape(c.cast(mask, Int64), Shape{b, 1}))
		return c.reshape(c.maskWhere(keep, dt, fill), Shape{b, 1, 1, t})
	case mask.Shape.Equal(Shape{2 * b}):
		bounds := c.cast(mask, Int64)
		end, start := c.reshape(c.slice(bounds, 0, 0, b, 1), Shape{b, 1}), c.reshape(c.slice(bounds, 0, b, b, 1), Shape{b, 1})
		keys := c.keyRange(t)
		keep := c.binary(And, c.binary(Less, keys, end), c.binary(GreaterOrEqual, keys, start))
		return c.reshape(c.maskWhere(keep, dt, fill), Shape{b, 1, 1, t})
	}
	c.fail("the key mask has shape %v, want %v, %v, %v or %v", mask.Shape, Shape{b}, Shape{2 * b}, Shape{b, t}, Shape{b, s, t})
	return nil
}

// nonzero is m ≠ 0, element by element.
func (c *composer) nonzero(m *Value) *Value {
	return c.unary(Not, c.binary(Equal, m, c.scalar(m.DType, 0)))
}

// paddedAttention holds the attributes MultiHeadAttention and Attention
// share.
type paddedAttention struct {
	heads  int     // num_heads, required
	causal bool    // unidirectional
	fill   float64 // mask_filter_value: the bias at masked places
}

func paddedAttentionAttrs(n *onnx.Node) (paddedAttention, error) {
	var m paddedAttention
	var err error
	if m.heads, err = attrCount(n, "num_heads"); err != nil {
		return m, err
	}
	if m.heads == 0 {
		return m, fmt.Errorf("the num_heads attribute is required")
	}
	if m.causal, err = attrBool(n, "unidirectional"); err != nil {
		return m, err
	}
	fill, err := n.AttrFloat("mask_filter_value", -10000)
	m.fill = float64(fill)
	return m, err
}

// attendPadded is the attention of MultiHeadAttention and Attention: q4
// [B, N, S, H] against k4 and v4 [B, N, past+S', H] (past keys first),
// the scores biased by the key padding mask, the causal mask and
// attention_bias.
func (c *composer) attendPadded(n *onnx.Node, m paddedAttention, q4, k4, v4, keyMask, attnBias *Value, past int) (sdpaStages, error) {
	if c.err != nil {
		return sdpaStages{}, c.err
	}
	b, s, total, dt := q4.Shape[0], q4.Shape[2], k4.Shape[2], q4.DType
	if err := checkBias(attnBias, dt, Shape{b, m.heads, s, total}); err != nil {
		return sdpaStages{}, err
	}
	var causalMask *Value
	if m.causal {
		causalMask = c.causalBias(s, total, past, nil, 0, dt, m.fill)
	}
	scale, err := contribScale(n, q4.Shape[3])
	if err != nil {
		return sdpaStages{}, err
	}
	return c.attend(sdpa{q: q4, k: k4, v: v4, scale: scale,
		bias: c.sumBiases(c.keyPaddingBias(keyMask, b, s, total, dt, m.fill), causalMask, attnBias)}), nil
}

// ---------------------------------------------------------------- MultiHeadAttention

// importMultiHeadAttention: com.microsoft MultiHeadAttention. query
// [B, S, D]; key and value [B, L, D] and [B, L, Dv] (projected here:
// bias [D + D + Dv] is added to q, k, v) or already split into heads
// [B, N, L, H] (cross attention's cached keys); past_key/past_value
// [B, N, P, H] are prepended (present_key, present_value); key_padding_mask
// (int32 [B], [B, T] or [B, S, T]) and unidirectional mask with
// mask_filter_value added; attention_bias is added to the scores.
func importMultiHeadAttention(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 10); err != nil {
		return nil, err
	}
	if err := unsupportedInputs(in, map[int]string{8: "past_sequence_length (shared past and present buffers)", 9: "cache_indirection (beam search)"}); err != nil {
		return nil, err
	}
	q, k, v, bias := in[0], optIn(in, 1), optIn(in, 2), optIn(in, 3)
	keyMask, attnBias, pastK, pastV := optIn(in, 4), optIn(in, 5), optIn(in, 6), optIn(in, 7)
	m, err := paddedAttentionAttrs(n)
	if err != nil {
		return nil, err
	}
	heads := m.heads
	if k == nil || v == nil {
		return nil, fmt.Errorf("%w: MultiHeadAttention with packed QKV or KV (key or value missing)", ErrNotSupported)
	}
	if _, err := sameFloatInputs([]string{"query", "key", "value", "bias", "past_key", "past_value"}, q, k, v, bias, pastK, pastV); err != nil {
		return nil, err
	}
	if (pastK == nil) != (pastV == nil) {
		return nil, fmt.Errorf("past_key and past_value come together")
	}
	if len(q.Shape) != 3 || q.Shape[2]%heads != 0 {
		return nil, fmt.Errorf("query has shape %v, want [batch, seq, heads·head_size] with %d heads", q.Shape, heads)
	}
	b, d := q.Shape[0], q.Shape[2]
	c := &composer{im: im}
	var q4, k4, v4 *Value
	switch {
	case len(k.Shape) == 3 && len(v.Shape) == 3:
		if k.Shape[0] != b || k.Shape[2] != d || v.Shape[0] != b || v.Shape[1] != k.Shape[1] || v.Shape[2]%heads != 0 {
			return nil, fmt.Errorf("query %v, key %v, value %v: want key [%d, L, %d] and value [%d, L, heads·v_head_size]", q.Shape, k.Shape, v.Shape, b, d, b)
		}
		if bias != nil {
			if !bias.Shape.Equal(Shape{2*d + v.Shape[2]}) {
				return nil, fmt.Errorf("bias has shape %v, want [%d]", bias.Shape, 2*d+v.Shape[2])
			}
			q = c.add(q, c.slice(bias, 0, 0, d, 1))
			k = c.add(k, c.slice(bias, 0, d, d, 1))
			v = c.add(v, c.slice(bias, 0, 2*d, v.Shape[2], 1))
		}
		q4, k4, v4 = c.splitHeads(q, heads), c.splitHeads(k, heads), c.splitHeads(v, heads)
	case len(k.Shape) == 4 && len(v.Shape) == 4:
		if !k.Shape.Equal(Shape{b, heads, k.Shape[2], d / heads}) || !matchesExcept(v.Shape, Shape{b, heads, k.Shape[2], -1}, 3) {
			return nil, fmt.Errorf("key %v and value %v, want [%d,%d,L,%d] and [%d,%d,L,v_head_size]", k.Shape, v.Shape, b, heads, d/heads, b, heads)
		}
		if pastK != nil {
			return nil, fmt.Errorf("key and value in heads (cross attention's cache) take no past_key and past_value")
		}
		if bias != nil {
			if !bias.Shape.Equal(Shape{2*d + v.Shape[1]*v.Shape[3]}) {
				return nil, fmt.Errorf("bias has shape %v, want [%d]", bias.Shape, 2*d+v.Shape[1]*v.Shape[3])
			}
			q = c.add(q, c.slice(bias, 0, 0, d, 1))
		}
		q4, k4, v4 = c.splitHeads(q, heads), k, v
	default:
		return nil, fmt.Errorf("key %v and value %v: want both 3-D or both 4-D", k.Shape, v.Shape)
	}
	if c.err != nil {
		return nil, c.err
	}
	past := 0
	if pastK != nil {
		if !matchesExcept(pastK.Shape, Shape{b, heads, -1, k4.Shape[3]}, 2) || !matchesExcept(pastV.Shape, Shape{b, heads, -1, v4.Shape[3]}, 2) || pastK.Shape[2] != pastV.Shape[2] {
			return nil, fmt.Errorf("past_key %v and past_value %v, want [%d,%d,past,%d] and [%d,%d,past,%d]", pastK.Shape, pastV.Shape, b, heads, k4.Shape[3], b, heads, v4.Shape[3])
		}
		past = pastK.Shape[2]
		k4, v4 = c.concat(2, pastK, k4), c.concat(2, pastV, v4)
	}
	st, err := c.attendPadded(n, m, q4, k4, v4, keyMask, attnBias, past)
	if err != nil {
		return nil, err
	}
	outs := []*Value{c.mergeHeads(st.y), nil, nil, nil}
	if wants(n, 1) {
		outs[1] = k4
	}
	if wants(n, 2) {
		outs[2] = v4
	}
	if wants(n, 3) {
		outs[3] = st.qk
	}
	return outs, c.err
}

// ---------------------------------------------------------------- GroupQueryAttention

// importGroupQueryAttention: com.microsoft GroupQueryAttention for a
// prompt (the prefill of a whole sequence, or of a chunk after a dense
// cache). query [B, S, N·H] (or query, key and value packed along the
// last axis when key and value are absent), key and value [B, S, Nkv·H];
// past_key/past_value [B, Nkv, P, H] are prepended (present_key,
// present_value [B, Nkv, P+S, H]); seqlens_k [B] (int32) are each entry's
// total length − 1: keys beyond it are masked, and after a cache the
// queries are its last S positions; total_sequence_length must be P+S.
// Causal (with local_window_size, the keys within that many positions),
// do_rotary rotates queries and keys with cos_cache/sin_cache at their
// positions (position_ids, or the positions just described),
// softcap, attention_bias, and smooth_softmax/head_sink (an extra logit,
// 0 or per head, in the softmax's denominator) are supported; quantized
// caches, shared or windowed cache buffers and Q/K norms are not.
func importGroupQueryAttention(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(in) < 7 || len(in) > 16 {
		return nil, fmt.Errorf("want 7 to 16 inputs, got %d", len(in))
	}
	if in[0] == nil || in[5] == nil || in[6] == nil {
		return nil, fmt.Errorf("query, seqlens_k and total_sequence_length are required")
	}
	if err := unsupportedInputs(in, map[int]string{12: "k_scale (quantized cache)", 13: "v_scale (quantized cache)", 14: "q_norm_weight", 15: "k_norm_weight"}); err != nil {
		return nil, err
	}
	for _, a := range []string{"sliding_window_cache", "kv_cache_bit_width"} {
		if v, err := n.AttrInt(a, 0); err != nil {
			return nil, err
		} else if v != 0 {
			return nil, fmt.Errorf("%w: GroupQueryAttention with %s", ErrNotSupported, a)
		}
	}
	heads, err := attrCount(n, "num_heads")
	if err != nil {
		return nil, err
	}
	kvHeads, err := attrCount(n, "kv_num_heads")
	if err != nil {
		return nil, err
	}
	if heads == 0 || kvHeads == 0 || heads%kvHeads != 0 {
		return nil, fmt.Errorf("num_heads %d and kv_num_heads %d: both required, num_heads a multiple of kv_num_heads", heads, kvHeads)
	}
	causal := true
	if v, err := attrInt(n, "causal", 1); err != nil {
		return nil, err
	} else if v != 0 && v != 1 {
		return nil, fmt.Errorf("attribute causal is %d, want 0 or 1", v)
	} else {
		causal = v == 1
	}
	window, err := attrInt(n, "local_window_size", -1)
	if err != nil {
		return nil, err
	}
	if window == 0 || window < -1 || (!causal && window != -1) {
		return nil, fmt.Errorf("local_window_size %d, want -1 (none) or a positive window of a causal attention", window)
	}
	doRotary, err := attrBool(n, "do_rotary")
	if err != nil {
		return nil, err
	}
	interleaved, err := attrBool(n, "rotary_interleaved")
	if err != nil {
		return nil, err
	}
	smooth, err := attrBool(n, "smooth_softmax")
	if err != nil {
		return nil, err
	}
	qkOut, err := attrInt(n, "qk_output", 0)
	if err != nil {
		return nil, err
	}
	if qkOut < 0 || qkOut > 2 {
		return nil, fmt.Errorf("qk_output %d, want 0, 1 or 2", qkOut)
	}
	softcap, _, err := attrFloatOpt(n, "softcap")
	if err != nil {
		return nil, err
	}
	if softcap < 0 {
		return nil, fmt.Errorf("softcap %g, want 0 (none) or more", softcap)
	}

	q, k, v := in[0], optIn(in, 1), optIn(in, 2)
	pastK, pastV, seqlens := optIn(in, 3), optIn(in, 4), in[5]
	cosCache, sinCache, posIDs, attnBias, sink := optIn(in, 7), optIn(in, 8), optIn(in, 9), optIn(in, 10), optIn(in, 11)
	dt, err := sameFloatInputs([]string{"query", "key", "value", "past_key", "past_value", "cos_cache", "sin_cache", "attention_bias", "head_sink"},
		q, k, v, pastK, pastV, cosCache, sinCache, attnBias, sink)
	if err != nil {
		return nil, err
	}
	if len(q.Shape) != 3 {
		return nil, fmt.Errorf("query has shape %v, want [batch, seq, hidden]", q.Shape)
	}
	b, s := q.Shape[0], q.Shape[1]
	c := &composer{im: im}
	var headSize int
	switch {
	case k == nil && v == nil:
		packed := heads + 2*kvHeads
		if q.Shape[2]%packed != 0 {
			return nil, fmt.Errorf("packed query has %d channels, not a multiple of num_heads + 2·kv_num_heads = %d", q.Shape[2], packed)
		}
		headSize = q.Shape[2] / packed
		q, k, v = c.slice(q, 2, 0, heads*headSize, 1), c.slice(q, 2, heads*headSize, kvHeads*headSize, 1), c.slice(q, 2, (heads+kvHeads)*headSize, kvHeads*headSize, 1)
	case k != nil && v != nil:
		if q.Shape[2]%heads != 0 {
			return nil, fmt.Errorf("query's hidden size %d is not a multiple of num_heads %d", q.Shape[2], heads)
		}
		headSize = q.Shape[2] / heads
		want := Shape{b, s, kvHeads * headSize}
		if !k.Shape.Equal(want) || !v.Shape.Equal(want) {
			return nil, fmt.Errorf("key %v and value %v, want %v", k.Shape, v.Shape, want)
		}
	default:
		return nil, fmt.Errorf("key and value come together (or both absent for a packed query)")
	}
	if (pastK == nil) != (pastV == nil) {
		return nil, fmt.Errorf("past_key and past_value come together")
	}
	past := 0
	if pastK != nil {
		want := Shape{b, kvHeads, -1, headSize}
		if !matchesExcept(pastK.Shape, want, 2) || !pastV.Shape.Equal(pastK.Shape) {
			return nil, fmt.Errorf("past_key %v and past_value %v, want [%d,%d,past,%d]", pastK.Shape, pastV.Shape, b, kvHeads, headSize)
		}
		past = pastK.Shape[2]
	}
	if past > 0 && s > 1 && b > 1 {
		return nil, fmt.Errorf("%w: GroupQueryAttention over a cache with several queries and a batch of %d (onnxruntime allows batch 1 there)", ErrNotSupported, b)
	}
	totals, _, err := im.constInts(in, 6, "total_sequence_length")
	if err != nil {
		return nil, err
	}
	if len(totals) != 1 || totals[0] != past+s {
		return nil, fmt.Errorf("%w: total_sequence_length %v with a cache of %d and %d new positions (dstune imports caches without spare room: the total must be %d)", ErrNotSupported, totals, past, s, past+s)
	}
	if seqlens.DType != Int32 || !seqlens.Shape.Equal(Shape{b}) {
		return nil, fmt.Errorf("seqlens_k is %s%v, want int32 [%d]", seqlens.DType, seqlens.Shape, b)
	}
	total := past + s
	lengths := c.cast(seqlens, Int64) // each entry's total length − 1
	// The queries' offset in the keys: 0 for a first prompt, else each
	// entry's total length minus the new positions.
	var offset *Value
	if past > 0 {
		offset = c.binary(Sub, lengths, c.im.constant(ScalarInt64(int64(s-1))))
	}
	if doRotary {
		if cosCache == nil || sinCache == nil {
			return nil, fmt.Errorf("do_rotary needs cos_cache and sin_cache")
		}
		half := cosCache.Shape[len(cosCache.Shape)-1]
		if len(cosCache.Shape) != 2 || !sinCache.Shape.Equal(cosCache.Shape) || 2*half > headSize || half == 0 {
			return nil, fmt.Errorf("cos_cache %v and sin_cache %v, want [max_position, rotary_dim/2] with rotary_dim at most the head size %d", cosCache.Shape, sinCache.Shape, headSize)
		}
		pos := posIDs
		if pos == nil {
			pos = c.table(Int64, Shape{1, s}, func(_, i int) float64 { return float64(i) })
			if offset != nil {
				pos = c.add(c.reshape(offset, Shape{b, 1}), pos)
			}
		} else if posIDs.DType != Int64 || !posIDs.Shape.Equal(Shape{b, s}) {
			return nil, fmt.Errorf("position_ids is %s%v, want int64 [%d,%d]", posIDs.DType, posIDs.Shape, b, s)
		}
		cos, sin := c.op(&Gather{Axis: 0}, cosCache, pos), c.op(&Gather{Axis: 0}, sinCache, pos)
		q = c.rotateHeads(q, cos, sin, heads, headSize, 2*half, interleaved)
		k = c.rotateHeads(k, cos, sin, kvHeads, headSize, 2*half, interleaved)
	} else if posIDs != nil || cosCache != nil || sinCache != nil {
		return nil, fmt.Errorf("cos_cache, sin_cache and position_ids are inputs of do_rotary")
	}
	q4, k4, v4 := c.splitHeads(q, heads), c.splitHeads(k, kvHeads), c.splitHeads(v, kvHeads)
	if pastK != nil {
		k4, v4 = c.concat(2, pastK, k4), c.concat(2, pastV, v4)
	}
	if c.err != nil {
		return nil, c.err
	}
	scores := Shape{b, heads, s, total}
	if err := checkBias(attnBias, dt, scores); err != nil {
		return nil, err
	}
	if sink != nil && !sink.Shape.Equal(Shape{heads}) {
		return nil, fmt.Errorf("head_sink has shape %v, want [%d]", sink.Shape, heads)
	}
	negInf := math.Inf(-1)
	valid := c.maskWhere(c.binary(LessOrEqual, c.keyRange(total), c.reshape(lengths, Shape{b, 1})), dt, negInf)
	var causalMask *Value
	if causal {
		causalMask = c.causalBias(s, total, 0, offset, max(window, 0), dt, negInf)
	}
	scale, err := contribScale(n, headSize)
	if err != nil {
		return nil, err
	}
	a := sdpa{q: q4, k: k4, v: v4, scale: scale, softcap: softcap,
		bias: c.sumBiases(c.reshape(valid, Shape{b, 1, 1, total}), causalMask, attnBias)}
	if smooth || sink != nil {
		a.sinks = sink
		if sink == nil {
			a.sinks = c.filled(dt, Shape{heads}, 0)
		}
	}
	st := c.attend(a)
	outs := []*Value{c.mergeHeads(st.y), nil, nil, nil}
	if wants(n, 1) {
		outs[1] = k4
	}
	if wants(n, 2) {
		outs[2] = v4
	}
	if wants(n, 3) {
		switch qkOut {
		case 0:
			return nil, fmt.Errorf("output_qk is named but qk_output is 0")
		case 1:
			outs[3] = st.biased
		case 2:
			outs[3] = st.probs
		}
	}
	return outs, c.err
}

// ---------------------------------------------------------------- Attention

// importContribAttention: com.microsoft Attention. input [B, S, Din] is
// projected by weights [Din, D + D + Dv] (plus bias) into Q, K and V
// (qkv_hidden_sizes gives D, D, Dv when they differ); past [2, B, N, P, H]
// holds the cached keys and values (present [2, B, N, P+S, H]);
// mask_index (int32 [B], [2B], [B, T] or [B, S, T]; not the 4-D form
// onnxruntime's CPU provider lacks too) and unidirectional mask with
// mask_filter_value; attention_bias is added.
func importContribAttention(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 7); err != nil {
		return nil, err
	}
	if err := unsupportedInputs(in, map[int]string{6: "past_sequence_length (shared past and present buffers)"}); err != nil {
		return nil, err
	}
	for _, a := range []string{"do_rotary", "past_present_share_buffer"} {
		if v, err := n.AttrInt(a, 0); err != nil {
			return nil, err
		} else if v != 0 {
			return nil, fmt.Errorf("%w: Attention with %s", ErrNotSupported, a)
		}
	}
	x, w, bias, maskIndex, pastKV, attnBias := in[0], in[1], optIn(in, 2), optIn(in, 3), optIn(in, 4), optIn(in, 5)
	if _, err := sameFloatInputs([]string{"input", "weights", "bias", "past", "attention_bias"}, x, w, bias, pastKV, attnBias); err != nil {
		return nil, err
	}
	m, err := paddedAttentionAttrs(n)
	if err != nil {
		return nil, err
	}
	heads := m.heads
	if len(x.Shape) != 3 || len(w.Shape) != 2 || w.Shape[0] != x.Shape[2] {
		return nil, fmt.Errorf("input %v and weights %v, want [batch, seq, in] and [in, out]", x.Shape, w.Shape)
	}
	b, s := x.Shape[0], x.Shape[1]
	sizes, given, err := attrInts(n, "qkv_hidden_sizes")
	if err != nil {
		return nil, err
	}
	if !given {
		if w.Shape[1]%3 != 0 {
			return nil, fmt.Errorf("weights have %d columns, not three equal parts (give qkv_hidden_sizes)", w.Shape[1])
		}
		d := w.Shape[1] / 3
		sizes = []int{d, d, d}
	}
	if len(sizes) != 3 || sizes[0] != sizes[1] || sizes[0]+sizes[1]+sizes[2] != w.Shape[1] || sizes[0]%heads != 0 || sizes[2]%heads != 0 || sizes[0] <= 0 || sizes[2] <= 0 {
		return nil, fmt.Errorf("qkv_hidden_sizes %v for weights %v and %d heads: want D, D, Dv summing to the columns, multiples of num_heads", sizes, w.Shape, heads)
	}
	if bias != nil && !bias.Shape.Equal(Shape{w.Shape[1]}) {
		return nil, fmt.Errorf("bias has shape %v, want [%d]", bias.Shape, w.Shape[1])
	}
	c := &composer{im: im}
	qkv := c.op(&MatMul{}, x, w)
	if bias != nil {
		qkv = c.add(qkv, bias)
	}
	d, dv := sizes[0], sizes[2]
	q4 := c.splitHeads(c.slice(qkv, 2, 0, d, 1), heads)
	k4 := c.splitHeads(c.slice(qkv, 2, d, d, 1), heads)
	v4 := c.splitHeads(c.slice(qkv, 2, 2*d, dv, 1), heads)
	past := 0
	if pastKV != nil {
		if d != dv || !matchesExcept(pastKV.Shape, Shape{2, b, heads, -1, d / heads}, 3) {
			return nil, fmt.Errorf("past has shape %v, want [2,%d,%d,past,%d] (and equal Q, K, V sizes)", pastKV.Shape, b, heads, d/heads)
		}
		past = pastKV.Shape[3]
		pastShape := Shape{b, heads, past, d / heads}
		k4 = c.concat(2, c.reshape(c.slice(pastKV, 0, 0, 1, 1), pastShape), k4)
		v4 = c.concat(2, c.reshape(c.slice(pastKV, 0, 1, 1, 1), pastShape), v4)
	}
	if c.err != nil {
		return nil, c.err
	}
	total := past + s
	st, err := c.attendPadded(n, m, q4, k4, v4, maskIndex, attnBias, past)
	if err != nil {
		return nil, err
	}
	outs := []*Value{c.mergeHeads(st.y), nil}
	if wants(n, 1) {
		if pastKV == nil && d != dv {
			return nil, fmt.Errorf("present needs equal key and value sizes, got %v", sizes)
		}
		both := Shape{1, b, heads, total, d / heads}
		outs[1] = c.concat(0, c.reshape(k4, both), c.reshape(v4, both))
	}
	return outs, c.err
}
