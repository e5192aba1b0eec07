package ir

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/dstune/dstune/onnx"
)

// subgraph imports g, a graph attribute of the node being imported (an If
// branch, a Loop or Scan body, a SequenceMap body), with its inputs bound
// to in, and returns the values of its outputs. The subgraph sees the
// outer scope; its own inputs, initializers and node outputs shadow outer
// names while it is imported and are gone afterwards. suffix is appended
// to the names of the values it defines, so that importing one body once
// per loop iteration keeps value names unique.
func (im *importer) subgraph(kind subgraphKind, what string, g *onnx.Graph, in []*Value, suffix string) ([]*Value, error) {
	if g == nil {
		return nil, fmt.Errorf("no %s", what)
	}
	if len(in) != len(g.Inputs) {
		return nil, fmt.Errorf("%s has %d inputs, want %d", what, len(g.Inputs), len(in))
	}
	if err := im.countSubgraph(kind, g); err != nil {
		return nil, err
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

// subgraphKind says why a subgraph is imported, for the message when an
// import takes too many.
type subgraphKind int

const (
	branchSubgraph   subgraphKind = iota // an If branch, an attention score modifier
	loopSubgraph                         // one iteration of a Loop, Scan or SequenceMap body
	functionSubgraph                     // the body of a call of a model-local function
	numSubgraphKinds
)

// subgraphCount is how many subgraphs of one kind an import took, and
// the nodes in them.
type subgraphCount struct{ subgraphs, nodes int }

// countSubgraph counts an import of g against maxSubgraphNodes, failing
// with what the nodes came from once there are too many.
func (im *importer) countSubgraph(kind subgraphKind, g *onnx.Graph) error {
	im.subgraphNodes += 1 + len(g.Nodes) // an empty body still counts, so that nested loops end
	im.subgraphCounts[kind].subgraphs++
	im.subgraphCounts[kind].nodes += 1 + len(g.Nodes)
	if im.subgraphNodes <= maxSubgraphNodes {
		return nil
	}
	var parts []string
	for k, c := range im.subgraphCounts {
		if c.subgraphs == 0 {
			continue
		}
		switch subgraphKind(k) {
		case functionSubgraph:
			parts = append(parts, fmt.Sprintf("%d in %d calls of model-local functions (each call is inlined at import, so calls nested in calls multiply)", c.nodes, c.subgraphs))
		case loopSubgraph:
			parts = append(parts, fmt.Sprintf("%d in %d loop iterations (loops are unrolled at import)", c.nodes, c.subgraphs))
		default:
			parts = append(parts, fmt.Sprintf("%d in %d If branches and other subgraphs", c.nodes, c.subgraphs))
		}
	}
	err := fmt.Errorf("%w: subgraphs would import more than %d nodes: %s", ErrNotSupported, maxSubgraphNodes, strings.Join(parts, ", "))
	if im.functionDepth > 0 {
		// Said once, at the graph's node the calls start from.
		return &nestingError{msg: err.Error(), wrapped: ErrNotSupported}
	}
	return err
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
	need := importTimeNames(m.ONNX, m.Opset)
	var out []string
	for _, in := range m.Inputs {
		if need[in.Name] || holdsStrings(&in) {
			out = append(out, in.Name)
		}
	}
	sort.Strings(out)
	return out
}

// importTimeNames returns the names of the main graph of m (graph inputs,
// initializers, node outputs) whose values the import needs, as
// ValueInputs describes: a name a subgraph defines anew (shadowing the
// main graph's) counts only where it means the main graph's value.
func importTimeNames(m *onnx.Model, opset int) map[string]bool {
	a := newValueAnalysis(m, opset, m.Graph, newFunctionNeeds())
	a.collect(m.Graph, 0)
	a.roots(m.Graph, 0)
	return a.rootNeed
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
	// need holds the names marked, with the graph defining each (a
	// subgraph may define a name its enclosing graph defines too);
	// rootNeed the names of root's values marked.
	need     map[scopedName]bool
	rootNeed map[string]bool

	// root is the graph analysed; scopeOf the graph each node of it and
	// its subgraphs is in, parentOf the graph holding each subgraph, and
	// defines the names each subgraph defines (filled as asked).
	root     *onnx.Graph
	scopeOf  map[*onnx.Node]*onnx.Graph
	parentOf map[*onnx.Graph]*onnx.Graph
	defines  map[*onnx.Graph]map[string]bool

	// model holds the model-local functions; functions what is known of
	// them (shared by the analyses of function bodies).
	model     *onnx.Model
	functions *functionNeeds
}

// functionNeeds holds, for the model-local functions analysed, the formal
// inputs whose values each function's body needs at import (operands),
// and those each of its outputs is computed from (outputs), other than
// through Shape or Size.
type functionNeeds struct {
	operands map[*onnx.Function]map[string]bool
	outputs  map[functionOutput]map[string]bool
}

// functionOutput is output out of function fn.
type functionOutput struct {
	fn  *onnx.Function
	out int
}

func newFunctionNeeds() *functionNeeds {
	return &functionNeeds{operands: map[*onnx.Function]map[string]bool{}, outputs: map[functionOutput]map[string]bool{}}
}

// scopedName is a name and the graph defining it.
type scopedName struct {
	g    *onnx.Graph
	name string
}

func newValueAnalysis(model *onnx.Model, opset int, root *onnx.Graph, functions *functionNeeds) *valueAnalysis {
	return &valueAnalysis{opset: opset, producers: map[string][]valueSource{}, need: map[scopedName]bool{}, rootNeed: map[string]bool{},
		root: root, scopeOf: map[*onnx.Node]*onnx.Graph{}, parentOf: map[*onnx.Graph]*onnx.Graph{}, defines: map[*onnx.Graph]map[string]bool{},
		model: model, functions: functions}
}

// operandNeeds returns the formal inputs of fn whose values its body
// needs at import (analysed once per function; a function reached again
// while it is analysed, as in a recursion, needs none).
func (a *valueAnalysis) operandNeeds(fn *onnx.Function, depth int) map[string]bool {
	if need, done := a.functions.operands[fn]; done {
		return need
	}
	a.functions.operands[fn] = nil
	need := a.analyseBody(fn, depth, func(sub *valueAnalysis, body *onnx.Graph) { sub.roots(body, depth+1) })
	a.functions.operands[fn] = need
	return need
}

// outputNeeds returns the formal inputs of fn that output out of a call
// of it is computed from, other than through Shape or Size: what must be
// known for the output to be (analysed once per output; one reached again
// while it is analysed needs none).
func (a *valueAnalysis) outputNeeds(fn *onnx.Function, out int) map[string]bool {
	key := functionOutput{fn, out}
	if need, done := a.functions.outputs[key]; done {
		return need
	}
	a.functions.outputs[key] = nil
	need := a.analyseBody(fn, 0, func(sub *valueAnalysis, body *onnx.Graph) {
		if out >= 0 && out < len(fn.Outputs) {
			sub.mark(body, fn.Outputs[out])
		}
	})
	a.functions.outputs[key] = need
	return need
}

// analyseBody marks in fn's body what start marks and returns the formal
// inputs marked.
func (a *valueAnalysis) analyseBody(fn *onnx.Function, depth int, start func(sub *valueAnalysis, body *onnx.Graph)) map[string]bool {
	body := &onnx.Graph{Nodes: fn.Nodes}
	sub := newValueAnalysis(a.model, functionOpset(fn, a.opset), body, a.functions)
	sub.collect(body, depth+1)
	start(sub, body)
	need := map[string]bool{}
	for _, name := range fn.Inputs {
		if sub.rootNeed[name] {
			need[name] = true
		}
	}
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
		a.scopeOf[n] = g
		for j, o := range n.Outputs {
			if o != "" {
				a.producers[o] = append(a.producers[o], valueSource{node: n, out: j})
			}
		}
		for _, at := range n.Attributes {
			if at.Type != onnx.AttrGraph || at.G == nil {
				continue
			}
			a.parentOf[at.G] = g
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
		if fn := a.localFunction(n); fn != nil {
			need := a.operandNeeds(fn, depth)
			for i, name := range fn.Inputs {
				if need[name] {
					a.markInput(n, i)
				}
			}
			continue
		}
		for _, i := range nodeStaticOperands(n) {
			a.markInput(n, i)
		}
		if isDefaultDomain(n.Domain) && n.OpType == "Loop" && len(n.Inputs) > 1 && n.Inputs[1] != "" {
			a.markOutput(subgraphOf(n, "body"), 0)
		}
		for _, at := range n.Attributes {
			if at.Type == onnx.AttrGraph {
				a.roots(at.G, depth+1)
			}
		}
	}
}

// mark marks name as read in graph scope, and what computes it: the
// producers in the graph that defines the name scope sees.
func (a *valueAnalysis) mark(scope *onnx.Graph, name string) {
	if name == "" {
		return
	}
	def := a.definingGraph(scope, name)
	key := scopedName{def, name}
	if a.need[key] {
		return
	}
	a.need[key] = true
	if def == a.root {
		a.rootNeed[name] = true
	}
	for _, src := range a.producers[name] {
		switch {
		case src.body != nil && src.body == def:
			a.markBodyInput(src)
		case src.body == nil && a.scopeOf[src.node] == def:
			a.markNodeOutput(src)
		}
	}
}

// definingGraph returns the graph whose name, read in graph scope, name
// is: the innermost from scope out that defines it, else root. A scope the
// analysis did not collect (nested too deep) reads root's, so that
// nothing root holds is missed.
func (a *valueAnalysis) definingGraph(scope *onnx.Graph, name string) *onnx.Graph {
	for g := scope; g != nil && g != a.root; g = a.parentOf[g] {
		if a.definedIn(g)[name] {
			return g
		}
	}
	return a.root
}

// definedIn returns the names g defines (graphDefines), once per graph.
func (a *valueAnalysis) definedIn(g *onnx.Graph) map[string]bool {
	d, ok := a.defines[g]
	if !ok {
		d = graphDefines(g)
		a.defines[g] = d
	}
	return d
}

func (a *valueAnalysis) markOutput(g *onnx.Graph, i int) {
	if g != nil && i >= 0 && i < len(g.Outputs) {
		a.mark(g, g.Outputs[i].Name)
	}
}

// markNodeOutput marks what output src.out of src.node is computed from.
func (a *valueAnalysis) markNodeOutput(src valueSource) {
	n := src.node
	if fn := a.localFunction(n); fn != nil {
		need := a.outputNeeds(fn, src.out)
		for i, name := range fn.Inputs {
			if need[name] {
				a.markInput(n, i)
			}
		}
		return
	}
	if isDefaultDomain(n.Domain) {
		switch n.OpType {
		case "Shape", "Size", "EyeLike":
			return // the input's shape only
		case "CastLike":
			a.markInput(n, 0) // the second input gives the dtype only
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
		a.mark(a.scopeOf[n], name)
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

// localFunction returns the model-local function n calls, or nil.
func (a *valueAnalysis) localFunction(n *onnx.Node) *onnx.Function {
	if a.model == nil || len(a.model.Functions) == 0 {
		return nil
	}
	return a.model.Function(n.Domain, n.OpType, "")
}

func (a *valueAnalysis) markInput(n *onnx.Node, i int) {
	if i >= 0 && i < len(n.Inputs) {
		a.mark(a.scopeOf[n], n.Inputs[i])
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
