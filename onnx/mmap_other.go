//go:build !unix

package onnx

import (
	"errors"
	"os"
)

func openFile(path string, noFollow bool) (*os.File, error) {
	return os.Open(path)
}

func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	return nil, nil, errors.New("memory mapping not implemented on this platform")
}
