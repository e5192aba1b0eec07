package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// Model-local functions (FunctionProto) are what exporters write when they
// keep a module as a unit (torch.onnx's export_modules_as_functions, for
// one): a node whose domain and op type name a function of the model is a
// call of it. A call is inlined at import: the function's nodes are
// imported in a scope of their own (they see the call's inputs under the
// function's formal names, nothing of the caller), their attribute
// references bound to the call's attributes or the function's defaults,
// under the function's own opset. Everything after import (gradients,
// kernels, DST's module kinds) sees the function's operators.

// maxFunctionDepth bounds how deeply function calls nest (a function that
// calls itself, directly or not, is refused when it reaches it).
const maxFunctionDepth = 64

// localFunction returns the model-local function n calls, or nil.
func (im *importer) localFunction(n *onnx.Node) *onnx.Function {
	if im.model.ONNX == nil || len(im.model.ONNX.Functions) == 0 {
		return nil
	}
	return im.model.ONNX.Function(n.Domain, n.OpType, "")
}

// nestingError is the error of function calls nested too deep, or of
// nested calls importing too many nodes. It passes the calls it nests in
// unchanged (the graph's own node alone adds where it is), not wrapped
// once per level: 64 copies of "in function f: node 0 …" said nothing
// more. It wraps wrapped (ErrNotSupported) when set.
type nestingError struct {
	msg     string
	wrapped error
}

func (e *nestingError) Error() string { return e.msg }
func (e *nestingError) Unwrap() error { return e.wrapped }

// callFunction imports the body of fn for the call n with inputs in and
// returns the values of fn's outputs.
func (im *importer) callFunction(fn *onnx.Function, n *onnx.Node, in []*Value) ([]*Value, error) {
	what := "function " + functionName(fn)
	if im.functionDepth >= maxFunctionDepth {
		return nil, &nestingError{msg: fmt.Sprintf("%s: function calls nest more than %d deep (a function that calls itself?)", what, maxFunctionDepth)}
	}
	if len(in) > len(fn.Inputs) {
		return nil, fmt.Errorf("%s takes %d inputs, the call gives %d", what, len(fn.Inputs), len(in))
	}
	if len(n.Outputs) > len(fn.Outputs) {
		return nil, fmt.Errorf("%s has %d outputs, the call names %d", what, len(fn.Outputs), len(n.Outputs))
	}
	args := make([]*Value, len(fn.Inputs))
	copy(args, in)
	absent := map[string]bool{}
	for i, name := range fn.Inputs {
		if args[i] == nil {
			absent[name] = true
		}
	}
	nodes, err := bindFunctionBody(fn, n, absent)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	body := &onnx.Graph{Name: fn.Name, Nodes: nodes}
	for _, name := range fn.Inputs {
		body.Inputs = append(body.Inputs, &onnx.ValueInfo{Name: name})
	}
	for _, name := range fn.Outputs {
		body.Outputs = append(body.Outputs, &onnx.ValueInfo{Name: name})
	}

	env, opset := im.env, im.opset
	im.env = map[string]*Value{} // a function sees its inputs, nothing of the caller
	im.opset = functionOpset(fn, opset)
	im.functionDepth++
	im.functionCalls++
	defer func() {
		im.env, im.opset = env, opset
		im.functionDepth--
	}()
	return im.subgraph(functionSubgraph, what, body, args, fmt.Sprintf("@%s#%d", fn.Name, im.functionCalls))
}

// functionOpset is the default-domain opset fn's nodes are written for:
// the one it imports, else the caller's.
func functionOpset(fn *onnx.Function, caller int) int {
	for _, op := range fn.OpsetImports {
		if isDefaultDomain(op.Domain) {
			return int(op.Version)
		}
	}
	return caller
}

// functionName is fn's name as errors give it: domain.name[:overload].
func functionName(fn *onnx.Function) string {
	name := fn.Name
	if fn.Domain != "" {
		name = fn.Domain + "." + name
	}
	if fn.Overload != "" {
		name += ":" + fn.Overload
	}
	return name
}

// bindFunctionBody returns copies of fn's nodes for the call n: attribute
// references take the call's attribute of the referenced name, else fn's
// default, else the attribute is left out; inputs naming an absent
// optional input of fn become absent too. Subgraphs of the nodes are
// bound alike.
func bindFunctionBody(fn *onnx.Function, call *onnx.Node, absent map[string]bool) ([]*onnx.Node, error) {
	declared := map[string]bool{}
	for _, a := range fn.Attributes {
		declared[a] = true
	}
	for _, a := range fn.AttributeDefaults {
		declared[a.Name] = true
	}
	given := map[string]*onnx.Attribute{}
	for _, a := range call.Attributes {
		if !declared[a.Name] {
			return nil, fmt.Errorf("the call sets attribute %q, which the function does not declare", a.Name)
		}
		given[a.Name] = a
	}
	for _, a := range fn.AttributeDefaults {
		if given[a.Name] == nil {
			given[a.Name] = a
		}
	}
	b := &functionBinder{given: given, declared: declared, absent: absent}
	return b.nodes(fn.Nodes, 0)
}

type functionBinder struct {
	given    map[string]*onnx.Attribute
	declared map[string]bool
	absent   map[string]bool
}

func (b *functionBinder) nodes(nodes []*onnx.Node, depth int) ([]*onnx.Node, error) {
	if depth > maxAnalysisDepth {
		return nil, fmt.Errorf("subgraphs nest more than %d deep", maxAnalysisDepth)
	}
	out := make([]*onnx.Node, len(nodes))
	for i, n := range nodes {
		c := *n
		c.Inputs = append([]string(nil), n.Inputs...)
		for j, name := range c.Inputs {
			if b.absent[name] {
				c.Inputs[j] = ""
			}
		}
		c.Attributes = nil
		for _, a := range n.Attributes {
			bound, err := b.attribute(a, depth)
			if err != nil {
				return nil, fmt.Errorf("node %d %q (%s): %w", i, n.Name, n.OpType, err)
			}
			if bound != nil {
				c.Attributes = append(c.Attributes, bound)
			}
		}
		out[i] = &c
	}
	return out, nil
}

func (b *functionBinder) attribute(a *onnx.Attribute, depth int) (*onnx.Attribute, error) {
	if a.RefAttrName != "" {
		if !b.declared[a.RefAttrName] {
			return nil, fmt.Errorf("attribute %q refers to %q, which the function does not declare", a.Name, a.RefAttrName)
		}
		v := b.given[a.RefAttrName]
		if v == nil {
			return nil, nil // neither set by the call nor defaulted: absent
		}
		c := *v
		c.Name, c.RefAttrName = a.Name, ""
		return &c, nil
	}
	if a.Type != onnx.AttrGraph && a.Type != onnx.AttrGraphs {
		return a, nil
	}
	c := *a
	var err error
	if a.G != nil {
		if c.G, err = b.graph(a.G, depth); err != nil {
			return nil, err
		}
	}
	c.Graphs = make([]*onnx.Graph, len(a.Graphs))
	for i, g := range a.Graphs {
		if c.Graphs[i], err = b.graph(g, depth); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

func (b *functionBinder) graph(g *onnx.Graph, depth int) (*onnx.Graph, error) {
	c := *g
	var err error
	if c.Nodes, err = b.nodes(g.Nodes, depth+1); err != nil {
		return nil, fmt.Errorf("in graph %q: %w", g.Name, err)
	}
	return &c, nil
}
