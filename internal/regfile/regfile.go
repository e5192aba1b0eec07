// Package regfile opens the files a command is given to read (models'
// deltas, adapters, metrics, tokenizers, run files) as regular files only.
// os.Open of a FIFO blocks until a writer comes, so a FIFO named like a
// delta in a directory dstune scans, or given by mistake, would hang the
// command; a device (/dev/zero) would be read without end. Open refuses
// both at once.
package regfile

import (
	"fmt"
	"io"
	"os"
)

// NotRegularError is a path that is not a regular file.
type NotRegularError struct {
	Path string
	Mode os.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s: not a regular file (%s)", e.Path, Kind(e.Mode))
}

// Kind names the type of file mode says: "a directory", "a FIFO", ….
func Kind(mode os.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&os.ModeSymlink != 0:
		return "a symbolic link"
	case mode&os.ModeNamedPipe != 0:
		return "a FIFO"
	case mode&os.ModeSocket != 0:
		return "a socket"
	case mode&os.ModeDevice != 0:
		return "a device"
	case mode.IsRegular():
		return "a regular file"
	}
	return "not a regular file"
}

// Open opens path for reading when it is a regular file (following
// symbolic links), without blocking on a FIFO, and returns it with its
// size.
func Open(path string) (*os.File, int64, error) {
	f, err := openNonblocking(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, &NotRegularError{Path: path, Mode: st.Mode()}
	}
	return f, st.Size(), nil
}

// TooLargeError is a file larger than a reader takes.
type TooLargeError struct {
	Path        string
	Size, Limit int64 // Size -1: a pipe, of unknown size
}

func (e *TooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("%s: more than the %d bytes this file may hold", e.Path, e.Limit)
	}
	return fmt.Sprintf("%s: a file of %d bytes, more than the %d this file may hold", e.Path, e.Size, e.Limit)
}

// ReadFile reads a file a user names whole: a regular file, or a pipe (a
// shell's <(…), /dev/stdin from a pipe, a FIFO), read to its end. One
// larger than limit bytes is refused, a regular file before anything is
// allocated. A FIFO nobody writes reads as empty, at once (it is opened
// without blocking); a directory or a device is refused.
func ReadFile(path string, limit int64) ([]byte, error) {
	return read(path, limit, true)
}

// ReadRegular is ReadFile for regular files only: for the files a
// command finds (in a run directory, beside an adapter) rather than is
// given, where a pipe whose writer never writes would hang it.
func ReadRegular(path string, limit int64) ([]byte, error) {
	return read(path, limit, false)
}

func read(path string, limit int64, pipes bool) ([]byte, error) {
	f, err := openNonblocking(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	mode := st.Mode()
	switch {
	case mode.IsRegular():
		if st.Size() > limit {
			return nil, &TooLargeError{Path: path, Size: st.Size(), Limit: limit}
		}
	case pipes && mode&os.ModeNamedPipe != 0:
	default:
		return nil, &NotRegularError{Path: path, Mode: mode}
	}
	// Read to the end rather than to the size fstat gave: a file of
	// /proc says 0 bytes, a pipe says nothing.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > limit {
		size := int64(-1)
		if mode.IsRegular() {
			size = int64(len(data)) // it grew while being read
		}
		return nil, &TooLargeError{Path: path, Size: size, Limit: limit}
	}
	return data, nil
}
