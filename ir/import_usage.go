package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// NodeInput names one input of an ONNX node.
type NodeInput struct {
	Node   string // the node's name ("" when it has none)
	Index  int    // the node's position in its graph or function body
	OpType string
	Input  int
	// Scope says where the node is when it is not a node of the main
	// graph: the subgraphs and function calls leading to it, outermost
	// first, joined by " > " (`node 3 "cond" (If) then_branch`,
	// `function my.Block called by node 2 "b1"`). It is "" in the main
	// graph.
	Scope string
}

// ParamUsage is how the ONNX graph reads one parameter, before any
// specialization: the names Identity nodes give it (followed transitively)
// and every other node input reading it or an alias. More than one use
// means the weight is tied.
type ParamUsage struct {
	Aliases []string
	Uses    []NodeInput
}

// maxListedUses bounds the uses Usage lists for one parameter: calls of
// functions that call a function twice each multiply the uses, 2⁴⁰ of
// them in forty levels.
const maxListedUses = 1 << 12

// Usage returns the usage of every parameter, by name. Uses are found
// wherever the parameter is seen: in the main graph, in subgraphs (If
// branches, Loop and Scan bodies, recursively) that read it from the
// outer scope, unless they define a value of the same name, and in the
// bodies of the model-local functions it is passed to (a call counts as
// the uses the body makes of that input, as import inlines it). At most
// maxListedUses uses are listed per parameter.
func (m *Model) Usage() map[string]*ParamUsage {
	out := map[string]*ParamUsage{}
	root := &useScope{owner: map[string]string{}}
	for _, p := range m.Params {
		root.owner[p.Name] = p.Name
		out[p.Name] = &ParamUsage{}
	}
	w := &usageWalker{model: m.ONNX, functions: map[*onnx.Function][][]NodeInput{}}
	w.record = func(p string, use NodeInput) {
		if u := out[p]; len(u.Uses) < maxListedUses {
			u.Uses = append(u.Uses, use)
		}
	}
	w.alias = func(p, name string) {
		if u := out[p]; !hasString(u.Aliases, name) {
			u.Aliases = append(u.Aliases, name)
		}
	}
	w.graph(m.ONNX.Graph.Nodes, root, "", 0)
	return out
}

// useScope is what one graph or function body sees of the tracked
// tensors: owner maps the names it gives them (the tensor's own, an
// Identity's output) to the tensor; defined holds every name it defines,
// which hide the enclosing scope's.
type useScope struct {
	parent  *useScope
	owner   map[string]string
	defined map[string]bool
}

// lookup returns the tracked tensor name means in s, if any.
func (s *useScope) lookup(name string) (string, bool) {
	for ; s != nil; s = s.parent {
		if p, ok := s.owner[name]; ok {
			return p, true
		}
		if s.defined[name] {
			return "", false
		}
	}
	return "", false
}

// usageWalker finds the node inputs that read tracked tensors.
type usageWalker struct {
	model *onnx.Model
	// functions holds the uses each function's body makes of each of its
	// formal inputs (nil while the function is walked: a recursive call
	// adds none).
	functions map[*onnx.Function][][]NodeInput
	// record and alias receive each use and each Identity alias of a
	// tracked tensor (alias nil inside function bodies, whose names mean
	// nothing outside).
	record func(tracked string, use NodeInput)
	alias  func(tracked, name string)
}

// graph walks nodes (of a graph, subgraph or function body) in scope,
// which where describes for the uses it records.
func (w *usageWalker) graph(nodes []*onnx.Node, scope *useScope, where string, depth int) {
	if depth > maxAnalysisDepth {
		return
	}
	for changed := true; changed; {
		changed = false
		for _, n := range nodes {
			if n.OpType != "Identity" || len(n.Inputs) != 1 || len(n.Outputs) != 1 || n.Outputs[0] == "" {
				continue
			}
			p, ok := scope.lookup(n.Inputs[0])
			if _, done := scope.owner[n.Outputs[0]]; ok && !done {
				scope.owner[n.Outputs[0]] = p
				if w.alias != nil {
					w.alias(p, n.Outputs[0])
				}
				changed = true
			}
		}
	}
	for i, n := range nodes {
		if n.OpType != "Identity" {
			w.node(i, n, scope, where, depth)
		}
		for _, at := range n.Attributes {
			graphs := at.Graphs
			if at.Type == onnx.AttrGraph {
				graphs = []*onnx.Graph{at.G}
			} else if at.Type != onnx.AttrGraphs {
				continue
			}
			for _, g := range graphs {
				if g == nil {
					continue
				}
				sub := &useScope{parent: scope, owner: map[string]string{}, defined: graphDefines(g)}
				w.graph(g.Nodes, sub, joinScope(where, fmt.Sprintf("node %d %q (%s) %s", i, n.Name, n.OpType, at.Name)), depth+1)
			}
		}
	}
}

// node records the uses node n (number i of its graph) makes of tracked
// tensors: its inputs, or, for a call of a model-local function, the
// uses the function's body makes of them.
func (w *usageWalker) node(i int, n *onnx.Node, scope *useScope, where string, depth int) {
	var fn *onnx.Function
	if w.model != nil && len(w.model.Functions) > 0 {
		fn = w.model.Function(n.Domain, n.OpType, "")
	}
	for j, in := range n.Inputs {
		if in == "" {
			continue
		}
		p, ok := scope.lookup(in)
		if !ok {
			continue
		}
		if fn == nil {
			w.record(p, NodeInput{Node: n.Name, Index: i, OpType: n.OpType, Input: j, Scope: where})
			continue
		}
		uses := w.functionUses(fn, depth)
		if j >= len(uses) {
			continue // an input the function does not declare: import refuses the call
		}
		call := joinScope(where, fmt.Sprintf("function %s called by node %d %q", functionName(fn), i, n.Name))
		for _, u := range uses[j] {
			u.Scope = joinScope(call, u.Scope)
			w.record(p, u)
		}
	}
}

// functionUses returns the uses fn's body makes of each of its formal
// inputs, with scopes relative to the body (computed once per function;
// at most maxListedUses each).
func (w *usageWalker) functionUses(fn *onnx.Function, depth int) [][]NodeInput {
	if uses, done := w.functions[fn]; done || depth > maxFunctionDepth {
		return uses
	}
	w.functions[fn] = nil
	scope := &useScope{owner: map[string]string{}}
	for _, name := range fn.Inputs {
		scope.owner[name] = name
	}
	uses := make([][]NodeInput, len(fn.Inputs))
	body := &usageWalker{model: w.model, functions: w.functions, record: func(formal string, use NodeInput) {
		for k, name := range fn.Inputs {
			if name == formal && len(uses[k]) < maxListedUses {
				uses[k] = append(uses[k], use)
			}
		}
	}}
	body.graph(fn.Nodes, scope, "", depth+1)
	w.functions[fn] = uses
	return uses
}

// graphDefines returns the names g defines: its inputs, initializers and
// node outputs.
func graphDefines(g *onnx.Graph) map[string]bool {
	d := map[string]bool{}
	for _, vi := range g.Inputs {
		d[vi.Name] = true
	}
	for _, t := range g.Initializers {
		d[t.Name] = true
	}
	for _, n := range g.Nodes {
		for _, o := range n.Outputs {
			if o != "" {
				d[o] = true
			}
		}
	}
	return d
}

func joinScope(outer, inner string) string {
	switch {
	case outer == "":
		return inner
	case inner == "":
		return outer
	}
	return outer + " > " + inner
}
