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
	"github.com/dstune/dstune/update"
)

const haveCgo = true

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
func (b *Backend) Compile(g *ir.Graph, opts accel.Options) (accel.Executable, error) {
	if err := checkPrecision(opts); err != nil {
		return nil, err
	}
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

var _ accel.TrainingBackend = (*Backend)(nil)

// NewTrainer copies the parameters (and, with a selection, their seeds:
// the parameters' values now) to the device, with zero optimizer state;
// each training graph's step (LowerTrainStep) is compiled when it first
// runs.
func (b *Backend) NewTrainer(params []*ir.Param, prog *update.Program, opts accel.Options) (accel.Trainer, error) {
	if err := checkPrecision(opts); err != nil {
		return nil, err
	}
	return newTrainer(pjrtDevice{b}, params, prog)
}

// checkPrecision refuses what the lowering does not do yet: products in
// another precision than float32.
func checkPrecision(opts accel.Options) error {
	if p, err := accel.ParsePrecision(string(opts.Precision)); err != nil || p != accel.PrecisionFP32 {
		return fmt.Errorf("pjrt: matrix products in precision %q are not supported on this backend (fp32 is)", opts.Precision)
	}
	return nil
}

// pjrtDevice is the Trainer's device on a PJRT client.
type pjrtDevice struct{ b *Backend }

func (d pjrtDevice) compile(p *Program) (deviceProgram, error) { return d.b.compile(p) }

func (d pjrtDevice) upload(t *ir.Tensor) (deviceBuffer, error) { return d.b.upload(t) }

func (d pjrtDevice) download(buf deviceBuffer, t ir.Type) (*ir.Tensor, error) {
	return d.b.download(buf.(*pjrt.Buffer), t)
}

func (d pjrtDevice) execute(p deviceProgram, args []deviceBuffer, donate []bool) ([]deviceBuffer, error) {
	bufs := make([]*pjrt.Buffer, len(args))
	for i, a := range args {
		bufs[i] = a.(*pjrt.Buffer)
	}
	out, err := d.b.execute(p.(*pjrt.LoadedExecutable), bufs, donate)
	if err != nil {
		return nil, err
	}
	res := make([]deviceBuffer, len(out))
	for i, o := range out {
		res[i] = o
	}
	return res, nil
}

func (d pjrtDevice) free(buf deviceBuffer) {
	if b, ok := buf.(*pjrt.Buffer); ok && b != nil {
		_ = b.Destroy()
	}
}
