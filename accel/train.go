package accel

import (
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// TrainingBackend is a Backend that also trains: it compiles training
// steps — a training graph (ir.TrainingGraph: the loss and one gradient per
// trainable parameter) followed by the update program that turns the
// gradients into new parameters (package update: the optimizer and, for
// Dynamic Subset Tuning, the selection) — and keeps parameters and state
// between steps.
type TrainingBackend interface {
	Backend
	// NewTrainer prepares training of params (the trainable parameters;
	// their values now are the seeds a selection resets to) with program
	// prog. The optimizer state starts at zero, the selection's state
	// empty (update.NewSelectionState) until SetState gives another.
	NewTrainer(params []*ir.Param, prog *update.Program, opts Options) (Trainer, error)
}

// Trainer runs training steps. Graphs it is given read the trainer's
// parameters (by name); it compiles each graph the first time it sees it.
type Trainer interface {
	// Step runs the training graph tg on inputs (tg's inputs, in order)
	// and, when the loss (tg's ir.LossOutput) is finite, the update of
	// step t from its gradients (ir.GradPrefix+name). A non-finite loss
	// leaves parameters and state as they were (Result.Selection nil).
	Step(tg *ir.Graph, inputs []*ir.Tensor, t update.StepInfo) (*update.Result, error)
	// Accumulate runs the training graph tg on inputs and adds weight ×
	// its gradients to the trainer's gradient sum, for Apply (gradient
	// accumulation: one update from several batches); first starts the
	// sum from this batch, dropping whatever it held, and so does a batch
	// when the trainer holds no sum (a new trainer, or after Apply).
	// Result.Loss is the batch's loss; when it is not finite nothing is
	// added and the next Apply updates nothing. Parameters and state do
	// not change.
	Accumulate(tg *ir.Graph, inputs []*ir.Tensor, weight float32, first bool) (*update.Result, error)
	// Apply runs the update of step t from the gradient sum, as Step runs
	// it from one batch's gradients (the finite checks included), and
	// empties the sum; after a batch whose loss was not finite it updates
	// nothing (Result{}). Result.Loss is 0: the batches' losses are
	// Accumulate's. Apply with no sum is an error.
	Apply(t update.StepInfo) (*update.Result, error)
	// Eval runs g, a graph over the same parameters such as a loss graph,
	// on the current parameters and returns its outputs (copies).
	Eval(g *ir.Graph, inputs []*ir.Tensor) ([]*ir.Tensor, error)
	// Param returns a copy of a trainable parameter's current values.
	Param(name string) ([]float32, error)
	// State copies everything a checkpoint keeps; SetState replaces it
	// (checked against the program before anything changes).
	State() (*update.State, error)
	SetState(*update.State) error
	Close() error
}

// A StateViewer is a Trainer that can show its state without copying it:
// StateView is State with the parameters' values and the optimizer slots'
// data being the trainer's own memory (the selection's state may be a
// copy), valid until the next Step, SetState or Close and not to be
// written — what writing a checkpoint of a large model needs, where a
// copy would double the parameters and the optimizer state for a moment.
type StateViewer interface {
	StateView() (*update.State, error)
}
