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
	Size, Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: a file of %d bytes, more than the %d this file may hold", e.Path, e.Size, e.Limit)
}

// ReadFile reads the regular file at path whole, refusing one larger than
// limit bytes before it allocates.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, size, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > limit {
		return nil, &TooLargeError{Path: path, Size: size, Limit: limit}
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}
