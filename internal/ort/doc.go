// Package ort runs ONNX models with onnxruntime, as an independent
// reference for tests: models dstune writes must load there and reproduce
// its outputs. It drives the onnxruntime C library (the one npm's
// onnxruntime-node 1.30.0 ships, see DEVELOPERS.md) through
// github.com/yalue/onnxruntime_go, which needs cgo; without cgo every call
// reports ErrUnavailable.
//
// The library is found through $DSTUNE_ORT_LIB. Tests call Need, which
// skips when the library is absent, or fails when DSTUNE_REQUIRE_ORT=1 (as
// in CI). Only tests may import this package: cmd/ and the library
// packages must keep building with CGO_ENABLED=0.
package ort
