package train

import (
	"fmt"
	"sort"
	"sync"

	"github.com/dstune/dstune/ir"
)

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

// checkMethodOptions refuses a configuration holding the options of
// another method than its own.
func (c *Config) checkMethodOptions() error {
	for _, opts := range []struct {
		method string
		given  bool
	}{{MethodDST, len(c.DST) > 0}, {MethodLoRA, len(c.LoRA) > 0}, {MethodPrompt, len(c.Prompt) > 0}} {
		if opts.given && c.Method != opts.method {
			return fmt.Errorf("the configuration has options of --method %s, but the method is %q", opts.method, c.Method)
		}
	}
	return nil
}

// newRunMethod makes the method env.Config names.
func newRunMethod(env MethodEnv) (Method, error) {
	name := env.Config.Method
	if err := env.Config.checkMethodOptions(); err != nil {
		return nil, err
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

// ForwardGraph returns the model specialized to one sequence (or the
// model's fixed batch) of the model's fixed length (or of 2 tokens): the
// structure DST derives its module silos from.
func (s *ModelSource) ForwardGraph() (*ir.Graph, error) {
	b, t := 1, 2
	if s.Batch > 0 {
		b = s.Batch
	}
	if s.SeqLen > 0 {
		t = s.SeqLen
	}
	return s.specialize(BatchShape{b, t})
}

// NewMethod returns the named built-in method (Run also finds the ones
// registered with RegisterMethod: dst).
func NewMethod(name string) (Method, error) {
	switch name {
	case MethodFull:
		return FullMethod{}, nil
	case MethodDST, MethodLoRA, MethodPrompt:
		return nil, fmt.Errorf("method %q is not available (methods: %v)", name, RegisteredMethods())
	}
	return nil, fmt.Errorf("unknown method %q (want %s, %s, %s or %s)", name, MethodFull, MethodDST, MethodLoRA, MethodPrompt)
}
