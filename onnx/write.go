package onnx

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/dstune/dstune/internal/atomicfile"
)

// ExternalDataMode says when WriteFile stores initializer values in a
// separate external-data file.
type ExternalDataMode int

const (
	// ExternalAuto writes everything into the model file unless that would
	// exceed protobuf's 2 GiB limit, then behaves like ExternalAlways.
	ExternalAuto ExternalDataMode = iota
	// ExternalNever writes every tensor into the model file (also those
	// read from external data); models over 2 GiB are an error.
	ExternalNever
	// ExternalAlways moves every initializer of at least Threshold bytes
	// into the external-data file.
	ExternalAlways
)

// WriteOptions control WriteFile.
type WriteOptions struct {
	ExternalData ExternalDataMode
	// DataFile is the external-data file's name relative to the model's
	// directory; default: the model's file name + ".data".
	DataFile string
	// Threshold is the smallest initializer (bytes) moved to external
	// data; default 1024. Smaller ones stay in the model file.
	Threshold int64
	// NoReplace fails the write with an *atomicfile.ExistsError, leaving
	// the file as it is, where the model file (or its external-data
	// file) exists by the time it is put in place: for an output checked
	// not to exist, which another process may have written since.
	NoReplace bool
}

const defaultThreshold = 1024

// WriteFile writes m to path as a complete re-encode (see Encode), with
// initializer values in the file or in an external-data file as opts say.
// Tensors that m read from external data are written out from their bytes
// (inline or into the new data file), so the result does not depend on
// the source model's files. Both files are written to temporaries in the
// target directory and renamed into place (the data file first), so a
// failure never leaves a partial file.
func WriteFile(path string, m *Model, opts WriteOptions) error {
	if err := writeFile(path, m, opts); err != nil {
		return fmt.Errorf("onnx: write %s: %w", path, err)
	}
	return nil
}

func writeFile(path string, m *Model, opts WriteOptions) error {
	if m.Graph == nil {
		return errors.New("model has no graph")
	}
	threshold := opts.Threshold
	if threshold <= 0 {
		threshold = defaultThreshold
	}
	dataFile := opts.DataFile
	if dataFile == "" {
		dataFile = filepath.Base(path) + ".data"
	}
	if err := checkRelative(dataFile); err != nil {
		return fmt.Errorf("DataFile %q: %w", dataFile, err)
	}

	var inits []*Tensor
	collectInitializers(m.Graph, &inits, 0)
	place := map[*Tensor]*ExternalData{}
	for _, t := range inits {
		if t.External != nil {
			place[t] = nil // bring external values into this write
		}
	}
	mode := opts.ExternalData
	if mode == ExternalAuto {
		counter := &writer{counting: true, enc: &encoder{place: place}}
		counter.model(m)
		if counter.err != nil {
			return counter.err
		}
		mode = ExternalNever
		if int64(counter.n) > maxModelSize {
			mode = ExternalAlways
		}
	}
	var external []*Tensor
	if mode == ExternalAlways {
		var offset int64
		for _, t := range inits {
			if p, seen := place[t]; seen && p != nil {
				continue // the same tensor twice
			}
			size, err := t.ByteSize()
			if err != nil || size < threshold {
				continue // STRING tensors and small ones stay inline
			}
			offset = alignUp(offset, externalAlignment(size))
			place[t] = &ExternalData{Location: filepath.ToSlash(dataFile), Offset: offset, Length: size}
			external = append(external, t)
			offset += size
		}
	}
	enc, err := encodeModel(m, place)
	if err != nil {
		return err
	}

	write := atomicfile.Options{NoReplace: opts.NoReplace}
	var data *atomicfile.Pending
	if len(external) > 0 {
		// Beside the model as the kernel finds it (not filepath.Dir's
		// lexical reading of LINK/..), where its Location leads.
		data, err = write.Prepare(atomicfile.Beside(path, filepath.FromSlash(dataFile)), func(w *os.File) error {
			bw := bufio.NewWriterSize(w, 1<<20)
			var offset int64
			for _, t := range external {
				p := place[t]
				if _, err := bw.Write(make([]byte, p.Offset-offset)); err != nil {
					return err
				}
				raw, err := t.Bytes()
				if err != nil {
					return err
				}
				if _, err := bw.Write(raw); err != nil {
					return err
				}
				offset = p.Offset + p.Length
			}
			return bw.Flush()
		})
		if err != nil {
			return err
		}
	}
	model, err := write.Prepare(path, func(w *os.File) error {
		_, err := w.Write(enc)
		return err
	})
	if err != nil {
		if data != nil {
			data.Abort()
		}
		return err
	}
	if data != nil {
		if err := data.Commit(); err != nil {
			model.Abort()
			return err
		}
	}
	if err := model.Commit(); err != nil {
		if data != nil {
			data.Revert() // a new data file without its model (NoReplace)
		}
		return err
	}
	return nil
}

// externalAlignment: large tensors start on a page boundary so that
// runtimes may map them directly; small ones on a cache line.
func externalAlignment(size int64) int64 {
	if size >= 64<<10 {
		return 4096
	}
	return 64
}

func alignUp(x, a int64) int64 { return (x + a - 1) / a * a }

// collectInitializers lists the initializers of g and of every subgraph.
func collectInitializers(g *Graph, out *[]*Tensor, depth int) {
	if g == nil || depth > maxNesting {
		return
	}
	*out = append(*out, g.Initializers...)
	for _, n := range g.Nodes {
		for _, a := range n.Attributes {
			collectInitializers(a.G, out, depth+1)
			for _, sub := range a.Graphs {
				collectInitializers(sub, out, depth+1)
			}
		}
	}
}

// checkRelative accepts a location that stays inside the model directory
// by its spelling alone (the file need not exist yet).
func checkRelative(location string) error {
	if location == "" || strings.ContainsRune(location, 0) {
		return fmt.Errorf("%w: empty or NUL in path", ErrUnsafePath)
	}
	if filepath.IsAbs(location) || strings.HasPrefix(location, "/") || strings.HasPrefix(location, `\`) || filepath.VolumeName(location) != "" {
		return fmt.Errorf("%w: absolute path", ErrUnsafePath)
	}
	for _, part := range strings.FieldsFunc(location, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return fmt.Errorf("%w: \"..\" component", ErrUnsafePath)
		}
	}
	return nil
}

// PatchFile writes dst as a copy of the model file src with the raw bytes
// of the named top-level initializers replaced by newValues (little-endian
// values of the same dtype and size). m must be the model decoded from src
// (ReadFile(src)), still open; every byte outside the patched ranges stays
// identical. It is an error if a value's size differs or an initializer is
// not stored as raw_data inside src (typed fields, external data): then
// re-encode with WriteFile instead. dst is written atomically (temporary
// file + rename) and may be src itself.
func PatchFile(src, dst string, m *Model, newValues map[string][]byte) error {
	return PatchFileWith(src, dst, m, newValues, PatchOptions{})
}

// PatchOptions control PatchFileWith.
type PatchOptions struct {
	// NoReplace fails the write with an *atomicfile.ExistsError, leaving
	// the file as it is, where dst exists by the time it is put in place
	// (as WriteOptions.NoReplace).
	NoReplace bool
}

// PatchFileWith is PatchFile as opts say.
func PatchFileWith(src, dst string, m *Model, newValues map[string][]byte, opts PatchOptions) error {
	if err := patchFile(src, dst, m, newValues, opts); err != nil {
		return fmt.Errorf("onnx: patch %s: %w", src, err)
	}
	return nil
}

type patch struct {
	offset int64
	value  []byte
}

func patchFile(src, dst string, m *Model, newValues map[string][]byte, opts PatchOptions) error {
	if m.Graph == nil || m.buf == nil {
		return errors.New("model has no graph or was closed")
	}
	byName := map[string]*Tensor{}
	for _, t := range m.Graph.Initializers {
		byName[t.Name] = t
	}
	var patches []patch
	for name, value := range newValues {
		t := byName[name]
		switch {
		case t == nil:
			return fmt.Errorf("initializer %q: no such top-level initializer", name)
		case t.External != nil:
			return fmt.Errorf("initializer %q: stored in external data %q, not in the model file: re-encode with WriteFile", name, t.External.Location)
		case t.RawOffset < 0 || t.Raw == nil:
			return fmt.Errorf("initializer %q: not stored as raw_data in the file: re-encode with WriteFile", name)
		case len(value) != len(t.Raw):
			return fmt.Errorf("initializer %q: new value has %d bytes, the file holds %d (%s %v)", name, len(value), len(t.Raw), t.DataType, t.Dims)
		case t.RawOffset+int64(len(t.Raw)) > int64(len(m.buf)):
			return fmt.Errorf("initializer %q: raw_data offset %d is not inside the model's buffer", name, t.RawOffset)
		}
		patches = append(patches, patch{t.RawOffset, value})
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if st.Size() != int64(len(m.buf)) {
		return fmt.Errorf("file is %d bytes, the model was decoded from %d: is m the model read from this file?", st.Size(), len(m.buf))
	}
	return atomicfile.Options{NoReplace: opts.NoReplace}.WriteWith(dst, func(f *os.File) error {
		n, err := io.Copy(f, in)
		if err != nil {
			return err
		}
		if n != st.Size() {
			return fmt.Errorf("copied %d bytes of %d: file changed while copying", n, st.Size())
		}
		for _, p := range patches {
			if _, err := f.WriteAt(p.value, p.offset); err != nil {
				return err
			}
		}
		return nil
	})
}
