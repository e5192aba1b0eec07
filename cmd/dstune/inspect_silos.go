package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
)

// inspectModule is one trainable parameter's module (dst.Modules).
type inspectModule struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Layer    int    `json:"layer"` // -1: outside the layer stack, or shared by several layers
	Shared   bool   `json:"shared"`
	Elements int64  `json:"elements"`
}

// inspectSilo is one DST silo: its parameter tensors and their entries.
type inspectSilo struct {
	Name     string   `json:"name"`
	Params   []string `json:"params"`
	Elements int64    `json:"elements"`
	K        int64    `json:"k"` // entries it keeps free at the report's ε
}

// addSilos classifies the trainable parameters (those the graph reads, or
// those trainable matches) and lists the silos of every --silo mode. When
// the graph cannot be imported the report says why instead.
func addSilos(rep *inspectReport, model *ir.Model, trainable string, eps float64) error {
	var re *regexp.Regexp
	if trainable != "" {
		var err error
		if re, err = regexp.Compile(trainable); err != nil {
			return usagef("--trainable: %v", err)
		}
	}
	rep.SiloEps = eps
	g, err := specializeSmall(model)
	if err != nil {
		rep.SiloNote = fmt.Sprintf("no silos: the graph does not import (%v)", err)
		return nil
	}
	modules := dst.Modules(g)
	var names []string
	sizes := map[string]int64{}
	for _, p := range g.Params {
		if p.Tensor.DType() != ir.Float32 || (re != nil && !re.MatchString(p.Name)) || (re == nil && len(p.Uses) == 0) {
			continue
		}
		m := modules[p.Name]
		n := int64(p.Tensor.Shape().Size())
		names = append(names, p.Name)
		sizes[p.Name] = n
		rep.Modules = append(rep.Modules, inspectModule{Name: p.Name, Kind: m.Kind, Layer: m.Layer, Shared: m.Shared, Elements: n})
	}
	rep.Silos = map[string][]inspectSilo{}
	for _, mode := range []string{dst.SiloModuleLayer, dst.SiloModule, dst.SiloNone} {
		silos, err := dst.MakeSilos(mode, names, modules)
		if err != nil {
			return err
		}
		list := []inspectSilo{}
		for _, s := range silos {
			is := inspectSilo{Name: s.Name, Params: s.Params}
			for _, p := range s.Params {
				is.Elements += sizes[p]
			}
			is.K = dst.SubsetSize(eps, is.Elements)
			list = append(list, is)
		}
		rep.Silos[mode] = list
	}
	return nil
}

// specializeSmall imports the model for a batch of one short sequence:
// every dynamic dimension 1 (the first) or 2.
func specializeSmall(model *ir.Model) (*ir.Graph, error) {
	shapes := map[string]ir.Shape{}
	for _, in := range model.Inputs {
		if in.Dims == nil {
			return nil, fmt.Errorf("input %q has no declared rank", in.Name)
		}
		s := make(ir.Shape, len(in.Dims))
		for i, d := range in.Dims {
			switch {
			case d >= 0:
				s[i] = d
			case i == 0:
				s[i] = 1
			default:
				s[i] = 2
			}
		}
		shapes[in.Name] = s
	}
	return model.Specialize(ir.Bindings{Shapes: shapes})
}

func printSilos(w io.Writer, r *inspectReport) {
	if r.SiloNote != "" {
		fmt.Fprintf(w, "\nDST silos: %s\n", r.SiloNote)
		return
	}
	if r.Silos == nil {
		return
	}
	fmt.Fprintf(w, "\nDST modules and silos (k = entries kept free at ε = %g; module kinds and layers from the graph):\n", r.SiloEps)
	fmt.Fprintf(w, "  --silo module-layer (the default), %d silos, one per tensor:\n", len(r.Silos[dst.SiloModuleLayer]))
	k := map[string]int64{}
	for _, s := range r.Silos[dst.SiloModuleLayer] {
		k[s.Name] = s.K
	}
	for _, m := range r.Modules {
		layer := "-"
		if m.Layer >= 0 {
			layer = fmt.Sprint(m.Layer)
		}
		shared := ""
		if m.Shared {
			shared = "  shared"
		}
		fmt.Fprintf(w, "    %-32s %-22s layer %-3s %10s  k %s%s\n", m.Name, m.Kind, layer, groupThousands(m.Elements), groupThousands(k[m.Name]), shared)
	}
	modules := r.Silos[dst.SiloModule]
	fmt.Fprintf(w, "  --silo module, %d silos, one per module kind:\n", len(modules))
	for _, s := range modules {
		fmt.Fprintf(w, "    %-24s %2d tensors %10s  k %-8s %s\n", s.Name, len(s.Params), groupThousands(s.Elements), groupThousands(s.K), strings.Join(s.Params, ", "))
	}
	if none := r.Silos[dst.SiloNone]; len(none) == 1 {
		fmt.Fprintf(w, "  --silo none: one silo of %d tensors, %s entries, k %s\n", len(none[0].Params), groupThousands(none[0].Elements), groupThousands(none[0].K))
	}
}
