package ir

import (
	"errors"
	"fmt"
	"sort"

	"github.com/dstune/dstune/onnx"
)

// subgraph imports g, a graph attribute of the node being imported (an If
// branch, a Loop or Scan body, a SequenceMap body), with its inputs bound
// to in, and returns the values of its outputs. The subgraph sees the
// outer scope; its own inputs, initializers and node outputs shadow outer
// names while it is imported and are gone afterwards. suffix is appended
// to the names of the values it defines, so that importing one body once
// per loop iteration keeps value names unique.
func (im *importer) subgraph(what string, g *onnx.Graph, in []*Value, suffix string) ([]*Value, error) {
	if g == nil {
		return nil, fmt.Errorf("no %s", what)
	}
	if len(in) != len(g.Inputs) {
		return nil, fmt.Errorf("%s has %d inputs, want %d", what, len(g.Inputs), len(in))
	}
	im.subgraphNodes += 1 + len(g.Nodes) // an empty body still counts, so that nested loops end
	if im.subgraphNodes > maxSubgraphNodes {
		return nil, fmt.Errorf("%w: subgraphs would import more than %d nodes (loops are unrolled at import)", ErrNotSupported, maxSubgraphNodes)
	}
	saved := map[string]*Value{}
	var defined []string
	define := func(name string) {
		if name == "" {
			return
		}
		if old, ok := im.env[name]; ok {
			if _, done := saved[name]; !done {
				saved[name] = old
			}
			delete(im.env, name)
		}
		defined = append(defined, name)
	}
	origin, node, fresh, outerSuffix := im.origin, im.node, im.fresh, im.suffix
	restore := func() {
		for _, name := range defined {
			delete(im.env, name)
		}
		for name, v := range saved {
			im.env[name] = v
		}
		im.origin, im.node, im.fresh, im.suffix = origin, node, fresh, outerSuffix
	}
	defer restore()
	for i, vi := range g.Inputs {
		v := in[i]
		if v != nil && v.Kind != OptionalValue && vi.Type != nil && vi.Type.Kind == onnx.TypeOptional {
			// A loop-carried optional may come back from the body as
			// its value.
			v = im.newComposite(OptionalValue, []*Value{v})
		}
		if err := checkSubgraphInput(vi, v); err != nil {
			return nil, fmt.Errorf("%s input %d %q: %w", what, i, vi.Name, err)
		}
		define(vi.Name)
		im.env[vi.Name] = v
	}
	for _, it := range g.Initializers {
		t, err := TensorFromONNX(it)
		if err != nil {
			return nil, fmt.Errorf("%s: initializer %w", what, err)
		}
		define(it.Name)
		im.env[it.Name] = &Value{Name: it.Name + outerSuffix + suffix, Type: Type{t.dtype, t.shape}, Kind: ConstValue, Const: t}
	}
	for _, sn := range g.Nodes {
		for _, o := range sn.Outputs {
			define(o)
		}
	}
	im.suffix = outerSuffix + suffix
	if err := im.graphNodes(g); err != nil {
		if ne := (*nestingError)(nil); errors.As(err, &ne) {
			return nil, err
		}
		return nil, fmt.Errorf("in %s: %w", what, err)
	}
	outs := make([]*Value, len(g.Outputs))
	for i, o := range g.Outputs {
		v, ok := im.env[o.Name]
		if !ok {
			return nil, fmt.Errorf("%s output %d %q is not produced", what, i, o.Name)
		}
		outs[i] = v
	}
	return outs, nil
}

// checkSubgraphInput checks a value bound to a subgraph input against the
// type the subgraph declares (kind and element type; declared shapes of
// loop bodies are often partial, so dimensions are not compared).
func checkSubgraphInput(vi *onnx.ValueInfo, v *Value) error {
	if vi.Type == nil || v == nil {
		return nil
	}
	switch vi.Type.Kind {
	case onnx.TypeTensor:
		if v.IsComposite() {
			return fmt.Errorf("declared a tensor, given %s", compositeKindName(v))
		}
		if vi.Type.ElemType != onnx.Undefined {
			if dt, err := DTypeFromONNX(vi.Type.ElemType); err == nil && dt != v.DType {
				return fmt.Errorf("declared %s, given %s", dt, v.DType)
			}
		}
	case onnx.TypeSequence:
		if v.Kind != SequenceValue {
			return fmt.Errorf("declared a sequence, given %s", compositeKindName(v))
		}
	case onnx.TypeOptional:
		if v.Kind != OptionalValue {
			return fmt.Errorf("declared an optional, given %s", compositeKindName(v))
		}
	}
	return nil
}

// ValueInputs lists the graph inputs whose values (not just shapes) the
// import needs: string inputs, and those that flow into an operand
// deciding a shape or an attribute (Reshape's shape, Slice's starts, a
// reduction's axes, an If's condition, a Loop's trip count and
// condition, a sequence position, ...) other than through Shape or Size,
// in the main graph or in any subgraph (through outer-scope reads, If
// branches, loop-carried values). Bind them in Bindings.Values (or, for
// sequences and optionals, by value in Bindings.Composites).
func (m *Model) ValueInputs() []string {
	a := &valueAnalysis{opset: m.Opset, producers: map[string][]valueSource{}, need: map[string]bool{},
		model: m.ONNX, functions: map[*onnx.Function]map[string]bool{}}
	a.collect(m.ONNX.Graph, 0)
	a.roots(m.ONNX.Graph, 0)
	var out []string
	for _, in := range m.Inputs {
		if a.need[in.Name] || holdsStrings(&in) {
			out = append(out, in.Name)
		}
	}
	sort.Strings(out)
	return out
}

func holdsStrings(info *InputInfo) bool {
	for ; info != nil; info = info.Elem {
		if info.Kind == TensorDatum && info.DType == String {
			return true
		}
	}
	return false
}

// valueSource says where a name is defined: output out of node, or, when
// body is set, input in of body, a graph attribute of node.
type valueSource struct {
	node *onnx.Node
	out  int
	body *onnx.Graph
	in   int
}

// valueAnalysis follows the operands that must be known at import back
// to the graph inputs, across subgraphs.
type valueAnalysis struct {
	opset     int
	producers map[string][]valueSource
	need      map[string]bool

	// model holds the model-local functions; functions the formal inputs
	// each one needs known (shared by the analyses of function bodies).
	model     *onnx.Model
	functions map[*onnx.Function]map[string]bool
}

// functionNeeds returns the formal inputs of fn whose values its body
// needs at import (analysed once per function; a function reached again
// while it is analysed, as in a recursion, needs none).
func (a *valueAnalysis) functionNeeds(fn *onnx.Function, depth int) map[string]bool {
	if need, done := a.functions[fn]; done {
		return need
	}
	a.functions[fn] = nil
	sub := &valueAnalysis{opset: functionOpset(fn, a.opset), producers: map[string][]valueSource{}, need: map[string]bool{}, model: a.model, functions: a.functions}
	body := &onnx.Graph{Nodes: fn.Nodes}
	sub.collect(body, depth+1)
	sub.roots(body, depth+1)
	need := map[string]bool{}
	for _, name := range fn.Inputs {
		if sub.need[name] {
			need[name] = true
		}
	}
	a.functions[fn] = need
	return need
}

// maxAnalysisDepth bounds subgraph nesting for the analysis (the decoder
// already bounds it; this keeps the analysis safe on hand-built models).
const maxAnalysisDepth = 64

func (a *valueAnalysis) collect(g *onnx.Graph, depth int) {
	if g == nil || depth > maxAnalysisDepth {
		return
	}
	for _, n := range g.Nodes {
		for j, o := range n.Outputs {
			if o != "" {
				a.producers[o] = append(a.producers[o], valueSource{node: n, out: j})
			}
		}
		for _, at := range n.Attributes {
			if at.Type != onnx.AttrGraph || at.G == nil {
				continue
			}
			for k, vi := range at.G.Inputs {
				a.producers[vi.Name] = append(a.producers[vi.Name], valueSource{node: n, body: at.G, in: k})
			}
			a.collect(at.G, depth+1)
		}
	}
}

// roots marks the static operands of every node, and the condition a
// Loop body computes when the Loop has a condition.
func (a *valueAnalysis) roots(g *onnx.Graph, depth int) {
	if g == nil || depth > maxAnalysisDepth {
		return
	}
	for _, n := range g.Nodes {
		if a.model != nil {
			if fn := a.model.Function(n.Domain, n.OpType, ""); fn != nil {
				need := a.functionNeeds(fn, depth)
				for i, name := range fn.Inputs {
					if need[name] {
						a.markInput(n, i)
					}
				}
				continue
			}
		}
		for _, i := range nodeStaticOperands(n) {
			if i < len(n.Inputs) {
				a.mark(n.Inputs[i])
			}
		}
		if isDefaultDomain(n.Domain) && n.OpType == "Loop" && len(n.Inputs) > 1 && n.Inputs[1] != "" {
			if body := subgraphOf(n, "body"); body != nil && len(body.Outputs) > 0 {
				a.mark(body.Outputs[0].Name)
			}
		}
		for _, at := range n.Attributes {
			if at.Type == onnx.AttrGraph {
				a.roots(at.G, depth+1)
			}
		}
	}
}

func (a *valueAnalysis) mark(name string) {
	if name == "" || a.need[name] {
		return
	}
	a.need[name] = true
	for _, src := range a.producers[name] {
		if src.body != nil {
			a.markBodyInput(src)
		} else {
			a.markNodeOutput(src)
		}
	}
}

func (a *valueAnalysis) markOutput(g *onnx.Graph, i int) {
	if g != nil && i >= 0 && i < len(g.Outputs) {
		a.mark(g.Outputs[i].Name)
	}
}

// markNodeOutput marks what output src.out of src.node is computed from.
func (a *valueAnalysis) markNodeOutput(src valueSource) {
	n := src.node
	if isDefaultDomain(n.Domain) {
		switch n.OpType {
		case "Shape", "Size":
			return
		case "If":
			a.markInput(n, 0)
			a.markOutput(subgraphOf(n, "then_branch"), src.out)
			a.markOutput(subgraphOf(n, "else_branch"), src.out)
			return
		case "Loop":
			a.markInput(n, 0)
			a.markInput(n, 1)
			a.markOutput(subgraphOf(n, "body"), 1+src.out) // carried value or scan output
			return
		case "Scan":
			a.markOutput(subgraphOf(n, "body"), src.out)
			return
		case "SequenceMap":
			a.markOutput(subgraphOf(n, "body"), src.out)
			return
		}
	}
	for i := range n.Inputs {
		a.markInput(n, i)
	}
	for _, name := range outerReads(n) {
		a.mark(name)
	}
}

// markBodyInput marks what feeds input src.in of body src.body.
func (a *valueAnalysis) markBodyInput(src valueSource) {
	n, k := src.node, src.in
	if isDefaultDomain(n.Domain) {
		switch n.OpType {
		case "Loop": // inputs: iteration number, condition, carried values
			if k >= 1 {
				a.markInput(n, k)
				a.markOutput(src.body, k-1)
			}
			return
		case "Scan": // inputs: states, then one slice of each scan input
			offset := 0
			if a.opset < 9 {
				offset = 1 // sequence_lens comes first
			}
			a.markInput(n, offset+k)
			scans, _ := n.AttrInt("num_scan_inputs", 0)
			if states := len(n.Inputs) - offset - int(scans); k < states {
				a.markOutput(src.body, k) // the state's value after the previous step
			}
			return
		case "SequenceMap":
			a.markInput(n, k)
			return
		}
	}
	for i := range n.Inputs {
		a.markInput(n, i)
	}
}

func (a *valueAnalysis) markInput(n *onnx.Node, i int) {
	if i < len(n.Inputs) {
		a.mark(n.Inputs[i])
	}
}

// outerReads lists the outer-scope names n's subgraphs read.
func outerReads(n *onnx.Node) []string {
	deep := nodeInputsDeep(n)
	return deep[len(n.Inputs):]
}

func subgraphOf(n *onnx.Node, name string) *onnx.Graph {
	if at := n.Attr(name); at != nil && at.Type == onnx.AttrGraph {
		return at.G
	}
	return nil
}

func isDefaultDomain(d string) bool { return d == "" || d == "ai.onnx" }
