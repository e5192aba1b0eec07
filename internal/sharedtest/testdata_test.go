package sharedtest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindsSharedTestdata(t *testing.T) {
	d := Dir(t)
	if _, err := os.Stat(filepath.Join(d, "onnx.proto")); err != nil {
		t.Fatalf("%s does not look like the shared testdata: %v", d, err)
	}
}
