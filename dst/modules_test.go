package dst

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// forwardGraph imports a test model specialized to one short sequence.
func forwardGraph(t *testing.T, elems ...string) *ir.Graph {
	t.Helper()
	m, err := onnx.ReadFile(sharedtest.Path(t, elems...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string]ir.Shape{}
	for _, in := range model.Inputs {
		s := ir.Shape{}
		for i, d := range in.Dims {
			if d < 0 {
				d = []int{1, 5}[min(i, 1)]
			}
			s = append(s, d)
		}
		shapes[in.Name] = s
	}
	g, err := model.Specialize(ir.Bindings{Shapes: shapes})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// kindRule gives the expected kind of the parameters whose PyTorch names
// match a pattern: the names the exporters wrote are an independent
// statement of what each module is.
type kindRule struct {
	pattern string
	kind    string
}

func checkKinds(t *testing.T, g *ir.Graph, rules []kindRule, layers int) {
	t.Helper()
	mods := Modules(g)
	if len(mods) != len(g.Params) {
		t.Fatalf("%d parameters classified, the graph has %d", len(mods), len(g.Params))
	}
	for _, p := range g.Params {
		m := mods[p.Name]
		matched := false
		for _, r := range rules {
			if regexp.MustCompile(r.pattern).MatchString(p.Name) {
				matched = true
				if m.Kind != r.kind {
					t.Errorf("%s: kind %s, want %s", p.Name, m.Kind, r.kind)
				}
				break
			}
		}
		if !matched {
			t.Errorf("%s (%s): no rule in the test", p.Name, m.Kind)
		}
		// Layer numbers: the graph's order must agree with the names'.
		if stackedKinds[moduleOfKind(m.Kind)] && !m.Shared {
			if m.Layer != m.NameLayer || m.Layer < 0 || m.Layer >= layers {
				t.Errorf("%s: layer %d from the graph, %d from the name", p.Name, m.Layer, m.NameLayer)
			}
		} else if m.Layer != -1 {
			t.Errorf("%s (%s): layer %d outside the stack", p.Name, m.Kind, m.Layer)
		}
	}
}

func TestModulesTinyGPT(t *testing.T) {
	g := forwardGraph(t, "models", "tiny_gpt", "model.onnx")
	checkKinds(t, g, []kindRule{
		{`^w[tp]e\.weight$`, "embedding.weight"},
		{`ln_1\.weight$`, "attn_norm.weight"}, {`ln_1\.bias$`, "attn_norm.bias"},
		{`ln_2\.weight$`, "mlp_norm.weight"}, {`ln_2\.bias$`, "mlp_norm.bias"},
		{`c_attn\.weight$`, "attn_qkv.weight"}, {`c_attn\.bias$`, "attn_qkv.bias"},
		{`c_proj\.weight$`, "attn_out.weight"}, {`c_proj\.bias$`, "attn_out.bias"},
		{`mlp_fc\.weight$`, "mlp_in.weight"}, {`mlp_fc\.bias$`, "mlp_in.bias"},
		{`mlp_proj\.weight$`, "mlp_out.weight"}, {`mlp_proj\.bias$`, "mlp_out.bias"},
		{`^ln_f\.weight$`, "final_norm.weight"}, {`^ln_f\.bias$`, "final_norm.bias"},
	}, 2)
	if m := Modules(g)["wte.weight"]; !m.Shared {
		t.Error("wte.weight (tied with the LM head) is not marked shared")
	}
}

// TestModulesStories260K: llama2.c's export rotates adjacent pairs of
// the queries and keys (gathered as even and odd entries), and shares the
// classifier with the token embedding.
func TestModulesStories260K(t *testing.T) {
	checkKinds(t, forwardGraph(t, "models", "stories260K", "stories260K.onnx"), []kindRule{
		{`^tok_embeddings\.weight$`, "embedding.weight"},
		{`^freq_(cos|sin)$`, "other.weight"},
		{`attention_norm\.weight$`, "attn_norm.weight"}, {`ffn_norm\.weight$`, "mlp_norm.weight"},
		{`wq\.weight$`, "attn_q.weight"}, {`wk\.weight$`, "attn_k.weight"}, {`wv\.weight$`, "attn_v.weight"},
		{`wo\.weight$`, "attn_out.weight"},
		{`w[13]\.weight$`, "mlp_in.weight"}, {`w2\.weight$`, "mlp_out.weight"},
		{`^norm\.weight$`, "final_norm.weight"},
	}, 5)
}

// bertRules fit nn.TransformerEncoder (post-LN) exports.
func bertRules(prefix string) []kindRule {
	return []kindRule{
		{`in_proj_weight$`, "attn_qkv.weight"}, {`in_proj_bias$`, "attn_qkv.bias"},
		{`out_proj\.weight$`, "attn_out.weight"}, {`out_proj\.bias$`, "attn_out.bias"},
		{`linear1\.weight$`, "mlp_in.weight"}, {`linear1\.bias$`, "mlp_in.bias"},
		{`linear2\.weight$`, "mlp_out.weight"}, {`linear2\.bias$`, "mlp_out.bias"},
		{`norm1\.weight$`, "attn_norm.weight"}, {`norm1\.bias$`, "attn_norm.bias"},
		{`norm2\.weight$`, "mlp_norm.weight"}, {`norm2\.bias$`, "mlp_norm.bias"},
		{`^(tok|pos)\.weight$`, "embedding.weight"},
		{`^` + prefix + `\.weight$`, "embedding_norm.weight"}, {`^` + prefix + `\.bias$`, "embedding_norm.bias"},
		{`^(pool|pooler|cls|classifier)\.weight$`, "head.weight"}, {`^(pool|pooler|cls|classifier)\.bias$`, "head.bias"},
	}
}

func TestModulesTinyBERT(t *testing.T) {
	checkKinds(t, forwardGraph(t, "models", "tiny_bert", "model.onnx"), bertRules("emb_ln"), 2)
}

func TestModulesBench(t *testing.T) {
	checkKinds(t, forwardGraph(t, "bench", "bert_bench.onnx"), bertRules("ln"), 4)
	// gpt_bench: pre-LN blocks, so norm1 comes before the attention and
	// norm2 before the MLP, as in PyTorch's norm_first layers.
	rules := bertRules("-")
	rules = append(rules, kindRule{`^lnf\.weight$`, "final_norm.weight"}, kindRule{`^lnf\.bias$`, "final_norm.bias"})
	checkKinds(t, forwardGraph(t, "bench", "gpt_bench.onnx"), rules, 4)
}

// TestModulesConstantFoldedExport: an exporter that folded constants
// renamed the MatMul weights (onnx::MatMul_N) and merged identical
// LayerNorm parameters across layers; the graph alone still tells the
// modules apart.
func TestModulesConstantFoldedExport(t *testing.T) {
	g := forwardGraph(t, "models", "exports", "gpt2_like_op13.onnx")
	mods := Modules(g)
	var kinds []string
	for _, p := range g.Params {
		if strings.HasPrefix(p.Name, "onnx::MatMul") {
			kinds = append(kinds, mods[p.Name].Kind)
		}
	}
	want := "attn_qkv.weight attn_out.weight mlp_in.weight mlp_out.weight attn_qkv.weight attn_out.weight mlp_in.weight mlp_out.weight head.weight"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("MatMul weights in file order: %s\nwant %s", got, want)
	}
	if m := mods["h.0.ln1.weight"]; m.Kind != "attn_norm.weight" || !m.Shared || m.Layer != -1 {
		t.Errorf("the shared LayerNorm scale: %+v", m)
	}
	for i, name := range []string{"onnx::MatMul_321", "onnx::MatMul_336"} {
		if m := mods[name]; m.Layer != i || m.NameLayer != -1 {
			t.Errorf("%s: %+v, want layer %d and no layer from the name", name, m, i)
		}
	}
}

func TestModulesConvNet(t *testing.T) {
	g := forwardGraph(t, "models", "exports", "cnn_op13.onnx")
	mods := Modules(g)
	for name, want := range map[string]Module{
		"onnx::Conv_22": {Kind: "conv.weight", Layer: 0, NameLayer: -1}, "c2.weight": {Kind: "conv.weight", Layer: 1, NameLayer: -1},
		"fc.weight": {Kind: "head.weight", Layer: -1, NameLayer: -1}, "fc.bias": {Kind: "head.bias", Layer: -1, NameLayer: -1},
	} {
		if mods[name] != want {
			t.Errorf("%s: %+v, want %+v", name, mods[name], want)
		}
	}
}

// TestModulesBuiltBlock builds a block unlike the exported models: a
// Llama-style pre-norm layer with separate q/k/v projections, RMSNorm
// written out (x·1/sqrt(mean(x²)+eps)·w), and a gated MLP
// (down(silu(gate(x))·up(x))), twice, then a final norm and an untied head.
func TestModulesBuiltBlock(t *testing.T) {
	const d, ff, vocab, seq = 8, 16, 11, 3
	b := ir.NewBuilder("llama-like")
	param := func(name string, shape ...int) *ir.Value {
		return b.Param(name, ir.NewTensor(ir.Float32, ir.Shape(shape)))
	}
	scalar := func(x float32) *ir.Value { return b.Const(ir.FromFloat32s(ir.Shape{}, []float32{x})) }
	bin := func(fn ir.BinaryFn, x, y *ir.Value) *ir.Value { return b.Op1(&ir.Binary{Fn: fn}, x, y) }
	un := func(fn ir.UnaryFn, x *ir.Value) *ir.Value { return b.Op1(&ir.Unary{Fn: fn}, x) }
	linear := func(name string, x *ir.Value, in, out int) *ir.Value {
		w := param(name, out, in)
		return b.Op1(&ir.MatMul{}, x, b.Op1(&ir.Transpose{Perm: []int{1, 0}}, w))
	}
	rmsNorm := func(name string, x *ir.Value) *ir.Value {
		ms := b.Op1(&ir.Reduce{Fn: ir.ReduceMean, Axes: []int{1}, KeepDims: true}, bin(ir.Mul, x, x))
		inv := un(ir.Reciprocal, un(ir.Sqrt, bin(ir.Add, ms, scalar(1e-6))))
		return bin(ir.Mul, bin(ir.Mul, x, inv), param(name, d))
	}
	tokens := b.Input("tokens", ir.Int64, ir.Shape{seq})
	x := b.Op1(&ir.Gather{Axis: 0}, param("embed", vocab, d), tokens)
	for l := range 2 {
		p := "layers." + strconv.Itoa(l) + "."
		h := rmsNorm(p+"input_norm", x)
		q := bin(ir.Div, linear(p+"q_proj", h, d, d), scalar(2))
		k := linear(p+"k_proj", h, d, d)
		v := linear(p+"v_proj", h, d, d)
		scores := b.Op1(&ir.MatMul{}, q, b.Op1(&ir.Transpose{Perm: []int{1, 0}}, k))
		attn := b.Op1(&ir.MatMul{}, b.Op1(&ir.Softmax{Axis: 1}, scores), v)
		x = bin(ir.Add, x, linear(p+"o_proj", attn, d, d))
		h = rmsNorm(p+"post_attention_norm", x)
		gate := linear(p+"gate_proj", h, d, ff)
		silu := bin(ir.Mul, gate, un(ir.Sigmoid, gate))
		up := linear(p+"up_proj", h, d, ff)
		x = bin(ir.Add, x, linear(p+"down_proj", bin(ir.Mul, silu, up), ff, d))
	}
	b.Output("logits", linear("lm_head", rmsNorm("norm", x), d, vocab))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	checkKinds(t, g, []kindRule{
		{`^embed$`, "embedding.weight"},
		{`input_norm$`, "attn_norm.weight"}, {`post_attention_norm$`, "mlp_norm.weight"},
		{`q_proj$`, "attn_q.weight"}, {`k_proj$`, "attn_k.weight"}, {`v_proj$`, "attn_v.weight"},
		{`o_proj$`, "attn_out.weight"},
		{`(gate|up)_proj$`, "mlp_in.weight"}, {`down_proj$`, "mlp_out.weight"},
		{`^norm$`, "final_norm.weight"}, {`^lm_head$`, "head.weight"},
	}, 2)
}

// TestModulesLlamaExport classifies a Hugging Face-shaped Llama decoder
// (rotary embeddings computed in the graph between the q/k projections
// and the attention, RMSNorm spelled out, grouped-query attention, a
// SiLU-gated MLP, nn.Linear weights read through Transpose).
func TestModulesLlamaExport(t *testing.T) {
	dir := t.TempDir()
	c := llamagen.Config{Vocab: 40, Dim: 16, Layers: 3, Heads: 4, KVHeads: 2, Hidden: 24, Seed: 3}
	if err := llamagen.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := model.LMBindings(1, 5)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.Specialize(b)
	if err != nil {
		t.Fatal(err)
	}
	checkKinds(t, g, []kindRule{
		{`embed_tokens`, KindEmbedding + ".weight"},
		{`q_proj`, KindAttnQ + ".weight"},
		{`k_proj`, KindAttnK + ".weight"},
		{`v_proj`, KindAttnV + ".weight"},
		{`o_proj`, KindAttnOut + ".weight"},
		{`gate_proj|up_proj`, KindMLPIn + ".weight"},
		{`down_proj`, KindMLPOut + ".weight"},
		{`input_layernorm`, KindAttnNorm + ".weight"},
		{`post_attention_layernorm`, KindMLPNorm + ".weight"},
		{`model\.norm`, KindFinalNorm + ".weight"},
		{`lm_head`, KindHead + ".weight"},
	}, c.Layers)
}

// TestModulesActivations: an MLP block (two linear layers around an
// activation, the second feeding a residual addition) is an MLP whichever
// activation function the ONNX model applies, as each imports.
func TestModulesActivations(t *testing.T) {
	const d, ff = 4, 8
	for _, act := range []string{"Relu", "Gelu", "HardSwish", "Mish", "Swish", "Celu", "Softsign", "ThresholdedRelu", "HardSigmoid", "Selu"} {
		t.Run(act, func(t *testing.T) {
			init := func(name string, shape ...int64) *onnx.Tensor {
				n := int64(1)
				for _, s := range shape {
					n *= s
				}
				x, err := onnx.FromFloat32s(name, shape, make([]float32, n))
				if err != nil {
					t.Fatal(err)
				}
				return x
			}
			g := &onnx.Graph{
				Name:   "mlp",
				Inputs: []*onnx.ValueInfo{{Name: "x", Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Float, HasShape: true, Shape: []onnx.Dim{{Value: 3, HasValue: true}, {Value: d, HasValue: true}}}}},
				Initializers: []*onnx.Tensor{init("layers.0.fc1.weight", d, ff), init("layers.0.fc1.bias", ff),
					init("layers.0.fc2.weight", ff, d), init("layers.0.fc2.bias", d)},
				Nodes: []*onnx.Node{
					{OpType: "MatMul", Inputs: []string{"x", "layers.0.fc1.weight"}, Outputs: []string{"h0"}},
					{OpType: "Add", Inputs: []string{"h0", "layers.0.fc1.bias"}, Outputs: []string{"h"}},
					{OpType: act, Inputs: []string{"h"}, Outputs: []string{"a"}},
					{OpType: "MatMul", Inputs: []string{"a", "layers.0.fc2.weight"}, Outputs: []string{"o0"}},
					{OpType: "Add", Inputs: []string{"o0", "layers.0.fc2.bias"}, Outputs: []string{"o"}},
					{OpType: "Add", Inputs: []string{"x", "o"}, Outputs: []string{"y"}},
				},
				Outputs: []*onnx.ValueInfo{{Name: "y"}},
			}
			model, err := ir.FromONNX(&onnx.Model{IRVersion: 10, OpsetImports: []onnx.OpsetID{{Version: 24}}, Graph: g}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkKinds(t, model, []kindRule{
				{`fc1\.weight$`, "mlp_in.weight"}, {`fc1\.bias$`, "mlp_in.bias"},
				{`fc2\.weight$`, "mlp_out.weight"}, {`fc2\.bias$`, "mlp_out.bias"},
			}, 1)
		})
	}
}
