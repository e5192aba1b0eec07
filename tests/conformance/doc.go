// Package conformance runs dstune against external test suites: the ONNX
// backend node tests in ../shared/testdata/onnx-node, executed on the CPU
// backend and compared with the suite's expected outputs. Its only code is
// the tests; expected_failures.tsv lists every test that is known to fail
// and why.
package conformance
