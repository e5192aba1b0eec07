package main

import (
	"encoding/json"
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
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/train"
)

// dstune profile step: a few real training steps of a model as dstune
// train runs them, then every node of one step timed, and the step laid
// out per op kind and per node group against the machine's peaks.

func init() {
	register(&command{
		name: "profile step",
		synopsis: []string{
			"MODEL.onnx --data TRAIN.jsonl --task lm|classify [--method full|dst|lora|prompt] [--batch 8] [--max-len N]",
			"             [--steps 5] [--runs 5] [--top 12] [--roofline FILE.png [--force]] [--json]   (and dstune train's other flags but --out, --resume,",
			"             --allow-data-change, --backend, --pjrt-plugin, --grad-accum, --keep-best, --patience: it times one batch's step on the CPU and keeps nothing)",
		},
		summary:     "time a model's training step per op kind and node group against the measured peaks (MFU, roofline)",
		flags:       func(fs *flag.FlagSet) { new(profileStepFlags).define(fs) },
		sharesFlags: "train",
		run:         runProfileStep,
	})
}

// profileStepFlags are dstune train's flags and profile step's own.
type profileStepFlags struct {
	trainFlags
	runs, top *int
	roofline  *string
	force     *bool
	asJSON    *bool
}

func (f *profileStepFlags) define(fs *flag.FlagSet) {
	f.trainFlags.define(fs)
	// train's flags, as profile step takes them: the ones it refuses say
	// so in the help, and --steps has its own default.
	for _, name := range profileStepRefuses {
		fs.Lookup(name).Usage = "train's; not for profile step, which runs a few steps on the CPU in a directory of its own and keeps nothing"
	}
	steps := fs.Lookup("steps")
	steps.Value.Set("5")
	steps.DefValue, steps.Usage = "5", "training steps: the last is profiled, the ones after the first timed"
	f.runs = fs.Int("runs", 5, "timed runs of the profiled step (each node's median is reported)")
	f.top = fs.Int("top", 12, "rows of each table (the rest are summed in one)")
	f.roofline = fs.String("roofline", "", "write the roofline of the op kinds as a PNG here")
	f.force = fs.Bool("force", false, "overwrite an existing --roofline file")
	f.asJSON = fs.Bool("json", false, "print the profile as one JSON object")
}

// profileStepRefuses are the train flags profile step does not take.
var profileStepRefuses = []string{"out", "resume", "allow-data-change", "backend", "pjrt-plugin", "keep-best", "patience", "grad-accum"}

// errProfiled ends the training run once the step is profiled.
var errProfiled = errors.New("profiled")

func runProfileStep(args []string, stdout, stderr io.Writer) error {
	var f profileStepFlags
	fs := newFlagSet("profile step", f.define)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	set := flagsSet(fs)
	for _, name := range profileStepRefuses {
		if set[name] {
			return usagef("--%s is not for profile step: it times the step of one batch on the CPU, in a directory of its own, and keeps nothing", name)
		}
	}
	if !set["steps"] {
		fs.Set("steps", "5")
		set["steps"] = true
	}
	if *f.runs < 1 || *f.top < 1 {
		return usagef("--runs and --top must be at least 1")
	}
	if *f.force && *f.roofline == "" {
		return usagef("--force overwrites the --roofline file: give --roofline too")
	}
	if *f.roofline != "" {
		if !strings.EqualFold(filepath.Ext(*f.roofline), ".png") {
			return usagef("--roofline %s: the roofline is a PNG; give a file name ending in .png", *f.roofline)
		}
		inputs := []outpath.Input{{Path: *f.data, What: "the data"}}
		for _, p := range pos {
			inputs = append(inputs, outpath.Input{Path: p, What: "the model"})
		}
		if err := checkOutputDir("--roofline", *f.roofline); err != nil {
			return err
		}
		if err := checkOutputFile("--roofline", *f.roofline, *f.force, inputs...); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "dstune-profile-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// An interruption (Ctrl-C, SIGTERM, SIGHUP) ends the run after its
	// current step, or the node timing after the node being timed, so that
	// the directory above is removed. Either way the command stops there,
	// as asked, and prints no profile.
	ctx, stop := interruptible(stderr, "stopping after the current step or node", "at once, leaving the run's temporary directory")
	defer stop()
	*f.out = dir
	cfg, _, err := f.config(pos, set)
	if err != nil {
		return err
	}
	cfg.EvalEvery, cfg.CheckpointEvery, cfg.CheckpointMinutes = 0, 0, 0 // the run stops before anything is saved

	var walls, updates []time.Duration
	var prof *stepProfile
	onStep := func(e *train.Engine, b *train.Batch, stats train.StepStats, wall time.Duration) error {
		if e.Step() > 1 || cfg.Steps == 1 { // the first step compiles
			walls = append(walls, wall)
			updates = append(updates, stats.Update)
		}
		if e.Step() < int64(cfg.Steps) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err // interrupted during the last step: not profiled
		}
		g, times, err := e.ProfileNodes(ctx, b, *f.runs)
		if err != nil {
			return err
		}
		prof = newStepProfile(g, times, b)
		return errProfiled
	}
	_, err = train.Run(ctx, cfg, train.RunOptions{Dir: dir, Progress: stderr, LogEvery: 1, OnStep: onStep})
	interrupted := &exitError{130, "interrupted: nothing profiled"}
	// errProfiled too where the interruption came during the node timing.
	if errors.Is(err, train.ErrInterrupted) || ctx.Err() != nil {
		return interrupted
	}
	if !errors.Is(err, errProfiled) {
		if err == nil {
			err = errors.New("the run ended before its last step was profiled")
		}
		return err
	}
	env := &profileEnv{threads: cfg.Threads}
	prof.finish(env, cfg, walls, updates, *f.top)
	if ctx.Err() != nil { // while the peaks were measured
		return interrupted
	}
	if *f.roofline != "" {
		// Without --force the file was checked not to exist: one made
		// since is not replaced.
		if err := writtenOutput("--roofline", prof.writeRoofline(*f.roofline, atomicfile.Options{NoReplace: !*f.force})); err != nil {
			var ue *usageError
			if errors.As(err, &ue) {
				return err
			}
			return fmt.Errorf("--roofline: %w", err)
		}
	}
	if *f.asJSON {
		b, err := json.MarshalIndent(prof, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	prof.print(stdout, *f.top)
	if *f.roofline != "" {
		fmt.Fprintf(stdout, "\nroofline: %s\n", *f.roofline)
	}
	return nil
}

// virtualText is " (+N virtual tokens)" for prompt tuning, else "".
func (p *stepProfile) virtualText() string {
	if p.Virtual == 0 {
		return ""
	}
	return fmt.Sprintf(" (+%d virtual tokens)", p.Virtual)
}

// stepProfile is a profiled training step.
type stepProfile struct {
	Model  string `json:"model"`
	Method string `json:"method"`
	Batch  [2]int `json:"batch"`
	// Virtual is --method prompt's virtual tokens, which the model sees
	// besides Batch's text positions.
	Virtual   int     `json:"virtual_tokens,omitempty"`
	Threads   int     `json:"threads"`
	Precision string  `json:"precision"`      // of the matrix products (dstune train --precision)
	PeakFLOPS float64 `json:"peak_gflops"`    // FMA loop (bf16: dot-product loop), measured now
	PeakBW    float64 `json:"peak_read_gbps"` // streaming read, measured now
	StepMS    float64 `json:"step_ms"`        // median wall time of the steps after the first
	// TimedSteps is how many steps StepMS is the median of (the first
	// compiles, so it is left out unless it is the only one).
	TimedSteps int     `json:"timed_steps"`
	UpdateMS   float64 `json:"update_ms"` // of which the optimizer and the method
	NodesMS    float64 `json:"nodes_ms"`  // the profiled nodes' medians, summed
	// ProductGFLOP is the matrix products' arithmetic of a step (forward
	// and backward, 2·m·n·k each); MFU is it over the step's time as a
	// share of the peak of the products' precision.
	ProductGFLOP float64    `json:"product_gflop"`
	MFU          float64    `json:"mfu"`
	Kinds        []*profRow `json:"op_kinds"`
	Groups       []*profRow `json:"node_groups"`
	// Slowest are the nodes that took longest (at most --top of them).
	Slowest []*profSlow `json:"slowest_nodes"`
	nodes   []profNode
}

// profNode is one timed node.
type profNode struct {
	kind, group string
	name        string // the ONNX node's name, or what the node derives from
	shapes      string // "[2048,256] [256,768] → [2048,768]"
	backward    bool
	ms          float64
	flop, bytes float64 // the node's and those folded into it
	productFLOP float64 // of flop, a matrix product's
}

// profSlow is one of the slowest nodes.
type profSlow struct {
	Kind     string  `json:"kind"`
	Name     string  `json:"name"`
	Shapes   string  `json:"shapes"`
	Backward bool    `json:"backward"`
	MS       float64 `json:"ms"`
	GFLOPS   float64 `json:"gflops"`
	Roofline float64 `json:"roofline"`
}

// profRow sums the nodes of an op kind or a node group.
type profRow struct {
	Name       string  `json:"name"`
	Calls      int     `json:"calls"`
	MS         float64 `json:"ms"`
	ForwardMS  float64 `json:"forward_ms"`
	BackwardMS float64 `json:"backward_ms"`
	GFLOP      float64 `json:"gflop"`
	GB         float64 `json:"gb"`
	// Roofline is the time the nodes would take at the peaks (each node
	// bound by its arithmetic or by its bytes, whichever takes longer)
	// over the time they took.
	Roofline float64 `json:"roofline"`
	bound    float64 // seconds at the peaks
}

// add sums o into r and derives r's roofline share.
func (r *profRow) add(o *profRow) {
	r.Calls += o.Calls
	r.MS += o.MS
	r.ForwardMS += o.ForwardMS
	r.BackwardMS += o.BackwardMS
	r.GFLOP += o.GFLOP
	r.GB += o.GB
	r.bound += o.bound
	if r.MS > 0 {
		r.Roofline = r.bound * 1e3 / r.MS
	}
}

func newStepProfile(g *ir.Graph, times []accel.NodeTime, b *train.Batch) *stepProfile {
	p := &stepProfile{Batch: [2]int{b.B, b.T}}
	for _, t := range times {
		n := t.Node
		kind := n.Op.Name()
		if t.Reference {
			kind += " (reference)"
		}
		flop, product := nodeFLOP(n)
		pn := profNode{group: nodeGroup(n), name: nodeLabel(n), shapes: nodeShapes(n),
			backward: strings.HasPrefix(n.Origin, "gradient of ") || n.Origin == "loss",
			ms:       float64(t.Time.Nanoseconds()) / 1e6, flop: flop, bytes: nodeBytes(n)}
		if product {
			pn.productFLOP = flop
		}
		// Nodes run inside this one (a bias and an activation in a
		// product's epilogue) add their arithmetic and what they write:
		// "MatMul+Add+Gelu".
		for _, f := range t.Folded {
			kind += "+" + f.Op.Name()
			ff, _ := nodeFLOP(f)
			pn.flop += ff
			for _, v := range f.Outputs {
				pn.bytes += valueBytes(v)
			}
		}
		pn.kind = kind
		p.nodes = append(p.nodes, pn)
	}
	return p
}

// finish measures the peaks and sums the nodes into the tables.
func (p *stepProfile) finish(env *profileEnv, cfg train.Config, walls, updates []time.Duration, top int) {
	p.Model, p.Method, p.Threads = cfg.Model, cfg.Method, cfg.Threads
	if cfg.Method == train.MethodPrompt {
		if o, err := peft.ParsePromptOptions(cfg.Prompt); err == nil { // checked by the run
			p.Virtual = o.Length
		}
	}
	// The peak of the products' arithmetic: the FMA loop's, or the
	// bfloat16 dot products' with --precision bf16 where the CPU has them.
	precision, _ := accel.ParsePrecision(cfg.Precision) // checked by the run
	p.Precision = string(precision)
	p.PeakFLOPS, p.PeakBW = cpu.New().PeakGFLOPS(accel.Options{Threads: cfg.Threads, Precision: precision}), env.peakGBPS()
	p.StepMS, p.TimedSteps = medianMS(walls), len(walls)
	p.UpdateMS = medianMS(updates)
	kinds, groups := map[string]*profRow{}, map[string]*profRow{}
	for _, n := range p.nodes {
		p.NodesMS += n.ms
		p.ProductGFLOP += n.productFLOP / 1e9
		one := &profRow{Calls: 1, MS: n.ms, ForwardMS: n.ms, GFLOP: n.flop / 1e9, GB: n.bytes / 1e9,
			bound: p.bound(n)}
		if n.backward {
			one.ForwardMS, one.BackwardMS = 0, n.ms
		}
		rowOf(kinds, n.kind).add(one)
		rowOf(groups, n.group).add(one)
	}
	if p.StepMS > 0 && p.PeakFLOPS > 0 {
		p.MFU = p.ProductGFLOP / (p.StepMS / 1e3) / p.PeakFLOPS
	}
	p.Kinds, p.Groups = sortedRows(kinds), sortedRows(groups)
	p.Slowest = p.slowest(top)
}

// bound is how long node n would take at the peaks, in seconds: bound by
// its arithmetic or by its bytes, whichever takes longer.
func (p *stepProfile) bound(n profNode) float64 {
	return math.Max(n.flop/(p.PeakFLOPS*1e9), n.bytes/(p.PeakBW*1e9))
}

// slowest lists the top nodes that took longest, the earlier first among
// equal times.
func (p *stepProfile) slowest(top int) []*profSlow {
	order := make([]int, len(p.nodes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return p.nodes[order[i]].ms > p.nodes[order[j]].ms })
	var out []*profSlow
	for _, i := range order[:min(top, len(order))] {
		n := p.nodes[i]
		s := &profSlow{Kind: n.kind, Name: n.name, Shapes: n.shapes, Backward: n.backward, MS: n.ms}
		if n.ms > 0 {
			s.GFLOPS = n.flop / 1e9 / (n.ms / 1e3)
			s.Roofline = p.bound(n) * 1e3 / n.ms
		}
		out = append(out, s)
	}
	return out
}

func rowOf(rows map[string]*profRow, name string) *profRow {
	r := rows[name]
	if r == nil {
		r = &profRow{Name: name}
		rows[name] = r
	}
	return r
}

func sortedRows(rows map[string]*profRow) []*profRow {
	out := make([]*profRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].MS != out[j].MS {
			return out[i].MS > out[j].MS
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func medianMS(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Nanoseconds()) / 1e6
}

// nodeFLOP is a node's arithmetic: 2·m·n·k per product of a MatMul or
// Gemm (product true), none for ops that only move data (a reshape, a
// transpose, a gather), one addition per scattered element for Gather's
// gradient, otherwise one operation per element of its largest input or
// output (an element-wise op's output, a reduction's input).
func nodeFLOP(n *ir.Node) (flop float64, product bool) {
	if f := train.ProductFLOPs(n); f > 0 {
		return f, true
	}
	switch name := n.Op.Name(); {
	case viewOps[name] || movementOps[name] || gatherOps[name]:
		return 0, false
	case name == "ScatterAddRows":
		return valueSize(n.Inputs[0]), false
	}
	for _, vs := range [][]*ir.Value{n.Inputs, n.Outputs} {
		for _, v := range vs {
			if v != nil {
				flop = math.Max(flop, valueSize(v))
			}
		}
	}
	return flop, false
}

// The ops that only move data, by what they touch: views (the output is
// the input's buffer: nothing is read or written), gathers (the rows or
// elements read are as many as written, whatever the table's size), and
// the rest (every input and output once).
var (
	viewOps     = map[string]bool{"Reshape": true, "BitCast": true}
	gatherOps   = map[string]bool{"Gather": true, "GatherElements": true, "GatherND": true}
	movementOps = map[string]bool{"Transpose": true, "Slice": true, "SliceGrad": true, "Concat": true, "Split": true, "Expand": true, "Copy": true}
)

// nodeBytes is what a node reads and writes at the least: each input and
// output once, but a view nothing, a gather the indices and twice what it
// writes, and Gather's gradient its indices and the scattered rows three
// times (read from the gradient, read and written in the sum), plus the
// whole table when it starts from zeros.
func nodeBytes(n *ir.Node) float64 {
	switch name := n.Op.Name(); {
	case viewOps[name]:
		return 0
	case gatherOps[name]:
		return valueBytes(n.Inputs[1]) + 2*valueBytes(n.Outputs[0])
	case name == "ScatterAddRows":
		b := 3*valueBytes(n.Inputs[0]) + valueBytes(n.Inputs[1])
		if len(n.Inputs) < 3 || n.Inputs[2] == nil {
			b += valueBytes(n.Outputs[0])
		}
		return b
	}
	var b float64
	for _, vs := range [][]*ir.Value{n.Inputs, n.Outputs} {
		for _, v := range vs {
			b += valueBytes(v)
		}
	}
	return b
}

// valueSize and valueBytes are v's elements and bytes, 0 for an absent
// value.
func valueSize(v *ir.Value) float64 {
	if v == nil {
		return 0
	}
	return float64(v.Shape.Size())
}

func valueBytes(v *ir.Value) float64 {
	if v == nil {
		return 0
	}
	return float64(v.Shape.Size() * v.DType.Size())
}

// nodeLabel names a node in the slowest-nodes table: its ONNX name, or for
// a node dstune made (a gradient) what it was made from.
func nodeLabel(n *ir.Node) string {
	if n.Name != "" {
		return n.Name
	}
	return n.Origin
}

// nodeShapes writes a node's input and output shapes:
// "[2048,256] [256,768] → [2048,768]" ("-" for an absent input).
func nodeShapes(n *ir.Node) string {
	side := func(vs []*ir.Value) string {
		parts := make([]string, len(vs))
		for i, v := range vs {
			parts[i] = "-"
			if v != nil {
				parts[i] = v.Shape.String()
			}
		}
		return strings.Join(parts, " ")
	}
	return side(n.Inputs) + " → " + side(n.Outputs)
}

var layerIndex = regexp.MustCompile(`\.\d+$|_\d+$`)

// nodeGroup is the part of the model a node belongs to, from the ONNX node
// name exporters write (torch.onnx: "/h.0/attn/c_attn/MatMul"): its first
// two path components, a layer index replaced by "*" so that the layers
// add up ("h.*/attn"); a backward node counts in its forward node's group.
func nodeGroup(n *ir.Node) string {
	name := n.Name
	if name == "" {
		if i := strings.Index(n.Origin, `"`); i >= 0 {
			if j := strings.Index(n.Origin[i+1:], `"`); j >= 0 {
				name = n.Origin[i+1 : i+1+j]
			}
		}
	}
	parts := strings.Split(strings.Trim(name, "/"), "/")
	if len(parts) < 2 || parts[0] == "" {
		if n.Origin == "loss" {
			return "(loss)"
		}
		return "(top level)"
	}
	parts = parts[:len(parts)-1] // the op's own name
	keep := min(len(parts), 2)
	for i, c := range parts {
		if layerIndex.MatchString(c) {
			keep = min(len(parts), i+2) // the layer and its first part
			break
		}
	}
	parts = parts[:keep]
	for i := range parts {
		parts[i] = layerIndex.ReplaceAllString(parts[i], ".*")
	}
	return strings.Join(parts, "/")
}

func (p *stepProfile) print(w io.Writer, top int) {
	fmt.Fprintf(w, "%s: %s, batch %d×%d%s, %d thread(s)\n", p.Model, p.Method, p.Batch[0], p.Batch[1], p.virtualText(), p.Threads)
	peak, note := "FMA", ""
	if p.Precision == string(accel.PrecisionBF16) {
		if kernels.SbgemmAccelerated() {
			peak = "bf16 dot products"
		} else {
			note = "; this CPU has no bf16 dot products: bf16 products run on the FMA kernels"
		}
	}
	fmt.Fprintf(w, "peaks measured now: %.0f GFLOP/s (%s%s), %.1f GB/s (read)\n", p.PeakFLOPS, peak, note, p.PeakBW)
	timed := "median of the steps after the first"
	if p.TimedSteps == 1 {
		timed = "the only step, the first: with the warm-up a first step does; --steps 2 or more times the steps after it"
	}
	fmt.Fprintf(w, "step: %.1f ms (%s), of which the update %.1f ms\n", p.StepMS, timed, p.UpdateMS)
	fmt.Fprintf(w, "matrix products (%s): %.2f GFLOP a step: %.1f GFLOP/s over the step, MFU %.1f %% of the %s peak\n",
		p.Precision, p.ProductGFLOP, p.ProductGFLOP/(p.StepMS/1e3), 100*p.MFU, peak)
	fmt.Fprintf(w, "the profiled nodes (forward and backward, each timed alone): %.1f ms\n", p.NodesMS)
	p.table(w, "op kind", p.Kinds, top)
	p.table(w, "node group", p.Groups, top)
	fmt.Fprintf(w, "\n%-14s %-40s %8s %9s %8s  %s\n", "slowest nodes", "name", "ms", "GFLOP/s", "roofline", "shapes (inputs → outputs)")
	for _, s := range p.Slowest {
		kind := truncate(s.Kind, 13)
		if s.Backward {
			kind += "′"
		}
		fmt.Fprintf(w, "%-14s %-40s %8.2f %9s %8s  %s\n", kind, truncate(s.Name, 40), s.MS, rate(s.GFLOPS, s.GFLOPS > 0), share(s.Roofline, s.Roofline > 0), s.Shapes)
	}
	fmt.Fprintln(w, "(′: a node of the backward pass)")
}

func (p *stepProfile) table(w io.Writer, what string, rows []*profRow, top int) {
	fmt.Fprintf(w, "\n%-34s %5s %9s %6s %9s %9s %8s %9s %8s %8s\n", what, "nodes", "ms", "share", "fwd ms", "bwd ms", "GFLOP", "GFLOP/s", "GB/s", "roofline")
	shown := rows
	if len(rows) > top {
		rest := &profRow{Name: fmt.Sprintf("(%d more)", len(rows)-top)}
		for _, r := range rows[top:] {
			rest.add(r)
		}
		shown = append(slices.Clone(rows[:top]), rest)
	}
	for _, r := range shown {
		s := r.MS / 1e3
		fmt.Fprintf(w, "%-34s %5d %9.2f %5.1f%% %9.2f %9.2f %8.3f %9s %8s %8s\n", truncate(r.Name, 34), r.Calls, r.MS, 100*r.MS/p.NodesMS,
			r.ForwardMS, r.BackwardMS, r.GFLOP, rate(r.GFLOP/s, r.GFLOP > 0), rate(r.GB/s, r.GB > 0), share(r.Roofline, r.bound > 0))
	}
}

// rate and share format a figure of the tables, or "-" where the nodes do
// no arithmetic or move no bytes (a reshape is a view of its input) and
// the figure would say nothing.
func rate(x float64, some bool) string {
	if !some {
		return "-"
	}
	return fmt.Sprintf("%.1f", x)
}

func share(x float64, some bool) string {
	if !some {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*x)
}

func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// writeRoofline plots each op kind's achieved GFLOP/s against its
// arithmetic intensity (FLOP per byte moved) under the roofline of the
// measured peaks.
func (p *stepProfile) writeRoofline(path string, opts atomicfile.Options) error {
	pl := plot.New()
	pl.Title.Text = fmt.Sprintf("roofline: %s, batch %d×%d%s, %d thread(s)", shortPath(p.Model), p.Batch[0], p.Batch[1], p.virtualText(), p.Threads)
	pl.X.Label.Text = "arithmetic intensity (FLOP per byte read or written)"
	pl.Y.Label.Text = "GFLOP/s"
	pl.X.Scale, pl.Y.Scale = plot.LogScale{}, plot.LogScale{}
	pl.X.Tick.Marker, pl.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	pl.Add(plotter.NewGrid())
	// Every op kind is a point, its area its share of the step; those of
	// 2 % or more are labelled.
	var pts, labelled plotter.XYs
	var labels []string
	var radius []vg.Length
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range p.Kinds {
		if r.GB <= 0 || r.GFLOP <= 0 || r.MS <= 0 {
			continue
		}
		x, y, share := r.GFLOP/r.GB, r.GFLOP/(r.MS/1e3), r.MS/p.NodesMS
		pts = append(pts, plotter.XY{X: x, Y: y})
		radius = append(radius, vg.Points(2+14*math.Sqrt(share)))
		if share >= 0.02 {
			labelled = append(labelled, plotter.XY{X: x, Y: y})
			labels = append(labels, fmt.Sprintf("%s %.0f%%", r.Name, 100*share))
		}
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	if len(pts) == 0 {
		return errors.New("no op kind with arithmetic to plot")
	}
	ridge := p.PeakFLOPS / p.PeakBW
	lo, hi = math.Min(lo, ridge)/4, math.Max(hi, ridge)*30 // room for the labels
	roof := plotter.XYs{{X: lo, Y: lo * p.PeakBW}, {X: ridge, Y: p.PeakFLOPS}, {X: hi, Y: p.PeakFLOPS}}
	line, err := plotter.NewLine(roof)
	if err != nil {
		return err
	}
	line.Width = vg.Points(2)
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return err
	}
	sc.GlyphStyleFunc = func(i int) draw.GlyphStyle {
		g := sc.GlyphStyle
		g.Radius = radius[i]
		return g
	}
	pl.Add(line, sc)
	// Labels alternate below and above their points, so that neighbours
	// (MatMul and Gemm) stay readable.
	for k, dy := range []float64{-10, 4} {
		var xys plotter.XYs
		var texts []string
		for i := k; i < len(labelled); i += 2 {
			xys, texts = append(xys, labelled[i]), append(texts, labels[i])
		}
		if len(xys) == 0 {
			continue
		}
		lb, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: texts})
		if err != nil {
			return err
		}
		lb.Offset = vg.Point{X: vg.Points(10), Y: vg.Points(dy)}
		pl.Add(lb)
	}
	pl.Legend.Add(fmt.Sprintf("peaks: %.0f GFLOP/s, %.1f GB/s", p.PeakFLOPS, p.PeakBW), line)
	pl.Legend.Top, pl.Legend.Left = true, true
	pl.X.Min, pl.X.Max = lo, hi
	// Room above the roof, and above any point beyond it (operands from
	// cache can beat the streaming read the roof's slope is), so that no
	// op kind falls off the figure.
	pl.Y.Min, pl.Y.Max = math.Min(lo*p.PeakBW, minY(pts))/2, 2*math.Max(p.PeakFLOPS, maxY(pts))
	return savePNGWith(path, pl, 10*vg.Inch, 6.5*vg.Inch, opts)
}

func maxY(pts plotter.XYs) float64 {
	m := math.Inf(-1)
	for _, p := range pts {
		m = math.Max(m, p.Y)
	}
	return m
}

func minY(pts plotter.XYs) float64 {
	m := math.Inf(1)
	for _, p := range pts {
		m = math.Min(m, p.Y)
	}
	return m
}

func shortPath(p string) string {
	parts := strings.Split(p, string(os.PathSeparator))
	if len(parts) > 2 {
		parts = parts[len(parts)-2:]
	}
	return strings.Join(parts, "/")
}
