package ir

import (
	"fmt"
	"sort"
	"strings"
)

// ValueKind says where a value comes from.
type ValueKind uint8

const (
	// NodeOutput values are computed by a node of the graph.
	NodeOutput ValueKind = iota
	// GraphInput values are fed by the caller on every run.
	GraphInput
	// ParamValue values are parameters (float initializers): bound by
	// name, updatable between runs, never folded.
	ParamValue
	// ConstValue values are known at import (folded subgraphs, Constant
	// nodes, integer initializers).
	ConstValue
	// SequenceValue and OptionalValue values exist only during import:
	// an ONNX sequence is the list of its element values (Elems), an
	// optional holds none or one (Elems of length 0 or 1). Their
	// structure is known at import; no node reads or produces them, so
	// backends never see them. Their Type is the zero Type.
	SequenceValue
	OptionalValue
)

// Value is a tensor-valued edge of the graph with a static type, or,
// during import, a sequence or optional of such values.
type Value struct {
	Name string // the ONNX name (unique within a graph)
	Type
	Kind     ValueKind
	Producer *Node    // NodeOutput
	Const    *Tensor  // ConstValue
	Param    *Param   // ParamValue
	Elems    []*Value // SequenceValue, OptionalValue
}

// IsComposite reports whether v is a sequence or optional (an import-time
// value) rather than a tensor.
func (v *Value) IsComposite() bool { return v.Kind == SequenceValue || v.Kind == OptionalValue }

func (v *Value) String() string {
	switch v.Kind {
	case SequenceValue:
		return fmt.Sprintf("%q sequence of %d", v.Name, len(v.Elems))
	case OptionalValue:
		if len(v.Elems) == 0 {
			return fmt.Sprintf("%q optional (none)", v.Name)
		}
		return fmt.Sprintf("%q optional of %v", v.Name, v.Elems[0])
	}
	return fmt.Sprintf("%q %v", v.Name, v.Type)
}

// Node is one op applied to values. An absent optional input or an
// output nobody needs is a nil entry.
type Node struct {
	Name    string // the ONNX node's name ("" when it had none)
	Op      Op
	Inputs  []*Value
	Outputs []*Value
	// Origin describes the ONNX node the IR node came from (index, name and
	// op type), for error messages; nodes that import inserts (reshapes
	// around an old-style Softmax, say) share their source's origin.
	Origin string
}

func (n *Node) String() string {
	if strings.HasSuffix(n.Origin, "("+n.Op.Name()+")") {
		return n.Origin
	}
	return fmt.Sprintf("%s as %s", n.Origin, n.Op.Name())
}

// Param is a trainable parameter: a float initializer of the model,
// identified by its ONNX name everywhere (silos, deltas, checkpoints).
// A Model's Params carry only Name and Tensor, shared by every Graph
// specialized from it; Aliases, Uses and Value describe the parameter
// within one Graph.
type Param struct {
	Name   string
	Tensor *Tensor // the values; backends read it in place
	// Aliases are other ONNX value names for the same tensor (outputs of
	// Identity nodes applied to the initializer, as exporters write for
	// tied weights). They resolve to the parameter's one Value.
	Aliases []string
	// Uses lists every node input reading the parameter (directly or
	// through an alias); more than one use means tied weights, whose
	// gradients must accumulate into the one parameter.
	Uses []Use
	// Value is the parameter's value in the graph.
	Value *Value
}

// Use is one node input that reads a value.
type Use struct {
	Node  *Node
	Input int
}

// Tied reports whether the parameter feeds more than one node input.
func (p *Param) Tied() bool { return len(p.Uses) > 1 }

// Output is a graph output: the name the model gives it and the value it
// is (several outputs may name one value, and an output may be an input,
// parameter or constant).
type Output struct {
	Name  string
	Value *Value
}

// Graph is a model specialized to concrete input shapes: every value has a
// static type, shape computations are folded to constants, and nodes are in
// topological order.
type Graph struct {
	Name string
	// Inputs are the tensors fed on every run: the model's tensor inputs
	// bound by shape, and the elements of its sequence and optional
	// inputs bound by type (named ElementName(input, path...)).
	Inputs []*Value
	// Outputs are the tensors a run returns (what backends compute).
	// The model's outputs are Results; a tensor output is one entry of
	// Outputs under its own name, the elements of a sequence or optional
	// output are entries named ElementName(output, path...).
	Outputs []Output
	// Results are the model's outputs in order, as Assemble rebuilds
	// them from a run's Outputs (see Result). Specialize sets them;
	// graphs built otherwise (Builder, Grad) have only Outputs.
	Results []*Result
	Nodes   []*Node
	// Params are the model's parameters in file order, including unused
	// ones (their Uses are empty).
	Params []*Param
	// Opset is the default-domain opset the model was written for.
	Opset int
}

// Param returns the parameter with the given ONNX name, or nil.
func (g *Graph) Param(name string) *Param {
	for _, p := range g.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Input returns the graph input with the given name, or nil.
func (g *Graph) Input(name string) *Value {
	for _, v := range g.Inputs {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// Validate checks the graph's invariants: topological order, every node's
// inputs defined before use, types matching each op's inference, and
// parameter uses matching the nodes. Importers and graph transforms call
// it; backends may rely on it.
func (g *Graph) Validate() error {
	defined := map[*Value]bool{}
	for _, v := range g.Inputs {
		if v.Kind != GraphInput {
			return fmt.Errorf("ir: input %s has kind %d", v, v.Kind)
		}
		defined[v] = true
	}
	uses := map[*Param]int{}
	for i, n := range g.Nodes {
		in := make([]Type, len(n.Inputs))
		for j, v := range n.Inputs {
			if v == nil {
				continue
			}
			switch v.Kind {
			case SequenceValue, OptionalValue:
				return fmt.Errorf("ir: node %d %s: input %s is a sequence or optional, which only import may hold", i, n, v)
			case ConstValue:
				if v.Const == nil {
					return fmt.Errorf("ir: node %d %s: constant input %s has no tensor", i, n, v)
				}
			case ParamValue:
				if v.Param == nil || v.Param.Value != v {
					return fmt.Errorf("ir: node %d %s: parameter input %s is not linked to its Param", i, n, v)
				}
				uses[v.Param]++
			default:
				if !defined[v] {
					return fmt.Errorf("ir: node %d %s: input %s is used before it is defined", i, n, v)
				}
			}
			in[j] = v.Type
		}
		types, err := n.Op.Infer(in)
		if err != nil {
			return fmt.Errorf("ir: node %d %s: %w", i, n, err)
		}
		if len(n.Outputs) > len(types) {
			return fmt.Errorf("ir: node %d %s has %d outputs, the op has %d", i, n, len(n.Outputs), len(types))
		}
		for j, v := range n.Outputs {
			if v == nil {
				continue
			}
			if v.Kind != NodeOutput || v.Producer != n {
				return fmt.Errorf("ir: node %d %s: output %s is not produced by it", i, n, v)
			}
			if v.DType != types[j].DType || !v.Shape.Equal(types[j].Shape) {
				return fmt.Errorf("ir: node %d %s: output %s, inferred %v", i, n, v, types[j])
			}
			if defined[v] {
				return fmt.Errorf("ir: node %d %s: output %s defined twice", i, n, v)
			}
			defined[v] = true
		}
	}
	for _, p := range g.Params {
		if uses[p] != len(p.Uses) {
			return fmt.Errorf("ir: parameter %q has %d recorded uses, the nodes have %d", p.Name, len(p.Uses), uses[p])
		}
	}
	for _, o := range g.Outputs {
		v := o.Value
		if v.Kind == NodeOutput && !defined[v] {
			return fmt.Errorf("ir: output %q is never computed", o.Name)
		}
		if v.IsComposite() || v.DType == String {
			return fmt.Errorf("ir: output %q is %v; backends compute only numeric tensors", o.Name, v)
		}
	}
	return nil
}

// relinkUses recomputes every parameter's Uses from the nodes.
func (g *Graph) relinkUses() {
	for _, p := range g.Params {
		p.Uses = nil
	}
	for _, n := range g.Nodes {
		for j, v := range n.Inputs {
			if v != nil && v.Kind == ParamValue {
				v.Param.Uses = append(v.Param.Uses, Use{n, j})
			}
		}
	}
}

// pruneDead removes nodes none of whose outputs reach a graph output, and
// drops outputs nobody reads (nil entries).
func (g *Graph) pruneDead() {
	live := map[*Value]bool{}
	for _, o := range g.Outputs {
		live[o.Value] = true
	}
	keep := make([]bool, len(g.Nodes))
	for i := len(g.Nodes) - 1; i >= 0; i-- {
		n := g.Nodes[i]
		for _, v := range n.Outputs {
			if v != nil && live[v] {
				keep[i] = true
			}
		}
		if keep[i] {
			for _, v := range n.Inputs {
				if v != nil {
					live[v] = true
				}
			}
		}
	}
	nodes := g.Nodes[:0]
	for i, n := range g.Nodes {
		if !keep[i] {
			continue
		}
		for j, v := range n.Outputs {
			if v != nil && !live[v] {
				n.Outputs[j] = nil
			}
		}
		nodes = append(nodes, n)
	}
	g.Nodes = nodes
}

// OpCounts counts the graph's nodes by op name.
func (g *Graph) OpCounts() map[string]int {
	m := map[string]int{}
	for _, n := range g.Nodes {
		m[n.Op.Name()]++
	}
	return m
}

// String lists the graph, one node a line (for debugging and tests).
func (g *Graph) String() string {
	var b strings.Builder
	for _, v := range g.Inputs {
		fmt.Fprintf(&b, "input %s\n", v)
	}
	for _, p := range g.Params {
		fmt.Fprintf(&b, "param %s uses %d aliases %v\n", p.Value, len(p.Uses), p.Aliases)
	}
	for _, n := range g.Nodes {
		var ins, outs []string
		for _, v := range n.Inputs {
			if v == nil {
				ins = append(ins, "-")
			} else {
				ins = append(ins, v.Name)
			}
		}
		for _, v := range n.Outputs {
			if v == nil {
				outs = append(outs, "-")
			} else {
				outs = append(outs, v.String())
			}
		}
		fmt.Fprintf(&b, "%s = %s(%s)\n", strings.Join(outs, ", "), n.Op.Name(), strings.Join(ins, ", "))
	}
	names := make([]string, 0, len(g.Outputs))
	for _, o := range g.Outputs {
		names = append(names, o.Name+"="+o.Value.Name)
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "outputs %s\n", strings.Join(names, ", "))
	return b.String()
}
