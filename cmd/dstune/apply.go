package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func init() {
	register(&command{
		name:     "apply",
		synopsis: []string{"MODEL.onnx DELTA.safetensors [MORE.safetensors ...] -o OUT.onnx [--force]"},
		summary:  "write the fine-tuned model: the base model with one or more deltas (LoRA adapters, a soft prompt) applied in order",
		flags:    func(fs *flag.FlagSet) { new(applyFlags).define(fs) },
		run:      runApply,
	})
}

// applyFlags are dstune apply's flags.
type applyFlags struct {
	out   string
	force *bool
}

func (f *applyFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.out, "o", "", "the fine-tuned model to write (OUT.onnx)")
	fs.StringVar(&f.out, "out", "", "same as -o")
	f.force = fs.Bool("force", false, "apply deltas made for another base model, let a later delta win where two change one entry, and overwrite an existing OUT.onnx")
}

func runApply(args []string, stdout, stderr io.Writer) error {
	var f applyFlags
	fs := newFlagSet("apply", f.define)
	pos, err := parseArgs(fs, args)
	out, force := f.out, f.force
	if err != nil {
		return err
	}
	switch {
	case len(pos) < 2:
		return usagef("want the model and at least one delta, got %d arguments", len(pos))
	case out == "":
		return usagef("-o OUT.onnx is required")
	}
	modelPath, deltaPaths := pos[0], pos[1:]
	inputs := []outpath.Input{{Path: modelPath, What: "the base model"}}
	for i, d := range deltaPaths {
		inputs = append(inputs, outpath.Input{Path: d, What: fmt.Sprintf("delta %d", i+1)})
	}
	if err := checkOutputDir("-o", out); err != nil {
		return err
	}
	if err := checkOutputFile("-o", out, *force, inputs...); err != nil {
		return err
	}

	m, err := onnx.ReadFile(modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := checkOutputFile("-o", out, true, outpath.ModelInputs(modelPath, m)[1:]...); err != nil {
		return err
	}
	inits, err := baseInitializers(m)
	if err != nil {
		return fmt.Errorf("%s: %w", modelPath, err)
	}
	deltaPaths, prompt, promptPath, err := splitPrompt(stderr, deltaPaths, inits, *force)
	if err != nil {
		return err
	}
	var delta *dst.Delta
	if len(deltaPaths) > 0 {
		if delta, err = composeDeltas(stdout, stderr, deltaPaths, inits, *force); err != nil {
			return err
		}
	}

	var newValues map[string][]byte
	var reencode []string
	if len(deltaPaths) > 0 {
		if newValues, reencode, err = applyToInitializers(stdout, m, inits, delta); err != nil {
			return fmt.Errorf("%s: %w", modelPath, err)
		}
	}
	if prompt != nil {
		return writtenOutput("-o", writePrompted(stdout, out, m, newValues, prompt, promptPath, !*force))
	}
	return writtenOutput("-o", writeApplied(stdout, modelPath, out, m, newValues, reencode, !*force))
}

// checkOutputDir refuses an output whose directory does not exist (or is
// no directory) before any work is done: the atomic write creates its
// temporary file there only at the very end, and would fail then, naming
// the temporary file rather than the output.
func checkOutputDir(flag, out string) error {
	dir := atomicfile.Dir(out) // as the kernel finds it, through link/..
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usagef("%s %s: the directory %s does not exist (no directory is created for it)", flag, out, dir)
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, out, err)
	case !st.IsDir():
		return usagef("%s %s: %s is not a directory", flag, out, dir)
	}
	return nil
}

// applyToInitializers computes the new raw bytes of every changed
// initializer, in the tensor's own dtype (float16/bfloat16 values round
// to nearest, ties to even), printing a line per tensor and the totals;
// reencode says why the file cannot be patched in place (nothing when it
// can).
func applyToInitializers(stdout io.Writer, m *onnx.Model, inits []dst.Initializer, delta *dst.Delta) (newValues map[string][]byte, reencode []string, err error) {
	newValues = map[string][]byte{}
	byName := map[string]*onnx.Tensor{}
	for _, it := range m.Graph.Initializers {
		byName[it.Name] = it
	}
	fmt.Fprintf(stdout, "  %-32s %-8s %-12s %10s %12s %10s\n", "changed initializer", "dtype", "shape", "entries", "of", "bytes")
	var entries, written, params int64
	for _, info := range inits {
		params += elementsIfFloat(info)
	}
	for i := range delta.Tensors {
		td := &delta.Tensors[i]
		it := byName[td.Name]
		old, err := it.Bytes()
		if err != nil {
			return nil, nil, err
		}
		data := bytes.Clone(old) // old may be a read-only view of the file
		if err := td.ApplyRaw(safetensorsDType[it.DataType], data); err != nil {
			return nil, nil, err
		}
		newValues[td.Name] = data
		switch {
		case it.External != nil:
			reencode = append(reencode, fmt.Sprintf("initializer %q is stored in the external-data file %q", it.Name, it.External.Location))
		case it.Raw == nil || it.RawOffset < 0:
			reencode = append(reencode, fmt.Sprintf("initializer %q is stored in typed fields, not raw_data", it.Name))
		}
		size := int64(it.DataType.Size())
		n := int64(len(td.Indices))
		entries += n
		written += n * size
		fmt.Fprintf(stdout, "  %-32s %-8s %-12s %10s %12s %10s\n", td.Name, dtypeName(it.DataType), dimsText(it.Dims),
			groupThousands(n), groupThousands(td.Size()), groupThousands(n*size))
	}
	share := 0.0
	if params > 0 {
		share = 100 * float64(entries) / float64(params)
	}
	fmt.Fprintf(stdout, "total: %d tensors, %s entries (%.3g %% of %s parameters), %s bytes rewritten\n",
		len(delta.Tensors), groupThousands(entries), share, groupThousands(params), groupThousands(written))
	return newValues, reencode, nil
}

// writeApplied writes the fine-tuned model: the base file patched in place
// when it can be, else the whole model re-encoded (saying why); with
// noReplace, not over a file that is there by then.
func writeApplied(stdout io.Writer, modelPath, out string, m *onnx.Model, newValues map[string][]byte, reencode []string, noReplace bool) error {
	if len(reencode) == 0 {
		if ext := externalData(m.Graph, 0); ext != "" && !sameDir(modelPath, out) {
			reencode = append(reencode, fmt.Sprintf("the model keeps initializers in the external-data file %q, which a patched copy in another directory would not find", ext))
		}
	}
	if len(reencode) == 0 {
		if err := onnx.PatchFileWith(modelPath, out, m, newValues, onnx.PatchOptions{NoReplace: noReplace}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: %s patched in place (every byte outside the changed entries is the base file's)\n", out, filepath.Base(modelPath))
		return nil
	}
	for i, it := range m.Graph.Initializers {
		if v, ok := newValues[it.Name]; ok {
			nt, err := onnx.NewTensor(it.Name, it.DataType, it.Dims, v)
			if err != nil {
				return fmt.Errorf("%s: initializer %q: %w", modelPath, it.Name, err)
			}
			m.Graph.Initializers[i] = nt
		}
	}
	if err := onnx.WriteFile(out, m, onnx.WriteOptions{NoReplace: noReplace}); err != nil {
		return err
	}
	why := strings.Join(reencode, "; ")
	if len(reencode) > 3 {
		why = fmt.Sprintf("%s; and %d more initializers likewise", strings.Join(reencode[:2], "; "), len(reencode)-2)
	}
	fmt.Fprintf(stdout, "wrote %s: re-encoded the whole model, because %s\n", out, why)
	return nil
}

// composeDeltas reads the delta files and composes them in order for the
// base model whose initializers are inits. Every delta must fit the model's
// shapes. A delta made for another base model (base hash), or two deltas
// changing one entry, is an error unless force is set; then it is reported
// on stderr and the later delta wins. A line per delta goes to stdout.
func composeDeltas(stdout, stderr io.Writer, paths []string, inits []dst.Initializer, force bool) (*dst.Delta, error) {
	parts := make([]*dst.Delta, len(paths))
	for i, path := range paths {
		d, err := readDeltaFile(path, inits)
		if err != nil {
			return nil, err
		}
		if err := d.CheckShapes(inits); err != nil {
			return nil, fmt.Errorf("delta %s does not fit the model: %w%s", path, err, otherBase(d.Meta.BaseSHA256, inits))
		}
		if err := d.CheckBase(inits); err != nil {
			if !force || !errors.Is(err, dst.ErrBaseMismatch) {
				return nil, fmt.Errorf("delta %s: %w (--force applies it anyway)", path, err)
			}
			fmt.Fprintf(stderr, "warning: delta %s: %v; applying it anyway (--force)\n", path, err)
		}
		if err := checkHalfRange(d, inits); err != nil {
			return nil, fmt.Errorf("delta %s: %w", path, err)
		}
		parts[i] = d
		fmt.Fprintf(stdout, "delta %d: %s: %s\n", i+1, path, describeDelta(d))
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	composed, conflicts, err := dst.Compose(parts, force)
	var ce *dst.ConflictError
	if errors.As(err, &ce) {
		return nil, fmt.Errorf("%s\n(--force lets the later delta win)", conflictReport(ce.Conflicts))
	}
	if err != nil {
		return nil, err
	}
	if len(conflicts) > 0 {
		fmt.Fprintf(stderr, "warning: %s\nthe later delta's values win (--force)\n", conflictReport(conflicts))
	}
	return composed, nil
}

// otherBase says, for an error of a delta or adapter that does not fit a
// model, that it was made for another base model when the hash it
// records says so (usually the whole story); "" when it does not.
func otherBase(recorded string, inits []dst.Initializer) string {
	got, err := dst.BaseHash(inits)
	if recorded == "" || err != nil || recorded == got {
		return ""
	}
	return fmt.Sprintf(" (it was made for another base model: its base_sha256 is %s, this model's initializers hash to %s)", recorded, got)
}

// checkHalfRange refuses a delta with a value past the range of the
// float16 or bfloat16 initializer it changes, naming the element, while
// its file is known: once deltas are composed, a value's position in the
// composed delta is in no file.
func checkHalfRange(d *dst.Delta, inits []dst.Initializer) error {
	dtypes := make(map[string]string, len(inits))
	for _, it := range inits {
		dtypes[it.Name] = it.DType
	}
	for i := range d.Tensors {
		td := &d.Tensors[i]
		dtype := dtypes[td.Name]
		if dtype != "F16" && dtype != "BF16" {
			continue
		}
		if _, err := td.EncodeValues(dtype); err != nil {
			return err
		}
	}
	return nil
}

// conflictReport lists, per tensor, how many entries more than one delta
// changes, with a few example positions.
func conflictReport(conflicts []dst.Conflict) string {
	var total int64
	for _, c := range conflicts {
		total += c.Count
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s changed by more than one delta:", plural(total, "entry is", "entries are"))
	for _, c := range conflicts {
		ex := make([]string, len(c.Examples))
		for i, x := range c.Examples {
			ex[i] = fmt.Sprint(x)
		}
		more := ""
		if c.Count > int64(len(c.Examples)) {
			more = ", …"
		}
		where := "flat positions"
		if len(c.Examples) == 1 && more == "" {
			where = "flat position"
		}
		fmt.Fprintf(&b, "\n  %-32s %s (%s %s%s)", c.Tensor, plural(c.Count, "entry", "entries"), where, strings.Join(ex, ", "), more)
	}
	return b.String()
}

// plural writes n with the singular or plural noun: "1 entry", "2 entries".
func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return groupThousands(n) + " " + many
}

// describeDelta summarizes a delta's metadata and size in one line.
func describeDelta(d *dst.Delta) string {
	var parts []string
	if d.Meta.Method != "" {
		parts = append(parts, "method "+d.Meta.Method)
	}
	if d.Meta.Epsilon > 0 {
		parts = append(parts, fmt.Sprintf("ε %g", d.Meta.Epsilon))
	}
	if d.Meta.Distance != "" {
		parts = append(parts, "distance "+d.Meta.Distance)
	}
	if d.Meta.Silo != "" {
		parts = append(parts, "silo "+d.Meta.Silo)
	}
	if d.Meta.Steps > 0 {
		parts = append(parts, fmt.Sprintf("%d steps", d.Meta.Steps))
	}
	parts = append(parts, fmt.Sprintf("%d tensors, %s entries", len(d.Tensors), groupThousands(d.NumChanged())))
	return strings.Join(parts, ", ")
}

// baseInitializers describes m's top-level initializers as the base hash
// and the shape checks of deltas see them (dst.InitializersOf, the same
// description a DST run hashes).
func baseInitializers(m *onnx.Model) ([]dst.Initializer, error) { return dst.InitializersOf(m) }

// elementsIfFloat counts the elements of a floating-point initializer (a
// parameter), 0 for the others.
func elementsIfFloat(it dst.Initializer) int64 {
	switch it.DType {
	case "F32", "F16", "BF16", "F64":
		n := int64(1)
		for _, d := range it.Dims {
			n *= d
		}
		return n
	}
	return 0
}

// dtypeName spells an ONNX element type as dstune does elsewhere (float32,
// float16, …).
func dtypeName(dt onnx.DataType) string {
	if d, err := ir.DTypeFromONNX(dt); err == nil {
		return d.String()
	}
	return strings.ToLower(dt.String())
}

func dimsText(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// externalData names an external-data file some initializer of g (or of
// its subgraphs) lives in, "" when there is none.
func externalData(g *onnx.Graph, depth int) string {
	if g == nil || depth > 64 {
		return ""
	}
	for _, it := range g.Initializers {
		if it.External != nil {
			return it.External.Location
		}
	}
	for _, n := range g.Nodes {
		for _, a := range n.Attributes {
			if loc := externalData(a.G, depth+1); loc != "" {
				return loc
			}
			for _, sub := range a.Graphs {
				if loc := externalData(sub, depth+1); loc != "" {
					return loc
				}
			}
		}
	}
	return ""
}

// sameDir reports whether files a and b sit in one directory.
func sameDir(a, b string) bool {
	// The directories as the kernel finds them ("link/.." is the parent
	// of what link leads to), compared as files.
	sa, errA := os.Stat(atomicfile.Dir(a))
	sb, errB := os.Stat(atomicfile.Dir(b))
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}
