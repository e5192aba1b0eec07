//go:build !autodiff

package train

import (
	"errors"

	"github.com/dstune/dstune/ir"
)

// Until ir.TrainingGraph lands (branch grad), models cannot be
// differentiated: NewModelSource says so. source_model.go holds the real
// one, built with -tags autodiff.

type ModelSourceOptions struct {
	Task      Task
	Trainable string
}

type ModelSource struct {
	GraphSource
	VocabSize, NumClasses int64
	SeqLen                int
}

func NewModelSource(m *ir.Model, opts ModelSourceOptions) (*ModelSource, error) {
	return nil, errors.New("training ONNX models needs autodiff (ir.TrainingGraph), which is not merged yet")
}
