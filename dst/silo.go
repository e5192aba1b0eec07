package dst

import (
	"fmt"
	"slices"
)

// Siloing modes: how the trainable parameters are partitioned into silos,
// each of which keeps exactly SubsetSize(ε, |S|) entries free.
const (
	// SiloModuleLayer is one silo per initializer tensor: per module and
	// layer, the paper's default. A tied weight (GPT's token embedding,
	// also the LM head) is one tensor and so one silo.
	SiloModuleLayer = "module-layer"
	// SiloModule is one silo per module kind (Modules): every layer's
	// attn_qkv.weight together, every layer's mlp_out.bias together, …
	SiloModule = "module"
	// SiloNone is one silo holding every trainable parameter.
	SiloNone = "none"
)

// Silo is a set of parameter tensors whose entries DST selects from
// together. Its entries are laid end to end in the order of Params (the
// order the trainable parameters are given in), which is the order the
// tie rule's "lowest silo positions first" refers to.
type Silo struct {
	Name   string   // module-layer: the tensor's name; module: the kind; none: "all"
	Params []string // the member tensors
}

// MakeSilos partitions the parameters named params (in that order) for
// mode. Module silos need the parameters' modules (Modules); the other
// modes ignore modules. Silos come in the order of their first member.
func MakeSilos(mode string, params []string, modules map[string]Module) ([]Silo, error) {
	switch mode {
	case SiloModuleLayer:
		silos := make([]Silo, len(params))
		for i, p := range params {
			silos[i] = Silo{Name: p, Params: []string{p}}
		}
		return silos, nil
	case SiloNone:
		return []Silo{{Name: "all", Params: slices.Clone(params)}}, nil
	case SiloModule:
		if modules == nil {
			return nil, fmt.Errorf("--silo module needs the model's graph to tell module kinds apart")
		}
		var silos []Silo
		index := map[string]int{}
		for _, p := range params {
			m, ok := modules[p]
			if !ok {
				return nil, fmt.Errorf("parameter %q: no module kind known", p)
			}
			i, seen := index[m.Kind]
			if !seen {
				i = len(silos)
				index[m.Kind] = i
				silos = append(silos, Silo{Name: m.Kind})
			}
			silos[i].Params = append(silos[i].Params, p)
		}
		return silos, nil
	}
	return nil, fmt.Errorf("unknown silo mode %q (want %s, %s or %s)", mode, SiloModuleLayer, SiloModule, SiloNone)
}
