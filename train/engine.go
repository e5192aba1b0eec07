package train

import (
	"fmt"
	"time"

	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
)

// BatchShape is the shape a graph is specialized for: B rows of T tokens.
type BatchShape struct{ B, T int }

// InputNames say which graph inputs a batch feeds.
type InputNames struct {
	Tokens string // int64 [B, T]: the token ids
	Mask   string // optional int64 [B, T]: 1 at real tokens, 0 at padding ("" when the model has none)
}

// TargetsInput is the name of the training and loss graphs' extra input
// (ir.TrainingGraph's contract): int64 next-token targets [B, T] for lm,
// labels [B] for classify, IgnoreIndex where nothing counts.
const TargetsInput = "targets"

// LossOutput is the training and loss graphs' first output, the float32
// mean loss; GradPrefix+NAME is the gradient of parameter NAME.
const (
	LossOutput = "loss"
	GradPrefix = "grad:"
)

// A GraphSource builds what an engine compiles for one batch shape. Both
// graphs take the model's inputs (InputNames) followed by TargetsInput.
// The training graph's outputs are LossOutput followed by GradPrefix+name
// for every parameter of Params, in that order; the loss graph's only
// output is LossOutput. Every graph shares the parameters' storage
// (Params()[i].Tensor), so the values an engine updates are the ones all
// of its graphs read.
type GraphSource interface {
	Params() []*ir.ParamTensor // the trainable parameters
	Inputs() InputNames
	TrainingGraph(shape BatchShape) (*ir.Graph, error)
	LossGraph(shape BatchShape) (*ir.Graph, error)
}

// TrainParam is one trainable parameter as a Method sees it.
type TrainParam struct {
	Name  string
	Shape []int
	Value []float32 // the parameter's storage, updated in place
	Grad  []float32 // this step's gradient, valid during Method.Update
	State *ParamState
}

// Method turns gradients into parameter updates: "full" takes the plain
// optimizer step on every trainable parameter; DST fuses the step with
// its subset selection. A method is driven by an engine, step by step.
type Method interface {
	Name() string
	// Prepare is called once, before the first step or a restore, with
	// the trainable parameters at their seed values.
	Prepare(params []*TrainParam) error
	// Update applies step t to every parameter from its gradient with
	// opt, reading and writing each parameter's optimizer state.
	Update(params []*TrainParam, opt Optimizer, t StepInfo, threads int) error
	// Metrics adds the method's fields for the last step to a metrics
	// record (DST: realized ε, thresholds, churn).
	Metrics(rec map[string]any)
	// State is what a checkpoint keeps of the method; LoadState restores
	// it after Prepare.
	State() MethodState
	LoadState(MethodState) error
}

// MethodState is a method's checkpointed state.
type MethodState struct {
	Meta    map[string]string
	Tensors []safetensors.Tensor
}

// Method names.
const (
	MethodFull   = "full"
	MethodDST    = "dst"
	MethodLoRA   = "lora"
	MethodPrompt = "prompt"
)

// NewMethod returns the named built-in method (Run also finds the ones
// registered with RegisterMethod: dst).
func NewMethod(name string) (Method, error) {
	switch name {
	case MethodFull:
		return FullMethod{}, nil
	case MethodDST, MethodLoRA, MethodPrompt:
		return nil, fmt.Errorf("method %q is not available (methods: %v)", name, RegisteredMethods())
	}
	return nil, fmt.Errorf("unknown method %q (want %s, %s, %s or %s)", name, MethodFull, MethodDST, MethodLoRA, MethodPrompt)
}

// FullMethod is full fine-tuning: the optimizer's step on every trainable
// parameter, nothing else.
type FullMethod struct{}

func (FullMethod) Name() string                  { return MethodFull }
func (FullMethod) Prepare([]*TrainParam) error   { return nil }
func (FullMethod) Metrics(map[string]any)        {}
func (FullMethod) State() MethodState            { return MethodState{} }
func (FullMethod) LoadState(s MethodState) error { return nil }

func (FullMethod) Update(params []*TrainParam, opt Optimizer, t StepInfo, threads int) error {
	for _, p := range params {
		opt.Step(p.Value, p.Grad, p.State, t, threads)
	}
	return nil
}

// StepStats describe one training step.
type StepStats struct {
	Loss    float64 // the batch's mean loss, before the update
	Targets int     // entries that counted in the loss
	// Compute is the forward and backward pass, Update the method's
	// update (optimizer and, for DST, the subset selection).
	Compute, Update time.Duration
}

// LossError is a non-finite training loss; the step's update was not
// applied.
type LossError struct {
	Step int64
	Loss float64
}

func (e *LossError) Error() string { return fmt.Sprintf("step %d: loss is %v", e.Step, e.Loss) }

// EngineState is what a checkpoint keeps of an engine: the step count,
// the trainable parameters' values, their optimizer state and the method's
// state. Values are copies.
type EngineState struct {
	Step      int64
	Params    map[string][]float32
	Optimizer map[string]*ParamState
	Method    MethodState
}

// Engine runs training steps of one model on one backend; the training
// loop drives it without knowing the backend.
type Engine interface {
	// Params lists the trainable parameters (name and shape).
	Params() []ParamInfo
	// Step is the number of steps taken so far.
	Step() int64
	// TrainStep runs forward, backward and the method's update as step
	// Step()+1 with the schedule's learning-rate factor. A non-finite
	// loss is a *LossError and leaves parameters and state unchanged.
	TrainStep(b *Batch, lrScale float64) (StepStats, error)
	// EvalLoss returns b's mean loss without updating anything.
	EvalLoss(b *Batch) (float64, error)
	// ParamValues returns a parameter's current values (a copy on
	// backends whose parameters are not in host memory).
	ParamValues(name string) ([]float32, error)
	// State copies the engine's state for a checkpoint; Restore sets it.
	State() (*EngineState, error)
	Restore(*EngineState) error
	Close() error
}

// ParamInfo names a trainable parameter and gives its shape.
type ParamInfo struct {
	Name  string
	Shape []int
}

// copyState deep-copies a parameter state's slots.
func copyState(s *ParamState) *ParamState {
	c := &ParamState{Shape: append([]int(nil), s.Shape...)}
	for _, sl := range s.Slots {
		c.Slots = append(c.Slots, Slot{Name: sl.Name, Shape: append([]int(nil), sl.Shape...), Data: append([]float32(nil), sl.Data...)})
	}
	return c
}

// checkState checks that saved describes the same slots as st.
func checkState(name string, st, saved *ParamState) error {
	if len(st.Slots) != len(saved.Slots) {
		return fmt.Errorf("parameter %q: checkpoint has %d optimizer slots, the optimizer keeps %d", name, len(saved.Slots), len(st.Slots))
	}
	for i := range st.Slots {
		d, s := &st.Slots[i], &saved.Slots[i]
		if d.Name != s.Name || len(d.Data) != len(s.Data) {
			return fmt.Errorf("parameter %q: checkpoint slot %q has %d values, the optimizer wants %q with %d", name, s.Name, len(s.Data), d.Name, len(d.Data))
		}
	}
	return nil
}
