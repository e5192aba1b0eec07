// Package tpu is the PJRT backend: it lowers an ir.Graph — a model, or a
// training graph with its loss and gradients followed by the update
// program (package update) — to a StableHLO module, and runs it on a PJRT
// plugin (TPU, GPU or CPU). It registers as "pjrt" with package accel,
// for inference and training (dstune train --backend pjrt runs train's
// engine on its Trainer).
//
// The package is split in two. The lowering (emit.go, lower*.go,
// program.go, step*.go), the Trainer (trainer.go) and plugin discovery
// (discover.go) are pure Go and build everywhere, with or without cgo.
// Loading a plugin and running programs (runtime_cgo.go) needs cgo;
// without it Open returns ErrNeedsCgo, and the rest of dstune does not
// depend on this package's cgo half. The Trainer reaches the device
// through a small interface, so the tests run it — and train's engine on
// top of it — on a StableHLO evaluator written for them.
//
// A training step is one compiled program per (model, batch shape): the
// forward and backward graph and the update program lowered to StableHLO
// (step.go: the gradients' global L2 norm in float32 and, with
// update.Program.MaxGradNorm, their clipping by update.ClipFactor; the
// optimizer's element-wise formulas with package update's per-step
// scalars; step_dst.go: DST's selection — scores, Algorithm 2 over its
// candidate grid with update.GridRun's choice of threshold, an exact
// selection by one stable sort per unit wherever no counted candidate
// keeps exactly k entries, the exact-count tie rule, the masked update
// and the per-unit outcome). Parameters, optimizer state, seeds, subset
// masks and thresholds live in device buffers between steps: the
// program's arguments for them are aliased to its results (donated), so
// only the batch and a few step scalars go in and the loss, the
// gradients' norm and the DST outcome come out.
//
// Gradient accumulation (accumulate.go) splits the step in two: an
// accumulate program per (model, batch shape) — the forward and backward
// graph, then sum = (first ? 0 : sum) + weight·gradient into one
// device-resident, donated sum per trainable parameter, made at the first
// Accumulate — and one apply program per trainer: the same update
// program (the same lowering), reading the sums as its gradients.
package tpu
