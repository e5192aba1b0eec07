package accel

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/ir"
)

// Backend compiles graphs for one kind of device.
type Backend interface {
	// Name is the backend's registry name ("cpu", "pjrt").
	Name() string
	// Compile prepares g for repeated execution. g must stay unchanged
	// afterwards (the executable keeps references to its constants and
	// parameters). Ops or dtypes the backend cannot run are reported here,
	// as errors wrapping ir.ErrNotSupported, never at run time.
	Compile(g *ir.Graph, opts Options) (Executable, error)
}

// Options tune compilation.
type Options struct {
	// Threads is the number of goroutines a kernel call may use; 0 means
	// the backend's default (GOMAXPROCS for the CPU).
	Threads int
	// Precision is the arithmetic of the graph's matrix products
	// (PrecisionFP32 when empty).
	Precision Precision
	// MaxMemory bounds, in bytes, the host memory a backend plans for the
	// values of one run of the graph (the CPU backend's arena); 0: no
	// bound. Compile refuses a graph whose plan needs more with a
	// *MemoryError, before it allocates: a model of a few bytes can ask
	// for tensors of gigabytes.
	MaxMemory int64
	// UpdateInputs names graph inputs a run may write: a decoder's KV
	// cache, fed every step and kept by the caller. A TensorScatter whose
	// cache operand is such an input may then write its rows into the
	// caller's tensor, and the ops after it read them there, instead of
	// copying the whole cache every run. The caller must count those rows
	// of its tensor as written whether or not the run succeeds (an op
	// after the scatter may fail), and nothing else of it changes. A
	// backend that cannot do this leaves the inputs as they are (the CPU
	// backend does it; see accel/cpu's borrow.go).
	UpdateInputs []string
}

// MemoryError is a graph whose values need more memory than
// Options.MaxMemory allows.
type MemoryError struct {
	Need, Limit int64
}

func (e *MemoryError) Error() string {
	return fmt.Sprintf("the graph's values need %s at once, more than the %s allowed", sysmem.Format(e.Need), sysmem.Format(e.Limit))
}

// Precision is the arithmetic of matrix products. Everything else a graph
// computes — element-wise ops, normalizations, softmax and losses, the
// values passed between ops — stays float32 whatever the precision, as do
// parameters, gradients and the update of training.
type Precision string

const (
	// PrecisionFP32 multiplies float32 operands exactly as stored.
	PrecisionFP32 Precision = "fp32"
	// PrecisionBF16 rounds the operands of the float32 products that
	// depend on a parameter (MatMul, Gemm: the layers' and attention's
	// products, forward and backward) to bfloat16 and sums in float32,
	// the arithmetic of torch.autocast("cpu", dtype=torch.bfloat16)
	// inside oneDNN's GEMMs. Products of inputs and constants alone
	// (positions times rotary frequencies, say) stay float32, since
	// bfloat16's 8 significant bits would move such angles by whole
	// radians. A product's result is float32 and is not rounded.
	PrecisionBF16 Precision = "bf16"
)

// ParsePrecision checks a precision's name ("" is PrecisionFP32).
func ParsePrecision(s string) (Precision, error) {
	switch Precision(s) {
	case "", PrecisionFP32:
		return PrecisionFP32, nil
	case PrecisionBF16:
		return PrecisionBF16, nil
	}
	return "", fmt.Errorf("unknown precision %q (want %s or %s)", s, PrecisionFP32, PrecisionBF16)
}

// Executable is a compiled graph.
type Executable interface {
	// Graph is the graph this executable runs.
	Graph() *ir.Graph
	// Run feeds the graph inputs (in Graph().Inputs order, with exactly
	// the specialized dtypes and shapes) and returns the outputs in
	// Graph().Outputs order. The returned tensors belong to the
	// executable and stay valid until the next Run, SetParam or Close;
	// Clone what must outlive that. Run does not modify its inputs, but
	// for those named in Options.UpdateInputs.
	Run(inputs []*ir.Tensor) ([]*ir.Tensor, error)
	// Param returns the tensor holding the named parameter's current
	// values. On backends whose parameters live in host memory (cpu) it
	// is the very storage the executable reads, so writing it in place
	// between runs updates the parameter; other backends return a copy.
	Param(name string) (*ir.Tensor, error)
	// SetParam copies t into the named parameter (same dtype and shape).
	SetParam(name string, t *ir.Tensor) error
	// Close releases the executable's memory.
	Close() error
}

// Settings are a backend's machine-specific settings given when it is
// opened (e.g. "pjrt-plugin": which plugin file to load); a backend
// ignores the keys it does not know.
type Settings map[string]string

var (
	registryMu sync.Mutex
	registry   = map[string]func(Settings) (Backend, error){}
)

// Register makes a backend available under name; backends call it from
// init. Registering a name twice panics.
func Register(name string, open func(Settings) (Backend, error)) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("accel: backend registered twice: " + name)
	}
	registry[name] = open
}

// Open returns the backend registered under name, with no settings.
func Open(name string) (Backend, error) { return OpenWith(name, nil) }

// OpenWith returns the backend registered under name, opened with
// settings.
func OpenWith(name string, settings Settings) (Backend, error) {
	registryMu.Lock()
	open, ok := registry[name]
	registryMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("accel: unknown backend %q (have %s)", name, strings.Join(Names(), ", "))
	}
	return open(settings)
}

// Names lists the registered backends.
func Names() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RunNamed is Run with inputs and outputs keyed by name, for callers that
// do not care about allocation (tools, tests).
func RunNamed(e Executable, inputs map[string]*ir.Tensor) (map[string]*ir.Tensor, error) {
	g := e.Graph()
	in := make([]*ir.Tensor, len(g.Inputs))
	for i, v := range g.Inputs {
		t, ok := inputs[v.Name]
		if !ok {
			return nil, fmt.Errorf("accel: input %q not given", v.Name)
		}
		in[i] = t
	}
	for name := range inputs {
		if g.Input(name) == nil {
			return nil, fmt.Errorf("accel: %q is not an input of the graph", name)
		}
	}
	out, err := e.Run(in)
	if err != nil {
		return nil, err
	}
	res := make(map[string]*ir.Tensor, len(out))
	for i, o := range g.Outputs {
		res[o.Name] = out[i]
	}
	return res, nil
}

// PeakReporter is a Backend that knows its peak throughput for matrix
// products, the denominator of model FLOPs utilization.
type PeakReporter interface {
	// PeakGFLOPS is the throughput, in GFLOP/s, that the products of a
	// graph compiled with opts could reach at most on this machine
	// (measured, so it may take a fraction of a second the first time);
	// 0 when unknown.
	PeakGFLOPS(opts Options) float64
}

// MemoryUse is what a Trainer holds in host memory, in bytes, besides
// the parameters themselves.
type MemoryUse struct {
	// Seed is the copy of the trainable parameters' values at the start
	// that a selection compares against (Θ0); OptimizerState the
	// optimizer's slots and scratch.
	Seed, OptimizerState int64
	// SeedShared is the seed read in place from storage the trainer was
	// given (update.Program.Seeds), not counted in Seed.
	SeedShared int64
	// TrainArenas is the memory of the compiled training graphs (their
	// activations, and the gradients, which the update reads in place),
	// EvalArenas that of the compiled loss graphs (validation).
	TrainArenas, EvalArenas int64
	// GradientSum is the gradients summed over the batches of a step
	// (gradient accumulation), when used.
	GradientSum int64
}

// MemoryReporter is a Trainer that knows what it holds in host memory.
type MemoryReporter interface {
	MemoryUse() MemoryUse
}
