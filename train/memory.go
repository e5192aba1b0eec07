package train

import (
	"fmt"
	"strings"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/ir"
)

// stepMemory estimates what training one batch shape takes in host
// memory, in bytes: everything a CPU step holds at once.
type stepMemory struct {
	// Activations is the peak of live values (inputs, activations,
	// gradients; reshapes are views, not copies) of the training graph
	// and of the loss graph, each of which the CPU backend plans memory
	// for; Constants are the training graph's folded constants.
	Activations, Constants int64
	// Params are the model's parameters; State the optimizer slots and
	// a method's copy of the seed values; GradientSum the gradient
	// --grad-accum sums over a step's batches.
	Params, State, GradientSum int64
	// Batch is the batch's token, mask and target arrays and the
	// engine's copies of them.
	Batch int64
}

func (m stepMemory) total() int64 {
	return m.Activations + m.Constants + m.Params + m.State + m.GradientSum + m.Batch
}

// estimateStepMemory estimates a training step of g (the training graph
// of shape) with the run's optimizer; seedCopy adds a copy of the
// trainable parameters (a method with a selection keeps the seed values).
func estimateStepMemory(g *ir.Graph, shape BatchShape, trainable []*ir.Param, cfg *Config, seedCopy bool) stepMemory {
	// A step holds its batches' arrays at once: --grad-accum of them.
	m := stepMemory{Activations: activationPeak(g), Batch: int64(6*8*shape.B*shape.T) * int64(max(1, cfg.GradAccum))}
	for _, p := range g.Params {
		m.Params += tensorBytes(p.Tensor.Shape(), p.Tensor.DType())
	}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			if v != nil && v.Kind == ir.ConstValue && v.Const != nil {
				m.Constants += tensorBytes(v.Shape, v.DType)
			}
		}
	}
	for _, p := range trainable {
		for _, s := range cfg.Optimizer.Slots(p.Tensor.Shape()) {
			m.State += 4 * int64(ir.Shape(s.Shape).Size())
		}
		if seedCopy {
			m.State += tensorBytes(p.Tensor.Shape(), p.Tensor.DType())
		}
		if cfg.GradAccum > 1 {
			m.GradientSum += 4 * int64(p.Tensor.Shape().Size())
		}
	}
	return m
}

func tensorBytes(s ir.Shape, dt ir.DType) int64 { return int64(s.Size()) * int64(dt.Size()) }

// activationPeak is the largest sum of the bytes of values alive at once
// while g's nodes run in order: a value lives from its node (graph inputs
// from the start) to its last reader (graph outputs to the end); a
// Reshape's output is a view of its input. Parameters and constants are
// not counted (they are resident anyway).
func activationPeak(g *ir.Graph) int64 {
	alias := map[*ir.Value]*ir.Value{}
	root := func(v *ir.Value) *ir.Value {
		for {
			a, ok := alias[v]
			if !ok {
				return v
			}
			v = a
		}
	}
	for _, n := range g.Nodes {
		if _, ok := n.Op.(*ir.Reshape); ok && len(n.Inputs) > 0 && n.Inputs[0] != nil && n.Outputs[0] != nil {
			alias[n.Outputs[0]] = n.Inputs[0]
		}
	}
	// counted: a buffer of its own (no parameter, constant, or view).
	counted := func(v *ir.Value) bool {
		return v != nil && (v.Kind == ir.NodeOutput || v.Kind == ir.GraphInput) && root(v) == v
	}
	last := map[*ir.Value]int{}
	for i, n := range g.Nodes {
		for _, v := range n.Inputs {
			if v != nil && counted(root(v)) {
				last[root(v)] = i
			}
		}
		for _, v := range n.Outputs {
			if counted(v) {
				if _, seen := last[v]; !seen {
					last[v] = i
				}
			}
		}
	}
	for _, o := range g.Outputs {
		if o.Value != nil && counted(root(o.Value)) {
			last[root(o.Value)] = len(g.Nodes)
		}
	}
	dying := make([][]*ir.Value, len(g.Nodes)+1)
	for v, at := range last {
		dying[at] = append(dying[at], v)
	}
	var live, peak int64
	for _, v := range g.Inputs {
		live += tensorBytes(v.Shape, v.DType)
	}
	peak = live
	for i, n := range g.Nodes {
		for _, v := range n.Outputs {
			if counted(v) {
				live += tensorBytes(v.Shape, v.DType)
			}
		}
		peak = max(peak, live)
		for _, v := range dying[i] {
			live -= tensorBytes(v.Shape, v.DType)
		}
	}
	return peak
}

// MemoryError is a batch too large for the memory budget.
type MemoryError struct {
	Shape     BatchShape
	GradAccum int // the step's batches (Config.GradAccum)
	Estimate  stepMemory
	Limit     int64
	Default   bool // the limit is the default, not --max-memory
}

func (e *MemoryError) Error() string {
	m := e.Estimate
	limit := fmt.Sprintf("--max-memory %s", sysmem.Format(e.Limit))
	if e.Default {
		limit = fmt.Sprintf("the default budget of %s (%.0f %% of %s%s)", sysmem.Format(e.Limit), 100*sysmem.DefaultFraction, sysmem.Format(sysmem.Total()), "; --max-memory sets another")
	}
	step, lower := fmt.Sprintf("batch %d×%d tokens", e.Shape.B, e.Shape.T), "--batch or --max-len"
	if e.GradAccum > 1 {
		step, lower = fmt.Sprintf("%d batches of %d×%d tokens", e.GradAccum, e.Shape.B, e.Shape.T), "--grad-accum, --batch or --max-len"
	}
	advice := "lower " + lower
	if m.Params+m.State > m.total()/2 {
		// The batch is the smaller part: lowering it cannot save enough.
		advice = fmt.Sprintf("most of it is the parameters and their state, which %s does not change: train fewer parameters (--trainable, or a smaller LoRA --rank) or keep less state (--optimizer adafactor)", lower)
	}
	return fmt.Sprintf("a step of %s needs about %s (activations %s, parameters %s, optimizer and method state %s, constants %s, batches %s), more than %s: %s",
		step, sysmem.Format(m.total()), sysmem.Format(m.Activations), sysmem.Format(m.Params),
		sysmem.Format(m.State), sysmem.Format(m.Constants), sysmem.Format(m.Batch), limit, advice)
}

// sharedSource hands the engine the training graph the memory check has
// built (once), so that it is not built twice.
type sharedSource struct {
	GraphSource
	shape       BatchShape
	train, loss *ir.Graph
	// seeds are a DST run's seeds in files (update.Program.Seeds and
	// SeedPages).
	seeds *seedStore
}

// Unwrap returns the source whose graphs s hands on.
func (s *sharedSource) Unwrap() GraphSource { return s.GraphSource }

func (s *sharedSource) TrainingGraph(shape BatchShape) (*ir.Graph, error) {
	if g := s.train; g != nil && shape == s.shape {
		s.train = nil
		return g, nil
	}
	return s.GraphSource.TrainingGraph(shape)
}

func (s *sharedSource) LossGraph(shape BatchShape) (*ir.Graph, error) {
	if g := s.loss; g != nil && shape == s.shape {
		s.loss = nil
		return g, nil
	}
	return s.GraphSource.LossGraph(shape)
}

// checkMemory estimates a training step of the run's batch shape and
// refuses one beyond the memory budget (RunOptions.MaxMemory, or
// sysmem.Default), before anything of the batch's size is allocated. On a
// device only what the host holds counts (parameters, state, constants,
// the batch).
func (r *runner) checkMemory() error {
	limit, isDefault := r.opts.MaxMemory, false
	if limit <= 0 {
		limit, isDefault = sysmem.Default(), true
	}
	if limit <= 0 {
		return nil // the machine does not say
	}
	shape := BatchShape{r.cfg.Batch, r.batchOpts.MaxLen}
	g, err := r.src.TrainingGraph(shape)
	if err != nil {
		return err
	}
	lg, err := r.src.LossGraph(shape)
	if err != nil {
		return err
	}
	r.shared.shape, r.shared.train, r.shared.loss = shape, g, lg
	m := estimateStepMemory(g, shape, r.engine.Params(), &r.cfg, r.engine.Program().Selection != nil)
	// The loss graph (validation, and the first batch's probe) is
	// compiled beside the training graph, with a plan of its own.
	m.Activations += activationPeak(lg)
	if r.cfg.Backend != "cpu" {
		m.Activations = 0
	}
	if m.total() > limit {
		return &MemoryError{Shape: shape, GradAccum: r.cfg.GradAccum, Estimate: m, Limit: limit, Default: isDefault}
	}
	return nil
}

// MemoryReport is what a training step holds in host memory, in bytes
// (RunOptions.MemoryReport).
type MemoryReport struct {
	Shape BatchShape
	// Params are the model's parameters (all of them, trained or not);
	// Seed the copy of the trainable parameters' values at the start
	// that DST's selection compares against (Θ0); Gradients one float32
	// per trainable parameter; Optimizer the optimizer's state.
	Params, Seed, Gradients, Optimizer int64
	// GradientSum is the gradient summed over a step's batches
	// (Config.GradAccum > 1): one more float32 per trainable parameter.
	GradientSum int64
	// SeedInPlace is the part of the seed read from the model file's
	// bytes in place, not copied (not in Seed, nor in Total).
	SeedInPlace int64
	// Activations are the training graph's memory beyond the gradients'
	// bytes — forward activations and the backward pass's intermediates,
	// as the backend's memory plan packs them with the gradients, which
	// take over the memory of activations that died;
	// Workspace the loss graph's values (validation, the first batch's
	// probe), the folded constants and the batch.
	Activations, Workspace int64
	// Measured says that the backend reported its arenas and state
	// (accel.MemoryReporter); otherwise Seed, Optimizer, Activations and
	// Workspace are the estimate the memory check makes.
	Measured bool
	// RSS and PeakRSS are the process's resident memory when the report
	// was made and its peak so far (0: unknown).
	RSS, PeakRSS int64
}

// Total is the sum of the parts.
func (m MemoryReport) Total() int64 {
	return m.Params + m.Seed + m.Gradients + m.GradientSum + m.Optimizer + m.Activations + m.Workspace
}

// Lines formats the report, one part a line.
func (m MemoryReport) Lines() []string {
	how := "as the CPU backend holds them"
	if !m.Measured {
		how = "estimated"
	}
	pct := func(n int64) string {
		if t := m.Total(); t > 0 {
			return fmt.Sprintf("%5.1f %%", 100*float64(n)/float64(t))
		}
		return ""
	}
	row := func(name string, n int64, what string) string {
		return fmt.Sprintf("  %-16s %11s %s  %s", name, sysmem.Format(n), pct(n), what)
	}
	seedWhat := "DST's copy of the trainable weights' starting values"
	if m.SeedInPlace > 0 {
		seedWhat += fmt.Sprintf(" (%s more read in place from the model's files or a seed file the run wrote, resident only while their silo is selected)", sysmem.Format(m.SeedInPlace))
	}
	lines := []string{
		fmt.Sprintf("memory of a training step of batch %d×%d (%s):", m.Shape.B, m.Shape.T, how),
		row("parameters", m.Params, "the model's weights"),
		row("seed (Θ0)", m.Seed, seedWhat),
		row("gradients", m.Gradients, "one float32 per trainable weight"),
	}
	if m.GradientSum > 0 {
		lines = append(lines, row("gradient sum", m.GradientSum, "the gradients summed over a step's batches (--grad-accum)"))
	}
	lines = append(lines,
		row("optimizer state", m.Optimizer, "the optimizer's slots"),
		row("activations", m.Activations, "the training graph's memory beyond the gradients (its plan lays gradients over dead activations)"),
		row("workspace", m.Workspace, "validation's graph, folded constants, the batch"),
		fmt.Sprintf("  %-16s %11s", "total", sysmem.Format(m.Total())),
	)
	if m.RSS > 0 || m.PeakRSS > 0 {
		lines = append(lines, fmt.Sprintf("  %-16s %11s (peak %s; with the Go runtime, the model file's pages and the data)", "process RSS", sysmem.Format(m.RSS), sysmem.Format(m.PeakRSS)))
	}
	return lines
}

// memoryReport reports what the run holds for a step of shape; the
// backend's figures are complete once the shape's graphs have run.
func (r *runner) memoryReport(shape BatchShape) (MemoryReport, error) {
	g, err := r.engine.TrainingGraph(shape)
	if err != nil {
		return MemoryReport{}, err
	}
	trainable := r.engine.Params()
	est := estimateStepMemory(g, shape, trainable, &r.cfg, false)
	m := MemoryReport{Shape: shape, Params: est.Params}
	for _, o := range g.Outputs {
		if strings.HasPrefix(o.Name, ir.GradPrefix) {
			m.Gradients += tensorBytes(o.Value.Shape, o.Value.DType)
		}
	}
	if mr, ok := r.engine.trainer.(accel.MemoryReporter); ok {
		mu := mr.MemoryUse()
		m.Measured = true
		m.Seed, m.SeedInPlace, m.Optimizer, m.GradientSum = mu.Seed, mu.SeedShared, mu.OptimizerState, mu.GradientSum
		m.Activations = mu.TrainArenas - m.Gradients
		m.Workspace = mu.EvalArenas + est.Constants + est.Batch
	} else {
		m.Optimizer, m.GradientSum = est.State, est.GradientSum
		if r.engine.Program().Selection != nil {
			for _, p := range trainable {
				m.Seed += tensorBytes(p.Tensor.Shape(), p.Tensor.DType())
			}
		}
		if r.cfg.Backend == "cpu" {
			m.Activations = max(0, activationPeak(g)-m.Gradients)
			if s, err := r.engine.shapeFor(shape, true); err == nil {
				m.Workspace = activationPeak(s.loss)
			}
		}
		m.Workspace += est.Constants + est.Batch
	}
	m.RSS, m.PeakRSS = sysmem.RSS()
	return m, nil
}
