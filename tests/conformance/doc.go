// Package conformance runs dstune against external test suites: the
// complete ONNX backend test suite (node, simple, pytorch-converted and
// pytorch-operator folders of ../shared/testdata/onnx-backend), executed on
// the CPU backend and compared with the suite's expected outputs
// (sequences, optionals and strings element by element; graphs with
// random operators or a training-mode Dropout by what the operators
// determine: shapes, value ranges and plausible statistics). Its only
// code is the tests; expected_failures.tsv lists every test that is known
// to fail and why, tolerances.tsv the tests compared with other tolerances
// than the ONNX runner's defaults and why.
package conformance
