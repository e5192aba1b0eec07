package peft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// PromptParam is the initializer holding the soft prompt in a prompted
// model (PEFT's key for it): float32 [n, d].
const PromptParam = promptKey

// promptPrefix starts the name of every value InsertPrompt adds.
const promptPrefix = "dstune.prompt/"

// minPromptOpset is the oldest default-domain opset InsertPrompt writes
// for: Slice takes its bounds as inputs from opset 10 on.
const minPromptOpset = 10

// promptSite is what InsertPrompt found in a model: the inputs by role,
// the token-embedding Gather and the table it reads.
type promptSite struct {
	tokens, mask, positions, tokenTypes *onnx.ValueInfo
	gather                              *onnx.Node
	table                               *onnx.Tensor
	sliceLogits                         bool // the first output has the sequence axis (an LM's logits [b, s, V])
}

// findPromptSite checks that m can take a soft prompt and finds where.
func findPromptSite(m *onnx.Model) (*promptSite, error) {
	if m.Graph == nil {
		return nil, errors.New("the model has no graph")
	}
	if op := m.Opset(""); op < minPromptOpset {
		return nil, fmt.Errorf("the model is opset %d; inserting a prompt needs opset %d or later", op, minPromptOpset)
	}
	model, err := ir.NewModelShared(m)
	if err != nil {
		return nil, err
	}
	plans, err := model.InputPlans()
	if err != nil {
		return nil, err
	}
	s := &promptSite{}
	byName := map[string]*onnx.ValueInfo{}
	for _, in := range m.Graph.Inputs {
		byName[in.Name] = in
	}
	for _, p := range plans {
		in := byName[p.Input.Name]
		switch p.Role {
		case ir.RoleTokens:
			s.tokens = in
		case ir.RoleAttentionMask:
			s.mask = in
		case ir.RolePositionIDs:
			s.positions = in
		case ir.RoleTokenTypeIDs:
			s.tokenTypes = in
		case ir.RolePast, ir.RoleCacheBranch:
			return nil, fmt.Errorf("input %q (%s): a soft prompt goes before the first tokens of a sequence, and dstune inserts it in exports without a key/value cache", p.Input.Name, p.Role)
		default:
			return nil, fmt.Errorf("input %q: a soft prompt lengthens the sequence, and dstune does not know how to lengthen this input", p.Input.Name)
		}
		if p.Input.Dims != nil && len(p.Input.Dims) != 2 {
			return nil, fmt.Errorf("input %q has %d dimensions, want [batch, sequence]", p.Input.Name, len(p.Input.Dims))
		}
	}
	if s.tokens == nil {
		return nil, errors.New("the model has no token input")
	}
	for _, n := range m.Graph.Nodes {
		if n.OpType != "Gather" || (n.Domain != "" && n.Domain != "ai.onnx") || len(n.Inputs) < 2 || n.Inputs[1] != s.tokens.Name {
			continue
		}
		if s.gather != nil {
			return nil, fmt.Errorf("the token input %q feeds two Gathers (%q and %q): which is the token embedding?", s.tokens.Name, s.gather.Name, n.Name)
		}
		if axis, err := n.AttrInt("axis", 0); err != nil || axis != 0 {
			return nil, fmt.Errorf("node %q gathers the tokens along axis %d, not the rows of an embedding table", n.Name, axis)
		}
		s.gather = n
	}
	if s.gather == nil {
		return nil, fmt.Errorf("no Gather reads the token input %q: the soft prompt goes at the token embedding's output", s.tokens.Name)
	}
	if s.table = m.Graph.Initializer(s.gather.Inputs[0]); s.table == nil || !s.table.DataType.IsFloat() || len(s.table.Dims) != 2 {
		return nil, fmt.Errorf("node %q (the token embedding) does not read a floating-point matrix initializer", s.gather.Name)
	}
	for _, n := range m.Graph.Nodes {
		if slices.Contains(n.Outputs, s.tokens.Name) {
			return nil, fmt.Errorf("node %q writes the token input %q", n.Name, s.tokens.Name)
		}
		for _, a := range n.Attributes {
			for _, sub := range append([]*onnx.Graph{a.G}, a.Graphs...) {
				if sub != nil && readsName(sub, s.tokens.Name, 0) {
					return nil, fmt.Errorf("a subgraph of node %q reads the token input %q, which dstune does not lengthen there", n.Name, s.tokens.Name)
				}
			}
		}
	}
	if len(m.Graph.Outputs) == 0 {
		return nil, errors.New("the model has no outputs")
	}
	// An LM's first output [b, s, V] is returned for the real positions;
	// a classifier's [b, C] is left as it is.
	b, _, err := model.LMBindings(1, 2)
	if err != nil {
		return nil, err
	}
	g, err := model.Specialize(b)
	if err != nil {
		return nil, err
	}
	switch out := g.Outputs[0].Value; len(out.Shape) {
	case 3:
		s.sliceLogits = true
	case 2:
	default:
		return nil, fmt.Errorf("output %q is %v: want logits [batch, sequence, vocabulary] or [batch, classes]", g.Outputs[0].Name, out.Type)
	}
	return s, nil
}

// readsName reports whether a subgraph (or its subgraphs) reads name.
func readsName(g *onnx.Graph, name string, depth int) bool {
	if depth > 64 {
		return true
	}
	for _, n := range g.Nodes {
		if slices.Contains(n.Inputs, name) {
			return true
		}
		for _, a := range n.Attributes {
			for _, sub := range append([]*onnx.Graph{a.G}, a.Graphs...) {
				if sub != nil && readsName(sub, name, depth+1) {
					return true
				}
			}
		}
	}
	return false
}

// InsertPrompt returns a copy of m (sharing its tensors; m is not
// changed) whose graph puts the soft prompt's n virtual tokens into every
// sequence at the output of the token-embedding Gather — after the first
// position (after-bos) or before it (start) — as initializer PromptParam
// (float32 [n, d], cast to the table's dtype), and so computes on s + n
// positions:
//
//   - every other reader of the token ids reads them lengthened with
//     token 0 at the prompt's positions (so the positions, causal masks
//     and lengths the graph derives from them cover s + n), an attention
//     mask with 1 there, token types with 0; position ids p become, after
//     the first, p[0]+1 … p[0]+n for the prompt and p + n after it
//     (start: 0 … n−1, then p + n);
//   - the first output, when it holds the sequence axis (an LM's logits
//     [b, s + n, V]), is returned for the real positions only: [b, s, V].
//
// The inputs and outputs keep their names and shapes, so the prompted
// model is fed and read like m. Models with a key/value cache, or whose
// token ids feed anything in a subgraph, are refused; the graph's
// value_info is dropped (the lengths it states no longer hold).
func InsertPrompt(m *onnx.Model, p *SoftPrompt) (*onnx.Model, error) {
	s, err := findPromptSite(m)
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	if d := int(s.table.Dims[1]); p.Dim != d {
		return nil, fmt.Errorf("prompt: the soft prompt's rows have %d values, the token embedding %q has %d", p.Dim, s.table.Name, d)
	}
	if len(p.Values) != p.Length*p.Dim || p.Length < 1 {
		return nil, fmt.Errorf("prompt: %d values for %d×%d", len(p.Values), p.Length, p.Dim)
	}
	e := &promptEditor{m: m, site: s, prompt: p, names: map[string]bool{}}
	if err := e.collectNames(); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	out, err := e.edit()
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	return out, nil
}

// promptEditor builds the prompted graph.
type promptEditor struct {
	m      *onnx.Model
	site   *promptSite
	prompt *SoftPrompt
	names  map[string]bool // every name the graph uses

	inits []*onnx.Tensor // initializers added
	first []*onnx.Node   // nodes that go before every other node
	count int
	err   error
}

func (e *promptEditor) collectNames() error {
	g := e.m.Graph
	add := func(name string) { e.names[name] = true }
	for _, v := range g.Inputs {
		add(v.Name)
	}
	for _, t := range g.Initializers {
		add(t.Name)
	}
	for _, n := range g.Nodes {
		for _, o := range n.Outputs {
			add(o)
		}
	}
	for name := range e.names {
		if strings.HasPrefix(name, promptPrefix) || name == PromptParam {
			return fmt.Errorf("the model already has a value %q: is the prompt in it already?", name)
		}
	}
	return nil
}

// name returns a new value name.
func (e *promptEditor) name(what string) string {
	e.count++
	return fmt.Sprintf("%s%s_%d", promptPrefix, what, e.count)
}

// constant adds an initializer of int64 (or dt) values and returns its name.
func (e *promptEditor) constant(what string, dt onnx.DataType, dims []int64, values ...int64) string {
	raw := make([]byte, 0, 8*len(values))
	for _, v := range values {
		switch dt {
		case onnx.Int64:
			raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
		case onnx.Int32:
			raw = binary.LittleEndian.AppendUint32(raw, uint32(v))
		default:
			t, err := scalarTensor(dt, float64(v))
			if err != nil {
				e.fail(err)
				return ""
			}
			raw = append(raw, t...)
		}
	}
	name := e.name(what)
	t, err := onnx.NewTensor(name, dt, dims, raw)
	if err != nil {
		e.fail(err)
		return ""
	}
	e.inits = append(e.inits, t)
	return name
}

// scalarTensor encodes one value of a numeric dtype.
func scalarTensor(dt onnx.DataType, v float64) ([]byte, error) {
	idt, err := ir.DTypeFromONNX(dt)
	if err != nil {
		return nil, err
	}
	t := ir.Convert(ir.FromFloat64s(ir.Shape{1}, []float64{v}), idt)
	return t.Bytes(), nil
}

func (e *promptEditor) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// node adds a node computing op(inputs) into a new value (or into out
// when given) and returns the output's name.
func (e *promptEditor) node(list *[]*onnx.Node, op string, out string, inputs []string, attrs ...*onnx.Attribute) string {
	if out == "" {
		out = e.name(strings.ToLower(op))
	}
	*list = append(*list, &onnx.Node{Name: out, OpType: op, Inputs: inputs, Outputs: []string{out}, Attributes: attrs})
	return out
}

func intAttr(name string, v int64) *onnx.Attribute {
	return &onnx.Attribute{Name: name, Type: onnx.AttrInt, I: v}
}

// around returns v [b, s, ...] lengthened along axis 1 by middle
// [b, n, ...]: after v's first position (after-bos), or before it
// (start).
func (e *promptEditor) around(list *[]*onnx.Node, v string, middle string) string {
	if e.prompt.At == PromptStart {
		return e.node(list, "Concat", "", []string{middle, v}, intAttr("axis", 1))
	}
	c0, c1, cmax := e.ints("zero", 0), e.ints("one", 1), e.ints("end", math.MaxInt64)
	first := e.node(list, "Slice", "", []string{v, c0, c1, c1})
	rest := e.node(list, "Slice", "", []string{v, c1, cmax, c1})
	return e.node(list, "Concat", "", []string{first, middle, rest}, intAttr("axis", 1))
}

// ints is a 1-D int64 initializer of one value, made once per what.
func (e *promptEditor) ints(what string, v int64) string {
	key := promptPrefix + what
	if !e.names[key] {
		e.names[key] = true
		t, _ := onnx.NewTensor(key, onnx.Int64, []int64{1}, binary.LittleEndian.AppendUint64(nil, uint64(v)))
		e.inits = append(e.inits, t)
	}
	return key
}

func (e *promptEditor) edit() (*onnx.Model, error) {
	s, p, g := e.site, e.prompt, e.m.Graph
	n, d := int64(p.Length), int64(p.Dim)
	// [b, n] and [b, n, d], b from the token input's shape.
	shape := e.node(&e.first, "Shape", "", []string{s.tokens.Name})
	batch := e.node(&e.first, "Slice", "", []string{shape, e.ints("zero", 0), e.ints("one", 1), e.ints("zero", 0)})
	bn := e.node(&e.first, "Concat", "", []string{batch, e.constant("n", onnx.Int64, []int64{1}, n)}, intAttr("axis", 0))
	bnd := e.node(&e.first, "Concat", "", []string{batch, e.constant("nd", onnx.Int64, []int64{2}, n, d)}, intAttr("axis", 0))
	fill := func(in *onnx.ValueInfo, v int64) string {
		c := e.constant("fill", elemType(in), []int64{1, 1}, v)
		return e.node(&e.first, "Expand", "", []string{c, bn})
	}
	renamed := map[string]string{} // input → its lengthened value, for every reader but the Gather
	renamed[s.tokens.Name] = e.around(&e.first, s.tokens.Name, fill(s.tokens, 0))
	if s.mask != nil {
		renamed[s.mask.Name] = e.around(&e.first, s.mask.Name, fill(s.mask, 1))
	}
	if s.tokenTypes != nil {
		renamed[s.tokenTypes.Name] = e.around(&e.first, s.tokenTypes.Name, fill(s.tokenTypes, 0))
	}
	if s.positions != nil {
		renamed[s.positions.Name] = e.positions(s.positions, n, bn)
	}

	// The prompt rows at the embedding's output.
	prompt, err := onnx.NewTensor(PromptParam, onnx.Float, []int64{n, d}, f32Bytes(p.Values))
	if err != nil {
		return nil, err
	}
	e.inits = append(e.inits, prompt)
	var embed []*onnx.Node
	rows := PromptParam
	if s.table.DataType != onnx.Float {
		rows = e.node(&embed, "Cast", "", []string{rows}, intAttr("to", int64(s.table.DataType)))
	}
	rows = e.node(&embed, "Reshape", "", []string{rows, e.constant("shape", onnx.Int64, []int64{3}, 1, n, d)})
	rows = e.node(&embed, "Expand", "", []string{rows, bnd})
	embOut := s.gather.Outputs[0]
	raw := e.name("embeddings")
	gather := *s.gather
	gather.Outputs = append([]string{raw}, gather.Outputs[1:]...)
	withPrompt := e.around(&embed, raw, rows)
	embed = append(embed, &onnx.Node{Name: e.name("identity"), OpType: "Identity", Inputs: []string{withPrompt}, Outputs: []string{embOut}})

	// The logits of the real positions.
	var tail []*onnx.Node
	logits := g.Outputs[0].Name
	rawLogits := ""
	if s.sliceLogits {
		rawLogits = e.name("logits")
		c1, cmax := e.ints("one", 1), e.ints("end", math.MaxInt64)
		var real string
		if p.At == PromptStart {
			real = e.node(&tail, "Slice", "", []string{rawLogits, e.ints("n", n), cmax, c1})
		} else {
			first := e.node(&tail, "Slice", "", []string{rawLogits, e.ints("zero", 0), c1, c1})
			rest := e.node(&tail, "Slice", "", []string{rawLogits, e.ints("n+1", n+1), cmax, c1})
			real = e.node(&tail, "Concat", "", []string{first, rest}, intAttr("axis", 1))
		}
		tail = append(tail, &onnx.Node{Name: e.name("identity"), OpType: "Identity", Inputs: []string{real}, Outputs: []string{logits}})
	}
	if e.err != nil {
		return nil, e.err
	}

	ng := *g
	ng.ValueInfo = nil
	ng.Initializers = append(slices.Clone(g.Initializers), e.inits...)
	ng.Nodes = slices.Clone(e.first)
	producedLogits := false
	for _, node := range g.Nodes {
		if node == s.gather {
			ng.Nodes = append(ng.Nodes, &gather)
			ng.Nodes = append(ng.Nodes, embed...)
			continue
		}
		c := *node
		c.Inputs = slices.Clone(node.Inputs)
		for i, in := range c.Inputs {
			if r, ok := renamed[in]; ok {
				c.Inputs[i] = r
			}
			if rawLogits != "" && in == logits {
				c.Inputs[i] = rawLogits
			}
		}
		if rawLogits != "" {
			c.Outputs = slices.Clone(node.Outputs)
			for i, out := range c.Outputs {
				if out == logits {
					c.Outputs[i], producedLogits = rawLogits, true
				}
			}
		}
		ng.Nodes = append(ng.Nodes, &c)
	}
	if rawLogits != "" && !producedLogits {
		return nil, fmt.Errorf("output %q is not computed by a node of the graph", logits)
	}
	ng.Nodes = append(ng.Nodes, tail...)
	for _, o := range g.Outputs[1:] {
		if _, ok := renamed[o.Name]; ok || o.Name == embOut {
			return nil, fmt.Errorf("output %q is an input or the token embedding, which the prompt lengthens", o.Name)
		}
	}
	nm := *e.m
	nm.Graph = &ng
	return &nm, nil
}

// positions lengthens the position ids p: after-bos p[:, :1], p[:, :1] +
// 1…n, p[:, 1:] + n; start 0…n−1, p + n.
func (e *promptEditor) positions(in *onnx.ValueInfo, n int64, bn string) string {
	dt := elemType(in)
	steps := make([]int64, n)
	for i := range steps {
		steps[i] = int64(i)
	}
	plusN := e.constant("n", dt, []int64{1}, n)
	shifted := func(v string) string { return e.node(&e.first, "Add", "", []string{v, plusN}) }
	if e.prompt.At == PromptStart {
		prompt := e.node(&e.first, "Expand", "", []string{e.constant("steps", dt, []int64{1, n}, steps...), bn})
		return e.node(&e.first, "Concat", "", []string{prompt, shifted(in.Name)}, intAttr("axis", 1))
	}
	for i := range steps {
		steps[i]++
	}
	c0, c1, cmax := e.ints("zero", 0), e.ints("one", 1), e.ints("end", math.MaxInt64)
	first := e.node(&e.first, "Slice", "", []string{in.Name, c0, c1, c1})
	rest := e.node(&e.first, "Slice", "", []string{in.Name, c1, cmax, c1})
	prompt := e.node(&e.first, "Add", "", []string{first, e.constant("steps", dt, []int64{1, n}, steps...)})
	return e.node(&e.first, "Concat", "", []string{first, prompt, shifted(rest)}, intAttr("axis", 1))
}

// elemType is an input's element type (int64 when it declares none).
func elemType(in *onnx.ValueInfo) onnx.DataType {
	if in.Type != nil && in.Type.ElemType != onnx.Undefined {
		return in.Type.ElemType
	}
	return onnx.Int64
}
