package train

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// HostEngine trains on a backend whose parameters live in host memory
// (accel/cpu): it compiles the source's training graph per batch shape,
// reads the loss and the gradients the executable owns (no copies), and
// lets the method update the parameters' storage in place between runs.
// A step allocates nothing once its shape is compiled.
type HostEngine struct {
	src     GraphSource
	backend accel.Backend
	threads int
	opt     Optimizer
	method  Method

	params   []*TrainParam
	tensors  []*ir.Tensor // the parameters' storage, shared with the source
	infos    []ParamInfo
	byName   map[string]*TrainParam
	compiled map[BatchShape]*hostShape
	step     int64
}

// hostShape holds the executables and input tensors of one batch shape.
type hostShape struct {
	train, eval          accel.Executable
	trainFeed, evalFeed  []*ir.Tensor
	tokens, mask, target *ir.Tensor
	classify             bool // targets are labels [B]
}

// HostOptions configure a HostEngine.
type HostOptions struct {
	Threads   int // goroutines per kernel call; 0: the backend's default
	Optimizer Optimizer
	Method    Method
}

var _ Engine = (*HostEngine)(nil)

// NewHostEngine prepares training of src's parameters on backend. Only
// float32 parameters can be trained.
func NewHostEngine(src GraphSource, backend accel.Backend, opts HostOptions) (*HostEngine, error) {
	if opts.Optimizer == nil || opts.Method == nil {
		return nil, fmt.Errorf("train: engine needs an optimizer and a method")
	}
	e := &HostEngine{src: src, backend: backend, threads: opts.Threads, opt: opts.Optimizer, method: opts.Method,
		byName: map[string]*TrainParam{}, compiled: map[BatchShape]*hostShape{}}
	for _, p := range src.Params() {
		if p.Tensor.DType() != ir.Float32 {
			return nil, fmt.Errorf("parameter %q is %s: only float32 parameters can be trained (leave it out with --trainable)", p.Name, p.Tensor.DType())
		}
		if _, dup := e.byName[p.Name]; dup {
			return nil, fmt.Errorf("parameter %q is listed twice", p.Name)
		}
		shape := []int(p.Tensor.Shape().Clone())
		tp := &TrainParam{Name: p.Name, Shape: shape, Value: p.Tensor.Float32s(), State: e.opt.NewState(shape)}
		e.params = append(e.params, tp)
		e.tensors = append(e.tensors, p.Tensor)
		e.infos = append(e.infos, ParamInfo{Name: p.Name, Shape: shape})
		e.byName[p.Name] = tp
	}
	if err := e.method.Prepare(e.params); err != nil {
		return nil, err
	}
	return e, nil
}

// Params lists the trainable parameters.
func (e *HostEngine) Params() []ParamInfo { return e.infos }

// Step is the number of steps taken.
func (e *HostEngine) Step() int64 { return e.step }

// Threads is the kernel thread count the engine was configured with.
func (e *HostEngine) Threads() int { return e.threads }

// Executable returns the compiled training graph for a batch shape
// (compiling it if needed), for profiling.
func (e *HostEngine) Executable(shape BatchShape) (accel.Executable, error) {
	s, err := e.shapeFor(shape, false)
	if err != nil {
		return nil, err
	}
	return s.train, nil
}

// Feed fills the training graph's inputs for b and returns them (owned
// by the engine), for profiling with the executable.
func (e *HostEngine) Feed(b *Batch) ([]*ir.Tensor, error) {
	s, err := e.shapeFor(BatchShape{b.B, b.T}, false)
	if err != nil {
		return nil, err
	}
	if err := s.fill(b); err != nil {
		return nil, err
	}
	return s.trainFeed, nil
}

func (e *HostEngine) shapeFor(shape BatchShape, eval bool) (*hostShape, error) {
	s := e.compiled[shape]
	if s == nil {
		s = &hostShape{
			tokens: ir.NewTensor(ir.Int64, ir.Shape{shape.B, shape.T}),
			mask:   ir.NewTensor(ir.Int64, ir.Shape{shape.B, shape.T}),
		}
		g, err := e.src.TrainingGraph(shape)
		if err != nil {
			return nil, err
		}
		if err := e.checkTrainingGraph(g); err != nil {
			return nil, err
		}
		if s.train, s.trainFeed, err = e.compile(g, s); err != nil {
			return nil, err
		}
		e.compiled[shape] = s
	}
	if eval && s.eval == nil {
		g, err := e.src.LossGraph(shape)
		if err != nil {
			return nil, err
		}
		if len(g.Outputs) != 1 || g.Outputs[0].Name != LossOutput {
			return nil, fmt.Errorf("train: the loss graph's outputs are not just %q", LossOutput)
		}
		if s.eval, s.evalFeed, err = e.compile(g, s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// checkTrainingGraph checks the GraphSource contract on a training graph.
func (e *HostEngine) checkTrainingGraph(g *ir.Graph) error {
	if len(g.Outputs) != 1+len(e.params) {
		return fmt.Errorf("train: training graph has %d outputs, want the loss and %d gradients", len(g.Outputs), len(e.params))
	}
	if o := g.Outputs[0]; o.Name != LossOutput || o.Value.DType != ir.Float32 || o.Value.Shape.Size() != 1 {
		return fmt.Errorf("train: training graph's first output is %q %v, want a float32 scalar %q", o.Name, o.Value.Type, LossOutput)
	}
	for i, p := range e.params {
		o := g.Outputs[1+i]
		if o.Name != GradPrefix+p.Name || o.Value.DType != ir.Float32 || !slices.Equal([]int(o.Value.Shape), p.Shape) {
			return fmt.Errorf("train: training graph output %d is %q %v, want %q float32%v", 1+i, o.Name, o.Value.Type, GradPrefix+p.Name, p.Shape)
		}
		if gp := g.Param(p.Name); gp == nil || gp.Tensor != e.tensors[i] {
			return fmt.Errorf("train: the training graph does not share parameter %q's storage", p.Name)
		}
	}
	return nil
}

func (e *HostEngine) compile(g *ir.Graph, s *hostShape) (accel.Executable, []*ir.Tensor, error) {
	names := e.src.Inputs()
	feed := make([]*ir.Tensor, len(g.Inputs))
	for i, v := range g.Inputs {
		want := func(t *ir.Tensor) error {
			if v.DType != t.DType() || !v.Shape.Equal(t.Shape()) {
				return fmt.Errorf("train: graph input %q is %v, want %s%v", v.Name, v.Type, t.DType(), t.Shape())
			}
			feed[i] = t
			return nil
		}
		var err error
		switch v.Name {
		case names.Tokens:
			err = want(s.tokens)
		case names.Mask:
			err = want(s.mask)
		case TargetsInput:
			if s.target == nil {
				s.target = ir.NewTensor(ir.Int64, v.Shape)
				s.classify = len(v.Shape) == 1
			}
			err = want(s.target)
		default:
			err = fmt.Errorf("train: the model's input %q is neither the tokens nor the attention mask: dstune cannot feed it", v.Name)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	exe, err := e.backend.Compile(g, accel.Options{Threads: e.threads})
	if err != nil {
		return nil, nil, err
	}
	for i, p := range e.params {
		t, err := exe.Param(p.Name)
		if err != nil || t != e.tensors[i] {
			exe.Close()
			return nil, nil, fmt.Errorf("train: backend %s does not keep parameter %q in host memory: use an engine for it", e.backend.Name(), p.Name)
		}
	}
	return exe, feed, nil
}

// fill copies a batch into the shape's input tensors.
func (s *hostShape) fill(b *Batch) error {
	copy(s.tokens.Int64s(), b.Tokens)
	copy(s.mask.Int64s(), b.AttentionMask)
	switch {
	case s.classify && b.Labels == nil:
		return fmt.Errorf("train: the model is trained to classify, the batch holds lm targets")
	case !s.classify && b.Targets == nil:
		return fmt.Errorf("train: the model is trained as an lm, the batch holds class labels")
	case s.classify:
		copy(s.target.Int64s(), b.Labels)
	default:
		copy(s.target.Int64s(), b.Targets)
	}
	return nil
}

// TrainStep runs one training step on b.
func (e *HostEngine) TrainStep(b *Batch, lrScale float64) (StepStats, error) {
	s, err := e.shapeFor(BatchShape{b.B, b.T}, false)
	if err != nil {
		return StepStats{}, err
	}
	if err := s.fill(b); err != nil {
		return StepStats{}, err
	}
	t := StepInfo{Step: e.step + 1, LRScale: lrScale}
	start := time.Now()
	out, err := s.train.Run(s.trainFeed)
	if err != nil {
		return StepStats{}, fmt.Errorf("step %d: %w", t.Step, err)
	}
	stats := StepStats{Loss: float64(out[0].Float32s()[0]), Targets: b.NumTargets, Compute: time.Since(start)}
	if math.IsNaN(stats.Loss) || math.IsInf(stats.Loss, 0) {
		return stats, &LossError{Step: t.Step, Loss: stats.Loss}
	}
	for i, p := range e.params {
		p.Grad = out[1+i].Float32s()
	}
	start = time.Now()
	err = e.method.Update(e.params, e.opt, t, e.threads)
	for _, p := range e.params {
		p.Grad = nil
	}
	if err != nil {
		return stats, fmt.Errorf("step %d: %w", t.Step, err)
	}
	stats.Update = time.Since(start)
	e.step = t.Step
	return stats, nil
}

// EvalLoss returns b's mean loss.
func (e *HostEngine) EvalLoss(b *Batch) (float64, error) {
	s, err := e.shapeFor(BatchShape{b.B, b.T}, true)
	if err != nil {
		return 0, err
	}
	if err := s.fill(b); err != nil {
		return 0, err
	}
	out, err := s.eval.Run(s.evalFeed)
	if err != nil {
		return 0, err
	}
	return float64(out[0].Float32s()[0]), nil
}

// ParamValues returns a copy of a trainable parameter's values.
func (e *HostEngine) ParamValues(name string) ([]float32, error) {
	p := e.byName[name]
	if p == nil {
		return nil, fmt.Errorf("train: no trainable parameter %q", name)
	}
	return slices.Clone(p.Value), nil
}

// Method is the engine's method.
func (e *HostEngine) Method() Method { return e.method }

// State copies the engine's state.
func (e *HostEngine) State() (*EngineState, error) {
	st := &EngineState{Step: e.step, Params: map[string][]float32{}, Optimizer: map[string]*ParamState{}, Method: e.method.State()}
	for _, p := range e.params {
		st.Params[p.Name] = slices.Clone(p.Value)
		st.Optimizer[p.Name] = copyState(p.State)
	}
	return st, nil
}

// Restore sets the engine's state from a checkpoint. Everything is
// checked before anything is changed.
func (e *HostEngine) Restore(st *EngineState) error {
	if len(st.Params) != len(e.params) {
		return fmt.Errorf("checkpoint holds %d trainable parameters, the run trains %d", len(st.Params), len(e.params))
	}
	for _, p := range e.params {
		v, ok := st.Params[p.Name]
		if !ok {
			return fmt.Errorf("checkpoint has no values for parameter %q", p.Name)
		}
		if len(v) != len(p.Value) {
			return fmt.Errorf("checkpoint's parameter %q has %d values, the model's %d", p.Name, len(v), len(p.Value))
		}
		saved, ok := st.Optimizer[p.Name]
		if !ok {
			return fmt.Errorf("checkpoint has no optimizer state for parameter %q", p.Name)
		}
		if err := checkState(p.Name, p.State, saved); err != nil {
			return err
		}
	}
	if err := e.method.LoadState(st.Method); err != nil {
		return err
	}
	for _, p := range e.params {
		copy(p.Value, st.Params[p.Name])
		for i, s := range st.Optimizer[p.Name].Slots {
			copy(p.State.Slots[i].Data, s.Data)
		}
	}
	e.step = st.Step
	return nil
}

// Close releases the executables.
func (e *HostEngine) Close() error {
	for _, s := range e.compiled {
		s.train.Close()
		if s.eval != nil {
			s.eval.Close()
		}
	}
	e.compiled = nil
	return nil
}
