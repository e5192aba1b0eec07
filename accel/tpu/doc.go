// Package tpu is the PJRT backend: it lowers an ir.Graph — a model, or a
// training graph with its loss and gradients — to a StableHLO module, and
// runs it on a PJRT plugin (TPU, GPU or CPU), registered as "pjrt" with
// package accel (inference) and with package train (dstune train
// --backend pjrt).
//
// The package is split in two. The lowering (emit.go, lower*.go,
// program.go, step*.go), the Trainer (trainer.go), the training engine
// (engine*.go) and plugin discovery (discover.go) are pure Go and build
// everywhere, with or without cgo. Loading a plugin and running programs
// (runtime_cgo.go) needs cgo; without it Open returns ErrNeedsCgo, and the
// rest of dstune does not depend on this package's cgo half. The Trainer
// reaches the device through a small interface, so the tests run it — and
// the engine on top of it — on a StableHLO evaluator written for them.
//
// A training step is one compiled program per (model, batch shape): the
// forward and backward graph, the optimizer (AdamW, Adafactor or SGD) and,
// for Dynamic Subset Tuning, the whole of package dst's method — scores,
// Algorithm 2 over its candidate grid with the CPU method's choice of
// threshold, an exact selection (one stable sort per silo) wherever no
// candidate keeps exactly k entries, the exact-count tie rule, the masked
// update and the per-silo metrics. Parameters, optimizer state, seeds,
// subset masks and thresholds live in device buffers between steps: the
// program's arguments for them are aliased to its results (donated), so
// only the batch and a few step scalars go in and the loss and metrics
// come out.
//
// Engine adapts a Trainer to train.Engine: batches in, losses and DST
// metrics out, validation on the resident parameters, and checkpoints,
// resumption and delta files in the CPU engine's formats — package dst's
// own method, prepared on the host, makes the silos and the random mask
// and writes the checkpoint state and the delta.
package tpu
