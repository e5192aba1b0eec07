package ort

import (
	"errors"
	"os"
	"testing"
)

// ErrUnavailable: no onnxruntime library (unset $DSTUNE_ORT_LIB, a
// missing file, or a build without cgo).
var ErrUnavailable = errors.New("ort: onnxruntime unavailable")

// Need skips t when onnxruntime cannot be used, saying why, or fails it
// when DSTUNE_REQUIRE_ORT=1.
func Need(t testing.TB) {
	t.Helper()
	if err := Init(); err != nil {
		if os.Getenv("DSTUNE_REQUIRE_ORT") == "1" {
			t.Fatalf("onnxruntime required (DSTUNE_REQUIRE_ORT=1): %v", err)
		}
		t.Skipf("onnxruntime not available: %v; install it as DEVELOPERS.md says and set DSTUNE_ORT_LIB", err)
	}
}
