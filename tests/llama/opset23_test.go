package llama

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// make_llama.py's sizes.
const (
	vocab, dim, layers, heads, kvHeads, hidden = 96, 32, 2, 4, 2, 48
	headDim                                    = dim / heads
	ropeTheta, rmsEps, window                  = 10000.0, 1e-5, 4
	maxPositions                               = 64
)

// graphWriter appends ONNX nodes with generated value names.
type graphWriter struct {
	g *onnx.Graph
	n int
}

func (w *graphWriter) op(op string, in []string, attrs ...*onnx.Attribute) string {
	w.n++
	out := fmt.Sprintf("%s_%d", op, w.n)
	w.g.Nodes = append(w.g.Nodes, &onnx.Node{Name: out, OpType: op, Inputs: in, Outputs: []string{out}, Attributes: attrs})
	return out
}

func (w *graphWriter) constant(t *onnx.Tensor, err error) string {
	if err != nil {
		panic(err) // the tensors below are well formed
	}
	return w.op("Constant", nil, &onnx.Attribute{Name: "value", Type: onnx.AttrTensor, T: t})
}

func (w *graphWriter) ints(v ...int64) string {
	return w.constant(onnx.FromInt64s("", []int64{int64(len(v))}, v))
}

func intAttr(name string, v int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInt, I: v}
}

// linear is x·Wᵀ for an nn.Linear weight W [out, in].
func (w *graphWriter) linear(x, weight string) string {
	return w.op("MatMul", []string{x, w.op("Transpose", []string{weight}, &onnx.Attribute{Name: "perm", Type: onnx.AttrInts, Ints: []int64{1, 0}})})
}

func (w *graphWriter) rmsNorm(x, weight string) string {
	return w.op("RMSNormalization", []string{x, weight}, intAttr("axis", -1), &onnx.Attribute{Name: "epsilon", Type: onnx.AttrFloat, F: rmsEps})
}

// ropeCaches are the cosine and sine tables [maxPositions, headDim/2] of
// the angles p·θ^(−2i/headDim), computed in float32 as make_llama.py does.
func ropeCaches() (cos, sin []float32) {
	for p := range maxPositions {
		for i := range headDim / 2 {
			inv := float32(1 / float32(math.Pow(ropeTheta, float64(float32(2*i)/headDim))))
			angle := float64(float32(p) * inv)
			cos = append(cos, float32(math.Cos(angle)))
			sin = append(sin, float32(math.Sin(angle)))
		}
	}
	return cos, sin
}

// opset23Llama writes make_llama.py's variant with opset 23's operators —
// RMSNormalization, RotaryEmbedding (positions from a Range over the
// sequence length) and Attention (is_causal, or for the sliding window a
// boolean attn_mask built in the graph) — and the export's weights under
// the same names.
func opset23Llama(t *testing.T, variant string) *onnx.Model {
	t.Helper()
	export, err := onnx.ReadFile(filepath.Join("testdata", variant, "opset17.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer export.Close()
	g := &onnx.Graph{Name: "llama_" + variant + "_opset23"}
	for _, it := range export.Graph.Initializers {
		v, err := it.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		copied, err := onnx.FromFloat32s(it.Name, it.Dims, append([]float32(nil), v...))
		if err != nil {
			t.Fatal(err)
		}
		g.Initializers = append(g.Initializers, copied)
	}
	g.Inputs = []*onnx.ValueInfo{{Name: "tokens", Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Int64, HasShape: true,
		Shape: []onnx.Dim{{Param: "batch"}, {Param: "seq"}}}}}
	w := &graphWriter{g: g}
	cosTable, sinTable := ropeCaches()
	cos := w.constant(onnx.FromFloat32s("", []int64{maxPositions, headDim / 2}, cosTable))
	sin := w.constant(onnx.FromFloat32s("", []int64{maxPositions, headDim / 2}, sinTable))
	shape := w.op("Shape", []string{"tokens"})
	seq := w.op("Gather", []string{shape, w.constant(onnx.FromInt64s("", []int64{}, []int64{1}))})
	positions := w.op("Range", []string{w.constant(onnx.FromInt64s("", []int64{}, []int64{0})), seq, w.constant(onnx.FromInt64s("", []int64{}, []int64{1}))})
	positionIDs := w.op("Expand", []string{w.op("Unsqueeze", []string{positions, w.ints(0)}), shape})
	var mask string
	if variant == "geglu_sliding" {
		// Key j is seen from query i when i − window < j <= i.
		i := w.op("Unsqueeze", []string{positions, w.ints(1)})
		j := w.op("Unsqueeze", []string{positions, w.ints(0)})
		one, win := w.constant(onnx.FromInt64s("", []int64{}, []int64{1})), w.constant(onnx.FromInt64s("", []int64{}, []int64{window}))
		mask = w.op("And", []string{
			w.op("Less", []string{j, w.op("Add", []string{i, one})}),
			w.op("Greater", []string{j, w.op("Sub", []string{i, win})}),
		})
	}
	h := w.op("Gather", []string{"tok_embeddings.weight", "tokens"})
	for l := range layers {
		p := fmt.Sprintf("layers.%d.", l)
		x := w.rmsNorm(h, p+"attention_norm.weight")
		q := w.op("RotaryEmbedding", []string{w.linear(x, p+"attention.wq.weight"), cos, sin, positionIDs}, intAttr("num_heads", heads))
		k := w.op("RotaryEmbedding", []string{w.linear(x, p+"attention.wk.weight"), cos, sin, positionIDs}, intAttr("num_heads", kvHeads))
		v := w.linear(x, p+"attention.wv.weight")
		attrs := []*onnx.Attribute{intAttr("q_num_heads", heads), intAttr("kv_num_heads", kvHeads)}
		in := []string{q, k, v}
		if mask != "" {
			in = append(in, mask)
		} else {
			attrs = append(attrs, intAttr("is_causal", 1))
		}
		attn := w.op("Attention", in, attrs...)
		h = w.op("Add", []string{h, w.linear(attn, p+"attention.wo.weight")})
		x = w.rmsNorm(h, p+"ffn_norm.weight")
		gate := w.linear(x, p+"feed_forward.w1.weight")
		if variant == "geglu_sliding" {
			gate = w.op("Gelu", []string{gate}, &onnx.Attribute{Name: "approximate", Type: onnx.AttrString, S: []byte("tanh")})
		} else {
			gate = w.op("Mul", []string{gate, w.op("Sigmoid", []string{gate})})
		}
		up := w.linear(x, p+"feed_forward.w3.weight")
		h = w.op("Add", []string{h, w.linear(w.op("Mul", []string{gate, up}), p+"feed_forward.w2.weight")})
	}
	head := "output.weight"
	if variant == "geglu_sliding" {
		head = "tok_embeddings.weight"
	}
	logits := w.linear(w.rmsNorm(h, "norm.weight"), head)
	g.Nodes = append(g.Nodes, &onnx.Node{Name: "logits", OpType: "Identity", Inputs: []string{logits}, Outputs: []string{"logits"}})
	g.Outputs = []*onnx.ValueInfo{{Name: "logits"}}
	return &onnx.Model{IRVersion: 10, ProducerName: "dstune tests/llama", OpsetImports: []onnx.OpsetID{{Version: 23}}, Graph: g}
}

// TestOpset23MatchesPyTorchAndORT: the decoders written with opset 23's
// RMSNormalization, RotaryEmbedding and Attention give PyTorch's logits on
// dstune's CPU backend and in onnxruntime, and dstune's loss and gradients
// through them match PyTorch's.
func TestOpset23MatchesPyTorchAndORT(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			ref := readReference(t, variant)
			m := opset23Llama(t, variant)
			g := importModel(t, m, ref.tokens)
			checkLogits(t, runCPU(t, g, map[string]*ir.Tensor{"tokens": ref.tokens})["logits"], ref.logits)
			checkTraining(t, g, ref)

			path := filepath.Join(t.TempDir(), "model.onnx")
			if err := onnx.WriteFile(path, m, onnx.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			ort.Need(t)
			tokens, err := ir.TensorToONNX("tokens", ref.tokens)
			if err != nil {
				t.Fatal(err)
			}
			outs, err := ort.Run(path, map[string]*onnx.Tensor{"tokens": tokens})
			if err != nil {
				t.Fatalf("onnxruntime %s: %v", ort.Version(), err)
			}
			got, err := ir.TensorFromONNX(outs["logits"])
			if err != nil {
				t.Fatal(err)
			}
			d := ir.Compare(got, ref.logits, 1e-4, 1e-5)
			if !d.OK() {
				t.Errorf("onnxruntime %s logits: %v", ort.Version(), d)
			}
			t.Logf("onnxruntime %s logits: max abs error %.2e", ort.Version(), d.MaxAbs)
		})
	}
}

// TestOpset23Generate: the Attention op's grouped query heads (4 on 2
// key heads, reshaped into the rows of their key head's product) do not
// stop dstune's own KV cache: auto takes it, and greedy decoding gives
// the tokens recomputing the whole sequence gives, the sliding window's
// mask included.
func TestOpset23Generate(t *testing.T) {
	prompt := []int64{1, 17, 40, 3, 88}
	for _, variant := range variants {
		model, err := ir.NewModelShared(opset23Llama(t, variant))
		if err != nil {
			t.Fatal(err)
		}
		var want []int64
		for _, mode := range []generate.Mode{generate.Recompute, generate.Auto} {
			d, err := generate.New(model, generate.Options{Mode: mode, Threads: 1, Context: maxPositions})
			if err != nil {
				t.Fatalf("%s, %s: %v", variant, mode, err)
			}
			if mode == generate.Auto && d.Mode() != generate.OwnCache {
				t.Errorf("%s: auto chose %s (%s), want the own KV cache", variant, d.Mode(), d.Note())
			}
			res, err := generate.Run(context.Background(), d, nil, generate.Request{Prompt: prompt, MaxTokens: 40}, func(generate.Event) error { return nil })
			d.Close()
			if err != nil {
				t.Fatalf("%s, %s: %v", variant, mode, err)
			}
			if want == nil {
				want = res.Tokens
			} else if !slices.Equal(res.Tokens, want) {
				t.Errorf("%s, %s: greedy tokens\n%v, recomputing gives\n%v", variant, mode, res.Tokens, want)
			}
		}
	}
}
