package demo

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// ModelConfig sizes the demo's GPT: a byte-level causal decoder with
// learned positions, pre-LayerNorm blocks (multi-head attention with a
// causal mask, a tanh-GELU MLP) and an LM head tied to the token
// embedding.
type ModelConfig struct {
	Vocab     int // token ids 0..Vocab-1 (256: bytes)
	Dim       int // model width
	Heads     int // attention heads; Dim must be a multiple
	Layers    int
	Hidden    int // MLP width
	Positions int // longest sequence
	Seed      uint64
}

// DefaultModel is the shipped base model's size: 2 layers of width 64,
// about 119,000 parameters (≈ 470 KB as float32).
var DefaultModel = ModelConfig{Vocab: 256, Dim: 64, Heads: 4, Layers: 2, Hidden: 256, Positions: 32, Seed: 20260601}

func (c ModelConfig) check() error {
	switch {
	case c.Vocab < 2 || c.Dim < 1 || c.Heads < 1 || c.Layers < 1 || c.Hidden < 1 || c.Positions < 2:
		return fmt.Errorf("demo: model config %+v: every size must be positive (vocab ≥ 2, positions ≥ 2)", c)
	case c.Dim%c.Heads != 0:
		return fmt.Errorf("demo: model width %d is not a multiple of %d heads", c.Dim, c.Heads)
	}
	return nil
}

// graphBuilder appends ONNX nodes with generated value names.
type graphBuilder struct {
	g     *onnx.Graph
	count int
	err   error
}

func (b *graphBuilder) node(op string, inputs []string, attrs ...*onnx.Attribute) string {
	b.count++
	out := fmt.Sprintf("%s_%d", op, b.count)
	b.g.Nodes = append(b.g.Nodes, &onnx.Node{Name: out, OpType: op, Inputs: inputs, Outputs: []string{out}, Attributes: attrs})
	return out
}

// constant adds a Constant node (not an initializer: constants are not
// parameters).
func (b *graphBuilder) constant(t *onnx.Tensor, err error) string {
	if err != nil {
		if b.err == nil {
			b.err = err
		}
		return ""
	}
	return b.node("Constant", nil, &onnx.Attribute{Name: "value", Type: onnx.AttrTensor, T: t})
}

func (b *graphBuilder) ints(v ...int64) string {
	return b.constant(onnx.FromInt64s("", []int64{int64(len(v))}, v))
}

func (b *graphBuilder) scalarInt(v int64) string {
	return b.constant(onnx.FromInt64s("", []int64{}, []int64{v}))
}

func (b *graphBuilder) scalarFloat(v float32) string {
	return b.constant(onnx.FromFloat32s("", []int64{}, []float32{v}))
}

func (b *graphBuilder) param(name string, dims []int64, values []float32) string {
	t, err := onnx.FromFloat32s(name, dims, values)
	if err != nil && b.err == nil {
		b.err = err
	}
	b.g.Initializers = append(b.g.Initializers, t)
	return name
}

func intAttr(name string, v int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInt, I: v}
}

func intsAttr(name string, v ...int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInts, Ints: v}
}

// BuildModel returns the untrained demo model for c: weights drawn from
// c.Seed (matrices and embeddings N(0, 0.02), output projections scaled by
// 1/√(2·layers) as GPT-2 does, biases 0, LayerNorm gains 1), opset 17.
// Weight matrices are stored [in, out] and multiplied directly. Input
// "tokens" int64 [batch, seq] (seq ≤ Positions), output "logits" float32
// [batch, seq, Vocab].
func BuildModel(c ModelConfig) (*onnx.Model, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	rng := newNormalSource(c.Seed)
	normal := func(n int, std float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(std * rng.next())
		}
		return v
	}
	fill := func(n int, x float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = x
		}
		return v
	}
	d, h, V := int64(c.Dim), int64(c.Heads), int64(c.Vocab)
	const std = 0.02
	projStd := std / math.Sqrt(2*float64(c.Layers))

	g := &onnx.Graph{Name: "dstune_demo_gpt"}
	b := &graphBuilder{g: g}
	dyn := func(name string) onnx.Dim { return onnx.Dim{Param: name} }
	g.Inputs = []*onnx.ValueInfo{{Name: "tokens", Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Int64, HasShape: true,
		Shape: []onnx.Dim{dyn("batch"), dyn("seq")}}}}

	wte := b.param("wte.weight", []int64{V, d}, normal(c.Vocab*c.Dim, std))
	wpe := b.param("wpe.weight", []int64{int64(c.Positions), d}, normal(c.Positions*c.Dim, std))

	// Positions 0..seq-1 and the causal mask: −1e9 where key > query.
	seq := b.node("Gather", []string{b.node("Shape", []string{"tokens"}), b.scalarInt(1)}, intAttr("axis", 0))
	pos := b.node("Range", []string{b.scalarInt(0), seq, b.scalarInt(1)})
	keyAfterQuery := b.node("Greater", []string{
		b.node("Unsqueeze", []string{pos, b.ints(0)}), // [1, seq]: key position
		b.node("Unsqueeze", []string{pos, b.ints(1)}), // [seq, 1]: query position
	})
	mask := b.node("Where", []string{keyAfterQuery, b.scalarFloat(-1e9), b.scalarFloat(0)})

	x := b.node("Add", []string{b.node("Gather", []string{wte, "tokens"}), b.node("Gather", []string{wpe, pos})})
	linear := func(in, name string, nIn, nOut int64, wStd float64) string {
		w := b.param(name+".weight", []int64{nIn, nOut}, normal(int(nIn*nOut), wStd))
		bias := b.param(name+".bias", []int64{nOut}, fill(int(nOut), 0))
		return b.node("Add", []string{b.node("MatMul", []string{in, w}), bias})
	}
	layerNorm := func(in, name string) string {
		w := b.param(name+".weight", []int64{d}, fill(c.Dim, 1))
		bias := b.param(name+".bias", []int64{d}, fill(c.Dim, 0))
		return b.node("LayerNormalization", []string{in, w, bias}, intAttr("axis", -1), &onnx.Attribute{Name: "epsilon", Type: onnx.AttrFloat, F: 1e-5})
	}
	headShape := b.ints(0, 0, h, d/h) // [batch, seq, heads, head dim]
	mergedShape := b.ints(0, 0, d)
	scale := b.scalarFloat(float32(1 / math.Sqrt(float64(d/h))))
	gelu := func(in string) string {
		// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), GPT-2's GELU.
		cube := b.node("Mul", []string{in, b.node("Mul", []string{in, in})})
		inner := b.node("Add", []string{in, b.node("Mul", []string{b.scalarFloat(0.044715), cube})})
		t := b.node("Tanh", []string{b.node("Mul", []string{b.scalarFloat(float32(math.Sqrt(2 / math.Pi))), inner})})
		return b.node("Mul", []string{b.node("Mul", []string{b.scalarFloat(0.5), in}), b.node("Add", []string{b.scalarFloat(1), t})})
	}
	for l := range c.Layers {
		p := fmt.Sprintf("h.%d.", l)
		a := layerNorm(x, p+"ln_1")
		heads := func(name string, perm ...int64) string {
			return b.node("Transpose", []string{b.node("Reshape", []string{linear(a, p+"attn."+name, d, d, std), headShape})}, intsAttr("perm", perm...))
		}
		q := heads("q", 0, 2, 1, 3) // [batch, heads, seq, head dim]
		k := heads("k", 0, 2, 3, 1) // [batch, heads, head dim, seq]
		v := heads("v", 0, 2, 1, 3)
		scores := b.node("Add", []string{b.node("Mul", []string{b.node("MatMul", []string{q, k}), scale}), mask})
		att := b.node("Softmax", []string{scores}, intAttr("axis", -1))
		ctx := b.node("Transpose", []string{b.node("MatMul", []string{att, v})}, intsAttr("perm", 0, 2, 1, 3))
		ctx = b.node("Reshape", []string{ctx, mergedShape})
		x = b.node("Add", []string{x, linear(ctx, p+"attn.out", d, d, projStd)})
		m := gelu(linear(layerNorm(x, p+"ln_2"), p+"mlp.fc", d, int64(c.Hidden), std))
		x = b.node("Add", []string{x, linear(m, p+"mlp.proj", int64(c.Hidden), d, projStd)})
	}
	x = layerNorm(x, "ln_f")
	head := b.node("Transpose", []string{wte}, intsAttr("perm", 1, 0)) // tied LM head
	b.node("MatMul", []string{x, head})
	last := g.Nodes[len(g.Nodes)-1]
	last.Name, last.Outputs[0] = "lm_head", "logits"
	g.Outputs = []*onnx.ValueInfo{{Name: "logits", Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Float, HasShape: true,
		Shape: []onnx.Dim{dyn("batch"), dyn("seq"), {Value: V, HasValue: true}}}}}
	if b.err != nil {
		return nil, fmt.Errorf("demo: building the model: %w", b.err)
	}
	return &onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, ProducerName: "dstune demo", Graph: g}, nil
}

// normalSource draws standard normal numbers from a seed with its own
// generator (SplitMix64 feeding the Box–Muller transform), so the model
// does not depend on math/rand's algorithms.
type normalSource struct {
	state uint64
	spare float64
	has   bool
}

func newNormalSource(seed uint64) *normalSource { return &normalSource{state: seed} }

func (s *normalSource) uint64() uint64 {
	s.state += 0x9e3779b97f4a7c15
	z := s.state
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// uniform is in (0, 1].
func (s *normalSource) uniform() float64 { return float64(s.uint64()>>11+1) / (1 << 53) }

func (s *normalSource) next() float64 {
	if s.has {
		s.has = false
		return s.spare
	}
	r := math.Sqrt(-2 * math.Log(s.uniform()))
	theta := 2 * math.Pi * s.uniform()
	s.spare, s.has = r*math.Sin(theta), true
	return r * math.Cos(theta)
}
