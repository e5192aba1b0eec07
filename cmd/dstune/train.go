package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/tpu" // the "pjrt" backend
	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

func init() {
	register(&command{
		name: "train",
		synopsis: []string{
			"MODEL.onnx --data TRAIN.jsonl [--valid VALID.jsonl] --task lm|classify [--method full|dst|lora|prompt]",
			"             [--optimizer adamw|adafactor|sgd] [--lr LR] [--weight-decay WD] [--momentum M] [--beta1 B1] [--beta2 B2]",
			"             --steps N [--batch 8] [--grad-accum 1] [--max-grad-norm C] [--seed 0] [--schedule constant|linear|cosine] [--warmup N]",
			"             [--trainable REGEX] [--tokenizer T] [--chat-template FILE] [--max-len N] [--pad-id ID] [--threads N] --out RUN",
			"             [--precision fp32|bf16] [--eval-every N] [--metric loss|token-accuracy|exact-match|accuracy]",
			"             [--keep-best] [--patience N] [--checkpoint-every N] [--checkpoint-minutes 10] [--log-every N] [--memory-report]",
			"             [--backend cpu|pjrt] [--pjrt-plugin PATH] [--max-memory SIZE]",
			"             [--eps 1e-3] [--distance inv-rel|rel|abs|random] [--silo module-layer|module|none]",
			"             [--normalize none|size|mean] [--threshold iterative|exact] [--churn=true|false]",
			"             [--refine-steps 3] [--refine-factor 2] [--paper-alg2]        (--method dst)",
			"             [--rank 8] [--alpha 8] [--lora-dropout 0] [--targets KIND,...]   (--method lora)",
			"             [--prompt-len 10] [--prompt-at after-bos|start] [--prompt-init vocab|random]   (--method prompt)",
			"--resume RUN [--allow-data-change]",
		},
		summary: "fine-tune a model on JSONL data: full fine-tuning, DST, LoRA or prompt tuning",
		flags:   func(fs *flag.FlagSet) { new(trainFlags).define(fs) },
		run:     runTrain,
	})
}

// interruptSignals end a run after its current step, with a checkpoint:
// Ctrl-C, SIGTERM, and SIGHUP (the terminal closed) unless it is ignored,
// as nohup does: catching it would undo that.
var interruptSignals = func() []os.Signal {
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	return sigs
}()

// holdHangups keeps SIGHUP caught, and dropped, once the interrupt
// signals have their default action back: a closing terminal sends it
// twice (the shell passes its own on to its jobs), and the second must
// not end the process before the first has been acted on.
func holdHangups() {
	if slices.Contains(interruptSignals, os.Signal(syscall.SIGHUP)) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	}
}

// interruptIgnoredAtStart: a shell without job control (a script's
// `dstune train … &`) starts its background jobs with SIGINT ignored.
// Catching it overrides that, and giving it back its handling from
// before would ignore the second SIGINT, which the message after the
// first promises ends the process (a person running `kill -INT` twice).
var interruptIgnoredAtStart = signal.Ignored(os.Interrupt)

// quitOnNextInterrupt makes the next SIGINT end the process at once, as
// its default action would, where the process started with it ignored:
// to be called just before the interrupt signals get their handling from
// before back (after, a SIGINT arriving between the two would be lost).
func quitOnNextInterrupt() {
	if !interruptIgnoredAtStart {
		return
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt)
	go func() {
		<-c
		os.Exit(130)
	}()
}

// trainFlags are dstune train's flags.
type trainFlags struct {
	data, valid, task, method, trainable, optimizer *string
	tokenizer                                       *string
	chatTemplate                                    *string
	lr, momentum                                    *float64
	weightDecay, beta1, beta2                       optionalFloat
	schedule                                        *string
	warmup, steps                                   *int64
	batch, maxLen                                   *int
	padID                                           *int64
	seed                                            *uint64
	backend, pluginPath                             *string
	threads                                         *int
	evalEvery, ckptEvery, logEvery                  *int64
	ckptMinutes                                     *float64
	gradAccum                                       *int
	maxGradNorm                                     *float64
	keepBest                                        *bool
	patience                                        *int64
	precision                                       *string
	metric                                          *string
	out, resume                                     *string
	maxMemory                                       *string
	memoryReport                                    *bool
	allowDataChange                                 *bool
	// DST's options (--method dst; package dst documents them).
	eps                       *float64
	distance, silo, normalize *string
	threshold                 *string
	churn                     *bool
	refineSteps               *int
	refineFactor              *float64
	paperAlg2                 *bool
	// LoRA's options (--method lora; package peft documents them).
	rank               *int
	alpha, loraDropout *float64
	targets            *string
	// Prompt tuning's options (--method prompt).
	promptLen            *int
	promptAt, promptInit *string
}

// dstFlags are the flags of --method dst.
var dstFlags = []string{"eps", "distance", "silo", "normalize", "threshold", "churn", "refine-steps", "refine-factor", "paper-alg2"}

// loraFlags and promptFlags are the flags of --method lora and prompt.
var (
	loraFlags   = []string{"rank", "alpha", "lora-dropout", "targets"}
	promptFlags = []string{"prompt-len", "prompt-at", "prompt-init"}
)

// methodFlags gives each method's own flags.
var methodFlags = map[string][]string{train.MethodDST: dstFlags, train.MethodLoRA: loraFlags, train.MethodPrompt: promptFlags}

func (f *trainFlags) define(fs *flag.FlagSet) {
	f.data = fs.String("data", "", "training data, JSON Lines (see README)")
	f.valid = fs.String("valid", "", "validation data, JSON Lines: its loss is reported every --eval-every steps and at the end")
	f.task = fs.String("task", "", "lm (next-token loss over \"tokens\") or classify (\"label\" from the first output)")
	f.method = fs.String("method", train.MethodFull, "full | dst | lora | prompt")
	f.trainable = fs.String("trainable", "", "regular expression: train only the parameters whose ONNX names match (default: all); lora: adapt the linear-layer weights it matches")
	f.tokenizer = fs.String("tokenizer", "", "tokenizer file (tokenizer.json or llama2.c tokenizer.bin) encoding the data's \"text\", \"prompt\" and \"completion\" fields and rendered \"messages\"")
	f.chatTemplate = fs.String("chat-template", "", "chat template rendering the data's \"messages\" rows: a Jinja file or a tokenizer_config.json (default: the tokenizer_config.json beside --tokenizer)")
	f.optimizer = fs.String("optimizer", update.OptimizerAdamW, "adamw | adafactor | sgd")
	f.lr = fs.Float64("lr", 0, "learning rate (default 1e-3; Adafactor: a relative step size scaled by each parameter's RMS unless --lr is given, which makes it absolute)")
	fs.Var(&f.weightDecay, "weight-decay", "weight decay (AdamW default 0.01, SGD 0)")
	f.momentum = fs.Float64("momentum", 0, "SGD momentum")
	fs.Var(&f.beta1, "beta1", "AdamW β1 (default 0.9); Adafactor first-moment decay (default 0: none)")
	fs.Var(&f.beta2, "beta2", "AdamW β2 (default 0.999)")
	f.schedule = fs.String("schedule", train.ScheduleConstant, "learning-rate schedule after the warm-up: constant | linear | cosine")
	f.warmup = fs.Int64("warmup", 0, "linear warm-up steps")
	f.steps = fs.Int64("steps", 0, "training steps (batches)")
	f.batch = fs.Int("batch", 8, "examples per batch")
	f.gradAccum = fs.Int("grad-accum", 1, "batches per step: their gradients are summed (weighted by their targets) before the one update, so --batch B --grad-accum K steps as --batch K·B would, holding the activations of B rows")
	f.keepBest = fs.Bool("keep-best", false, "keep the outputs (delta, adapters or model) as of the best validation so far in RUN/best, with best.json naming its step: the lowest validation loss, or the highest --metric")
	f.patience = fs.Int64("patience", 0, "stop after N validations in a row without a new best (0: never); needs --valid")
	f.maxGradNorm = fs.Float64("max-grad-norm", 0, "clip the gradients' global L2 norm to this before the update, as torch.nn.utils.clip_grad_norm_ (0: no clipping); metrics.jsonl reports grad_norm either way")
	f.maxLen = fs.Int("max-len", 0, "truncate examples to this many tokens; batches are padded to it (default: the longest example)")
	f.padID = fs.Int64("pad-id", 0, "token id written at padded positions: never a target, but the model reads it (a classifier pooling at the pad id needs its pad token here)")
	f.seed = fs.Uint64("seed", 0, "seed of the data order (and of DST's random mask)")
	f.backend = fs.String("backend", "cpu", "cpu | pjrt (an accelerator through a PJRT plugin: the step, optimizer and DST run on the device)")
	f.pluginPath = fs.String("pjrt-plugin", "", "--backend pjrt: the PJRT plugin file (default: $"+tpu.PluginEnv+", then JAX's CUDA plugin, libtpu and the standard library paths); not part of the run")
	f.threads = fs.Int("threads", 0, "goroutines per kernel call (default: all cores; results do not depend on it, and a resumed run may change it)")
	f.evalEvery = fs.Int64("eval-every", 0, "validate every N steps (default: steps/10)")
	f.metric = fs.String("metric", train.MetricLoss, "validation metric besides the loss: loss (none) | token-accuracy | exact-match (lm; greedy decoding of the completions of prompt/completion rows) | accuracy (classify)")
	f.ckptEvery = fs.Int64("checkpoint-every", 0, "also write a checkpoint every N steps (default: none; see --checkpoint-minutes)")
	f.ckptMinutes = fs.Float64("checkpoint-minutes", train.DefaultCheckpointMinutes, "write a checkpoint after the first step that ends M minutes or more after the last one (0: none); always at the end and on Ctrl-C")
	f.precision = fs.String("precision", string(accel.PrecisionFP32), "fp32 | bf16: matrix products with bfloat16 operands and float32 sums (like torch.autocast on the CPU); the rest of the step, the weights, gradients and the optimizer stay float32")
	f.memoryReport = fs.Bool("memory-report", false, "print what a step holds in memory (parameters, seed, gradients, optimizer state, activations, workspace) after the first step, and the peak resident memory at the end; not part of the run")
	f.logEvery = fs.Int64("log-every", 0, "when not on a terminal, print a progress line every N steps (default: steps/20)")
	f.out = fs.String("out", "", "the run directory (created)")
	f.resume = fs.String("resume", "", "continue the run in this directory from its last checkpoint")
	f.allowDataChange = fs.Bool("allow-data-change", false, "--resume: continue although a data file changed since the run started (config.json records the change; the run goes on with a new epoch)")
	f.maxMemory = fs.String("max-memory", "", fmt.Sprintf("memory budget a step must fit, e.g. 8GiB (default: %.0f %% of this machine's memory); not part of the run", 100*sysmem.DefaultFraction))
	d := dst.DefaultOptions()
	f.eps = fs.Float64("eps", d.Eps, "dst: share of each silo's entries that may differ from the seed")
	f.distance = fs.String("distance", d.Distance, "dst: inv-rel | rel | abs | random (a random mask chosen once)")
	f.silo = fs.String("silo", d.Silo, "dst: module-layer | module | none (see dstune inspect)")
	f.normalize = fs.String("normalize", "none", "dst: none | size | mean: divide Δ by each silo's size or mean |Θ0| and select over all parameters at once, instead of per silo")
	f.threshold = fs.String("threshold", d.Threshold, "dst: iterative (Algorithm 2, made exact) | exact (a selection every step)")
	f.churn = fs.Bool("churn", d.Churn, "dst: let the subset change after the first step")
	f.refineSteps = fs.Int("refine-steps", d.RefineSteps, "dst: Algorithm 2's m, bisection steps per training step")
	f.refineFactor = fs.Float64("refine-factor", d.Factor, "dst: Algorithm 2's r, the most the threshold may move by in one step")
	f.paperAlg2 = fs.Bool("paper-alg2", false, "dst: also run Algorithm 2 as printed (carrying its own threshold) and report what it would keep as eps_paper_alg2 (one more counting pass a step)")
	l := peft.DefaultLoRAOptions()
	f.rank = fs.Int("rank", l.Rank, "lora: the adapters' rank r")
	f.alpha = fs.Float64("alpha", l.Alpha, "lora: α; the adapters' output is scaled by α/r")
	f.loraDropout = fs.Float64("lora-dropout", l.Dropout, "lora: dropout probability on the adapters' input (training only)")
	f.targets = fs.String("targets", "", "lora: module kinds to adapt, comma-separated (dstune inspect's kinds: attn_q, attn_k, attn_v, attn_qkv, attn_kv, attn_out, mlp_in, mlp_out, head, linear; default: the attention and MLP kinds)")
	p := peft.DefaultPromptOptions()
	f.promptLen = fs.Int("prompt-len", p.Length, "prompt: virtual tokens n")
	f.promptAt = fs.String("prompt-at", p.At, "prompt: after-bos (after the first position) | start (before every token, as PEFT does)")
	f.promptInit = fs.String("prompt-init", p.Init, "prompt: vocab (embeddings of sampled vocabulary ids) | random (normal, with the embedding table's mean and standard deviation)")
}

func runTrain(args []string, stdout, stderr io.Writer) error {
	var f trainFlags
	fs := newFlagSet("train", f.define)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	set := flagsSet(fs)
	cfg, dir, err := f.config(pos, set)
	if err != nil {
		return err
	}
	if note := unusedRefineNote(cfg, set); note != "" {
		fmt.Fprintf(stderr, "note: %s\n", note)
	}
	var settings map[string]string
	if set["pjrt-plugin"] {
		if cfg.Backend != "pjrt" {
			return usagef("--pjrt-plugin is for --backend pjrt (the run's backend is %s)", cfg.Backend)
		}
		settings = map[string]string{tpu.PluginSetting: *f.pluginPath}
	}
	if cfg.Backend == "pjrt" {
		// Fail before reading data or writing the run directory.
		if _, err := tpu.CheckRuntime(*f.pluginPath); err != nil {
			return err
		}
	}
	if *f.allowDataChange && *f.resume == "" {
		return usagef("--allow-data-change is for --resume")
	}
	var maxMemory int64
	if *f.maxMemory != "" {
		if maxMemory, err = sysmem.ParseSize(*f.maxMemory); err != nil {
			return usagef("--max-memory: %v", err)
		}
		ir.SetMemoryLimit(maxMemory)
	}
	if *f.logEvery < 0 {
		return usagef("--log-every %d: want a step count ≥ 1 (0: steps/20)", *f.logEvery)
	}
	every := *f.logEvery
	if every == 0 {
		every = max(1, cfg.Steps/20)
	}
	if cfg.Precision == string(accel.PrecisionBF16) && cfg.Backend == "cpu" {
		switch kernels.SbgemmPath() {
		case "fma":
			fmt.Fprintln(stderr, "note: this CPU has no bfloat16 dot products (AVX512_BF16): bf16 rounds and sums as on one that has them, at fp32's speed")
		case "go":
			fmt.Fprintln(stderr, "note: without bfloat16 dot products (AVX512_BF16) or FMA kernels on this CPU and build, bf16 products run in portable Go, many times slower than fp32")
		}
	}
	return runTraining(cfg, train.RunOptions{Dir: dir, Resume: *f.resume != "", Progress: stdout,
		Terminal: isTerminal(stdout), LogEvery: every, BackendOptions: settings, MaxMemory: maxMemory, AllowDataChange: *f.allowDataChange,
		MemoryReport: *f.memoryReport}, stdout, stderr)
}

// config is the run's configuration: config.json's for --resume, else a
// new one, with the flags given set on it (a resumed run checks that they
// agree with config.json), and the run directory.
func (f *trainFlags) config(pos []string, set map[string]bool) (train.Config, string, error) {
	for method, names := range methodFlags {
		for _, name := range names {
			if set[name] && *f.method != method && (*f.resume == "" || set["method"]) {
				return train.Config{}, "", usagef("--%s is an option of --method %s", name, method)
			}
		}
	}
	switch *f.method {
	case train.MethodFull, train.MethodDST, train.MethodLoRA, train.MethodPrompt:
	default:
		return train.Config{}, "", usagef("unknown --method %q (want full, dst, lora or prompt)", *f.method)
	}
	cfg, dir, err := f.baseConfig(pos)
	if err != nil {
		return cfg, dir, err
	}
	// Order matters: the optimizer before its hyper-parameters, the
	// method before its options.
	order := []string{"data", "valid", "task", "method", "trainable", "tokenizer", "chat-template", "optimizer", "lr", "weight-decay", "momentum", "beta1", "beta2",
		"schedule", "warmup", "steps", "batch", "grad-accum", "max-grad-norm", "max-len", "pad-id", "seed", "backend", "threads", "eval-every", "metric", "checkpoint-every",
		"checkpoint-minutes", "precision", "keep-best", "patience"}
	order = append(order, dstFlags...)
	order = append(order, loraFlags...)
	order = append(order, promptFlags...)
	fresh := *f.resume == ""
	for _, name := range order {
		if set[name] || (fresh && (name == "batch" || name == "seed" || name == "task" || (name == "method" && *f.method != train.MethodFull))) {
			if err := f.apply(name, &cfg); err != nil {
				return cfg, dir, err
			}
		}
	}
	if *f.threads < 0 {
		return cfg, dir, usagef("--threads must not be negative")
	}
	if set["threads"] && *f.threads == 0 {
		cfg.Threads = kernels.DefaultThreads()
	}
	if fresh {
		if err := cfg.Check(); err != nil {
			return cfg, dir, usagef("%v", err)
		}
		if len(cfg.DST) > 0 {
			if _, err := dst.ParseOptions(cfg.DST, cfg.Seed); err != nil {
				return cfg, dir, usagef("%v", err)
			}
		}
		if len(cfg.LoRA) > 0 {
			if _, err := peft.ParseLoRAOptions(cfg.LoRA); err != nil {
				return cfg, dir, usagef("%v", err)
			}
		}
		if len(cfg.Prompt) > 0 {
			if _, err := peft.ParsePromptOptions(cfg.Prompt); err != nil {
				return cfg, dir, usagef("%v", err)
			}
		}
	}
	return cfg, dir, nil
}

// baseConfig is the configuration the flags apply to: config.json of the
// run to resume, or a new run's defaults.
func (f *trainFlags) baseConfig(pos []string) (train.Config, string, error) {
	// A run directory named through "link/.." is the one the kernel finds
	// (its config.json read, its hints printed), not filepath.Clean's.
	*f.out, *f.resume = outpath.Resolve(*f.out), outpath.Resolve(*f.resume)
	if *f.resume != "" {
		if *f.out != "" && filepath.Clean(*f.out) != filepath.Clean(*f.resume) {
			return train.Config{}, "", usagef("--resume continues the run in its own directory: drop --out")
		}
		cfg, err := train.LoadConfig(*f.resume)
		if err != nil {
			return cfg, "", fmt.Errorf("--resume: %w", err)
		}
		if len(pos) > 1 {
			return cfg, "", usagef("want at most the model file, got %d arguments", len(pos))
		}
		if len(pos) == 1 {
			if abs, err := filepath.Abs(pos[0]); err != nil || abs != cfg.Model {
				return cfg, "", usagef("the run trains %s, not %s", cfg.Model, pos[0])
			}
		}
		return cfg, *f.resume, nil
	}
	switch {
	case len(pos) != 1:
		return train.Config{}, "", usagef("want exactly one model file, got %d arguments", len(pos))
	case *f.data == "":
		return train.Config{}, "", usagef("--data is required")
	case *f.task == "":
		return train.Config{}, "", usagef("--task is required (lm or classify)")
	case *f.steps < 1:
		return train.Config{}, "", usagef("--steps is required (≥ 1)")
	case *f.out == "":
		return train.Config{}, "", usagef("--out RUN is required (the run directory)")
	}
	opt, err := update.DefaultOptimizer(*f.optimizer)
	if err != nil {
		return train.Config{}, "", usagef("--optimizer: %v", err)
	}
	cfg := train.Config{Optimizer: opt, Method: *f.method, Backend: *f.backend, Threads: kernels.DefaultThreads(),
		Schedule: train.Schedule{Name: train.ScheduleConstant}}
	cfg.EvalEvery = max(1, *f.steps/10)
	cfg.CheckpointMinutes = train.DefaultCheckpointMinutes
	if cfg.Model, err = filepath.Abs(pos[0]); err != nil {
		return cfg, "", err
	}
	return cfg, *f.out, nil
}

// apply sets the flag name's value on cfg.
func (f *trainFlags) apply(name string, cfg *train.Config) error {
	absPath := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	opt := &cfg.Optimizer
	switch name {
	case "data":
		cfg.Data = absPath(*f.data)
	case "valid":
		cfg.Valid = absPath(*f.valid)
	case "task":
		cfg.Task = train.Task(*f.task)
	case "method":
		cfg.Method = *f.method
		switch {
		case *f.method == train.MethodDST && len(cfg.DST) == 0:
			cfg.DST = dst.DefaultOptions().JSON()
		case *f.method == train.MethodLoRA && len(cfg.LoRA) == 0:
			cfg.LoRA = peft.DefaultLoRAOptions().JSON()
		case *f.method == train.MethodPrompt && len(cfg.Prompt) == 0:
			cfg.Prompt = peft.DefaultPromptOptions().JSON()
		}
	case "trainable":
		cfg.Trainable = *f.trainable
	case "tokenizer":
		cfg.Tokenizer = absPath(*f.tokenizer)
	case "chat-template":
		cfg.ChatTemplate = absPath(*f.chatTemplate)
	case "optimizer":
		if opt.Name != *f.optimizer {
			o, err := update.DefaultOptimizer(*f.optimizer)
			if err != nil {
				return err
			}
			*opt = o
		}
	case "lr":
		if opt.Adafactor != nil && *f.lr == 0 {
			// SetLR(0) would leave the relative step on, unscaled: neither
			// what --lr 0 says nor Adafactor's default.
			return usagef("--lr 0 with Adafactor: an absolute step of 0 would train nothing; leave --lr out for Adafactor's relative step")
		}
		opt.SetLR(*f.lr)
	case "weight-decay":
		switch {
		case opt.AdamW != nil:
			opt.AdamW.WeightDecay = f.weightDecay.v
		case opt.SGD != nil:
			opt.SGD.WeightDecay = f.weightDecay.v
		default:
			return usagef("--weight-decay: %s has none", opt.Name)
		}
	case "momentum":
		if opt.SGD == nil {
			return usagef("--momentum is an SGD option")
		}
		opt.SGD.Momentum = *f.momentum
	case "beta1":
		switch {
		case opt.AdamW != nil:
			opt.AdamW.Beta1 = f.beta1.v
		case opt.Adafactor != nil:
			opt.Adafactor.Beta1 = f.beta1.v
		default:
			return usagef("--beta1: SGD has none (see --momentum)")
		}
	case "beta2":
		if opt.AdamW == nil {
			return usagef("--beta2 is an AdamW option (Adafactor's decay follows t^-0.8)")
		}
		opt.AdamW.Beta2 = f.beta2.v
	case "schedule":
		cfg.Schedule.Name = *f.schedule
	case "warmup":
		cfg.Schedule.Warmup = *f.warmup
	case "steps":
		cfg.Steps = *f.steps
	case "batch":
		cfg.Batch = *f.batch
	case "grad-accum":
		if *f.gradAccum < 1 || *f.gradAccum > train.MaxGradAccum {
			return usagef("--grad-accum %d, want 1 to %d", *f.gradAccum, train.MaxGradAccum)
		}
		cfg.GradAccum = *f.gradAccum
		if cfg.GradAccum == 1 {
			cfg.GradAccum = 0 // as config.json records the default
		}
	case "max-grad-norm":
		cfg.MaxGradNorm = *f.maxGradNorm
	case "keep-best":
		cfg.KeepBest = *f.keepBest
	case "patience":
		cfg.Patience = *f.patience
	case "max-len":
		cfg.MaxLen = *f.maxLen
	case "pad-id":
		cfg.PadID = *f.padID
	case "seed":
		cfg.Seed = *f.seed
	case "backend":
		if !slices.Contains(accel.Names(), *f.backend) {
			return usagef("unknown backend %q (have %s)", *f.backend, strings.Join(accel.Names(), ", "))
		}
		cfg.Backend = *f.backend
	case "threads":
		cfg.Threads = *f.threads
	case "eval-every":
		cfg.EvalEvery = *f.evalEvery
	case "metric":
		cfg.Metric = *f.metric
		if cfg.Metric == train.MetricLoss {
			cfg.Metric = ""
		}
	case "checkpoint-every":
		cfg.CheckpointEvery = *f.ckptEvery
	case "checkpoint-minutes":
		cfg.CheckpointMinutes = *f.ckptMinutes
	case "precision":
		p, err := accel.ParsePrecision(*f.precision)
		if err != nil {
			return usagef("--precision: %v", err)
		}
		cfg.Precision = string(p)
		if p == accel.PrecisionFP32 {
			cfg.Precision = "" // as config.json records the default
		}
	default:
		switch {
		case slices.Contains(loraFlags, name):
			return f.applyLoRA(name, cfg)
		case slices.Contains(promptFlags, name):
			return f.applyPrompt(name, cfg)
		}
		return f.applyDST(name, cfg)
	}
	return nil
}

// applyLoRA sets a --method lora option on cfg.
func (f *trainFlags) applyLoRA(name string, cfg *train.Config) error {
	if len(cfg.LoRA) == 0 {
		return usagef("LoRA options are for --method lora; the run is --method %s", cfg.Method)
	}
	o := peft.DefaultLoRAOptions()
	if err := json.Unmarshal(cfg.LoRA, &o); err != nil {
		return fmt.Errorf("the run's LoRA options: %w", err)
	}
	switch name {
	case "rank":
		o.Rank = *f.rank
	case "alpha":
		o.Alpha = *f.alpha
	case "lora-dropout":
		o.Dropout = *f.loraDropout
	case "targets":
		o.Targets = nil
		for _, k := range strings.Split(*f.targets, ",") {
			if k = strings.TrimSpace(k); k != "" {
				o.Targets = append(o.Targets, k)
			}
		}
		if len(o.Targets) == 0 {
			return usagef("--targets names no module kind")
		}
	default:
		panic("dstune: no flag " + name)
	}
	cfg.LoRA = o.JSON()
	return nil
}

// applyPrompt sets a --method prompt option on cfg.
func (f *trainFlags) applyPrompt(name string, cfg *train.Config) error {
	if len(cfg.Prompt) == 0 {
		return usagef("prompt tuning's options are for --method prompt; the run is --method %s", cfg.Method)
	}
	o := peft.DefaultPromptOptions()
	if err := json.Unmarshal(cfg.Prompt, &o); err != nil {
		return fmt.Errorf("the run's prompt options: %w", err)
	}
	switch name {
	case "prompt-len":
		o.Length = *f.promptLen
	case "prompt-at":
		o.At = *f.promptAt
	case "prompt-init":
		o.Init = *f.promptInit
	default:
		panic("dstune: no flag " + name)
	}
	cfg.Prompt = o.JSON()
	return nil
}

// applyDST sets a --method dst option on cfg.
func (f *trainFlags) applyDST(name string, cfg *train.Config) error {
	if len(cfg.DST) == 0 {
		return usagef("DST options are for --method dst; the run is --method %s", cfg.Method)
	}
	o := dst.DefaultOptions()
	if err := json.Unmarshal(cfg.DST, &o); err != nil {
		return fmt.Errorf("the run's DST options: %w", err)
	}
	switch name {
	case "eps":
		if *f.eps == 0 {
			// The method takes it (an edge its tests run); a run would
			// train nothing and write an empty delta.
			return usagef("--eps 0 keeps no entry, so the run would train nothing: want a fraction in (0, 1]")
		}
		o.Eps = *f.eps
	case "distance":
		o.Distance = *f.distance
	case "silo":
		o.Silo = *f.silo
	case "normalize":
		o.Normalize = *f.normalize
		if o.Normalize == "none" {
			o.Normalize = dst.NormalizeNone
		}
	case "threshold":
		o.Threshold = *f.threshold
	case "churn":
		o.Churn = *f.churn
	case "refine-steps":
		o.RefineSteps = *f.refineSteps
	case "refine-factor":
		o.Factor = *f.refineFactor
	case "paper-alg2":
		o.PaperAlg2 = *f.paperAlg2
	default:
		panic("dstune: no flag " + name)
	}
	cfg.DST = o.JSON()
	return nil
}

// unusedRefineNote says when --refine-steps or --refine-factor, given,
// change nothing: they drive the iterative threshold and the printed
// Algorithm 2 of --paper-alg2, and the exact threshold selects without
// them. A note rather than a refusal: a sweep's grid may cross them with
// both threshold modes.
func unusedRefineNote(cfg train.Config, set map[string]bool) string {
	if len(cfg.DST) == 0 || !set["refine-steps"] && !set["refine-factor"] {
		return ""
	}
	o, err := dst.ParseOptions(cfg.DST, cfg.Seed)
	if err != nil || o.Threshold != dst.ThresholdExact || o.PaperAlg2 {
		return ""
	}
	return "--refine-steps and --refine-factor drive --threshold iterative (and --paper-alg2); --threshold exact selects without them"
}

// runTraining runs cfg until it is done or interrupted (Ctrl-C: a
// checkpoint, exit status 130) and prints where its results are.
func runTraining(cfg train.Config, opts train.RunOptions, stdout, stderr io.Writer) error {
	ctx, stop := interruptible(stderr, "finishing the current step and writing a checkpoint", "without one")
	defer stop()
	res, err := train.Run(ctx, cfg, opts)
	if errors.Is(err, train.ErrInterrupted) {
		return &exitError{130, err.Error()}
	}
	if err != nil {
		return err
	}
	switch {
	case math.IsNaN(res.Loss) && res.StoppedEarly != "":
		fmt.Fprintf(stdout, "the run had stopped early after step %d of %d (%s): nothing to train", res.Step, cfg.Steps, res.StoppedEarly)
	case math.IsNaN(res.Loss):
		fmt.Fprintf(stdout, "the run was already complete (step %d of %d): nothing to train", res.Step, cfg.Steps)
	default:
		fmt.Fprintf(stdout, "done: step %d, training loss %.4f", res.Step, res.Loss)
	}
	if !math.IsNaN(res.ValidLoss) {
		if !math.IsNaN(res.InitialValidLoss) {
			fmt.Fprintf(stdout, ", validation loss %.4f (%.4f before training)", res.ValidLoss, res.InitialValidLoss)
		} else {
			fmt.Fprintf(stdout, ", validation loss %.4f", res.ValidLoss)
		}
	}
	if !math.IsNaN(res.ValidMetric) {
		fmt.Fprintf(stdout, ", %s %.1f %%", strings.ReplaceAll(cfg.Metric, "-", " "), 100*res.ValidMetric)
		if !math.IsNaN(res.InitialValidMetric) {
			fmt.Fprintf(stdout, " (%.1f %% before training)", 100*res.InitialValidMetric)
		}
	}
	fmt.Fprintf(stdout, "\nrun directory: %s\n", opts.Dir)
	if res.ModelFile != "" {
		fmt.Fprintf(stdout, "fine-tuned model: %s\n", res.ModelFile)
	}
	if cfg.Method == train.MethodLoRA || cfg.Method == train.MethodPrompt {
		what := "LoRA adapter"
		if cfg.Method == train.MethodPrompt {
			what = "soft prompt"
		}
		fmt.Fprintf(stdout, "%s: %s and %s, in PEFT's layout (dstune apply MODEL.onnx %s -o OUT.onnx)\n", what,
			filepath.Join(opts.Dir, peft.AdapterFile), peft.AdapterConfigFile, filepath.Join(opts.Dir, peft.AdapterFile))
	}
	if cfg.Method == train.MethodDST {
		path := filepath.Join(opts.Dir, dst.DeltaFile)
		fmt.Fprintf(stdout, "delta: %s (dstune apply MODEL.onnx DELTA -o OUT.onnx)\n", path)
		if d, err := dst.ReadDelta(path); err == nil && d.Meta.Extra["rounded_to_seed"] != "" {
			fmt.Fprintf(stdout, "half precision: the delta stores the model's dtype; %s kept entries round back to their seed value\n", d.Meta.Extra["rounded_to_seed"])
		}
	}
	if cfg.KeepBest {
		if res.BestStep > 0 {
			fmt.Fprintf(stdout, "best validation: step %d, kept in %s\n", res.BestStep, filepath.Join(opts.Dir, train.BestDir))
		} else {
			fmt.Fprintf(stdout, "best validation: none yet (no validation after a step gave a finite result)\n")
		}
	}
	return nil
}

// interruptible is a context that the first Ctrl-C (SIGTERM, SIGHUP) ends,
// saying on stderr what happens then and what a second Ctrl-C or SIGTERM,
// which ends the process at once, skips. stop releases it.
func interruptible(stderr io.Writer, then, skipped string) (ctx context.Context, stop func()) {
	ctx, stopSignals := signal.NotifyContext(context.Background(), interruptSignals...)
	finished := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			select {
			case <-finished: // stop's own cancel, not a signal
				return
			default:
			}
			holdHangups()
			quitOnNextInterrupt() // before SIGINT can be ignored again
			stopSignals()         // the next Ctrl-C or SIGTERM ends the process
			fmt.Fprintf(stderr, "\ninterrupted: %s (Ctrl-C again to quit %s)\n", then, skipped)
		case <-finished:
		}
	}()
	return ctx, func() {
		close(finished) // before stopSignals cancels ctx: no interruption to report
		stopSignals()
	}
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
