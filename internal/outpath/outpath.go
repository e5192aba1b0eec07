// Package outpath checks the files a command writes against the files it
// reads, so that no command overwrites its own input: two paths name the
// same file when they lead to one inode (through symbolic links, hard
// links, "..", another spelling), which is what os.SameFile compares.
package outpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/onnx"
)

// Input is a file a command reads, with what it is for error messages
// ("the model", "delta 2").
type Input struct {
	Path string
	What string
}

// InputError is an output that is one of the inputs.
type InputError struct {
	Output string
	Input  Input
}

func (e *InputError) Error() string {
	if filepath.Clean(e.Output) == filepath.Clean(e.Input.Path) {
		return fmt.Sprintf("%s is %s", e.Output, e.Input.What)
	}
	return fmt.Sprintf("%s is %s (%s, the same file)", e.Output, e.Input.What, e.Input.Path)
}

// ExistsError is an output that exists while overwriting was not asked
// for.
type ExistsError struct{ Output string }

func (e *ExistsError) Error() string { return e.Output + " exists" }

// NotRegularError is an output that exists and is not a regular file (nor
// a symbolic link to one): a device, a FIFO, a directory. Outputs are
// written whole into a temporary file renamed over the path, which would
// replace /dev/null itself, say, with a file.
type NotRegularError struct {
	Output string
	Kind   string // "a device", "a FIFO", … (regfile.Kind)
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is %s, not a regular file: outputs are written as new files renamed over the path, which would replace it", e.Output, e.Kind)
}

// Check refuses an output that is one of the inputs, one that exists and
// is not a regular file (NotRegularError) and, unless overwrite, one that
// exists. A symbolic link to a regular file passes: writing it replaces
// the link with the new file, leaving the file it led to as it was. An output that does not exist yet is no input; an input that
// cannot be read is left to the command to report.
func Check(output string, overwrite bool, inputs ...Input) error {
	st, err := os.Stat(output)
	if errors.Is(err, fs.ErrNotExist) {
		if _, lerr := os.Lstat(output); lerr == nil && !overwrite {
			return &ExistsError{output} // a dangling symbolic link
		}
		return nil
	}
	if err != nil {
		return err
	}
	for _, in := range inputs {
		if ist, err := os.Stat(in.Path); err == nil && os.SameFile(st, ist) {
			return &InputError{Output: output, Input: in}
		}
	}
	if !st.Mode().IsRegular() {
		return &NotRegularError{Output: output, Kind: regfile.Kind(st.Mode())}
	}
	if !overwrite {
		return &ExistsError{output}
	}
	return nil
}

// CheckAll refuses outputs that are inputs (existing outputs may be
// overwritten).
func CheckAll(outputs []string, inputs ...Input) error {
	for _, out := range outputs {
		if err := Check(out, true, inputs...); err != nil {
			return err
		}
	}
	return nil
}

// Resolve spells path so that lexical path operations (filepath.Join,
// Clean, Dir) keep its meaning, for a directory whose files are named by
// joining to it. They take "x/.." for "." where the kernel, x being a
// symbolic link, goes to the parent of what x leads to: every ".." that
// follows an element is applied to the path before it with its links
// resolved (filepath.EvalSymlinks), or lexically where nothing is there
// (then the directories MkdirAll makes for it are real). A path without
// such a "..", or one the kernel cannot follow (a dangling link or a loop
// of them, a file taken for a directory), is returned as it is, for its
// user to fail on.
func Resolve(path string) string {
	if runtime.GOOS == "windows" {
		return path // where ".." is lexical
	}
	vol := filepath.VolumeName(path)
	elems := strings.Split(path[len(vol):], string(filepath.Separator))
	named, removes := false, false
	for _, e := range elems {
		removes = removes || (e == ".." && named)
		named = named || (e != "" && e != "." && e != "..")
	}
	if !removes {
		return path
	}
	cur := vol
	if len(path) > len(vol) && os.IsPathSeparator(path[len(vol)]) {
		cur += string(filepath.Separator)
	}
	for _, e := range elems {
		switch e {
		case "", ".":
		case "..":
			if cur != "" {
				r, err := filepath.EvalSymlinks(cur)
				switch {
				case err == nil && isDir(r):
					cur = r
				case !notThere(cur):
					// A loop of links, a dangling link, a file: the
					// kernel fails on the path, and so should its user.
					return path
				}
			}
			cur = filepath.Join(cur, "..")
		default:
			cur = filepath.Join(cur, e)
		}
	}
	if cur == "" {
		return "."
	}
	return cur
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// notThere reports whether nothing, not even a dangling link, is at path
// (or at a directory on the way to it): what MkdirAll would make.
func notThere(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, fs.ErrNotExist)
}

// Same reports whether a and b name one existing file.
func Same(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// ModelInputs lists an ONNX model file read from path and the
// external-data files its initializers (those of subgraphs included) are
// kept in.
func ModelInputs(path string, m *onnx.Model) []Input {
	ins := []Input{{Path: path, What: "the model"}}
	seen := map[string]bool{}
	var walk func(g *onnx.Graph, depth int)
	walk = func(g *onnx.Graph, depth int) {
		if g == nil || depth > 64 {
			return
		}
		for _, t := range g.Initializers {
			if t.External == nil || seen[t.External.Location] {
				continue
			}
			seen[t.External.Location] = true
			ins = append(ins, Input{Path: filepath.Join(filepath.Dir(path), t.External.Location),
				What: fmt.Sprintf("the model's external data %q", t.External.Location)})
		}
		for _, n := range g.Nodes {
			for _, a := range n.Attributes {
				walk(a.G, depth+1)
				for _, sub := range a.Graphs {
					walk(sub, depth+1)
				}
			}
		}
	}
	if m != nil {
		walk(m.Graph, 0)
	}
	return ins
}
