package sweep

import (
	"bytes"
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
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/tokenizer"
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
	// SpecName is the name the spec gives the run now when the run was
	// found under the name it had when it ran (Run.Name, its
	// directory's): the settings that vary across the sweep changed.
	SpecName string
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
// and the plots. Every run's configuration, and the data of every run to
// train, is checked before the first starts (Plan). Cancelling ctx stops
// the runs after their current step, with a checkpoint, and returns an
// error wrapping ErrInterrupted.
func Execute(ctx context.Context, s *Spec, opts Options) (*Outcome, error) {
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	opts.KeepDeltas = opts.KeepDeltas || s.KeepDeltas
	opts.Dir = outpath.Resolve(opts.Dir) // joined to: "link/.." as the kernel reads it
	plan, err := Plan(s, opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, runsDir), 0o777); err != nil {
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
		fmt.Fprintf(opts.Progress, "sweep %s: %s, %d finished before, %d to run (%d at a time) in %s\n",
			s.File, count(len(plan), "run", "runs"), len(plan)-len(todo), len(todo), opts.Jobs, opts.Dir)
		for _, p := range plan {
			if p.SpecName != "" {
				fmt.Fprintf(opts.Progress, "run %s (as the spec names it now) is %s, the name it %s under\n", p.SpecName, p.Run.Name, map[string]string{StateFinished: "finished", StateStopped: "was stopped"}[p.State])
			}
		}
	}
	ran, err := runAll(ctx, plan, todo, out.Results, opts)
	out.Ran = ran
	if err != nil {
		// What finished is reported (as partial, even when nothing
		// did): a failing run or an interruption need not leave hours
		// of runs without a report. A plot of runs none of which
		// finished is not drawn.
		if werr := writeResults(filepath.Join(opts.Dir, ResultsFile), out.Results); werr == nil {
			if files, _ := writeReport(s, opts.Dir, out.Results); slices.Contains(files, ReportFile) {
				err = fmt.Errorf("%w (%s and %s report the runs that finished)", err, ResultsFile, ReportFile)
			}
		}
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

// Plan checks the spec's files, every run's configuration and the data
// files of the runs still to train, and finds how far each run got
// before; it writes nothing.
func Plan(s *Spec, opts Options) ([]PlannedRun, error) {
	if opts.Configure == nil {
		return nil, errors.New("sweep: no Configure")
	}
	if err := s.checkKeptDeltas(opts.KeepDeltas || s.KeepDeltas); err != nil {
		return nil, err
	}
	opts.Dir = outpath.Resolve(opts.Dir)
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
	named := map[string]bool{} // the runs' names: directories that are theirs
	for _, r := range runs {
		named[r.Name] = true
	}
	earlier := &earlierRuns{root: filepath.Join(opts.Dir, runsDir), named: named}
	hashes := fileHashes{}
	for i, r := range runs {
		dir := filepath.Join(opts.Dir, runsDir, r.Name)
		// argsOf are the run's dstune train arguments with settings p.
		argsOf := func(p Params) []string {
			args := s.Args(Run{Name: r.Name, Params: p}, dir)
			if _, ok := p.Get("threads"); !ok && opts.Threads > 0 {
				args = append(args, "--threads="+strconv.Itoa(opts.Threads))
			}
			return args
		}
		args := argsOf(r.Params)
		cfg, err := opts.Configure(args)
		if err != nil {
			return nil, s.configError(r, err, argsOf, opts.Configure)
		}
		if every, ok := checkpointFlags(r.Params, cfg); ok {
			args = append(args, every...)
			if cfg, err = opts.Configure(args); err != nil {
				return nil, &RunError{r.Name, err}
			}
		}
		specName := ""
		if !holdsRun(dir) {
			// A run the spec names otherwise now (an axis that no
			// longer varies, or varies now) is found in the
			// directory of its earlier name, and keeps it.
			found, err := earlier.find(r, cfg)
			if err != nil {
				return nil, &RunError{r.Name, err}
			}
			if found != "" {
				specName, r.Name = r.Name, found
				dir = filepath.Join(opts.Dir, runsDir, found)
				args = argsOf(r.Params)
				if every, ok := checkpointFlags(r.Params, cfg); ok {
					args = append(args, every...)
				}
			}
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
			if stored, err := train.LoadConfig(dir); err == nil && stored.Steps != cfg.Steps {
				// dstune train --resume --steps went on with it.
				return nil, &RunError{r.Name, fmt.Errorf("%s finished, and was then trained on to %d steps (config.json), not the %d the spec asks for: its %s no longer describes it; remove it, or give the sweep another directory", dir, stored.Steps, cfg.Steps, ResultFile)}
			}
			res.params = r.Params
			state = StateFinished
		} else if savedCheckpoint(dir) {
			// Refused now, not when the run's turn comes hours later.
			diff, err := stoppedRunDiff(dir, cfg)
			if err != nil {
				return nil, &RunError{r.Name, err}
			}
			if diff != "" {
				if trainedToTheEnd(dir) {
					// dstune train run by hand into the sweep's
					// directory: complete, but not the spec's run.
					return nil, &RunError{r.Name, fmt.Errorf("%s holds a run that trained to its last step with other settings (%s), not by this sweep (it has no %s): remove it to train the run as the spec says, or give the sweep another directory", dir, diff, ResultFile)}
				}
				return nil, &RunError{r.Name, fmt.Errorf("%s was stopped with other settings (%s): remove it to start it over, or give the sweep another directory", dir, diff)}
			}
			state = StateStopped
		}
		if state != StateNew {
			if err := checkRecordedFiles(dir, state, cfg, hashes); err != nil {
				return nil, &RunError{r.Name, err}
			}
		}
		plan[i] = PlannedRun{Run: r, Dir: dir, Args: args, Config: cfg, State: state, Result: res, ModelParams: nParams, SpecName: specName}
	}
	if err := s.checkData(plan); err != nil {
		return nil, err
	}
	return plan, nil
}

// checkpointFlags are the flags that give a run whose settings set
// neither --checkpoint-every nor --checkpoint-minutes a checkpoint every
// tenth of its steps and none by the clock (ok false when its settings
// set one): the deltas kept (--keep-deltas) and the overlaps across
// training need the same steps in every run, whatever the machine's
// speed. They are the run's flags, listed with the others, so that its
// command line is the one it runs with.
func checkpointFlags(p Params, cfg train.Config) ([]string, bool) {
	_, every := p.Get("checkpoint-every")
	_, minutes := p.Get("checkpoint-minutes")
	if every || minutes {
		return nil, false
	}
	return []string{"--checkpoint-every=" + strconv.FormatInt(max(1, cfg.Steps/10), 10), "--checkpoint-minutes=0"}, true
}

// stoppedRunDiff is train.ResumeDiff for a run of the sweep, which trains
// the spec's steps: a resume that changes them (as dstune train --resume
// --steps may) is a run of other settings here.
func stoppedRunDiff(dir string, cfg train.Config) (string, error) {
	stored, err := train.LoadConfig(dir)
	if err != nil {
		return "", fmt.Errorf("resume: %w", err)
	}
	return train.RecordedDiff(stored, cfg), nil
}

// trainedToTheEnd reports whether a run directory's checkpoint is of
// the last step its config.json asks for.
func trainedToTheEnd(dir string) bool {
	stored, err := train.LoadConfig(dir)
	if err != nil {
		return false
	}
	step, err := checkpointStep(dir)
	return err == nil && step >= stored.Steps
}

// checkKeptDeltas refuses an overlap-steps plot of a sweep that keeps no
// deltas (keep: --keep-deltas or the spec's keep_deltas): it could only
// fail once every run has trained, and the runs, finished, would not be
// trained again to keep them.
func (s *Spec) checkKeptDeltas(keep bool) error {
	if keep {
		return nil
	}
	for i, p := range s.Plots {
		if p.Kind == PlotOverlapSteps {
			return &SpecError{s.File, plotPlace(i, p), `an overlap-steps plot draws the deltas kept of each run's checkpoints: set "keep_deltas": true in the spec, or run the sweep with --keep-deltas`}
		}
	}
	return nil
}

// configError turns a run's configuration error into one that names
// where in the spec the setting to blame comes from (grid[1].eps,
// train.batch): dstune train's messages name a flag at best, and a
// sweep's user must find the setting among the blocks. The setting to
// blame is the one without which the run's configuration is accepted;
// where several are (--beta2 with --optimizer sgd), the one the message
// names as a flag. An error that no setting alone explains (two mistakes
// in one run) stays the run's.
func (s *Spec) configError(r Run, err error, argsOf func(Params) []string, configure func([]string) (train.Config, error)) error {
	var blamed []string
	for _, kv := range r.Params {
		if _, e := configure(argsOf(r.Params.Without(kv.Key))); e == nil {
			blamed = append(blamed, kv.Key)
		}
	}
	if len(blamed) != 1 {
		candidates := blamed
		if len(candidates) == 0 {
			for _, kv := range r.Params {
				candidates = append(candidates, kv.Key)
			}
		}
		var named []string
		for _, k := range candidates {
			if namesFlag(err.Error(), k) {
				named = append(named, k)
			}
		}
		if len(named) > 0 {
			blamed = named
		}
	}
	var places []string
	for _, k := range blamed {
		if at := s.placeOf(r, k); at != "" {
			places = append(places, at)
		}
	}
	if len(places) == 0 {
		return &RunError{r.Name, err}
	}
	return &SpecError{s.File, strings.Join(places, ", "), fmt.Sprintf("run %s: %v", r.Name, err)}
}

// namesFlag reports whether msg names the flag key as -key or --key
// (as the flag package's and dstune train's messages do), not as part of
// a longer name.
func namesFlag(msg, key string) bool {
	isNameByte := func(c byte) bool {
		return c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	for _, flag := range []string{"--" + key, "-" + key} {
		for i := 0; ; {
			j := strings.Index(msg[i:], flag)
			if j < 0 {
				break
			}
			start, end := i+j, i+j+len(flag)
			if (start == 0 || !isNameByte(msg[start-1])) && (end == len(msg) || !isNameByte(msg[end])) {
				return true
			}
			i = start + 1
		}
	}
	return false
}

// checkData reads every data file that the runs still to train use, as
// dstune train reads it (their task, the spec's tokenizer), so that a
// bad line is found before the first run starts rather than when its
// run's turn comes, hours into the sweep. Token ids are checked against
// the model's vocabulary only when the run starts: that needs the model
// imported, too costly to do here for a large one.
func (s *Spec) checkData(plan []PlannedRun) error {
	var tok train.TextEncoder
	if s.Tokenizer != "" {
		t, err := tokenizer.Load(s.Tokenizer)
		if err != nil {
			return &SpecError{s.File, "tokenizer", err.Error()}
		}
		tok = t
	}
	tasks := map[train.Task]bool{}
	for _, p := range plan {
		tasks[p.Config.Task] = true
	}
	type read struct {
		path string
		task train.Task
	}
	checked := map[read]bool{}
	for _, p := range plan {
		if p.State == StateFinished {
			continue
		}
		name, _ := p.Run.Params.Get(KeyDataset)
		for _, f := range []struct{ which, path string }{{"data", p.Config.Data}, {"valid", p.Config.Valid}} {
			key := read{f.path, p.Config.Task}
			if f.path == "" || checked[key] {
				continue
			}
			checked[key] = true
			where := "datasets." + name + "." + f.which
			ds, err := train.LoadJSONL(f.path, train.DataOptions{Task: p.Config.Task, Tokenizer: tok})
			if err != nil {
				msg := err.Error()
				if len(tasks) > 1 {
					msg += fmt.Sprintf(" (read for --task %s, as run %s has it)", p.Config.Task, p.Run.Name)
				}
				return &SpecError{s.File, where, msg}
			}
			if f.which == "valid" {
				if err := train.CheckValidationData(ds, p.Config.Metric); err != nil {
					return &SpecError{s.File, where, fmt.Sprintf("run %s: %s: %v", p.Run.Name, f.path, err)}
				}
			}
		}
	}
	return nil
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
		return ran, fmt.Errorf("%w: %d of %s finished; run the same command again to continue", ErrInterrupted, done, count(len(results), "run", "runs"))
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
	if err := os.MkdirAll(p.Dir, 0o777); err != nil {
		return nil, err
	}
	resume := savedCheckpoint(p.Dir)
	cfg := p.Config
	log, err := os.OpenFile(filepath.Join(p.Dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
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
		// A crash between a checkpoint and its copy (or between the
		// checkpoint and the delta's write, which the resume redoes):
		// the copy is made once the resumed run has written the files
		// of its checkpoint again.
		ro.AfterRestore = func(step int64) error {
			if step == p.Config.Steps || (p.Config.CheckpointEvery > 0 && step%p.Config.CheckpointEvery == 0) {
				return keepCheckpointFiles(p.Dir, step)
			}
			return nil
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
	if werr := recordSession(p.Dir, time.Since(start).Seconds()); werr != nil && err == nil {
		err = werr
	}
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
	if rerr == nil && p.Config.Method == train.MethodFull {
		// Full fine-tuning's metrics record no count of what it trains.
		res.FreeParams, rerr = trainedParameters(p.Config)
	}
	if rerr != nil {
		return nil, rerr
	}
	if res.WallS, rerr = sessionsWall(p.Dir); rerr != nil {
		return nil, rerr
	}
	if status == StatusDiverged {
		res.Status, res.Error, res.Final = status, err.Error(), map[string]float64{}
	}
	if err := writeJSON(filepath.Join(p.Dir, ResultFile), res); err != nil {
		return nil, err
	}
	return res, nil
}

// SessionsFile, in a run directory, records the wall time of every
// session of dstune sweep that trained the run, a JSON object a line
// ({"wall_s": 1.2}): a run stopped and continued trains in several, and
// its result's wall time is their sum.
const SessionsFile = "sessions.jsonl"

// session is a line of SessionsFile.
type session struct {
	WallS float64 `json:"wall_s"`
}

// recordSession appends a session of wall seconds to the run's
// SessionsFile.
func recordSession(dir string, wall float64) error {
	line, err := json.Marshal(session{WallS: wall})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, SessionsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sessionsWall sums the wall time of the sessions SessionsFile records
// (a line cut short by a crash counts nothing).
func sessionsWall(dir string) (float64, error) {
	data, err := os.ReadFile(filepath.Join(dir, SessionsFile))
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range bytes.Lines(data) {
		var s session
		if json.Unmarshal(line, &s) == nil && s.WallS > 0 {
			sum += s.WallS
		}
	}
	return sum, nil
}

// holdsRun reports whether a run directory holds a run: its result or
// its configuration.
func holdsRun(dir string) bool {
	for _, name := range []string{ResultFile, train.ConfigFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// earlierRuns finds runs in the sweep's directories that the spec names
// otherwise now: the name of a run is its method and the settings that
// vary across the sweep, which change when values are added to an axis
// or removed from one.
type earlierRuns struct {
	root  string
	named map[string]bool // directories that are the current runs' own
	// runs are the directories holding a finished or stopped run that
	// no current run is named after (read once), claimed once found.
	runs    []earlierRun
	scanned bool
}

type earlierRun struct {
	name    string
	config  train.Config
	result  *Result
	claimed bool
}

// find returns the name of the directory that holds the run r with
// configuration cfg under an earlier name ("" when none does): the same
// configuration (config.json's, but the thread count) and, when it
// finished, the same settings.
func (e *earlierRuns) find(r Run, cfg train.Config) (string, error) {
	if !e.scanned {
		e.scanned = true
		entries, err := os.ReadDir(e.root)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		for _, ent := range entries {
			dir := filepath.Join(e.root, ent.Name())
			if !ent.IsDir() || e.named[ent.Name()] {
				continue
			}
			res, err := loadResult(dir)
			if err != nil || (res == nil && !savedCheckpoint(dir)) {
				continue // not a run, or nothing of it to keep
			}
			stored, err := train.LoadConfig(dir)
			if err != nil {
				continue
			}
			e.runs = append(e.runs, earlierRun{name: ent.Name(), config: stored, result: res})
		}
	}
	// A finished run before a stopped one of the same settings (an older
	// dstune gave a renamed run a new directory, so both may be there).
	var stopped *earlierRun
	for i := range e.runs {
		er := &e.runs[i]
		if er.claimed || er.config.Method != cfg.Method || er.config.Seed != cfg.Seed || train.RecordedDiff(er.config, cfg) != "" {
			continue
		}
		if er.result != nil && paramsDiff(er.result.Params, r.Params.Map()) != "" {
			continue
		}
		if er.result == nil {
			if stopped == nil {
				stopped = er
			}
			continue
		}
		er.claimed = true
		return er.name, nil
	}
	if stopped != nil {
		stopped.claimed = true
		return stopped.name, nil
	}
	return "", nil
}

// fileHashes caches the sha256 of the files a sweep's runs read, each
// read once per sweep.
type fileHashes map[string]string

func (h fileHashes) sha256(path string) (string, error) {
	if sum, ok := h[path]; ok {
		return sum, nil
	}
	sum, err := train.FileSHA256(path)
	if err != nil {
		return "", err
	}
	h[path] = sum
	return sum, nil
}

// checkRecordedFiles refuses a finished or stopped run whose config.json
// records another model, data, validation data or tokenizer file (by
// sha256) than the spec's now: its results would be reported beside runs
// of other files, and a stopped one would be refused when its turn came.
func checkRecordedFiles(dir, state string, cfg train.Config, hashes fileHashes) error {
	stored, err := train.LoadConfig(dir)
	if errors.Is(err, fs.ErrNotExist) && state == StateFinished {
		return nil // a result without config.json: nothing recorded to compare
	}
	if err != nil {
		return err
	}
	how := map[string]string{StateFinished: "finished", StateStopped: "was stopped"}[state]
	for _, f := range []struct{ what, path, recorded string }{
		{"another model", cfg.Model, stored.ModelSHA256},
		{"other training data", cfg.Data, stored.DataSHA256},
		{"other validation data", cfg.Valid, stored.ValidSHA256},
		{"another tokenizer", cfg.Tokenizer, stored.TokenizerSHA256},
	} {
		if f.path == "" || f.recorded == "" {
			continue
		}
		sum, err := hashes.sha256(f.path)
		if err != nil {
			return err
		}
		if sum != f.recorded {
			return fmt.Errorf("%s %s on %s: the spec's %s is not the file the run read (sha256 %s; %s records %s), and the report would mix runs of both; restore the file, remove the run's directory to train it again, or give the sweep another directory",
				dir, how, f.what, f.path, sum, filepath.Join(dir, train.ConfigFile), f.recorded)
		}
	}
	return nil
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
	if err := os.MkdirAll(tmp, 0o777); err != nil {
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
		// A copy keeps the mode of the file it copies: a private run's
		// deltas stay private.
		if err := (atomicfile.Options{ModeOf: filepath.Join(dir, name)}).Write(filepath.Join(tmp, name), data); err != nil {
			return err
		}
	}
	return os.Rename(tmp, final)
}
