// Package bench compares dstune's full fine-tuning step with PyTorch's on
// the benchmark models of ../shared/testdata/bench (see README.md there and
// in this folder): the same ONNX models, the same batches, AdamW with the
// same hyper-parameters, the same losses step by step.
package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// Models are the benchmark models.
var Models = []string{"bert", "gpt"}

// Steps per run, as time_torch.py takes them: step i uses batch i mod 8.
const (
	WarmupSteps = 3
	TimedSteps  = 10
	NumBatches  = 8
	BatchSize   = 16
	SeqLen      = 128
)

// TorchLosses are the losses before each of the 13 steps, from
// testdata/bench/README.md (PyTorch 1.13, identical at 1 and 2 threads to
// 6 decimals).
var TorchLosses = map[string][]float64{
	"bert": {0.690971, 0.707860, 0.686465, 0.697059, 0.690990, 0.686059, 0.712786, 0.681238, 0.612392, 0.655558, 0.633835, 0.672575, 0.661073},
	"gpt":  {9.032952, 9.020424, 9.032806, 9.051357, 9.028620, 9.036079, 9.034621, 9.047753, 8.870074, 8.881049, 8.900017, 8.927076, 8.911002},
}

// TorchMedianMS are the README's PyTorch step times (ms, median of 30
// steps) by model and thread count, for when PyTorch cannot be rerun.
var TorchMedianMS = map[string]map[int]float64{
	"bert": {1: 416, 2: 299},
	"gpt":  {1: 800, 2: 538},
}

// Step is one benchmark model ready to train.
type Step struct {
	Model   string
	Engine  *train.Engine
	Batches []*train.Batch
	onnx    *onnx.Model
	opts    accel.Options
	next    int
}

// NewStep loads model ("bert" or "gpt") and its batches from dir (the
// testdata/bench folder) and prepares AdamW(lr 1e-4, betas (0.9, 0.999),
// eps 1e-8, weight decay 0.01) on every parameter with threads goroutines
// per kernel.
func NewStep(dir, model string, threads int) (*Step, error) {
	return NewStepWith(dir, model, threads, train.FullMethod{})
}

// NewStepWith is NewStep with another method (DST) in place of full
// fine-tuning.
func NewStepWith(dir, model string, threads int, method train.Method) (*Step, error) {
	return NewStepOpts(dir, model, accel.Options{Threads: threads}, method)
}

// NewStepOpts is NewStepWith with the backend's options in full (threads
// and the precision of the products).
func NewStepOpts(dir, model string, opts accel.Options, method train.Method) (*Step, error) {
	task := train.TaskLM
	if model == "bert" {
		task = train.TaskClassify
	}
	m, err := onnx.ReadFile(filepath.Join(dir, model+"_bench.onnx"))
	if err != nil {
		return nil, err
	}
	s := &Step{Model: model, onnx: m, opts: opts}
	im, err := ir.NewModel(m)
	if err != nil {
		m.Close()
		return nil, err
	}
	src, err := train.NewModelSource(im, train.ModelSourceOptions{Task: task})
	if err != nil {
		m.Close()
		return nil, err
	}
	opt := update.Optimizer{Name: update.OptimizerAdamW, AdamW: &update.AdamW{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}}
	if s.Engine, err = train.NewEngineWith(src, cpu.New(), update.Program{Optimizer: opt}, method, opts); err != nil {
		m.Close()
		return nil, err
	}
	ds, err := train.LoadJSONL(filepath.Join(dir, "train_"+model+".jsonl"), train.DataOptions{Task: task})
	if err != nil {
		s.Close()
		return nil, err
	}
	// Batch i is lines 16i … 16i+15: the file in order.
	eb, err := train.NewEvalBatches(ds, train.BatchOptions{BatchSize: BatchSize, MaxLen: SeqLen, FixedLen: true})
	if err != nil {
		s.Close()
		return nil, err
	}
	for {
		b := new(train.Batch)
		if !eb.Next(b) {
			break
		}
		s.Batches = append(s.Batches, b)
	}
	if len(s.Batches) != NumBatches {
		s.Close()
		return nil, fmt.Errorf("%s: %d batches, want %d", ds.Name, len(s.Batches), NumBatches)
	}
	return s, nil
}

// Close releases the model and the engine.
func (s *Step) Close() {
	if s.Engine != nil {
		s.Engine.Close()
	}
	s.onnx.Close()
}

// Next takes the next step (step i on batch i mod 8) and reports its
// loss (before the update) and wall time.
func (s *Step) Next() (train.StepStats, time.Duration, error) {
	b := s.Batches[s.next%len(s.Batches)]
	s.next++
	start := time.Now()
	st, err := s.Engine.TrainStep(b, 1)
	return st, time.Since(start), err
}

// Category is a kind of work in the time breakdown.
type Category string

// The categories of the breakdown.
const (
	CatGEMM     Category = "GEMM"
	CatElem     Category = "element-wise"
	CatNorm     Category = "softmax/normalization/loss"
	CatMovement Category = "gather/transpose/copy"
	CatOpt      Category = "optimizer"
)

// CategoryOf sorts an IR op (by name, as accel/cpu's Profile reports it)
// into the breakdown.
func CategoryOf(op string) Category {
	name := strings.TrimSuffix(op, " (reference)")
	has := func(parts ...string) bool {
		for _, p := range parts {
			if strings.Contains(name, p) {
				return true
			}
		}
		return false
	}
	switch {
	case has("MatMul", "Gemm", "Einsum", "Conv"):
		return CatGEMM
	case has("Softmax", "LayerNorm", "Normalization", "CrossEntropy", "NLL", "Loss"):
		return CatNorm
	case has("Gather", "Scatter", "Transpose", "Concat", "Split", "Slice", "Reshape", "Copy", "Expand", "Pad", "Trilu"):
		return CatMovement
	}
	return CatElem
}

// OpTime is the time an op took per step.
type OpTime struct {
	Op    string
	Calls int
	Time  time.Duration
}

// Breakdown profiles the compiled training graph on batch 0 runs times
// (accel/cpu's per-op timing) and returns the median time per op and
// per category; the optimizer's time is taken from optimizerTimes (the
// engine's update times of real steps).
func (s *Step) Breakdown(runs int, optimizerTimes []time.Duration) ([]OpTime, map[Category]time.Duration, error) {
	b := s.Batches[0]
	g, err := s.Engine.TrainingGraph(train.BatchShape{B: b.B, T: b.T})
	if err != nil {
		return nil, nil, err
	}
	ce, err := cpu.Compile(g, s.opts)
	if err != nil {
		return nil, nil, err
	}
	defer ce.Close()
	feed, err := s.Engine.Feed(b)
	if err != nil {
		return nil, nil, err
	}
	perOp := map[string][]time.Duration{}
	calls := map[string]int{}
	for range runs {
		times, err := ce.Profile(feed)
		if err != nil {
			return nil, nil, err
		}
		for _, t := range times {
			perOp[t.Op] = append(perOp[t.Op], t.Time)
			calls[t.Op] = t.Calls
		}
	}
	var ops []OpTime
	cats := map[Category]time.Duration{}
	for op, ts := range perOp {
		m := Median(ts)
		ops = append(ops, OpTime{op, calls[op], m})
		cats[CategoryOf(op)] += m
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Time > ops[j].Time })
	cats[CatOpt] = Median(optimizerTimes)
	return ops, cats, nil
}

// Median of durations (0 for none).
func Median(ts []time.Duration) time.Duration {
	if len(ts) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Dir finds testdata/bench: $DSTUNE_TESTDATA/bench, or ../shared/testdata/bench
// above the working directory.
func Dir() (string, error) {
	if d := os.Getenv("DSTUNE_TESTDATA"); d != "" {
		return filepath.Join(d, "bench"), nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "..", "shared", "testdata", "bench")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return filepath.Clean(p), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no ../shared/testdata/bench above %s (set DSTUNE_TESTDATA)", wd)
		}
	}
}
