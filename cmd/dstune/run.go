package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dstune/dstune/accel"
	_ "github.com/dstune/dstune/accel/cpu" // the "cpu" backend
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func init() {
	register(&command{
		name: "run",
		synopsis: []string{
			"MODEL.onnx --check DIR [--delta D] [--rtol 1e-4] [--atol 1e-5] [--threads N] [--backend cpu|pjrt]",
			"MODEL.onnx --input NAME=FILE.pb [--input ...] --output-dir OUT [--delta D] [--threads N] [--backend cpu|pjrt]",
			"MODEL.onnx --tokenizer T --text TEXT [--output-dir OUT] [--delta D] [--threads N] [--backend cpu|pjrt]",
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
	rtol, atol             *float64
	threads                *int
}

func (f *runFlags) define(fs *flag.FlagSet) {
	f.check = fs.String("check", "", "directory in the ONNX test layout: input_N.pb fed in graph-input order, outputs compared with output_N.pb")
	fs.Var(&f.inputs, "input", "NAME=FILE.pb: a serialized TensorProto (SequenceProto, OptionalProto for such inputs) for graph input NAME (repeat for every input)")
	f.outDir = fs.String("output-dir", "", "with --input: write output_N.pb (graph-output order) here")
	fs.Var(&f.deltas, "delta", "apply this delta.safetensors to the model's initializers first (repeat to compose several, in order); a LoRA adapter is merged, a soft prompt built into the graph")
	f.rtol = fs.Float64("rtol", 1e-4, "relative tolerance of --check")
	f.atol = fs.Float64("atol", 1e-5, "absolute tolerance of --check")
	f.threads = fs.Int("threads", 0, "goroutines per kernel call (0: all cores)")
	f.backend = fs.String("backend", "cpu", "execution backend")
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
	text := *f.text != ""
	switch {
	case *check != "" && (len(inputs) > 0 || *outDir != "" || text):
		return usagef("--check, --input and --text are different modes: give one")
	case text && len(inputs) > 0:
		return usagef("--text and --input are different modes: give one")
	case text && *f.tokenizer == "":
		return usagef("--text needs --tokenizer")
	case *check == "" && len(inputs) == 0 && !text:
		return usagef("give --check DIR, --input NAME=FILE.pb and --output-dir OUT, or --tokenizer T --text TEXT")
	case len(inputs) > 0 && *outDir == "":
		return usagef("--input needs --output-dir")
	case *rtol < 0 || *atol < 0:
		return usagef("--rtol and --atol must not be negative")
	case *threads < 0:
		return usagef("--threads must not be negative")
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
	if len(deltas) > 0 {
		if model, err = withDeltas(m, model, deltas, stderr); err != nil {
			return err
		}
	}
	values := map[string]*ir.Datum{}
	if *check != "" {
		for i, in := range model.Inputs {
			d, err := readDatumFile(filepath.Join(*check, fmt.Sprintf("input_%d.pb", i)), inputKind(in))
			if err != nil {
				return fmt.Errorf("input %d (%q): %w", i, in.Name, err)
			}
			values[in.Name] = d
		}
	} else if text {
		tok, err := loadTokenizer(*f.tokenizer)
		if err != nil {
			return err
		}
		if err := feedText(model, values, tok, *f.text); err != nil {
			return err
		}
		if err := deriveInputs(model, values, stderr); err != nil {
			return err
		}
		outputs, err := runModel(model, values, *backend, *threads)
		if err != nil {
			return err
		}
		if err := printNextTokens(stdout, tok, outputs[0]); err != nil {
			return err
		}
		if *outDir == "" {
			return nil
		}
		return writeOutputs(stdout, model, outputs, *outDir)
	} else {
		for _, spec := range inputs {
			name, file, ok := strings.Cut(spec, "=")
			if !ok || name == "" || file == "" {
				return usagef("--input %q: want NAME=FILE.pb", spec)
			}
			in := model.Input(name)
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
		if err := checkRunOutputs(*outDir, len(model.Outputs), pos[0], m, deltas, inputs); err != nil {
			return err
		}
	}
	outputs, err := runModel(model, values, *backend, *threads)
	if err != nil {
		return err
	}
	if *check != "" {
		return checkOutputs(stdout, model, outputs, *check, *rtol, *atol)
	}
	return writeOutputs(stdout, model, outputs, *outDir)
}

// writeOutputs writes outDir/output_N.pb in graph-output order.
func writeOutputs(stdout io.Writer, model *ir.Model, outputs []*ir.Datum, outDir string) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	for i, name := range model.Outputs {
		v, err := ir.DatumToONNX(name, outputs[i])
		if err != nil {
			return err
		}
		path := filepath.Join(outDir, fmt.Sprintf("output_%d.pb", i))
		if err := onnx.WriteValueFile(path, v); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%s %v)\n", path, name, outputs[i])
	}
	return nil
}

// checkRunOutputs refuses output files (OUT/output_N.pb) that are one of
// the files the run reads.
func checkRunOutputs(outDir string, outputs int, modelPath string, m *onnx.Model, deltas, inputs []string) error {
	ins := outpath.ModelInputs(modelPath, m)
	for i, d := range deltas {
		ins = append(ins, outpath.Input{Path: d, What: fmt.Sprintf("delta %d", i+1)})
	}
	for _, spec := range inputs {
		name, file, _ := strings.Cut(spec, "=")
		ins = append(ins, outpath.Input{Path: file, What: fmt.Sprintf("the input file of %q", name)})
	}
	var outs []string
	for i := range outputs {
		outs = append(outs, filepath.Join(outDir, fmt.Sprintf("output_%d.pb", i)))
	}
	if err := outpath.CheckAll(outs, ins...); err != nil {
		return usagef("--output-dir: %v: write the outputs to another directory", err)
	}
	return nil
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

// runModel specializes the model to the inputs (binding the inputs that
// decide shapes, and strings, as constants; feeding the rest, sequence
// and optional elements included), compiles it and runs it once. The
// outputs are in model-output order.
func runModel(model *ir.Model, inputs map[string]*ir.Datum, backendName string, threads int) ([]*ir.Datum, error) {
	b := ir.Bindings{Shapes: map[string]ir.Shape{}, Values: map[string]*ir.Tensor{}, Composites: map[string]*ir.Datum{}}
	valueInputs := map[string]bool{}
	for _, name := range model.ValueInputs() {
		valueInputs[name] = true
	}
	feeds := map[string]*ir.Tensor{}
	for _, in := range model.Inputs {
		d := inputs[in.Name]
		switch {
		case d.Kind != in.Kind:
			return nil, fmt.Errorf("input %q is of kind %s, the model wants kind %s", in.Name, d.Kind, in.Kind)
		case d.Kind != ir.TensorDatum && valueInputs[in.Name]:
			b.Composites[in.Name] = d
		case d.Kind != ir.TensorDatum:
			b.Composites[in.Name] = d.Fed(in.Name, feeds)
		case d.Tensor.DType() != in.DType:
			return nil, fmt.Errorf("input %q is %s, the model wants %s", in.Name, d.Tensor.DType(), in.DType)
		case valueInputs[in.Name]:
			b.Values[in.Name] = d.Tensor
		default:
			b.Shapes[in.Name] = d.Tensor.Shape()
			feeds[in.Name] = d.Tensor
		}
	}
	g, err := model.Specialize(b)
	if err != nil {
		return nil, err
	}
	backend, err := accel.Open(backendName)
	if err != nil {
		return nil, err
	}
	exe, err := backend.Compile(g, accel.Options{Threads: threads})
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
		path := filepath.Join(dir, fmt.Sprintf("output_%d.pb", i))
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
	if compared == 0 {
		return fmt.Errorf("%s: no output_N.pb files to compare with", dir)
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
// error) and writes the result into the model's parameters.
func applyDeltas(model *ir.Model, paths []string, stderr io.Writer) error {
	inits, err := baseInitializers(model.ONNX)
	if err != nil {
		return fmt.Errorf("--delta: %w", err)
	}
	d, err := composeDeltas(io.Discard, stderr, paths, inits, false)
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
		if d := values[p.Input.Name]; p.Role == ir.RoleAttentionMask && d != nil && d.Kind == ir.TensorDatum && d.Tensor.Len() == B*T {
			mask = d.Tensor.Int64s()
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
		if t != nil && t.DType() == p.Input.DType {
			values[name] = &ir.Datum{Kind: ir.TensorDatum, Tensor: t}
		}
	}
	for _, n := range notes {
		if name, _, _ := strings.Cut(n, ":"); values[name] != nil {
			fmt.Fprintln(stderr, n)
		}
	}
	return nil
}

// feedText binds the model's token input to text's ids (batch 1).
func feedText(model *ir.Model, values map[string]*ir.Datum, tok textTokenizer, text string) error {
	plans, err := model.InputPlans()
	if err != nil {
		return err
	}
	ids, _ := tok.Encode(text)
	if len(ids) == 0 {
		return usagef("--text encodes to no tokens")
	}
	for _, p := range plans {
		if p.Role == ir.RoleTokens {
			t := ir.NewTensor(ir.Int64, ir.Shape{1, len(ids)})
			for i, id := range ids {
				t.Int64s()[i] = int64(id)
			}
			values[p.Input.Name] = &ir.Datum{Kind: ir.TensorDatum, Tensor: t}
			return nil
		}
	}
	return fmt.Errorf("--text: the model has no token input")
}

// printNextTokens prints the five most likely tokens after the text, from
// the last position of logits [1, T, vocab].
func printNextTokens(w io.Writer, tok textTokenizer, logits *ir.Datum) error {
	if logits == nil || logits.Kind != ir.TensorDatum || len(logits.Tensor.Shape()) != 3 || !logits.Tensor.DType().IsFloat() {
		return fmt.Errorf("--text: the first output is not logits [batch, sequence, vocabulary]")
	}
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
	return nil
}
