// Package onnx reads and writes ONNX models (onnx.proto v1.22.0) with a
// hand-written protobuf codec on google.golang.org/protobuf/encoding/protowire.
//
// Reading keeps tensor bytes where they are: Tensor.Raw is a view of the
// model file's buffer (or of an external-data file), never a copy, and
// Tensor.RawOffset records where those bytes sit in the model file so that
// PatchFile can replace initializer values in place. ReadFile maps large
// files into memory copy-on-write (a write through Raw changes this
// process's copy of the page, never the file); such a Model must be closed
// with Close once no Raw slice is in use any more.
//
// Decoding follows protobuf's rules, as onnx and onnxruntime do: a message
// field that occurs more than once (a second "graph" appended to a model, a
// type split over two fields) is one message, merged, not the last
// occurrence alone. Beyond the wire format it refuses one thing that
// onnx.checker lets through: a domain imported at two different versions
// in opset_import (tools disagree on which one counts).
//
// Every input is untrusted: malformed or hostile files yield errors that
// name the file, graph, node, attribute or tensor and what was expected
// (never a panic), allocation stays proportional to the file size, nested
// graphs are depth-limited, and external data may only come from regular
// files inside the model's directory (absolute paths, ".." components and
// symlinks leading out are refused).
//
// Writing: Encode re-encodes a whole Model (after graph edits); WriteFile
// writes it atomically, moving large tensors to an external-data file when
// asked or when the model would exceed protobuf's 2 GiB limit; PatchFile
// copies a model file with some initializers' raw bytes replaced, leaving
// every other byte identical.
//
// Test data: ReadTensorFile reads a serialized TensorProto (the
// test_data_set_N/*.pb files); ReadValueFile and DecodeValue read any
// value of onnx-data.proto (SequenceProto, OptionalProto, MapProto, nested)
// given the kind the model declares, and WriteValueFile writes one.
//
// Model-local functions (FunctionProto) are read and written back; package
// ir inlines their calls. Not supported (clear errors wrapping
// ErrNotSupported): sparse initializers and sparse tensor values, and
// segmented tensors.
package onnx
