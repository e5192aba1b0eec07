// Package dst holds Dynamic Subset Tuning (DST) proper: what decides which
// parameters a fine-tuning run may change, and the sparse deltas it ships.
//
// After every optimizer step DST keeps, in each silo of parameters, only
// the ε fraction whose distance from the seed parameters is largest and
// resets the rest to the seed (the paper's Algorithm 1). This package holds
//
//   - the method (method*.go, registered with train as "dst"): [Options]
//     (the run's --method dst settings, stored in config.json) and
//     [Method], which turns them and the trainable parameters into the
//     selection the training backends run after every optimizer step (an
//     update.Selection: a unit per silo with its k = [SubsetSize](ε, |S|),
//     the distance, the threshold mode, the normalization's factors, the
//     random mask), and reads what the backends report and hold into the
//     run's metrics ([StepMetrics]), its checkpoint state and its delta
//     file. How a selection is computed — the exact count, Algorithm 2,
//     the tie rule — is package update's definition, which the backends
//     lower;
//   - delta files (delta*.go): the [Delta] data model (per initializer, the
//     changed flat positions and their new values), its safetensors file
//     format ([WriteDelta], [ReadDelta]), the hash that ties a delta to its
//     base model ([BaseHash]), applying a delta to parameters
//     ([Delta.ApplyTo]) and composing several deltas ([Compose]);
//   - subset overlap between two deltas, the paper's eq. 9 ([SubsetOverlap]);
//   - silos (silo.go, [MakeSilos]) and the module kind and layer of every
//     parameter, derived from the graph ([Modules], modules.go);
//   - the small text task of the experiments (experiments/tinytask).
//
// Errors about files name the file and the tensor; this package never
// panics on bad input, only on programmer errors with "dst: ..." messages.
package dst
