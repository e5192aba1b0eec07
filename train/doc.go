// Package train holds what a fine-tuning run needs around the model:
// training data, the methods (full fine-tuning here; DST registers itself
// from package dst, LoRA and prompt tuning from package peft), the
// engine that runs steps on a training backend, the training loop,
// validation metrics and checkpoints.
//
// Training data (data*.go) is JSON Lines, one example a line:
// {"tokens":[...]} for the lm task (with an optional "loss_mask":[0,1,...]
// of the same length) or {"tokens":[...],"label":k} for classify. LoadJSONL
// reads and checks a file, reporting bad lines as file:line errors;
// TrainBatches turns a Dataset into an endless stream of fixed-size,
// padded batches, shuffled per epoch from (seed, epoch) and resumable from
// a Position, and EvalBatches walks it once in file order. Batches are
// plain Go slices (int64 tokens [B, T], masks, next-token targets or
// labels), independent of the IR and of any backend.
//
// A GraphSource (ModelSource for an imported ONNX model) builds the
// training graph (ir.TrainingGraph: loss and one gradient per trainable
// parameter) and the loss graph for a batch shape. The Engine (engine.go)
// is the one training program of a run: it asks the Method for what it
// adds to the update (FullMethod: nothing; DST: its selection), builds the
// update.Program with the run's optimizer, and hands the graphs and the
// program to the backend's accel.Trainer, which lowers them (accel/cpu to
// fused kernels, accel/tpu to one StableHLO program). The engine feeds
// batches, reads each step's outcome for the method's metrics, and turns
// the trainer's state into checkpoints and back.
//
// A method that trains parameters of its own (a SourceMethod: LoRA's
// adapters, prompt tuning's soft prompt) replaces the graph source with
// one that adds them, built on the model source's forward graph
// (ForwardSource); its training graphs may read inputs the engine fills
// every step (StepInputs: dropout masks drawn from the step).
//
// Validation reports the loss and, with Config.Metric, token accuracy,
// accuracy, or the exact match of greedily decoded completions
// (metric.go), computed from the forward graph's logits.
//
// Run is the training loop behind `dstune train`: config.json,
// metrics.jsonl, validation, atomic checkpoints (checkpoint.go), resuming
// bit-identically, stopping cleanly on interruption or a non-finite loss,
// and the fine-tuned model file. Every checkpoint records the run's
// configuration (identity.go: config.json's settings but the thread
// count and the data files' hashes), so that a resume refuses another
// run's checkpoint, or a config.json edited since the run started. Methods register with RegisterMethod, so
// that a method's package depends on train and not the other way round.
package train
