package ir

import "fmt"

// Interpret runs the graph with the reference implementations of its ops,
// one fresh tensor per value. It is the oracle backends are tested against,
// not a fast executor. inputs are keyed by graph input name; the result is
// keyed by graph output name.
func Interpret(g *Graph, inputs map[string]*Tensor) (map[string]*Tensor, error) {
	vals := map[*Value]*Tensor{}
	for _, v := range g.Inputs {
		t, ok := inputs[v.Name]
		if !ok {
			return nil, fmt.Errorf("ir: input %q not given", v.Name)
		}
		if t.dtype != v.DType || !t.shape.Equal(v.Shape) {
			return nil, fmt.Errorf("ir: input %q is %v, the graph was specialized for %v", v.Name, Type{t.dtype, t.shape}, v.Type)
		}
		vals[v] = t
	}
	get := func(v *Value) *Tensor {
		switch v.Kind {
		case ConstValue:
			return v.Const
		case ParamValue:
			return v.Param.Tensor
		}
		return vals[v]
	}
	for _, n := range g.Nodes {
		in := make([]*Tensor, len(n.Inputs))
		for i, v := range n.Inputs {
			if v != nil {
				in[i] = get(v)
			}
		}
		out := make([]*Tensor, len(n.Outputs))
		for i, v := range n.Outputs {
			if v != nil {
				out[i] = NewTensor(v.DType, v.Shape)
			}
		}
		if err := n.Op.Eval(in, out); err != nil {
			return nil, fmt.Errorf("ir: %s: %w", n, err)
		}
		for i, v := range n.Outputs {
			if v != nil {
				vals[v] = out[i]
			}
		}
	}
	res := map[string]*Tensor{}
	for _, o := range g.Outputs {
		res[o.Name] = get(o.Value)
	}
	return res, nil
}
