package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// BatchShape is the shape a graph is specialized for: B rows of T tokens.
type BatchShape struct{ B, T int }

// InputNames say which graph inputs a batch feeds.
type InputNames struct {
	Tokens string // [B, T]: the token ids
	Mask   string // optional [B, T]: 1 at real tokens, 0 at padding ("" when the model has none)
	// PositionIDs (optional, [B, T]) is fed each token's position,
	// derived from the mask as Hugging Face does (ir.PositionIDs);
	// TokenTypeIDs (optional, [B, T]) is fed zeros. All four are int64 or
	// int32, as the graph declares each.
	PositionIDs, TokenTypeIDs string
}

// TargetsInput is the name of the training and loss graphs' extra input
// (ir.TrainingGraph's contract): int64 next-token targets [B, T] for lm,
// labels [B] for classify, IgnoreIndex where nothing counts.
const TargetsInput = "targets"

// A GraphSource builds what an engine compiles for one batch shape. Both
// graphs take the model's inputs (InputNames) followed by TargetsInput.
// The training graph's outputs are ir.LossOutput followed by
// ir.GradPrefix+name for every parameter of Params, in that order; the
// loss graph's only output is ir.LossOutput. Every graph shares the
// parameters' storage (Params()[i].Tensor).
type GraphSource interface {
	Params() []*ir.Param // the trainable parameters
	Inputs() InputNames
	TrainingGraph(shape BatchShape) (*ir.Graph, error)
	LossGraph(shape BatchShape) (*ir.Graph, error)
}

// StepStats describe one training step.
type StepStats struct {
	Loss    float64 // the batch's mean loss, before the update
	Targets int     // entries that counted in the loss
	// GradNorm is the global L2 norm of the gradients the update read
	// (before any clipping).
	GradNorm float64
	// Compute is the forward and backward pass, Update the update
	// (optimizer and, for DST, the selection) where the backend measures
	// it apart (on a device the whole step is Compute).
	Compute, Update time.Duration
}

// LossError is a non-finite training loss; the step's update was not
// applied.
type LossError struct {
	Step int64
	Loss float64
	// Validation: the loss is the validation loss after the step.
	Validation bool
}

func (e *LossError) Error() string {
	if e.Validation {
		return fmt.Sprintf("step %d: validation loss is %v", e.Step, e.Loss)
	}
	return fmt.Sprintf("step %d: loss is %v", e.Step, e.Loss)
}

// EngineState is what a checkpoint keeps of an engine: the step count,
// the trainable parameters' values, their optimizer slots and the
// method's state (as the method writes it into a checkpoint; Selection is
// the same state as the backend holds it). Values are copies.
type EngineState struct {
	Step      int64
	Params    map[string][]float32
	Optimizer map[string][]update.Slot
	Method    MethodState
	Selection *update.SelectionState
}

// Engine runs the training steps of one model on one training backend
// (accel.TrainingBackend): it builds the update program from the
// optimizer and the method, feeds batches to the source's graphs, and
// turns the backend's state into the checkpoint's and back. The CPU and
// the PJRT backend run the same engine; only their trainers differ.
type Engine struct {
	src     GraphSource
	trainer accel.Trainer
	prog    update.Program
	method  Method
	params  []*ir.Param
	byName  map[string]bool
	shapes  map[BatchShape]*engineShape
	step    int64
	last    *update.Result
}

// engineShape holds the graphs and input tensors of one batch shape.
type engineShape struct {
	train, loss, logits   *ir.Graph
	trainFeed, lossFeed   []*ir.Tensor
	logitsFeed            []*ir.Tensor
	scored                *ir.Graph // the loss and the logits (EvalScored)
	scoredFeed            []*ir.Tensor
	shape                 BatchShape
	tokens, mask, target  *ir.Tensor // tokens and mask in the type the graph declares
	positions, tokenTypes *ir.Tensor // allocated when the model has such inputs
	positions64           []int64    // the positions, computed before an int32 input takes them
	classify              bool       // targets are labels [B]
	stepInputs            []stepInput
	// accum is the training graph of a gradient-accumulation step (its
	// loss divided by denom, the step's number of targets:
	// ir.WithLossDenominator), made on first use; noAccum says that the
	// source's loss takes no denominator, so that such steps weight the
	// training graph's gradients instead.
	accum     *ir.Graph
	accumFeed []*ir.Tensor
	denom     *ir.Tensor
	noAccum   bool
}

// stepInput is a graph input the source fills every step (StepInputs).
type stepInput struct {
	name string
	t    *ir.Tensor
}

// NewEngine prepares training of src's parameters on backend with the
// optimizer and method, threads goroutines per kernel call (0: the
// backend's default). Nothing is compiled until the first batch shows the
// shape.
func NewEngine(src GraphSource, backend accel.Backend, opt update.Optimizer, method Method, threads int) (*Engine, error) {
	return NewEngineWith(src, backend, update.Program{Optimizer: opt}, method, accel.Options{Threads: threads})
}

// NewEngineWith is NewEngine with the update's settings and the backend's
// options in full: prog's optimizer and gradient clipping (its selection
// and seeds are the method's, filled in here), the threads, and the
// precision of the graphs' matrix products (the update is float32
// whatever it is).
func NewEngineWith(src GraphSource, backend accel.Backend, prog update.Program, method Method, opts accel.Options) (*Engine, error) {
	tb, ok := backend.(accel.TrainingBackend)
	if !ok {
		return nil, fmt.Errorf("backend %s cannot train", backend.Name())
	}
	if method == nil {
		return nil, errors.New("train: engine needs a method")
	}
	e := &Engine{src: src, method: method, params: src.Params(), byName: map[string]bool{}, shapes: map[BatchShape]*engineShape{}}
	for _, p := range e.params {
		if e.byName[p.Name] {
			return nil, fmt.Errorf("parameter %q is listed twice", p.Name)
		}
		e.byName[p.Name] = true
	}
	sel, init, err := method.Prepare(e.params)
	if err != nil {
		return nil, err
	}
	e.prog = update.Program{Optimizer: prog.Optimizer, MaxGradNorm: prog.MaxGradNorm, Selection: sel}
	if s, ok := src.(*sharedSource); ok && sel != nil && s.seeds != nil {
		e.prog.Seeds, e.prog.SeedPages = s.seeds.seeds, s.seeds
	}
	if e.trainer, err = tb.NewTrainer(e.params, &e.prog, opts); err != nil {
		return nil, err
	}
	if init != nil {
		if err := e.trainer.SetState(&update.State{Selection: init}); err != nil {
			e.trainer.Close()
			return nil, err
		}
	}
	return e, nil
}

// Params lists the trainable parameters, for their names and shapes (a
// device trains copies: ParamValues reads the current values).
func (e *Engine) Params() []*ir.Param { return e.params }

// Step is the number of steps taken.
func (e *Engine) Step() int64 { return e.step }

// Program is the update program the backend runs after every backward
// pass.
func (e *Engine) Program() *update.Program { return &e.prog }

// LastResult is what the last step reported (valid until the next step).
func (e *Engine) LastResult() *update.Result { return e.last }

// TrainingGraph returns the training graph of a batch shape and Feed the
// inputs a batch fills (owned by the engine), for profiling.
func (e *Engine) TrainingGraph(shape BatchShape) (*ir.Graph, error) {
	s, err := e.shapeFor(shape, false)
	if err != nil {
		return nil, err
	}
	return s.train, nil
}

// Feed fills the training graph's inputs for b and returns them.
func (e *Engine) Feed(b *Batch) ([]*ir.Tensor, error) {
	s, err := e.shapeFor(BatchShape{b.B, b.T}, false)
	if err != nil {
		return nil, err
	}
	if err := s.fill(b); err != nil {
		return nil, err
	}
	e.fillStepInputs(s, e.step+1)
	return s.trainFeed, nil
}

// fillStepInputs fills the source's own inputs of s for batch draw (StepInputs).
func (e *Engine) fillStepInputs(s *engineShape, draw int64) {
	for _, in := range s.stepInputs {
		sourceAs[StepInputs](e.src).FillStepInput(in.name, draw, in.t)
	}
}

func (e *Engine) shapeFor(shape BatchShape, needLoss bool) (*engineShape, error) {
	s := e.shapes[shape]
	if s == nil {
		s = &engineShape{shape: shape}
		g, err := e.src.TrainingGraph(shape)
		if err != nil {
			return nil, err
		}
		if err := e.checkTrainingGraph(g); err != nil {
			return nil, err
		}
		if s.trainFeed, err = e.feed(g, s, false); err != nil {
			return nil, err
		}
		s.train = g
		e.shapes[shape] = s
	}
	if needLoss && s.loss == nil {
		g, err := e.src.LossGraph(shape)
		if err != nil {
			return nil, err
		}
		if len(g.Outputs) != 1 || g.Outputs[0].Name != ir.LossOutput {
			return nil, fmt.Errorf("train: the loss graph's outputs are not just %q", ir.LossOutput)
		}
		if s.lossFeed, err = e.feed(g, s, false); err != nil {
			return nil, err
		}
		s.loss = g
	}
	return s, nil
}

// accumGraph makes s's training graph of a gradient-accumulation step
// (s.accum), unless it is made or the source's loss takes no denominator
// (s.noAccum).
func (e *Engine) accumGraph(s *engineShape) error {
	if s.accum != nil || s.noAccum {
		return nil
	}
	g, ok, err := ir.WithLossDenominator(s.train)
	if err != nil {
		return fmt.Errorf("train: batch %d×%d: %w", s.shape.B, s.shape.T, err)
	}
	if !ok {
		s.noAccum = true
		return nil
	}
	feed, err := e.feed(g, s, true)
	if err != nil {
		return err
	}
	s.accum, s.accumFeed = g, feed
	return nil
}

// checkTrainingGraph checks the GraphSource contract on a training graph.
func (e *Engine) checkTrainingGraph(g *ir.Graph) error {
	if len(g.Outputs) != 1+len(e.params) {
		return fmt.Errorf("train: training graph has %d outputs, want the loss and %d gradients", len(g.Outputs), len(e.params))
	}
	if o := g.Outputs[0]; o.Name != ir.LossOutput || o.Value.DType != ir.Float32 || o.Value.Shape.Size() != 1 {
		return fmt.Errorf("train: training graph's first output is %q %v, want a float32 scalar %q", o.Name, o.Value.Type, ir.LossOutput)
	}
	for i, p := range e.params {
		o := g.Outputs[1+i]
		if o.Name != ir.GradPrefix+p.Name || o.Value.DType != ir.Float32 || !o.Value.Shape.Equal(p.Tensor.Shape()) {
			return fmt.Errorf("train: training graph output %d is %q %v, want %q float32%v", 1+i, o.Name, o.Value.Type, ir.GradPrefix+p.Name, p.Tensor.Shape())
		}
		if gp := g.Param(p.Name); gp == nil || gp.Tensor != p.Tensor {
			return fmt.Errorf("train: the training graph does not share parameter %q's storage", p.Name)
		}
	}
	return nil
}

// feed lays out g's inputs: the token, mask and target tensors of s, and
// with denom its loss denominator (ir.LossDenominatorInput). Every graph of
// s reads the same tensors.
func (e *Engine) feed(g *ir.Graph, s *engineShape, denom bool) ([]*ir.Tensor, error) {
	names := e.src.Inputs()
	feed := make([]*ir.Tensor, len(g.Inputs))
	// ids is the batch tensor of an integer input: int64 or int32, as the
	// first graph declares it (a later graph must agree, checked below).
	ids := func(t **ir.Tensor, v *ir.Value) *ir.Tensor {
		if *t == nil {
			dt := ir.Int64
			if v.DType == ir.Int32 {
				dt = ir.Int32
			}
			*t = ir.NewTensor(dt, ir.Shape{s.shape.B, s.shape.T})
		}
		return *t
	}
	for i, v := range g.Inputs {
		var t *ir.Tensor
		switch n := v.Name; {
		case n == names.Tokens:
			t = ids(&s.tokens, v)
		case n == names.Mask:
			t = ids(&s.mask, v)
		case n == names.PositionIDs:
			t = ids(&s.positions, v)
		case n == names.TokenTypeIDs:
			t = ids(&s.tokenTypes, v)
		case n == TargetsInput:
			if s.target == nil {
				s.target = ir.NewTensor(ir.Int64, v.Shape)
				s.classify = len(v.Shape) == 1
			}
			t = s.target
		case denom && n == ir.LossDenominatorInput:
			if s.denom == nil {
				s.denom = ir.NewTensor(ir.Float32, ir.Shape{})
			}
			t = s.denom
		default:
			si := sourceAs[StepInputs](e.src)
			if si == nil || !si.HasStepInput(v.Name) {
				return nil, fmt.Errorf("train: the model's input %q is none of the tokens, attention mask, position ids or token types: dstune cannot feed it", v.Name)
			}
			i := slices.IndexFunc(s.stepInputs, func(in stepInput) bool { return in.name == v.Name })
			if i < 0 {
				i = len(s.stepInputs)
				s.stepInputs = append(s.stepInputs, stepInput{v.Name, ir.NewTensor(v.DType, v.Shape)})
			}
			t = s.stepInputs[i].t
		}
		if v.DType != t.DType() || !v.Shape.Equal(t.Shape()) {
			return nil, fmt.Errorf("train: graph input %q is %v, want %s%v", v.Name, v.Type, t.DType(), t.Shape())
		}
		feed[i] = t
	}
	return feed, nil
}

// fill copies a batch into the shape's input tensors.
func (s *engineShape) fill(b *Batch) error {
	setIDs(s.tokens, b.Tokens)
	setIDs(s.mask, b.AttentionMask)
	if s.positions != nil {
		if s.positions.DType() == ir.Int64 {
			ir.PositionIDs(s.positions.Int64s(), b.AttentionMask, b.B, b.T)
		} else {
			if s.positions64 == nil {
				s.positions64 = make([]int64, b.B*b.T)
			}
			ir.PositionIDs(s.positions64, b.AttentionMask, b.B, b.T)
			setIDs(s.positions, s.positions64)
		}
	}
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

// setIDs copies ids into t, an int64 or int32 tensor (nil: the graph has
// no such input). Ids are token ids, 0/1 and positions: int32 holds them.
func setIDs(t *ir.Tensor, ids []int64) {
	switch {
	case t == nil:
	case t.DType() == ir.Int32:
		dst := t.Int32s()
		for i, v := range ids {
			dst[i] = int32(v)
		}
	default:
		copy(t.Int64s(), ids)
	}
}

// TrainStep runs forward, backward and the update as step Step()+1 with
// the schedule's learning-rate factor. A non-finite loss is a *LossError
// and leaves parameters and state unchanged; NaN or ±Inf the backend finds
// in a gradient or the updated state is a *NonFiniteError, and the step
// is not counted.
func (e *Engine) TrainStep(b *Batch, lrScale float64) (StepStats, error) {
	return e.TrainStepOver(context.Background(), []*Batch{b}, lrScale)
}

// TrainStepOver is TrainStep over several batches with one update
// (gradient accumulation): the update follows the gradient of the mean
// loss over all their targets, so that batches of B rows accumulated K
// times step as one batch of K·B rows would, and the loss reported is
// that mean. Each batch's loss is its sum divided by the step's number
// of targets (ir.WithLossDenominator; Hugging Face's Trainer does so
// since transformers 4.46), so that its backward pass starts from the
// gradient the larger batch's has for its rows, and the batches' losses
// and gradients are summed as they are; where the source's loss takes no
// denominator, each batch's mean loss and its gradient are weighted by
// its share of the targets instead. A step of one batch runs the
// source's training graph as it is. The source's step inputs (dropout
// masks) are filled for draw (Step())·len(bs)+i+1 of batch i: one batch
// a step draws as before.
// When ctx ends before the last batch the step is abandoned — nothing
// changes, and the error wraps ctx's — so that an interruption need not
// wait for a step of many batches.
func (e *Engine) TrainStepOver(ctx context.Context, bs []*Batch, lrScale float64) (StepStats, error) {
	t := update.StepInfo{Step: e.step + 1, LRScale: lrScale}
	var stats StepStats
	for _, b := range bs {
		stats.Targets += b.NumTargets
	}
	start := time.Now()
	var res *update.Result
	for i, b := range bs {
		s, err := e.shapeFor(BatchShape{b.B, b.T}, false)
		if err != nil {
			return StepStats{}, err
		}
		if len(bs) > 1 {
			if err := e.accumGraph(s); err != nil {
				return StepStats{}, err
			}
		}
		if err := s.fill(b); err != nil {
			return StepStats{}, err
		}
		e.fillStepInputs(s, (t.Step-1)*int64(len(bs))+int64(i)+1)
		if len(bs) == 1 {
			res, err = e.trainer.Step(s.train, s.trainFeed, t)
			if err != nil {
				return StepStats{}, fmt.Errorf("step %d: %w", t.Step, err)
			}
			stats.Loss = float64(res.Loss)
			break
		}
		if i > 0 && ctx.Err() != nil {
			return StepStats{}, fmt.Errorf("step %d abandoned after %d of its %d batches: %w", t.Step, i, len(bs), context.Cause(ctx))
		}
		g, feed, w := s.accum, s.accumFeed, 1.0
		if g != nil {
			s.denom.Float32s()[0] = float32(stats.Targets) // 0: the batches' losses and gradients are 0
		} else {
			g, feed, w = s.train, s.trainFeed, 1/float64(len(bs)) // no targets anywhere: the batches' losses are 0
			if stats.Targets > 0 {
				w = float64(b.NumTargets) / float64(stats.Targets)
			}
		}
		r, err := e.trainer.Accumulate(g, feed, float32(w), i == 0)
		if err != nil {
			return StepStats{}, fmt.Errorf("step %d, batch %d of %d: %w", t.Step, i+1, len(bs), err)
		}
		if l := float64(r.Loss); math.IsNaN(l) || math.IsInf(l, 0) {
			return StepStats{Loss: l, Targets: stats.Targets, Compute: time.Since(start)}, &LossError{Step: t.Step, Loss: l}
		}
		stats.Loss += w * float64(r.Loss)
	}
	if len(bs) > 1 {
		var err error
		if res, err = e.trainer.Apply(t); err != nil {
			return StepStats{}, fmt.Errorf("step %d: %w", t.Step, err)
		}
		res.Loss = float32(stats.Loss)
	}
	stats.Compute = time.Since(start)
	if math.IsNaN(stats.Loss) || math.IsInf(stats.Loss, 0) {
		return stats, &LossError{Step: t.Step, Loss: stats.Loss}
	}
	if nf := res.NonFinite; nf != nil {
		return stats, &NonFiniteError{Step: t.Step, NonFinite: *nf}
	}
	stats.GradNorm = res.GradNorm
	if h := res.Host; h != nil {
		stats.Update = h.Optimizer + h.Selection
		stats.Compute -= stats.Update
	}
	e.last = res
	e.step = t.Step
	return stats, nil
}

// EvalLoss returns b's mean loss without updating anything.
func (e *Engine) EvalLoss(b *Batch) (float64, error) {
	s, err := e.shapeFor(BatchShape{b.B, b.T}, true)
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

// EvalLogits returns the model's first output (the logits) for b on the
// current parameters, without updating anything; the source must be a
// ForwardSource. The tensor is valid until the next call.
func (e *Engine) EvalLogits(b *Batch) (*ir.Tensor, error) {
	s, err := e.shapeFor(BatchShape{b.B, b.T}, false)
	if err != nil {
		return nil, err
	}
	firstOutput := func(g *ir.Graph, _ ir.LossSpec) (*ir.Graph, error) {
		g.Outputs = g.Outputs[:1]
		return g, nil
	}
	out, err := e.evalForward(s, b, &s.logits, &s.logitsFeed, firstOutput)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// EvalScored returns b's mean loss, as EvalLoss does, and the logits the
// loss is taken on, as EvalLogits does, from one run of the model; the
// source must be a ForwardSource. The tensor is valid until the next
// call.
func (e *Engine) EvalScored(b *Batch) (float64, *ir.Tensor, error) {
	s, err := e.shapeFor(BatchShape{b.B, b.T}, false)
	if err != nil {
		return 0, nil, err
	}
	out, err := e.evalForward(s, b, &s.scored, &s.scoredFeed, ir.LossAndOutputGraph)
	if err != nil {
		return 0, nil, err
	}
	return float64(out[0].Float32s()[0]), out[1], nil
}

// evalForward runs the graph *g of shape s on b, made first (with its
// feed) by build from the source's forward graph and loss.
func (e *Engine) evalForward(s *engineShape, b *Batch, g **ir.Graph, feed *[]*ir.Tensor, build func(*ir.Graph, ir.LossSpec) (*ir.Graph, error)) ([]*ir.Tensor, error) {
	if *g == nil {
		fs := sourceAs[ForwardSource](e.src)
		if fs == nil {
			return nil, fmt.Errorf("train: the graph source gives no forward graph to read logits from")
		}
		fwd, err := fs.Forward(s.shape)
		if err != nil {
			return nil, err
		}
		made, err := build(fwd, fs.Loss())
		if err != nil {
			return nil, fmt.Errorf("train: batch %d×%d: %w", s.shape.B, s.shape.T, err)
		}
		if *feed, err = e.feed(made, s, false); err != nil {
			return nil, err
		}
		*g = made
	}
	if err := s.fill(b); err != nil {
		return nil, err
	}
	return e.trainer.Eval(*g, *feed)
}

// ParamValues returns a copy of a trainable parameter's current values.
func (e *Engine) ParamValues(name string) ([]float32, error) {
	if !e.byName[name] {
		return nil, fmt.Errorf("train: no trainable parameter %q", name)
	}
	return e.trainer.Param(name)
}

// State copies the engine's state for a checkpoint.
func (e *Engine) State() (*EngineState, error) {
	st, err := e.trainer.State()
	if err != nil {
		return nil, err
	}
	return &EngineState{Step: e.step, Params: st.Params, Optimizer: st.Optimizer, Selection: st.Selection,
		Method: e.method.State(st.Selection, e.step)}, nil
}

// stateView is State without copying the values where the backend can
// show them in place (accel.StateViewer): valid until the next step, and
// not to be written.
func (e *Engine) stateView() (*EngineState, error) {
	v, ok := e.trainer.(accel.StateViewer)
	if !ok {
		return e.State()
	}
	st, err := v.StateView()
	if err != nil {
		return nil, err
	}
	return &EngineState{Step: e.step, Params: st.Params, Optimizer: st.Optimizer, Selection: st.Selection,
		Method: e.method.State(st.Selection, e.step)}, nil
}

// Restore sets the engine's state from a checkpoint; everything is
// checked before anything is changed.
func (e *Engine) Restore(st *EngineState) error {
	sel, err := e.method.LoadState(st.Method)
	if err != nil {
		return err
	}
	if (sel == nil) != (e.prog.Selection == nil) {
		return fmt.Errorf("checkpoint: the %s method's state does not match its update", e.method.Name())
	}
	if err := e.trainer.SetState(&update.State{Params: st.Params, Optimizer: st.Optimizer, Selection: sel}); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	e.step = st.Step
	return nil
}

// Close releases the backend's resources.
func (e *Engine) Close() error { return e.trainer.Close() }

// Method turns gradients into parameter updates by what it adds to the
// update program: "full" nothing (the optimizer's step on every trainable
// parameter), DST its selection (package dst). The backend runs the
// program; the method reads what each step reports into metrics, and the
// selection's state into checkpoints and run files.
type Method interface {
	Name() string
	// Prepare is called once, with the trainable parameters at their
	// seed values: it returns the selection the update applies after
	// every optimizer step (nil: none) and the selection's state before
	// the first step (nil: update.NewSelectionState).
	Prepare(params []*ir.Param) (*update.Selection, *update.SelectionState, error)
	// Metrics returns the method's fields of step's metrics record, a
	// value that encodes as a JSON object (nil: none).
	Metrics(step int64, res *update.Result) any
	// State is the checkpoint form of the selection's state after step;
	// LoadState reads it back, checking it (nil for a method without a
	// selection).
	State(sel *update.SelectionState, step int64) MethodState
	LoadState(MethodState) (*update.SelectionState, error)
}

// MethodState is a method's checkpointed state.
type MethodState struct {
	Meta    map[string]string
	Tensors []safetensors.Tensor
}

// A SourceMethod trains parameters it adds to the model instead of the
// model's own (LoRA's adapters, prompt tuning's soft prompt): Run hands it
// the graph source built from the model and trains the source it returns,
// whose Params are the method's parameters (the model's stay frozen).
type SourceMethod interface {
	Method
	Source(GraphSource) (GraphSource, error)
}

// A ForwardSource is a GraphSource that also gives the forward graph its
// training and loss graphs are built on, and their loss, so that a method
// can edit the graph in between (ModelSource is one).
type ForwardSource interface {
	GraphSource
	// Forward returns the model specialized to shape (a new graph every
	// call, which the caller may change).
	Forward(shape BatchShape) (*ir.Graph, error)
	Loss() ir.LossSpec
}

// StepInputs is a GraphSource whose training graphs read inputs of their
// own besides the batch's (LoRA's dropout masks): the engine fills them
// before every training step, as a function of the step, so that a
// resumed run sees the same values. Loss graphs never read them.
type StepInputs interface {
	// HasStepInput reports whether the graph input name is the source's.
	HasStepInput(name string) bool
	// FillStepInput fills the source's input name (t has the graph
	// input's type) for the draw'th training batch (1-based: the step,
	// when every step runs one batch; Engine.TrainStepOver numbers the
	// batches of accumulated steps).
	FillStepInput(name string, draw int64, t *ir.Tensor)
}

// A wrappingSource is a GraphSource that hands on another's graphs (Run's
// memory check shares the graphs it built this way); the engine looks
// through it for the optional interfaces of the source it wraps.
type wrappingSource interface {
	Unwrap() GraphSource
}

// sourceAs returns src, or the first source it wraps, that is a T; the
// zero T if none is.
func sourceAs[T any](src GraphSource) T {
	for src != nil {
		if t, ok := src.(T); ok {
			return t
		}
		w, ok := src.(wrappingSource)
		if !ok {
			break
		}
		src = w.Unwrap()
	}
	var zero T
	return zero
}

// A Summarizer is a Method that says in one line what it trains (LoRA's
// targets, the budget); Run prints it before the first step.
type Summarizer interface {
	Summary() string
}

// RunFileWriter is a Method that keeps files of its own in the run
// directory (DST: delta.safetensors): Run calls WriteRunFiles after every
// checkpoint with the state it holds. Files must be written atomically.
type RunFileWriter interface {
	WriteRunFiles(dir string, st *EngineState) error
}

// FullMethod is full fine-tuning: the optimizer's step on every trainable
// parameter, nothing else.
type FullMethod struct{}

func (FullMethod) Name() string { return MethodFull }
func (FullMethod) Prepare([]*ir.Param) (*update.Selection, *update.SelectionState, error) {
	return nil, nil, nil
}
func (FullMethod) Metrics(int64, *update.Result) any                     { return nil }
func (FullMethod) State(*update.SelectionState, int64) MethodState       { return MethodState{} }
func (FullMethod) LoadState(MethodState) (*update.SelectionState, error) { return nil, nil }

// Method names.
const (
	MethodFull   = "full"
	MethodDST    = "dst"
	MethodLoRA   = "lora"
	MethodPrompt = "prompt"
)

// paramShapes maps the parameters' names to their shapes.
func paramShapes(params []*ir.Param) map[string][]int {
	m := map[string][]int{}
	for _, p := range params {
		m[p.Name] = slices.Clone([]int(p.Tensor.Shape()))
	}
	return m
}
