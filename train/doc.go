// Package train holds what a fine-tuning run needs around the model:
// training data, optimizers, the methods (full now; dst, lora and prompt
// to come), the engines that run steps, the training loop, metrics and
// checkpoints.
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
// Optimizers (optim.go) are plain data: an OptimizerConfig names SGD,
// AdamW or Adafactor and holds its hyper-parameters, and each parameter's
// state is a list of named float32 slots whose layout the config types
// document, so that a device engine can implement the same step. The CPU
// implementation calls package kernels' element-wise steps; StepCount
// fuses a step with DST's counting pass.
//
// A GraphSource (ModelSource for an imported ONNX model) builds the
// training graph (ir.TrainingGraph: loss and one gradient per trainable
// parameter) and the loss graph for a batch shape. An Engine runs steps on
// one backend: HostEngine compiles the graphs with an accel backend whose
// parameters live in host memory (accel/cpu), reads the loss and the
// gradients from the executable without copying, and lets the Method
// update the parameters in place; other backends register their own with
// RegisterEngine. A Method turns gradients into updates (FullMethod: the
// optimizer's step on every parameter).
//
// Run is the training loop behind `dstune train`: config.json,
// metrics.jsonl, validation, atomic checkpoints (checkpoint.go), resuming
// bit-identically, stopping cleanly on interruption or a non-finite loss,
// and the fine-tuned model file.
package train
