package tpu

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/dstune/dstune/ir"
)

// ArgKind says what a program argument holds and who provides it.
type ArgKind uint8

const (
	// ArgInput is a graph input, fed on every run.
	ArgInput ArgKind = iota
	// ArgParam is a parameter's current values (device-resident).
	ArgParam
	// ArgState is optimizer or DST state (device-resident, starts at
	// zero).
	ArgState
	// ArgSeed is a parameter's seed Θ⁽⁰⁾ (device-resident, read only).
	ArgSeed
	// ArgStepScalars is the per-step scalars the host computes (learning
	// rate, bias corrections, ...; an accumulation's weight), fed on every
	// run.
	ArgStepScalars
	// ArgAccum is a trainable parameter's gradient sum for gradient
	// accumulation (device-resident, made by the trainer's first
	// Accumulate).
	ArgAccum
)

// Arg is one argument of a program's main function.
type Arg struct {
	Kind ArgKind
	Name string // graph input or parameter name, or the state's name
	Type ir.Type
	// AliasOf is the index of the result that reuses this argument's
	// buffer (input-output aliasing: the argument is donated), or -1.
	AliasOf int
}

// Result is one result of a program.
type Result struct {
	Name string
	Type ir.Type
}

// Program is a lowered StableHLO module and the layout of its main
// function.
type Program struct {
	Text    string
	Args    []Arg
	Results []Result
	// Units are a DST step's selections, in the order of its per-unit
	// state and results (nil without DST).
	Units []SelectionUnit
}

// ArgIndex returns the index of the argument of the given kind and name,
// or -1.
func (p *Program) ArgIndex(kind ArgKind, name string) int {
	for i, a := range p.Args {
		if a.Kind == kind && a.Name == name {
			return i
		}
	}
	return -1
}

// ResultIndex returns the index of the named result, or -1.
func (p *Program) ResultIndex(name string) int {
	for i, r := range p.Results {
		if r.Name == name {
			return i
		}
	}
	return -1
}

// module renders the main function and its module.
func module(args []Arg, body *fn, results []value) string {
	var b strings.Builder
	b.WriteString("module @dstune attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {\n")
	b.WriteString("  func.func public @main(")
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%%arg%d: %s", i, tensorType(a.Type))
		if a.AliasOf >= 0 {
			fmt.Fprintf(&b, " {tf.aliasing_output = %d : i32}", a.AliasOf)
		}
	}
	b.WriteString(") -> (")
	for i, r := range results {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(tensorType(r.t))
	}
	b.WriteString(") {\n")
	b.WriteString(body.lines.String())
	b.WriteString(body.indent)
	b.WriteString(`"func.return"(`)
	for i, r := range results {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.name)
	}
	b.WriteString(") : (")
	for i, r := range results {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(tensorType(r.t))
	}
	b.WriteString(") -> ()\n  }\n}\n")
	return b.String()
}

func argValue(i int, t ir.Type) value { return value{"%arg" + strconv.Itoa(i), t} }

// graphLowering maps a graph's values to emitted values while its nodes
// are lowered in order.
type graphLowering struct {
	f    *fn
	vals map[*ir.Value]value
}

func (l *graphLowering) get(v *ir.Value) (value, error) {
	if x, ok := l.vals[v]; ok {
		return x, nil
	}
	if v.Kind == ir.ConstValue {
		if _, ok := elemType(v.DType); !ok {
			return value{}, fmt.Errorf("%w: constant %q is %s", ir.ErrNotSupported, v.Name, v.DType)
		}
		x := l.f.constant(v.Const)
		l.vals[v] = x
		return x, nil
	}
	return value{}, fmt.Errorf("tpu: value %q is used before it is computed", v.Name)
}

// lowerNodes lowers every node of g in order.
func (l *graphLowering) lowerNodes(g *ir.Graph) error {
	for _, n := range g.Nodes {
		in := make([]value, len(n.Inputs))
		for i, v := range n.Inputs {
			if v == nil {
				continue
			}
			x, err := l.get(v)
			if err != nil {
				return fmt.Errorf("tpu: %s: %w", n, err)
			}
			in[i] = x
		}
		out, err := lowerNode(l.f, n, in)
		if err != nil {
			return fmt.Errorf("tpu: %s: %w", n, err)
		}
		if err := l.f.Err(); err != nil {
			return fmt.Errorf("tpu: %s: emitted an ill-typed op: %w", n, err)
		}
		for i, v := range n.Outputs {
			if v == nil || i >= len(out) || out[i].name == "" {
				continue
			}
			if out[i].dtype() != v.DType || !out[i].shape().Equal(v.Shape) {
				return fmt.Errorf("tpu: %s: output %d lowered to %v, the graph says %v", n, i, out[i].t, v.Type)
			}
			l.vals[v] = out[i]
		}
	}
	return nil
}

// LowerGraph lowers g for inference: the arguments are g's inputs in
// order, then every parameter in g.Params order (read only: the host
// keeps them on the device between runs); the results are g's outputs.
func LowerGraph(g *ir.Graph) (*Program, error) {
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("tpu: %w", err)
	}
	p := &Program{}
	l := &graphLowering{f: newFn("    "), vals: map[*ir.Value]value{}}
	for _, v := range g.Inputs {
		if _, ok := elemType(v.DType); !ok {
			return nil, fmt.Errorf("tpu: %w: input %q is %s", ir.ErrNotSupported, v.Name, v.DType)
		}
		l.vals[v] = argValue(len(p.Args), v.Type)
		p.Args = append(p.Args, Arg{Kind: ArgInput, Name: v.Name, Type: v.Type, AliasOf: -1})
	}
	for _, prm := range g.Params {
		if _, ok := elemType(prm.Value.DType); !ok {
			return nil, fmt.Errorf("tpu: %w: parameter %q is %s", ir.ErrNotSupported, prm.Name, prm.Value.DType)
		}
		l.vals[prm.Value] = argValue(len(p.Args), prm.Value.Type)
		p.Args = append(p.Args, Arg{Kind: ArgParam, Name: prm.Name, Type: prm.Value.Type, AliasOf: -1})
	}
	if err := l.lowerNodes(g); err != nil {
		return nil, err
	}
	var results []value
	for _, o := range g.Outputs {
		x, err := l.get(o.Value)
		if err != nil {
			return nil, fmt.Errorf("tpu: output %q: %w", o.Name, err)
		}
		results = append(results, x)
		p.Results = append(p.Results, Result{Name: o.Name, Type: o.Value.Type})
	}
	p.Text = module(p.Args, l.f, results)
	return p, nil
}
