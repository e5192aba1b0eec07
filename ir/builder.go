package ir

import "fmt"

// Builder assembles a Graph op by op, inferring every output's type as it
// goes. Graph transforms (autodiff) and tests build graphs with it.
type Builder struct {
	g     *Graph
	names map[string]bool
	count int
	err   error
}

// NewBuilder starts an empty graph.
func NewBuilder(name string) *Builder {
	return &Builder{g: &Graph{Name: name}, names: map[string]bool{}}
}

func (b *Builder) name(want string) string {
	if want == "" || b.names[want] {
		for {
			b.count++
			n := fmt.Sprintf("v%d", b.count)
			if want != "" {
				n = fmt.Sprintf("%s#%d", want, b.count)
			}
			if !b.names[n] {
				want = n
				break
			}
		}
	}
	b.names[want] = true
	return want
}

// Input adds a graph input.
func (b *Builder) Input(name string, dt DType, shape Shape) *Value {
	v := &Value{Name: b.name(name), Type: Type{dt, shape.Clone()}, Kind: GraphInput}
	b.g.Inputs = append(b.g.Inputs, v)
	return v
}

// Param adds a parameter named name holding t (shared, not copied).
func (b *Builder) Param(name string, t *Tensor) *Value {
	p := &Param{Name: name, Tensor: t}
	v := &Value{Name: b.name(name), Type: Type{t.dtype, t.shape}, Kind: ParamValue, Param: p}
	p.Value = v
	b.g.Params = append(b.g.Params, p)
	return v
}

// Const adds a constant.
func (b *Builder) Const(t *Tensor) *Value {
	return &Value{Name: b.name("const"), Type: Type{t.dtype, t.shape}, Kind: ConstValue, Const: t}
}

// Op appends a node applying op to in and returns its outputs. Errors are
// kept and reported by Graph, so calls can be chained.
func (b *Builder) Op(op Op, in ...*Value) []*Value {
	types := make([]Type, len(in))
	for i, v := range in {
		if v != nil {
			types[i] = v.Type
		}
	}
	outTypes, err := op.Infer(types)
	if err != nil {
		if b.err == nil {
			b.err = fmt.Errorf("ir: builder: node %d (%s): %w", len(b.g.Nodes), op.Name(), err)
		}
		// Return placeholders so that chained calls do not crash.
		outs := make([]*Value, 1)
		outs[0] = &Value{Name: b.name("invalid")}
		return outs
	}
	n := &Node{Op: op, Inputs: in, Origin: fmt.Sprintf("node %d", len(b.g.Nodes))}
	for _, t := range outTypes {
		n.Outputs = append(n.Outputs, &Value{Name: b.name(""), Type: Type{t.DType, t.Shape.Clone()}, Producer: n})
	}
	b.g.Nodes = append(b.g.Nodes, n)
	return n.Outputs
}

// Op1 is Op for single-output ops.
func (b *Builder) Op1(op Op, in ...*Value) *Value { return b.Op(op, in...)[0] }

// Output names v as a graph output.
func (b *Builder) Output(name string, v *Value) {
	b.g.Outputs = append(b.g.Outputs, Output{Name: name, Value: v})
}

// Graph finishes the graph: drops nodes no output needs, records
// parameter uses and validates it.
func (b *Builder) Graph() (*Graph, error) {
	if b.err != nil {
		return nil, b.err
	}
	b.g.pruneDead()
	b.g.relinkUses()
	if err := b.g.Validate(); err != nil {
		return nil, err
	}
	return b.g, nil
}
