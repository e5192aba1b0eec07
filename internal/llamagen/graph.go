package llamagen

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// builder appends nodes to one graph (the main graph or an If branch),
// naming values with its prefix so branches never clash.
type builder struct {
	g      *onnx.Graph
	prefix string
	count  int
}

func (b *builder) node(op string, inputs []string, attrs ...*onnx.Attribute) string {
	return b.nodeN(op, 1, inputs, attrs...)[0]
}

func (b *builder) nodeN(op string, outputs int, inputs []string, attrs ...*onnx.Attribute) []string {
	b.count++
	name := fmt.Sprintf("%s/%s_%d", b.prefix, op, b.count)
	outs := make([]string, outputs)
	for i := range outs {
		outs[i] = fmt.Sprintf("%s:%d", name, i)
	}
	b.g.Nodes = append(b.g.Nodes, &onnx.Node{Name: name, OpType: op, Inputs: inputs, Outputs: outs, Attributes: attrs})
	return outs
}

func (b *builder) constant(t *onnx.Tensor) string {
	return b.node("Constant", nil, &onnx.Attribute{Name: "value", Type: onnx.AttrTensor, T: t})
}

func (b *builder) ints(v ...int64) string {
	return b.constant(&onnx.Tensor{DataType: onnx.Int64, Dims: []int64{int64(len(v))}, Int64Data: v})
}

func (b *builder) scalarInt(v int64) string {
	return b.constant(&onnx.Tensor{DataType: onnx.Int64, Dims: []int64{}, Int64Data: []int64{v}})
}

func (b *builder) scalarFloat(v float32) string {
	return b.constant(&onnx.Tensor{DataType: onnx.Float, Dims: []int64{}, FloatData: []float32{v}})
}

// scalarOf is v as a scalar of dtype dt.
func (b *builder) scalarOf(dt onnx.DataType, v float32) string {
	if dt == onnx.Float {
		return b.scalarFloat(v)
	}
	return b.cast(b.scalarFloat(v), dt)
}

func (b *builder) cast(x string, dt onnx.DataType) string {
	return b.node("Cast", []string{x}, intAttr("to", int64(dt)))
}

func intAttr(name string, v int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInt, I: v}
}

func intsAttr(name string, v ...int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInts, Ints: v}
}

func tensorInfo(name string, dt onnx.DataType, dims ...onnx.Dim) *onnx.ValueInfo {
	return &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: dt, HasShape: true, Shape: dims}}
}

func dyn(name string) onnx.Dim { return onnx.Dim{Param: name} }
func fixed(v int) onnx.Dim     { return onnx.Dim{Value: int64(v), HasValue: true} }

// build makes the model; w receives the weights.
func build(c Config, w *weights) *onnx.Model {
	hd := c.Dim / c.Heads
	d, V := int64(c.Dim), int64(c.Vocab)
	const std = 0.02

	// Parameters, in the order Hugging Face's state dict lists them.
	embed := w.add("model.embed_tokens.weight", []int64{V, d}, std, 0)
	type layerWeights struct{ inNorm, q, k, v, o, postNorm, gate, up, down string }
	layers := make([]layerWeights, c.Layers)
	kv := int64(c.KVHeads * hd)
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		layers[l] = layerWeights{
			q:        w.add(p+"self_attn.q_proj.weight", []int64{d, d}, std, 0),
			k:        w.add(p+"self_attn.k_proj.weight", []int64{kv, d}, std, 0),
			v:        w.add(p+"self_attn.v_proj.weight", []int64{kv, d}, std, 0),
			o:        w.add(p+"self_attn.o_proj.weight", []int64{d, d}, std, 0),
			gate:     w.add(p+"mlp.gate_proj.weight", []int64{int64(c.Hidden), d}, std, 0),
			up:       w.add(p+"mlp.up_proj.weight", []int64{int64(c.Hidden), d}, std, 0),
			down:     w.add(p+"mlp.down_proj.weight", []int64{d, int64(c.Hidden)}, std, 0),
			inNorm:   w.add(p+"input_layernorm.weight", []int64{d}, 0, 1),
			postNorm: w.add(p+"post_attention_layernorm.weight", []int64{d}, 0, 1),
		}
	}
	norm := w.add("model.norm.weight", []int64{d}, 0, 1)
	head := embed
	if !c.Tied {
		head = w.add("lm_head.weight", []int64{V, d}, std, 0)
	}

	g := &onnx.Graph{Name: "llama", Initializers: w.inits}
	g.Inputs = []*onnx.ValueInfo{
		tensorInfo("input_ids", onnx.Int64, dyn("batch_size"), dyn("sequence_length")),
		tensorInfo("attention_mask", onnx.Int64, dyn("batch_size"), dyn("total_sequence_length")),
		tensorInfo("position_ids", onnx.Int64, dyn("batch_size"), dyn("sequence_length")),
	}
	var pastNames, presentNames []string
	if c.KVCache {
		for l := range c.Layers {
			for _, kind := range []string{"key", "value"} {
				name := fmt.Sprintf("past_key_values.%d.%s", l, kind)
				pastNames = append(pastNames, name)
				presentNames = append(presentNames, fmt.Sprintf("present.%d.%s", l, kind))
				g.Inputs = append(g.Inputs, tensorInfo(name, c.DType, dyn("batch_size"), fixed(c.KVHeads), dyn("past_sequence_length"), fixed(hd)))
			}
		}
	}
	if c.Merged {
		g.Inputs = append(g.Inputs, tensorInfo("use_cache_branch", onnx.Bool, fixed(1)))
	}
	g.Outputs = []*onnx.ValueInfo{tensorInfo("logits", c.DType, dyn("batch_size"), dyn("sequence_length"), fixed(c.Vocab))}
	for _, name := range presentNames {
		g.Outputs = append(g.Outputs, tensorInfo(name, c.DType, dyn("batch_size"), fixed(c.KVHeads), dyn("total_sequence_length"), fixed(hd)))
	}

	// decoder adds the whole decoder to b and returns its outputs
	// (logits, then the presents when withPast or the model has a cache).
	decoder := func(b *builder, withPast bool) []string {
		dt := c.DType
		f := decoderBuilder{builder: b, c: c, dt: dt, hd: hd}
		x := b.node("Gather", []string{embed, "input_ids"}, intAttr("axis", 0))
		cos, sin := f.rotary()
		mask := f.mask()
		var presents []string
		for l, lw := range layers {
			var pastK, pastV string
			if withPast {
				pastK, pastV = pastNames[2*l], pastNames[2*l+1]
			}
			h := f.rmsNorm(x, lw.inNorm)
			attn, k, v := f.attention(h, lw.q, lw.k, lw.v, lw.o, cos, sin, mask, pastK, pastV)
			if c.KVCache {
				presents = append(presents, k, v)
			}
			x = b.node("Add", []string{x, attn})
			h = f.rmsNorm(x, lw.postNorm)
			gate := f.linear(h, lw.gate)
			silu := b.node("Mul", []string{gate, b.node("Sigmoid", []string{gate})})
			x = b.node("Add", []string{x, f.linear(b.node("Mul", []string{silu, f.linear(h, lw.up)}), lw.down)})
		}
		x = f.rmsNorm(x, norm)
		logits := f.linear(x, head)
		return append([]string{logits}, presents...)
	}

	b := &builder{g: g, prefix: "main"}
	var outs []string
	if c.Merged {
		branch := func(name string, withPast bool) *onnx.Graph {
			sub := &onnx.Graph{Name: name}
			bb := &builder{g: sub, prefix: name}
			res := decoder(bb, withPast)
			for i, o := range g.Outputs {
				ident := bb.node("Identity", []string{res[i]})
				sub.Outputs = append(sub.Outputs, &onnx.ValueInfo{Name: ident, Type: o.Type})
			}
			return sub
		}
		outs = b.nodeN("If", len(g.Outputs), []string{"use_cache_branch"},
			&onnx.Attribute{Name: "then_branch", Type: onnx.AttrGraph, G: branch("with_past", true)},
			&onnx.Attribute{Name: "else_branch", Type: onnx.AttrGraph, G: branch("without_past", false)})
	} else {
		outs = decoder(b, c.KVCache)
	}
	for i, o := range g.Outputs {
		b.g.Nodes = append(b.g.Nodes, &onnx.Node{Name: "output/" + o.Name, OpType: "Identity", Inputs: []string{outs[i]}, Outputs: []string{o.Name}})
	}
	return &onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, ProducerName: "dstune llamagen", Graph: g}
}

// decoderBuilder adds the decoder's pieces.
type decoderBuilder struct {
	*builder
	c  Config
	dt onnx.DataType
	hd int
}

// linear is x·Wᵀ for a weight stored [out, in], as torch.onnx exports
// nn.Linear without constant folding.
func (f decoderBuilder) linear(x, w string) string {
	return f.node("MatMul", []string{x, f.node("Transpose", []string{w}, intsAttr("perm", 1, 0))})
}

// rmsNorm is Hugging Face's LlamaRMSNorm: in float32,
// x·1/√(mean(x²)+eps), then cast back and scaled by the weight.
func (f decoderBuilder) rmsNorm(x, weight string) string {
	h := x
	if f.dt != onnx.Float {
		h = f.cast(x, onnx.Float)
	}
	variance := f.node("ReduceMean", []string{f.node("Pow", []string{h, f.scalarFloat(2)})}, intsAttr("axes", -1), intAttr("keepdims", 1))
	inv := f.node("Reciprocal", []string{f.node("Sqrt", []string{f.node("Add", []string{variance, f.scalarFloat(f.c.RMSEps)})})})
	h = f.node("Mul", []string{h, inv})
	if f.dt != onnx.Float {
		h = f.cast(h, f.dt)
	}
	return f.node("Mul", []string{weight, h})
}

// rotary returns cos and sin [batch, 1, seq, head dim] of
// position_ids·θ^(−2i/head dim), the halves repeated (rotate_half style).
func (f decoderBuilder) rotary() (cos, sin string) {
	half := f.hd / 2
	inv := make([]float32, half)
	for i := range inv {
		inv[i] = float32(1 / math.Pow(f.c.RopeTheta, float64(2*i)/float64(f.hd)))
	}
	invFreq := f.constant(&onnx.Tensor{DataType: onnx.Float, Dims: []int64{int64(half)}, FloatData: inv})
	pos := f.node("Unsqueeze", []string{f.cast("position_ids", onnx.Float), f.ints(-1)}) // [b, s, 1]
	freqs := f.node("Mul", []string{pos, invFreq})                                       // [b, s, half]
	emb := f.node("Concat", []string{freqs, freqs}, intAttr("axis", -1))
	cos = f.node("Unsqueeze", []string{f.node("Cos", []string{emb}), f.ints(1)})
	sin = f.node("Unsqueeze", []string{f.node("Sin", []string{emb}), f.ints(1)})
	if f.dt != onnx.Float {
		cos, sin = f.cast(cos, f.dt), f.cast(sin, f.dt)
	}
	return cos, sin
}

// mask is the additive attention mask [batch, 1, seq, total]: 0 where
// key j ≤ past + query i and attention_mask[b, j] = 1, the dtype's
// lowest value elsewhere.
func (f decoderBuilder) mask() string {
	total := f.node("Gather", []string{f.node("Shape", []string{"attention_mask"}), f.scalarInt(1)}, intAttr("axis", 0))
	seq := f.node("Gather", []string{f.node("Shape", []string{"input_ids"}), f.scalarInt(1)}, intAttr("axis", 0))
	past := f.node("Sub", []string{total, seq})
	queryPos := f.node("Range", []string{past, total, f.scalarInt(1)})
	keyPos := f.node("Range", []string{f.scalarInt(0), total, f.scalarInt(1)})
	causal := f.node("LessOrEqual", []string{
		f.node("Unsqueeze", []string{keyPos, f.ints(0)}),   // [1, total]
		f.node("Unsqueeze", []string{queryPos, f.ints(1)}), // [seq, 1]
	})
	padding := f.node("Unsqueeze", []string{f.cast("attention_mask", onnx.Bool), f.ints(1, 2)}) // [b, 1, 1, total]
	allowed := f.node("And", []string{causal, padding})
	// The dtype's lowest finite value (torch.finfo(dtype).min): a fully
	// masked row (a padding query) must not become all -Inf.
	lowest := float32(-math.MaxFloat32)
	switch f.dt {
	case onnx.Float16:
		lowest = -65504
	case onnx.BFloat16:
		lowest = onnx.BFloat16ToFloat32(0xff7f)
	}
	return f.node("Where", []string{allowed, f.scalarOf(f.dt, 0), f.scalarOf(f.dt, lowest)})
}

// heads reshapes [b, s, n·hd] to [b, n, s, hd].
func (f decoderBuilder) heads(x string, n int) string {
	r := f.node("Reshape", []string{x, f.ints(0, 0, int64(n), int64(f.hd))})
	return f.node("Transpose", []string{r}, intsAttr("perm", 0, 2, 1, 3))
}

func (f decoderBuilder) rotate(x, cos, sin string) string {
	half := int64(f.hd / 2)
	x1 := f.node("Slice", []string{x, f.ints(0), f.ints(half), f.ints(-1)})
	x2 := f.node("Slice", []string{x, f.ints(half), f.ints(math.MaxInt64), f.ints(-1)})
	rotated := f.node("Concat", []string{f.node("Neg", []string{x2}), x1}, intAttr("axis", -1))
	return f.node("Add", []string{f.node("Mul", []string{x, cos}), f.node("Mul", []string{rotated, sin})})
}

// repeatKV repeats each key/value head Heads/KVHeads times:
// [b, kv, t, hd] → [b, kv, rep, t, hd] → [b, heads, t, hd].
func (f decoderBuilder) repeatKV(x string) string {
	rep := int64(f.c.Heads / f.c.KVHeads)
	if rep == 1 {
		return x
	}
	shape := f.node("Shape", []string{x})
	bkv := f.node("Slice", []string{shape, f.ints(0), f.ints(2), f.ints(0)})
	thd := f.node("Slice", []string{shape, f.ints(2), f.ints(4), f.ints(0)})
	expanded := f.node("Expand", []string{f.node("Unsqueeze", []string{x, f.ints(2)}), f.node("Concat", []string{bkv, f.ints(rep), thd}, intAttr("axis", 0))})
	return f.node("Reshape", []string{expanded, f.ints(0, int64(f.c.Heads), -1, int64(f.hd))})
}

// attention returns the attention block's output and the key and value
// [b, kv heads, past + s, hd] (the presents).
func (f decoderBuilder) attention(h, wq, wk, wv, wo, cos, sin, mask, pastK, pastV string) (out, k, v string) {
	q := f.rotate(f.heads(f.linear(h, wq), f.c.Heads), cos, sin)
	k = f.rotate(f.heads(f.linear(h, wk), f.c.KVHeads), cos, sin)
	v = f.heads(f.linear(h, wv), f.c.KVHeads)
	if pastK != "" {
		k = f.node("Concat", []string{pastK, k}, intAttr("axis", 2))
		v = f.node("Concat", []string{pastV, v}, intAttr("axis", 2))
	}
	kt := f.node("Transpose", []string{f.repeatKV(k)}, intsAttr("perm", 0, 1, 3, 2))
	scores := f.node("Div", []string{f.node("MatMul", []string{q, kt}), f.scalarOf(f.dt, float32(math.Sqrt(float64(f.hd))))})
	scores = f.node("Add", []string{scores, mask})
	if f.dt != onnx.Float {
		scores = f.cast(scores, onnx.Float)
	}
	probs := f.node("Softmax", []string{scores}, intAttr("axis", -1))
	if f.dt != onnx.Float {
		probs = f.cast(probs, f.dt)
	}
	ctx := f.node("Transpose", []string{f.node("MatMul", []string{probs, f.repeatKV(v)})}, intsAttr("perm", 0, 2, 1, 3))
	ctx = f.node("Reshape", []string{ctx, f.ints(0, 0, int64(f.c.Dim))})
	return f.linear(ctx, wo), k, v
}
