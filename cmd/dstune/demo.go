package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dstune/dstune/demo"
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

func init() {
	register(&command{
		name:     "demo",
		synopsis: []string{"[--out DIR] [--steps 300] [--eps 0.01] [--lr 0.01] [--threads 2] [--full=true]", "--regenerate DIR"},
		summary:  "fine-tune the small model that ships with dstune on a new task with DST, and show before and after",
		flags:    func(fs *flag.FlagSet) { new(demoFlags).define(fs) },
		run:      runDemo,
	})
}

// The demo's fine-tuning, fixed so that every run prints the same numbers
// (on machines with the same ISA; the thread count is part of the result).
const (
	demoTrainExamples = 4000
	demoValidExamples = 256
	demoDataSeed      = 2
	demoBatch         = 32
	demoOptimizer     = update.OptimizerAdamW
	demoSilo          = "module-layer"
	demoDistance      = "inv-rel"
	demoThreshold     = "iterative"
)

// demoMethod is the training method of the demo's fine-tuning.
var demoMethod = train.MethodDST

// demoFlags are dstune demo's flags.
type demoFlags struct {
	out, regenerate *string
	steps           *int64
	eps, lr         *float64
	threads         *int
	full            *bool
}

func (f *demoFlags) define(fs *flag.FlagSet) {
	f.out = fs.String("out", "", "directory for the demo's files (created; default: a new directory under the OS temp dir)")
	f.steps = fs.Int64("steps", 300, "fine-tuning steps")
	f.eps = fs.Float64("eps", 1e-2, "share of each silo's entries that may differ from the base model")
	f.lr = fs.Float64("lr", 1e-2, "AdamW learning rate")
	f.threads = fs.Int("threads", 2, "goroutines per kernel call (the results do not depend on it)")
	f.full = fs.Bool("full", true, "also fine-tune every parameter (--method full), for reference")
	f.regenerate = fs.String("regenerate", "", "instead of the demo: pretrain the shipped base model from scratch and write DIR/"+demo.BaseModelFile)
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	var f demoFlags
	fs := newFlagSet("demo", f.define)
	out, steps, eps, lr, threads, full, regenerate := f.out, f.steps, f.eps, f.lr, f.threads, f.full, f.regenerate
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
	case *lr <= 0:
		return usagef("--lr must be above 0")
	case *regenerate == "" && flagsSet(fs)["regenerate"]:
		return usagef("--regenerate needs the directory to write %s into", demo.BaseModelFile)
	}
	if *regenerate != "" {
		// The pretraining is fixed (its steps, batch and threads), so
		// that it writes the shipped file again: other flags would be
		// ignored.
		for name := range flagsSet(fs) {
			if name != "regenerate" {
				return usagef("--regenerate takes no other flag (--%s): the pretraining is fixed, to write the shipped base model again", name)
			}
		}
	}
	if *regenerate != "" {
		ctx, stop := interruptible(stderr, "stopping the pretraining after its current step; nothing is written", "at once")
		defer stop()
		return regenerateDemo(ctx, stdout, *regenerate)
	}
	// The fine-tuning runs catch the first Ctrl-C themselves (they finish
	// their step and write a checkpoint, into their log); this context says
	// so on the terminal, keeps the demo from starting its next part, and
	// lets a second Ctrl-C end the process at once.
	ctx, stop := interruptible(stderr, "the demo stops (a fine-tuning in progress finishes its step and writes a checkpoint first)", "at once")
	defer stop()
	return demoRun(ctx, stdout, demoOptions{out: *out, steps: *steps, eps: *eps, lr: *lr, threads: *threads, full: *full})
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
	full    bool // also fine-tune every parameter, for reference
}

// demoRun writes the base model and the task's data into the output
// directory, measures the base model, fine-tunes it with `dstune train
// --method dst`, applies the delta with `dstune apply` and measures the
// result; with o.full also `dstune train --method full` for reference.
func demoRun(ctx context.Context, stdout io.Writer, o demoOptions) error {
	start := time.Now()
	d, err := newDemoDir(o)
	if err != nil {
		return err
	}
	before, params, err := demoEvaluate(d.at(demo.BaseModelFile), d.validSet, o.threads)
	if err != nil {
		return err
	}
	printDemoIntro(stdout, o, params, len(d.trainSet))
	r, err := d.fineTune(ctx, o)
	if err != nil {
		return err
	}
	r.before, r.params, r.total = before, params, time.Since(start)
	return d.report(stdout, o, r)
}

// demoDir is the demo's directory with the base model and the task's
// data written into it.
type demoDir struct {
	dir                string
	trainSet, validSet []demo.Example
}

func (d *demoDir) at(name string) string { return filepath.Join(d.dir, name) }

// demoOutputs are the files and directories the demo writes in its
// directory.
var demoOutputs = []string{demo.BaseModelFile, "train.jsonl", "valid.jsonl", "train.log", "apply.log", "full.log", "run", "full", "tuned.onnx"}

func newDemoDir(o demoOptions) (*demoDir, error) {
	d := &demoDir{dir: o.out}
	if d.dir == "" {
		var err error
		if d.dir, err = os.MkdirTemp("", "dstune-demo-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(d.dir, 0o777); err != nil { // the umask takes its share
		return nil, err
	}
	// Every file and directory the demo writes must be new: it overwrote
	// a user's base.onnx and train.jsonl before failing at tuned.onnx.
	for _, name := range demoOutputs {
		if !o.full && (name == "full" || name == "full.log") {
			continue // written only with --full
		}
		if _, err := os.Lstat(d.at(name)); err == nil {
			return nil, usagef("%s already exists, and the demo writes it: give --out a new directory, or one without the demo's files", d.at(name))
		}
	}
	if err := os.WriteFile(d.at(demo.BaseModelFile), demo.BaseModel, 0o666); err != nil {
		return nil, err
	}
	d.trainSet, d.validSet = demo.TaskData(demo.ReverseUpper, demoTrainExamples, demoValidExamples, demoDataSeed)
	if err := demo.WriteJSONL(d.at("train.jsonl"), d.trainSet); err != nil {
		return nil, err
	}
	if err := demo.WriteJSONL(d.at("valid.jsonl"), d.validSet); err != nil {
		return nil, err
	}
	return d, nil
}

// printDemoIntro says what the base model and the new task are and how
// the demo fine-tunes.
func printDemoIntro(stdout io.Writer, o demoOptions, params int64, examples int) {
	word := "hello"
	task := demo.ReverseUpper
	fmt.Fprintf(stdout, "dstune demo: Dynamic Subset Tuning of a small model on a task it has not learned\n\n")
	fmt.Fprintf(stdout, "base model   a byte-level GPT (%d layers, width %d, %s parameters) that dstune pretrained\n",
		demo.DefaultModel.Layers, demo.DefaultModel.Dim, groupThousands(params))
	fmt.Fprintf(stdout, "             from scratch on %s:", skillNames(demo.DefaultPretraining.Skills))
	for _, s := range demo.DefaultPretraining.Skills {
		e := s.Example([]byte(word))
		fmt.Fprintf(stdout, "  %s → %s", e.Prompt, e.Answer)
	}
	e := task.Example([]byte(word))
	fmt.Fprintf(stdout, "\nnew task     %s: %s → %s, never seen in pretraining (%d training examples)\n", task.Name, e.Prompt, e.Answer, examples)
	fmt.Fprintf(stdout, "fine-tuning  DST with ε = %g: after every optimizer step only the %g %% of each tensor farthest\n", o.eps, 100*o.eps)
	fmt.Fprintf(stdout, "             from the base (%s distance) keep their new values, the rest snap back;\n", demoDistance)
	fmt.Fprintf(stdout, "             AdamW, lr %g, %d steps of %d examples, %s\n\n", o.lr, o.steps, demoBatch, plural(int64(o.threads), "thread", "threads"))
}

// demoResults are what the demo measured.
type demoResults struct {
	before, after, full demo.Quality
	params              int64
	dstArgs, applyArgs  []string
	trainTime, total    time.Duration
}

// fineTune runs the DST fine-tuning, applies its delta and measures the
// tuned model; with o.full it also fine-tunes every parameter.
func (d *demoDir) fineTune(ctx context.Context, o demoOptions) (*demoResults, error) {
	trainArgs := func(method, out string) []string {
		args := []string{d.at(demo.BaseModelFile), "--data", d.at("train.jsonl"), "--valid", d.at("valid.jsonl"), "--task", "lm",
			"--method", method, "--optimizer", demoOptimizer, "--lr", strconv.FormatFloat(o.lr, 'g', -1, 64),
			"--steps", strconv.FormatInt(o.steps, 10), "--batch", strconv.Itoa(demoBatch), "--seed", "1",
			"--threads", strconv.Itoa(o.threads), "--out", out}
		if method == train.MethodDST {
			args = append(args, "--eps", strconv.FormatFloat(o.eps, 'g', -1, 64), "--silo", demoSilo,
				"--distance", demoDistance, "--threshold", demoThreshold)
		}
		return args
	}
	r := &demoResults{dstArgs: trainArgs(train.MethodDST, d.at("run"))}
	trainStart := time.Now()
	if err := runLogged(ctx, d.at("train.log"), "train", r.dstArgs); err != nil {
		return nil, err
	}
	r.trainTime = time.Since(trainStart)
	r.applyArgs = []string{d.at(demo.BaseModelFile), d.at(filepath.Join("run", dst.DeltaFile)), "-o", d.at("tuned.onnx")}
	if err := runLogged(ctx, d.at("apply.log"), "apply", r.applyArgs); err != nil {
		return nil, err
	}
	var err error
	if r.after, _, err = demoEvaluate(d.at("tuned.onnx"), d.validSet, o.threads); err != nil {
		return nil, err
	}
	if o.full {
		if err := runLogged(ctx, d.at("full.log"), "train", trainArgs(train.MethodFull, d.at("full"))); err != nil {
			return nil, err
		}
		if r.full, _, err = demoEvaluate(d.at(filepath.Join("full", train.ModelFile)), d.validSet, o.threads); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// report prints the measurements, the subset and delta, where the files
// are and the commands that made them.
func (d *demoDir) report(stdout io.Writer, o demoOptions, r *demoResults) error {
	deltaPath := d.at(filepath.Join("run", dst.DeltaFile))
	delta, err := dst.ReadDelta(deltaPath)
	if err != nil {
		return err
	}
	deltaInfo, err1 := os.Stat(deltaPath)
	baseInfo, err2 := os.Stat(d.at(demo.BaseModelFile))
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-34s %s   %s   %s\n", fmt.Sprintf("on %d held-out words", len(d.validSet)), "validation loss", "exact match", "parameters changed")
	row := func(name string, q demo.Quality, changed string) {
		fmt.Fprintf(stdout, "  %-32s %15.4f %11.1f %%   %s\n", name, q.Loss, 100*q.ExactMatch, changed)
	}
	row("base model", r.before, "none")
	row(fmt.Sprintf("after DST (ε = %g)", o.eps), r.after, fmt.Sprintf("%s (%.2f %%)", groupThousands(delta.NumChanged()), 100*float64(delta.NumChanged())/float64(r.params)))
	if o.full {
		row("full fine-tuning, for reference", r.full, "all "+groupThousands(r.params))
	}
	for i := range min(3, len(d.validSet)) {
		fmt.Fprintf(stdout, "  e.g. %s  base model: %s  after DST: %s\n", d.validSet[i].Prompt, r.before.Completions[i], r.after.Completions[i])
	}
	if last := lastMetrics(d.at(filepath.Join("run", train.MetricsFile))); last != nil {
		if alg2, ok := last["eps_alg2"].(float64); ok {
			fmt.Fprintf(stdout, "\nsubset       exactly %s entries (round(ε·n) of each tensor) after every step; at the last step\n", groupThousands(delta.NumChanged()))
			fmt.Fprintf(stdout, "             Algorithm 2's threshold alone would have kept ε = %.3f %%", 100*alg2)
			if churn, ok := last["churn"].(float64); ok {
				fmt.Fprintf(stdout, ", and %.2f %% of the subset changed", 100*churn)
			}
			fmt.Fprintln(stdout)
		}
	}
	fmt.Fprintf(stdout, "\ndelta        %s: %s bytes, %.1f %% of the base model's %s bytes\n",
		filepath.Join("run", dst.DeltaFile), groupThousands(deltaInfo.Size()), 100*float64(deltaInfo.Size())/float64(baseInfo.Size()), groupThousands(baseInfo.Size()))
	fmt.Fprintf(stdout, "time         %.1f s (DST fine-tuning %.1f s)\n\n", r.total.Seconds(), r.trainTime.Seconds())
	d.printFiles(stdout, o, r)
	return nil
}

// printFiles lists the demo's files and the commands that made them.
func (d *demoDir) printFiles(stdout io.Writer, o demoOptions, r *demoResults) {
	fmt.Fprintf(stdout, "files in %s:\n", d.dir)
	list := [][2]string{
		{demo.BaseModelFile, "the base model"},
		{"train.jsonl, valid.jsonl", "the new task's data"},
		{"run/", "the DST run: " + dst.DeltaFile + ", metrics.jsonl (per step: loss, realized ε, thresholds, churn), config.json, checkpoint/"},
		{"tuned.onnx", "the base model with the delta applied"},
		{"train.log, apply.log", "what the commands below printed"},
	}
	if o.full {
		list = append(list, [2]string{"full/, full.log", "the full fine-tuning run (full/model.onnx) and its output"})
	}
	for _, f := range list {
		fmt.Fprintf(stdout, "  %-26s %s\n", f[0], f[1])
	}
	fmt.Fprintf(stdout, "\nthe same by hand, in that directory:\n")
	for _, c := range [][]string{append([]string{"train"}, r.dstArgs...), append([]string{"apply"}, r.applyArgs...)} {
		fmt.Fprintf(stdout, "  dstune %s\n", relativeTo(d.dir, shellJoin(c)))
	}
	fmt.Fprintf(stdout, "  dstune run %s --delta run/%s --input tokens=TOKENS.pb --output-dir OUT   (the delta applied in memory; TOKENS.pb: an int64 TensorProto of token ids [1, n])\n", demo.BaseModelFile, dst.DeltaFile)
}

// lastMetrics returns the last record of a run's metrics.jsonl, or nil.
func lastMetrics(path string) map[string]any {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var rec map[string]any
	if json.Unmarshal([]byte(lines[len(lines)-1]), &rec) != nil {
		return nil
	}
	return rec
}

// relativeTo shortens the paths inside dir in a command line for display.
func relativeTo(dir, cmdline string) string {
	return strings.ReplaceAll(cmdline, dir+string(filepath.Separator), "")
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
func runLogged(ctx context.Context, logPath, name string, args []string) error {
	if ctx.Err() != nil {
		return &exitError{130, fmt.Sprintf("interrupted before dstune %s", name)}
	}
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
