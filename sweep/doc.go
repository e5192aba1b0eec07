// Package sweep runs grids of training runs and reports them: the
// engine of dstune sweep.
//
// A specification (LoadSpec, ParseSpec) names a model, a tokenizer,
// datasets, and the settings of the runs: those of "train" for every
// run, each block of "grid" adding its own, every setting a dstune train
// flag (or "dataset"). A setting with a list of values is an axis; every
// combination of a block's axes is a run (Spec.Runs), named by its method
// and the settings that vary among the runs of some method. Every dataset
// a run uses needs validation data: the report's qualities are measured
// on it. Mistakes are SpecErrors naming the file, the place (a JSON path
// such as grid[1].rank, or a plot as plots[0] (budget.png)) and what is
// wrong; the report's tables and plots are laid out on the grid when it
// is parsed, so that a where matching no run, runs sharing a cell or a
// bar, a DST plot of other methods' runs are found before any trains.
//
// Execute checks every run's configuration (Options.Configure, dstune
// train's own parser; a setting it refuses is a SpecError at the place
// the setting comes from), that of every finished or stopped run against
// the one it recorded, the model, data and tokenizer files those runs
// read against the sha256 their config.json records (each file hashed
// once), and every data file of the runs still to train (read as dstune
// train reads it), before the first starts, then trains the runs that
// have not finished, each in DIR/runs/NAME: a run whose directory holds
// result.json is done; one with a checkpoint continues from it
// (train.Run resumes bit-identically); one stopped before its first
// checkpoint starts over. A run's arguments (PlannedRun.Args) are every
// flag it runs with: a checkpoint every tenth of its steps, none by the
// clock, unless its settings say otherwise. A run whose name changed
// since it ran (values added to an axis that did not vary, or removed
// from one so that it no longer does) is found in the directory of its
// earlier name by its configuration, and keeps that name. A run whose loss or parameters turn
// non-finite is reported as diverged, without a quality; its wall time
// is the sum of the sessions that trained it (SessionsFile). With
// KeepDeltas the delta or adapter of every scheduled checkpoint is
// copied to RUN/deltas/step-NNNNNN/; an overlap-steps plot needs them,
// and a sweep without KeepDeltas that has one is refused.
//
// The report: results.jsonl (a Result a run), results.md (the best
// learning rate of every setting, mean ± sd over seeds; pivot tables;
// every learning rate) and the plots:
//
//   - budget: quality at the best learning rate against the fraction of
//     the model's parameters the run trains, a line per method;
//   - lr: quality by learning rate as a heat map, each row's best framed;
//   - bars: quality as grouped bars with sd error bars;
//   - modules: the share of DST's final subset in each module kind;
//   - overlap-steps: the subset overlap |A∩B|/|A| between the kept
//     checkpoints of a run;
//   - overlap-runs: the mean subset overlap between groups of runs, the
//     diagonal comparing runs of one setting with other seeds.
//
// The best learning rate of a setting (its settings but the learning
// rate and the seed) is the one with the best mean quality over seeds
// among those none of whose runs diverged.
package sweep
