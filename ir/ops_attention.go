package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// Scaled dot-product attention, imported as MatMul, Softmax, Where and
// element-wise ops over [batch, heads, seq, head_size] operands. Grouped
// query heads share a key/value head by reshaping the queries
// ([B, Hkv·G, Sq, D] → [B, Hkv, G·Sq, D]), so keys and values are never
// repeated.

func init() {
	registerOp("", "Attention", importAttention)
	registerOp("ai.onnx.preview", "FlexAttention", importFlexAttention)
}

// sdpa is one scaled dot-product attention over 4-D operands.
type sdpa struct {
	q, k, v     *Value  // [B, Hq, Sq, D], [B, Hkv, Skv, D], [B, Hkv, Skv, Dv]; Hq a multiple of Hkv
	scale       float64 // applied to Q·Kᵀ
	softcap     float64 // scores → softcap·tanh(scores/softcap); 0: none
	bias        *Value  // added to the (capped) scores, broadcastable to [B, Hq, Sq, Skv]; nil: none
	softmaxType DType   // the softmax's type when wider than q's (InvalidDType: q's)
	// scoreMod and probMod rewrite the scores before the softmax and the
	// probabilities after it (FlexAttention's subgraphs); nil: none.
	scoreMod, probMod func(*Value) *Value
	// sinks [Hq] is an extra logit per query head that takes part in the
	// softmax's denominator only (attention sinks); nil: none.
	sinks *Value
}

// sdpaStages are the attention's output and the [B, Hq, Sq, Skv] stages
// an Attention node can also return (qk_matmul_output).
type sdpaStages struct {
	y                         *Value // [B, Hq, Sq, Dv]
	qk, capped, biased, probs *Value // in the order they are computed
}

// attend emits the attention a describes.
func (c *composer) attend(a sdpa) sdpaStages {
	var st sdpaStages
	if c.err != nil {
		return st
	}
	b, hq, sq, d := a.q.Shape[0], a.q.Shape[1], a.q.Shape[2], a.q.Shape[3]
	hkv, skv, dv := a.k.Shape[1], a.k.Shape[2], a.v.Shape[3]
	groups := hq / hkv
	dt := a.q.DType

	// scores = (Q·scale)·Kᵀ, the grouped query heads of a key head as rows
	// of one product.
	q := c.scale(a.q, a.scale)
	if groups > 1 {
		q = c.reshape(q, Shape{b, hkv, groups * sq, d})
	}
	scores := c.reshape(c.op(&MatMul{}, q, c.transpose(a.k, 0, 1, 3, 2)), Shape{b, hq, sq, skv})
	st.qk = scores
	// The cap comes before the bias, so that a −∞ bias stays −∞.
	if a.softcap != 0 {
		scores = c.scale(c.unary(Tanh, c.binary(Div, scores, c.scalar(dt, a.softcap))), a.softcap)
	}
	st.capped = scores
	if a.bias != nil {
		scores = c.add(scores, a.bias)
	}
	st.biased = scores
	if a.scoreMod != nil {
		scores = a.scoreMod(scores)
	}
	wide := a.softmaxType != InvalidDType && a.softmaxType != dt
	if wide {
		scores = c.cast(scores, a.softmaxType)
	}
	var probs *Value
	if a.sinks != nil {
		// Softmax over the keys and the sink, the sink's share dropped.
		sinks := c.op(&Expand{Shape: Shape{b, hq, sq, 1}}, c.reshape(c.cast(a.sinks, scores.DType), Shape{1, hq, 1, 1}))
		probs = c.slice(c.op(&Softmax{Axis: 3}, c.concat(3, scores, sinks)), 3, 0, skv, 1)
	} else {
		probs = c.op(&Softmax{Axis: 3}, scores)
	}
	if a.probMod != nil {
		probs = a.probMod(probs)
	}
	st.probs = probs
	v := a.v
	if wide {
		v = c.cast(v, a.softmaxType)
		st.probs = c.cast(probs, dt)
	}
	if groups > 1 {
		probs = c.reshape(probs, Shape{b, hkv, groups * sq, skv})
	}
	y := c.reshape(c.op(&MatMul{}, probs, v), Shape{b, hq, sq, dv})
	st.y = c.cast(y, dt)
	return st
}

// checkHeads checks the 4-D operands of an attention: one batch, one head
// size for Q and K, K and V alike, and Q's heads a multiple of theirs.
func checkHeads(q, k, v Shape) error {
	if len(q) != 4 || len(k) != 4 || len(v) != 4 {
		return fmt.Errorf("Q %v, K %v, V %v: want 4-D [batch, heads, seq, head_size]", q, k, v)
	}
	switch {
	case k[0] != q[0] || v[0] != q[0]:
		return fmt.Errorf("Q %v, K %v, V %v differ in batch size", q, k, v)
	case k[3] != q[3]:
		return fmt.Errorf("Q %v and K %v differ in head size", q, k)
	case k[1] != v[1] || k[2] != v[2]:
		return fmt.Errorf("K %v and V %v differ in heads or sequence length", k, v)
	case k[1] == 0 || q[1]%k[1] != 0:
		return fmt.Errorf("Q has %d heads, not a multiple of K and V's %d", q[1], k[1])
	}
	return nil
}

// splitHeads turns [B, S, H·D] into [B, H, S, D].
func (c *composer) splitHeads(x *Value, heads int) *Value {
	if c.err != nil {
		return nil
	}
	b, s, hidden := x.Shape[0], x.Shape[1], x.Shape[2]
	return c.transpose(c.reshape(x, Shape{b, s, heads, hidden / heads}), 0, 2, 1, 3)
}

// mergeHeads turns [B, H, S, D] into [B, S, H·D].
func (c *composer) mergeHeads(x *Value) *Value {
	if c.err != nil {
		return nil
	}
	b, h, s, d := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	return c.reshape(c.transpose(x, 0, 2, 1, 3), Shape{b, s, h * d})
}

// ---------------------------------------------------------------- Attention

// attentionAttrs are an Attention node's attributes.
type attentionAttrs struct {
	causal          bool
	qHeads, kvHeads int
	qkMode          int
	scale           float64 // 0: 1/√head_size
	softcap         float64
	softmaxType     DType
}

func readAttentionAttrs(n *onnx.Node) (attentionAttrs, error) {
	var a attentionAttrs
	var err error
	if a.causal, err = attrBool(n, "is_causal"); err != nil {
		return a, err
	}
	if a.qHeads, err = attrCount(n, "q_num_heads"); err != nil {
		return a, err
	}
	if a.kvHeads, err = attrCount(n, "kv_num_heads"); err != nil {
		return a, err
	}
	if a.qkMode, err = attrInt(n, "qk_matmul_output_mode", 0); err != nil {
		return a, err
	}
	if a.qkMode < 0 || a.qkMode > 3 {
		return a, fmt.Errorf("qk_matmul_output_mode %d, want 0 to 3", a.qkMode)
	}
	if a.scale, _, err = attrFloatOpt(n, "scale"); err != nil {
		return a, err
	}
	if a.softcap, _, err = attrFloatOpt(n, "softcap"); err != nil {
		return a, err
	}
	if a.softcap < 0 {
		return a, fmt.Errorf("softcap %g, want 0 (none) or more", a.softcap)
	}
	if p := n.Attr("softmax_precision"); p != nil {
		dt, err := DTypeFromONNX(onnx.DataType(p.I))
		if err != nil || !isFloat(dt) || !dt.computable() {
			return a, fmt.Errorf("softmax_precision %d, want float, float16, bfloat16 or double", p.I)
		}
		a.softmaxType = dt
	}
	return a, nil
}

// importAttention: Attention (opset 23, 24). Q, K, V are 4-D
// [batch, heads, seq, head_size] or 3-D [batch, seq, heads·head_size]
// (then q_num_heads and kv_num_heads are required); past_key/past_value
// [batch, kv_heads, past, head_size] are prepended to K and V (present_key
// and present_value); attn_mask (bool: true attends; float: added) may be
// shorter than the total key length (the rest is masked); is_causal masks
// key j for query i when j > i + past; nonpad_kv_seqlen [batch] (opset 24)
// masks each batch entry's keys from that length on. The scores are
// (Q·Kᵀ)·scale (stage 0), capped to softcap·tanh(x/softcap) (1), plus the
// masks (2), softmaxed (3); qk_matmul_output returns them at stage
// qk_matmul_output_mode.
func importAttention(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 7); err != nil {
		return nil, err
	}
	a, err := readAttentionAttrs(n)
	if err != nil {
		return nil, err
	}
	q, k, v := in[0], in[1], in[2]
	mask, pastK, pastV, nonpad := optIn(in, 3), optIn(in, 4), optIn(in, 5), optIn(in, 6)
	if nonpad != nil && im.opset < 24 {
		return nil, fmt.Errorf("nonpad_kv_seqlen is an input from opset 24 on (the model imports %d)", im.opset)
	}
	dt, err := sameFloatInputs([]string{"Q", "K", "V", "past_key", "past_value"}, q, k, v, pastK, pastV)
	if err != nil {
		return nil, err
	}
	if (pastK == nil) != (pastV == nil) {
		return nil, fmt.Errorf("past_key and past_value come together")
	}
	if nonpad != nil && pastK != nil {
		return nil, fmt.Errorf("nonpad_kv_seqlen describes an external key/value cache: it excludes past_key and past_value")
	}
	c := &composer{im: im}
	q4, k4, v4 := q, k, v
	switch {
	case len(q.Shape) == 3 && len(k.Shape) == 3 && len(v.Shape) == 3:
		if a.qHeads == 0 || a.kvHeads == 0 {
			return nil, fmt.Errorf("3-D Q, K, V need the q_num_heads and kv_num_heads attributes")
		}
		if q.Shape[2]%a.qHeads != 0 || k.Shape[2]%a.kvHeads != 0 || v.Shape[2]%a.kvHeads != 0 {
			return nil, fmt.Errorf("Q %v, K %v, V %v: hidden sizes not multiples of q_num_heads %d and kv_num_heads %d", q.Shape, k.Shape, v.Shape, a.qHeads, a.kvHeads)
		}
		q4, k4, v4 = c.splitHeads(q, a.qHeads), c.splitHeads(k, a.kvHeads), c.splitHeads(v, a.kvHeads)
	case len(q.Shape) == 4 && len(k.Shape) == 4 && len(v.Shape) == 4:
		if (a.qHeads != 0 && a.qHeads != q.Shape[1]) || (a.kvHeads != 0 && a.kvHeads != k.Shape[1]) {
			return nil, fmt.Errorf("q_num_heads %d and kv_num_heads %d disagree with Q %v and K %v", a.qHeads, a.kvHeads, q.Shape, k.Shape)
		}
	default:
		return nil, fmt.Errorf("Q %v, K %v, V %v: want all 3-D or all 4-D", q.Shape, k.Shape, v.Shape)
	}
	if c.err != nil {
		return nil, c.err
	}
	if err := checkHeads(q4.Shape, k4.Shape, v4.Shape); err != nil {
		return nil, err
	}
	past := 0
	if pastK != nil {
		wantK := Shape{k4.Shape[0], k4.Shape[1], -1, k4.Shape[3]}
		wantV := Shape{v4.Shape[0], v4.Shape[1], -1, v4.Shape[3]}
		if !matchesExcept(pastK.Shape, wantK, 2) || !matchesExcept(pastV.Shape, wantV, 2) || pastK.Shape[2] != pastV.Shape[2] {
			return nil, fmt.Errorf("past_key %v and past_value %v, want [%d,%d,past,%d] and [%d,%d,past,%d]",
				pastK.Shape, pastV.Shape, wantK[0], wantK[1], wantK[3], wantV[0], wantV[1], wantV[3])
		}
		past = pastK.Shape[2]
		k4 = c.concat(2, pastK, k4)
		v4 = c.concat(2, pastV, v4)
	}
	if c.err != nil {
		return nil, c.err
	}
	b, hq, sq := q4.Shape[0], q4.Shape[1], q4.Shape[2]
	total := k4.Shape[2]
	bias, err := c.attentionBias(attentionMask{
		mask: mask, dt: dt, batch: b, heads: hq, q: sq, total: total, past: past, causal: a.causal, nonpad: nonpad,
	})
	if err != nil {
		return nil, err
	}
	scale := a.scale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(q4.Shape[3]))
	}
	st := c.attend(sdpa{q: q4, k: k4, v: v4, scale: scale, softcap: a.softcap, bias: bias, softmaxType: a.softmaxType})
	y := st.y
	if len(q.Shape) == 3 {
		y = c.mergeHeads(y)
	}
	outs := []*Value{y, nil, nil, nil}
	if wants(n, 1) {
		outs[1] = k4
	}
	if wants(n, 2) {
		outs[2] = v4
	}
	if wants(n, 3) {
		outs[3] = []*Value{st.qk, st.capped, st.biased, st.probs}[a.qkMode]
	}
	return outs, c.err
}

// wants reports whether node output i is named (used).
func wants(n *onnx.Node, i int) bool { return i < len(n.Outputs) && n.Outputs[i] != "" }

// matchesExcept reports whether s equals want in every dimension but
// skip.
func matchesExcept(s, want Shape, skip int) bool {
	if len(s) != len(want) {
		return false
	}
	for i := range s {
		if i != skip && s[i] != want[i] {
			return false
		}
	}
	return true
}

// attentionMask describes the masks of an attention over total keys (past
// ones first) for q queries.
type attentionMask struct {
	mask                         *Value // bool (true attends) or dt (added); nil: none
	dt                           DType
	batch, heads, q, total, past int
	causal                       bool
	nonpad                       *Value // int64 [batch]: valid keys per entry; nil: all
}

// attentionBias returns the additive bias (0 or −∞ where masked, plus a
// float mask's values) the masks amount to, broadcastable to
// [batch, heads, q, total]; nil when nothing is masked.
func (c *composer) attentionBias(m attentionMask) (*Value, error) {
	negInf := math.Inf(-1)
	target := Shape{m.batch, m.heads, m.q, m.total}
	var bias *Value
	addBias := func(x *Value) {
		if bias == nil {
			bias = x
		} else {
			bias = c.add(bias, x)
		}
	}
	if mask := m.mask; mask != nil {
		if mask.DType != Bool && mask.DType != m.dt {
			return nil, fmt.Errorf("attn_mask is %s, want bool or %s", mask.DType, m.dt)
		}
		r := len(mask.Shape)
		if r == 0 || r > 4 || mask.Shape[r-1] > m.total {
			return nil, fmt.Errorf("attn_mask has shape %v, want rank 1 to 4 with at most %d keys", mask.Shape, m.total)
		}
		padded := mask.Shape.Clone()
		padded[r-1] = m.total
		if s, err := BroadcastShapes(padded, target); err != nil || !s.Equal(target) {
			return nil, fmt.Errorf("attn_mask has shape %v, want one broadcastable to %v", mask.Shape, target)
		}
		if missing := m.total - mask.Shape[r-1]; missing > 0 {
			fill := padded.Clone()
			fill[r-1] = missing
			// Keys the mask does not cover are masked out.
			pad := c.filled(mask.DType, fill, negInf)
			if mask.DType == Bool {
				pad = c.filled(Bool, fill, 0)
			}
			mask = c.concat(r-1, mask, pad)
		}
		if mask.DType == Bool {
			mask = c.op(&Where{}, mask, c.scalar(m.dt, 0), c.scalar(m.dt, negInf))
		}
		addBias(mask)
	}
	if m.causal && m.nonpad != nil {
		// An external cache: entry b's queries are its last q valid keys,
		// so query i sees key j when j <= i + nonpad[b] − q.
		offset := c.binary(Sub, c.nonpadLengths(m), c.im.constant(ScalarInt64(int64(m.q))))
		jMinusI := c.table(Int64, Shape{1, m.q, m.total}, func(i, j int) float64 { return float64(j - i) })
		sees := c.binary(LessOrEqual, jMinusI, c.reshape(offset, Shape{m.batch, 1, 1}))
		causal := c.op(&Where{}, sees, c.scalar(m.dt, 0), c.scalar(m.dt, negInf))
		addBias(c.reshape(causal, Shape{m.batch, 1, m.q, m.total}))
	} else if m.causal {
		addBias(c.table(m.dt, Shape{m.q, m.total}, func(i, j int) float64 {
			if j > i+m.past {
				return negInf
			}
			return 0
		}))
	}
	if m.nonpad != nil {
		valid := c.binary(Less, c.keyRange(m.total), c.reshape(c.nonpadLengths(m), Shape{m.batch, 1}))
		pad := c.op(&Where{}, valid, c.scalar(m.dt, 0), c.scalar(m.dt, negInf))
		addBias(c.reshape(pad, Shape{m.batch, 1, 1, m.total}))
	}
	return bias, c.err
}

// keyRange is the constant [1, total] of key positions 0..total-1.
func (c *composer) keyRange(total int) *Value {
	return c.table(Int64, Shape{1, total}, func(_, j int) float64 { return float64(j) })
}

// nonpadLengths checks nonpad_kv_seqlen and returns it as int64.
func (c *composer) nonpadLengths(m attentionMask) *Value {
	if c.err != nil {
		return nil
	}
	if !isIndex(m.nonpad.DType) || !m.nonpad.Shape.Equal(Shape{m.batch}) {
		c.fail("nonpad_kv_seqlen is %s%v, want int64 [%d]", m.nonpad.DType, m.nonpad.Shape, m.batch)
		return nil
	}
	return c.cast(m.nonpad, Int64)
}

// ---------------------------------------------------------------- FlexAttention

// importFlexAttention: ai.onnx.preview FlexAttention. Q, K, V are 4-D;
// the scores (Q·Kᵀ)·scale pass through the score_mod subgraph before the
// softmax and the probabilities through prob_mod after it; the subgraphs
// are inlined.
func importFlexAttention(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	q, k, v := in[0], in[1], in[2]
	if _, err := sameFloatInputs([]string{"Q", "K", "V"}, q, k, v); err != nil {
		return nil, err
	}
	if err := checkHeads(q.Shape, k.Shape, v.Shape); err != nil {
		return nil, err
	}
	scale, _, err := attrFloatOpt(n, "scale")
	if err != nil {
		return nil, err
	}
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(q.Shape[3]))
	}
	c := &composer{im: im}
	a := sdpa{q: q, k: k, v: v, scale: scale}
	for _, name := range []string{"score_mod", "prob_mod"} {
		g, err := n.AttrGraph(name)
		if err != nil {
			return nil, err
		}
		if g == nil {
			continue
		}
		mod := func(x *Value) *Value {
			if c.err != nil {
				return nil
			}
			outs, err := im.subgraph(branchSubgraph, name, g, []*Value{x}, "")
			if err == nil && (len(outs) != 1 || outs[0].DType != x.DType || !outs[0].Shape.Equal(x.Shape)) {
				err = fmt.Errorf("%s returns %d values, want one %s%v", name, len(outs), x.DType, x.Shape)
			}
			if err != nil {
				c.fail("%w", err)
				return nil
			}
			return outs[0]
		}
		if name == "score_mod" {
			a.scoreMod = mod
		} else {
			a.probMod = mod
		}
	}
	return one(c.attend(a).y, c.err)
}
