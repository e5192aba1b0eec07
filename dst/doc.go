// Package dst holds Dynamic Subset Tuning (DST) proper: what decides which
// parameters a fine-tuning run may change, and the sparse deltas it ships.
//
// After every optimizer step DST keeps, in each silo of parameters, only
// the ε fraction whose distance from the seed parameters is largest and
// resets the rest to the seed (the paper's Algorithm 1). This package holds
//
//   - delta files (delta*.go): the [Delta] data model (per initializer, the
//     changed flat positions and their new values), its safetensors file
//     format ([WriteDelta], [ReadDelta]), the hash that ties a delta to its
//     base model ([BaseHash]), applying a delta to parameters
//     ([Delta.ApplyTo]) and composing several deltas ([Compose]);
//   - subset overlap between two deltas, the paper's eq. 9 ([SubsetOverlap]);
//   - threshold tracking (threshold.go): the paper's Algorithm 2, organised
//     so that one counting pass over Δ against all of its candidate
//     thresholds replaces its m sequential passes ([Bisection],
//     [ThresholdTracker]), and the subset-size rule k = round(ε|S|)
//     ([SubsetSize]);
//   - the method itself (method*.go, registered with train as "dst"):
//     [Method] runs Algorithm 1 after every optimizer step with an exact
//     per-silo count in both threshold modes, Appendix B's normalization,
//     the random-mask baseline and fixed subsets, and writes the run's
//     delta; [Options] / [ParseConfig] are its configuration;
//   - silos (silo.go, [MakeSilos]) and the module kind and layer of every
//     parameter, derived from the graph ([Modules], modules.go);
//   - the small text task of the experiments (experiments/tinytask).
//
// Errors about files name the file and the tensor; this package never
// panics on bad input, only on programmer errors with "dst: ..." messages.
package dst
