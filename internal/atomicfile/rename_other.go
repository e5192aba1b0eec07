//go:build !linux

package atomicfile

import "errors"

// renameExclusive has no one-step form here: the caller links instead.
func renameExclusive(oldpath, newpath string) error { return errors.ErrUnsupported }
