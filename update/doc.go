// Package update is what a training step does to the trainable parameters
// after the backward pass, written once as a small program that every
// training backend lowers: accel/cpu to fused SIMD kernels, accel/tpu to
// StableHLO inside the compiled step.
//
// A Program is an Optimizer — SGD, AdamW or Adafactor with its
// hyper-parameters (optimizer.go; the per-step float32 scalars both
// backends use are derived in scalars.go) — and, for Dynamic Subset
// Tuning, a Selection (selection.go): after the optimizer's step Θ̂, every
// selection unit keeps the K entries whose distance Δ(Θ̂, Θ0) from the
// seed is largest (ties at the lowest unit positions, never a NaN or a
// Δ of 0) and resets the others to the seed. An iterative unit finds its threshold
// with the paper's Algorithm 2 (alg2.go) before the count is made exact;
// which threshold it then carries to the next step is part of the
// definition. Package train builds the program (the selection comes from
// the run's method: package dst makes the units, their K, the
// normalization and the random mask), and package dst reads what a step
// reports (Result) and what a trainer holds (State) into metrics,
// checkpoints and delta files.
//
// The definitions are executable: Optimizer.Reference takes a step in
// float64 from the papers' and PyTorch's formulas, and ReferenceSelect
// makes a selection in plain Go (a sort, counting every candidate), so
// that each backend is tested against the same reference — the selection
// bit for bit given the same Θ̂, the optimizers to rounding.
//
// The package depends on the standard library only: the backends, train
// and dst all import it, and it imports none of them.
package update
