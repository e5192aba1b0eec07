//go:build cgo

package tpu

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/gomlx/gopjrt/dtypes"
	"github.com/gomlx/gopjrt/pjrt"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// Backend runs programs on one PJRT plugin's first device.
type Backend struct {
	plugin Plugin
	client *pjrt.Client

	mu    sync.Mutex
	cache map[[32]byte]*pjrt.LoadedExecutable // compiled programs by their text
}

var (
	openMu sync.Mutex
	opened *Backend // the execute shim is process-wide: one plugin per process
)

// Open loads the PJRT plugin (opts.PluginPath, or the one FindPlugin
// finds) and creates a client on it. A process uses one plugin: a second
// Open returns the same backend, or an error when it names another file.
func Open(opts Options) (*Backend, error) {
	openMu.Lock()
	defer openMu.Unlock()
	plugin, err := FindPlugin(DefaultSearchPaths(opts.PluginPath))
	if err != nil {
		return nil, err
	}
	if opened != nil {
		if opened.plugin.Path != plugin.Path {
			return nil, fmt.Errorf("tpu: PJRT plugin %s is loaded; cannot also load %s", opened.plugin.Path, plugin.Path)
		}
		return opened, nil
	}
	preloadLibraries(plugin.LibraryDirs)
	if plugin.CUDADataDir != "" && !strings.Contains(os.Getenv("XLA_FLAGS"), "--xla_gpu_cuda_data_dir") {
		flags := strings.TrimSpace(os.Getenv("XLA_FLAGS") + " --xla_gpu_cuda_data_dir=" + plugin.CUDADataDir)
		if err := os.Setenv("XLA_FLAGS", flags); err != nil {
			return nil, fmt.Errorf("tpu: setting XLA_FLAGS: %w", err)
		}
	}
	api, err := patchedAPI(plugin.Path)
	if err != nil {
		return nil, err
	}
	name := "dstune_" + strings.TrimSuffix(filepathBase(plugin.Path), ".so")
	if err := pjrt.RegisterPreloadedPlugin(name, api); err != nil {
		return nil, fmt.Errorf("tpu: initializing PJRT plugin %s: %w", plugin.Path, err)
	}
	p, err := pjrt.GetPlugin(name)
	if err != nil {
		return nil, fmt.Errorf("tpu: PJRT plugin %s: %w", plugin.Path, err)
	}
	client, err := p.NewClient(nil)
	if err != nil {
		return nil, fmt.Errorf("tpu: creating a client on PJRT plugin %s: %w", plugin.Path, err)
	}
	if len(client.AddressableDevices()) == 0 {
		return nil, fmt.Errorf("tpu: PJRT plugin %s has no addressable device", plugin.Path)
	}
	opened = &Backend{plugin: plugin, client: client, cache: map[[32]byte]*pjrt.LoadedExecutable{}}
	return opened, nil
}

func filepathBase(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// Name is "pjrt".
func (b *Backend) Name() string { return "pjrt" }

// Plugin is the loaded plugin.
func (b *Backend) Plugin() Plugin { return b.plugin }

// Platform is the client's platform and version ("cuda 12.8", ...).
func (b *Backend) Platform() string {
	return b.client.Platform() + " " + b.client.PlatformVersion()
}

// compile compiles a program, or returns the executable compiled before
// for the same text.
func (b *Backend) compile(p *Program) (*pjrt.LoadedExecutable, error) {
	key := sha256.Sum256([]byte(p.Text))
	b.mu.Lock()
	defer b.mu.Unlock()
	if exe, ok := b.cache[key]; ok {
		return exe, nil
	}
	exe, err := b.client.Compile().WithStableHLO([]byte(p.Text)).Done()
	if err != nil {
		return nil, fmt.Errorf("tpu: compiling on %s: %w", b.plugin.Path, err)
	}
	b.cache[key] = exe
	return exe, nil
}

// execute runs exe; donate[i] gives argument i's buffer to the program
// (it is invalid afterwards). A plugin that wants a larger
// PJRT_ExecuteOptions says so in its error; the shim learns the size and
// the call is retried once (the arguments are untouched by the failed
// call: the size check comes first).
func (b *Backend) execute(exe *pjrt.LoadedExecutable, args []*pjrt.Buffer, donate []bool) ([]*pjrt.Buffer, error) {
	out, err := exe.Execute(args...).SetDonate(donate).Done()
	if err != nil && learnOptionsSize(err) {
		out, err = exe.Execute(args...).SetDonate(donate).Done()
	}
	if err != nil {
		return nil, fmt.Errorf("tpu: executing: %w", err)
	}
	return out, nil
}

var pjrtDTypes = map[ir.DType]dtypes.DType{
	ir.Float32: dtypes.Float32, ir.Float64: dtypes.Float64, ir.Float16: dtypes.Float16, ir.BFloat16: dtypes.BFloat16,
	ir.Int8: dtypes.Int8, ir.Int16: dtypes.Int16, ir.Int32: dtypes.Int32, ir.Int64: dtypes.Int64,
	ir.Uint8: dtypes.Uint8, ir.Uint16: dtypes.Uint16, ir.Uint32: dtypes.Uint32, ir.Uint64: dtypes.Uint64,
	ir.Bool: dtypes.Bool,
}

func (b *Backend) upload(t *ir.Tensor) (*pjrt.Buffer, error) {
	dt, ok := pjrtDTypes[t.DType()]
	if !ok {
		return nil, fmt.Errorf("tpu: %w: %s tensors", ir.ErrNotSupported, t.DType())
	}
	dims := []int(t.Shape().Clone())
	data := t.Bytes()
	if len(data) == 0 {
		data = make([]byte, 1) // PJRT wants a valid pointer even for empty tensors
	}
	buf, err := b.client.BufferFromHost().FromRawData(data, dt, dims).Done()
	if err != nil {
		return nil, fmt.Errorf("tpu: copying %s%v to the device: %w", t.DType(), t.Shape(), err)
	}
	return buf, nil
}

func (b *Backend) download(buf *pjrt.Buffer, typ ir.Type) (*ir.Tensor, error) {
	t := ir.NewTensor(typ.DType, typ.Shape)
	if t.Len() == 0 {
		return t, nil
	}
	if err := buf.ToHost(t.Bytes()); err != nil {
		return nil, fmt.Errorf("tpu: copying %v from the device: %w", typ, err)
	}
	return t, nil
}

func destroy(bufs ...*pjrt.Buffer) {
	for _, b := range bufs {
		if b != nil {
			_ = b.Destroy()
		}
	}
}

// ---------------------------------------------------------------- inference

// Executable is a graph compiled for inference; its parameters stay on the
// device between runs.
type Executable struct {
	b      *Backend
	g      *ir.Graph
	prog   *Program
	exe    *pjrt.LoadedExecutable
	params map[string]*pjrt.Buffer
	closed bool
}

var _ accel.Executable = (*Executable)(nil)

// Compile lowers g (LowerGraph), compiles it and copies its parameters to
// the device.
func (b *Backend) Compile(g *ir.Graph, _ accel.Options) (accel.Executable, error) {
	prog, err := LowerGraph(g)
	if err != nil {
		return nil, err
	}
	exe, err := b.compile(prog)
	if err != nil {
		return nil, err
	}
	e := &Executable{b: b, g: g, prog: prog, exe: exe, params: map[string]*pjrt.Buffer{}}
	for _, p := range g.Params {
		buf, err := b.upload(p.Tensor)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("tpu: parameter %q: %w", p.Name, err)
		}
		e.params[p.Name] = buf
	}
	return e, nil
}

// Graph returns the compiled graph.
func (e *Executable) Graph() *ir.Graph { return e.g }

// Run copies the inputs to the device, runs the program and copies the
// outputs back (fresh tensors on every run).
func (e *Executable) Run(inputs []*ir.Tensor) ([]*ir.Tensor, error) {
	if e.closed {
		return nil, errors.New("tpu: executable is closed")
	}
	if err := checkInputs(e.prog, inputs); err != nil {
		return nil, err
	}
	args := make([]*pjrt.Buffer, len(e.prog.Args))
	var uploaded []*pjrt.Buffer
	defer func() { destroy(uploaded...) }()
	in := 0
	for i, a := range e.prog.Args {
		switch a.Kind {
		case ArgInput:
			buf, err := e.b.upload(inputs[in])
			if err != nil {
				return nil, fmt.Errorf("tpu: input %q: %w", a.Name, err)
			}
			in++
			uploaded = append(uploaded, buf)
			args[i] = buf
		case ArgParam:
			args[i] = e.params[a.Name]
		}
	}
	out, err := e.b.execute(e.exe, args, make([]bool, len(args)))
	if err != nil {
		return nil, err
	}
	defer destroy(out...)
	res := make([]*ir.Tensor, len(out))
	for i, buf := range out {
		if res[i], err = e.b.download(buf, e.prog.Results[i].Type); err != nil {
			return nil, fmt.Errorf("tpu: output %q: %w", e.prog.Results[i].Name, err)
		}
	}
	return res, nil
}

// Param copies the named parameter back from the device.
func (e *Executable) Param(name string) (*ir.Tensor, error) {
	buf, ok := e.params[name]
	if !ok {
		return nil, fmt.Errorf("tpu: no parameter %q", name)
	}
	return e.b.download(buf, e.g.Param(name).Value.Type)
}

// SetParam replaces the named parameter's device copy.
func (e *Executable) SetParam(name string, t *ir.Tensor) error {
	old, ok := e.params[name]
	if !ok {
		return fmt.Errorf("tpu: no parameter %q", name)
	}
	want := e.g.Param(name).Value.Type
	if t.DType() != want.DType || !t.Shape().Equal(want.Shape) {
		return fmt.Errorf("tpu: parameter %q is %v, got %s%v", name, want, t.DType(), t.Shape())
	}
	buf, err := e.b.upload(t)
	if err != nil {
		return err
	}
	destroy(old)
	e.params[name] = buf
	return nil
}

// Close frees the device copies of the parameters.
func (e *Executable) Close() error {
	for _, buf := range e.params {
		destroy(buf)
	}
	e.params = map[string]*pjrt.Buffer{}
	e.closed = true
	return nil
}

// ---------------------------------------------------------------- training

// Trainer runs compiled training steps (LowerTrainStep) whose parameters
// and state stay in device buffers between steps.
type Trainer struct {
	b     *Backend
	cfg   TrainConfig
	progs []trainProgram // one per batch shape
	// resident holds the device buffers of every non-input argument,
	// keyed by kind and name; a step replaces the donated ones with its
	// results.
	resident  map[residentKey]*pjrt.Buffer
	types     map[residentKey]ir.Type
	siloSizes []int64
	closed    bool
}

type trainProgram struct {
	prog *Program
	exe  *pjrt.LoadedExecutable
}

// NewTrainer lowers and compiles the training step of tg (see
// LowerTrainStep) and copies the parameters (and, with DST, their seeds:
// the parameters' values now) to the device, with zero optimizer state.
func (b *Backend) NewTrainer(tg *ir.Graph, cfg TrainConfig) (*Trainer, error) {
	t := &Trainer{b: b, cfg: cfg, resident: map[residentKey]*pjrt.Buffer{}, types: map[residentKey]ir.Type{}}
	if err := t.AddGraph(tg); err != nil {
		return nil, err
	}
	p := t.progs[0].prog
	for _, a := range p.Args {
		var src *ir.Tensor
		switch a.Kind {
		case ArgParam, ArgSeed:
			prm := tg.Param(a.Name)
			if prm == nil {
				t.Close()
				return nil, fmt.Errorf("tpu: internal error: no parameter %q", a.Name)
			}
			src = prm.Tensor
		case ArgState:
			src = a.Init
			if src == nil {
				src = ir.NewTensor(a.Type.DType, a.Type.Shape)
			}
		default:
			continue
		}
		buf, err := b.upload(src)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("tpu: %q: %w", a.Name, err)
		}
		key := residentKey{a.Kind, a.Name}
		t.resident[key], t.types[key] = buf, a.Type
	}
	if cfg.DST != nil {
		for _, silo := range cfg.DST.Silos {
			var n int64
			for _, name := range silo {
				n += int64(tg.Param(name).Value.Shape.Size())
			}
			if n > 0 {
				t.siloSizes = append(t.siloSizes, n)
			}
		}
	}
	return t, nil
}

// AddGraph compiles the step for another batch shape of the same model
// (same parameters and state); Step picks the program whose inputs match.
func (t *Trainer) AddGraph(tg *ir.Graph) error {
	prog, err := LowerTrainStep(tg, t.cfg)
	if err != nil {
		return err
	}
	if len(t.progs) > 0 {
		first := t.progs[0].prog
		var a, b []Arg
		for _, x := range first.Args {
			if x.Kind != ArgInput {
				a = append(a, x)
			}
		}
		for _, x := range prog.Args {
			if x.Kind != ArgInput {
				b = append(b, x)
			}
		}
		if len(a) != len(b) {
			return errors.New("tpu: AddGraph: the graph's parameters or state differ from the trainer's")
		}
		for i := range a {
			if a[i].Kind != b[i].Kind || a[i].Name != b[i].Name || a[i].Type.DType != b[i].Type.DType || !a[i].Type.Shape.Equal(b[i].Type.Shape) {
				return fmt.Errorf("tpu: AddGraph: argument %q differs from the trainer's", b[i].Name)
			}
		}
	}
	exe, err := t.b.compile(prog)
	if err != nil {
		return err
	}
	t.progs = append(t.progs, trainProgram{prog, exe})
	return nil
}

// Step takes training step number step (1 for the first) at learning
// rate lr on one batch (the training graph's inputs, in order).
func (t *Trainer) Step(step int64, lr float64, inputs []*ir.Tensor) (StepResult, error) {
	if t.closed {
		return StepResult{}, errors.New("tpu: trainer is closed")
	}
	var tp *trainProgram
	var lastErr error
	for i := range t.progs {
		if lastErr = checkInputs(t.progs[i].prog, inputs); lastErr == nil {
			tp = &t.progs[i]
			break
		}
	}
	if tp == nil {
		return StepResult{}, fmt.Errorf("tpu: no compiled step takes this batch (AddGraph a graph for its shape): %w", lastErr)
	}
	scalars, err := t.cfg.Optimizer.StepScalars(step, lr)
	if err != nil {
		return StepResult{}, err
	}
	p := tp.prog
	args := make([]*pjrt.Buffer, len(p.Args))
	donate := make([]bool, len(p.Args))
	var uploaded []*pjrt.Buffer
	defer func() { destroy(uploaded...) }()
	in := 0
	for i, a := range p.Args {
		switch a.Kind {
		case ArgInput, ArgStepScalars:
			src := ir.FromFloat32s(ir.Shape{len(scalars)}, scalars)
			if a.Kind == ArgInput {
				src = inputs[in]
				in++
			}
			buf, err := t.b.upload(src)
			if err != nil {
				return StepResult{}, fmt.Errorf("tpu: %q: %w", a.Name, err)
			}
			uploaded = append(uploaded, buf)
			args[i] = buf
		default:
			args[i] = t.resident[residentKey{a.Kind, a.Name}]
			donate[i] = a.AliasOf >= 0
		}
	}
	out, err := t.b.execute(tp.exe, args, donate)
	if err != nil {
		return StepResult{}, err
	}
	// Donated buffers are gone: the aliased results replace them.
	for _, a := range p.Args {
		if a.AliasOf >= 0 {
			key := residentKey{a.Kind, a.Name}
			t.resident[key] = out[a.AliasOf]
			out[a.AliasOf] = nil
		}
	}
	defer destroy(out...)
	var res StepResult
	get := func(name string) (*ir.Tensor, error) {
		i := p.ResultIndex(name)
		if i < 0 || out[i] == nil {
			return nil, fmt.Errorf("tpu: internal error: no result %q", name)
		}
		return t.b.download(out[i], p.Results[i].Type)
	}
	loss, err := get(ResultLoss)
	if err != nil {
		return res, err
	}
	res.Loss = loss.Float32s()[0]
	if t.cfg.DST != nil {
		kept, err := get(ResultKept)
		if err != nil {
			return res, err
		}
		changed, err := get(ResultChanged)
		if err != nil {
			return res, err
		}
		q, err := get(ResultThreshold)
		if err != nil {
			return res, err
		}
		exact, err := get(ResultExact)
		if err != nil {
			return res, err
		}
		for i := range kept.Int64s() {
			res.Silos = append(res.Silos, SiloStep{Size: t.siloSizes[i], Kept: kept.Int64s()[i], Changed: changed.Int64s()[i], Threshold: q.Float32s()[i], Exact: exact.Bools()[i]})
		}
	}
	return res, nil
}

// Eval runs g — a graph over the same parameters, such as ir.LossGraph
// of the model for validation — on the trainer's current parameters,
// which stay on the device (no copies). Programs are cached by their text.
func (t *Trainer) Eval(g *ir.Graph, inputs []*ir.Tensor) ([]*ir.Tensor, error) {
	if t.closed {
		return nil, errors.New("tpu: trainer is closed")
	}
	prog, err := LowerGraph(g)
	if err != nil {
		return nil, err
	}
	if err := checkInputs(prog, inputs); err != nil {
		return nil, err
	}
	exe, err := t.b.compile(prog)
	if err != nil {
		return nil, err
	}
	args := make([]*pjrt.Buffer, len(prog.Args))
	var uploaded []*pjrt.Buffer
	defer func() { destroy(uploaded...) }()
	in := 0
	for i, a := range prog.Args {
		if a.Kind == ArgInput {
			buf, err := t.b.upload(inputs[in])
			if err != nil {
				return nil, fmt.Errorf("tpu: input %q: %w", a.Name, err)
			}
			in++
			uploaded = append(uploaded, buf)
			args[i] = buf
			continue
		}
		key := residentKey{ArgParam, a.Name}
		buf, ok := t.resident[key]
		if !ok {
			return nil, fmt.Errorf("tpu: the graph reads parameter %q, which the trainer does not hold", a.Name)
		}
		if want := t.types[key]; want.DType != a.Type.DType || !want.Shape.Equal(a.Type.Shape) {
			return nil, fmt.Errorf("tpu: parameter %q is %v in the graph, %v in the trainer", a.Name, a.Type, want)
		}
		args[i] = buf
	}
	out, err := t.b.execute(exe, args, make([]bool, len(args)))
	if err != nil {
		return nil, err
	}
	defer destroy(out...)
	res := make([]*ir.Tensor, len(out))
	for i, buf := range out {
		if res[i], err = t.b.download(buf, prog.Results[i].Type); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Param copies the named parameter's current values from the device.
func (t *Trainer) Param(name string) (*ir.Tensor, error) {
	return t.State(ArgParam, name)
}

// State copies a resident argument (a parameter, a seed, or state such as
// "NAME/exp_avg", "NAME/mask", "dst:q") from the device, for
// checkpoints and tests.
func (t *Trainer) State(kind ArgKind, name string) (*ir.Tensor, error) {
	key := residentKey{kind, name}
	buf, ok := t.resident[key]
	if !ok {
		return nil, fmt.Errorf("tpu: the trainer has no %q", name)
	}
	return t.b.download(buf, t.types[key])
}

// SetState replaces a resident argument's device copy (restoring a
// checkpoint).
func (t *Trainer) SetState(kind ArgKind, name string, v *ir.Tensor) error {
	key := residentKey{kind, name}
	old, ok := t.resident[key]
	if !ok {
		return fmt.Errorf("tpu: the trainer has no %q", name)
	}
	if want := t.types[key]; v.DType() != want.DType || !v.Shape().Equal(want.Shape) {
		return fmt.Errorf("tpu: %q is %v, got %s%v", name, want, v.DType(), v.Shape())
	}
	buf, err := t.b.upload(v)
	if err != nil {
		return err
	}
	destroy(old)
	t.resident[key] = buf
	return nil
}

// Close frees the trainer's device buffers.
func (t *Trainer) Close() error {
	for _, buf := range t.resident {
		destroy(buf)
	}
	t.resident = map[residentKey]*pjrt.Buffer{}
	t.closed = true
	return nil
}
