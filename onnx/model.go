package onnx

import "fmt"

// Opset returns the version imported for domain ("" and "ai.onnx" are the
// same default domain), or 0 when the model does not import it. Decode
// refuses a model that imports one domain at two versions, so for a
// decoded model there is only one.
func (m *Model) Opset(domain string) int64 {
	domain = canonicalDomain(domain)
	for _, op := range m.OpsetImports {
		if canonicalDomain(op.Domain) == domain {
			return op.Version
		}
	}
	return 0
}

// canonicalDomain spells the default domain "" whichever way it is written
// ("" or "ai.onnx").
func canonicalDomain(domain string) string {
	if domain == "ai.onnx" {
		return ""
	}
	return domain
}

// checkOpsetImports refuses a domain imported at two different versions.
// onnx.checker lets such a model through, but which import counts is not
// agreed on: ONNX's shape inference takes the last, a reader that stops at
// the first takes the first, and the same Squeeze or Reduce then computes
// different shapes. Repeating an import at the same version is harmless
// and accepted.
func checkOpsetImports(imports []OpsetID) error {
	first := make(map[string]int, len(imports)) // domain → index of its first import
	for i, op := range imports {
		domain := canonicalDomain(op.Domain)
		j, seen := first[domain]
		if !seen {
			first[domain] = i
			continue
		}
		if prev := imports[j]; prev.Version != op.Version {
			name := fmt.Sprintf("domain %q", op.Domain)
			if domain == "" {
				name = `the default domain ("" or "ai.onnx")`
			}
			return fmt.Errorf("%w: opset_import %d imports %s at version %d, but opset_import %d imports it at version %d; a domain must be imported at one version",
				ErrMalformed, i, name, op.Version, j, prev.Version)
		}
	}
	return nil
}

// Initializer returns the graph's initializer called name, or nil.
func (g *Graph) Initializer(name string) *Tensor {
	for _, t := range g.Initializers {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Attr returns the node's attribute called name, or nil.
func (n *Node) Attr(name string) *Attribute {
	for _, a := range n.Attributes {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// attr returns the attribute called name if present, checking its type.
func (n *Node) attr(name string, want AttributeType) (*Attribute, error) {
	a := n.Attr(name)
	if a == nil {
		return nil, nil
	}
	if a.Type != want {
		return nil, fmt.Errorf("onnx: node %q (%s): attribute %q: type %s, want %s", n.Name, n.OpType, name, a.Type, want)
	}
	return a, nil
}

// AttrInt returns the INT attribute name, or def when absent.
func (n *Node) AttrInt(name string, def int64) (int64, error) {
	a, err := n.attr(name, AttrInt)
	if a == nil || err != nil {
		return def, err
	}
	return a.I, nil
}

// AttrFloat returns the FLOAT attribute name, or def when absent.
func (n *Node) AttrFloat(name string, def float32) (float32, error) {
	a, err := n.attr(name, AttrFloat)
	if a == nil || err != nil {
		return def, err
	}
	return a.F, nil
}

// AttrString returns the STRING attribute name, or def when absent.
func (n *Node) AttrString(name string, def string) (string, error) {
	a, err := n.attr(name, AttrString)
	if a == nil || err != nil {
		return def, err
	}
	return string(a.S), nil
}

// AttrInts returns the INTS attribute name, or def when absent.
func (n *Node) AttrInts(name string, def []int64) ([]int64, error) {
	a, err := n.attr(name, AttrInts)
	if a == nil || err != nil {
		return def, err
	}
	return a.Ints, nil
}

// AttrFloats returns the FLOATS attribute name, or def when absent.
func (n *Node) AttrFloats(name string, def []float32) ([]float32, error) {
	a, err := n.attr(name, AttrFloats)
	if a == nil || err != nil {
		return def, err
	}
	return a.Floats, nil
}

// AttrTensor returns the TENSOR attribute name, or nil when absent.
func (n *Node) AttrTensor(name string) (*Tensor, error) {
	a, err := n.attr(name, AttrTensor)
	if a == nil || err != nil {
		return nil, err
	}
	return a.T, nil
}

// AttrGraph returns the GRAPH attribute name, or nil when absent.
func (n *Node) AttrGraph(name string) (*Graph, error) {
	a, err := n.attr(name, AttrGraph)
	if a == nil || err != nil {
		return nil, err
	}
	return a.G, nil
}

var attrTypeNames = [...]string{"UNDEFINED", "FLOAT", "INT", "STRING", "TENSOR", "GRAPH", "FLOATS", "INTS", "STRINGS", "TENSORS", "GRAPHS", "SPARSE_TENSOR", "SPARSE_TENSORS", "TYPE_PROTO", "TYPE_PROTOS"}

// String returns the proto enum name (INT, FLOATS, GRAPH, ...).
func (t AttributeType) String() string {
	if t >= 0 && int(t) < len(attrTypeNames) {
		return attrTypeNames[t]
	}
	return fmt.Sprintf("AttributeType(%d)", int32(t))
}
