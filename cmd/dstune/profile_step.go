package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// stepOpRecord is one op kind of `dstune profile step` (README.md): the
// median over the profiled runs of the time its nodes took in one step,
// their matrix-product FLOPs and the bytes they read and wrote, and the
// share of the roofline (the time the peaks allow for that work over the
// time taken). The last record, op "step", is the whole step with its
// model FLOPs utilization.
type stepOpRecord struct {
	Op       string  `json:"op"`
	Calls    int     `json:"calls"`
	MS       float64 `json:"ms"`
	Share    float64 `json:"share"`
	GFLOP    float64 `json:"gflop"`
	GFLOPS   float64 `json:"gflops"`
	GB       float64 `json:"gb"`
	GBPS     float64 `json:"gbps"`
	Roofline float64 `json:"roofline"`
	MFU      float64 `json:"mfu,omitempty"`
}

// runProfileStep profiles the training step of a model (dstune profile
// step MODEL.onnx): a batch of token 1s (timing does not depend on the
// ids) of f's shape, compiled as dstune train compiles it, run node by
// node.
func runProfileStep(pos []string, f *profileFlags, stdout io.Writer) error {
	if len(pos) != 1 {
		return usagef("profile step: want one model file, got %d arguments", len(pos))
	}
	task := train.Task(*f.task)
	if task != train.TaskLM && task != train.TaskClassify {
		return usagef("--task must be lm or classify, got %q", *f.task)
	}
	if *f.batch < 1 || *f.seq < 2 {
		return usagef("--batch must be at least 1 and --seq at least 2")
	}
	precision, err := accel.ParsePrecision(*f.precision)
	if err != nil {
		return usagef("profile step: --precision: %v", err)
	}
	m, err := onnx.ReadFile(pos[0])
	if err != nil {
		return err
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		return err
	}
	src, err := train.NewModelSource(model, train.ModelSourceOptions{Task: task})
	if err != nil {
		return err
	}
	backend := cpu.New()
	opts := accel.Options{Threads: *f.threads, Precision: precision}
	opt, err := update.DefaultOptimizer(update.OptimizerAdamW)
	if err != nil {
		return err
	}
	engine, err := train.NewEngineWith(src, backend, opt, train.FullMethod{}, opts)
	if err != nil {
		return err
	}
	defer engine.Close()
	b := syntheticBatch(task, *f.batch, *f.seq)
	runs := 5 // steps and profiled runs the medians are taken over
	if *f.quick {
		runs = 2
	}
	// Real steps first (the first compiles the graph): the step's time,
	// and the optimizer's, which the profiled graph does not run.
	var updates, steps []time.Duration
	for i := range 1 + runs {
		st, err := engine.TrainStep(b, 1)
		if err != nil {
			return err
		}
		if i > 0 {
			updates, steps = append(updates, st.Update), append(steps, st.Compute+st.Update)
		}
	}
	g, err := engine.TrainingGraph(train.BatchShape{B: b.B, T: b.T})
	if err != nil {
		return err
	}
	exe, err := cpu.Compile(g, opts)
	if err != nil {
		return err
	}
	defer exe.Close()
	feed, err := engine.Feed(b)
	if err != nil {
		return err
	}
	type kind struct {
		calls        int
		flops, bytes float64
		times        []time.Duration
	}
	kinds := map[string]*kind{}
	var totals []time.Duration
	for run := range runs {
		nodes, err := exe.ProfileNodes(feed)
		if err != nil {
			return err
		}
		perRun := map[string]time.Duration{}
		var total time.Duration
		for _, nt := range nodes {
			name := nt.Node.Op.Name()
			if nt.Reference {
				name += " (reference)"
			}
			k := kinds[name]
			if k == nil {
				k = &kind{}
				kinds[name] = k
			}
			if run == 0 {
				k.calls++
				k.flops += train.ProductFLOPs(nt.Node)
				k.bytes += float64(nodeBytes(nt.Node))
			}
			perRun[name] += nt.Time
			total += nt.Time
		}
		for name, d := range perRun {
			kinds[name].times = append(kinds[name].times, d)
		}
		totals = append(totals, total)
	}
	env := &profileEnv{threads: *f.threads}
	peakF, peakB := backend.PeakGFLOPS(opts), 0.0
	if !*f.quick { // the bandwidth is measured over 1 GiB
		peakB = env.peakGBPS()
	}
	roofline := func(flops, bytes float64, d time.Duration) float64 {
		bound := 0.0
		if peakF > 0 {
			bound = flops / (peakF * 1e9)
		}
		if peakB > 0 {
			bound = max(bound, bytes/(peakB*1e9))
		}
		return bound / d.Seconds()
	}
	var recs []stepOpRecord
	var flops, bytes float64
	graphTime := medianDuration(totals)
	for name, k := range kinds {
		d := medianDuration(k.times)
		recs = append(recs, stepOpRecord{Op: name, Calls: k.calls, MS: ms(d), Share: float64(d) / float64(graphTime),
			GFLOP: k.flops / 1e9, GFLOPS: k.flops / 1e9 / d.Seconds(), GB: k.bytes / 1e9, GBPS: k.bytes / 1e9 / d.Seconds(),
			Roofline: roofline(k.flops, k.bytes, d)})
		flops += k.flops
		bytes += k.bytes
	}
	sort.Slice(recs, func(i, j int) bool {
		return recs[i].MS > recs[j].MS || (recs[i].MS == recs[j].MS && recs[i].Op < recs[j].Op)
	})
	upd := medianDuration(updates)
	recs = append(recs, stepOpRecord{Op: "optimizer", Calls: 1, MS: ms(upd), Share: float64(upd) / float64(graphTime)})
	step := medianDuration(steps)
	total := stepOpRecord{Op: "step", MS: ms(step), Share: 1, GFLOP: flops / 1e9, GFLOPS: flops / 1e9 / step.Seconds(),
		GB: bytes / 1e9, GBPS: bytes / 1e9 / step.Seconds(), Roofline: roofline(flops, bytes, step)}
	if peakF > 0 {
		total.MFU = flops / 1e9 / step.Seconds() / peakF
	}
	recs = append(recs, total)
	if *f.asJSON {
		for _, r := range recs {
			line, _ := json.Marshal(r)
			fmt.Fprintln(stdout, string(line))
		}
		return nil
	}
	fmt.Fprintf(stdout, "training step of %s, batch %d×%d, %s products, %d thread(s): %.1f ms a step (median of %d), the graph %.1f ms profiled node by node (median of %d)\n",
		pos[0], b.B, b.T, precision, *f.threads, ms(step), len(steps), ms(graphTime), runs)
	fmt.Fprintf(stdout, "peaks measured now: %.0f GFLOP/s (%s products), %.1f GB/s (read)\n", peakF, precision, peakB)
	fmt.Fprintf(stdout, "%-28s %5s %9s %6s %8s %8s %8s %7s %8s\n", "op", "calls", "ms", "share", "GFLOP", "GFLOP/s", "GB", "GB/s", "roofline")
	for _, r := range recs {
		if r.Op == "step" {
			fmt.Fprintf(stdout, "%-28s %5s %9.2f %5.1f%% %8.2f %8.1f %8.3f %7.1f %7.0f%%  MFU %.0f%%\n", "step (graph + optimizer)", "",
				r.MS, 100*r.Share, r.GFLOP, r.GFLOPS, r.GB, r.GBPS, 100*r.Roofline, 100*r.MFU)
			continue
		}
		fmt.Fprintf(stdout, "%-28s %5d %9.2f %5.1f%% %8.2f %8.1f %8.3f %7.1f %7.0f%%\n", r.Op, r.Calls, r.MS, 100*r.Share, r.GFLOP, r.GFLOPS, r.GB, r.GBPS, 100*r.Roofline)
	}
	return nil
}

// syntheticBatch is a full batch of token 1s (targets 1; class 0).
func syntheticBatch(task train.Task, batch, seq int) *train.Batch {
	b := &train.Batch{B: batch, T: seq, Rows: batch, Tokens: make([]int64, batch*seq), AttentionMask: make([]int64, batch*seq)}
	for i := range b.Tokens {
		b.Tokens[i], b.AttentionMask[i] = 1, 1
	}
	b.Examples = make([]int, batch)
	if task == train.TaskClassify {
		b.Labels = make([]int64, batch)
		b.NumTargets = batch
		return b
	}
	b.Targets = make([]int64, batch*seq)
	for i := range b.Targets {
		b.Targets[i] = 1
	}
	b.NumTargets = batch * seq
	return b
}

// nodeBytes is what a node reads and writes: its inputs' and outputs'
// sizes (a lower bound on its memory traffic; a Reshape, a view, moves
// nothing).
func nodeBytes(n *ir.Node) int64 {
	if _, view := n.Op.(*ir.Reshape); view {
		return 0
	}
	var sum int64
	for _, vs := range [][]*ir.Value{n.Inputs, n.Outputs} {
		for _, v := range vs {
			if v != nil {
				sum += int64(v.Shape.Size()) * int64(v.DType.Size())
			}
		}
	}
	return sum
}

func medianDuration(ts []time.Duration) time.Duration {
	if len(ts) == 0 {
		return 0
	}
	s := slices.Clone(ts)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
