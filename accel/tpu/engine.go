package tpu

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
)

// PluginOption is the train.RunOptions.BackendOptions key of the PJRT
// plugin file (dstune train --pjrt-plugin).
const PluginOption = "pjrt-plugin"

func init() {
	train.RegisterEngine("pjrt", func(env train.EngineEnv) (train.Engine, error) {
		b, err := Open(Options{PluginPath: env.Options[PluginOption]})
		if err != nil {
			return nil, err
		}
		return NewEngine(b, env)
	})
}

// Engine is train's engine on a PJRT device (dstune train --backend
// pjrt): a Trainer whose compiled step holds the forward and backward
// pass, the optimizer and, for DST, the whole selection, with parameters,
// optimizer state, seeds, masks and thresholds resident on the device.
// A step uploads the batch and downloads the loss and the DST metrics;
// validation runs the loss graph on the resident parameters; checkpoints
// download everything, in the CPU engine's format (package dst's method
// state, so also the same delta file).
type Engine struct {
	dev    device
	src    train.GraphSource
	opt    train.Optimizer
	cfg    TrainConfig
	infos  []train.ParamInfo
	byName map[string]int
	shapes map[train.BatchShape]*engineShape

	trainer *Trainer
	method  train.Method // train.FullMethod, or *deviceDST
	dst     *dstPlan     // nil for full fine-tuning
	step    int64
	pending *train.EngineState // restored before the trainer exists
}

// engineShape holds a batch shape's graphs and input tensors.
type engineShape struct {
	train, loss            *ir.Graph
	trainFeed, lossFeed    []*ir.Tensor
	tokens, mask, targets  *ir.Tensor
	classify, hasTrainStep bool
}

var (
	_ train.Engine       = (*Engine)(nil)
	_ train.MethodRunner = (*Engine)(nil)
)

// NewEngine prepares training of env.Source on the backend's device with
// env's optimizer and method (full fine-tuning, or DST from package dst:
// its silos, tie rule, thresholds, random mask and delta files). Nothing
// is compiled until the first batch shows the shape.
func NewEngine(b *Backend, env train.EngineEnv) (*Engine, error) {
	return newEngine(b.trainerDevice(), env)
}

func newEngine(dev device, env train.EngineEnv) (*Engine, error) {
	if env.Optimizer == nil || env.Method == nil {
		return nil, errors.New("tpu: engine needs an optimizer and a method")
	}
	opt, err := optimizerFor(env.Optimizer.Config())
	if err != nil {
		return nil, err
	}
	e := &Engine{dev: dev, src: env.Source, opt: env.Optimizer, cfg: TrainConfig{Optimizer: opt},
		byName: map[string]int{}, shapes: map[train.BatchShape]*engineShape{}}
	for _, p := range env.Source.Params() {
		if p.Tensor.DType() != ir.Float32 {
			return nil, fmt.Errorf("parameter %q is %s: only float32 parameters can be trained (leave it out with --trainable)", p.Name, p.Tensor.DType())
		}
		if _, dup := e.byName[p.Name]; dup {
			return nil, fmt.Errorf("parameter %q is listed twice", p.Name)
		}
		e.byName[p.Name] = len(e.infos)
		e.infos = append(e.infos, train.ParamInfo{Name: p.Name, Shape: []int(p.Tensor.Shape().Clone())})
	}
	switch env.Method.Name() {
	case train.MethodFull:
		e.method = train.FullMethod{}
	case train.MethodDST:
		values := func(name string) []float32 { return env.Source.Params()[e.byName[name]].Tensor.Float32s() }
		if e.dst, err = newDSTPlan(env.Method, e.infos, values); err != nil {
			return nil, err
		}
		e.cfg.DST = e.dst.cfg
		e.method = &deviceDST{e: e}
	default:
		return nil, fmt.Errorf("tpu: the pjrt engine runs full fine-tuning and dst, not --method %s", env.Method.Name())
	}
	return e, nil
}

// optimizerFor maps train's optimizer configuration to the step's.
// Learning rates (the schedule's, Adafactor's relative step included)
// come with every step, from train.Optimizer.LR.
func optimizerFor(c train.OptimizerConfig) (Optimizer, error) {
	switch {
	case c.AdamW != nil:
		h := c.AdamW
		return Optimizer{Kind: AdamW, Beta1: h.Beta1, Beta2: h.Beta2, Eps: h.Eps, WeightDecay: h.WeightDecay}, nil
	case c.SGD != nil:
		h := c.SGD
		return Optimizer{Kind: SGD, Momentum: h.Momentum, Dampening: h.Dampening, Nesterov: h.Nesterov, WeightDecay: h.WeightDecay}, nil
	case c.Adafactor != nil:
		h := c.Adafactor
		return Optimizer{Kind: Adafactor, Beta1: h.Beta1, DecayRate: h.DecayRate, Eps1: h.Eps1, Eps2: h.Eps2,
			ClipThreshold: h.ClipThreshold, ScaleParameter: h.ScaleParameter}, nil
	}
	return Optimizer{}, fmt.Errorf("tpu: optimizer %q has no hyper-parameters", c.Name)
}

// Params lists the trainable parameters.
func (e *Engine) Params() []train.ParamInfo { return e.infos }

// Step is the number of steps taken.
func (e *Engine) Step() int64 { return e.step }

// Method is the method the run reports through: full fine-tuning, or DST
// as it ran on the device (its metrics, checkpoint state and delta).
func (e *Engine) Method() train.Method { return e.method }

// Trainer is the device trainer (nil before the first batch).
func (e *Engine) Trainer() *Trainer { return e.trainer }

func (e *Engine) shapeFor(shape train.BatchShape, needLoss bool) (*engineShape, error) {
	s := e.shapes[shape]
	if s == nil {
		s = &engineShape{
			tokens: ir.NewTensor(ir.Int64, ir.Shape{shape.B, shape.T}),
			mask:   ir.NewTensor(ir.Int64, ir.Shape{shape.B, shape.T}),
		}
		e.shapes[shape] = s
	}
	if !s.hasTrainStep {
		tg, err := e.src.TrainingGraph(shape)
		if err != nil {
			return nil, err
		}
		if err := e.checkTrainingGraph(tg); err != nil {
			return nil, err
		}
		if s.trainFeed, err = e.feed(tg, s); err != nil {
			return nil, err
		}
		if e.trainer == nil {
			if err := e.startTrainer(tg); err != nil {
				return nil, err
			}
		} else if err := e.trainer.AddGraph(tg); err != nil {
			return nil, err
		}
		s.train, s.hasTrainStep = tg, true
	}
	if needLoss && s.loss == nil {
		lg, err := e.src.LossGraph(shape)
		if err != nil {
			return nil, err
		}
		if len(lg.Outputs) != 1 || lg.Outputs[0].Name != train.LossOutput {
			return nil, fmt.Errorf("train: the loss graph's outputs are not just %q", train.LossOutput)
		}
		if s.lossFeed, err = e.feed(lg, s); err != nil {
			return nil, err
		}
		s.loss = lg
	}
	return s, nil
}

// startTrainer compiles the first step program and sets the state a
// restore or the method asks for.
func (e *Engine) startTrainer(tg *ir.Graph) error {
	t, err := newTrainer(e.dev, tg, e.cfg)
	if err != nil {
		return err
	}
	e.trainer = t
	if e.dst != nil {
		if err := e.dst.start(t); err != nil {
			return err
		}
	}
	if st := e.pending; st != nil {
		e.pending = nil
		if err := e.upload(st); err != nil {
			return err
		}
	}
	return nil
}

// checkTrainingGraph checks train.GraphSource's contract.
func (e *Engine) checkTrainingGraph(g *ir.Graph) error {
	if len(g.Outputs) != 1+len(e.infos) {
		return fmt.Errorf("train: training graph has %d outputs, want the loss and %d gradients", len(g.Outputs), len(e.infos))
	}
	if o := g.Outputs[0]; o.Name != train.LossOutput || o.Value.DType != ir.Float32 || o.Value.Shape.Size() != 1 {
		return fmt.Errorf("train: training graph's first output is %q %v, want a float32 scalar %q", o.Name, o.Value.Type, train.LossOutput)
	}
	for i, p := range e.infos {
		o := g.Outputs[1+i]
		if o.Name != train.GradPrefix+p.Name || o.Value.DType != ir.Float32 || !slices.Equal([]int(o.Value.Shape), p.Shape) {
			return fmt.Errorf("train: training graph output %d is %q %v, want %q float32%v", 1+i, o.Name, o.Value.Type, train.GradPrefix+p.Name, p.Shape)
		}
	}
	return nil
}

// feed lays out g's inputs: the token, mask and target tensors of s.
func (e *Engine) feed(g *ir.Graph, s *engineShape) ([]*ir.Tensor, error) {
	names := e.src.Inputs()
	feed := make([]*ir.Tensor, len(g.Inputs))
	for i, v := range g.Inputs {
		var t *ir.Tensor
		switch v.Name {
		case names.Tokens:
			t = s.tokens
		case names.Mask:
			t = s.mask
		case train.TargetsInput:
			if s.targets == nil {
				s.targets = ir.NewTensor(ir.Int64, v.Shape)
				s.classify = len(v.Shape) == 1
			}
			t = s.targets
		default:
			return nil, fmt.Errorf("train: the model's input %q is neither the tokens nor the attention mask: dstune cannot feed it", v.Name)
		}
		if v.DType != t.DType() || !v.Shape.Equal(t.Shape()) {
			return nil, fmt.Errorf("train: graph input %q is %v, want %s%v", v.Name, v.Type, t.DType(), t.Shape())
		}
		feed[i] = t
	}
	return feed, nil
}

func (s *engineShape) fill(b *train.Batch) error {
	copy(s.tokens.Int64s(), b.Tokens)
	copy(s.mask.Int64s(), b.AttentionMask)
	switch {
	case s.classify && b.Labels == nil:
		return errors.New("train: the model is trained to classify, the batch holds lm targets")
	case !s.classify && b.Targets == nil:
		return errors.New("train: the model is trained as an lm, the batch holds class labels")
	case s.classify:
		copy(s.targets.Int64s(), b.Labels)
	default:
		copy(s.targets.Int64s(), b.Targets)
	}
	return nil
}

// TrainStep runs one step on the device: forward, backward, optimizer
// and DST in one program. A non-finite loss is a *train.LossError and the
// program has left parameters and state as they were.
func (e *Engine) TrainStep(b *train.Batch, lrScale float64) (train.StepStats, error) {
	s, err := e.shapeFor(train.BatchShape{B: b.B, T: b.T}, false)
	if err != nil {
		return train.StepStats{}, err
	}
	if err := s.fill(b); err != nil {
		return train.StepStats{}, err
	}
	t := train.StepInfo{Step: e.step + 1, LRScale: lrScale}
	start := time.Now()
	res, err := e.trainer.Step(t.Step, e.opt.LR(t), s.trainFeed)
	if err != nil {
		return train.StepStats{}, fmt.Errorf("step %d: %w", t.Step, err)
	}
	stats := train.StepStats{Loss: float64(res.Loss), Targets: b.NumTargets, Compute: time.Since(start)}
	if math.IsNaN(stats.Loss) || math.IsInf(stats.Loss, 0) {
		return stats, &train.LossError{Step: t.Step, Loss: stats.Loss}
	}
	if e.dst != nil {
		e.dst.record(res, t.Step)
	}
	e.step = t.Step
	return stats, nil
}

// EvalLoss returns b's mean loss on the current parameters.
func (e *Engine) EvalLoss(b *train.Batch) (float64, error) {
	s, err := e.shapeFor(train.BatchShape{B: b.B, T: b.T}, true)
	if err != nil {
		return 0, err
	}
	if err := s.fill(b); err != nil {
		return 0, err
	}
	out, err := e.trainer.Eval(s.loss, s.lossFeed)
	if err != nil {
		return 0, err
	}
	return float64(out[0].Float32s()[0]), nil
}

// ParamValues copies a trainable parameter's current values from the
// device.
func (e *Engine) ParamValues(name string) ([]float32, error) {
	i, ok := e.byName[name]
	if !ok {
		return nil, fmt.Errorf("train: no trainable parameter %q", name)
	}
	if e.trainer == nil {
		if e.pending != nil {
			return slices.Clone(e.pending.Params[name]), nil
		}
		return slices.Clone(e.src.Params()[i].Tensor.Float32s()), nil
	}
	t, err := e.trainer.Param(name)
	if err != nil {
		return nil, err
	}
	return t.Float32s(), nil
}

// State copies the engine's state from the device: parameters, the
// optimizer's slots (train's names and layouts) and the method's state.
func (e *Engine) State() (*train.EngineState, error) {
	if e.trainer == nil {
		if e.pending != nil {
			return e.pending, nil
		}
		return nil, errors.New("tpu: no step has run: nothing to save")
	}
	st := &train.EngineState{Step: e.step, Params: map[string][]float32{}, Optimizer: map[string]*train.ParamState{}}
	for _, p := range e.infos {
		v, err := e.trainer.Param(p.Name)
		if err != nil {
			return nil, err
		}
		st.Params[p.Name] = v.Float32s()
		ps := e.opt.NewState(p.Shape)
		for i := range ps.Slots {
			sl := &ps.Slots[i]
			t, err := e.trainer.State(ArgState, p.Name+"/"+sl.Name)
			if err != nil {
				return nil, fmt.Errorf("tpu: optimizer slot %q of %q: %w", sl.Name, p.Name, err)
			}
			if t.Len() != len(sl.Data) {
				return nil, fmt.Errorf("tpu: optimizer slot %q of %q holds %d values on the device, %d in train's layout", sl.Name, p.Name, t.Len(), len(sl.Data))
			}
			copy(sl.Data, t.Float32s())
		}
		st.Optimizer[p.Name] = ps
	}
	if e.dst != nil {
		ms, err := e.dst.sync(e.trainer, e.step)
		if err != nil {
			return nil, err
		}
		st.Method = ms
	}
	return st, nil
}

// Restore sets the engine's state from a checkpoint; everything is
// checked before anything is changed.
func (e *Engine) Restore(st *train.EngineState) error {
	if len(st.Params) != len(e.infos) {
		return fmt.Errorf("checkpoint holds %d trainable parameters, the run trains %d", len(st.Params), len(e.infos))
	}
	for _, p := range e.infos {
		v, ok := st.Params[p.Name]
		if !ok {
			return fmt.Errorf("checkpoint has no values for parameter %q", p.Name)
		}
		if n := numElements(p.Shape); len(v) != n {
			return fmt.Errorf("checkpoint's parameter %q has %d values, the model's %d", p.Name, len(v), n)
		}
		saved, ok := st.Optimizer[p.Name]
		if !ok {
			return fmt.Errorf("checkpoint has no optimizer state for parameter %q", p.Name)
		}
		want := e.opt.NewState(p.Shape)
		if len(want.Slots) != len(saved.Slots) {
			return fmt.Errorf("parameter %q: checkpoint has %d optimizer slots, the optimizer keeps %d", p.Name, len(saved.Slots), len(want.Slots))
		}
		for i := range want.Slots {
			if w, s := want.Slots[i], saved.Slots[i]; w.Name != s.Name || len(w.Data) != len(s.Data) {
				return fmt.Errorf("parameter %q: checkpoint slot %q has %d values, the optimizer wants %q with %d", p.Name, s.Name, len(s.Data), w.Name, len(w.Data))
			}
		}
	}
	if e.dst != nil {
		if err := e.dst.check(st.Method); err != nil {
			return err
		}
	}
	e.step = st.Step
	if e.trainer == nil {
		e.pending = st
		return nil
	}
	return e.upload(st)
}

// upload copies a checked state to the device.
func (e *Engine) upload(st *train.EngineState) error {
	for _, p := range e.infos {
		if err := e.trainer.SetState(ArgParam, p.Name, ir.FromFloat32s(ir.Shape(p.Shape), st.Params[p.Name])); err != nil {
			return err
		}
		for _, sl := range st.Optimizer[p.Name].Slots {
			name := p.Name + "/" + sl.Name
			typ, ok := e.trainer.StateType(ArgState, name)
			if !ok || typ.Shape.Size() != len(sl.Data) {
				return fmt.Errorf("tpu: optimizer slot %q of %q: the device step keeps %v", sl.Name, p.Name, typ)
			}
			if err := e.trainer.SetState(ArgState, name, ir.FromFloat32s(typ.Shape, sl.Data)); err != nil {
				return fmt.Errorf("tpu: optimizer slot %q of %q: %w", sl.Name, p.Name, err)
			}
		}
	}
	if e.dst != nil {
		return e.dst.load(e.trainer, st.Method)
	}
	return nil
}

// Close releases the device buffers.
func (e *Engine) Close() error {
	if e.trainer != nil {
		return e.trainer.Close()
	}
	return nil
}

func numElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// toDistance maps kernels' distances to the step's.
func toDistance(d kernels.Distance) (Distance, error) {
	switch d {
	case kernels.DistanceAbs:
		return DistanceAbs, nil
	case kernels.DistanceRel:
		return DistanceRel, nil
	case kernels.DistanceInvRel:
		return DistanceInvRel, nil
	}
	return 0, fmt.Errorf("tpu: distance %v", d)
}
