//go:build !cgo

package ort

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// Init reports ErrUnavailable: onnxruntime needs cgo.
func Init() error { return fmt.Errorf("%w: built without cgo", ErrUnavailable) }

// Run reports ErrUnavailable: onnxruntime needs cgo.
func Run(modelPath string, inputs map[string]*onnx.Tensor) (map[string]*onnx.Tensor, error) {
	return nil, Init()
}

// Version is "" without cgo.
func Version() string { return "" }
