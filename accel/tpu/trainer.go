package tpu

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// device is what a Trainer needs of a runtime: compiled programs and
// buffers that stay on the device between runs. The PJRT backend (cgo)
// implements it; the tests implement it with the StableHLO evaluator, so
// that the Trainer and train's engine on top of it run here too.
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

// Trainer is the PJRT backend's accel.Trainer: it runs compiled training
// steps (LowerTrainStep: the training graph and the update program in one
// program) whose parameters and state stay in device buffers between
// steps. The arguments of parameters, optimizer and DST state are donated
// to the step and its aliased results take their place, so a step uploads
// only the batch and the step scalars and downloads only the loss, the
// gradients' norm and the DST outcome. Gradient accumulation runs
// LowerAccumulate's and LowerApply's programs instead, with the gradient
// sums on the device too (accumulate.go). The device keeps a subset as a
// bool mask per parameter; State and SetState convert it to and from
// update's kept positions.
type Trainer struct {
	dev    device
	prog   update.Program
	params []*ir.Param
	shapes map[string]ir.Shape
	layout *dstLayout // the device's selection units; nil without a selection
	steps  map[*ir.Graph]trainProgram
	evals  map[*ir.Graph]trainProgram
	accums map[*ir.Graph]trainProgram // accumulate programs
	apply  *trainProgram              // the apply program, once compiled
	acc    accumulation
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

var _ accel.Trainer = (*Trainer)(nil)

// newTrainer copies the parameters (and, with a selection, their seeds:
// the parameters' values now) to the device, with zero optimizer state
// and an empty subset. Steps are compiled per training graph, when first
// run.
func newTrainer(dev device, params []*ir.Param, prog *update.Program) (*Trainer, error) {
	if err := prog.Optimizer.Check(); err != nil {
		return nil, fmt.Errorf("tpu: %w", err)
	}
	t := &Trainer{dev: dev, prog: *prog, params: params, shapes: map[string]ir.Shape{},
		steps: map[*ir.Graph]trainProgram{}, evals: map[*ir.Graph]trainProgram{}, accums: map[*ir.Graph]trainProgram{},
		resident: map[residentKey]deviceBuffer{}, types: map[residentKey]ir.Type{}}
	for _, p := range params {
		if p.Tensor.DType() != ir.Float32 {
			return nil, fmt.Errorf("parameter %q is %s: only float32 parameters can be trained (leave it out with --trainable)", p.Name, p.Tensor.DType())
		}
		if _, dup := t.shapes[p.Name]; dup {
			return nil, fmt.Errorf("parameter %q is listed twice", p.Name)
		}
		t.shapes[p.Name] = p.Tensor.Shape().Clone()
	}
	if prog.Selection != nil {
		var err error
		if t.layout, err = layoutDST(prog.Selection, t.shapes); err != nil {
			return nil, err
		}
	}
	if err := t.uploadInitial(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// uploadInitial puts the parameters, their zero optimizer slots and the
// selection's seeds and empty state on the device.
func (t *Trainer) uploadInitial() error {
	put := func(kind ArgKind, name string, v *ir.Tensor) error {
		buf, err := t.dev.upload(v)
		if err != nil {
			return fmt.Errorf("tpu: %q: %w", name, err)
		}
		key := residentKey{kind, name}
		t.resident[key], t.types[key] = buf, ir.Type{DType: v.DType(), Shape: v.Shape().Clone()}
		return nil
	}
	for _, p := range t.params {
		if err := put(ArgParam, p.Name, p.Tensor); err != nil {
			return err
		}
		for _, s := range t.prog.Optimizer.Slots(p.Tensor.Shape()) {
			if err := put(ArgState, p.Name+"/"+s.Name, ir.NewTensor(ir.Float32, ir.Shape(s.Shape))); err != nil {
				return err
			}
		}
	}
	if t.layout == nil {
		return nil
	}
	byName := map[string]*ir.Param{}
	for _, p := range t.params {
		byName[p.Name] = p
	}
	for _, u := range t.layout.units {
		for _, p := range u.pieces {
			if err := put(ArgSeed, p.name, byName[p.name].Tensor); err != nil {
				return err
			}
			if err := put(ArgState, p.name+"/mask", ir.NewTensor(ir.Bool, p.shape)); err != nil {
				return err
			}
		}
	}
	nu := len(t.layout.units)
	if err := put(ArgState, stateQ, ir.NewTensor(ir.Float32, ir.Shape{nu})); err != nil {
		return err
	}
	if err := put(ArgState, stateReady, ir.NewTensor(ir.Bool, ir.Shape{nu})); err != nil {
		return err
	}
	return put(ArgState, stateFixed, ir.NewTensor(ir.Bool, ir.Shape{}))
}

// bind checks a program's non-input arguments against the resident
// buffers, uploading the frozen parameters g (nil: none) reads the first
// time.
func (t *Trainer) bind(p *Program, g *ir.Graph) error {
	for _, a := range p.Args {
		if a.Kind == ArgInput || a.Kind == ArgStepScalars {
			continue
		}
		key := residentKey{a.Kind, a.Name}
		typ, ok := t.types[key]
		if !ok && a.Kind == ArgParam && g != nil {
			prm := g.Param(a.Name)
			if prm == nil {
				return fmt.Errorf("tpu: internal error: no parameter %q", a.Name)
			}
			buf, err := t.dev.upload(prm.Tensor)
			if err != nil {
				return fmt.Errorf("tpu: %q: %w", a.Name, err)
			}
			t.resident[key], t.types[key] = buf, a.Type
			continue
		}
		if !ok {
			return fmt.Errorf("tpu: the step reads %q, which the trainer does not hold", a.Name)
		}
		if typ.DType != a.Type.DType || !typ.Shape.Equal(a.Type.Shape) {
			return fmt.Errorf("tpu: %q is %v in the graph, %v in the trainer", a.Name, a.Type, typ)
		}
	}
	return nil
}

// Step runs the training step of tg (compiled the first time) on one
// batch (tg's inputs, in order) as step info.Step. When the loss is not
// finite the program leaves every parameter and all state unchanged
// (Result.GradNorm 0, Selection nil). A gradient sum that Accumulate
// holds is left as it is.
func (t *Trainer) Step(tg *ir.Graph, inputs []*ir.Tensor, info update.StepInfo) (*update.Result, error) {
	if t.closed {
		return nil, errors.New("tpu: trainer is closed")
	}
	tp, err := t.stepProgram(tg)
	if err != nil {
		return nil, err
	}
	if err := checkInputs(tp.prog, inputs); err != nil {
		return nil, err
	}
	scalars, err := StepScalars(&t.prog, info)
	if err != nil {
		return nil, err
	}
	out, err := t.run(tp, inputs, ir.FromFloat32s(ir.Shape{len(scalars)}, scalars))
	if err != nil {
		return nil, err
	}
	defer t.freeAll(out)
	return t.stepResult(tp.prog, out)
}

// freeAll frees a run's results that did not replace a resident buffer.
func (t *Trainer) freeAll(out []deviceBuffer) {
	for _, b := range out {
		if b != nil {
			t.dev.free(b)
		}
	}
}

// stepProgram returns tg's step program, lowered and compiled the first
// time.
func (t *Trainer) stepProgram(tg *ir.Graph) (trainProgram, error) {
	if tp, ok := t.steps[tg]; ok {
		return tp, nil
	}
	prog, err := LowerTrainStep(tg, &t.prog)
	if err != nil {
		return trainProgram{}, err
	}
	tp, err := t.compile(prog, tg)
	if err != nil {
		return trainProgram{}, err
	}
	t.steps[tg] = tp
	return tp, nil
}

// compile checks prog's resident arguments against the trainer's (bind;
// g is the graph it was lowered from, nil for none) and compiles it.
func (t *Trainer) compile(prog *Program, g *ir.Graph) (trainProgram, error) {
	if err := t.bind(prog, g); err != nil {
		return trainProgram{}, err
	}
	exe, err := t.dev.compile(prog)
	if err != nil {
		return trainProgram{}, err
	}
	return trainProgram{prog, exe}, nil
}

// run executes a step program: the inputs and step scalars are uploaded,
// the resident arguments donated, and the aliased results take their
// places. It returns the other results, which the caller frees.
func (t *Trainer) run(tp trainProgram, inputs []*ir.Tensor, scalars *ir.Tensor) ([]deviceBuffer, error) {
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
			src := scalars
			if a.Kind == ArgInput {
				src = inputs[in]
				in++
			}
			buf, err := t.dev.upload(src)
			if err != nil {
				return nil, fmt.Errorf("tpu: %q: %w", a.Name, err)
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
		return nil, err
	}
	// Donated buffers are gone: the aliased results replace them.
	for _, a := range p.Args {
		if a.AliasOf >= 0 {
			t.resident[residentKey{a.Kind, a.Name}] = out[a.AliasOf]
			out[a.AliasOf] = nil
		}
	}
	return out, nil
}

// result1 downloads a program's named result from a run's results.
func (t *Trainer) result1(p *Program, out []deviceBuffer, name string) (*ir.Tensor, error) {
	i := p.ResultIndex(name)
	if i < 0 || out[i] == nil {
		return nil, fmt.Errorf("tpu: internal error: no result %q", name)
	}
	return t.dev.download(out[i], p.Results[i].Type)
}

// stepResult downloads the loss (a step program's; the apply program has
// none) and, after a finite loss, the gradients' norm and the selection's
// outcome.
func (t *Trainer) stepResult(p *Program, out []deviceBuffer) (*update.Result, error) {
	get := func(name string) (*ir.Tensor, error) { return t.result1(p, out, name) }
	res := &update.Result{}
	if p.ResultIndex(ResultLoss) >= 0 {
		loss, err := get(ResultLoss)
		if err != nil {
			return nil, err
		}
		res.Loss = loss.Float32s()[0]
		if l := float64(res.Loss); math.IsNaN(l) || math.IsInf(l, 0) {
			return res, nil
		}
	}
	norm, err := get(ResultGradNorm)
	if err != nil {
		return nil, err
	}
	res.GradNorm = float64(norm.Float32s()[0])
	if t.layout == nil {
		return res, nil
	}
	packed, err := get(ResultDST)
	if err != nil {
		return nil, err
	}
	if res.Selection, err = t.selectionResult(p, packed); err != nil {
		return nil, err
	}
	if p.ResultIndex(ResultSiloKept) >= 0 {
		gk, err := get(ResultSiloKept)
		if err != nil {
			return nil, err
		}
		res.Selection.GroupKept = gk.Int64s()
	}
	return res, nil
}

// selectionResult unpacks the step's DST outcome into every unit of the
// selection (an empty unit reports nothing kept).
func (t *Trainer) selectionResult(p *Program, packed *ir.Tensor) (*update.SelectionResult, error) {
	nu := len(p.Units)
	if packed.Len() != numDSTRows*nu {
		return nil, fmt.Errorf("tpu: internal error: DST outcome of %d entries for %d units", packed.Len(), nu)
	}
	row := func(r, i int) int64 { return packed.Int64s()[r*nu+i] }
	units := t.prog.Selection.Units
	sr := &update.SelectionResult{Selected: nu > 0 && row(rowSelected, 0) != 0, Units: make([]update.UnitResult, len(units))}
	for i, u := range units {
		sr.Units[i] = update.UnitResult{K: u.K}
		if sr.Selected {
			sr.Units[i].Q, sr.Units[i].HasQ = float32(math.Inf(1)), true // keeps nothing
		}
	}
	for i, u := range p.Units {
		r := update.UnitResult{
			Size: u.Size, K: u.K,
			Kept:     row(rowKept, i),
			Entered:  row(rowChanged, i),
			HasQ:     sr.Selected,
			Alg2:     row(rowAlg2, i) != 0,
			Exact:    row(rowExact, i) != 0,
			Fallback: row(rowFallback, i) != 0,
		}
		if r.HasQ {
			r.Q = math.Float32frombits(uint32(row(rowThreshold, i)))
		}
		if r.Alg2 {
			r.Alg2Count = row(rowAlg2Count, i)
		}
		sr.Units[u.Unit] = r
	}
	return sr, nil
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
		if tp, err = t.compile(prog, g); err != nil {
			return nil, err
		}
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

// Param copies the named trainable parameter's current values from the
// device.
func (t *Trainer) Param(name string) ([]float32, error) {
	if _, ok := t.shapes[name]; !ok {
		return nil, fmt.Errorf("tpu: no trainable parameter %q", name)
	}
	v, err := t.resident1(ArgParam, name)
	if err != nil {
		return nil, err
	}
	return v.Float32s(), nil
}

// resident1 copies a resident argument (a parameter, a seed, or state such
// as "NAME/exp_avg", "NAME/mask", "dst:q") from the device.
func (t *Trainer) resident1(kind ArgKind, name string) (*ir.Tensor, error) {
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

// setResident replaces a resident argument's device copy.
func (t *Trainer) setResident(kind ArgKind, name string, v *ir.Tensor) error {
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

// State copies the parameters, their optimizer slots and the selection's
// state from the device.
func (t *Trainer) State() (*update.State, error) {
	st := &update.State{Params: map[string][]float32{}, Optimizer: map[string][]update.Slot{}}
	for _, p := range t.params {
		v, err := t.Param(p.Name)
		if err != nil {
			return nil, err
		}
		st.Params[p.Name] = v
		var slots []update.Slot
		for _, s := range t.prog.Optimizer.Slots(p.Tensor.Shape()) {
			v, err := t.resident1(ArgState, p.Name+"/"+s.Name)
			if err != nil {
				return nil, fmt.Errorf("tpu: optimizer slot %q of %q: %w", s.Name, p.Name, err)
			}
			slots = append(slots, update.Slot{Name: s.Name, Shape: s.Shape, Data: v.Float32s()})
		}
		st.Optimizer[p.Name] = slots
	}
	if t.layout == nil {
		return st, nil
	}
	sel := update.NewSelectionState(t.prog.Selection)
	q, err := t.resident1(ArgState, stateQ)
	if err != nil {
		return nil, err
	}
	ready, err := t.resident1(ArgState, stateReady)
	if err != nil {
		return nil, err
	}
	fixed, err := t.resident1(ArgState, stateFixed)
	if err != nil {
		return nil, err
	}
	sel.Fixed = fixed.Bools()[0]
	for i, u := range t.layout.units {
		sel.Q[u.Unit], sel.Ready[u.Unit] = q.Float32s()[i], ready.Bools()[i]
		for _, p := range u.pieces {
			mask, err := t.resident1(ArgState, p.name+"/mask")
			if err != nil {
				return nil, err
			}
			kept := []int32{}
			for pos, k := range mask.Bools() {
				if k {
					kept = append(kept, int32(pos))
				}
			}
			sel.Kept[p.name] = kept
		}
	}
	for name, kept := range sel.Kept {
		if kept == nil {
			sel.Kept[name] = []int32{} // a parameter of an empty unit
		}
	}
	st.Selection = sel
	return st, nil
}

// SetState checks st against the program, then copies it to the device;
// nil fields keep their values.
func (t *Trainer) SetState(st *update.State) error {
	shapes := map[string][]int{}
	for name, s := range t.shapes {
		shapes[name] = s
	}
	if err := t.prog.CheckState(shapes, st); err != nil {
		return fmt.Errorf("tpu: %w", err)
	}
	for _, p := range t.params {
		if v, ok := st.Params[p.Name]; ok {
			if err := t.setResident(ArgParam, p.Name, ir.FromFloat32s(t.shapes[p.Name], slices.Clone(v))); err != nil {
				return err
			}
		}
		for _, s := range st.Optimizer[p.Name] {
			name := p.Name + "/" + s.Name
			if err := t.setResident(ArgState, name, ir.FromFloat32s(t.types[residentKey{ArgState, name}].Shape, slices.Clone(s.Data))); err != nil {
				return fmt.Errorf("tpu: optimizer slot %q of %q: %w", s.Name, p.Name, err)
			}
		}
	}
	sel := st.Selection
	if sel == nil {
		return nil
	}
	nu := len(t.layout.units)
	q, ready := make([]float32, nu), make([]bool, nu)
	for i, u := range t.layout.units {
		q[i], ready[i] = sel.Q[u.Unit], sel.Ready[u.Unit]
		for _, p := range u.pieces {
			mask := make([]bool, p.shape.Size())
			for _, pos := range sel.Kept[p.name] {
				mask[pos] = true
			}
			if err := t.setResident(ArgState, p.name+"/mask", ir.FromBools(p.shape, mask)); err != nil {
				return err
			}
		}
	}
	if err := t.setResident(ArgState, stateQ, ir.FromFloat32s(ir.Shape{nu}, q)); err != nil {
		return err
	}
	if err := t.setResident(ArgState, stateReady, ir.FromBools(ir.Shape{nu}, ready)); err != nil {
		return err
	}
	return t.setResident(ArgState, stateFixed, ir.FromBools(ir.Shape{}, []bool{sel.Fixed}))
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
