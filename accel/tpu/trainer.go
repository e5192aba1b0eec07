package tpu

import (
	"errors"
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
)

// device is what a Trainer needs of a runtime: compiled programs and
// buffers that stay on the device between runs. The PJRT backend (cgo)
// implements it; the tests implement it with the StableHLO evaluator, so
// that the Trainer and the engine built on it run here too.
type device interface {
	// compile compiles a program (or returns the one compiled before for
	// the same text).
	compile(p *Program) (deviceProgram, error)
	upload(t *ir.Tensor) (deviceBuffer, error)
	download(b deviceBuffer, t ir.Type) (*ir.Tensor, error)
	// execute runs a program; donate[i] hands argument i's buffer to it
	// (the buffer is invalid afterwards, its aliased result replaces it).
	execute(p deviceProgram, args []deviceBuffer, donate []bool) ([]deviceBuffer, error)
	free(b deviceBuffer)
}

// deviceBuffer and deviceProgram are a device's own handles.
type (
	deviceBuffer  any
	deviceProgram any
)

// StepResult is what one training step returns to the host.
type StepResult struct {
	Loss float32
	// DST (zero without): whether a selection ran (false: the subset was
	// fixed), one entry per selection unit (Program.Units), and for a
	// normalized run the entries each silo of DST.Silos keeps.
	Selected bool
	Units    []SiloStep
	SiloKept []int64
}

// SiloStep is one selection unit's DST outcome for a step.
type SiloStep struct {
	Size      int64   // entries in the unit
	K         int64   // the entries it should keep, dst.SubsetSize(ε, Size)
	Kept      int64   // entries kept free (differing from the seed)
	Changed   int64   // kept entries that were not kept the step before
	Threshold float32 // the threshold q used (when StepResult.Selected)
	Alg2      bool    // Algorithm 2 ran
	Alg2Count int64   // #{Δ > q̃}, Algorithm 2's own answer q̃
	Exact     bool    // the exact selection ran
	Fallback  bool    // the CPU method would count an exact fallback
}

// RealizedEps is Kept/Size.
func (s SiloStep) RealizedEps() float64 {
	if s.Size == 0 {
		return 0
	}
	return float64(s.Kept) / float64(s.Size)
}

// checkInputs checks a step's inputs against a program.
func checkInputs(p *Program, inputs []*ir.Tensor) error {
	n := 0
	for _, a := range p.Args {
		if a.Kind != ArgInput {
			continue
		}
		if n >= len(inputs) {
			return fmt.Errorf("tpu: %d inputs given, the program takes more", len(inputs))
		}
		t := inputs[n]
		if t == nil || t.DType() != a.Type.DType || !t.Shape().Equal(a.Type.Shape) {
			got := "nil"
			if t != nil {
				got = fmt.Sprintf("%s%v", t.DType(), t.Shape())
			}
			return fmt.Errorf("tpu: input %q is %s, want %v", a.Name, got, a.Type)
		}
		n++
	}
	if n != len(inputs) {
		return fmt.Errorf("tpu: %d inputs given, the program takes %d", len(inputs), n)
	}
	return nil
}

// residentKey names a device-resident argument: its kind and name.
type residentKey struct {
	kind ArgKind
	name string
}

// Trainer runs compiled training steps (LowerTrainStep) whose parameters
// and state stay in device buffers between steps: the arguments of
// parameters, optimizer and DST state are donated to the step and its
// aliased results take their place, so a step uploads only the batch and
// the step scalars and downloads only the loss and the DST metrics.
type Trainer struct {
	dev   device
	cfg   TrainConfig
	progs []trainProgram // one per batch shape
	evals map[*ir.Graph]trainProgram
	// resident holds the device buffers of every non-input argument,
	// keyed by kind and name; a step replaces the donated ones.
	resident map[residentKey]deviceBuffer
	types    map[residentKey]ir.Type
	closed   bool
}

type trainProgram struct {
	prog *Program
	exe  deviceProgram
}

// newTrainer lowers and compiles the training step of tg (see
// LowerTrainStep) and copies the parameters (and, with DST, their seeds:
// the parameters' values now) to the device, with zero state.
func newTrainer(dev device, tg *ir.Graph, cfg TrainConfig) (*Trainer, error) {
	t := &Trainer{dev: dev, cfg: cfg, evals: map[*ir.Graph]trainProgram{},
		resident: map[residentKey]deviceBuffer{}, types: map[residentKey]ir.Type{}}
	if err := t.AddGraph(tg); err != nil {
		return nil, err
	}
	for _, a := range t.progs[0].prog.Args {
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
		buf, err := dev.upload(src)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("tpu: %q: %w", a.Name, err)
		}
		key := residentKey{a.Kind, a.Name}
		t.resident[key], t.types[key] = buf, a.Type
	}
	return t, nil
}

// Units are the DST step's selection units (nil without DST).
func (t *Trainer) Units() []SelectionUnit { return t.progs[0].prog.Units }

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
	exe, err := t.dev.compile(prog)
	if err != nil {
		return err
	}
	t.progs = append(t.progs, trainProgram{prog, exe})
	return nil
}

// Step takes training step number step (1 for the first) at learning
// rate lr on one batch (the training graph's inputs, in order). When the
// loss is not finite the program leaves every parameter and all state
// unchanged; the caller sees the loss.
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
	scalars, err := t.cfg.StepScalars(step, lr)
	if err != nil {
		return StepResult{}, err
	}
	p := tp.prog
	args := make([]deviceBuffer, len(p.Args))
	donate := make([]bool, len(p.Args))
	var uploaded []deviceBuffer
	defer func() {
		for _, b := range uploaded {
			t.dev.free(b)
		}
	}()
	in := 0
	for i, a := range p.Args {
		switch a.Kind {
		case ArgInput, ArgStepScalars:
			src := ir.FromFloat32s(ir.Shape{len(scalars)}, scalars)
			if a.Kind == ArgInput {
				src = inputs[in]
				in++
			}
			buf, err := t.dev.upload(src)
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
	out, err := t.dev.execute(tp.exe, args, donate)
	if err != nil {
		return StepResult{}, err
	}
	// Donated buffers are gone: the aliased results replace them.
	for _, a := range p.Args {
		if a.AliasOf >= 0 {
			t.resident[residentKey{a.Kind, a.Name}] = out[a.AliasOf]
			out[a.AliasOf] = nil
		}
	}
	defer func() {
		for _, b := range out {
			if b != nil {
				t.dev.free(b)
			}
		}
	}()
	get := func(name string) (*ir.Tensor, error) {
		i := p.ResultIndex(name)
		if i < 0 || out[i] == nil {
			return nil, fmt.Errorf("tpu: internal error: no result %q", name)
		}
		return t.dev.download(out[i], p.Results[i].Type)
	}
	var res StepResult
	loss, err := get(ResultLoss)
	if err != nil {
		return res, err
	}
	res.Loss = loss.Float32s()[0]
	if t.cfg.DST == nil {
		return res, nil
	}
	packed, err := get(ResultDST)
	if err != nil {
		return res, err
	}
	nu := len(p.Units)
	row := func(r, i int) int64 { return packed.Int64s()[r*nu+i] }
	res.Selected = nu > 0 && row(rowSelected, 0) != 0
	for i, u := range p.Units {
		res.Units = append(res.Units, SiloStep{
			Size: u.Size, K: u.K,
			Kept:      row(rowKept, i),
			Changed:   row(rowChanged, i),
			Threshold: math.Float32frombits(uint32(row(rowThreshold, i))),
			Alg2:      row(rowAlg2, i) != 0,
			Alg2Count: row(rowAlg2Count, i),
			Exact:     row(rowExact, i) != 0,
			Fallback:  row(rowFallback, i) != 0,
		})
	}
	if p.ResultIndex(ResultSiloKept) >= 0 {
		sk, err := get(ResultSiloKept)
		if err != nil {
			return res, err
		}
		res.SiloKept = sk.Int64s()
	}
	return res, nil
}

// Eval runs g — a graph over the same parameters, such as ir.LossGraph
// of the model for validation — on the trainer's current parameters,
// which stay on the device (no copies). The program is lowered and
// compiled once per graph.
func (t *Trainer) Eval(g *ir.Graph, inputs []*ir.Tensor) ([]*ir.Tensor, error) {
	if t.closed {
		return nil, errors.New("tpu: trainer is closed")
	}
	tp, ok := t.evals[g]
	if !ok {
		prog, err := LowerGraph(g)
		if err != nil {
			return nil, err
		}
		for _, a := range prog.Args {
			if a.Kind == ArgInput {
				continue
			}
			want, ok := t.types[residentKey{ArgParam, a.Name}]
			if !ok {
				return nil, fmt.Errorf("tpu: the graph reads parameter %q, which the trainer does not hold", a.Name)
			}
			if want.DType != a.Type.DType || !want.Shape.Equal(a.Type.Shape) {
				return nil, fmt.Errorf("tpu: parameter %q is %v in the graph, %v in the trainer", a.Name, a.Type, want)
			}
		}
		exe, err := t.dev.compile(prog)
		if err != nil {
			return nil, err
		}
		tp = trainProgram{prog, exe}
		t.evals[g] = tp
	}
	if err := checkInputs(tp.prog, inputs); err != nil {
		return nil, err
	}
	args := make([]deviceBuffer, len(tp.prog.Args))
	var uploaded []deviceBuffer
	defer func() {
		for _, b := range uploaded {
			t.dev.free(b)
		}
	}()
	in := 0
	for i, a := range tp.prog.Args {
		if a.Kind == ArgInput {
			buf, err := t.dev.upload(inputs[in])
			if err != nil {
				return nil, fmt.Errorf("tpu: input %q: %w", a.Name, err)
			}
			in++
			uploaded = append(uploaded, buf)
			args[i] = buf
			continue
		}
		args[i] = t.resident[residentKey{ArgParam, a.Name}]
	}
	out, err := t.dev.execute(tp.exe, args, make([]bool, len(args)))
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, b := range out {
			t.dev.free(b)
		}
	}()
	res := make([]*ir.Tensor, len(out))
	for i, buf := range out {
		if res[i], err = t.dev.download(buf, tp.prog.Results[i].Type); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Param copies the named parameter's current values from the device.
func (t *Trainer) Param(name string) (*ir.Tensor, error) {
	return t.State(ArgParam, name)
}

// HasState reports whether the trainer holds the resident argument.
func (t *Trainer) HasState(kind ArgKind, name string) bool {
	_, ok := t.resident[residentKey{kind, name}]
	return ok
}

// StateType is the type of a resident argument.
func (t *Trainer) StateType(kind ArgKind, name string) (ir.Type, bool) {
	typ, ok := t.types[residentKey{kind, name}]
	return typ, ok
}

// State copies a resident argument (a parameter, a seed, or state such as
// "NAME/exp_avg", "NAME/mask", "dst:q") from the device, for
// checkpoints and tests.
func (t *Trainer) State(kind ArgKind, name string) (*ir.Tensor, error) {
	if t.closed {
		return nil, errors.New("tpu: trainer is closed")
	}
	key := residentKey{kind, name}
	buf, ok := t.resident[key]
	if !ok {
		return nil, fmt.Errorf("tpu: the trainer has no %q", name)
	}
	return t.dev.download(buf, t.types[key])
}

// SetState replaces a resident argument's device copy (restoring a
// checkpoint, setting a fixed mask).
func (t *Trainer) SetState(kind ArgKind, name string, v *ir.Tensor) error {
	if t.closed {
		return errors.New("tpu: trainer is closed")
	}
	key := residentKey{kind, name}
	old, ok := t.resident[key]
	if !ok {
		return fmt.Errorf("tpu: the trainer has no %q", name)
	}
	if want := t.types[key]; v.DType() != want.DType || !v.Shape().Equal(want.Shape) {
		return fmt.Errorf("tpu: %q is %v, got %s%v", name, want, v.DType(), v.Shape())
	}
	buf, err := t.dev.upload(v)
	if err != nil {
		return err
	}
	t.dev.free(old)
	t.resident[key] = buf
	return nil
}

// Close frees the trainer's device buffers.
func (t *Trainer) Close() error {
	for _, buf := range t.resident {
		t.dev.free(buf)
	}
	t.resident = map[residentKey]deviceBuffer{}
	t.closed = true
	return nil
}
