package train

import (
	"context"
	"fmt"
	"io"
	"math"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/tokenizer"
	"github.com/dstune/dstune/update"
)

// EvalOptions say how EvalModel reads, batches and scores held-out data:
// as a training run with the same settings reads and scores its
// validation data.
type EvalOptions struct {
	Task Task
	// Metric is reported besides the loss (MetricTokenAccuracy,
	// MetricExactMatch, MetricAccuracy; "" or MetricLoss: the loss alone).
	Metric string
	// Tokenizer encodes the data's text fields ("" when the data holds
	// token ids); the tokenizer_config.json beside it renders "messages"
	// rows, as in a run, unless ChatTemplate names a template (a Jinja
	// file or a tokenizer_config.json).
	Tokenizer    string
	ChatTemplate string
	Batch        int   // rows per batch, ≥ 1
	MaxLen       int   // truncate examples to this; 0: the longest example (or the model's fixed length)
	PadID        int64 // token id at padded positions
	Threads      int   // goroutines per kernel call (0: the backend's default)
	Backend      string
	// Precision is the arithmetic of the matrix products, as Config's
	// (a --precision bf16 run validates with bfloat16 products).
	Precision string
	// Progress receives the notes and warnings a run prints about its data
	// (nil: discarded).
	Progress io.Writer
}

// Check reports what is wrong with the options, in the words of the flags.
func (o EvalOptions) Check() error {
	switch {
	case o.Task != TaskLM && o.Task != TaskClassify:
		return fmt.Errorf("unknown --task %q (want %s or %s)", o.Task, TaskLM, TaskClassify)
	case o.Batch < 1:
		return fmt.Errorf("--batch %d, want ≥ 1", o.Batch)
	case o.MaxLen < 0:
		return fmt.Errorf("--max-len %d, want ≥ 0 (0: the longest example)", o.MaxLen)
	case o.PadID < 0:
		return fmt.Errorf("--pad-id %d, want a token id ≥ 0", o.PadID)
	case o.Threads < 0:
		return fmt.Errorf("--threads %d, want ≥ 0 (0: all cores)", o.Threads)
	}
	if _, err := accel.ParsePrecision(o.Precision); err != nil {
		return fmt.Errorf("--precision: %w", err)
	}
	return checkMetric(o.Metric, o.Task)
}

// EvalResult is what one pass over held-out data measured.
type EvalResult struct {
	// Loss is the mean cross-entropy over the targets that count (as a
	// run's validation loss: each batch's mean loss weighted by its
	// targets).
	Loss float64
	// Metric is EvalOptions.Metric's value, NaN when it is the loss alone.
	Metric float64
	// Examples is the number of examples read; Targets the number that
	// count in the loss: target tokens (lm) or labelled examples
	// (classify).
	Examples, Targets int
	// Batch and SeqLen are the batch shape (B×T) the model ran.
	Batch, SeqLen int
}

// EvalModel measures model (an imported ONNX model, deltas already in its
// parameters) on the JSONL file data: the loss and metric that a run
// training this model with data as its --valid file reports before its
// first step, given the same batch size and sequence length. name is the
// model's file, for messages. ctx ends the pass between batches, with
// ErrInterrupted.
func EvalModel(ctx context.Context, model *ir.Model, name, data string, opts EvalOptions) (EvalResult, error) {
	res := EvalResult{Loss: math.NaN(), Metric: math.NaN()}
	if err := opts.Check(); err != nil {
		return res, err
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	model = model.Float32Compute()
	src, err := NewModelSource(model, ModelSourceOptions{Task: opts.Task})
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	ds, batchOpts, err := loadEvalData(src, name, data, opts, progress)
	if err != nil {
		return res, err
	}
	backendName := opts.Backend
	if backendName == "" {
		backendName = "cpu"
	}
	backend, err := accel.OpenWith(backendName, nil)
	if err != nil {
		return res, err
	}
	// Plain SGD keeps no state: the engine holds the parameters alone.
	sgd, err := update.DefaultOptimizer(update.OptimizerSGD)
	if err != nil {
		return res, err
	}
	precision, _ := accel.ParsePrecision(opts.Precision) // checked by opts.Check
	engine, err := NewEngineWith(src, backend, update.Program{Optimizer: sgd}, FullMethod{}, accel.Options{Threads: opts.Threads, Precision: precision})
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	defer engine.Close()
	return Evaluate(ctx, engine, ds, batchOpts, opts.Metric)
}

// loadEvalData reads data as a run reads its validation file (joined text
// encoding, the tokenizer's fit checked, the chat template beside the
// tokenizer) and fixes the batch shape as the run does.
func loadEvalData(src *ModelSource, name, data string, opts EvalOptions, progress io.Writer) (*Dataset, BatchOptions, error) {
	dataOpts := DataOptions{Task: opts.Task, VocabSize: src.VocabSize, NumClasses: src.NumClasses, JoinText: true, MaxLen: opts.MaxLen}
	if src.SeqLen > 0 && (opts.MaxLen == 0 || opts.MaxLen > src.SeqLen) {
		dataOpts.MaxLen = src.SeqLen // checked against --max-len below
	}
	if opts.Tokenizer != "" {
		tok, err := tokenizer.Load(opts.Tokenizer)
		if err != nil {
			return nil, BatchOptions{}, err
		}
		warning, err := tok.FitsModel(int(src.VocabSize))
		if err != nil {
			return nil, BatchOptions{}, fmt.Errorf("%s: %w", opts.Tokenizer, err)
		}
		if warning != "" {
			fmt.Fprintf(progress, "warning: %s: %s\n", opts.Tokenizer, warning)
		}
		dataOpts.Tokenizer = tok
	}
	var err error
	if dataOpts.Chat, dataOpts.ChatMissing, err = loadChatTemplate(&Config{Tokenizer: opts.Tokenizer, ChatTemplate: opts.ChatTemplate}); err != nil {
		return nil, BatchOptions{}, err
	}
	ds, err := LoadJSONL(data, dataOpts)
	if err != nil {
		return nil, BatchOptions{}, err
	}
	if note := ignoredFieldsNote(ds); note != "" {
		fmt.Fprintf(progress, "note: %s\n", note)
	}
	if ds.Len() == 0 {
		return nil, BatchOptions{}, fmt.Errorf("%s: no examples", data)
	}
	if err := CheckValidationData(ds, opts.Metric); err != nil {
		return nil, BatchOptions{}, fmt.Errorf("%s: %w", data, err)
	}
	T := opts.MaxLen
	if T == 0 {
		T = longestExample(ds)
		if T == 1 && opts.Task == TaskLM {
			return nil, BatchOptions{}, fmt.Errorf("%s: every example has one token: an lm example needs two, one to predict from and one to predict", data)
		}
	}
	if src.SeqLen > 0 {
		if opts.MaxLen > 0 && opts.MaxLen != src.SeqLen {
			return nil, BatchOptions{}, fmt.Errorf("%s takes sequences of exactly %d tokens, --max-len is %d", name, src.SeqLen, opts.MaxLen)
		}
		T = src.SeqLen
	}
	if src.Batch > 0 && opts.Batch != src.Batch {
		return nil, BatchOptions{}, fmt.Errorf("%s takes batches of exactly %d sequences (its inputs fix the batch size), --batch is %d: give --batch %d", name, src.Batch, opts.Batch, src.Batch)
	}
	if src.VocabSize > 0 && opts.PadID >= src.VocabSize {
		return nil, BatchOptions{}, fmt.Errorf("--pad-id %d is outside the model's vocabulary [0, %d)", opts.PadID, src.VocabSize)
	}
	if w := src.PadWarning(opts.PadID); w != "" {
		fmt.Fprintf(progress, "warning: %s: %s\n", name, w)
	}
	return ds, BatchOptions{BatchSize: opts.Batch, MaxLen: T, FixedLen: true, PadID: opts.PadID}, nil
}

// Evaluate runs e's model once over ds in file order, batched by opts,
// and returns the loss over the targets that count (each batch's mean
// loss weighted by its number of targets, summed in float64) and metric's
// value: a run's validation pass. ctx ends it between batches, with
// ErrInterrupted.
func Evaluate(ctx context.Context, e *Engine, ds *Dataset, opts BatchOptions, metric string) (EvalResult, error) {
	res := EvalResult{Loss: math.NaN(), Metric: math.NaN(), Examples: ds.Len(), Batch: opts.BatchSize, SeqLen: opts.MaxLen}
	eb, err := NewEvalBatches(ds, opts)
	if err != nil {
		return res, err
	}
	exact := metric == MetricExactMatch
	counted := exact || metric == MetricTokenAccuracy || metric == MetricAccuracy
	var b Batch
	var sum float64
	var count, correct, total int
	for eb.Next(&b) {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("%w after %d of %d examples", ErrInterrupted, b.Examples[0], ds.Len())
		}
		// A batch without targets has nothing to add, to the exact match
		// either: the completion tokens that fit are targets.
		if b.NumTargets == 0 {
			continue
		}
		var loss float64
		if counted {
			// The loss and the logits from one pass of the model.
			var logits *ir.Tensor
			if loss, logits, err = e.EvalScored(&b); err != nil {
				return res, evalBatchError(ds, &b, modelFailed(err))
			}
			c, n := 0, 0
			if exact {
				c, err = countExact(ds, &b, logits)
			} else {
				c, n, err = countCorrect(&b, logits)
			}
			if err != nil {
				return res, evalBatchError(ds, &b, err)
			}
			correct, total = correct+c, total+n
		} else if loss, err = e.EvalLoss(&b); err != nil {
			return res, evalBatchError(ds, &b, modelFailed(err))
		}
		sum += loss * float64(b.NumTargets)
		count += b.NumTargets
	}
	if count == 0 {
		return res, fmt.Errorf("%s: no example has a target that counts in the loss (every example has one token, or its loss_mask is 0 after the first token, or --max-len cuts the marked ones off)", ds.Name)
	}
	res.Loss, res.Targets = sum/float64(count), count
	if exact {
		total = completionRows(ds)
		if total == 0 {
			return res, fmt.Errorf("%s: --metric %s needs prompt/completion rows", ds.Name, MetricExactMatch)
		}
	}
	if counted {
		res.Metric = float64(correct) / float64(total)
	}
	return res, nil
}

// modelFailed is the error of the model failing on a batch: most often
// one longer than the model's positions (a position table read past its
// end), which the error alone does not say.
func modelFailed(err error) error {
	return fmt.Errorf("the model fails on it (are the sequences, with any soft prompt, longer than its positions? --max-len truncates examples): %w", err)
}

// evalBatchError names the examples of the batch the model failed on.
func evalBatchError(ds *Dataset, b *Batch, err error) error {
	return fmt.Errorf("%s: the batch of examples %d to %d (%d×%d tokens): %w", ds.Name, b.Examples[0]+1, b.Examples[b.Rows-1]+1, b.B, b.T, err)
}
