package cpu

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/update"
)

var _ accel.TrainingBackend = (*Backend)(nil)

// NewTrainer prepares training of params with prog in host memory: the
// training graphs run on this backend reading the parameters' storage in
// place, the gradients are read from the executable without copies, and
// the update (the optimizer and the selection, lowered to package
// kernels: update_optim.go, update_select.go) writes the parameters in
// place. A step allocates nothing once its graph is compiled. Only float32
// parameters can be trained.
func (b *Backend) NewTrainer(params []*ir.Param, prog *update.Program, opts accel.Options) (accel.Trainer, error) {
	opt, err := lowerOptimizer(prog.Optimizer)
	if err != nil {
		return nil, err
	}
	t := &trainer{backend: b, opts: opts, prog: *prog, opt: opt, byName: map[string]int{},
		compiled: map[*ir.Graph]*trainStep{}, evals: map[*ir.Graph]accel.Executable{}, scan: newFiniteScan(opts.Threads)}
	for _, p := range params {
		if p.Tensor.DType() != ir.Float32 {
			return nil, fmt.Errorf("parameter %q is %s: only float32 parameters can be trained (leave it out with --trainable)", p.Name, p.Tensor.DType())
		}
		if _, dup := t.byName[p.Name]; dup {
			return nil, fmt.Errorf("parameter %q is listed twice", p.Name)
		}
		tp := &trainParam{name: p.Name, shape: []int(p.Tensor.Shape().Clone()), value: p.Tensor.Float32s()}
		newParamState(prog.Optimizer, tp)
		if prog.Selection != nil {
			if s, ok := prog.Seeds[p.Name]; ok && sameBits(s, tp.value) {
				tp.seed, tp.seedShared = s, true
			} else {
				tp.seed = slices.Clone(tp.value)
			}
		}
		t.byName[p.Name] = len(t.params)
		t.params = append(t.params, tp)
		t.tensors = append(t.tensors, p.Tensor)
	}
	if prog.Selection != nil {
		if t.sel, err = newSelection(prog.Selection, t.params); err != nil {
			return nil, err
		}
		t.sel.setPager(prog.SeedPages)
		for _, p := range t.params {
			t.sel.releaseSeed(p) // the comparison above read it
		}
	}
	return t, nil
}

// trainer is the CPU backend's accel.Trainer.
type trainer struct {
	backend  *Backend
	opts     accel.Options
	prog     update.Program
	opt      optimizer
	sel      *selection // nil without a selection
	params   []*trainParam
	tensors  []*ir.Tensor // the parameters' storage
	byName   map[string]int
	compiled map[*ir.Graph]*trainStep
	evals    map[*ir.Graph]accel.Executable
	res      update.Result
	host     update.HostStats
	scan     *finiteScan
	scaled   scaledPass // Accumulate's and clipping's passes
	// summing is set while the parameters' sums hold an accumulated
	// gradient (Accumulate) that Apply has not applied, sumBad when a batch
	// of it had a non-finite loss; lastExe is the executable of the last
	// batch added.
	summing, sumBad bool
	lastExe         *Executable
}

// trainStep is a compiled training graph and where its outputs are.
type trainStep struct {
	exe  accel.Executable
	loss int   // output index of the loss
	grad []int // output index of each parameter's gradient
}

// compile compiles a training graph, checking that it reads the
// trainer's parameters in place and gives a gradient for each.
func (t *trainer) compile(tg *ir.Graph) (*trainStep, error) {
	s := &trainStep{loss: -1, grad: make([]int, len(t.params))}
	for i := range s.grad {
		s.grad[i] = -1
	}
	for i, o := range tg.Outputs {
		if o.Name == ir.LossOutput {
			if o.Value.DType != ir.Float32 || o.Value.Shape.Size() != 1 {
				return nil, fmt.Errorf("cpu: training graph's loss is %v, want a float32 scalar", o.Value.Type)
			}
			s.loss = i
			continue
		}
		name, ok := cutPrefix(o.Name, ir.GradPrefix)
		if !ok {
			continue
		}
		j, ok := t.byName[name]
		if !ok {
			continue
		}
		if o.Value.DType != ir.Float32 || !slices.Equal([]int(o.Value.Shape), t.params[j].shape) {
			return nil, fmt.Errorf("cpu: training graph output %q is %v, want float32%v", o.Name, o.Value.Type, t.params[j].shape)
		}
		s.grad[j] = i
	}
	if s.loss < 0 {
		return nil, fmt.Errorf("cpu: the training graph has no %q output", ir.LossOutput)
	}
	for j, i := range s.grad {
		if i < 0 {
			return nil, fmt.Errorf("cpu: the training graph has no gradient %q", ir.GradPrefix+t.params[j].name)
		}
	}
	exe, err := t.compileShared(tg)
	if err != nil {
		return nil, err
	}
	s.exe = exe
	return s, nil
}

// stepOf returns the compiled training graph tg, compiling it on first
// use.
func (t *trainer) stepOf(tg *ir.Graph) (*trainStep, error) {
	if s := t.compiled[tg]; s != nil {
		return s, nil
	}
	s, err := t.compile(tg)
	if err != nil {
		return nil, err
	}
	t.compiled[tg] = s
	return s, nil
}

// compileShared compiles g and checks that it reads every trainable
// parameter from the trainer's storage.
func (t *trainer) compileShared(g *ir.Graph) (accel.Executable, error) {
	exe, err := t.backend.Compile(g, t.opts)
	if err != nil {
		return nil, err
	}
	for i, p := range t.params {
		if g.Param(p.name) == nil {
			continue
		}
		if tt, err := exe.Param(p.name); err != nil || tt != t.tensors[i] {
			exe.Close()
			return nil, fmt.Errorf("cpu: the graph does not share parameter %q's storage", p.name)
		}
	}
	return exe, nil
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || s[:len(prefix)] != prefix {
		return "", false
	}
	return s[len(prefix):], true
}

// Step runs tg and, when the loss and every gradient are finite, the
// update, after which it checks the parameters and optimizer slots for
// NaN and ±Inf (Result.NonFinite). The result belongs to the trainer
// until the next Step.
func (t *trainer) Step(tg *ir.Graph, inputs []*ir.Tensor, info update.StepInfo) (*update.Result, error) {
	s, out, err := t.run(tg, inputs)
	if err != nil {
		return nil, err
	}
	if out == nil {
		return &t.res, nil // a non-finite loss
	}
	for j, p := range t.params {
		p.grad = out[s.grad[j]].Float32s()
	}
	e, _ := s.exe.(*Executable)
	t.update(e, info)
	return &t.res, nil
}

// run runs the training graph tg on inputs and returns its outputs, nil
// when the loss (in t.res, which it resets) is not finite.
func (t *trainer) run(tg *ir.Graph, inputs []*ir.Tensor) (*trainStep, []*ir.Tensor, error) {
	s, err := t.stepOf(tg)
	if err != nil {
		return nil, nil, err
	}
	out, err := s.exe.Run(inputs)
	if err != nil {
		return nil, nil, err
	}
	t.res = update.Result{Loss: out[s.loss].Float32s()[0]}
	if l := float64(t.res.Loss); math.IsNaN(l) || math.IsInf(l, 0) {
		return s, nil, nil
	}
	return s, out, nil
}

// Accumulate runs tg and adds weight × its gradients to the gradient
// sum (allocated on first use: one float32 per trainable entry). The
// gradients are scaled in place, in the executable's outputs.
func (t *trainer) Accumulate(tg *ir.Graph, inputs []*ir.Tensor, weight float32, first bool) (*update.Result, error) {
	first = first || !t.summing
	s, out, err := t.run(tg, inputs)
	if err != nil {
		return nil, err
	}
	t.summing = true
	if out == nil {
		t.sumBad = true // a non-finite loss: nothing added, nothing to apply
		return &t.res, nil
	}
	if first {
		t.sumBad = false
	}
	for j, p := range t.params {
		g := out[s.grad[j]].Float32s()
		if p.sum == nil {
			p.sum = make([]float32, len(g))
		}
		t.scaled.run(p.sum, g, weight, !first, t.opts.Threads)
	}
	t.lastExe, _ = s.exe.(*Executable)
	return &t.res, nil
}

// Apply runs the update from the gradient sum.
func (t *trainer) Apply(info update.StepInfo) (*update.Result, error) {
	if !t.summing {
		return nil, errors.New("cpu: no gradient sum to apply")
	}
	t.summing = false
	t.res = update.Result{}
	if t.sumBad {
		return &t.res, nil
	}
	for _, p := range t.params {
		p.grad = p.sum
	}
	t.update(t.lastExe, info)
	return &t.res, nil
}

// update checks the gradients (p.grad) and measures their norm, clips
// them, and runs the optimizer and the selection, into t.res. e, the
// executable whose arena holds dead activations, may be nil.
func (t *trainer) update(e *Executable, info update.StepInfo) {
	defer func() {
		for _, p := range t.params {
			p.grad = nil
		}
	}()
	norm, nf := t.gradientNorm()
	if t.res.NonFinite = nf; nf != nil {
		return
	}
	t.res.GradNorm = norm
	if c := update.ClipFactor(norm, t.prog.MaxGradNorm); c < 1 {
		for _, p := range t.params {
			t.scaled.run(p.grad, p.grad, float32(c), false, t.opts.Threads)
		}
	}
	if t.sel != nil {
		if e != nil {
			e.dropDead(t.sel.mappedUnitBytes) // room for the seeds the selection maps
		}
		t.sel.update(t.opt, info, t.opts.Threads)
		if e != nil {
			e.restoreDead()
		}
		t.host = t.sel.host
		t.res.Selection = &t.sel.res
	} else {
		start := time.Now()
		for _, p := range t.params {
			t.opt.step(p, info, t.opts.Threads)
		}
		t.host = update.HostStats{Optimizer: time.Since(start)}
	}
	t.res.NonFinite = t.checkState()
	t.res.Host = &t.host
}

// scaledPass is the element-wise pass over a parameter's gradient that
// Accumulate and clipping run on the trainer's threads: dst = scale·src,
// or with add dst += scale·src (src scaled in place first, unless scale
// is 1: the product would be src itself), L1-sized pieces at a time so
// that the add reads the scaled values from cache. One is kept per
// trainer, so a pass allocates nothing.
type scaledPass struct {
	dst, src []float32
	scale    float32
	add      bool
	sp       splitter
}

func (s *scaledPass) run(dst, src []float32, scale float32, add bool, threads int) {
	s.dst, s.src, s.scale, s.add = dst, src, scale, add
	if s.sp.share == nil {
		s.sp = splitter{align: 16, share: s.share} // once: a method value allocates
	}
	s.sp.units = len(src)
	s.sp.run(workersFor(threads, len(src)))
	s.dst, s.src = nil, nil
}

func (s *scaledPass) share(lo, hi, _ int) {
	const piece = 4096
	for i := lo; i < hi; i += piece {
		j := min(i+piece, hi)
		d, g := s.dst[i:j], s.src[i:j]
		switch {
		case !s.add:
			kernels.ScaleF32(d, s.scale, g)
		case s.scale == 1:
			kernels.AddF32(d, d, g)
		default:
			kernels.ScaleF32(g, s.scale, g)
			kernels.AddF32(d, d, g)
		}
	}
}

// Eval runs g on the current parameters.
func (t *trainer) Eval(g *ir.Graph, inputs []*ir.Tensor) ([]*ir.Tensor, error) {
	exe := t.evals[g]
	if exe == nil {
		var err error
		if exe, err = t.compileShared(g); err != nil {
			return nil, err
		}
		t.evals[g] = exe
	}
	out, err := exe.Run(inputs)
	if err != nil {
		return nil, err
	}
	res := make([]*ir.Tensor, len(out))
	for i, o := range out {
		res[i] = o.Clone()
	}
	return res, nil
}

// Param returns a copy of a trainable parameter's values.
func (t *trainer) Param(name string) ([]float32, error) {
	i, ok := t.byName[name]
	if !ok {
		return nil, fmt.Errorf("cpu: no trainable parameter %q", name)
	}
	return slices.Clone(t.params[i].value), nil
}

// State copies the parameters, their optimizer slots and the selection's
// state.
func (t *trainer) State() (*update.State, error) {
	st := &update.State{Params: map[string][]float32{}, Optimizer: map[string][]update.Slot{}}
	for _, p := range t.params {
		st.Params[p.name] = slices.Clone(p.value)
		slots := make([]update.Slot, len(p.slots))
		for i, s := range p.slots {
			slots[i] = update.Slot{Name: s.Name, Shape: slices.Clone(s.Shape), Data: slices.Clone(s.Data)}
		}
		st.Optimizer[p.name] = slots
	}
	if t.sel != nil {
		st.Selection = t.sel.state()
	}
	return st, nil
}

// SetState checks st, then copies it in; nil fields keep their values.
func (t *trainer) SetState(st *update.State) error {
	if err := t.prog.CheckState(t.paramShapes(), st); err != nil {
		return err
	}
	if st.Selection != nil {
		if t.sel == nil {
			return errors.New("cpu: a selection state for a program without a selection")
		}
		if err := t.sel.setState(st.Selection); err != nil {
			return err
		}
	}
	for _, p := range t.params {
		if v, ok := st.Params[p.name]; ok {
			copy(p.value, v)
		}
		if slots, ok := st.Optimizer[p.name]; ok {
			for i, s := range slots {
				copy(p.slots[i].Data, s.Data)
			}
		}
	}
	return nil
}

func (t *trainer) paramShapes() map[string][]int {
	shapes := map[string][]int{}
	for _, p := range t.params {
		shapes[p.name] = p.shape
	}
	return shapes
}

// Close releases the executables.
func (t *trainer) Close() error {
	for _, s := range t.compiled {
		s.exe.Close()
	}
	for _, e := range t.evals {
		e.Close()
	}
	t.compiled, t.evals = nil, nil
	return nil
}

var _ accel.MemoryReporter = (*trainer)(nil)

// MemoryUse reports the seed copies, the optimizer state and the arenas
// of the executables compiled so far.
func (t *trainer) MemoryUse() accel.MemoryUse {
	var m accel.MemoryUse
	for _, p := range t.params {
		if p.seedShared {
			m.SeedShared += 4 * int64(len(p.seed))
		} else {
			m.Seed += 4 * int64(len(p.seed))
		}
		for _, s := range p.slots {
			m.OptimizerState += 4 * int64(len(s.Data))
		}
		m.OptimizerState += 4 * int64(len(p.scratch))
		m.GradientSum += 4 * int64(len(p.sum))
	}
	for _, s := range t.compiled {
		if e, ok := s.exe.(*Executable); ok {
			m.TrainArenas += int64(e.ArenaBytes)
		}
	}
	for _, exe := range t.evals {
		if e, ok := exe.(*Executable); ok {
			m.EvalArenas += int64(e.ArenaBytes)
		}
	}
	return m
}

// sameBits reports whether a and b hold the same float32 bits.
func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

var _ accel.StateViewer = (*trainer)(nil)

// StateView is State without copying the parameters and the slots.
func (t *trainer) StateView() (*update.State, error) {
	st := &update.State{Params: map[string][]float32{}, Optimizer: map[string][]update.Slot{}}
	for _, p := range t.params {
		st.Params[p.name] = p.value
		st.Optimizer[p.name] = slices.Clone(p.slots) // the slots' data is shared
	}
	if t.sel != nil {
		st.Selection = t.sel.state()
	}
	return st, nil
}
