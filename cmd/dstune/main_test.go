package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestParseArgsInterleaved(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	check := fs.String("check", "", "")
	js := fs.Bool("json", false, "")
	pos, err := parseArgs(fs, []string{"model.onnx", "--check", "dir", "extra", "--json", "--", "--literal"})
	if err != nil {
		t.Fatal(err)
	}
	if *check != "dir" || !*js {
		t.Errorf("flags: check=%q json=%v", *check, *js)
	}
	if want := []string{"model.onnx", "extra", "--literal"}; strings.Join(pos, "|") != strings.Join(want, "|") {
		t.Errorf("positional = %q, want %q", pos, want)
	}
}

func TestUnknownCommandExits2(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("stderr = %q", errb.String())
	}
}

func TestBadFlagIsUsageError(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"profile", "--threads", "0"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2 (stderr %q)", code, errb.String())
	}
}
