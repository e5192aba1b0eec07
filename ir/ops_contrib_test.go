package ir

import (
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// contribCase is a small model around com.microsoft operators: build adds
// the nodes (operands through m.param, in m.dt) and names the outputs.
type contribCase struct {
	name  string
	build func(m *opModel)
	// notInORT says why onnxruntime's CPU provider cannot run the case
	// (another test checks it).
	notInORT string
}

func (c contribCase) model(t *testing.T, dt DType) *opModel {
	m := newOpModel(t, 17, uint64(len(c.name)))
	m.dt = dt
	m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
	c.build(m)
	return m
}

// ms adds a com.microsoft node.
func (m *opModel) ms(op string, in, out []string, attrs ...*onnx.Attribute) {
	m.add(op, in, out, attrs...).Domain = contribDomain
	for _, o := range out {
		if o != "" {
			m.outputs = append(m.outputs, o)
		}
	}
}

var contribCases = []contribCase{
	{"SkipLayerNormalization/default-epsilon-small-variance", func(m *opModel) {
		// The variance is about 3e-5, so the default epsilon shows.
		m.ms("SkipLayerNormalization", []string{m.param("x", Shape{2, 3, 8}, -0.01, 0.01), m.param("skip", Shape{2, 3, 8}, -0.01, 0.01),
			m.param("gamma", Shape{8}, 0.5, 1.5), m.param("beta", Shape{8}, -0.5, 0.5), m.param("bias", Shape{8}, -0.01, 0.01)},
			[]string{"y", "mean", "inv_std", "sum"})
	}, ""},
	{"SkipLayerNormalization/2d-skip", func(m *opModel) {
		m.ms("SkipLayerNormalization", []string{m.param("x", Shape{2, 3, 8}, -1, 1), m.param("skip", Shape{3, 8}, -1, 1), m.param("gamma", Shape{8}, 0.5, 1.5)},
			[]string{"y"}, floatAttr("epsilon", 1e-5))
	}, ""},
	{"SkipSimplifiedLayerNormalization/default-epsilon-small-values", func(m *opModel) {
		m.ms("SkipSimplifiedLayerNormalization", []string{m.param("x", Shape{2, 3, 8}, -0.003, 0.003), m.param("skip", Shape{2, 3, 8}, -0.003, 0.003),
			m.param("gamma", Shape{8}, 0.5, 1.5), m.param("bias", Shape{8}, -0.003, 0.003)},
			[]string{"y", "", "inv_std", "sum"})
	}, ""},
	{"SimplifiedLayerNormalization/default-domain", func(m *opModel) {
		n := m.add("SimplifiedLayerNormalization", []string{m.param("x", Shape{2, 3, 8}, -0.003, 0.003), m.param("scale", Shape{8}, 0.5, 1.5)}, []string{"y", "inv_std"})
		n.Domain = ""
		m.outputs = append(m.outputs, "y", "inv_std")
	}, ""},
	{"SimplifiedLayerNormalization/two-axes", func(m *opModel) {
		n := m.add("SimplifiedLayerNormalization", []string{m.param("x", Shape{2, 3, 4}, -1, 1), m.param("scale", Shape{3, 4}, 0.5, 1.5)}, []string{"y"},
			intAttr("axis", 1), floatAttr("epsilon", 1e-3))
		n.Domain = ""
		m.outputs = append(m.outputs, "y")
	}, ""},
	{"LayerNormalization/opset-14", func(m *opModel) {
		// Before opset 17 LayerNormalization is onnxruntime's contrib
		// operator of the default domain.
		m.opsets[0].Version = 14
		m.add("LayerNormalization", []string{m.param("x", Shape{2, 3, 4}, -1, 1), m.param("scale", Shape{4}, 0.5, 1.5), m.param("bias", Shape{4}, -1, 1)}, []string{"y"},
			floatAttr("epsilon", 1e-3))
		m.outputs = append(m.outputs, "y")
	}, ""},
	{"BiasAdd", func(m *opModel) {
		m.ms("BiasAdd", []string{m.param("x", Shape{2, 3, 4}, -1, 1), m.param("bias", Shape{4}, -1, 1), m.param("skip", Shape{2, 3, 4}, -1, 1)}, []string{"y"})
	}, "onnxruntime has BiasAdd on CUDA only; TestBiasAdd checks it"},
	{"LinearAttention/gated-delta-gqa", func(m *opModel) {
		m.ms("LinearAttention", []string{m.param("q", Shape{1, 3, 16}, -1, 1), m.param("k", Shape{1, 3, 8}, -1, 1), m.param("v", Shape{1, 3, 6}, -1, 1),
			m.param("past", Shape{1, 2, 4, 3}, -1, 1), m.param("decay", Shape{1, 3, 2}, -1, 0), m.param("beta", Shape{1, 3, 2}, 0, 1)},
			[]string{"y", "state"}, intAttr("q_num_heads", 4), intAttr("kv_num_heads", 2))
	}, ""},
	{"LinearAttention/linear", func(m *opModel) {
		m.ms("LinearAttention", []string{m.param("q", Shape{2, 3, 8}, -1, 1), m.param("k", Shape{2, 3, 8}, -1, 1), m.param("v", Shape{2, 3, 8}, -1, 1)},
			[]string{"y", "state"}, intAttr("q_num_heads", 2), intAttr("kv_num_heads", 2), stringAttr("update_rule", "linear"), floatAttr("scale", 0.5))
	}, ""},
	{"CausalConvWithState/silu-past-bias", func(m *opModel) {
		m.ms("CausalConvWithState", []string{m.param("x", Shape{2, 3, 5}, -1, 1), m.param("w", Shape{3, 1, 3}, -1, 1), m.param("b", Shape{3}, -1, 1), m.param("p", Shape{2, 3, 2}, -1, 1)},
			[]string{"y", "state"}, stringAttr("activation", "silu"))
	}, ""},
	{"Gelu", func(m *opModel) {
		m.ms("Gelu", []string{m.param("x", Shape{2, 5}, -3, 3)}, []string{"y"})
	}, ""},
	{"BiasGelu", func(m *opModel) {
		m.ms("BiasGelu", []string{m.param("a", Shape{2, 3, 5}, -3, 3), m.param("b", Shape{5}, -1, 1)}, []string{"y"})
	}, ""},
	{"FastGelu/bias", func(m *opModel) {
		m.ms("FastGelu", []string{m.param("x", Shape{2, 3, 5}, -3, 3), m.param("b", Shape{5}, -1, 1)}, []string{"y"})
	}, ""},
	{"FastGelu/no-bias", func(m *opModel) {
		m.ms("FastGelu", []string{m.param("x", Shape{4, 5}, -3, 3)}, []string{"y"})
	}, ""},
	{"QuickGelu/default-alpha", func(m *opModel) {
		m.ms("QuickGelu", []string{m.param("x", Shape{2, 5}, -3, 3)}, []string{"y"})
	}, ""},
	{"QuickGelu/alpha", func(m *opModel) {
		m.ms("QuickGelu", []string{m.param("x", Shape{2, 5}, -3, 3)}, []string{"y"}, floatAttr("alpha", 1.25))
	}, ""},
	{"RotaryEmbedding/3d-positions", func(m *opModel) {
		pos := NewTensor(Int64, Shape{2, 3})
		for i := range pos.Int64s() {
			pos.Int64s()[i] = int64((3*i + 1) % 7)
		}
		m.ms("RotaryEmbedding", []string{m.param("x", Shape{2, 3, 16}, -1, 1), m.init("pos", pos), m.param("cos", Shape{7, 4}, -1, 1), m.param("sin", Shape{7, 4}, -1, 1)},
			[]string{"y"}, intAttr("num_heads", 2))
	}, ""},
	{"RotaryEmbedding/4d-offset-interleaved", func(m *opModel) {
		m.ms("RotaryEmbedding", []string{m.param("x", Shape{1, 2, 3, 8}, -1, 1), m.init("pos", FromInt64s(Shape{1}, []int64{2})), m.param("cos", Shape{6, 4}, -1, 1), m.param("sin", Shape{6, 4}, -1, 1)},
			[]string{"y"}, intAttr("interleaved", 1))
	}, ""},
	{"RotaryEmbedding/3d-heads-from-caches", func(m *opModel) {
		m.ms("RotaryEmbedding", []string{m.param("x", Shape{1, 3, 12}, -1, 1), m.init("pos", FromInt64s(Shape{1}, []int64{0})), m.param("cos", Shape{4, 2}, -1, 1), m.param("sin", Shape{4, 2}, -1, 1)},
			[]string{"y"})
	}, ""},
	{"RotaryEmbedding/partial-rotary-dim", func(m *opModel) {
		pos := FromInt64s(Shape{1, 3}, []int64{4, 0, 2})
		m.ms("RotaryEmbedding", []string{m.param("x", Shape{1, 3, 16}, -1, 1), m.init("pos", pos), m.param("cos", Shape{5, 2}, -1, 1), m.param("sin", Shape{5, 2}, -1, 1)},
			[]string{"y"}, intAttr("num_heads", 2), intAttr("rotary_embedding_dim", 4))
	}, ""},
}

// TestContribOpsMatchORT compares the com.microsoft normalizations,
// activations and rotary embedding with onnxruntime.
func TestContribOpsMatchORT(t *testing.T) {
	ort.Need(t)
	for _, c := range contribCases {
		t.Run(c.name, func(t *testing.T) {
			if c.notInORT != "" {
				t.Skip(c.notInORT)
			}
			c.model(t, Float32).checkAgainstORT(1e-4, 1e-6)
		})
	}
}

// TestBiasAdd: BiasAdd is X + bias + skip, exactly.
func TestBiasAdd(t *testing.T) {
	m := newOpModel(t, 17, 3)
	m.dt = Float32
	m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
	m.ms("BiasAdd", []string{m.param("x", Shape{2, 3, 4}, -1, 1), m.param("bias", Shape{4}, -1, 1), m.param("skip", Shape{2, 3, 4}, -1, 1)}, []string{"y"})
	_, res := m.run()
	x, bias, skip := m.tensor("x"), m.tensor("bias"), m.tensor("skip")
	for i := range x.Len() {
		want := float32(float32(x.Float32s()[i]+bias.Float32s()[i%4]) + skip.Float32s()[i])
		if got := res["y"].Float32s()[i]; got != want {
			t.Fatalf("y[%d] = %g, want %g", i, got, want)
		}
	}
}

// TestContribOpsGradients checks the gradients through every case in
// float64 by central differences.
func TestContribOpsGradients(t *testing.T) {
	for _, c := range contribCases {
		t.Run(c.name, func(t *testing.T) {
			g, err := c.model(t, Float64).graph()
			if err != nil {
				t.Fatal(err)
			}
			checkGradFD(t, g, 1e-6)
		})
	}
}

func TestContribImportErrors(t *testing.T) {
	ms := func(op string, inputs func(m *opModel) []string, attrs ...*onnx.Attribute) func(m *opModel) {
		return func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms(op, inputs(m), []string{"y"}, attrs...)
		}
	}
	p := func(m *opModel, name string, s Shape) string { return m.param(name, s, 0, 1) }
	checkImportErrors(t, 17, []importError{
		{"skip-norm-skip-shape", ms("SkipLayerNormalization", func(m *opModel) []string {
			return []string{p(m, "x", Shape{2, 3, 4}), p(m, "s", Shape{2, 4, 4}), p(m, "g", Shape{4})}
		}), "skip has shape [2,4,4], want one broadcastable to input's [2,3,4]"},
		{"skip-norm-gamma", ms("SkipLayerNormalization", func(m *opModel) []string {
			return []string{p(m, "x", Shape{2, 3, 4}), p(m, "s", Shape{2, 3, 4}), p(m, "g", Shape{3})}
		}), "gamma has shape [3], want [4]"},
		{"skip-norm-rank", ms("SkipSimplifiedLayerNormalization", func(m *opModel) []string {
			return []string{p(m, "x", Shape{4}), p(m, "s", Shape{4}), p(m, "g", Shape{4})}
		}), "want [batch, seq, hidden] or [tokens, hidden]"},
		{"skip-simplified-mean", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("SkipSimplifiedLayerNormalization", []string{p(m, "x", Shape{2, 4}), p(m, "s", Shape{2, 4}), p(m, "g", Shape{4})}, []string{"y", "mean"})
		}, "the mean output of SkipSimplifiedLayerNormalization"},
		{"simplified-scale", func(m *opModel) {
			m.add("SimplifiedLayerNormalization", []string{p(m, "x", Shape{2, 4}), p(m, "s", Shape{5})}, []string{"y"})
			m.outputs = []string{"y"}
		}, "scale has shape [5]"},
		{"bias-gelu-missing-bias", ms("BiasGelu", func(m *opModel) []string { return []string{p(m, "x", Shape{2, 4})} }), "input 1 (bias) is required"},
		{"fast-gelu-bias-shape", ms("FastGelu", func(m *opModel) []string { return []string{p(m, "x", Shape{2, 4}), p(m, "b", Shape{3})} }), "bias has shape [3], want [4]"},
		{"bias-add-shapes", ms("BiasAdd", func(m *opModel) []string {
			return []string{p(m, "x", Shape{2, 3, 4}), p(m, "b", Shape{4}), p(m, "s", Shape{2, 3, 5})}
		}), "want [batch, seq, channels], [channels] and X's shape"},
		{"rotary-caches", ms("RotaryEmbedding", func(m *opModel) []string {
			return []string{p(m, "x", Shape{1, 3, 8}), m.init("pos", FromInt64s(Shape{1}, []int64{0})), p(m, "c", Shape{4, 4}), p(m, "s", Shape{4, 3})}
		}), "cos_cache [4,4] and sin_cache [4,3]"},
		{"rotary-positions", ms("RotaryEmbedding", func(m *opModel) []string {
			return []string{p(m, "x", Shape{1, 3, 8}), m.init("pos", FromInt64s(Shape{2}, []int64{0, 1})), p(m, "c", Shape{4, 4}), p(m, "s", Shape{4, 4})}
		}), "position_ids has shape [2], want [1,3] or [1]"},
		{"rotary-dim-without-heads", ms("RotaryEmbedding", func(m *opModel) []string {
			return []string{p(m, "x", Shape{1, 3, 8}), m.init("pos", FromInt64s(Shape{1}, []int64{0})), p(m, "c", Shape{4, 2}), p(m, "s", Shape{4, 2})}
		}, intAttr("rotary_embedding_dim", 4)), "rotary_embedding_dim needs num_heads"},
		{"rotary-packed", ms("RotaryEmbedding", func(m *opModel) []string {
			return []string{p(m, "x", Shape{1, 3, 8}), m.init("pos", FromInt64s(Shape{1}, []int64{0})), p(m, "c", Shape{4, 4}), p(m, "s", Shape{4, 4})}
		}, intAttr("is_packed_batching", 1)), "is_packed_batching"},
		{"rotary-scale", ms("RotaryEmbedding", func(m *opModel) []string {
			return []string{p(m, "x", Shape{1, 3, 8}), m.init("pos", FromInt64s(Shape{1}, []int64{0})), p(m, "c", Shape{4, 4}), p(m, "s", Shape{4, 4})}
		}, floatAttr("scale", 2)), "RotaryEmbedding with scale 2"},
	})
}
