package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dstune/dstune/demo"
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
)

func init() {
	register(&command{
		name:    "demo",
		usage:   "[--out DIR] [--steps N] [--eps E] [--threads N] | --regenerate DIR",
		summary: "fine-tune the small model that ships with dstune on a new task with DST, and show before and after",
		run:     runDemo,
	})
}

// The demo's fine-tuning, fixed so that every run prints the same numbers
// (on machines with the same ISA; the thread count is part of the result).
const (
	demoTrainExamples = 4000
	demoValidExamples = 256
	demoDataSeed      = 2
	demoBatch         = 32
	demoOptimizer     = train.OptimizerAdamW
	demoSilo          = "module-layer"
	demoDistance      = "inv-rel"
	demoThreshold     = "iterative"
)

// demoMethod is the training method of the demo's fine-tuning.
var demoMethod = train.MethodDST

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	out := fs.String("out", "", "directory for the demo's files (created; default: a new directory under the OS temp dir)")
	steps := fs.Int64("steps", 300, "fine-tuning steps")
	eps := fs.Float64("eps", 1e-2, "share of each silo's entries that may differ from the base model")
	lr := fs.Float64("lr", 1e-2, "AdamW learning rate")
	threads := fs.Int("threads", 2, "goroutines per kernel call; the printed numbers depend on it")
	regenerate := fs.String("regenerate", "", "instead of the demo: pretrain the shipped base model from scratch and write DIR/"+demo.BaseModelFile)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("no arguments expected, got %q", pos)
	case *steps < 1:
		return usagef("--steps must be at least 1")
	case !(*eps > 0 && *eps <= 1):
		return usagef("--eps must be in (0, 1]")
	case *threads < 1:
		return usagef("--threads must be at least 1")
	}
	ctx, stop := signal.NotifyContext(context.Background(), interruptSignals...)
	defer stop()
	if *regenerate != "" {
		return regenerateDemo(ctx, stdout, *regenerate)
	}
	return demoRun(stdout, demoOptions{out: *out, steps: *steps, eps: *eps, lr: *lr, threads: *threads})
}

func regenerateDemo(ctx context.Context, stdout io.Writer, dir string) error {
	p := demo.DefaultPretraining
	fmt.Fprintf(stdout, "pretraining the demo's base model from scratch: %d steps of %d examples (%s), %d threads …\n",
		p.Steps, p.Batch, skillNames(p.Skills), p.Threads)
	start := time.Now()
	loss, err := demo.Regenerate(ctx, dir, p)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (final training loss %.4f, %.1f s)\n", filepath.Join(dir, demo.BaseModelFile), loss, time.Since(start).Seconds())
	return nil
}

type demoOptions struct {
	out     string
	steps   int64
	eps     float64
	lr      float64
	threads int
}

// demoRun writes the base model and the task's data into the output
// directory, measures the base model, fine-tunes it with `dstune train
// --method dst`, applies the delta with `dstune apply` and measures the
// result.
func demoRun(stdout io.Writer, o demoOptions) error {
	start := time.Now()
	dir := o.out
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "dstune-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	runDir := filepath.Join(dir, "run")
	if _, err := os.Stat(runDir); err == nil {
		return fmt.Errorf("%s already exists: give the demo another --out directory", runDir)
	}
	files := struct{ base, train, valid, tuned, trainLog, applyLog string }{
		filepath.Join(dir, demo.BaseModelFile), filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl"),
		filepath.Join(dir, "tuned.onnx"), filepath.Join(dir, "train.log"), filepath.Join(dir, "apply.log"),
	}
	if err := os.WriteFile(files.base, demo.BaseModel, 0o644); err != nil {
		return err
	}
	task := demo.ReverseUpper
	trainSet, validSet := demo.TaskData(task, demoTrainExamples, demoValidExamples, demoDataSeed)
	if err := demo.WriteJSONL(files.train, trainSet); err != nil {
		return err
	}
	if err := demo.WriteJSONL(files.valid, validSet); err != nil {
		return err
	}

	before, params, err := demoEvaluate(files.base, validSet, o.threads)
	if err != nil {
		return err
	}
	base, _ := onnx.ReadFile(files.base)
	var skills string
	if base != nil {
		for _, p := range base.MetadataProps {
			if p.Key == demo.MetaSkills {
				skills = strings.ReplaceAll(p.Value, ",", ", ")
			}
		}
		base.Close()
	}
	word := "hello"
	fmt.Fprintf(stdout, "dstune demo: Dynamic Subset Tuning of a small model on a task it has not learned\n\n")
	fmt.Fprintf(stdout, "base model   %s: a byte-level GPT (%d layers, width %d, %s parameters), pretrained from scratch\n",
		demo.BaseModelFile, demo.DefaultModel.Layers, demo.DefaultModel.Dim, groupThousands(params))
	fmt.Fprintf(stdout, "             by dstune on %s:", skills)
	for _, s := range demo.DefaultPretraining.Skills {
		e := s.Example([]byte(word))
		fmt.Fprintf(stdout, "  %q → %q", e.Prompt, e.Answer)
	}
	e := task.Example([]byte(word))
	fmt.Fprintf(stdout, "\nnew task     %s: %q → %q (%d training examples, %d held-out words)\n", task.Name, e.Prompt, e.Answer, len(trainSet), len(validSet))
	fmt.Fprintf(stdout, "fine-tuning  %s, ε = %g: after every step only the %g %% of each tensor farthest from the base (%s)\n",
		strings.ToUpper(demoMethod), o.eps, 100*o.eps, demoDistance)
	fmt.Fprintf(stdout, "             keep their new values, the rest snap back; %s lr %g, %d steps of %d, %d threads\n\n",
		"AdamW", o.lr, o.steps, demoBatch, o.threads)

	trainArgs := []string{files.base, "--data", files.train, "--valid", files.valid, "--task", "lm",
		"--method", demoMethod, "--optimizer", demoOptimizer, "--lr", strconv.FormatFloat(o.lr, 'g', -1, 64),
		"--steps", strconv.FormatInt(o.steps, 10), "--batch", strconv.Itoa(demoBatch), "--seed", "1",
		"--threads", strconv.Itoa(o.threads), "--out", runDir}
	if demoMethod == train.MethodDST {
		trainArgs = append(trainArgs, "--eps", strconv.FormatFloat(o.eps, 'g', -1, 64), "--silo", demoSilo,
			"--distance", demoDistance, "--threshold", demoThreshold)
	}
	trainStart := time.Now()
	if err := runLogged(files.trainLog, "train", trainArgs); err != nil {
		return err
	}
	trainTime := time.Since(trainStart)
	deltaPath := filepath.Join(runDir, "delta.safetensors")
	applyArgs := []string{files.base, deltaPath, "-o", files.tuned}
	if err := runLogged(files.applyLog, "apply", applyArgs); err != nil {
		return err
	}
	after, _, err := demoEvaluate(files.tuned, validSet, o.threads)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "on the %d held-out words    validation loss    exact match (greedy completion)\n", len(validSet))
	fmt.Fprintf(stdout, "  base model                 %8.4f           %5.1f %%\n", before.Loss, 100*before.ExactMatch)
	fmt.Fprintf(stdout, "  after DST                  %8.4f           %5.1f %%\n", after.Loss, 100*after.ExactMatch)
	for i := range min(3, len(validSet)) {
		fmt.Fprintf(stdout, "  e.g. %q: base %q, tuned %q (want %q)\n", validSet[i].Prompt, before.Completions[i], after.Completions[i], validSet[i].Answer)
	}
	d, err := dst.ReadDelta(deltaPath)
	if err != nil {
		return err
	}
	deltaInfo, err1 := os.Stat(deltaPath)
	baseInfo, err2 := os.Stat(files.base)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ndelta        %s entries of %s changed (%.2f %%): %s bytes, %.1f %% of the model's %s bytes\n",
		groupThousands(d.NumChanged()), groupThousands(params), 100*float64(d.NumChanged())/float64(params),
		groupThousands(deltaInfo.Size()), 100*float64(deltaInfo.Size())/float64(baseInfo.Size()), groupThousands(baseInfo.Size()))
	fmt.Fprintf(stdout, "time         %.1f s (fine-tuning %.1f s)\n\n", time.Since(start).Seconds(), trainTime.Seconds())
	fmt.Fprintf(stdout, "files in %s:\n", dir)
	for _, f := range [][2]string{
		{demo.BaseModelFile, "the base model"},
		{"train.jsonl, valid.jsonl", "the new task's data"},
		{"run/", "the training run: delta.safetensors, metrics.jsonl (loss, realized ε, thresholds, churn per step), config.json, checkpoint/"},
		{"tuned.onnx", "the base model with the delta applied"},
		{"train.log, apply.log", "what the two commands below printed"},
	} {
		fmt.Fprintf(stdout, "  %-26s %s\n", f[0], f[1])
	}
	fmt.Fprintf(stdout, "\nthe same by hand:\n  dstune train %s\n  dstune apply %s\n", shellJoin(trainArgs), shellJoin(applyArgs))
	return nil
}

// demoEvaluate loads a model file and scores it on examples; it also
// returns the model's parameter count.
func demoEvaluate(path string, examples []demo.Example, threads int) (demo.Quality, int64, error) {
	m, err := onnx.ReadFile(path)
	if err != nil {
		return demo.Quality{}, 0, err
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		return demo.Quality{}, 0, fmt.Errorf("%s: %w", path, err)
	}
	var params int64
	for _, p := range model.Params {
		params += int64(p.Tensor.Len())
	}
	q, err := demo.Evaluate(model, examples, threads)
	if err != nil {
		return q, 0, fmt.Errorf("%s: %w", path, err)
	}
	return q, params, nil
}

// runLogged runs a dstune command with its output going to logPath.
func runLogged(logPath, name string, args []string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "dstune %s %s\n\n", name, shellJoin(args))
	err = commands[name].run(args, f, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) && ee.code == 130 {
			return err
		}
		var ue *usageError
		if errors.As(err, &ue) { // the demo's own arguments: not the user's usage error
			return fmt.Errorf("dstune %s failed (its output is in %s): %s", name, logPath, ue.msg)
		}
		return fmt.Errorf("dstune %s failed (its output is in %s): %w", name, logPath, err)
	}
	return nil
}

func skillNames(skills []demo.Skill) string {
	names := make([]string, len(skills))
	for i, s := range skills {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// shellJoin quotes arguments for a POSIX shell where needed.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+", r))
		}) < 0 {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
