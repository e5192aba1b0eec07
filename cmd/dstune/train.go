package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/dstune/dstune/accel/tpu" // the "pjrt" backend and its training engine
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
)

func init() {
	register(&command{
		name: "train",
		usage: "MODEL.onnx --data TRAIN.jsonl [--valid VALID.jsonl] --task lm|classify --method full|dst|lora|prompt " +
			"[--optimizer adamw|adafactor|sgd] [--lr LR] --steps N [--batch B] [--seed S] [--threads N] --out RUN\n" +
			"       [--backend cpu|pjrt] [--pjrt-plugin PATH]\n" +
			"       [--eps E] [--distance inv-rel|rel|abs|random] [--silo module-layer|module|none] [--normalize none|size|mean]\n" +
			"       [--threshold iterative|exact] [--churn=true|false] [--refine-steps M] [--refine-factor R]   (--method dst)\n" +
			"       dstune train --resume RUN",
		summary: "fine-tune a model on JSONL data: full fine-tuning or DST (--method dst; LoRA and prompt tuning to come)",
		run:     runTrain,
	})
}

// interruptSignals end a run after its current step, with a checkpoint.
var interruptSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

func runTrain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	data := fs.String("data", "", "training data, JSON Lines (see README)")
	valid := fs.String("valid", "", "validation data, JSON Lines: its loss is reported every --eval-every steps and at the end")
	task := fs.String("task", "", "lm (next-token loss over \"tokens\") or classify (\"label\" from the first output)")
	method := fs.String("method", train.MethodFull, "full | dst | lora | prompt (full and dst are implemented)")
	trainable := fs.String("trainable", "", "regular expression: train only the parameters whose ONNX names match (default: all)")
	optimizer := fs.String("optimizer", train.OptimizerAdamW, "adamw | adafactor | sgd")
	lr := fs.Float64("lr", 0, "learning rate (default 1e-3; Adafactor: a relative step size scaled by each parameter's RMS unless --lr is given, which makes it absolute)")
	var weightDecay, beta1, beta2 optionalFloat
	fs.Var(&weightDecay, "weight-decay", "weight decay (AdamW default 0.01, SGD 0)")
	momentum := fs.Float64("momentum", 0, "SGD momentum")
	fs.Var(&beta1, "beta1", "AdamW β1 (default 0.9); Adafactor first-moment decay (default 0: none)")
	fs.Var(&beta2, "beta2", "AdamW β2 (default 0.999)")
	schedule := fs.String("schedule", train.ScheduleConstant, "learning-rate schedule after the warm-up: constant | linear | cosine")
	warmup := fs.Int64("warmup", 0, "linear warm-up steps")
	steps := fs.Int64("steps", 0, "training steps (batches)")
	batch := fs.Int("batch", 8, "examples per batch")
	maxLen := fs.Int("max-len", 0, "truncate examples to this many tokens; batches are padded to it (default: the longest example)")
	padID := fs.Int64("pad-id", 0, "token id written at padded positions (they never count in the loss)")
	seed := fs.Uint64("seed", 0, "seed of the data order")
	backend := fs.String("backend", "cpu", "cpu | pjrt (an accelerator through a PJRT plugin: the step, optimizer and DST run on the device)")
	pluginPath := fs.String("pjrt-plugin", "", "--backend pjrt: the PJRT plugin file (default: $"+tpu.PluginEnv+", then JAX's CUDA plugin, libtpu and the standard library paths); not part of the run")
	threads := fs.Int("threads", 0, "goroutines per kernel call (default: all cores; results do not depend on it, and a resumed run may change it)")
	evalEvery := fs.Int64("eval-every", 0, "validate every N steps (default: steps/10)")
	ckptEvery := fs.Int64("checkpoint-every", 0, "write a checkpoint every N steps (default: steps/10); always at the end and on Ctrl-C")
	logEvery := fs.Int64("log-every", 0, "when not on a terminal, print a progress line every N steps (default: steps/20)")
	out := fs.String("out", "", "the run directory (created)")
	resume := fs.String("resume", "", "continue the run in this directory from its last checkpoint")
	// DST's options (--method dst; package dst documents them).
	dstDefaults := train.DefaultDSTConfig()
	eps := fs.Float64("eps", dstDefaults.Eps, "dst: share of each silo's entries that may differ from the seed")
	distance := fs.String("distance", dstDefaults.Distance, "dst: inv-rel | rel | abs | random (a random mask chosen once)")
	silo := fs.String("silo", dstDefaults.Silo, "dst: module-layer | module | none (see dstune inspect)")
	normalize := fs.String("normalize", "none", "dst: none | size | mean: divide Δ by each silo's size or mean |Θ0| and select over all parameters at once, instead of per silo")
	threshold := fs.String("threshold", dstDefaults.Threshold, "dst: iterative (Algorithm 2, made exact) | exact (a selection every step)")
	churn := fs.Bool("churn", dstDefaults.Churn, "dst: let the subset change after the first step")
	refineSteps := fs.Int("refine-steps", dstDefaults.RefineSteps, "dst: Algorithm 2's m, bisection steps per training step")
	refineFactor := fs.Float64("refine-factor", dstDefaults.Factor, "dst: Algorithm 2's r, the most the threshold may move by in one step")
	paperAlg2 := fs.Bool("paper-alg2", false, "dst: also run Algorithm 2 as printed (carrying its own threshold) and report what it would keep as eps_paper_alg2 (one more counting pass a step)")
	dstFlags := []string{"eps", "distance", "silo", "normalize", "threshold", "churn", "refine-steps", "refine-factor", "paper-alg2"}

	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "usage: dstune train %s\n\nflags:\n%s", commands["train"].usage, flagUsage(fs))
		return err
	}
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range dstFlags {
		if set[name] && *method != train.MethodDST && (*resume == "" || set["method"]) {
			return usagef("--%s is an option of --method dst", name)
		}
	}
	switch *method {
	case train.MethodFull, train.MethodDST:
	case train.MethodLoRA, train.MethodPrompt:
		return &exitError{1, fmt.Sprintf("--method %s is not implemented yet (full and dst are)", *method)}
	default:
		return usagef("unknown --method %q (want full, dst, lora or prompt)", *method)
	}

	var cfg train.Config
	dir := *out
	if *resume != "" {
		if *out != "" && filepath.Clean(*out) != filepath.Clean(*resume) {
			return usagef("--resume continues the run in its own directory: drop --out")
		}
		dir = *resume
		if cfg, err = train.LoadConfig(dir); err != nil {
			return fmt.Errorf("--resume: %w", err)
		}
		if len(pos) > 1 {
			return usagef("want at most the model file, got %d arguments", len(pos))
		}
		if len(pos) == 1 {
			if abs, err := filepath.Abs(pos[0]); err != nil || abs != cfg.Model {
				return usagef("the run trains %s, not %s", cfg.Model, pos[0])
			}
		}
	} else {
		switch {
		case len(pos) != 1:
			return usagef("want exactly one model file, got %d arguments", len(pos))
		case *data == "":
			return usagef("--data is required")
		case *task == "":
			return usagef("--task is required (lm or classify)")
		case *steps < 1:
			return usagef("--steps is required (≥ 1)")
		case *out == "":
			return usagef("--out RUN is required (the run directory)")
		}
		opt, err := train.DefaultOptimizer(*optimizer)
		if err != nil {
			return usagef("--optimizer: %v", err)
		}
		cfg = train.Config{Optimizer: opt, Method: *method, Backend: *backend, Threads: kernels.DefaultThreads(),
			Schedule: train.Schedule{Name: train.ScheduleConstant}}
		cfg.EvalEvery = max(1, *steps/10)
		cfg.CheckpointEvery = max(1, *steps/10)
		if cfg.Model, err = filepath.Abs(pos[0]); err != nil {
			return err
		}
	}
	// Flags given (again, when resuming) set the configuration; a resumed
	// run checks that they agree with config.json.
	absPath := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	apply := map[string]func() error{
		"data":  func() error { cfg.Data = absPath(*data); return nil },
		"valid": func() error { cfg.Valid = absPath(*valid); return nil },
		"task":  func() error { cfg.Task = train.Task(*task); return nil },
		"method": func() error {
			cfg.Method = *method
			if *method == train.MethodDST && cfg.DST == nil {
				c := train.DefaultDSTConfig()
				cfg.DST = &c
			}
			return nil
		},
		"trainable": func() error { cfg.Trainable = *trainable; return nil },
		"optimizer": func() error {
			if cfg.Optimizer.Name == *optimizer {
				return nil
			}
			opt, err := train.DefaultOptimizer(*optimizer)
			cfg.Optimizer = opt
			return err
		},
		"lr": func() error { cfg.Optimizer.SetLR(*lr); return nil },
		"weight-decay": func() error {
			switch {
			case cfg.Optimizer.AdamW != nil:
				cfg.Optimizer.AdamW.WeightDecay = weightDecay.v
			case cfg.Optimizer.SGD != nil:
				cfg.Optimizer.SGD.WeightDecay = weightDecay.v
			default:
				return usagef("--weight-decay: %s has none", cfg.Optimizer.Name)
			}
			return nil
		},
		"momentum": func() error {
			if cfg.Optimizer.SGD == nil {
				return usagef("--momentum is an SGD option")
			}
			cfg.Optimizer.SGD.Momentum = *momentum
			return nil
		},
		"beta1": func() error {
			switch {
			case cfg.Optimizer.AdamW != nil:
				cfg.Optimizer.AdamW.Beta1 = beta1.v
			case cfg.Optimizer.Adafactor != nil:
				cfg.Optimizer.Adafactor.Beta1 = beta1.v
			default:
				return usagef("--beta1: SGD has none (see --momentum)")
			}
			return nil
		},
		"beta2": func() error {
			if cfg.Optimizer.AdamW == nil {
				return usagef("--beta2 is an AdamW option (Adafactor's decay follows t^-0.8)")
			}
			cfg.Optimizer.AdamW.Beta2 = beta2.v
			return nil
		},
		"schedule":         func() error { cfg.Schedule.Name = *schedule; return nil },
		"warmup":           func() error { cfg.Schedule.Warmup = *warmup; return nil },
		"steps":            func() error { cfg.Steps = *steps; return nil },
		"batch":            func() error { cfg.Batch = *batch; return nil },
		"max-len":          func() error { cfg.MaxLen = *maxLen; return nil },
		"pad-id":           func() error { cfg.PadID = *padID; return nil },
		"seed":             func() error { cfg.Seed = *seed; return nil },
		"backend":          func() error { cfg.Backend = *backend; return nil },
		"threads":          func() error { cfg.Threads = *threads; return nil },
		"eval-every":       func() error { cfg.EvalEvery = *evalEvery; return nil },
		"checkpoint-every": func() error { cfg.CheckpointEvery = *ckptEvery; return nil },
	}
	dstOption := func(f func(c *train.DSTConfig)) func() error {
		return func() error {
			if cfg.DST == nil {
				return usagef("DST options are for --method dst; the run is --method %s", cfg.Method)
			}
			f(cfg.DST)
			return nil
		}
	}
	apply["eps"] = dstOption(func(c *train.DSTConfig) { c.Eps = *eps })
	apply["distance"] = dstOption(func(c *train.DSTConfig) { c.Distance = *distance })
	apply["silo"] = dstOption(func(c *train.DSTConfig) { c.Silo = *silo })
	apply["normalize"] = dstOption(func(c *train.DSTConfig) {
		c.Normalize = *normalize
		if c.Normalize == "none" {
			c.Normalize = ""
		}
	})
	apply["threshold"] = dstOption(func(c *train.DSTConfig) { c.Threshold = *threshold })
	apply["churn"] = dstOption(func(c *train.DSTConfig) { c.Churn = *churn })
	apply["refine-steps"] = dstOption(func(c *train.DSTConfig) { c.RefineSteps = *refineSteps })
	apply["refine-factor"] = dstOption(func(c *train.DSTConfig) { c.Factor = *refineFactor })
	apply["paper-alg2"] = dstOption(func(c *train.DSTConfig) { c.PaperAlg2 = *paperAlg2 })
	// Order matters: the optimizer before its hyper-parameters.
	order := []string{"data", "valid", "task", "method", "trainable", "optimizer", "lr", "weight-decay", "momentum", "beta1", "beta2",
		"schedule", "warmup", "steps", "batch", "max-len", "pad-id", "seed", "backend", "threads", "eval-every", "checkpoint-every"}
	order = append(order, dstFlags...)
	for _, name := range order {
		if set[name] || (*resume == "" && (name == "batch" || name == "seed" || name == "task" || (name == "method" && *method == train.MethodDST))) {
			if err := apply[name](); err != nil {
				return err
			}
		}
	}
	if *threads < 0 || (set["threads"] && *threads == 0) {
		if *threads < 0 {
			return usagef("--threads must not be negative")
		}
		cfg.Threads = kernels.DefaultThreads()
	}
	if *resume == "" {
		if err := cfg.Check(); err != nil {
			return usagef("%v", err)
		}
		if cfg.DST != nil {
			if _, err := dst.ParseConfig(*cfg.DST, cfg.Seed); err != nil {
				return usagef("%v", err)
			}
		}
	}
	var backendOptions map[string]string
	if set["pjrt-plugin"] {
		if cfg.Backend != "pjrt" {
			return usagef("--pjrt-plugin is for --backend pjrt (the run's backend is %s)", cfg.Backend)
		}
		backendOptions = map[string]string{tpu.PluginOption: *pluginPath}
	}
	if cfg.Backend == "pjrt" {
		// Fail before reading data or writing the run directory.
		if _, err := tpu.CheckRuntime(*pluginPath); err != nil {
			return err
		}
	}
	every := *logEvery
	if every <= 0 {
		every = max(1, cfg.Steps/20)
	}

	ctx, stop := signal.NotifyContext(context.Background(), interruptSignals...)
	defer stop()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			// A second Ctrl-C ends the process at once.
			stop()
			fmt.Fprintln(stderr, "\ninterrupted: finishing the current step and writing a checkpoint (Ctrl-C again to quit without one)")
		case <-finished:
		}
	}()
	res, err := train.Run(ctx, cfg, train.RunOptions{Dir: dir, Resume: *resume != "", Progress: stdout,
		Terminal: train.IsTerminal(stdout), LogEvery: every, BackendOptions: backendOptions})
	if errors.Is(err, train.ErrInterrupted) {
		return &exitError{130, err.Error()}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "done: step %d, training loss %.4f", res.Step, res.Loss)
	if !math.IsNaN(res.ValidLoss) {
		if !math.IsNaN(res.InitialValidLoss) {
			fmt.Fprintf(stdout, ", validation loss %.4f (%.4f before training)", res.ValidLoss, res.InitialValidLoss)
		} else {
			fmt.Fprintf(stdout, ", validation loss %.4f", res.ValidLoss)
		}
	}
	fmt.Fprintf(stdout, "\nrun directory: %s\n", dir)
	if res.ModelFile != "" {
		fmt.Fprintf(stdout, "fine-tuned model: %s\n", res.ModelFile)
	}
	if cfg.Method == train.MethodDST {
		fmt.Fprintf(stdout, "delta: %s (dstune apply MODEL.onnx DELTA -o OUT.onnx)\n", filepath.Join(dir, dst.DeltaFile))
	}
	return nil
}

// optionalFloat is a float flag without a default of its own (the
// optimizer's applies unless it is given).
type optionalFloat struct{ v float64 }

func (f *optionalFloat) String() string {
	if f == nil || f.v == 0 {
		return ""
	}
	return strconv.FormatFloat(f.v, 'g', -1, 64)
}

func (f *optionalFloat) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("want a finite number, got %q", s)
	}
	f.v = v
	return nil
}
