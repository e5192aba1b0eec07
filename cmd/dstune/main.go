// Command dstune fine-tunes ONNX checkpoints with Dynamic Subset Tuning and
// ships the result as a sparse delta. Run `dstune help` for the commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/train"
)

// command is one subcommand; each lives in its own file and registers
// itself in init. Its help (`dstune help NAME`, `dstune NAME -h`) is its
// synopsis, its summary and the flags its flag set defines; README.md's
// synopsis of the command is the same text (main_test.go checks both).
type command struct {
	name string
	// synopsis holds the forms of the command line: a line is a form
	// ("dstune NAME " is put before it) unless it starts with a space,
	// which continues the form before.
	synopsis []string
	summary  string
	// flags defines the command's flags on a flag set, as run does.
	flags func(fs *flag.FlagSet)
	// sharesFlags names a command whose flags this one takes too; its
	// synopsis names only its own and those it shows.
	sharesFlags string
	run         func(args []string, stdout, stderr io.Writer) error
}

// usage renders the synopsis as README.md shows it.
func (c *command) usage() string {
	var b strings.Builder
	for i, line := range c.synopsis {
		if i > 0 {
			b.WriteByte('\n')
		}
		if !strings.HasPrefix(line, " ") {
			b.WriteString("dstune " + c.name + " ")
		}
		b.WriteString(line)
	}
	return b.String()
}

// help is the command's help: synopsis, summary and flags.
func (c *command) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s\n", strings.ReplaceAll(c.usage(), "\n", "\n       "), c.summary)
	if c.flags != nil {
		fs := newFlagSet(c.name, c.flags)
		if n := countFlags(fs); n > 0 {
			fmt.Fprintf(&b, "\nflags:\n%s", flagUsage(fs))
		}
	}
	return b.String()
}

// newFlagSet is a command's flag set, defined by define.
func newFlagSet(name string, define func(fs *flag.FlagSet)) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	define(fs)
	return fs
}

func countFlags(fs *flag.FlagSet) int {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("dstune: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// exitError carries a specific exit status (e.g. 1 for "outputs differ")
// without printing anything more than its message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageError marks bad command-line use: exit status 2 and the usage line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func init() {
	// Go kills a program whose write to stdout or stderr finds the pipe
	// closed (`dstune train … | head`) with SIGPIPE, unless SIGPIPE is
	// notified: then the write fails with EPIPE, as on any other file, so
	// a training run goes on to its checkpoint, a server keeps serving
	// when its log's reader is gone, and runMain reports the lost output.
	// Notified rather than ignored: an ignored signal stays ignored in
	// the processes a command starts.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

// runMain runs the command args name and returns its exit status. One
// that succeeds but whose output could not all be written (a full disk, a
// closed pipe) fails with status 1: what it was run for did not arrive.
func runMain(args []string, stdout, stderr io.Writer) int {
	out := &outputWriter{w: stdout}
	name, code := dispatch(args, out, stderr)
	if err := out.failed(); err != nil && code == 0 {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is the command's stdout, whatever it is
		}
		fmt.Fprintf(stderr, "dstune %s: writing the output: %v\n", name, err)
		return 1
	}
	return code
}

// dispatch is runMain but for the output's failure: it also returns the
// name the command's messages give (help and version are commands there).
func dispatch(args []string, stdout, stderr io.Writer) (name string, code int) {
	if len(args) > 0 && (args[0] == "version" || args[0] == "--version" || args[0] == "-version") {
		if len(args) > 1 {
			fmt.Fprintf(stderr, "dstune version: no arguments expected, got %q\n", args[1:])
			return "version", 2
		}
		printVersion(stdout)
		return "version", 0
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 && (args[1] == "help" || args[1] == "version") {
			args = args[:1] // the list of commands says what these do
		}
		if len(args) > 1 {
			// One word, or two naming a command (profile step).
			name := strings.Join(args[1:], " ")
			c, ok := commands[name]
			if !ok {
				fmt.Fprintf(stderr, "dstune help: unknown command %q\n\n", name)
				printHelp(stderr)
				return "help", 2
			}
			fmt.Fprint(stdout, c.help())
			return "help", 0
		}
		printHelp(stdout)
		if len(args) == 0 {
			return "help", 2
		}
		return "help", 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "dstune: unknown command %q\n\n", args[0])
		printHelp(stderr)
		return args[0], 2
	}
	if len(args) > 1 && commands[args[0]+" "+args[1]] != nil { // dstune profile step
		c, args = commands[args[0]+" "+args[1]], args[1:]
	}
	err := c.run(args[1:], stdout, stderr)
	if err == nil {
		return c.name, 0
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, c.help())
		return c.name, 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "dstune %s: %s\nusage: %s\n", c.name, ue.msg, strings.ReplaceAll(c.usage(), "\n", "\n       "))
		return c.name, 2
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintf(stderr, "dstune %s: %s\n", c.name, ee.msg)
		}
		return c.name, ee.code
	}
	fmt.Fprintf(stderr, "dstune %s: %v\n", c.name, err)
	return c.name, 1
}

// outputWriter is a command's stdout. It keeps the first write error,
// which runMain reports, so that no command need check each print; the
// writes after it are not tried, so that what arrived has no gap.
type outputWriter struct {
	w   io.Writer
	mu  sync.Mutex // a sweep's runs report from their goroutines
	err error
}

func (o *outputWriter) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	o.err = err
	return n, err
}

// failed is the first write error, nil if none.
func (o *outputWriter) failed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// isTerminal reports whether w, a command's stdout, is a terminal.
func isTerminal(w io.Writer) bool {
	if o, ok := w.(*outputWriter); ok {
		w = o.w
	}
	return train.IsTerminal(w)
}

// printVersion says which build this is (the module version, or the
// source revision it was built from), with which Go, for which system,
// and which SIMD kernels this CPU runs: what a bug report needs.
func printVersion(w io.Writer) {
	version, revision := "(unknown)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if r := settings["vcs.revision"]; r != "" {
			revision = " " + r[:min(12, len(r))]
			if settings["vcs.modified"] == "true" {
				revision += "+modified"
			}
			if t := settings["vcs.time"]; t != "" {
				revision += " (" + t + ")"
			}
		}
	}
	fmt.Fprintf(w, "dstune %s%s, %s %s/%s, kernels %v\n", version, revision, runtime.Version(), runtime.GOOS, runtime.GOARCH, kernels.HardwareISA())
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "dstune fine-tunes ONNX checkpoints with Dynamic Subset Tuning.")
	fmt.Fprintln(w, "\nusage: dstune COMMAND [arguments]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `dstune help COMMAND` (or `dstune COMMAND -h`) for a command's flags, `dstune version` for the build.")
}

// parseArgs parses flags that may come before, between or after the
// positional arguments (`dstune run MODEL --check DIR`), returning the
// positional ones. "--" ends flag parsing.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, checkNumbers(fs)
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), checkNumbers(fs)
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// checkNumbers refuses what no command means by its number flags: NaN or
// ±Inf (JSON, which run configurations are written in, cannot hold them
// either), and more --threads than maxThreads.
func checkNumbers(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(fl *flag.Flag) {
		g, ok := fl.Value.(flag.Getter)
		if !ok || err != nil {
			return
		}
		switch v := g.Get().(type) {
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				err = &usageError{fmt.Sprintf("--%s %v: want a finite number", fl.Name, v)}
			}
		case int:
			if fl.Name == "threads" && v > maxThreads() {
				err = &usageError{fmt.Sprintf("--threads %d: at most %d on this machine of %d cores (more goroutines than cores only slow the kernels down)", v, maxThreads(), runtime.NumCPU())}
			}
		}
	})
	return err
}

// maxThreads is the most goroutines per kernel call a command takes: four
// a core, and at least 16.
func maxThreads() int { return max(16, 4*runtime.NumCPU()) }

// flagsSet names the flags given on the command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	return set
}

// flagUsage renders a flag set's defaults for `dstune help COMMAND`.
func flagUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}
