package train

import (
	"fmt"
	"sort"
	"sync"

	"github.com/dstune/dstune/ir"
)

// DSTConfig configures --method dst (package dst implements it and
// documents every field; this is the plain data config.json holds, so
// that train does not depend on dst).
type DSTConfig struct {
	Eps       float64 `json:"eps"`                 // fraction of each silo's entries that may differ from the seed
	Distance  string  `json:"distance"`            // inv-rel | rel | abs | random
	Silo      string  `json:"silo"`                // module-layer | module | none
	Normalize string  `json:"normalize,omitempty"` // "" | size | mean: Appendix B's normalization instead of siloing
	Threshold string  `json:"threshold"`           // iterative | exact
	Churn     bool    `json:"churn"`               // false: the subset chosen at the first step stays fixed
	// RefineSteps (m) and Factor (r) are Algorithm 2's parameters.
	RefineSteps int     `json:"refine_steps"`
	Factor      float64 `json:"factor"`
	// PaperAlg2 also runs Algorithm 2 exactly as printed, carrying its own
	// threshold from step to step, and reports what it would keep (a
	// diagnostic; one more counting pass per step).
	PaperAlg2 bool `json:"paper_alg2,omitempty"`
}

// DefaultDSTConfig is the paper's setting: ε = 1e-3, inverse-relative
// distance, per-module-and-layer silos, the iterative threshold with m = 3
// and r = 2, churn on.
func DefaultDSTConfig() DSTConfig {
	return DSTConfig{Eps: 1e-3, Distance: "inv-rel", Silo: "module-layer", Threshold: "iterative", Churn: true, RefineSteps: 3, Factor: 2}
}

// MethodEnv is what a method's constructor gets from the run.
type MethodEnv struct {
	Config Config
	// Model is the imported model; nil when RunOptions.Source replaced it.
	Model *ir.Model
	// ForwardGraph returns the model's forward graph specialized to a
	// small input, for methods that look at the network's structure; nil
	// when the graph source cannot give one.
	ForwardGraph func() (*ir.Graph, error)
}

// MethodFactory makes a method for a run.
type MethodFactory func(env MethodEnv) (Method, error)

var (
	methodsMu sync.Mutex
	methods   = map[string]MethodFactory{}
)

// RegisterMethod makes a method available to Run under name, so that a
// package implementing one (dst) can depend on train and not the other
// way round. Registering a name twice, or "full", panics.
func RegisterMethod(name string, f MethodFactory) {
	methodsMu.Lock()
	defer methodsMu.Unlock()
	if _, dup := methods[name]; dup || name == MethodFull || f == nil {
		panic("train: RegisterMethod " + name + " twice, over the built-in, or nil")
	}
	methods[name] = f
}

// RegisteredMethods lists the method names Run accepts, sorted.
func RegisteredMethods() []string {
	methodsMu.Lock()
	defer methodsMu.Unlock()
	names := []string{MethodFull}
	for name := range methods {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// newRunMethod makes the method env.Config names.
func newRunMethod(env MethodEnv) (Method, error) {
	name := env.Config.Method
	if name != MethodDST && env.Config.DST != nil {
		return nil, fmt.Errorf("the configuration has DST options, but the method is %q", name)
	}
	if name == MethodFull {
		return FullMethod{}, nil
	}
	methodsMu.Lock()
	f := methods[name]
	methodsMu.Unlock()
	if f == nil {
		return NewMethod(name) // its error says what exists
	}
	return f(env)
}

// RunFileWriter is a Method that keeps files of its own in the run
// directory (DST: delta.safetensors): Run calls WriteRunFiles after every
// checkpoint, with the step the checkpoint holds. Files must be written
// atomically.
type RunFileWriter interface {
	WriteRunFiles(dir string, step int64) error
}

// ForwardGraph returns the model specialized to one sequence of the
// model's fixed length (or of 2 tokens): the structure DST derives its
// module silos from.
func (s *ModelSource) ForwardGraph() (*ir.Graph, error) {
	t := 2
	if s.SeqLen > 0 {
		t = s.SeqLen
	}
	return s.specialize(BatchShape{1, t})
}
