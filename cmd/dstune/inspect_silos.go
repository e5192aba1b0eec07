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
//
// float16 and bfloat16 parameters are trainable as train trains them
// (float32 master copies, written back in their dtype): the silos depend
// only on names and shapes, so the model is not converted here (which
// would copy a large model's weights only to look at them).
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
	rep.Modules = []inspectModule{}
	for _, p := range g.Params {
		if (re != nil && !re.MatchString(p.Name)) || (re == nil && len(p.Uses) == 0) {
			continue
		}
		// train refuses float64 parameters (accel/cpu's "only float32
		// parameters can be trained"): no silo holds them, and the text
		// form names them.
		switch p.Tensor.DType() {
		case ir.Float32:
		case ir.Float16, ir.BFloat16:
			rep.halfModules++
		default:
			rep.untrainable = append(rep.untrainable, textName(p.Name)+" ("+p.Tensor.DType().String()+")")
			continue
		}
		m := modules[p.Name]
		n := int64(p.Tensor.Shape().Size())
		names = append(names, p.Name)
		sizes[p.Name] = n
		rep.Modules = append(rep.Modules, inspectModule{Name: p.Name, Kind: m.Kind, Layer: m.Layer, Shared: m.Shared, Elements: n})
	}
	if re != nil && len(rep.Modules) == 0 && len(rep.untrainable) == 0 {
		rep.noMatch = trainable
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
		fmt.Fprintf(w, "\nDST silos: %s\n", textEscape(r.SiloNote))
		return
	}
	if r.Silos == nil {
		return
	}
	fmt.Fprintf(w, "\nDST modules and silos (k = entries kept free at ε = %g; module kinds and layers from the graph):\n", r.SiloEps)
	if len(r.untrainable) > 0 {
		fmt.Fprintf(w, "  (left out: %s; train refuses to train them: leave them out with --trainable)\n", strings.Join(r.untrainable, ", "))
	}
	if r.noMatch != "" {
		fmt.Fprintf(w, "  --trainable %q matches no parameter (train refuses it)\n", r.noMatch)
		return
	}
	if r.halfModules > 0 {
		fmt.Fprintf(w, "  (%d of the parameters are float16 or bfloat16: train trains float32 master copies of them and writes them back in their dtype)\n", r.halfModules)
	}
	fmt.Fprintf(w, "  --silo module-layer (the default), %s, one per tensor:\n", plural(int64(len(r.Silos[dst.SiloModuleLayer])), "silo", "silos"))
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
		fmt.Fprintf(w, "    %-32s %-22s layer %-3s %10s  k %s%s\n", textName(m.Name), textName(m.Kind), layer, groupThousands(m.Elements), groupThousands(k[m.Name]), shared)
	}
	modules := r.Silos[dst.SiloModule]
	fmt.Fprintf(w, "  --silo module, %s, one per module kind:\n", plural(int64(len(modules)), "silo", "silos"))
	for _, s := range modules {
		noun := "tensors"
		if len(s.Params) == 1 {
			noun = "tensor"
		}
		fmt.Fprintf(w, "    %-24s %2d %-7s %10s  k %-8s %s\n", textName(s.Name), len(s.Params), noun, groupThousands(s.Elements), groupThousands(s.K), strings.Join(textNames(s.Params), ", "))
	}
	if none := r.Silos[dst.SiloNone]; len(none) == 1 {
		fmt.Fprintf(w, "  --silo none: one silo of %s, %s entries, k %s\n", plural(int64(len(none[0].Params)), "tensor", "tensors"), groupThousands(none[0].Elements), groupThousands(none[0].K))
	}
}
