package onnx

import (
	"fmt"

	"github.com/dstune/dstune/internal/atomicfile"
)

// EncodeTensor serializes t as a TensorProto, the layout of the
// test_data_set_N/*.pb files (the reverse of DecodeTensor). Values keep
// their representation; a tensor read from external data is written with
// its bytes inline.
func EncodeTensor(t *Tensor) ([]byte, error) {
	if t == nil {
		return nil, fmt.Errorf("onnx: encode tensor: nil tensor")
	}
	inline := map[*Tensor]*ExternalData{}
	if t.External != nil {
		inline[t] = nil
	}
	w := &writer{enc: &encoder{place: inline}}
	w.tensor(t)
	if w.err != nil {
		return nil, fmt.Errorf("onnx: encode tensor %q: %w", t.Name, w.err)
	}
	return w.buf, nil
}

// WriteTensorFile writes t to path as a serialized TensorProto, atomically
// (a temporary file in the same directory, renamed into place).
func WriteTensorFile(path string, t *Tensor) error {
	buf, err := EncodeTensor(t)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, buf); err != nil {
		return fmt.Errorf("onnx: write %s: %w", path, err)
	}
	return nil
}
