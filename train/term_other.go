//go:build !linux && !darwin

package train

// isTerminal is false where dstune does not know how to ask: progress is
// then printed as plain lines.
func isTerminal(fd uintptr) bool { return false }
