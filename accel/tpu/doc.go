// Package tpu is the PJRT backend: it lowers an ir.Graph — a model, or a
// training graph with its loss and gradients — to a StableHLO module, and
// runs it on a PJRT plugin (TPU, GPU or CPU), registered as "pjrt".
//
// The package is split in two. The lowering (emit.go, lower.go,
// program.go, step.go) and plugin discovery (discover.go) are pure Go and
// build everywhere, with or without cgo: they turn graphs into StableHLO
// text and say where a plugin would be found. Loading a plugin and running
// programs (runtime_cgo.go) needs cgo; without it Open returns an error
// saying so, and the rest of dstune does not depend on this package's cgo
// half.
//
// A training step is one compiled program per (model, batch shape): the
// forward and backward graph, the optimizer (AdamW, Adafactor or SGD) and,
// for Dynamic Subset Tuning, the scores, the threshold (Algorithm 2 over
// the candidate grid, or an exact radix selection, with the exact-count tie
// rule of package kernels), the masked update and the per-silo metrics.
// Parameters, optimizer state, seeds, subset masks and thresholds live in
// device buffers between steps: the program's arguments for them are
// aliased to its results (donated), so only the batch and a few step
// scalars go in and the loss and metrics come out.
package tpu
