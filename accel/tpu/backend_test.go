package tpu

import (
	"testing"

	"github.com/dstune/dstune/accel"
)

// TestRegistered checks that the backend is in the registry and that
// opening it without a plugin (or without cgo) fails with a message
// instead of a panic.
func TestRegistered(t *testing.T) {
	found := false
	for _, n := range accel.Names() {
		found = found || n == "pjrt"
	}
	if !found {
		t.Fatalf("pjrt is not registered: %v", accel.Names())
	}
	t.Setenv(PluginEnv, "/nonexistent/plugin.so")
	if _, err := accel.Open("pjrt"); err == nil {
		t.Fatal("opening with a missing plugin succeeded")
	} else {
		t.Logf("as expected: %v", err)
	}
}
