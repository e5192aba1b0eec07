package generate

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func loadModel(t testing.TB, path string) *ir.Model {
	t.Helper()
	m, err := onnx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModelShared(m)
	if err != nil {
		t.Fatal(err)
	}
	return model
}

func storiesPath(t testing.TB, elem ...string) string {
	return sharedtest.Path(t, append([]string{"models", "stories260K"}, elem...)...)
}

// storiesGreedy reads the README's greedy tokens: BOS and the 40 tokens
// after it.
func storiesGreedy(t testing.TB) []int64 {
	ot, err := onnx.ReadTensorFile(storiesPath(t, "test_data_set_1", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := ir.TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	return x.Int64s()
}

func greedy(t testing.TB, d *Decoder, prompt []int64, n int) []int64 {
	t.Helper()
	res, err := Run(context.Background(), d, nil, Request{Prompt: prompt, MaxTokens: n}, func(Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res.Tokens
}

func TestStoriesGreedyEveryMode(t *testing.T) {
	model := loadModel(t, storiesPath(t, "stories260K.onnx"))
	want := storiesGreedy(t)
	for _, mode := range []Mode{Auto, OwnCache, Recompute} {
		d, err := New(model, Options{Mode: mode, Threads: 1})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		t.Logf("%s: %s, context %d", mode, d.Note(), d.Context())
		got := greedy(t, d, want[:1], len(want)-1)
		for i := range got {
			if got[i] != want[i+1] {
				t.Errorf("%s: token %d is %d, want %d (got %v)", mode, i, got[i], want[i+1], got)
				break
			}
		}
		d.Close()
	}
	_ = filepath.Join
}

func writeLlama(t testing.TB, c llamagen.Config) *ir.Model {
	t.Helper()
	dir := t.TempDir()
	if err := llamagen.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	return loadModel(t, filepath.Join(dir, "model.onnx"))
}

var smallLlama = llamagen.Config{Vocab: 61, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, Hidden: 40, Seed: 5}

// TestLlamagenVariants: on Llama-shaped decoders of every export shape,
// the mode Auto picks (and the other cache, wherever it applies) gives
// the greedy tokens recomputing the sequence gives. Auto picks the own
// cache even where the export has past inputs: it holds grouped keys
// (smallLlama: 2 key heads for 4 query heads) once per key head, so it
// is no larger.
func TestLlamagenVariants(t *testing.T) {
	prompt := []int64{1, 7, 19, 3, 44, 2, 9}
	for _, v := range []struct {
		name  string
		edit  func(*llamagen.Config)
		auto  Mode
		modes []Mode
	}{
		{"plain", func(*llamagen.Config) {}, OwnCache, nil},
		{"with past", func(c *llamagen.Config) { c.KVCache = true }, OwnCache, []Mode{PastInputs}},
		{"merged", func(c *llamagen.Config) { c.Merged = true }, OwnCache, []Mode{PastInputs}},
		{"float16", func(c *llamagen.Config) { c.DType = onnx.Float16 }, OwnCache, nil},
		{"float16 with past", func(c *llamagen.Config) { c.DType = onnx.Float16; c.KVCache = true }, OwnCache, []Mode{PastInputs}},
		{"one key head", func(c *llamagen.Config) { c.KVHeads = 1 }, OwnCache, nil},
		{"with past, no grouped keys", func(c *llamagen.Config) { c.KVCache = true; c.KVHeads = c.Heads }, OwnCache, []Mode{PastInputs}},
		{"merged, no grouped keys", func(c *llamagen.Config) { c.Merged = true; c.KVHeads = c.Heads }, OwnCache, []Mode{PastInputs}},
		{"tied", func(c *llamagen.Config) { c.Tied = true }, OwnCache, nil},
	} {
		c := smallLlama
		v.edit(&c)
		model := writeLlama(t, c)
		r, err := New(model, Options{Threads: 1, Context: 128, Mode: Recompute})
		if err != nil {
			t.Fatal(err)
		}
		want := greedy(t, r, prompt, 40)
		for _, mode := range append([]Mode{Auto}, v.modes...) {
			d, err := New(model, Options{Threads: 1, Context: 128, Mode: mode})
			if err != nil {
				t.Fatalf("%s, %s: %v", v.name, mode, err)
			}
			if mode == Auto && d.Mode() != v.auto {
				t.Errorf("%s: auto chose %s (%s), want %s", v.name, d.Mode(), d.Note(), v.auto)
			}
			if got := greedy(t, d, prompt, 40); !slices.Equal(got, want) {
				t.Errorf("%s, %s: greedy tokens\n%v, recomputing gives\n%v", v.name, d.Mode(), got, want)
			}
			d.Close()
		}
		r.Close()
	}
}

func TestDemoGPT(t *testing.T) {
	model := loadModel(t, "../demo/base.onnx")
	d, err := New(model, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, context %d", d.Note(), d.Context())
	r, err := New(model, Options{Threads: 1, Mode: Recompute})
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int64{'h', 'e', 'l', 'l', 'o', '<'}
	got, want := greedy(t, d, prompt, 10), greedy(t, r, prompt, 10)
	if !slices.Equal(got, want) {
		t.Errorf("greedy tokens %v, recomputing gives %v", got, want)
	}
	t.Logf("%v", got)
}

// cumsumModel is a causal model outside the attention pattern: the
// embeddings summed over the positions so far (CumSum), then a head.
func cumsumModel(t *testing.T) *ir.Model {
	t.Helper()
	const vocab, dim = 11, 4
	emb := make([]float32, vocab*dim)
	head := make([]float32, dim*vocab)
	for i := range emb {
		emb[i] = float32(i%7) / 7
		head[i] = float32(i%5) / 5
	}
	embT, _ := onnx.FromFloat32s("emb", []int64{vocab, dim}, emb)
	headT, _ := onnx.FromFloat32s("head", []int64{dim, vocab}, head)
	axis, _ := onnx.FromInt64s("axis", []int64{}, []int64{1})
	g := &onnx.Graph{
		Name:         "cumsum",
		Initializers: []*onnx.Tensor{embT, headT, axis},
		Inputs:       []*onnx.ValueInfo{info("tokens", onnx.Int64, onnx.Dim{Param: "batch"}, onnx.Dim{Param: "seq"})},
		Outputs:      []*onnx.ValueInfo{info("logits", onnx.Float, onnx.Dim{Param: "batch"}, onnx.Dim{Param: "seq"}, onnx.Dim{Value: vocab, HasValue: true})},
		Nodes: []*onnx.Node{
			{OpType: "Gather", Inputs: []string{"emb", "tokens"}, Outputs: []string{"x"}},
			{OpType: "CumSum", Inputs: []string{"x", "axis"}, Outputs: []string{"s"}},
			{OpType: "MatMul", Inputs: []string{"s", "head"}, Outputs: []string{"logits"}},
		},
	}
	return toyModel(t, g)
}

// TestFallbackToRecompute: a graph the rewrite does not recognise is
// recomputed, and the decoder says why.
func TestFallbackToRecompute(t *testing.T) {
	model := cumsumModel(t)
	d, err := New(model, Options{Threads: 1, Context: 32})
	if err != nil {
		t.Fatal(err)
	}
	if d.Mode() != Recompute || !strings.Contains(d.Note(), "CumSum") {
		t.Errorf("mode %s: %s; want recompute naming CumSum", d.Mode(), d.Note())
	}
	if _, err := New(model, Options{Threads: 1, Context: 32, Mode: OwnCache}); err == nil {
		t.Error("the own KV cache was accepted for a graph it does not model")
	}
	if got := greedy(t, d, []int64{3, 1}, 5); len(got) != 5 {
		t.Errorf("generated %v", got)
	}
}

// info is a tensor graph input or output.
func info(name string, dt onnx.DataType, dims ...onnx.Dim) *onnx.ValueInfo {
	return &onnx.ValueInfo{Name: name, Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: dt, HasShape: true, Shape: dims}}
}

// toyModel imports g as a model file of opset 17 holds it.
func toyModel(t *testing.T, g *onnx.Graph) *ir.Model {
	t.Helper()
	buf, err := onnx.Encode(&onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 17}}, Graph: g})
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Decode(buf, "")
	if err != nil {
		t.Fatal(err)
	}
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return model
}

// positionTableModel is a GPT-2-shaped toy: token and position embeddings
// (a table of 24 rows, indexed by a position_ids input, as exports with
// past feed them), summed and projected to the vocabulary.
func positionTableModel(t *testing.T) *ir.Model {
	t.Helper()
	const vocab, dim, positions = 11, 4, 24
	emb, pos, head := make([]float32, vocab*dim), make([]float32, positions*dim), make([]float32, dim*vocab)
	for i := range emb {
		emb[i], head[i] = float32(i%7)/7, float32(i%5)/5
	}
	for i := range pos {
		pos[i] = float32(i%3) / 3
	}
	embT, _ := onnx.FromFloat32s("wte", []int64{vocab, dim}, emb)
	posT, _ := onnx.FromFloat32s("wpe", []int64{positions, dim}, pos)
	headT, _ := onnx.FromFloat32s("head", []int64{dim, vocab}, head)
	batch, seq := onnx.Dim{Param: "batch"}, onnx.Dim{Param: "seq"}
	g := &onnx.Graph{
		Name:         "wpe",
		Initializers: []*onnx.Tensor{embT, posT, headT},
		Inputs:       []*onnx.ValueInfo{info("input_ids", onnx.Int64, batch, seq), info("position_ids", onnx.Int64, batch, seq)},
		Outputs:      []*onnx.ValueInfo{info("logits", onnx.Float, batch, seq, onnx.Dim{Value: vocab, HasValue: true})},
		Nodes: []*onnx.Node{
			{OpType: "Gather", Inputs: []string{"wte", "input_ids"}, Outputs: []string{"x"}},
			{OpType: "Gather", Inputs: []string{"wpe", "position_ids"}, Outputs: []string{"p"}},
			{OpType: "Add", Inputs: []string{"x", "p"}, Outputs: []string{"h"}},
			{OpType: "MatMul", Inputs: []string{"h", "head"}, Outputs: []string{"logits"}},
		},
	}
	return toyModel(t, g)
}

// TestContextFromPositionTables: a model's context is the rows of its
// position table, whether the positions come from a Range over the
// sequence (tiny_gpt: 64, found as the graph is built) or from a
// position_ids input (known only as it runs); generation stops there with
// "length" rather than failing on an index out of the table, and a
// larger --context is refused.
func TestContextFromPositionTables(t *testing.T) {
	tiny := loadModel(t, sharedtest.Path(t, "models", "tiny_gpt", "model.onnx"))
	table := positionTableModel(t)
	for _, c := range []struct {
		name  string
		model *ir.Model
		rows  int
		modes []Mode // the toy has no attention to cache
	}{{"tiny_gpt", tiny, 64, []Mode{Recompute, OwnCache}}, {"position_ids", table, 24, []Mode{Recompute}}} {
		for _, mode := range c.modes {
			d, err := New(c.model, Options{Threads: 1, Mode: mode})
			if err != nil {
				t.Fatalf("%s %s: %v", c.name, mode, err)
			}
			if d.Context() != c.rows {
				t.Errorf("%s %s: context %d, want the table's %d rows", c.name, mode, d.Context(), c.rows)
			}
			res, err := Run(context.Background(), d, nil, Request{Prompt: []int64{1}, MaxTokens: 2 * c.rows}, func(Event) error { return nil })
			if err != nil || res.FinishReason != "length" || len(res.Tokens) != c.rows {
				t.Errorf("%s %s: %d tokens, %q, %v; want %d, length", c.name, mode, len(res.Tokens), res.FinishReason, err, c.rows)
			}
			d.Close()
			if _, err := New(c.model, Options{Threads: 1, Mode: mode, Context: c.rows + 1}); err == nil {
				t.Errorf("%s %s: --context %d accepted", c.name, mode, c.rows+1)
			}
		}
	}
}

// TestDecisionsAcrossCapacities: the rewrite's decisions at two
// capacities compare equal when only the numbers in them differ (the
// node indices, the shapes), however many digits they have, so a larger
// capacity is not checked against recomputing again; a decision of
// another kind makes them differ.
func TestDecisionsAcrossCapacities(t *testing.T) {
	small := []string{"7: gather bool[16,16] at the new positions along axis 0", "9: cache float32[1,4,64,16] along axis 3"}
	large := []string{"7: gather bool[1024,1024] at the new positions along axis 0", "9: cache float32[1,4,64,1024] along axis 3"}
	if !equalStrings(small, large) {
		t.Errorf("%q and %q differ", small, large)
	}
	if equalStrings(small, large[:1]) || equalStrings(small, []string{small[0], "9: gather float32[1,4,64,16] at the new positions along axis 3"}) {
		t.Errorf("decisions of another kind compare equal")
	}
	model := writeLlama(t, smallLlama)
	d, err := New(model, Options{Mode: OwnCache, Threads: 1, Context: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, capacity := range []int{minCapacity, 1024} {
		cg, err := d.rewrite(capacity, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !equalStrings(cg.Decisions, d.decisions) {
			t.Errorf("capacity %d: decisions %q, the validated ones %q", capacity, cg.Decisions, d.decisions)
		}
	}
}

// TestOwnCacheUpdatedInPlace: the own-cache step of a Llama-shaped
// decoder writes its new rows into the cache tensors it is fed (the
// executable updates them in place rather than copying the whole cache),
// and leaves the other positions as they were.
func TestOwnCacheUpdatedInPlace(t *testing.T) {
	d, err := New(writeLlama(t, smallLlama), Options{Threads: 1, Context: 64, Mode: OwnCache})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const capacity, at = minCapacity, 5
	prog, exe, release, err := d.acquireUnpooled(context.Background(), shape{capacity, 1})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	s := d.NewSession()
	feeds := s.lmFeeds([]int64{7}, capacity)
	feeds[cachePositions] = ir.FromInt64s(ir.Shape{1}, positions(at, 1))
	caches := make([]*ir.Tensor, len(prog.cached.Slots))
	for i, sl := range prog.cached.Slots {
		caches[i] = ir.NewTensor(sl.DType, sl.Shape)
		feeds[cacheIn(i)] = caches[i]
	}
	out, err := accel.RunNamed(exe, feeds)
	if err != nil {
		t.Fatal(err)
	}
	for i, sl := range prog.cached.Slots {
		want := ir.NewTensor(sl.DType, sl.Shape)
		copyRows(want, at, out[cacheOut(i)], 0, 1, sl.Axis)
		if string(caches[i].Bytes()) != string(want.Bytes()) {
			t.Errorf("cache %d after the step is not the zero cache with the step's row at position %d", i, at)
		}
	}
}

// TestGroupedKeysCachedOnce: where query heads share key heads, the own
// cache holds each key head once (stories260K: 4 for 8 query heads;
// smallLlama: 2 for 4, or 1), so that it is no larger than the export's
// past inputs.
func TestGroupedKeysCachedOnce(t *testing.T) {
	oneHead := smallLlama
	oneHead.KVHeads = 1
	withPast := smallLlama
	withPast.KVCache = true
	// A position's keys and values, float32: layers × 2 × key heads ×
	// head size × 4 bytes.
	small := smallLlama.Layers * 2 * smallLlama.Dim / smallLlama.Heads * 4
	for _, c := range []struct {
		name     string
		model    *ir.Model
		kvHeads  int
		position int // bytes
	}{
		{"stories260K", loadModel(t, storiesPath(t, "stories260K.onnx")), 4, 5 * 2 * 4 * 8 * 4},
		{"smallLlama", writeLlama(t, smallLlama), smallLlama.KVHeads, small * smallLlama.KVHeads},
		{"one key head", writeLlama(t, oneHead), 1, small},
		{"with past", writeLlama(t, withPast), smallLlama.KVHeads, small * smallLlama.KVHeads},
	} {
		d, err := New(c.model, Options{Mode: OwnCache, Threads: 1, Context: 64})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		cg, err := d.rewriteFirst()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for i, sl := range cg.Slots {
			if len(sl.Shape) != 4 || sl.Shape[1] != c.kvHeads {
				t.Errorf("%s: cache %d is %v, want %d heads on axis 1", c.name, i, sl.Shape, c.kvHeads)
			}
		}
		if c.name == "with past" && !d.ownCacheNoLarger() {
			t.Errorf("%s: the own cache is larger than the past inputs", c.name)
		}
		if got, note := slotBytes(cg.Slots), sysmem.Format(int64(c.position))+" a position"; got != c.position || !strings.Contains(d.Note(), note) {
			t.Errorf("%s: %d bytes a position, note %q; want %d, %q", c.name, got, d.Note(), c.position, note)
		}
		d.Close()
	}
}

// TestGroupedKeysOf matches the repetition of key heads by its shapes
// and refuses chains that move the elements otherwise.
func TestGroupedKeysOf(t *testing.T) {
	chain := func(x ir.Shape, unit, expanded, merged ir.Shape, perm []int) (*ir.Value, *ir.Value) {
		b := ir.NewBuilder("chain")
		in := b.Input("x", ir.Float32, x)
		v := b.Op1(&ir.Reshape{Shape: merged}, b.Op1(&ir.Expand{Shape: expanded}, b.Op1(&ir.Reshape{Shape: unit}, in)))
		if perm != nil {
			v = b.Op1(&ir.Transpose{Perm: perm}, v)
		}
		return in, v
	}
	for _, c := range []struct {
		name                     string
		x, unit, expanded, merge ir.Shape
		perm                     []int
		group, head              int // group 0: no match
	}{
		{"heads first", ir.Shape{1, 2, 16, 8}, ir.Shape{1, 2, 1, 16, 8}, ir.Shape{1, 2, 3, 16, 8}, ir.Shape{1, 6, 16, 8}, []int{0, 1, 3, 2}, 3, 1},
		{"positions first", ir.Shape{2, 16, 4, 8}, ir.Shape{2, 16, 4, 1, 8}, ir.Shape{2, 16, 4, 2, 8}, ir.Shape{2, 16, 8, 8}, []int{0, 2, 3, 1}, 2, 2},
		{"no transpose", ir.Shape{1, 2, 16, 8}, ir.Shape{1, 2, 1, 16, 8}, ir.Shape{1, 2, 2, 16, 8}, ir.Shape{1, 4, 16, 8}, nil, 2, 1},
		{"merged into the positions", ir.Shape{1, 2, 16, 8}, ir.Shape{1, 2, 1, 16, 8}, ir.Shape{1, 2, 2, 16, 8}, ir.Shape{1, 2, 32, 8}, nil, 0, 0},
		{"group before the heads", ir.Shape{1, 2, 16, 8}, ir.Shape{1, 1, 2, 16, 8}, ir.Shape{1, 3, 2, 16, 8}, ir.Shape{1, 6, 16, 8}, nil, 0, 0},
		{"expanded twice", ir.Shape{1, 2, 16, 8}, ir.Shape{1, 2, 1, 16, 8}, ir.Shape{2, 2, 2, 16, 8}, ir.Shape{2, 4, 16, 8}, nil, 0, 0},
	} {
		x, v := chain(c.x, c.unit, c.expanded, c.merge, c.perm)
		gk, ok := groupedKeysOf(v)
		switch {
		case ok != (c.group > 0):
			t.Errorf("%s: matched %v, want %v", c.name, ok, c.group > 0)
		case ok && (gk.x != x || gk.group != c.group || gk.head != c.head || !slices.Equal(gk.perm, c.perm)):
			t.Errorf("%s: got group %d, head axis %d, perm %v (x %v), want %d, %d, %v", c.name, gk.group, gk.head, gk.perm, gk.x == x, c.group, c.head, c.perm)
		}
	}
}

// TestGroupedKeysWithoutBatchAxis: attention over 3-D operands ([heads,
// positions, head size], no batch axis) whose 2 key heads are repeated
// for 4 query heads: the own cache holds the 2 key heads, and feeding the
// positions one at a time through the rewritten graph, the caches
// carried from step to step, gives the logits of the whole sequence.
func TestGroupedKeysWithoutBatchAxis(t *testing.T) {
	const C, V, H, KV, D = 8, 11, 4, 2, 4 // positions, vocabulary, heads, key heads, head size
	const E = H * D
	rng := rand.New(rand.NewPCG(1, 2))
	b := ir.NewBuilder("attention-3d")
	param := func(name string, shape ir.Shape) *ir.Value {
		w := ir.NewTensor(ir.Float32, shape)
		for i := range w.Float32s() {
			w.Float32s()[i] = float32(rng.NormFloat64()) / 2
		}
		return b.Param(name, w)
	}
	op := func(o ir.Op, in ...*ir.Value) *ir.Value { return b.Op1(o, in...) }
	tokens := b.Input("tokens", ir.Int64, ir.Shape{1, C})
	x := op(&ir.Reshape{Shape: ir.Shape{C, E}}, op(&ir.Gather{Axis: 0}, param("embedding", ir.Shape{V, E}), tokens))
	heads := func(name string, n int) *ir.Value { // [n, C, D]
		return op(&ir.Transpose{Perm: []int{1, 0, 2}}, op(&ir.Reshape{Shape: ir.Shape{C, n, D}}, op(&ir.MatMul{}, x, param(name, ir.Shape{E, n * D}))))
	}
	repeat := func(kv *ir.Value) *ir.Value { // [KV, C, D] → [H, C, D], head h from key head h/(H/KV)
		unit := op(&ir.Reshape{Shape: ir.Shape{KV, 1, C, D}}, kv)
		return op(&ir.Reshape{Shape: ir.Shape{H, C, D}}, op(&ir.Expand{Shape: ir.Shape{KV, H / KV, C, D}}, unit))
	}
	causal := make([]bool, C*C)
	for i := range C {
		for j := range i + 1 {
			causal[i*C+j] = true
		}
	}
	scores := op(&ir.MatMul{}, heads("wq", H), op(&ir.Transpose{Perm: []int{0, 2, 1}}, repeat(heads("wk", KV))))
	masked := op(&ir.Where{}, b.Const(ir.FromBools(ir.Shape{C, C}, causal)), scores, b.Const(ir.ScalarFloat32(-1e9)))
	out := op(&ir.MatMul{}, op(&ir.Softmax{Axis: 2}, masked), repeat(heads("wv", KV)))
	merged := op(&ir.Reshape{Shape: ir.Shape{1, C, E}}, op(&ir.Transpose{Perm: []int{1, 0, 2}}, out))
	b.Output("logits", op(&ir.MatMul{}, merged, param("wo", ir.Shape{E, V})))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	run := func(g *ir.Graph, feeds map[string]*ir.Tensor) map[string]*ir.Tensor {
		t.Helper()
		exe, err := cpu.New().Compile(g, accel.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer exe.Close()
		out, err := accel.RunNamed(exe, feeds)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	seq := make([]int64, C)
	for i := range seq {
		seq[i] = rng.Int64N(V)
	}
	want := run(g, map[string]*ir.Tensor{"tokens": ir.FromInt64s(ir.Shape{1, C}, seq)})["logits"].Float32s()

	cg, err := rewriteCached(g, map[string]ir.InputRole{"tokens": ir.RoleTokens}, C, 1)
	if err != nil {
		t.Fatal(err)
	}
	caches := make([]*ir.Tensor, len(cg.Slots))
	for i, sl := range cg.Slots {
		if sl.Shape[0] != KV {
			t.Errorf("cache %d is %v, want %d key heads on axis 0", i, sl.Shape, KV)
		}
		caches[i] = ir.NewTensor(sl.DType, sl.Shape)
	}
	for p := range C {
		feeds := map[string]*ir.Tensor{"tokens": ir.FromInt64s(ir.Shape{1, 1}, seq[p:p+1]), cachePositions: ir.FromInt64s(ir.Shape{1}, []int64{int64(p)})}
		for i, c := range caches {
			feeds[cacheIn(i)] = c
		}
		out := run(cg.Graph, feeds)
		for i, sl := range cg.Slots {
			copyRows(caches[i], p, out[cacheOut(i)], 0, 1, sl.Axis)
		}
		got := out["logits"].Float32s()
		for j, v := range got {
			if w := want[p*V+j]; math.Abs(float64(v-w)) > 1e-4*(1+math.Abs(float64(w))) {
				t.Fatalf("position %d, logit %d: %v, the whole sequence gives %v", p, j, v, w)
			}
		}
	}
}
