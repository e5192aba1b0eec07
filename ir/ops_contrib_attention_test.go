package ir

import (
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

func int32s(shape Shape, v ...int32) *Tensor { return FromInt32s(shape, v) }

var contribAttentionCases = []contribCase{
	{"MultiHeadAttention/bias-key-padding", func(m *opModel) {
		m.ms("MultiHeadAttention", []string{m.param("q", Shape{2, 3, 8}, -1, 1), m.param("k", Shape{2, 3, 8}, -1, 1), m.param("v", Shape{2, 3, 8}, -1, 1),
			m.param("bias", Shape{24}, -0.5, 0.5), m.init("kpm", int32s(Shape{2, 3}, 1, 1, 0, 1, 0, 1))},
			[]string{"y"}, intAttr("num_heads", 2))
	}, ""},
	{"MultiHeadAttention/past-unidirectional-attention-bias", func(m *opModel) {
		m.ms("MultiHeadAttention", []string{m.param("q", Shape{1, 2, 8}, -1, 1), m.param("k", Shape{1, 2, 8}, -1, 1), m.param("v", Shape{1, 2, 8}, -1, 1),
			"", "", m.param("ab", Shape{1, 2, 2, 5}, -1, 1), m.param("pk", Shape{1, 2, 3, 4}, -1, 1), m.param("pv", Shape{1, 2, 3, 4}, -1, 1)},
			[]string{"y", "present_k", "present_v"}, intAttr("num_heads", 2), intAttr("unidirectional", 1))
	}, ""},
	{"MultiHeadAttention/cross-heads-lengths-scale", func(m *opModel) {
		m.ms("MultiHeadAttention", []string{m.param("q", Shape{2, 3, 8}, -1, 1), m.param("k", Shape{2, 2, 5, 4}, -1, 1), m.param("v", Shape{2, 2, 5, 4}, -1, 1),
			"", m.init("kpm", int32s(Shape{2}, 4, 2))},
			[]string{"y"}, intAttr("num_heads", 2), floatAttr("scale", 0.3))
	}, ""},
	{"GroupQueryAttention/prompt-padded", func(m *opModel) {
		m.ms("GroupQueryAttention", []string{m.param("q", Shape{2, 4, 32}, -1, 1), m.param("k", Shape{2, 4, 16}, -1, 1), m.param("v", Shape{2, 4, 16}, -1, 1),
			"", "", m.init("seqlens", int32s(Shape{2}, 3, 2)), m.init("total", int32s(Shape{}, 4))},
			[]string{"y", "present_k", "present_v"}, intAttr("num_heads", 4), intAttr("kv_num_heads", 2))
	}, ""},
	{"GroupQueryAttention/chunk-after-cache", func(m *opModel) {
		m.ms("GroupQueryAttention", []string{m.param("q", Shape{1, 2, 32}, -1, 1), m.param("k", Shape{1, 2, 16}, -1, 1), m.param("v", Shape{1, 2, 16}, -1, 1),
			m.param("pk", Shape{1, 2, 3, 8}, -1, 1), m.param("pv", Shape{1, 2, 3, 8}, -1, 1), m.init("seqlens", int32s(Shape{1}, 4)), m.init("total", int32s(Shape{}, 5))},
			[]string{"y", "present_k", "present_v"}, intAttr("num_heads", 4), intAttr("kv_num_heads", 2))
	}, ""},
	{"GroupQueryAttention/packed-rotary-window-softcap", func(m *opModel) {
		m.ms("GroupQueryAttention", []string{m.param("qkv", Shape{1, 5, 128}, -1, 1), "", "",
			"", "", m.init("seqlens", int32s(Shape{1}, 4)), m.init("total", int32s(Shape{}, 5)),
			m.param("cos", Shape{8, 8}, -1, 1), m.param("sin", Shape{8, 8}, -1, 1)},
			[]string{"y", "present_k", "present_v"}, intAttr("num_heads", 4), intAttr("kv_num_heads", 2), intAttr("do_rotary", 1),
			intAttr("local_window_size", 2), floatAttr("softcap", 1.5))
	}, ""},
	{"GroupQueryAttention/rotary-after-cache-interleaved", func(m *opModel) {
		m.ms("GroupQueryAttention", []string{m.param("q", Shape{1, 2, 64}, -1, 1), m.param("k", Shape{1, 2, 32}, -1, 1), m.param("v", Shape{1, 2, 32}, -1, 1),
			m.param("pk", Shape{1, 2, 3, 16}, -1, 1), m.param("pv", Shape{1, 2, 3, 16}, -1, 1), m.init("seqlens", int32s(Shape{1}, 4)), m.init("total", int32s(Shape{}, 5)),
			m.param("cos", Shape{8, 8}, -1, 1), m.param("sin", Shape{8, 8}, -1, 1)},
			[]string{"y", "present_k", "present_v"}, intAttr("num_heads", 4), intAttr("kv_num_heads", 2), intAttr("do_rotary", 1), intAttr("rotary_interleaved", 1))
	}, ""},
	{"GroupQueryAttention/smooth-softmax-attention-bias", func(m *opModel) {
		m.ms("GroupQueryAttention", []string{m.param("q", Shape{1, 3, 16}, -1, 1), m.param("k", Shape{1, 3, 16}, -1, 1), m.param("v", Shape{1, 3, 16}, -1, 1),
			"", "", m.init("seqlens", int32s(Shape{1}, 2)), m.init("total", int32s(Shape{}, 3)), "", "", "", m.param("ab", Shape{1, 2, 3, 3}, -1, 1)},
			[]string{"y", "present_k", "present_v"}, intAttr("num_heads", 2), intAttr("kv_num_heads", 2), intAttr("smooth_softmax", 1))
	}, ""},
	{"GroupQueryAttention/head-sink", func(m *opModel) {
		m.ms("GroupQueryAttention", []string{m.param("q", Shape{1, 3, 16}, -1, 1), m.param("k", Shape{1, 3, 8}, -1, 1), m.param("v", Shape{1, 3, 8}, -1, 1),
			"", "", m.init("seqlens", int32s(Shape{1}, 2)), m.init("total", int32s(Shape{}, 3)), "", "", "", "", m.param("sink", Shape{2}, -1, 1)},
			[]string{"y", "present_k", "present_v"}, intAttr("num_heads", 2), intAttr("kv_num_heads", 1))
	}, ""},
	{"Attention/raw-mask", func(m *opModel) {
		m.ms("Attention", []string{m.param("x", Shape{2, 3, 6}, -1, 1), m.param("w", Shape{6, 24}, -0.5, 0.5), m.param("b", Shape{24}, -0.5, 0.5),
			m.init("mask", int32s(Shape{2, 3}, 1, 1, 1, 1, 0, 1))},
			[]string{"y"}, intAttr("num_heads", 2))
	}, ""},
	{"Attention/past-unidirectional", func(m *opModel) {
		m.ms("Attention", []string{m.param("x", Shape{1, 2, 6}, -1, 1), m.param("w", Shape{6, 24}, -0.5, 0.5), m.param("b", Shape{24}, -0.5, 0.5),
			"", m.param("past", Shape{2, 1, 2, 3, 4}, -1, 1)},
			[]string{"y", "present"}, intAttr("num_heads", 2), intAttr("unidirectional", 1))
	}, ""},
	{"Attention/qkv-sizes-left-padding-bias", func(m *opModel) {
		m.ms("Attention", []string{m.param("x", Shape{2, 4, 6}, -1, 1), m.param("w", Shape{6, 20}, -0.5, 0.5), m.param("b", Shape{20}, -0.5, 0.5),
			m.init("mask", int32s(Shape{4}, 4, 3, 1, 0)), "", m.param("ab", Shape{2, 1, 4, 4}, -1, 1)},
			[]string{"y"}, intAttr("num_heads", 2), intsAttr("qkv_hidden_sizes", 8, 8, 4))
	}, ""},
	{"Attention/lengths-filter-value", func(m *opModel) {
		m.ms("Attention", []string{m.param("x", Shape{2, 3, 6}, -1, 1), m.param("w", Shape{6, 24}, -0.5, 0.5), m.param("b", Shape{24}, -0.5, 0.5),
			m.init("mask", int32s(Shape{2}, 2, 3))},
			[]string{"y"}, intAttr("num_heads", 2), floatAttr("mask_filter_value", -3))
	}, ""},
}

// TestContribAttentionMatchesORT compares MultiHeadAttention,
// GroupQueryAttention and Attention (com.microsoft) with onnxruntime.
func TestContribAttentionMatchesORT(t *testing.T) {
	ort.Need(t)
	for _, c := range contribAttentionCases {
		t.Run(c.name, func(t *testing.T) { c.model(t, Float32).checkAgainstORT(1e-4, 1e-6) })
	}
}

// TestContribAttentionGradients checks the gradients through every case
// in float64 by central differences.
func TestContribAttentionGradients(t *testing.T) {
	for _, c := range contribAttentionCases {
		t.Run(c.name, func(t *testing.T) {
			g, err := c.model(t, Float64).graph()
			if err != nil {
				t.Fatal(err)
			}
			checkGradFD(t, g, 1e-6)
		})
	}
}

func TestContribAttentionImportErrors(t *testing.T) {
	gqa := func(q, k Shape, seqlens *Tensor, total int32, attrs ...*onnx.Attribute) func(m *opModel) {
		return func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("GroupQueryAttention", []string{m.param("q", q, 0, 1), m.param("k", k, 0, 1), m.param("v", k, 0, 1), "", "", m.init("s", seqlens), m.init("t", int32s(Shape{}, total))},
				[]string{"y"}, attrs...)
		}
	}
	heads := []*onnx.Attribute{intAttr("num_heads", 2), intAttr("kv_num_heads", 1)}
	one := int32s(Shape{1}, 2)
	checkImportErrors(t, 17, []importError{
		{"gqa-heads", gqa(Shape{1, 3, 8}, Shape{1, 3, 4}, one, 3, intAttr("num_heads", 3), intAttr("kv_num_heads", 2)), "num_heads a multiple of kv_num_heads"},
		{"gqa-total", gqa(Shape{1, 3, 8}, Shape{1, 3, 4}, one, 7, heads...), "total_sequence_length [7]"},
		{"gqa-seqlens", gqa(Shape{1, 3, 8}, Shape{1, 3, 4}, FromInt64s(Shape{1}, []int64{2}), 3, heads...), "seqlens_k is int64[1], want int32 [1]"},
		{"gqa-key-shape", gqa(Shape{1, 3, 8}, Shape{1, 3, 6}, one, 3, heads...), "key [1,3,6] and value [1,3,6], want [1,3,4]"},
		{"gqa-window-bidirectional", gqa(Shape{1, 3, 8}, Shape{1, 3, 4}, one, 3, append(heads, intAttr("causal", 0), intAttr("local_window_size", 2))...), "local_window_size 2"},
		{"gqa-sliding-cache", gqa(Shape{1, 3, 8}, Shape{1, 3, 4}, one, 3, append(heads, intAttr("sliding_window_cache", 1))...), "sliding_window_cache"},
		{"gqa-rotary-without-caches", gqa(Shape{1, 3, 8}, Shape{1, 3, 4}, one, 3, append(heads, intAttr("do_rotary", 1))...), "do_rotary needs cos_cache and sin_cache"},
		{"mha-packed", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("MultiHeadAttention", []string{m.param("q", Shape{1, 3, 2, 3, 4}, 0, 1)}, []string{"y"}, intAttr("num_heads", 2))
		}, "packed QKV or KV"},
		{"mha-no-heads", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("MultiHeadAttention", []string{m.param("q", Shape{1, 3, 8}, 0, 1), m.param("k", Shape{1, 3, 8}, 0, 1), m.param("v", Shape{1, 3, 8}, 0, 1)}, []string{"y"})
		}, "num_heads attribute is required"},
		{"mha-bias-shape", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("MultiHeadAttention", []string{m.param("q", Shape{1, 3, 8}, 0, 1), m.param("k", Shape{1, 3, 8}, 0, 1), m.param("v", Shape{1, 3, 8}, 0, 1), m.param("b", Shape{8}, 0, 1)}, []string{"y"}, intAttr("num_heads", 2))
		}, "bias has shape [8], want [24]"},
		{"mha-key-mask-shape", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("MultiHeadAttention", []string{m.param("q", Shape{1, 3, 8}, 0, 1), m.param("k", Shape{1, 3, 8}, 0, 1), m.param("v", Shape{1, 3, 8}, 0, 1), "", m.init("m", int32s(Shape{5}, 1, 1, 1, 1, 1))}, []string{"y"}, intAttr("num_heads", 2))
		}, "the key mask has shape [5]"},
		{"attention-weights", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("Attention", []string{m.param("x", Shape{1, 3, 6}, 0, 1), m.param("w", Shape{6, 20}, 0, 1)}, []string{"y"}, intAttr("num_heads", 2))
		}, "not three equal parts"},
		{"attention-qkv-sizes", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("Attention", []string{m.param("x", Shape{1, 3, 6}, 0, 1), m.param("w", Shape{6, 20}, 0, 1)}, []string{"y"}, intAttr("num_heads", 2), intsAttr("qkv_hidden_sizes", 8, 6, 6))
		}, "qkv_hidden_sizes [8 6 6]"},
		{"attention-rotary", func(m *opModel) {
			m.opsets = append(m.opsets, onnx.OpsetID{Domain: contribDomain, Version: 1})
			m.ms("Attention", []string{m.param("x", Shape{1, 3, 6}, 0, 1), m.param("w", Shape{6, 24}, 0, 1)}, []string{"y"}, intAttr("num_heads", 2), intAttr("do_rotary", 1))
		}, "Attention with do_rotary"},
	})
}
