// Package train holds what a fine-tuning run needs around the model:
// training data, losses, optimizers, the methods (full, dst, lora, prompt),
// the training loop, metrics and checkpoints.
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
package train
