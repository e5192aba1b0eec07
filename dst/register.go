package dst

import (
	"fmt"

	"github.com/dstune/dstune/train"
)

// DeltaFile is the name of the delta a DST run keeps in its run
// directory, rewritten with every checkpoint.
const DeltaFile = "delta.safetensors"

func init() { train.RegisterMethod(train.MethodDST, newFromEnv) }

// newFromEnv makes the method of a run: its options from the run's
// configuration (the paper's defaults when it has none), module kinds from
// the model's graph when the silos need them, and the base model's hash.
func newFromEnv(env train.MethodEnv) (train.Method, error) {
	opts, err := ParseOptions(env.Config.DST, env.Config.Seed)
	if err != nil {
		return nil, err
	}
	var modules map[string]Module
	if opts.Silo == SiloModule {
		if env.ForwardGraph == nil {
			return nil, fmt.Errorf("dst: --silo module needs the model's graph, which this run does not have")
		}
		g, err := env.ForwardGraph()
		if err != nil {
			return nil, fmt.Errorf("dst: module silos: %w", err)
		}
		modules = Modules(g)
	}
	var hash string
	halfSeeds := map[string]Initializer{}
	if env.Model != nil {
		inits, err := InitializersOf(env.Model.ONNX)
		if err != nil {
			return nil, fmt.Errorf("dst: base model hash: %w", err)
		}
		if hash, err = BaseHash(inits); err != nil {
			return nil, fmt.Errorf("dst: base model hash: %w", err)
		}
		for _, it := range inits {
			if _, half := env.Model.HalfParams()[it.Name]; half {
				halfSeeds[it.Name] = it
			}
		}
	}
	m, err := NewMethod(opts, modules, hash)
	if err != nil {
		return nil, err
	}
	m.halfSeeds = halfSeeds
	return m, nil
}
