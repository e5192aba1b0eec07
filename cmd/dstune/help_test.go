package main

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/kernels"
)

// readmeSynopses returns, per command, the first indented block after
// README.md's "### dstune NAME" heading, without its indentation.
func readmeSynopses(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	heading := regexp.MustCompile(`^### dstune ([a-z]+(?: [a-z]+)?)$`)
	var name string
	var block []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if m := heading.FindStringSubmatch(line); m != nil {
			name, block = m[1], nil
			continue
		}
		if name == "" {
			continue
		}
		if strings.HasPrefix(line, "    ") {
			block = append(block, strings.TrimPrefix(line, "    "))
			continue
		}
		if len(block) > 0 {
			out[name] = strings.Join(block, "\n")
			name, block = "", nil
		}
	}
	return out
}

// TestReadmeSynopsesAreTheCommands: README.md shows every command's
// synopsis as `dstune help` prints it, and every synopsis names exactly
// the command's flags (a flag documented as "same as" another is an
// alias; a command that takes another's flags too names its own).
func TestReadmeSynopsesAreTheCommands(t *testing.T) {
	readme := readmeSynopses(t)
	flagRef := regexp.MustCompile(`(?:^|[\s\[(|])--?([a-z][a-z0-9-]*)`)
	for name, c := range commands {
		if got := readme[name]; got != c.usage() {
			t.Errorf("README.md's synopsis of dstune %s:\n%s\nthe command's:\n%s", name, got, c.usage())
		}
		fs := newFlagSet(name, c.flags)
		var shared *flag.FlagSet
		if c.sharesFlags != "" {
			shared = newFlagSet(c.sharesFlags, commands[c.sharesFlags].flags)
		}
		var defined []string
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.HasPrefix(f.Usage, "same as ") && (shared == nil || shared.Lookup(f.Name) == nil) {
				defined = append(defined, f.Name)
			}
		})
		var named []string
		for _, m := range flagRef.FindAllStringSubmatch(c.usage(), -1) {
			if m[1] != "resume" || name == "train" || shared != nil {
				named = append(named, m[1])
			}
		}
		for _, f := range defined {
			if !slices.Contains(named, f) {
				t.Errorf("dstune %s: flag --%s is not in the synopsis", name, f)
			}
		}
		for _, f := range named {
			if fs.Lookup(f) == nil {
				t.Errorf("dstune %s: the synopsis names --%s, which is no flag", name, f)
			}
		}
	}
}

// TestHelpPrintsTheFlags: `dstune help CMD` and `dstune CMD -h` print the
// same help, with every flag of the command.
func TestHelpPrintsTheFlags(t *testing.T) {
	for name, c := range commands {
		var a, b, errb bytes.Buffer
		if code := runMain([]string{"help", name}, &a, &errb); code != 0 {
			t.Fatalf("help %s: exit %d, %s", name, code, errb.String())
		}
		if code := runMain(append(strings.Fields(name), "-h"), &b, &errb); code != 0 {
			t.Fatalf("%s -h: exit %d, %s", name, code, errb.String())
		}
		if a.String() != b.String() {
			t.Errorf("dstune help %s and dstune %s -h differ:\n%s\n---\n%s", name, name, a.String(), b.String())
		}
		newFlagSet(name, c.flags).VisitAll(func(f *flag.Flag) {
			if !strings.Contains(a.String(), "  -"+f.Name) {
				t.Errorf("dstune help %s does not list -%s", name, f.Name)
			}
		})
	}
}

// TestVersion: dstune version (or --version) prints the build, the Go
// release and the kernels this CPU runs; `dstune help help` lists the
// commands.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, errOut := runCmd(arg)
		if code != 0 || !strings.HasPrefix(out, "dstune ") || !strings.Contains(out, runtime.Version()) || !strings.Contains(out, "kernels "+kernels.HardwareISA().String()) {
			t.Errorf("%s: exit %d, %q %q", arg, code, out, errOut)
		}
	}
	if code, _, _ := runCmd("version", "extra"); code != 2 {
		t.Errorf("version with an argument: exit %d", code)
	}
	if code, out, _ := runCmd("help", "help"); code != 0 || !strings.Contains(out, "commands:") {
		t.Errorf("help help: exit %d, %q", code, out)
	}
	if code, _, errOut := runCmd("help", "profile", "bogus"); code != 2 || !strings.Contains(errOut, `unknown command "profile bogus"`) {
		t.Errorf("help profile bogus: exit %d, %q", code, errOut)
	}
	if code, out, _ := runCmd("help", "profile", "step"); code != 0 || !strings.Contains(out, "dstune profile step MODEL.onnx") {
		t.Errorf("help profile step: exit %d, %q", code, out)
	}
}
