package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// The recurrent layers of linear-attention hybrids (gated delta networks
// and their short causal convolutions): LinearAttention's state
// recurrence is unrolled over the sequence into MatMuls and element-wise
// ops, CausalConvWithState becomes a depthwise Conv over the input with
// the carried state in front.

func init() {
	registerOp("", "LinearAttention", importLinearAttention)
	registerOp("", "CausalConvWithState", importCausalConvWithState)
}

// maxUnrolledSteps bounds the sequence length LinearAttention is unrolled
// over (each step is about a dozen nodes).
const maxUnrolledSteps = 8192

// importLinearAttention: LinearAttention (opset 27). query [B, T, Hq·dk],
// key [B, T, Hkv·dk], value [B, T, Hkv·dv]; the state S [B, Hkv, dk, dv]
// starts at past_state (zeros without) and at every step t
//
//	gated:  S ← S · exp(decay_t)                 (decay per head or per key channel)
//	delta:  v_t ← beta_t · (v_t − Sᵀ·(erase_t ⊙ k_t))
//	always: S ← S + k_t ⊗ v_t;  out_t = scale · q_t·S  (query head h reads S of head h/(Hq/Hkv))
//
// update_rule picks linear, gated, delta or gated_delta; the state is
// kept in float32 (float64 for float64 inputs). Outputs: the output
// [B, T, Hq·dv] and the final state (present_state, in past_state's type).
func importLinearAttention(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 7); err != nil {
		return nil, err
	}
	q, k, v := in[0], in[1], in[2]
	past, decay, beta, erase := optIn(in, 3), optIn(in, 4), optIn(in, 5), optIn(in, 6)
	dt, err := sameFloatInputs([]string{"query", "key", "value", "decay", "beta", "erase_gate"}, q, k, v, decay, beta, erase)
	if err != nil {
		return nil, err
	}
	rule, err := n.AttrString("update_rule", "gated_delta")
	if err != nil {
		return nil, err
	}
	gated, delta := rule == "gated" || rule == "gated_delta", rule == "delta" || rule == "gated_delta"
	if !gated && !delta && rule != "linear" {
		return nil, fmt.Errorf("update_rule %q, want linear, gated, delta or gated_delta", rule)
	}
	switch {
	case gated && decay == nil:
		return nil, fmt.Errorf("update_rule %q needs the decay input", rule)
	case !gated && decay != nil:
		return nil, fmt.Errorf("update_rule %q takes no decay input", rule)
	case delta && beta == nil:
		return nil, fmt.Errorf("update_rule %q needs the beta input", rule)
	case !delta && (beta != nil || erase != nil):
		return nil, fmt.Errorf("update_rule %q takes no beta or erase_gate input", rule)
	}
	qHeads, err := attrCount(n, "q_num_heads")
	if err != nil {
		return nil, err
	}
	kvHeads, err := attrCount(n, "kv_num_heads")
	if err != nil {
		return nil, err
	}
	if qHeads == 0 || kvHeads == 0 || qHeads%kvHeads != 0 {
		return nil, fmt.Errorf("q_num_heads %d and kv_num_heads %d: both required, q_num_heads a multiple of kv_num_heads", qHeads, kvHeads)
	}
	if _, err := attrCount(n, "chunk_size"); err != nil { // a tuning hint
		return nil, err
	}
	if w, err := attrCount(n, "state_window"); err != nil {
		return nil, err
	} else if w != 0 {
		return nil, fmt.Errorf("%w: LinearAttention with a state_window of %d (the states of the last tokens)", ErrNotSupported, w)
	}
	scale, _, err := attrFloatOpt(n, "scale")
	if err != nil {
		return nil, err
	}
	if len(q.Shape) != 3 || len(k.Shape) != 3 || len(v.Shape) != 3 {
		return nil, fmt.Errorf("query %v, key %v, value %v: want 3-D [batch, seq, heads·head_size]", q.Shape, k.Shape, v.Shape)
	}
	b, steps := q.Shape[0], q.Shape[1]
	dk, dv := q.Shape[2]/qHeads, v.Shape[2]/kvHeads
	if !k.Shape.Equal(Shape{b, steps, kvHeads * dk}) || q.Shape[2] != qHeads*dk || !v.Shape.Equal(Shape{b, steps, kvHeads * dv}) {
		return nil, fmt.Errorf("query %v, key %v, value %v do not agree with q_num_heads %d and kv_num_heads %d", q.Shape, k.Shape, v.Shape, qHeads, kvHeads)
	}
	if steps > maxUnrolledSteps {
		return nil, fmt.Errorf("%w: LinearAttention over %d steps (the recurrence is unrolled, at most %d)", ErrNotSupported, steps, maxUnrolledSteps)
	}
	if decay != nil && !decay.Shape.Equal(Shape{b, steps, kvHeads}) && !decay.Shape.Equal(Shape{b, steps, kvHeads * dk}) {
		return nil, fmt.Errorf("decay has shape %v, want %v or %v", decay.Shape, Shape{b, steps, kvHeads}, Shape{b, steps, kvHeads * dk})
	}
	if beta != nil && !beta.Shape.Equal(Shape{b, steps, kvHeads}) && !beta.Shape.Equal(Shape{b, steps, 1}) {
		return nil, fmt.Errorf("beta has shape %v, want %v or %v", beta.Shape, Shape{b, steps, kvHeads}, Shape{b, steps, 1})
	}
	if erase != nil && !erase.Shape.Equal(k.Shape) {
		return nil, fmt.Errorf("erase_gate has shape %v, want key's %v", erase.Shape, k.Shape)
	}
	stateType := dt
	if past != nil {
		if !isFloat(past.DType) || !past.Shape.Equal(Shape{b, kvHeads, dk, dv}) {
			return nil, fmt.Errorf("past_state is %s%v, want float %v", past.DType, past.Shape, Shape{b, kvHeads, dk, dv})
		}
		stateType = past.DType
	}
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(dk))
	}

	c := &composer{im: im}
	work := Float32
	if dt == Float64 {
		work = Float64
	}
	// Per-head [B, H, T, d] layouts in the working type; the per-step
	// slices of the gates are laid out so that they broadcast over the
	// state [B, Hkv, dk, dv] as they are.
	q4 := c.scale(c.cast(c.splitHeads(q, qHeads), work), scale)
	k4 := c.cast(c.splitHeads(k, kvHeads), work)
	v4 := c.cast(c.splitHeads(v, kvHeads), work)
	var decayT, beta4, erase4 *Value // [B, Hkv, 1|dk, T], [B, Hkv|1, T, 1], [B, Hkv, T, dk]
	if decay != nil {
		per := decay.Shape[2] / kvHeads
		decayT = c.transpose(c.reshape(c.unary(Exp, c.cast(decay, work)), Shape{b, steps, kvHeads, per}), 0, 2, 3, 1)
	}
	if beta != nil {
		beta4 = c.transpose(c.reshape(c.cast(beta, work), Shape{b, steps, beta.Shape[2], 1}), 0, 2, 1, 3)
	}
	if erase != nil {
		erase4 = c.cast(c.splitHeads(erase, kvHeads), work)
	}
	var state *Value
	if past != nil {
		state = c.cast(past, work)
	} else {
		state = c.filled(work, Shape{b, kvHeads, dk, dv}, 0)
	}
	groups := qHeads / kvHeads
	outs := make([]*Value, steps)
	for t := range steps {
		if c.err != nil {
			return nil, c.err
		}
		kt := c.slice(k4, 2, t, 1, 1) // [B, Hkv, 1, dk]
		vt := c.slice(v4, 2, t, 1, 1) // [B, Hkv, 1, dv]
		if decayT != nil {
			state = c.mul(state, c.slice(decayT, 3, t, 1, 1))
		}
		if delta {
			ke := kt
			if erase4 != nil {
				ke = c.mul(c.slice(erase4, 2, t, 1, 1), kt)
			}
			retrieved := c.op(&MatMul{}, ke, state) // [B, Hkv, 1, dv]
			vt = c.mul(c.slice(beta4, 2, t, 1, 1), c.binary(Sub, vt, retrieved))
		}
		state = c.add(state, c.op(&MatMul{}, c.reshape(kt, Shape{b, kvHeads, dk, 1}), vt))
		qt := c.slice(q4, 2, t, 1, 1) // [B, Hq, 1, dk]
		if groups > 1 {
			qt = c.reshape(qt, Shape{b, kvHeads, groups, dk})
		}
		outs[t] = c.reshape(c.op(&MatMul{}, qt, state), Shape{b, qHeads, 1, dv})
	}
	y := c.cast(c.mergeHeads(c.concat(2, outs...)), dt)
	return []*Value{y, c.cast(state, stateType)}, c.err
}

// importCausalConvWithState: CausalConvWithState (opset 27). input
// [B, C, L] is convolved channel by channel with weight [C, 1, K] (plus
// bias [C]) over the last K−1 positions of past_state [B, C, K−1] (zeros
// without) followed by the input, then optionally passed through SiLU
// (activation silu or swish). Outputs: [B, C, L] and present_state, the
// last K−1 positions of that concatenation.
func importCausalConvWithState(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 4); err != nil {
		return nil, err
	}
	x, w, bias, past := in[0], in[1], optIn(in, 2), optIn(in, 3)
	dt, err := sameFloatInputs([]string{"input", "weight", "bias", "past_state"}, x, w, bias, past)
	if err != nil {
		return nil, err
	}
	act, err := n.AttrString("activation", "none")
	if err != nil {
		return nil, err
	}
	if act != "none" && act != "silu" && act != "swish" {
		return nil, fmt.Errorf("activation %q, want none, silu or swish", act)
	}
	if len(x.Shape) != 3 || len(w.Shape) != 3 {
		return nil, fmt.Errorf("input %v and weight %v: want [batch, channels, length] and [channels, 1, kernel]", x.Shape, w.Shape)
	}
	b, ch, length, kernel := x.Shape[0], x.Shape[1], x.Shape[2], w.Shape[2]
	if w.Shape[0] != ch || w.Shape[1] != 1 || kernel < 1 {
		return nil, fmt.Errorf("weight has shape %v, want [%d,1,kernel]", w.Shape, ch)
	}
	if bias != nil && !bias.Shape.Equal(Shape{ch}) {
		return nil, fmt.Errorf("bias has shape %v, want [%d]", bias.Shape, ch)
	}
	stateShape := Shape{b, ch, kernel - 1}
	if past != nil && !past.Shape.Equal(stateShape) {
		return nil, fmt.Errorf("past_state has shape %v, want %v", past.Shape, stateShape)
	}
	c := &composer{im: im}
	if past == nil {
		past = c.filled(dt, stateShape, 0)
	}
	padded := x
	if kernel > 1 {
		padded = c.concat(2, past, x)
	}
	conv := &Conv{Strides: []int{1}, Pads: []int{0, 0}, Dilations: []int{1}, Group: ch}
	args := []*Value{padded, w}
	if bias != nil {
		args = append(args, bias)
	}
	y := c.op(conv, args...)
	if act != "none" {
		y = c.silu(y)
	}
	present := c.slice(padded, 2, length, kernel-1, 1)
	if kernel == 1 {
		present = c.filled(dt, stateShape, 0)
	}
	return []*Value{y, present}, c.err
}
