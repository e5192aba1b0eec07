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

// NewTrainer is unreachable: Open fails.
func (b *Backend) NewTrainer(*ir.Graph, TrainConfig) (*Trainer, error) { return nil, ErrNeedsCgo }

// trainerDevice is unreachable: Open fails.
func (b *Backend) trainerDevice() device { return nil }
