package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/train"
)

// Options say where and how a sweep runs; they are not part of its
// specification.
type Options struct {
	Dir  string // the sweep's directory (created)
	Jobs int    // runs at once (at least 1)
	// KeepDeltas keeps a copy of the delta (or adapter) of every
	// checkpoint of every run (also when the spec says keep_deltas).
	KeepDeltas bool
	// Threads is --threads of the runs whose settings do not give it.
	Threads int
	// Configure turns a run's dstune train arguments into its
	// configuration (the command-line parser of dstune train), checking
	// them; Spec.Args lists the arguments.
	Configure func(args []string) (train.Config, error)
	// Progress receives a line per run (nil: none).
	Progress io.Writer
}

// The sweep's files.
const (
	runsDir     = "runs"          // a directory per run, named after it
	ResultsFile = "results.jsonl" // one Result a line, in grid order
	ReportFile  = "results.md"    // the tables
	DeltasDir   = "deltas"        // in a run directory: step-NNNNNN/ per checkpoint, with --keep-deltas
	LogFile     = "train.log"     // in a run directory: the training's progress lines
)

// ErrInterrupted ends a sweep stopped by its context; running it again
// continues.
var ErrInterrupted = errors.New("interrupted")

// RunError is an error of one run: its configuration or its training.
type RunError struct {
	Run string
	Err error
}

func (e *RunError) Error() string { return fmt.Sprintf("run %s: %v", e.Run, e.Err) }
func (e *RunError) Unwrap() error { return e.Err }

// Outcome is what Execute did.
type Outcome struct {
	Runs    []Run
	Results []*Result // per run, in grid order
	Ran     int       // runs trained (or continued) by this call
	Files   []string  // the report's files, in the sweep's directory
}

// PlannedRun is a run ready to go: its directory, dstune train
// arguments and configuration, and how far it got before.
type PlannedRun struct {
	Run    Run
	Dir    string
	Args   []string
	Config train.Config
	// State is StateNew (also a run stopped before its first
	// checkpoint: it starts over), StateStopped (it continues from its
	// checkpoint) or StateFinished (Result holds its result).
	State  string
	Result *Result
	// ModelParams counts the model's parameters: Result.Fraction's
	// denominator.
	ModelParams int64
}

// States of a planned run.
const (
	StateNew      = "new"
	StateStopped  = "stopped"
	StateFinished = "finished"
)

// Execute runs every unfinished run of s (a finished run, one whose
// directory holds result.json, is not run again; one that was stopped
// continues from its checkpoint), then writes results.jsonl, results.md
// and the plots. Every run's configuration is checked before the first
// starts. Cancelling ctx stops the runs after their current step, with a
// checkpoint, and returns an error wrapping ErrInterrupted.
func Execute(ctx context.Context, s *Spec, opts Options) (*Outcome, error) {
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	opts.KeepDeltas = opts.KeepDeltas || s.KeepDeltas
	plan, err := Plan(s, opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, runsDir), 0o755); err != nil {
		return nil, err
	}
	out := &Outcome{Results: make([]*Result, len(plan))}
	var todo []int
	for i, p := range plan {
		out.Runs = append(out.Runs, p.Run)
		out.Results[i] = p.Result
		if p.Result == nil {
			todo = append(todo, i)
		}
	}
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "sweep %s: %d runs, %d finished before, %d to run (%d at a time) in %s\n",
			s.File, len(plan), len(plan)-len(todo), len(todo), opts.Jobs, opts.Dir)
	}
	ran, err := runAll(ctx, plan, todo, out.Results, opts)
	out.Ran = ran
	if err != nil {
		return out, err
	}
	if err := writeResults(filepath.Join(opts.Dir, ResultsFile), out.Results); err != nil {
		return out, err
	}
	out.Files = append(out.Files, ResultsFile)
	files, err := writeReport(s, opts.Dir, out.Results)
	out.Files = append(out.Files, files...)
	return out, err
}

// Plan checks the spec's files and every run's configuration, and finds
// how far each run got before; it writes nothing.
func Plan(s *Spec, opts Options) ([]PlannedRun, error) {
	if opts.Configure == nil {
		return nil, errors.New("sweep: no Configure")
	}
	inputs := [][2]string{{"model", s.Model}, {"tokenizer", s.Tokenizer}}
	for name, d := range s.Datasets {
		inputs = append(inputs, [2]string{"datasets." + name + ".data", d.Data}, [2]string{"datasets." + name + ".valid", d.Valid})
	}
	for _, in := range inputs {
		if in[1] == "" {
			continue
		}
		if _, err := os.Stat(in[1]); err != nil {
			return nil, &SpecError{s.File, in[0], err.Error()}
		}
	}
	runs, err := s.Runs()
	if err != nil {
		return nil, err
	}
	nParams, err := modelParameters(s.Model)
	if err != nil {
		return nil, &SpecError{s.File, "model", err.Error()}
	}
	plan := make([]PlannedRun, len(runs))
	for i, r := range runs {
		dir := filepath.Join(opts.Dir, runsDir, r.Name)
		args := s.Args(r, dir)
		if _, ok := r.Params.Get("threads"); !ok && opts.Threads > 0 {
			args = append(args, "--threads="+strconv.Itoa(opts.Threads))
		}
		cfg, err := opts.Configure(args)
		if err != nil {
			return nil, &RunError{r.Name, err}
		}
		res, err := loadResult(dir)
		if err != nil {
			return nil, &RunError{r.Name, err}
		}
		state := StateNew
		if res != nil {
			if diff := paramsDiff(res.Params, r.Params.Map()); diff != "" {
				return nil, &RunError{r.Name, fmt.Errorf("%s finished with other settings (%s): remove it, or give the sweep another directory", dir, diff)}
			}
			res.params = r.Params
			state = StateFinished
		} else if savedCheckpoint(dir) {
			// Refused now, not when the run's turn comes hours later.
			diff, err := train.ResumeDiff(dir, cfg)
			if err != nil {
				return nil, &RunError{r.Name, err}
			}
			if diff != "" {
				return nil, &RunError{r.Name, fmt.Errorf("%s was stopped with other settings (%s): remove it to start it over, or give the sweep another directory", dir, diff)}
			}
			state = StateStopped
		}
		plan[i] = PlannedRun{Run: r, Dir: dir, Args: args, Config: cfg, State: state, Result: res, ModelParams: nParams}
	}
	return plan, nil
}

// paramsDiff says how two runs' settings differ ("" when they agree).
func paramsDiff(was, now map[string]string) string {
	var diffs []string
	for k, v := range was {
		if w, ok := now[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s was %s, now unset", k, v))
		} else if w != v {
			diffs = append(diffs, fmt.Sprintf("%s was %s, now %s", k, v, w))
		}
	}
	for k, w := range now {
		if _, ok := was[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s was unset, now %s", k, w))
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "; ")
}

// runAll trains the runs todo names, opts.Jobs at a time, storing their
// results. The first error stops the others (after their current step,
// with a checkpoint).
func runAll(parent context.Context, plan []PlannedRun, todo []int, results []*Result, opts Options) (int, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		ran      int
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for range min(opts.Jobs, max(1, len(todo))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, err := runOne(ctx, plan[i], opts)
				mu.Lock()
				if err != nil {
					if firstErr == nil && !errors.Is(err, train.ErrInterrupted) {
						firstErr = &RunError{plan[i].Run.Name, err}
						cancel()
					}
				} else {
					ran++
					results[i] = res
					if opts.Progress != nil {
						done := 0
						for _, r := range results {
							if r != nil {
								done++
							}
						}
						fmt.Fprintf(opts.Progress, "[%d/%d] %s\n", done, len(results), res.summary())
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, i := range todo {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return ran, firstErr
	}
	if parent.Err() != nil {
		done := 0
		for _, r := range results {
			if r != nil {
				done++
			}
		}
		return ran, fmt.Errorf("%w: %d of %d runs finished; run the same command again to continue", ErrInterrupted, done, len(results))
	}
	return ran, nil
}

// summary is a run's progress line.
func (r *Result) summary() string {
	var b strings.Builder
	b.WriteString(r.Run)
	if r.Status == StatusDiverged {
		fmt.Fprintf(&b, "  diverged (%s)", r.Error)
	}
	for _, f := range []string{"token_accuracy", "exact_match", "accuracy", QualityLoss} {
		if v, ok := r.Final[f]; ok {
			fmt.Fprintf(&b, "  %s %.4f", f, v)
			if v0, ok := r.Initial[f]; ok {
				fmt.Fprintf(&b, " (%.4f before)", v0)
			}
		}
	}
	fmt.Fprintf(&b, "  %.1f s", r.WallS)
	return b.String()
}

// runOne trains one run (continuing it when it has a configuration
// already) and writes its result.json.
func runOne(ctx context.Context, p PlannedRun, opts Options) (*Result, error) {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return nil, err
	}
	resume := savedCheckpoint(p.Dir)
	cfg := p.Config
	log, err := os.OpenFile(filepath.Join(p.Dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	if resume {
		step, err := checkpointStep(p.Dir)
		if err != nil {
			fmt.Fprintf(log, "sweep: resuming the run from its checkpoint\n")
		} else {
			fmt.Fprintf(log, "sweep: resuming the run from its checkpoint at step %d\n", step)
		}
	}
	ro := train.RunOptions{Dir: p.Dir, Resume: resume, Progress: log, LogEvery: max(1, p.Config.Steps/20)}
	if opts.KeepDeltas {
		if resume && train.HasCheckpoint(p.Dir) {
			// A crash between a checkpoint and its copy: the
			// checkpoint's files are still those of its step.
			if step, err := checkpointStep(p.Dir); err == nil && (step == p.Config.Steps || (p.Config.CheckpointEvery > 0 && step%p.Config.CheckpointEvery == 0)) {
				if err := keepCheckpointFiles(p.Dir, step); err != nil {
					return nil, err
				}
			}
		}
		ro.AfterStep = func(step int64) error {
			s, err := checkpointStep(p.Dir)
			switch {
			case errors.Is(err, fs.ErrNotExist) || (err == nil && s != step):
				return nil // no checkpoint at this step
			case err != nil:
				return err
			}
			return keepCheckpointFiles(p.Dir, step)
		}
	}
	start := time.Now()
	_, err = train.Run(ctx, cfg, ro)
	wall := time.Since(start).Seconds()
	var (
		lossErr   *train.LossError
		finiteErr *train.NonFiniteError
	)
	status := StatusDone
	switch {
	case errors.As(err, &lossErr), errors.As(err, &finiteErr):
		status = StatusDiverged
	case err != nil:
		return nil, err
	}
	res, rerr := readResult(p.Dir, p.Run, p.ModelParams)
	if rerr != nil {
		return nil, rerr
	}
	res.WallS = wall
	if status == StatusDiverged {
		res.Status, res.Error, res.Final = status, err.Error(), map[string]float64{}
	}
	if err := writeJSON(filepath.Join(p.Dir, ResultFile), res); err != nil {
		return nil, err
	}
	return res, nil
}

// savedCheckpoint reports whether a run directory holds what a resume
// continues from: a configuration and a checkpoint (or what a crash
// during a checkpoint's write left of one, which the resume repairs). A
// run stopped before its first checkpoint starts over.
func savedCheckpoint(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, train.ConfigFile)); err != nil {
		return false
	}
	if train.HasCheckpoint(dir) {
		return true
	}
	_, err := os.Stat(filepath.Join(dir, "checkpoint.json"))
	return err == nil
}

// checkpointStep is the step of the run's current checkpoint.
func checkpointStep(dir string) (int64, error) {
	var info train.CheckpointInfo
	data, err := os.ReadFile(filepath.Join(dir, "checkpoint", "state.json"))
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(dir, "checkpoint", "state.json"), err)
	}
	return info.Step, nil
}

// keptFiles are the files of a run that --keep-deltas copies per
// checkpoint: DST's delta, LoRA's and prompt tuning's adapter.
var keptFiles = []string{dst.DeltaFile, peft.AdapterFile, peft.AdapterConfigFile}

// KeptStepDir is the directory of the files kept of step's checkpoint.
func KeptStepDir(runDir string, step int64) string {
	return filepath.Join(runDir, DeltasDir, fmt.Sprintf("step-%06d", step))
}

// keepCheckpointFiles copies the run's delta or adapter, as the
// checkpoint of step wrote it, to deltas/step-NNNNNN/ (atomically: a
// directory renamed into place).
func keepCheckpointFiles(dir string, step int64) error {
	final := KeptStepDir(dir, step)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	tmp := final + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	for _, name := range keptFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if err := atomicfile.Write(filepath.Join(tmp, name), data); err != nil {
			return err
		}
	}
	return os.Rename(tmp, final)
}
