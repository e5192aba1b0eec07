package ir

import (
	"math"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// refAttention is a float64 reference of ONNX Attention written from the
// operator's definition with plain loops: q [B, Hq, Sq, D], k [B, Hkv, Skv,
// D], v [B, Hkv, Skv, Dv], past ones prepended; mask bool or float,
// broadcast, keys beyond its last dimension masked; causal (bottom-right
// by the past length, or by nonpad[b] − Sq for an external cache);
// nonpad masks keys from nonpad[b] on. It returns the output and the
// score stages (raw, capped, biased, softmax), each [B, Hq, Sq, total].
func refAttention(q, k, v, pastK, pastV, mask *Tensor, causal bool, nonpad []int64, scale, softcap float64) (y *Tensor, stages [4]*Tensor) {
	bsz, hq, sq, d := q.Shape()[0], q.Shape()[1], q.Shape()[2], q.Shape()[3]
	hkv, skv, dv := k.Shape()[1], k.Shape()[2], v.Shape()[3]
	past := 0
	if pastK != nil {
		past = pastK.Shape()[2]
	}
	total := past + skv
	key := func(b, h, j, c int) float64 {
		if j < past {
			return at(pastK, b, h, j, c)
		}
		return at(k, b, h, j-past, c)
	}
	val := func(b, h, j, c int) float64 {
		if j < past {
			return at(pastV, b, h, j, c)
		}
		return at(v, b, h, j-past, c)
	}
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(d))
	}
	y = NewTensor(Float64, Shape{bsz, hq, sq, dv})
	for s := range stages {
		stages[s] = NewTensor(Float64, Shape{bsz, hq, sq, total})
	}
	inf := math.Inf(1)
	for b := range bsz {
		for h := range hq {
			kh := h / (hq / hkv)
			for i := range sq {
				row := make([]float64, total)
				for j := range total {
					var s float64
					for c := range d {
						s += at(q, b, h, i, c) * key(b, kh, j, c)
					}
					s *= scale
					stages[0].Float64s()[((b*hq+h)*sq+i)*total+j] = s
					if softcap > 0 {
						s = softcap * math.Tanh(s/softcap)
					}
					stages[1].Float64s()[((b*hq+h)*sq+i)*total+j] = s
					if mask != nil {
						last := mask.Shape()[len(mask.Shape())-1]
						switch {
						case j >= last:
							s = -inf
						case mask.DType() == Bool:
							if at(mask, b, h, i, j) == 0 {
								s = -inf
							}
						default:
							s += at(mask, b, h, i, j)
						}
					}
					if causal {
						limit := i + past
						if nonpad != nil && pastK == nil {
							limit = i + int(nonpad[b]) - sq
						}
						if j > limit {
							s = -inf
						}
					}
					if nonpad != nil && j >= int(nonpad[b]) {
						s = -inf
					}
					stages[2].Float64s()[((b*hq+h)*sq+i)*total+j] = s
					row[j] = s
				}
				mx := math.Inf(-1)
				for _, s := range row {
					mx = math.Max(mx, s)
				}
				var sum float64
				for j, s := range row {
					row[j] = math.Exp(s - mx)
					sum += row[j]
				}
				for j := range row {
					row[j] /= sum
					stages[3].Float64s()[((b*hq+h)*sq+i)*total+j] = row[j]
				}
				for c := range dv {
					var o float64
					for j := range total {
						o += row[j] * val(b, kh, j, c)
					}
					y.Float64s()[((b*hq+h)*sq+i)*dv+c] = o
				}
			}
		}
	}
	return y, stages
}

// headsOf turns [B, S, H·D] into [B, H, S, D] and mergedOf back.
func headsOf(x *Tensor, heads int) *Tensor {
	b, s, d := x.Shape()[0], x.Shape()[1], x.Shape()[2]/heads
	out := NewTensor(Float64, Shape{b, heads, s, d})
	for i := range b {
		for t := range s {
			for h := range heads {
				for c := range d {
					out.Float64s()[((i*heads+h)*s+t)*d+c] = x.Float64At((i*s+t)*heads*d + h*d + c)
				}
			}
		}
	}
	return out
}

func mergedOf(x *Tensor) *Tensor {
	b, h, s, d := x.Shape()[0], x.Shape()[1], x.Shape()[2], x.Shape()[3]
	out := NewTensor(Float64, Shape{b, s, h * d})
	for i := range b {
		for t := range s {
			for j := range h {
				for c := range d {
					out.Float64s()[(i*s+t)*h*d+j*d+c] = x.Float64At(((i*h+j)*s+t)*d + c)
				}
			}
		}
	}
	return out
}

// attentionCase is one Attention node over float64 initializers.
type attentionCase struct {
	name            string
	opset           int64
	q, k, v         Shape // 3-D or 4-D
	qHeads, kvHeads int   // for 3-D
	past            int   // past length (0: no past inputs)
	mask            Shape // nil: none
	boolMask        bool
	causal          bool
	nonpad          []int64
	scale, softcap  float32
	qkMode          int // qk_matmul_output is an output when ≥ 0
}

func (c attentionCase) build(t *testing.T) *opModel {
	m := newOpModel(t, c.opset, uint64(len(c.name)))
	in := []string{m.param("Q", c.q, -1, 1), m.param("K", c.k, -1, 1), m.param("V", c.v, -1, 1), "", "", ""}
	if c.mask != nil {
		if c.boolMask {
			mk := NewTensor(Bool, c.mask)
			for i := range mk.Bools() {
				mk.Bools()[i] = m.rng.Float64() < 0.7 || i%5 == 0
			}
			in[3] = m.init("mask", mk)
		} else {
			in[3] = m.param("mask", c.mask, -1, 1)
		}
	}
	if c.past > 0 {
		kh, d, dv := c.k[1], c.k[len(c.k)-1], c.v[len(c.v)-1]
		if len(c.k) == 3 {
			kh, d, dv = c.kvHeads, c.k[2]/c.kvHeads, c.v[2]/c.kvHeads
		}
		in[4] = m.param("past_key", Shape{c.q[0], kh, c.past, d}, -1, 1)
		in[5] = m.param("past_value", Shape{c.q[0], kh, c.past, dv}, -1, 1)
	}
	if c.nonpad != nil {
		in = append(in, m.init("nonpad", FromInt64s(Shape{len(c.nonpad)}, c.nonpad)))
	}
	for len(in) > 3 && in[len(in)-1] == "" {
		in = in[:len(in)-1]
	}
	out := []string{"Y", "", "", ""}
	if c.past > 0 {
		out[1], out[2] = "present_key", "present_value"
	}
	if c.qkMode >= 0 {
		out[3] = "qk"
	}
	var attrs []*onnx.Attribute
	if c.qHeads > 0 {
		attrs = append(attrs, intAttr("q_num_heads", int64(c.qHeads)), intAttr("kv_num_heads", int64(c.kvHeads)))
	}
	if c.causal {
		attrs = append(attrs, intAttr("is_causal", 1))
	}
	if c.scale != 0 {
		attrs = append(attrs, floatAttr("scale", c.scale))
	}
	if c.softcap != 0 {
		attrs = append(attrs, floatAttr("softcap", c.softcap))
	}
	if c.qkMode > 0 {
		attrs = append(attrs, intAttr("qk_matmul_output_mode", int64(c.qkMode)))
	}
	for len(out) > 1 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	m.add("Attention", in, out, attrs...)
	for _, o := range out {
		if o != "" {
			m.outputs = append(m.outputs, o)
		}
	}
	return m
}

var attentionCases = []attentionCase{
	{name: "4d-gqa-causal-softcap-scale", opset: 23, q: Shape{2, 4, 3, 4}, k: Shape{2, 2, 5, 4}, v: Shape{2, 2, 5, 3}, causal: true, scale: 0.3, softcap: 1.5, qkMode: -1},
	{name: "3d-past-short-float-mask-softmax-stage", opset: 23, q: Shape{1, 3, 6}, k: Shape{1, 3, 6}, v: Shape{1, 3, 4}, qHeads: 2, kvHeads: 2, past: 2, mask: Shape{3, 4}, qkMode: 3},
	{name: "4d-bool-mask-per-head-causal-past", opset: 23, q: Shape{1, 2, 3, 4}, k: Shape{1, 1, 3, 4}, v: Shape{1, 1, 3, 4}, past: 2, mask: Shape{2, 3, 5}, boolMask: true, causal: true, qkMode: 0},
	{name: "4d-mask-softcap-capped-stage", opset: 23, q: Shape{1, 2, 3, 4}, k: Shape{1, 2, 4, 4}, v: Shape{1, 2, 4, 2}, mask: Shape{1, 1, 3, 4}, softcap: 0.8, qkMode: 1},
	{name: "4d-mask-softcap-biased-stage", opset: 23, q: Shape{1, 2, 3, 4}, k: Shape{1, 2, 4, 4}, v: Shape{1, 2, 4, 2}, mask: Shape{3, 4}, softcap: 0.8, qkMode: 2},
	{name: "opset24-nonpad-causal-external-cache", opset: 24, q: Shape{2, 2, 2, 4}, k: Shape{2, 1, 5, 4}, v: Shape{2, 1, 5, 4}, causal: true, nonpad: []int64{3, 5}, qkMode: -1},
	{name: "opset24-nonpad-bool-mask", opset: 24, q: Shape{2, 2, 2, 4}, k: Shape{2, 2, 5, 4}, v: Shape{2, 2, 5, 4}, mask: Shape{2, 1, 2, 5}, boolMask: true, nonpad: []int64{4, 2}, qkMode: -1},
}

// TestAttentionMatchesReference imports Attention nodes covering GQA,
// 3-D inputs, past keys and values, short, boolean, per-head and float
// masks, causal masking with a past and with an external cache, softcap,
// scale and every qk_matmul_output stage, and compares with refAttention.
func TestAttentionMatchesReference(t *testing.T) {
	for _, c := range attentionCases {
		t.Run(c.name, func(t *testing.T) {
			m := c.build(t)
			_, res := m.run()
			get := m.tensor
			q, k, v := get("Q"), get("K"), get("V")
			if len(c.q) == 3 {
				q, k, v = headsOf(q, c.qHeads), headsOf(k, c.kvHeads), headsOf(v, c.kvHeads)
			}
			y, stages := refAttention(q, k, v, get("past_key"), get("past_value"), get("mask"), c.causal, c.nonpad, float64(c.scale), float64(c.softcap))
			if len(c.q) == 3 {
				y = mergedOf(y)
			}
			if d := Compare(res["Y"], y, 1e-12, 1e-12); !d.OK() {
				t.Errorf("Y: %v", d)
			}
			if c.qkMode >= 0 {
				if d := Compare(res["qk"], stages[c.qkMode], 1e-12, 1e-12); !d.OK() {
					t.Errorf("qk_matmul_output (mode %d): %v", c.qkMode, d)
				}
			}
			if c.past > 0 {
				pk := res["present_key"]
				if want := c.past + k.Shape()[2]; pk.Shape()[2] != want || at(pk, 0, 0, c.past, 0) != at(k, 0, 0, 0, 0) || at(pk, 0, 0, 0, 0) != at(get("past_key"), 0, 0, 0, 0) {
					t.Errorf("present_key %v is not past_key then K", pk.Shape())
				}
			}
		})
	}
}

// TestAttentionGradients checks the gradients of Q, K, V, the past, a
// float mask and every output (qk_matmul_output included) by central
// differences.
func TestAttentionGradients(t *testing.T) {
	for _, c := range attentionCases {
		t.Run(c.name, func(t *testing.T) {
			g, err := c.build(t).graph()
			if err != nil {
				t.Fatal(err)
			}
			checkGradFD(t, g, 1e-6)
		})
	}
}

// flexModel is a FlexAttention node with a score_mod (a softcap and a
// bias from the subgraph's own initializer) and a prob_mod (a scaling).
func flexModel(t *testing.T, q, k, v Shape) *opModel {
	m := newOpModel(t, 26, 9)
	m.opsets = append(m.opsets, onnx.OpsetID{Domain: "ai.onnx.preview", Version: 1})
	scoreMod := &onnx.Graph{
		Name:         "score_mod",
		Inputs:       []*onnx.ValueInfo{valueInfo("scores", onnx.Double, "B", "H", "L", "S")},
		Initializers: []*onnx.Tensor{initializer(t, "cap", scalar64(2)), initializer(t, "bias", m.random(Shape{q[2], k[2]}, -1, 1))},
		Nodes: []*onnx.Node{
			node("Div", []string{"scores", "cap"}, []string{"scaled"}),
			node("Tanh", []string{"scaled"}, []string{"capped"}),
			node("Mul", []string{"capped", "cap"}, []string{"capped2"}),
			node("Add", []string{"capped2", "bias"}, []string{"out"}),
		},
		Outputs: []*onnx.ValueInfo{{Name: "out"}},
	}
	probMod := &onnx.Graph{
		Name:         "prob_mod",
		Inputs:       []*onnx.ValueInfo{valueInfo("probs", onnx.Double, "B", "H", "L", "S")},
		Initializers: []*onnx.Tensor{initializer(t, "half", scalar64(0.5))},
		Nodes:        []*onnx.Node{node("Mul", []string{"probs", "half"}, []string{"out"})},
		Outputs:      []*onnx.ValueInfo{{Name: "out"}},
	}
	n := m.add("FlexAttention", []string{m.param("Q", q, -1, 1), m.param("K", k, -1, 1), m.param("V", v, -1, 1)}, []string{"Y"},
		graphAttr("score_mod", scoreMod), graphAttr("prob_mod", probMod),
		floatAttr("scale", 0.4))
	n.Domain = "ai.onnx.preview"
	m.outputs = []string{"Y"}
	return m
}

// TestFlexAttention: the score_mod and prob_mod subgraphs are inlined
// (the result equals the same computation written out by hand) and
// differentiable.
func TestFlexAttention(t *testing.T) {
	q, k, v := Shape{1, 4, 3, 4}, Shape{1, 2, 5, 4}, Shape{1, 2, 5, 2}
	m := flexModel(t, q, k, v)
	g, res := m.run()
	qt, kt, vt := m.tensor("Q"), m.tensor("K"), m.tensor("V")
	bias, err := TensorFromONNX(m.nodes[0].Attributes[0].G.Initializers[1])
	if err != nil {
		t.Fatal(err)
	}
	want := NewTensor(Float64, Shape{1, 4, 3, 2})
	for h := range 4 {
		for i := range 3 {
			row := make([]float64, 5)
			var sum float64
			for j := range 5 {
				var s float64
				for c := range 4 {
					s += at(qt, 0, h, i, c) * at(kt, 0, h/2, j, c)
				}
				row[j] = math.Exp(2*math.Tanh(float64(float32(0.4))*s/2) + at(bias, i, j))
				sum += row[j]
			}
			for c := range 2 {
				var o float64
				for j := range 5 {
					o += 0.5 * row[j] / sum * at(vt, 0, h/2, j, c)
				}
				want.Float64s()[(h*3+i)*2+c] = o
			}
		}
	}
	if d := Compare(res["Y"], want, 1e-12, 1e-12); !d.OK() {
		t.Errorf("Y: %v", d)
	}
	checkGradFD(t, g, 1e-6)
}

func TestAttentionImportErrors(t *testing.T) {
	qkv := func(m *opModel, q, k, v Shape) []string {
		return []string{m.param("Q", q, -1, 1), m.param("K", k, -1, 1), m.param("V", v, -1, 1)}
	}
	attention := func(q, k, v Shape, attrs ...*onnx.Attribute) func(m *opModel) {
		return func(m *opModel) {
			m.add("Attention", qkv(m, q, k, v), []string{"Y"}, attrs...)
			m.outputs = []string{"Y"}
		}
	}
	q4, kv4 := Shape{1, 2, 3, 4}, Shape{1, 2, 3, 4}
	checkImportErrors(t, 23, []importError{
		{"3d-without-heads", attention(Shape{1, 3, 8}, Shape{1, 3, 8}, Shape{1, 3, 8}), "need the q_num_heads and kv_num_heads"},
		{"3d-heads-not-dividing", attention(Shape{1, 3, 8}, Shape{1, 3, 8}, Shape{1, 3, 8}, intAttr("q_num_heads", 3), intAttr("kv_num_heads", 2)), "not multiples"},
		{"ranks-mixed", attention(q4, Shape{1, 3, 8}, Shape{1, 3, 8}), "want all 3-D or all 4-D"},
		{"heads-not-multiple", attention(Shape{1, 3, 3, 4}, kv4, kv4), "not a multiple"},
		{"head-size-differs", attention(q4, Shape{1, 2, 3, 5}, kv4), "differ in head size"},
		{"kv-lengths-differ", attention(q4, kv4, Shape{1, 2, 4, 4}), "differ in heads or sequence length"},
		{"qk-mode", attention(q4, kv4, kv4, intAttr("qk_matmul_output_mode", 4)), "qk_matmul_output_mode 4"},
		{"negative-softcap", attention(q4, kv4, kv4, floatAttr("softcap", -1)), "softcap -1"},
		{"causal-not-boolean", attention(q4, kv4, kv4, intAttr("is_causal", 2)), "is_causal is 2"},
		{"softmax-precision", attention(q4, kv4, kv4, intAttr("softmax_precision", int64(onnx.Int32))), "softmax_precision"},
		{"integer-query", func(m *opModel) {
			m.add("Attention", []string{m.init("Q", FromInt64s(Shape{1, 1, 1, 1}, []int64{1})), m.param("K", Shape{1, 1, 1, 1}, 0, 1), m.param("V", Shape{1, 1, 1, 1}, 0, 1)}, []string{"Y"})
			m.outputs = []string{"Y"}
		}, "Q is int64, want a float type"},
		{"mask-too-long", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), m.param("mask", Shape{3, 4}, 0, 1)), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "at most 3 keys"},
		{"mask-not-broadcasting", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), m.param("mask", Shape{2, 2, 3}, 0, 1)), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "want one broadcastable to [1,2,3,3]"},
		{"mask-int", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), m.init("mask", FromInt64s(Shape{3}, []int64{1, 1, 1}))), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "attn_mask is int64, want bool or float64"},
		{"past-key-alone", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), "", m.param("pk", Shape{1, 2, 1, 4}, 0, 1)), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "past_key and past_value come together"},
		{"past-wrong-heads", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), "", m.param("pk", Shape{1, 1, 1, 4}, 0, 1), m.param("pv", Shape{1, 1, 1, 4}, 0, 1)), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "past_key [1,1,1,4] and past_value [1,1,1,4], want [1,2,past,4]"},
		{"causal-mask-too-large", func(m *opModel) {
			// A 65536 × 65536 mask: refused, not allocated.
			for _, name := range []string{"Q", "K", "V"} {
				m.inputs = append(m.inputs, valueInfo(name, onnx.Double, 1, 1, 1<<16, 1))
			}
			m.add("Attention", []string{"Q", "K", "V"}, []string{"Y"}, intAttr("is_causal", 1))
			m.outputs = []string{"Y"}
		}, "exceed the 1024 MiB limit"},
		{"nonpad-before-opset-24", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), "", "", "", m.init("np", FromInt64s(Shape{1}, []int64{2}))), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "from opset 24 on"},
	})
	checkImportErrors(t, 24, []importError{
		{"nonpad-wrong-shape", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), "", "", "", m.init("np", FromInt64s(Shape{2}, []int64{2, 2}))), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "nonpad_kv_seqlen is int64[2], want int64 [1]"},
		{"nonpad-with-past", func(m *opModel) {
			m.add("Attention", append(qkv(m, q4, kv4, kv4), "", m.param("pk", Shape{1, 2, 1, 4}, 0, 1), m.param("pv", Shape{1, 2, 1, 4}, 0, 1), m.init("np", FromInt64s(Shape{1}, []int64{2}))), []string{"Y"})
			m.outputs = []string{"Y"}
		}, "excludes past_key"},
	})
	checkImportErrors(t, 26, []importError{
		{"flex-3d", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: "ai.onnx.preview", Version: 1})
			n := m.add("FlexAttention", qkv(m, Shape{1, 3, 8}, Shape{1, 3, 8}, Shape{1, 3, 8}), []string{"Y"})
			n.Domain = "ai.onnx.preview"
			m.outputs = []string{"Y"}
		}, "want 4-D"},
		{"flex-score-mod-two-inputs", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: "ai.onnx.preview", Version: 1})
			g := &onnx.Graph{Inputs: []*onnx.ValueInfo{{Name: "a"}, {Name: "b"}}, Outputs: []*onnx.ValueInfo{{Name: "a"}}}
			n := m.add("FlexAttention", qkv(m, q4, kv4, kv4), []string{"Y"}, graphAttr("score_mod", g))
			n.Domain = "ai.onnx.preview"
			m.outputs = []string{"Y"}
		}, "score_mod has 2 inputs, want 1"},
	})
}
