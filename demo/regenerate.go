package demo

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// BaseModel is the shipped base model, base.onnx: DefaultModel pretrained
// by Regenerate with DefaultPretraining. Regenerate it with
//
//	go run ./cmd/dstune demo --regenerate demo
//
// (the same bytes every time; this file's bytes on a machine with the ISA
// and thread count recorded in its metadata, as long as the training
// kernels' arithmetic is the one it was made with).
//
//go:embed base.onnx
var BaseModel []byte

// BaseModelFile is the base model's file name in this package and in a
// demo's output directory.
const BaseModelFile = "base.onnx"

// RegenerateCommand is the command that writes base.onnx anew.
const RegenerateCommand = "go run ./cmd/dstune demo --regenerate demo"

// Pretraining says how Regenerate trains the base model from scratch.
type Pretraining struct {
	Model    ModelConfig
	Skills   []Skill // the tasks, mixed in turn
	Examples int     // training examples generated
	DataSeed uint64
	Steps    int64
	Batch    int
	LR       float64 // AdamW, cosine schedule after a linear warm-up
	Warmup   int64
	Threads  int // part of the result: the same bits need the same count
}

// DefaultPretraining made the shipped base model.
var DefaultPretraining = Pretraining{
	Model: DefaultModel, Skills: []Skill{Copy, Reverse, Upper}, Examples: 20000, DataSeed: 1,
	Steps: 1000, Batch: 32, LR: 3e-3, Warmup: 50, Threads: 2,
}

// Metadata keys Regenerate records in base.onnx (metadata_props), so the
// file says how it was made.
const (
	MetaCommand = "dstune.demo.regenerate"
	MetaSkills  = "dstune.demo.skills"
	MetaSteps   = "dstune.demo.steps"
	MetaISA     = "dstune.demo.isa"
	MetaThreads = "dstune.demo.threads"
)

// Regenerate builds p.Model, pretrains it (full fine-tuning with AdamW
// on p.Skills' generated examples) and writes the result to
// dir/base.onnx atomically. It returns the final training loss. The
// scratch files (the untrained model, the data, the training run) live in
// a temporary directory that is removed afterwards.
func Regenerate(ctx context.Context, dir string, p Pretraining) (float64, error) {
	m, err := BuildModel(p.Model)
	if err != nil {
		return 0, err
	}
	names := make([]string, len(p.Skills))
	for i, s := range p.Skills {
		names[i] = s.Name
	}
	m.MetadataProps = []onnx.StringPair{
		{Key: MetaCommand, Value: RegenerateCommand},
		{Key: MetaSkills, Value: strings.Join(names, ",")},
		{Key: MetaSteps, Value: strconv.FormatInt(p.Steps, 10)},
		{Key: MetaISA, Value: kernels.ActiveISA().String()},
		{Key: MetaThreads, Value: strconv.Itoa(p.Threads)},
	}
	scratch, err := os.MkdirTemp("", "dstune-demo-regenerate-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(scratch)
	initial := filepath.Join(scratch, "untrained.onnx")
	if err := onnx.WriteFile(initial, m, onnx.WriteOptions{ExternalData: onnx.ExternalNever}); err != nil {
		return 0, err
	}
	data := filepath.Join(scratch, "pretrain.jsonl")
	if err := WriteJSONL(data, Examples(p.Skills, p.Examples, p.DataSeed)); err != nil {
		return 0, err
	}
	opt, err := update.DefaultOptimizer(update.OptimizerAdamW)
	if err != nil {
		return 0, err
	}
	opt.SetLR(p.LR)
	cfg := train.Config{Model: initial, Data: data, Task: train.TaskLM, Method: train.MethodFull, Optimizer: opt,
		Schedule: train.Schedule{Name: train.ScheduleCosine, Warmup: p.Warmup}, Steps: p.Steps, Batch: p.Batch,
		Seed: p.DataSeed, Backend: "cpu", Threads: p.Threads}
	res, err := train.Run(ctx, cfg, train.RunOptions{Dir: filepath.Join(scratch, "run")})
	if err != nil {
		return 0, fmt.Errorf("demo: pretraining: %w", err)
	}
	trained, err := os.ReadFile(res.ModelFile)
	if err != nil {
		return 0, err
	}
	if err := atomicfile.Write(filepath.Join(dir, BaseModelFile), trained); err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	return res.Loss, nil
}
