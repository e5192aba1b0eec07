package ir

import (
	"math"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// refLinearAttention runs LinearAttention's recurrence with plain loops in
// float64 over the 3-D inputs (nil where absent) and returns the output
// and the final state.
func refLinearAttention(q, k, v, past, decay, beta, erase *Tensor, qHeads, kvHeads int, scale float64) (*Tensor, *Tensor) {
	b, steps := q.Shape()[0], q.Shape()[1]
	dk, dv := q.Shape()[2]/qHeads, v.Shape()[2]/kvHeads
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(dk))
	}
	state := NewTensor(Float64, Shape{b, kvHeads, dk, dv})
	if past != nil {
		state = past.Clone()
	}
	s := state.Float64s()
	y := NewTensor(Float64, Shape{b, steps, qHeads * dv})
	for n := range b {
		for t := range steps {
			for h := range kvHeads {
				kt := make([]float64, dk)
				for i := range dk {
					kt[i] = k.Float64At((n*steps+t)*kvHeads*dk + h*dk + i)
				}
				vt := make([]float64, dv)
				for j := range dv {
					vt[j] = v.Float64At((n*steps+t)*kvHeads*dv + h*dv + j)
				}
				st := s[(n*kvHeads+h)*dk*dv : (n*kvHeads+h+1)*dk*dv]
				if decay != nil {
					per := decay.Shape()[2] / kvHeads
					for i := range dk {
						g := decay.Float64At((n*steps+t)*decay.Shape()[2] + h*per + i%per)
						for j := range dv {
							st[i*dv+j] *= math.Exp(g)
						}
					}
				}
				if beta != nil {
					bh := h
					if beta.Shape()[2] == 1 {
						bh = 0
					}
					bt := beta.Float64At((n*steps+t)*beta.Shape()[2] + bh)
					for j := range dv {
						var r float64
						for i := range dk {
							ke := kt[i]
							if erase != nil {
								ke *= erase.Float64At((n*steps+t)*kvHeads*dk + h*dk + i)
							}
							r += st[i*dv+j] * ke
						}
						vt[j] = bt * (vt[j] - r)
					}
				}
				for i := range dk {
					for j := range dv {
						st[i*dv+j] += kt[i] * vt[j]
					}
				}
			}
			for h := range qHeads {
				kh := h / (qHeads / kvHeads)
				st := s[(n*kvHeads+kh)*dk*dv : (n*kvHeads+kh+1)*dk*dv]
				for j := range dv {
					var o float64
					for i := range dk {
						o += q.Float64At((n*steps+t)*qHeads*dk+h*dk+i) * st[i*dv+j]
					}
					y.Float64s()[(n*steps+t)*qHeads*dv+h*dv+j] = scale * o
				}
			}
		}
	}
	return y, state
}

type linearAttentionCase struct {
	name                  string
	rule                  string
	qHeads, kvHeads       int
	dk, dv, steps         int
	past, erase           bool
	decayPerHead, betaOne bool
	scale                 float32
}

func (c linearAttentionCase) build(t *testing.T) *opModel {
	m := newOpModel(t, 27, uint64(len(c.name)))
	b := 2
	in := []string{
		m.param("q", Shape{b, c.steps, c.qHeads * c.dk}, -1, 1),
		m.param("k", Shape{b, c.steps, c.kvHeads * c.dk}, -1, 1),
		m.param("v", Shape{b, c.steps, c.kvHeads * c.dv}, -1, 1),
		"", "", "", "",
	}
	if c.past {
		in[3] = m.param("past", Shape{b, c.kvHeads, c.dk, c.dv}, -1, 1)
	}
	if c.rule == "gated" || c.rule == "gated_delta" {
		per := c.kvHeads * c.dk
		if c.decayPerHead {
			per = c.kvHeads
		}
		in[4] = m.param("decay", Shape{b, c.steps, per}, -1, 0)
	}
	if c.rule == "delta" || c.rule == "gated_delta" {
		per := c.kvHeads
		if c.betaOne {
			per = 1
		}
		in[5] = m.param("beta", Shape{b, c.steps, per}, 0, 1)
		if c.erase {
			in[6] = m.param("erase", Shape{b, c.steps, c.kvHeads * c.dk}, 0, 1)
		}
	}
	for in[len(in)-1] == "" {
		in = in[:len(in)-1]
	}
	attrs := []*onnx.Attribute{intAttr("q_num_heads", int64(c.qHeads)), intAttr("kv_num_heads", int64(c.kvHeads)), stringAttr("update_rule", c.rule)}
	if c.scale != 0 {
		attrs = append(attrs, floatAttr("scale", c.scale))
	}
	m.add("LinearAttention", in, []string{"Y", "state"}, attrs...)
	m.outputs = []string{"Y", "state"}
	return m
}

var linearAttentionCases = []linearAttentionCase{
	{name: "linear", rule: "linear", qHeads: 2, kvHeads: 2, dk: 2, dv: 3, steps: 3},
	{name: "gated-per-head-past", rule: "gated", qHeads: 2, kvHeads: 1, dk: 3, dv: 2, steps: 3, past: true, decayPerHead: true},
	{name: "delta-beta-one-scale", rule: "delta", qHeads: 2, kvHeads: 2, dk: 2, dv: 2, steps: 3, betaOne: true, scale: 0.7},
	{name: "gated-delta-gqa-past-erase", rule: "gated_delta", qHeads: 4, kvHeads: 2, dk: 2, dv: 3, steps: 3, past: true, erase: true},
}

// TestLinearAttention compares every update rule (with GQA, a past state,
// per-head and per-channel decay, a shared beta and an erase gate) with
// refLinearAttention and checks the gradients of every input by central
// differences.
func TestLinearAttention(t *testing.T) {
	for _, c := range linearAttentionCases {
		t.Run(c.name, func(t *testing.T) {
			m := c.build(t)
			g, res := m.run()
			get := m.tensor
			y, state := refLinearAttention(get("q"), get("k"), get("v"), get("past"), get("decay"), get("beta"), get("erase"), c.qHeads, c.kvHeads, float64(c.scale))
			if d := Compare(res["Y"], y, 1e-12, 1e-12); !d.OK() {
				t.Errorf("output: %v", d)
			}
			if d := Compare(res["state"], state, 1e-12, 1e-12); !d.OK() {
				t.Errorf("present_state: %v", d)
			}
			checkGradFD(t, g, 1e-6)
		})
	}
}

// TestCausalConvWithState compares CausalConvWithState (with and without
// past state and bias, SiLU, a kernel of one) with a loop over the
// definition and checks the gradients of every input.
func TestCausalConvWithState(t *testing.T) {
	for _, c := range []struct {
		name       string
		kernel     int
		past, bias bool
		act        string
	}{
		{"silu-past-bias", 3, true, true, "silu"},
		{"zeros-state", 4, false, false, "none"},
		{"kernel-one", 1, false, true, "swish"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newOpModel(t, 27, 13)
			bsz, ch, length := 2, 3, 4
			in := []string{m.param("x", Shape{bsz, ch, length}, -1, 1), m.param("w", Shape{ch, 1, c.kernel}, -1, 1), "", ""}
			if c.bias {
				in[2] = m.param("b", Shape{ch}, -1, 1)
			}
			if c.past {
				in[3] = m.param("past", Shape{bsz, ch, c.kernel - 1}, -1, 1)
			}
			for in[len(in)-1] == "" {
				in = in[:len(in)-1]
			}
			m.add("CausalConvWithState", in, []string{"y", "state"}, stringAttr("activation", c.act))
			m.outputs = []string{"y", "state"}
			g, res := m.run()
			x, w := m.tensor("x"), m.tensor("w")
			padded := func(n, ch, p int) float64 { // position p of [past, x]
				if p >= c.kernel-1 {
					return at(x, n, ch, p-(c.kernel-1))
				}
				if c.past {
					return at(m.tensor("past"), n, ch, p)
				}
				return 0
			}
			wantY := NewTensor(Float64, Shape{bsz, ch, length})
			wantState := NewTensor(Float64, Shape{bsz, ch, c.kernel - 1})
			for n := range bsz {
				for h := range ch {
					for l := range length {
						var s float64
						if c.bias {
							s = m.tensor("b").Float64At(h)
						}
						for j := range c.kernel {
							s += at(w, h, 0, j) * padded(n, h, l+j)
						}
						if c.act != "none" {
							s /= 1 + math.Exp(-s)
						}
						wantY.Float64s()[(n*ch+h)*length+l] = s
					}
					for j := range c.kernel - 1 {
						wantState.Float64s()[(n*ch+h)*(c.kernel-1)+j] = padded(n, h, length+j)
					}
				}
			}
			if d := Compare(res["y"], wantY, 1e-12, 1e-12); !d.OK() {
				t.Errorf("output: %v", d)
			}
			if d := Compare(res["state"], wantState, 0, 0); !d.OK() {
				t.Errorf("present_state: %v", d)
			}
			checkGradFD(t, g, 1e-6)
		})
	}
}

func TestLinearAttentionImportErrors(t *testing.T) {
	la := func(rule string, q, k, v Shape, extra map[int]Shape, attrs ...*onnx.Attribute) func(m *opModel) {
		return func(m *opModel) {
			in := []string{m.param("q", q, 0, 1), m.param("k", k, 0, 1), m.param("v", v, 0, 1), "", "", "", ""}
			for i, s := range extra {
				in[i] = m.param([]string{"", "", "", "past", "decay", "beta", "erase"}[i], s, 0, 1)
			}
			for in[len(in)-1] == "" {
				in = in[:len(in)-1]
			}
			attrs = append(attrs, stringAttr("update_rule", rule))
			m.add("LinearAttention", in, []string{"y"}, attrs...)
			m.outputs = []string{"y"}
		}
	}
	heads := []*onnx.Attribute{intAttr("q_num_heads", 2), intAttr("kv_num_heads", 2)}
	s := Shape{1, 3, 4}
	checkImportErrors(t, 27, []importError{
		{"no-heads", la("linear", s, s, s, nil), "both required"},
		{"bad-rule", la("fast", s, s, s, nil, heads...), `update_rule "fast"`},
		{"gated-without-decay", la("gated", s, s, s, nil, heads...), "needs the decay input"},
		{"linear-with-decay", la("linear", s, s, s, map[int]Shape{4: s}, heads...), "takes no decay input"},
		{"delta-without-beta", la("delta", s, s, s, nil, heads...), "needs the beta input"},
		{"gated-with-erase", la("gated", s, s, s, map[int]Shape{4: s, 6: s}, heads...), "takes no beta or erase_gate input"},
		{"decay-shape", la("gated", s, s, s, map[int]Shape{4: {1, 3, 3}}, heads...), "decay has shape [1,3,3]"},
		{"beta-shape", la("delta", s, s, s, map[int]Shape{5: {1, 3, 3}}, heads...), "beta has shape [1,3,3]"},
		{"past-shape", la("linear", s, s, s, map[int]Shape{3: {1, 2, 2, 3}}, heads...), "past_state is float64[1,2,2,3]"},
		{"key-shape", la("linear", s, Shape{1, 3, 6}, s, nil, heads...), "do not agree with q_num_heads 2"},
		{"rank", la("linear", Shape{3, 4}, Shape{3, 4}, Shape{3, 4}, nil, heads...), "want 3-D"},
		{"state-window", la("linear", s, s, s, nil, append(heads, intAttr("state_window", 2))...), "state_window of 2"},
		{"too-long", la("linear", Shape{1, maxUnrolledSteps + 1, 2}, Shape{1, maxUnrolledSteps + 1, 2}, Shape{1, maxUnrolledSteps + 1, 2}, nil, heads...), "unrolled, at most"},
	})
	conv := func(x, w Shape, attrs ...*onnx.Attribute) func(m *opModel) {
		return func(m *opModel) {
			m.add("CausalConvWithState", []string{m.param("x", x, 0, 1), m.param("w", w, 0, 1)}, []string{"y"}, attrs...)
			m.outputs = []string{"y"}
		}
	}
	checkImportErrors(t, 27, []importError{
		{"conv-activation", conv(Shape{1, 2, 4}, Shape{2, 1, 3}, stringAttr("activation", "relu")), `activation "relu"`},
		{"conv-weight", conv(Shape{1, 2, 4}, Shape{2, 2, 3}), "weight has shape [2,2,3], want [2,1,kernel]"},
		{"conv-rank", conv(Shape{2, 4}, Shape{2, 1, 3}), "want [batch, channels, length]"},
		{"conv-past", func(m *opModel) {
			m.add("CausalConvWithState", []string{m.param("x", Shape{1, 2, 4}, 0, 1), m.param("w", Shape{2, 1, 3}, 0, 1), "", m.param("p", Shape{1, 2, 3}, 0, 1)}, []string{"y"})
			m.outputs = []string{"y"}
		}, "past_state has shape [1,2,3], want [1,2,2]"},
	})
}
