// Command dstune fine-tunes ONNX checkpoints with Dynamic Subset Tuning and
// ships the result as a sparse delta. Run `dstune help` for the commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one subcommand; each lives in its own file and registers
// itself in init.
type command struct {
	name    string
	usage   string // one line: arguments and main flags
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
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

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				fmt.Fprintf(stdout, "usage: dstune %s %s\n\n%s\n", c.name, c.usage, c.summary)
				return 0
			}
		}
		printHelp(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "dstune: unknown command %q\n\n", args[0])
		printHelp(stderr)
		return 2
	}
	err := c.run(args[1:], stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "dstune %s: %s\nusage: dstune %s %s\n", c.name, ue.msg, c.name, c.usage)
		return 2
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintf(stderr, "dstune %s: %s\n", c.name, ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "dstune %s: %v\n", c.name, err)
	return 1
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
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `dstune help COMMAND` for a command's flags.")
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
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// flagUsage renders a flag set's defaults for `dstune help COMMAND`.
func flagUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}
