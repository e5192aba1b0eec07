package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dstune/dstune/accel"
	_ "github.com/dstune/dstune/accel/cpu" // the "cpu" backend
	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func init() {
	register(&command{
		name: "run",
		synopsis: []string{
			"MODEL.onnx --check DIR [--delta D [--force]] [--rtol 1e-4] [--atol 1e-5] [--threads N] [--backend cpu|pjrt] [--max-memory SIZE]",
			"MODEL.onnx [--input NAME=FILE.pb ...] --output-dir OUT [--force] [--delta D] [--threads N] [--backend cpu|pjrt] [--max-memory SIZE]",
			"MODEL.onnx --tokenizer T --text TEXT [--output-dir OUT [--force]] [--delta D] [--threads N] [--backend cpu|pjrt] [--max-memory SIZE]",
		},
		summary: "run a model on given inputs; with --check compare with expected outputs (exit 1 when off)",
		flags:   func(fs *flag.FlagSet) { new(runFlags).define(fs) },
		run:     runRun,
	})
}

// inputFlags collects repeated --input NAME=FILE.pb.
type inputFlags []string

func (f *inputFlags) String() string     { return strings.Join(*f, ",") }
func (f *inputFlags) Set(s string) error { *f = append(*f, s); return nil }

// runFlags are dstune run's flags.
type runFlags struct {
	check, outDir, backend *string
	tokenizer, text        *string
	inputs, deltas         inputFlags
	force                  *bool
	rtol, atol             *float64
	threads                *int
	maxMemory              *string
}

func (f *runFlags) define(fs *flag.FlagSet) {
	f.check = fs.String("check", "", "directory in the ONNX test layout: input_N.pb fed in graph-input order, outputs compared with output_N.pb")
	fs.Var(&f.inputs, "input", "NAME=FILE.pb: a serialized TensorProto (SequenceProto, OptionalProto for such inputs) for graph input NAME (repeat for every input)")
	f.outDir = fs.String("output-dir", "", "with --input or --text: write output_N.pb (graph-output order) here (existing files need --force)")
	fs.Var(&f.deltas, "delta", "apply this delta.safetensors to the model's initializers first (repeat to compose several, in order); a LoRA adapter is merged, a soft prompt built into the graph")
	f.force = fs.Bool("force", false, "apply deltas made for another base model or recording none (as PEFT's adapters), let a later delta win where two change one entry, and overwrite existing --output-dir files, as apply --force does")
	f.rtol = fs.Float64("rtol", 1e-4, "relative tolerance of --check")
	f.atol = fs.Float64("atol", 1e-5, "absolute tolerance of --check")
	f.threads = fs.Int("threads", 0, "goroutines per kernel call (0: all cores)")
	f.backend = fs.String("backend", "cpu", "execution backend")
	f.maxMemory = fs.String("max-memory", "", fmt.Sprintf("memory the model's values may take at once, e.g. 8GiB (default: %.0f %% of this machine's memory)", 100*sysmem.DefaultFraction))
	f.tokenizer = fs.String("tokenizer", "", "with --text: the tokenizer file (tokenizer.json or llama2.c tokenizer.bin)")
	f.text = fs.String("text", "", "run a language model on this text: its token ids (--tokenizer's template) feed the token input, the rest is derived; prints the most likely next tokens")
}

func runRun(args []string, stdout, stderr io.Writer) error {
	var f runFlags
	fs := newFlagSet("run", f.define)
	check, outDir, rtol, atol, threads, backend := f.check, f.outDir, f.rtol, f.atol, f.threads, f.backend
	pos, err := parseArgs(fs, args)
	inputs, deltas := f.inputs, f.deltas
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one model file, got %d arguments", len(pos))
	}
	// Whether --text was given, not whether it is empty: an empty text
	// is a mistake to name, not a missing mode.
	text := flagsSet(fs)["text"]
	switch {
	case *check != "" && (len(inputs) > 0 || *outDir != "" || text):
		return usagef("--check, --input and --text are different modes: give one")
	case text && len(inputs) > 0:
		return usagef("--text and --input are different modes: give one")
	case text && *f.text == "":
		return usagef("--text is empty: give the text to run the model on")
	case text && *f.tokenizer == "":
		return usagef("--text needs --tokenizer")
	case !text && *f.tokenizer != "":
		return usagef("--tokenizer goes with --text TEXT")
	case *check == "" && len(inputs) == 0 && !text && *outDir == "":
		// --output-dir alone runs a model whose inputs are all derived
		// (a mask of ones) or that has none.
		return usagef("give --check DIR, --input NAME=FILE.pb and --output-dir OUT, or --tokenizer T --text TEXT")
	case len(inputs) > 0 && *outDir == "":
		return usagef("--input needs --output-dir")
	case *rtol < 0 || *atol < 0:
		return usagef("--rtol and --atol must not be negative")
	case *threads < 0:
		return usagef("--threads must not be negative")
	case !slices.Contains(accel.Names(), *backend):
		return usagef("unknown --backend %q (have %s)", *backend, strings.Join(accel.Names(), ", "))
	}
	var maxMemory int64
	if *f.maxMemory != "" {
		limit, err := sysmem.ParseSize(*f.maxMemory)
		if err != nil || limit <= 0 {
			return usagef("--max-memory %q: want a positive size such as 8GiB", *f.maxMemory)
		}
		defer ir.SetMemoryLimit(ir.SetMemoryLimit(limit)) // the import's bounds too
		maxMemory = limit
	}
	m, err := onnx.ReadFile(pos[0])
	if err != nil {
		return err
	}
	defer m.Close()
	model, err := ir.NewModelShared(m)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	// Refuse the outputs before anything slow: overwriting a file the run
	// reads, or (without --force) one that exists, perhaps a reference.
	if *outDir != "" {
		// The directory the kernel finds for "link/..", where MkdirAll
		// makes it, not filepath.Join's.
		*outDir = outpath.Resolve(*outDir)
		read := runInputs(pos[0], m, deltas, inputs, *f.tokenizer)
		if err := checkRunOutputs(*outDir, len(model.Outputs), *f.force, read); err != nil {
			return err
		}
	}
	if len(deltas) > 0 {
		if model, err = withDeltas(m, model, deltas, *f.force, stderr); err != nil {
			return err
		}
	}
	values := map[string]*ir.Datum{}
	if *check != "" {
		entries, err := checkReferenceFiles(*check, model)
		if err != nil {
			return err
		}
		for i, in := range model.Inputs {
			d, err := readDatumFile(filepath.Join(*check, fmt.Sprintf("input_%d.pb", i)), inputKind(in))
			if err != nil {
				return fmt.Errorf("input %d (%q): %w", i, in.Name, err)
			}
			values[in.Name] = d
		}
		if !holdsOutput(entries, len(model.Outputs)) {
			return noOutputFiles(*check, model, entries) // before the run, not after
		}
	} else if text {
		tok, err := loadTokenizer(*f.tokenizer)
		if err != nil {
			return err
		}
		g, feeds, err := specializeText(model, tok, *f.tokenizer, *f.text, stderr)
		if err != nil {
			return err
		}
		outputs, err := executeGraph(g, feeds, *backend, *threads, maxMemory)
		if err != nil {
			return err
		}
		if vocab := textVocab(g, tokenInput(model)); vocab > 0 && isLogits(outputs[0], vocab) {
			printNextTokens(stdout, tok, outputs[0])
		} else {
			fmt.Fprintf(stderr, "the first output is not logits [1, T, vocabulary]: no next tokens to show\n")
		}
		if *outDir == "" {
			return nil
		}
		return writeOutputs(stdout, model, outputs, *outDir, *f.force)
	} else {
		for _, spec := range inputs {
			name, file, ok := strings.Cut(spec, "=")
			if !ok || name == "" || file == "" {
				return usagef("--input %q: want NAME=FILE.pb", spec)
			}
			in := model.Input(name)
			if in == nil && model.ONNX.Graph.Initializer(name) != nil && findValueInfo(model.ONNX.Graph.Inputs, name) != nil {
				return usagef("--input %q: graph input %q has an initializer, whose value dstune uses: it is a weight or constant of the model, not an input it can be given (inputs: %s)", spec, name, inputNames(model))
			}
			if in == nil {
				return usagef("--input %q: the model has no input %q (inputs: %s)", spec, name, inputNames(model))
			}
			if _, dup := values[name]; dup {
				return usagef("--input %q: input %q given twice", spec, name)
			}
			d, err := readDatumFile(file, inputKind(*in))
			if err != nil {
				return fmt.Errorf("input %q: %w", name, err)
			}
			values[name] = d
		}
		if err := deriveInputs(model, values, stderr); err != nil {
			return err
		}
		for _, in := range model.Inputs {
			if _, ok := values[in.Name]; !ok {
				return usagef("no --input for the model's input %q (inputs: %s)", in.Name, inputNames(model))
			}
		}
	}
	outputs, err := runModel(model, values, *backend, *threads, maxMemory)
	if err != nil {
		return err
	}
	if *check != "" {
		return checkOutputs(stdout, model, outputs, *check, *rtol, *atol)
	}
	return writeOutputs(stdout, model, outputs, *outDir, *f.force)
}

// outputFile is the name of output i's file in the ONNX test layout.
func outputFile(i int) string { return fmt.Sprintf("output_%d.pb", i) }

// writeOutputs writes outDir/output_N.pb in graph-output order. Every file
// is written to a temporary file first and the files are renamed into
// place only once all of them are complete, so a failure (an output that
// cannot be serialized, a full disk) leaves the earlier files as they
// were rather than a mix of this run's outputs and an older run's; only
// a rename failing midway (the directory changed under the run) leaves
// the files before it renamed, and the error says which. Without force, a
// file another process made since checkRunOutputs found none is not
// replaced.
func writeOutputs(stdout io.Writer, model *ir.Model, outputs []*ir.Datum, outDir string, force bool) error {
	if err := os.MkdirAll(outDir, 0o777); err != nil { // the umask takes its share
		return fmt.Errorf("--output-dir: %w", err)
	}
	var pending []*atomicfile.Pending
	abort := func() {
		for _, p := range pending {
			p.Abort()
		}
	}
	for i, name := range model.Outputs {
		v, err := ir.DatumToONNX(name, outputs[i])
		if err == nil {
			var buf []byte
			if buf, err = onnx.EncodeValue(v); err == nil {
				var p *atomicfile.Pending
				p, err = atomicfile.Options{NoReplace: !force}.Prepare(filepath.Join(outDir, outputFile(i)), func(f *os.File) error {
					_, err := f.Write(buf)
					return err
				})
				if err == nil {
					pending = append(pending, p)
				}
			}
		}
		if err != nil {
			abort()
			return fmt.Errorf("--output-dir: output %d (%q): %w; no output file written", i, name, err)
		}
	}
	for i, p := range pending {
		path := filepath.Join(outDir, outputFile(i))
		if err := p.Commit(); err != nil {
			pending = pending[i+1:]
			abort()
			written := "none of the outputs was written"
			if i > 0 {
				written = layoutFiles("output", i) + " were written, the rest not"
			}
			var ee *atomicfile.ExistsError
			if errors.As(err, &ee) {
				return usagef("--output-dir: %v (%s; --force overwrites it)", ee, written)
			}
			return fmt.Errorf("--output-dir: %s: %w (%s)", path, err, written)
		}
		fmt.Fprintf(stdout, "wrote %s (%s %v)\n", path, model.Outputs[i], outputs[i])
	}
	for _, name := range staleOutputs(outDir, len(outputs)) { // --force: checkRunOutputs refuses them otherwise
		if err := os.Remove(filepath.Join(outDir, name)); err != nil {
			return fmt.Errorf("--output-dir: %w", err)
		}
		fmt.Fprintf(stdout, "removed %s (an output past this model's)\n", filepath.Join(outDir, name))
	}
	return atomicfile.SyncDir(outDir)
}

// runInputs lists the files a run reads, for checkRunOutputs: the model
// and its external data, the deltas, the --input files and the tokenizer.
func runInputs(modelPath string, m *onnx.Model, deltas, inputs []string, tokenizer string) []outpath.Input {
	ins := outpath.ModelInputs(modelPath, m)
	for i, d := range deltas {
		ins = append(ins, outpath.Input{Path: d, What: fmt.Sprintf("delta %d", i+1)})
	}
	for _, spec := range inputs {
		name, file, _ := strings.Cut(spec, "=")
		ins = append(ins, outpath.Input{Path: file, What: fmt.Sprintf("the input file of %q", name)})
	}
	if tokenizer != "" {
		ins = append(ins, outpath.Input{Path: tokenizer, What: "the tokenizer"})
	}
	return ins
}

// checkRunOutputs refuses output files (OUT/output_N.pb) that are one of
// the files the run reads and, unless force, output files that exist: an
// --output-dir pointed at a --check reference would otherwise replace the
// reference with what is to be checked against it.
func checkRunOutputs(outDir string, outputs int, force bool, inputs []outpath.Input) error {
	if st, err := os.Stat(outDir); err == nil && !st.IsDir() {
		return usagef("--output-dir %s is not a directory", outDir)
	}
	var existing []string
	for i := range outputs {
		out := filepath.Join(outDir, outputFile(i))
		err := outpath.Check(out, force, inputs...)
		var ie *outpath.InputError
		var ee *outpath.ExistsError
		var nr *outpath.NotRegularError
		switch {
		case errors.As(err, &ie):
			return usagef("--output-dir: %v: write the outputs to another directory", err)
		case errors.As(err, &nr):
			return usagef("--output-dir: %v", err)
		case errors.As(err, &ee):
			existing = append(existing, outputFile(i))
		case err != nil:
			return fmt.Errorf("--output-dir: %w", err)
		}
	}
	// Outputs of an earlier run with more outputs would be left beside
	// this run's as if they were its own.
	stale := staleOutputs(outDir, outputs)
	if !force {
		existing = append(existing, stale...)
	}
	if len(existing) > 0 {
		return usagef("--output-dir %s holds %s already (--force overwrites them, and removes outputs past this model's)", outDir, strings.Join(existing, ", "))
	}
	return nil
}

// staleOutputs lists the output_K.pb files in dir with K ≥ outputs.
func staleOutputs(dir string, outputs int) []string {
	entries, _ := os.ReadDir(dir)
	var stale []string
	for _, e := range entries {
		name := e.Name()
		if !referenceFile.MatchString(name) || !strings.HasPrefix(name, "output_") {
			continue
		}
		if k, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "output_"), ".pb")); err == nil && k >= outputs {
			stale = append(stale, name)
		}
	}
	return stale
}

// referenceFile matches the names of the ONNX test layout's files.
var referenceFile = regexp.MustCompile(`^(input|output)_[0-9]+\.pb$`)

// checkReferenceFiles refuses a --check directory holding input_N.pb or
// output_N.pb files that match no graph input or output (an input_1.pb
// for a model of one input, an output_01.pb): the model would run without
// them, and a reference made for another model, or one output short of
// what was meant, would pass as checked. It returns the directory's
// entries.
func checkReferenceFiles(dir string, model *ir.Model) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("--check: %w", err)
	}
	want := map[string]bool{}
	for i := range model.Inputs {
		want[fmt.Sprintf("input_%d.pb", i)] = true
	}
	for i := range model.Outputs {
		want[outputFile(i)] = true
	}
	var extra []string
	for _, e := range entries {
		if referenceFile.MatchString(e.Name()) && !want[e.Name()] {
			extra = append(extra, e.Name())
		}
	}
	if len(extra) == 0 {
		return entries, nil
	}
	verb := "matches"
	if len(extra) > 1 {
		verb = "match"
	}
	return nil, fmt.Errorf("--check %s: %s %s no graph input or output: the model has %s (%s) and %s (%s); is it another model's reference?",
		dir, strings.Join(extra, ", "), verb,
		countOf(len(model.Inputs), "input"), layoutFiles("input", len(model.Inputs)),
		countOf(len(model.Outputs), "output"), layoutFiles("output", len(model.Outputs)))
}

// holdsOutput reports whether entries hold the file of one of the model's
// outputs.
func holdsOutput(entries []os.DirEntry, outputs int) bool {
	for _, e := range entries {
		for i := range outputs {
			if e.Name() == outputFile(i) {
				return true
			}
		}
	}
	return false
}

// noOutputFiles is the error for a --check directory without any of the
// model's output files; it names what the directory holds (entries)
// instead.
func noOutputFiles(dir string, model *ir.Model, entries []os.DirEntry) error {
	return fmt.Errorf("--check %s: no %s to compare with (the model has %s: %s); the directory holds %s",
		dir, layoutFiles("output", len(model.Outputs)), countOf(len(model.Outputs), "output"), strings.Join(model.Outputs, ", "), dirListing(entries))
}

// countOf is "1 input", "3 inputs".
func countOf(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// layoutFiles names the files of n inputs or outputs: "input_0.pb",
// "input_0.pb to input_2.pb".
func layoutFiles(prefix string, n int) string {
	switch n {
	case 0:
		return "no files"
	case 1:
		return prefix + "_0.pb"
	}
	return fmt.Sprintf("%s_0.pb to %s_%d.pb", prefix, prefix, n-1)
}

func inputNames(m *ir.Model) string {
	var names []string
	for _, in := range m.Inputs {
		names = append(names, in.Name)
	}
	return strings.Join(names, ", ")
}

// inputKind is the kind of value files for input in hold.
func inputKind(in ir.InputInfo) onnx.TypeKind {
	switch in.Kind {
	case ir.SequenceDatum:
		return onnx.TypeSequence
	case ir.OptionalDatum:
		return onnx.TypeOptional
	}
	return onnx.TypeTensor
}

// outputKind is the kind of value the model declares for output i (a
// tensor when it declares none).
func outputKind(m *onnx.Model, i int) onnx.TypeKind {
	if vi := m.Graph.Outputs[i]; vi.Type != nil && vi.Type.Kind != onnx.TypeUnknown {
		return vi.Type.Kind
	}
	return onnx.TypeTensor
}

// readDatumFile reads a serialized TensorProto (or, for kind sequence or
// optional, a SequenceProto or OptionalProto).
func readDatumFile(path string, kind onnx.TypeKind) (*ir.Datum, error) {
	v, err := onnx.ReadValueFile(path, kind)
	if err != nil {
		return nil, err
	}
	d, err := ir.DatumFromONNX(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// runModel specializes the model to the inputs, compiles it and runs it
// once. The outputs are in model-output order.
func runModel(model *ir.Model, inputs map[string]*ir.Datum, backendName string, threads int, maxMemory int64) ([]*ir.Datum, error) {
	g, feeds, err := specializeInputs(model, inputs)
	if err != nil {
		return nil, err
	}
	return executeGraph(g, feeds, backendName, threads, maxMemory)
}

// specializeInputs specializes the model to the inputs, binding the inputs that
// decide shapes, and strings, as constants, and returns the tensors to
// feed for the rest (sequence and optional elements included).
func specializeInputs(model *ir.Model, inputs map[string]*ir.Datum) (*ir.Graph, map[string]*ir.Tensor, error) {
	b := ir.Bindings{Shapes: map[string]ir.Shape{}, Values: map[string]*ir.Tensor{}, Composites: map[string]*ir.Datum{}}
	valueInputs := map[string]bool{}
	for _, name := range model.ValueInputs() {
		valueInputs[name] = true
	}
	feeds := map[string]*ir.Tensor{}
	for _, in := range model.Inputs {
		d := inputs[in.Name]
		switch {
		case d == nil:
			return nil, nil, fmt.Errorf("no value for the model's input %q (inputs: %s)", in.Name, inputNames(model))
		case d.Kind != in.Kind:
			return nil, nil, fmt.Errorf("input %q is of kind %s, the model wants kind %s", in.Name, d.Kind, in.Kind)
		case d.Kind != ir.TensorDatum && valueInputs[in.Name]:
			b.Composites[in.Name] = d
		case d.Kind != ir.TensorDatum:
			b.Composites[in.Name] = d.Fed(in.Name, feeds)
		case d.Tensor.DType() != in.DType:
			return nil, nil, fmt.Errorf("input %q is %s, the model wants %s", in.Name, d.Tensor.DType(), in.DType)
		case valueInputs[in.Name]:
			b.Values[in.Name] = d.Tensor
		default:
			b.Shapes[in.Name] = d.Tensor.Shape()
			feeds[in.Name] = d.Tensor
		}
	}
	g, err := model.Specialize(b)
	if err != nil {
		return nil, nil, err
	}
	return g, feeds, nil
}

// executeGraph compiles a specialized graph and runs it once on feeds. The
// outputs are in model-output order.
// maxMemory bounds its memory plan (0: the default budget).
func executeGraph(g *ir.Graph, feeds map[string]*ir.Tensor, backendName string, threads int, maxMemory int64) ([]*ir.Datum, error) {
	backend, err := accel.Open(backendName)
	if err != nil {
		return nil, err
	}
	// A model of a few bytes can ask for tensors of gigabytes: the run
	// stays within the memory budget train uses by default.
	limit, why := maxMemory, "--max-memory"
	if limit <= 0 {
		limit = sysmem.Default()
		why = fmt.Sprintf("%.0f %% of the %.1f GiB this process may use; --max-memory sets another budget", 100*sysmem.DefaultFraction, float64(sysmem.Total())/(1<<30))
	}
	exe, err := backend.Compile(g, accel.Options{Threads: threads, MaxMemory: limit})
	var me *accel.MemoryError
	if errors.As(err, &me) {
		return nil, fmt.Errorf("%w (%s)", err, why)
	}
	if err != nil {
		return nil, err
	}
	defer exe.Close()
	in := make([]*ir.Tensor, len(g.Inputs))
	for i, v := range g.Inputs {
		in[i] = feeds[v.Name]
	}
	out, err := exe.Run(in)
	if err != nil {
		return nil, err
	}
	named := make(map[string]*ir.Tensor, len(out))
	for i, t := range out {
		named[g.Outputs[i].Name] = t.Clone()
	}
	return g.Assemble(named)
}

// checkOutputs compares every output that has an output_N.pb in dir and
// prints max abs/rel error per output (over all elements of a sequence or
// optional). An element is off when |got - want| > atol + rtol·|want|
// (floats; NaN and ±Inf must match) or got != want (integers, bools,
// strings); any off element makes the exit status 1.
func checkOutputs(w io.Writer, model *ir.Model, outputs []*ir.Datum, dir string, rtol, atol float64) error {
	compared, off := 0, 0
	for i, name := range model.Outputs {
		path := filepath.Join(dir, outputFile(i))
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(w, "%-24s %-22v (no %s, not compared)\n", name, outputs[i], filepath.Base(path))
			continue
		}
		want, err := readDatumFile(path, outputKind(model.ONNX, i))
		if err != nil {
			return err
		}
		compared++
		d := ir.CompareData(outputs[i], want, rtol, atol)
		status := "ok"
		if !d.OK() {
			off++
			status = "OFF"
		}
		if d.Mismatch != "" {
			fmt.Fprintf(w, "%-24s %s  %s\n", name, d, status)
			continue
		}
		fmt.Fprintf(w, "%-24s %-22v %s  %d of %d off  %s\n", name, outputs[i], errorText(d.Diff), d.Off, want.Len(), status)
	}
	if compared == 0 { // the files went away since the run started
		entries, _ := os.ReadDir(dir)
		return noOutputFiles(dir, model, entries)
	}
	crit := fmt.Sprintf("off: |got-want| > %g + %g·|want|", atol, rtol)
	if off > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d outputs off (%s)", off, compared, crit)}
	}
	fmt.Fprintf(w, "all %d outputs match (%s)\n", compared, crit)
	return nil
}

// errorText is the max abs and rel error of a comparison, over the float
// elements both sides hold finite; where there were none (all NaN, say)
// it says so instead of reporting an error of 0, and it counts the
// elements where either side is NaN or ±Inf.
func errorText(d ir.Diff) string {
	text := fmt.Sprintf("max abs %.3g  max rel %.3g", d.MaxAbs, d.MaxRel)
	if d.Finite == 0 && d.NonFinite > 0 {
		text = "max abs -  max rel -  (no element finite on both sides)"
	}
	if d.NonFinite > 0 {
		text += fmt.Sprintf("  %d NaN or ±Inf (compared as values)", d.NonFinite)
	}
	return text
}

// safetensorsDType names ONNX element types as the delta format does.
var safetensorsDType = map[onnx.DataType]string{
	onnx.Float: "F32", onnx.Float16: "F16", onnx.BFloat16: "BF16", onnx.Double: "F64",
	onnx.Int8: "I8", onnx.Uint8: "U8", onnx.Int16: "I16", onnx.Uint16: "U16",
	onnx.Int32: "I32", onnx.Uint32: "U32", onnx.Int64: "I64", onnx.Uint64: "U64", onnx.Bool: "BOOL",
}

// applyDeltas checks that the deltas were made for this model (base hash
// and shapes), composes them in order (two deltas changing one entry is an
// error) and writes the result into the model's parameters; force is
// apply's --force.
func applyDeltas(model *ir.Model, paths []string, force bool, stderr io.Writer) error {
	inits, err := baseInitializers(model.ONNX)
	if err != nil {
		return fmt.Errorf("--delta: %w", err)
	}
	d, err := composeDeltas(io.Discard, stderr, paths, inits, force)
	if err != nil {
		return fmt.Errorf("--delta: %w", err)
	}
	for i := range d.Tensors {
		td := &d.Tensors[i]
		p := model.Param(td.Name)
		if p == nil {
			return fmt.Errorf("--delta: tensor %q is not a parameter of the model", td.Name)
		}
		name := safetensorsDType[p.Tensor.DType().ONNX()]
		if err := td.ApplyRaw(name, p.Tensor.Bytes()); err != nil {
			return fmt.Errorf("--delta: %w", err)
		}
	}
	return nil
}

// deriveInputs binds the inputs of a language model that are not given
// but follow from the token ids, as training does (ir.InputPlans): an
// attention mask of ones, position ids from the mask, zero token types,
// a decoder's past inputs empty and a merged decoder's use_cache_branch
// false. It says on stderr what it bound.
func deriveInputs(model *ir.Model, values map[string]*ir.Datum, stderr io.Writer) error {
	plans, err := model.InputPlans()
	if err != nil {
		return nil // no roles to go by: every input must be given
	}
	var tokens *ir.Tensor
	for _, p := range plans {
		if d := values[p.Input.Name]; p.Role == ir.RoleTokens && d != nil && d.Kind == ir.TensorDatum {
			tokens = d.Tensor
		}
	}
	if tokens == nil || len(tokens.Shape()) != 2 {
		return nil
	}
	B, T := tokens.Shape()[0], tokens.Shape()[1]
	b, notes, err := model.LMBindings(B, T)
	if err != nil {
		return err
	}
	var mask []int64
	for _, p := range plans {
		if d := values[p.Input.Name]; p.Role == ir.RoleAttentionMask && d != nil && d.Kind == ir.TensorDatum && d.Tensor.Len() == B*T && d.Tensor.DType().IsInt() {
			mask = asInputType(d.Tensor, ir.Int64).Int64s()
		}
	}
	for _, p := range plans {
		name := p.Input.Name
		if _, given := values[name]; given {
			continue
		}
		var t *ir.Tensor
		switch p.Role {
		case ir.RoleAttentionMask:
			t = ir.NewTensor(ir.Int64, ir.Shape{B, T})
			for i := range t.Int64s() {
				t.Int64s()[i] = 1
			}
			fmt.Fprintf(stderr, "%s: bound to ones (no padding)\n", name)
		case ir.RolePositionIDs:
			t = ir.NewTensor(ir.Int64, ir.Shape{B, T})
			ir.PositionIDs(t.Int64s(), mask, B, T)
			fmt.Fprintf(stderr, "%s: derived from the attention mask\n", name)
		case ir.RoleTokenTypeIDs:
			t = ir.NewTensor(ir.Int64, ir.Shape{B, T})
			fmt.Fprintf(stderr, "%s: bound to zeros\n", name)
		case ir.RolePast, ir.RoleCacheBranch:
			t = b.Values[name]
		}
		if t != nil {
			values[name] = &ir.Datum{Kind: ir.TensorDatum, Tensor: asInputType(t, p.Input.DType)}
		}
	}
	for _, n := range notes {
		if name, _, _ := strings.Cut(n, ":"); values[name] != nil {
			fmt.Fprintln(stderr, n)
		}
	}
	return nil
}

// tokenInput names the model's token input ("" when it has none).
func tokenInput(model *ir.Model) string {
	plans, err := model.InputPlans()
	if err != nil {
		return ""
	}
	for _, p := range plans {
		if p.Role == ir.RoleTokens {
			return p.Input.Name
		}
	}
	return ""
}

// asInputType converts an integer tensor the run builds (token ids, a
// mask, positions: int64) to the integer type the model's input declares
// (int32 in some exports), as generation feeds them; other types are the
// model's to refuse.
func asInputType(t *ir.Tensor, dt ir.DType) *ir.Tensor {
	if t.DType() == dt || !t.DType().IsInt() || !dt.IsInt() {
		return t
	}
	return ir.Convert(t, dt)
}

// specializeText encodes text with tok and specializes the model to its
// token ids (batch 1) and the inputs derived from them, checking first
// what would otherwise fail deep inside the run: a tokenizer that is not
// the model's (ids past the model's vocabulary) and a text longer than
// the model's context.
func specializeText(model *ir.Model, tok textTokenizer, tokPath, text string, stderr io.Writer) (*ir.Graph, map[string]*ir.Tensor, error) {
	ids, err := tok.Encode(text)
	if err != nil {
		return nil, nil, fmt.Errorf("--text: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil, usagef("--text encodes to no tokens")
	}
	values, err := textInputs(model, ids, stderr)
	if err != nil {
		return nil, nil, err
	}
	g, feeds, err := specializeInputs(model, values)
	if err != nil {
		return nil, nil, textTooLong(model, tok, tokPath, ids, err)
	}
	if err := checkTextVocab(g, tokenInput(model), tok, tokPath, ids, stderr); err != nil {
		return nil, nil, err
	}
	if err := checkTableIndices(g, feeds); err != nil {
		return nil, nil, textTooLong(model, tok, tokPath, ids, err)
	}
	return g, feeds, nil
}

// checkTableIndices finds a row lookup that would fail in the run: a
// Gather from a parameter (a position embedding, say) whose indices are
// known before running (folded from the sequence length, or fed) and lie
// outside the table. A model whose positions index a table of 64 rows
// specializes to 65 tokens, the indices being computed, and fails only
// inside the run.
func checkTableIndices(g *ir.Graph, feeds map[string]*ir.Tensor) error {
	for _, n := range g.Nodes {
		op, ok := n.Op.(*ir.Gather)
		if !ok || len(n.Inputs) != 2 || n.Inputs[0] == nil || n.Inputs[1] == nil || n.Inputs[0].Kind != ir.ParamValue {
			continue
		}
		var idx *ir.Tensor
		switch v := n.Inputs[1]; v.Kind {
		case ir.ConstValue:
			idx = v.Const
		case ir.GraphInput:
			idx = feeds[v.Name]
		}
		if idx == nil || !idx.DType().IsInt() {
			continue
		}
		table := n.Inputs[0]
		rows := int64(table.Shape[op.Axis])
		for i := range idx.Len() {
			if j := idx.Int64At(i); j >= rows || j < -rows {
				return fmt.Errorf("%s: index %d is outside the %d rows of %q", n, j, rows, table.Param.Name)
			}
		}
	}
	return nil
}

// textInputs binds the model's token input to ids (batch 1) and derives
// the other inputs from them (deriveInputs, which says on notes what it
// bound); every input must be one of those.
func textInputs(model *ir.Model, ids []int, notes io.Writer) (map[string]*ir.Datum, error) {
	plans, err := model.InputPlans()
	if err != nil {
		return nil, fmt.Errorf("--text: %w", err)
	}
	values := map[string]*ir.Datum{}
	for _, p := range plans {
		if p.Role == ir.RoleTokens {
			t := ir.NewTensor(ir.Int64, ir.Shape{1, len(ids)})
			for i, id := range ids {
				t.Int64s()[i] = int64(id)
			}
			values[p.Input.Name] = &ir.Datum{Kind: ir.TensorDatum, Tensor: asInputType(t, p.Input.DType)}
			break
		}
	}
	if len(values) == 0 {
		return nil, fmt.Errorf("--text: the model has no token input (inputs: %s)", inputNames(model))
	}
	if err := deriveInputs(model, values, notes); err != nil {
		return nil, err
	}
	for _, in := range model.Inputs {
		if _, ok := values[in.Name]; !ok {
			return nil, usagef("--text: the model's input %q is not one that follows from the token ids (inputs: %s): use --input", in.Name, inputNames(model))
		}
	}
	return values, nil
}

// checkTextVocab checks the tokenizer against the vocabulary of g's
// logits as generate does (textTokenizer.checkFits), and then the text's
// ids themselves: a special token the tokenizer adds may lie past the
// vocabulary even where the tokenizer as a whole only earned a warning.
func checkTextVocab(g *ir.Graph, tokenInput string, tok textTokenizer, tokPath string, ids []int, stderr io.Writer) error {
	vocab := textVocab(g, tokenInput)
	if vocab == 0 {
		return nil // nothing says how many tokens the model has
	}
	if err := tok.checkFits(tokPath, vocab, stderr); err != nil {
		return err
	}
	for _, id := range ids {
		if id >= vocab {
			s, _ := tok.Decode([]int{id})
			return fmt.Errorf("--text: token %d (%q) is past the model's vocabulary of %d", id, s, vocab)
		}
	}
	return nil
}

// textVocab is the model's vocabulary as far as the graph tells (0: it
// does not): the rows of the token embedding (a Gather from a parameter
// indexed by the token input, named tokenInput), else the last dimension of logits-shaped
// first output. An encoder's hidden states [1, T, d] have no vocabulary
// in their shape, which is why the embedding comes first.
func textVocab(g *ir.Graph, tokenInput string) int {
	for _, n := range g.Nodes {
		if op, ok := n.Op.(*ir.Gather); ok && op.Axis == 0 && len(n.Inputs) == 2 && n.Inputs[0] != nil && n.Inputs[1] != nil &&
			n.Inputs[0].Kind == ir.ParamValue && n.Inputs[1].Kind == ir.GraphInput && n.Inputs[1].Name == tokenInput {
			return n.Inputs[0].Shape[0]
		}
	}
	if lg := g.Outputs[0].Value; len(lg.Shape) == 3 && lg.DType.IsFloat() {
		return lg.Shape[2]
	}
	return 0
}

// textTooLong explains why the model cannot run the text's n tokens
// (err): when a shorter text fits, the text is longer than the model's
// context, whose length is found by specializing to shorter prefixes
// (doubling, then bisecting, as generate finds a context; up to
// maxProbedContext); a model whose token input has a fixed length takes
// only that. A wrong tokenizer is named first, being the more basic
// mistake. When no length fits, or every probed one does, err is
// returned.
func textTooLong(model *ir.Model, tok textTokenizer, tokPath string, ids []int, err error) error {
	n := len(ids)
	fitting := func(m int) *ir.Graph {
		probe := make([]int, m)
		for i := range probe {
			probe[i] = ids[min(i, n-1)]
		}
		values, err := textInputs(model, probe, io.Discard)
		if err != nil {
			return nil
		}
		g, feeds, err := specializeInputs(model, values)
		if err != nil || checkTableIndices(g, feeds) != nil {
			return nil
		}
		return g
	}
	if name, fixed := fixedTokenLength(model); fixed > 0 && fixed != n {
		if g := fitting(fixed); g != nil {
			if err := checkTextVocab(g, tokenInput(model), tok, tokPath, nil, io.Discard); err != nil {
				return err
			}
			return usagef("--text: %d tokens, the model's token input %q takes exactly %d", n, name, fixed)
		}
		return fmt.Errorf("--text: %w", err)
	}
	good := fitting(1)
	if good == nil {
		return fmt.Errorf("--text: %w", err)
	}
	lo, hi := 1, n // lo fits, hi does not
	for m := 2; m < hi; m *= 2 {
		if m > maxProbedContext {
			// Still fitting: the length may well not be what fails.
			return fmt.Errorf("--text: %d tokens: %w", n, err)
		}
		g := fitting(m)
		if g == nil {
			hi = m
			break
		}
		lo, good = m, g
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if g := fitting(mid); g != nil {
			lo, good = mid, g
		} else {
			hi = mid
		}
	}
	if err := checkTextVocab(good, tokenInput(model), tok, tokPath, nil, io.Discard); err != nil {
		return err
	}
	return usagef("--text: %d tokens, the model's context holds %d", n, lo)
}

// maxProbedContext bounds the lengths textTooLong specializes the model
// to: the masks a graph folds grow with the square of the length (8192
// positions: a 256 MiB float mask), and a model that takes that many
// positions is no longer told apart from one without a limit.
const maxProbedContext = 8192

// fixedTokenLength is the token input's name and its declared sequence
// length when the model fixes one (0 otherwise).
func fixedTokenLength(model *ir.Model) (string, int) {
	plans, err := model.InputPlans()
	if err != nil {
		return "", 0
	}
	for _, p := range plans {
		if p.Role == ir.RoleTokens && len(p.Input.Dims) == 2 && p.Input.Dims[1] > 0 {
			return p.Input.Name, p.Input.Dims[1]
		}
	}
	return "", 0
}

// dirListing names a directory's entries (the first 10), for errors about what
// a directory lacks.
func dirListing(entries []os.DirEntry) string {
	if len(entries) == 0 {
		return "no files"
	}
	var names []string
	for _, e := range entries[:min(10, len(entries))] {
		names = append(names, e.Name())
	}
	if len(entries) > 10 {
		names = append(names, fmt.Sprintf("and %d more", len(entries)-10))
	}
	return strings.Join(names, ", ")
}

// isLogits reports whether d is logits [1, T, vocab].
func isLogits(d *ir.Datum, vocab int) bool {
	if d == nil || d.Kind != ir.TensorDatum || !d.Tensor.DType().IsFloat() {
		return false
	}
	sh := d.Tensor.Shape()
	return len(sh) == 3 && sh[0] == 1 && sh[2] == vocab
}

// printNextTokens prints the five most likely tokens after the text, from
// the last position of logits [1, T, vocab] (isLogits).
func printNextTokens(w io.Writer, tok textTokenizer, logits *ir.Datum) {
	sh := logits.Tensor.Shape()
	T, V := sh[1], sh[2]
	row := make([]float64, V)
	for v := range V {
		row[v] = logits.Tensor.Float64At((T-1)*V + v)
	}
	order := make([]int, V)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return row[order[a]] > row[order[b]] })
	m := row[order[0]]
	sum := 0.0
	for _, x := range row {
		sum += math.Exp(x - m)
	}
	fmt.Fprintln(w, "most likely next tokens:")
	for _, id := range order[:min(5, V)] {
		s, _ := tok.Decode([]int{id})
		fmt.Fprintf(w, "  %6d  %-16q p %.4f\n", id, s, math.Exp(row[id]-m)/sum)
	}
}
