package train

import (
	"fmt"
	"sort"
	"sync"

	"github.com/dstune/dstune/accel"
)

// EngineEnv is what an engine factory gets from a run.
type EngineEnv struct {
	Config    Config
	Source    GraphSource
	Optimizer Optimizer
	// Method is the run's method (FullMethod, or a registered one such as
	// dst), made from Config. A device engine that runs the method inside
	// its compiled step reads its settings from it and returns the Method
	// the run reports through (see MethodRunner).
	Method Method
	// Options are the backend's machine-specific settings
	// (RunOptions.BackendOptions, e.g. "pjrt-plugin"): not part of the
	// run's configuration.
	Options map[string]string
}

// EngineFactory makes the engine of a run for one backend.
type EngineFactory func(env EngineEnv) (Engine, error)

// MethodRunner is an Engine that runs the method itself — a device
// engine whose compiled step holds the optimizer and the method's update
// — rather than calling Method.Update. Run then reports metrics, writes
// checkpoints and run files through the Method it returns (same name and
// checkpoint format as the run's method).
type MethodRunner interface {
	Engine
	Method() Method
}

var (
	enginesMu sync.Mutex
	engines   = map[string]EngineFactory{}
)

// RegisterEngine makes Run train on the named backend (Config.Backend)
// with the engine f makes, instead of a HostEngine over the accel backend
// of that name. A device backend's package registers itself in init, so
// that train does not depend on it. Registering a name twice, or a nil
// factory, panics.
func RegisterEngine(backend string, f EngineFactory) {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	if _, dup := engines[backend]; dup || f == nil {
		panic("train: RegisterEngine " + backend + " twice or nil")
	}
	engines[backend] = f
}

// RegisteredEngines lists the backends with their own engine, sorted.
func RegisteredEngines() []string {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	names := make([]string, 0, len(engines))
	for name := range engines {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// newRunEngine makes the engine env.Config.Backend names: a registered
// engine, or a HostEngine over the accel backend of that name. When the
// engine runs the method itself, the method it returns replaces env's.
func newRunEngine(env EngineEnv) (Engine, Method, error) {
	enginesMu.Lock()
	f := engines[env.Config.Backend]
	enginesMu.Unlock()
	if f != nil {
		e, err := f(env)
		if err != nil {
			return nil, nil, err
		}
		m := env.Method
		if mr, ok := e.(MethodRunner); ok {
			if m = mr.Method(); m == nil || m.Name() != env.Method.Name() {
				e.Close()
				return nil, nil, fmt.Errorf("train: the %s engine runs another method than %q", env.Config.Backend, env.Method.Name())
			}
		}
		return e, m, nil
	}
	backend, err := accel.Open(env.Config.Backend)
	if err != nil {
		return nil, nil, err
	}
	e, err := NewHostEngine(env.Source, backend, HostOptions{Threads: env.Config.Threads, Optimizer: env.Optimizer, Method: env.Method})
	if err != nil {
		return nil, nil, err
	}
	return e, env.Method, nil
}
