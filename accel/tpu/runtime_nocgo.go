//go:build !cgo

package tpu

import (
	"errors"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// ErrNeedsCgo is returned by Open in builds without cgo.
var ErrNeedsCgo = errors.New("tpu: the pjrt backend needs a cgo build (CGO_ENABLED=1 and a C compiler); this dstune was built without cgo")

// Backend is the PJRT backend; without cgo it cannot be opened.
type Backend struct{}

// Open reports that this build has no PJRT runtime.
func Open(Options) (*Backend, error) { return nil, ErrNeedsCgo }

// Name is "pjrt".
func (b *Backend) Name() string { return "pjrt" }

// Compile is unreachable: Open fails.
func (b *Backend) Compile(*ir.Graph, accel.Options) (accel.Executable, error) {
	return nil, ErrNeedsCgo
}

// Trainer runs training steps; without cgo there is none.
type Trainer struct{}

// NewTrainer is unreachable: Open fails.
func (b *Backend) NewTrainer(*ir.Graph, TrainConfig) (*Trainer, error) { return nil, ErrNeedsCgo }

// AddGraph is unreachable.
func (t *Trainer) AddGraph(*ir.Graph) error { return ErrNeedsCgo }

// Step is unreachable.
func (t *Trainer) Step(int64, float64, []*ir.Tensor) (StepResult, error) {
	return StepResult{}, ErrNeedsCgo
}

// Eval is unreachable.
func (t *Trainer) Eval(*ir.Graph, []*ir.Tensor) ([]*ir.Tensor, error) { return nil, ErrNeedsCgo }

// State is unreachable.
func (t *Trainer) State(ArgKind, string) (*ir.Tensor, error) { return nil, ErrNeedsCgo }

// SetState is unreachable.
func (t *Trainer) SetState(ArgKind, string, *ir.Tensor) error { return ErrNeedsCgo }

// Param is unreachable.
func (t *Trainer) Param(string) (*ir.Tensor, error) { return nil, ErrNeedsCgo }

// Close does nothing.
func (t *Trainer) Close() error { return nil }
