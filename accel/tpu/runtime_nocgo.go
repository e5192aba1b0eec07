//go:build !cgo

package tpu

import (
	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

const haveCgo = false

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
func (b *Backend) NewTrainer([]*ir.Param, *update.Program, accel.Options) (accel.Trainer, error) {
	return nil, ErrNeedsCgo
}
