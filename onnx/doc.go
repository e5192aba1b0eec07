// Package onnx reads and writes ONNX model files with
// google.golang.org/protobuf/encoding/protowire, keeping tensor bytes as
// views of the file instead of copies. It knows the wire format and the
// file-level rules (external data, safety limits, in-place patching); the
// meaning of operators lives in package ir.
package onnx
