package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strings"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
)

func init() {
	register(&command{
		name: "eval",
		synopsis: []string{
			"MODEL.onnx --data TEST.jsonl --task lm|classify [--delta D ...] [--force]",
			" [--metric loss|token-accuracy|exact-match|accuracy] [--tokenizer T] [--chat-template FILE] [--max-len N] [--pad-id ID]",
			" [--batch 8] [--precision fp32|bf16] [--threads N] [--json]",
		},
		summary: "measure a model, or a model with deltas, on held-out data: loss, perplexity, a metric",
		flags:   func(fs *flag.FlagSet) { new(evalFlags).define(fs) },
		run:     runEval,
	})
}

// evalFlags are dstune eval's flags.
type evalFlags struct {
	data, task, metric, tokenizer *string
	chatTemplate, precision       *string
	deltas                        inputFlags
	force, json                   *bool
	maxLen, batch, threads        *int
	padID                         *int64
}

func (f *evalFlags) define(fs *flag.FlagSet) {
	f.data = fs.String("data", "", "the held-out examples, one JSON object a line, as dstune train reads them")
	f.task = fs.String("task", "", "lm (next-token loss over \"tokens\") or classify (\"label\" from the first output)")
	fs.Var(&f.deltas, "delta", "apply this delta.safetensors (or LoRA adapter, or soft prompt) to the model first (repeat to compose several, in order)")
	f.force = fs.Bool("force", false, "apply deltas made for another base model or recording none (as PEFT's adapters), and let a later delta win where two change one entry, as apply --force does")
	f.metric = fs.String("metric", train.MetricLoss, "also report: token-accuracy or exact-match (lm), accuracy (classify); loss: the loss alone")
	f.tokenizer = fs.String("tokenizer", "", "tokenizer file (tokenizer.json or llama2.c tokenizer.bin) encoding the data's \"text\", \"prompt\" and \"completion\" fields and rendered \"messages\"")
	f.chatTemplate = fs.String("chat-template", "", "chat template rendering the data's \"messages\" rows: a Jinja file or a tokenizer_config.json (default: the tokenizer_config.json beside --tokenizer)")
	f.maxLen = fs.Int("max-len", 0, "truncate examples to this many tokens; batches are padded to it (default: the longest example)")
	f.padID = fs.Int64("pad-id", 0, "token id written at padded positions (a classifier pooling at the pad id needs its pad token here)")
	f.batch = fs.Int("batch", 8, "examples per batch")
	f.precision = fs.String("precision", string(accel.PrecisionFP32), "fp32 | bf16: matrix products with bfloat16 operands and float32 sums, as a --precision bf16 run validates")
	f.threads = fs.Int("threads", 0, "goroutines per kernel call (default: all cores)")
	f.json = fs.Bool("json", false, "print one JSON object")
}

// evalReport is what `dstune eval --json` prints.
type evalReport struct {
	Model    string   `json:"model"`
	Deltas   []string `json:"deltas"`
	Data     string   `json:"data"`
	Task     string   `json:"task"`
	Examples int      `json:"examples"`
	Targets  int      `json:"targets"`
	Batch    int      `json:"batch"`
	SeqLen   int      `json:"seq_len"`
	// Loss is null when it is not a finite number (a diverged delta).
	Loss *float64 `json:"loss"`
	// Perplexity is exp(loss), for lm.
	Perplexity    *float64 `json:"perplexity,omitempty"`
	TokenAccuracy *float64 `json:"token_accuracy,omitempty"`
	ExactMatch    *float64 `json:"exact_match,omitempty"`
	Accuracy      *float64 `json:"accuracy,omitempty"`
}

func runEval(args []string, stdout, stderr io.Writer) error {
	var f evalFlags
	pos, err := parseArgs(newFlagSet("eval", f.define), args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usagef("want exactly one model file, got %d arguments", len(pos))
	case *f.data == "":
		return usagef("--data TEST.jsonl is required")
	case *f.task == "":
		return usagef("--task is required (lm or classify)")
	}
	opts := train.EvalOptions{Task: train.Task(*f.task), Metric: *f.metric, Tokenizer: *f.tokenizer, ChatTemplate: *f.chatTemplate,
		Batch: *f.batch, MaxLen: *f.maxLen, PadID: *f.padID, Threads: *f.threads, Precision: *f.precision, Progress: stderr}
	if err := opts.Check(); err != nil {
		return usagef("%v", err)
	}
	// The data is read after the model: say now that it is missing.
	if _, err := os.Stat(*f.data); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("--data %s: %w", *f.data, err)
	}
	modelPath := pos[0]
	m, err := onnx.ReadFile(modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	model, err := ir.NewModelShared(m)
	if err != nil {
		return fmt.Errorf("%s: %w", modelPath, err)
	}
	if len(f.deltas) > 0 {
		if model, err = withDeltas(m, model, f.deltas, *f.force, stderr); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "applied %s\n", strings.Join(f.deltas, ", "))
	}

	ctx, stop := interruptible(stderr, "stopping after the current batch", "at once")
	defer stop()
	res, err := train.EvalModel(ctx, model, modelPath, *f.data, opts)
	if errors.Is(err, train.ErrInterrupted) {
		return &exitError{130, err.Error() + ": nothing measured"}
	}
	if err != nil {
		return err
	}
	rep := evalReport{Model: modelPath, Deltas: append([]string{}, f.deltas...), Data: *f.data, Task: *f.task,
		Examples: res.Examples, Targets: res.Targets, Batch: res.Batch, SeqLen: res.SeqLen, Loss: finite(res.Loss)}
	if opts.Task == train.TaskLM {
		rep.Perplexity = finite(math.Exp(res.Loss))
	}
	if !math.IsNaN(res.Metric) {
		switch opts.Metric {
		case train.MetricTokenAccuracy:
			rep.TokenAccuracy = &res.Metric
		case train.MetricExactMatch:
			rep.ExactMatch = &res.Metric
		case train.MetricAccuracy:
			rep.Accuracy = &res.Metric
		}
	}
	if *f.json {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	printEval(stdout, rep, res, opts.Metric)
	return nil
}

// finite is x, or nil (JSON's null) where x is NaN or infinite, which
// JSON cannot hold.
func finite(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

// printEval writes the report for a reader.
func printEval(w io.Writer, rep evalReport, res train.EvalResult, metric string) {
	what := "target tokens"
	if rep.Task == string(train.TaskClassify) {
		what = "labelled examples"
	}
	fmt.Fprintf(w, "%s: %d examples, %d %s (batches of %d×%d)\n", rep.Data, rep.Examples, rep.Targets, what, rep.Batch, rep.SeqLen)
	fmt.Fprintf(w, "%-15s %.6f (mean cross-entropy over the targets, nats)\n", "loss", res.Loss)
	if rep.Task == string(train.TaskLM) {
		fmt.Fprintf(w, "%-15s %.4f\n", "perplexity", math.Exp(res.Loss))
	}
	if !math.IsNaN(res.Metric) {
		fmt.Fprintf(w, "%-15s %.4f (%.1f %%)\n", strings.ReplaceAll(metric, "-", " "), res.Metric, 100*res.Metric)
	}
}
