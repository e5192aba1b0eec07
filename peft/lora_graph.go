package peft

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/ir"
)

// loraLayer is how one target weight W is multiplied in the graph: every
// product x·M that reads it, where M is W itself (stored [in, out], as
// GPT-2's Conv1D and Gemm without transB) or its transpose (stored
// [out, in], nn.Linear's layout, used through a Transpose node or Gemm's
// transB).
type loraLayer struct {
	In, Out     int
	FanInFanOut bool // W is stored [in, out]
	sites       []loraSite
}

// loraSite is one product that reads a target weight: its output gets
// the adapter's output added.
type loraSite struct {
	node  *ir.Node // the MatMul or Gemm
	alpha float64  // Gemm's alpha (1 for MatMul): the adapter is scaled by it too
}

// consumers maps every value of g to the node inputs reading it.
func consumers(g *ir.Graph) map[*ir.Value][]ir.Use {
	m := map[*ir.Value][]ir.Use{}
	for _, n := range g.Nodes {
		for j, v := range n.Inputs {
			if v != nil {
				m[v] = append(m[v], ir.Use{Node: n, Input: j})
			}
		}
	}
	return m
}

// findLayer finds how g multiplies the parameter p: as the right operand
// of MatMuls or Gemms (directly, or through a 2-D Transpose that only
// such products read), with the activation on the left. Anything else
// (an embedding lookup, a weight reaching its product through a reshape
// or slice, W·x) is an error that names the node.
func findLayer(p *ir.Param, uses map[*ir.Value][]ir.Use) (*loraLayer, error) {
	shape := p.Tensor.Shape()
	if len(shape) != 2 {
		return nil, fmt.Errorf("%q is %v, not a matrix", p.Name, shape)
	}
	if p.Tensor.DType() != ir.Float32 {
		return nil, fmt.Errorf("%q is %s: LoRA adapts float32 layers", p.Name, p.Tensor.DType())
	}
	l := &loraLayer{}
	orient := func(storedInOut bool, n *ir.Node) error {
		in, out := shape[0], shape[1]
		if !storedInOut {
			in, out = out, in
		}
		if len(l.sites) > 0 && (l.FanInFanOut != storedInOut || l.In != in || l.Out != out) {
			return fmt.Errorf("%q is multiplied both as stored and transposed (node %s)", p.Name, n)
		}
		l.FanInFanOut, l.In, l.Out = storedInOut, in, out
		return nil
	}
	var visit func(u ir.Use, transposed bool) error
	visit = func(u ir.Use, transposed bool) error {
		n := u.Node
		switch op := n.Op.(type) {
		case *ir.MatMul:
			if u.Input != 1 || len(n.Inputs[0].Shape) < 1 {
				return fmt.Errorf("%q is the left operand of node %s: LoRA adapts x·W", p.Name, n)
			}
			if err := orient(!transposed, n); err != nil {
				return err
			}
			l.sites = append(l.sites, loraSite{node: n, alpha: 1})
			return nil
		case *ir.Gemm:
			if transposed || u.Input != 1 || op.TransA {
				return fmt.Errorf("%q is not Gemm's right operand with the activation on the left (node %s)", p.Name, n)
			}
			if err := orient(!op.TransB, n); err != nil {
				return err
			}
			l.sites = append(l.sites, loraSite{node: n, alpha: float64(op.Alpha)})
			return nil
		case *ir.Transpose:
			if transposed || !slices.Equal(op.Perm, []int{1, 0}) {
				break
			}
			for _, next := range uses[n.Outputs[0]] {
				if err := visit(next, true); err != nil {
					return err
				}
			}
			if len(uses[n.Outputs[0]]) == 0 {
				return fmt.Errorf("%q is transposed by node %s, which nothing reads", p.Name, n)
			}
			return nil
		}
		return fmt.Errorf("%q reaches node %s (%s), which is not a linear layer's product LoRA adapts", p.Name, n, n.Op.Name())
	}
	for _, u := range p.Uses {
		if err := visit(u, false); err != nil {
			return nil, err
		}
	}
	if len(l.sites) == 0 {
		return nil, fmt.Errorf("%q is not read by the graph", p.Name)
	}
	return l, nil
}

// dropoutPrefix starts the names of the training graph inputs that hold
// the adapters' dropout masks: DropoutInput.
const dropoutPrefix = "dstune.lora_dropout:"

// DropoutInput names the training graph input holding the dropout mask
// of the adapter of weight at its use-th product (in graph order; 0 for a
// weight used once).
func DropoutInput(weight string, use int) string {
	return fmt.Sprintf("%s%s:%d", dropoutPrefix, weight, use)
}

// editLoRA returns a copy of g in which every site's product y = x·M
// becomes y + scale·alpha·((dropout(x)·Aᵀ)·Bᵀ) — PEFT's
// base_layer(x) + lora_B(lora_A(dropout(x)))·scaling — with A and B the
// target's adapter parameters (shared, not copied). With dropout > 0 and
// training, the mask is a graph input [x's shape] of 0 and 1/(1−p) per
// site, named DropoutInput; otherwise there is none. The weights stay
// parameters of the graph but are never differentiated.
func editLoRA(g *ir.Graph, targets []*loraTarget, layers map[string]*loraLayer, scale, dropout float64, training bool) (*ir.Graph, error) {
	type siteRef struct {
		t     *loraTarget
		alpha float64
		use   int
	}
	siteAt := map[*ir.Node]siteRef{}
	for _, t := range targets {
		for i, s := range layers[t.Weight].sites {
			siteAt[s.node] = siteRef{t, s.alpha, i}
		}
	}
	b := ir.NewBuilder(g.Name + "+lora")
	vals := map[*ir.Value]*ir.Value{}
	for _, in := range g.Inputs {
		vals[in] = b.Input(in.Name, in.DType, in.Shape)
	}
	for _, p := range g.Params {
		vals[p.Value] = b.Param(p.Name, p.Tensor)
	}
	adapters := map[*loraTarget][2]*ir.Value{}
	for _, t := range targets {
		a, bb := b.Param(t.A.Name, t.A.Tensor), b.Param(t.B.Name, t.B.Tensor)
		transpose := &ir.Transpose{Perm: []int{1, 0}}
		adapters[t] = [2]*ir.Value{b.Op1(transpose, a), b.Op1(transpose, bb)}
	}
	get := func(v *ir.Value) (*ir.Value, error) {
		if v == nil {
			return nil, nil
		}
		if nv, ok := vals[v]; ok {
			return nv, nil
		}
		if v.Kind == ir.ConstValue {
			nv := b.Const(v.Const)
			vals[v] = nv
			return nv, nil
		}
		return nil, fmt.Errorf("lora: value %s is read before it is computed", v)
	}
	for _, n := range g.Nodes {
		ins := make([]*ir.Value, len(n.Inputs))
		for i, v := range n.Inputs {
			nv, err := get(v)
			if err != nil {
				return nil, err
			}
			ins[i] = nv
		}
		outs := b.Op(n.Op, ins...)
		if len(outs) != len(n.Outputs) {
			return nil, fmt.Errorf("lora: node %s: %d outputs, the copy has %d", n, len(n.Outputs), len(outs))
		}
		if p := outs[0].Producer; p != nil {
			p.Name, p.Origin = n.Name, n.Origin
		}
		for i, v := range n.Outputs {
			if v != nil {
				vals[v] = outs[i]
			}
		}
		site, ok := siteAt[n]
		if !ok {
			continue
		}
		x, y := ins[0], outs[0]
		if x.DType != ir.Float32 {
			return nil, fmt.Errorf("lora: node %s multiplies %s activations; LoRA adapts float32 layers", n, x.DType)
		}
		if training && dropout > 0 {
			mask := b.Input(DropoutInput(site.t.Weight, site.use), ir.Float32, x.Shape)
			x = b.Op1(&ir.Binary{Fn: ir.Mul}, x, mask)
		}
		ab := adapters[site.t]
		z := b.Op1(&ir.MatMul{}, b.Op1(&ir.MatMul{}, x, ab[0]), ab[1])
		if s := scale * site.alpha; s != 1 {
			z = b.Op1(&ir.Binary{Fn: ir.Mul}, z, b.Const(ir.ScalarFloat32(float32(s))))
		}
		vals[n.Outputs[0]] = b.Op1(&ir.Binary{Fn: ir.Add}, y, z)
	}
	for _, o := range g.Outputs {
		v, err := get(o.Value)
		if err != nil {
			return nil, err
		}
		b.Output(o.Name, v)
	}
	return b.Graph()
}
