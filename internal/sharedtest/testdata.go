// Package sharedtest locates the shared test data (../shared/testdata beside
// the repository, or $DSTUNE_TESTDATA) for tests. When it is missing, tests
// skip with a message, or fail when DSTUNE_REQUIRE_TESTDATA=1 (as in CI).
package sharedtest

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns the shared testdata directory, or skips (fails under
// DSTUNE_REQUIRE_TESTDATA=1) the test when it cannot be found.
func Dir(t testing.TB) string {
	t.Helper()
	if d, ok := find(); ok {
		return d
	}
	missing(t, "the shared test data (../shared/testdata beside the repository, or $DSTUNE_TESTDATA)")
	return ""
}

// Path returns filepath.Join(Dir(t), elem...), skipping or failing like Dir
// when that path does not exist.
func Path(t testing.TB, elem ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{Dir(t)}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		missing(t, p)
	}
	return p
}

// Required reports whether missing test data must fail tests.
func Required() bool { return os.Getenv("DSTUNE_REQUIRE_TESTDATA") == "1" }

func missing(t testing.TB, what string) {
	t.Helper()
	if Required() {
		t.Fatalf("test data missing: %s (DSTUNE_REQUIRE_TESTDATA=1)", what)
	}
	t.Skipf("test data missing: %s; set DSTUNE_TESTDATA or place ../shared beside the repository", what)
}

func find() (string, bool) {
	if d := os.Getenv("DSTUNE_TESTDATA"); d != "" {
		if isDir(d) {
			return d, true
		}
		return "", false
	}
	// Walk up from the working directory (a package directory under go
	// test) to the module root, then look beside it.
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			d := filepath.Join(filepath.Dir(dir), "shared", "testdata")
			if isDir(d) {
				return d, true
			}
			// asm/ has its own go.mod: keep walking past nested modules.
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
