package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/sweep"
	"github.com/dstune/dstune/train"
)

func init() {
	register(&command{
		name:     "sweep",
		synopsis: []string{"SPEC.json [--out DIR] [--jobs 1] [--threads N] [--keep-deltas] [--dry-run]"},
		summary:  "run a grid of training runs (methods, budgets, learning rates, seeds, options), resumably, and report them in tables and plots",
		flags:    func(fs *flag.FlagSet) { new(sweepFlags).define(fs) },
		run:      runSweep,
	})
}

// sweepFlags are dstune sweep's flags.
type sweepFlags struct {
	out        *string
	jobs       *int
	threads    *int
	keepDeltas *bool
	dryRun     *bool
}

func (f *sweepFlags) define(fs *flag.FlagSet) {
	f.out = fs.String("out", "", "the sweep's directory: runs/NAME per run, results.jsonl, results.md, the plots (default: SPEC without .json)")
	f.jobs = fs.Int("jobs", 1, "runs trained at once")
	f.threads = fs.Int("threads", 0, "--threads of every run whose settings do not give it (default: the cores over --jobs)")
	f.keepDeltas = fs.Bool("keep-deltas", false, "keep the delta (or adapter) of every checkpoint of every run in RUN/deltas/step-N/ (also the spec's keep_deltas)")
	f.dryRun = fs.Bool("dry-run", false, "check the spec and list the runs with their dstune train command lines; train nothing")
}

// trainFlagNames are the settings a sweep's runs may have.
func trainFlagNames() []string {
	var names []string
	newFlagSet("train", new(trainFlags).define).VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// configureTrain turns dstune train's arguments into the run's
// configuration, as dstune train does (same checks, same errors).
func configureTrain(args []string) (train.Config, error) {
	var f trainFlags
	fs := newFlagSet("train", f.define)
	pos, err := parseArgs(fs, args)
	if err == nil {
		var cfg train.Config
		if cfg, _, err = f.config(pos, flagsSet(fs)); err == nil {
			return cfg, nil
		}
	}
	// A run's bad flag is the spec's fault, not the sweep command's.
	var ue *usageError
	if errors.As(err, &ue) {
		err = errors.New(ue.msg)
	}
	return train.Config{}, err
}

func runSweep(args []string, stdout, stderr io.Writer) error {
	var f sweepFlags
	fs := newFlagSet("sweep", f.define)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usagef("want exactly one spec file, got %d arguments", len(pos))
	case *f.jobs < 1:
		return usagef("--jobs must be at least 1")
	case *f.threads < 0:
		return usagef("--threads must not be negative")
	}
	if *f.out == "" {
		// SPEC without .json names the sweep's directory: a spec piped
		// in (<(…), /dev/stdin) would put it under /dev/fd.
		if st, err := os.Stat(pos[0]); err == nil && !st.Mode().IsRegular() {
			return usagef("%s is %s, not a spec file whose name can name the sweep's directory: give --out DIR", pos[0], regfile.Kind(st.Mode()))
		}
	}
	spec, err := sweep.LoadSpec(pos[0], trainFlagNames())
	if err != nil {
		return err
	}
	dir := *f.out
	if dir == "" {
		dir = strings.TrimSuffix(pos[0], filepath.Ext(pos[0]))
		if dir == pos[0] {
			dir += ".out"
		}
	}
	threads := *f.threads
	if threads == 0 {
		threads = max(1, kernels.DefaultThreads() / *f.jobs)
	}
	opts := sweep.Options{Dir: dir, Jobs: *f.jobs, Threads: threads, KeepDeltas: *f.keepDeltas, Configure: configureTrain, Progress: stdout}
	if *f.dryRun {
		return dryRun(spec, opts, stdout)
	}
	ctx, stop := interruptible(stderr, "the runs in progress finish their step and write a checkpoint", "without one")
	defer stop()
	out, err := sweep.Execute(ctx, spec, opts)
	if errors.Is(err, sweep.ErrInterrupted) {
		return &exitError{130, err.Error()}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "done: %s (%d trained now)\n", plural(int64(len(out.Runs)), "run", "runs"), out.Ran)
	for _, name := range out.Files {
		fmt.Fprintf(stdout, "  %s\n", filepath.Join(dir, name))
	}
	return nil
}

// dryRun lists the runs, whether they finished, and their command lines.
func dryRun(spec *sweep.Spec, opts sweep.Options, stdout io.Writer) error {
	plan, err := sweep.Plan(spec, opts)
	if err != nil {
		return err
	}
	done := 0
	for _, p := range plan {
		if p.State == sweep.StateFinished {
			done++
		}
		name := p.Run.Name
		if p.SpecName != "" {
			name += fmt.Sprintf(" (the spec's name now: %s)", p.SpecName)
		}
		// Quoted where needed, to paste (--trainable=^(a|b) would be
		// a syntax error).
		fmt.Fprintf(stdout, "%-10s %s\n           dstune train %s\n", p.State, name, shellJoin(p.Args))
	}
	fmt.Fprintf(stdout, "%s, %d finished, in %s\n", plural(int64(len(plan)), "run", "runs"), done, opts.Dir)
	return nil
}
