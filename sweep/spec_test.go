package sweep

import (
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/train"
)

// testFlags stand for dstune train's flags.
var testFlags = []string{"method", "lr", "seed", "steps", "eps", "rank", "prompt-len", "distance", "silo", "churn",
	"normalize", "metric", "task", "trainable", "alpha", "out", "data", "valid", "tokenizer", "resume", "log-every"}

const goodSpec = `{
  "model": "m.onnx",
  "tokenizer": "tok.bin",
  "datasets": {"a": {"data": "a/train.jsonl", "valid": "a/valid.jsonl"}},
  "train": {"dataset": "a", "task": "lm", "steps": 10, "lr": [1e-3, 1e-2], "seed": [1, 2]},
  "grid": [
    {"method": "dst", "eps": [1e-3, 1e-2], "trainable": "^layers/"},
    {"method": "lora", "rank": 4, "alpha": 8},
    {"method": "full"}
  ],
  "plots": [{"kind": "budget", "file": "b.png"}],
  "tables": [{"rows": ["eps"], "cols": ["lr"], "where": {"method": "dst"}}]
}`

// TestSpecRuns: the grid expands block by block, the last axis fastest;
// runs are named by their method and the settings that vary within a
// method, as directory names; every setting becomes a flag.
func TestSpecRuns(t *testing.T) {
	s, err := ParseSpec("/x/spec.json", []byte(goodSpec), testFlags)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range runs {
		names = append(names, r.Name)
	}
	want := []string{
		"dst,eps=1e-3,lr=1e-3,seed=1", "dst,eps=1e-3,lr=1e-3,seed=2", "dst,eps=1e-3,lr=1e-2,seed=1", "dst,eps=1e-3,lr=1e-2,seed=2",
		"dst,eps=1e-2,lr=1e-3,seed=1", "dst,eps=1e-2,lr=1e-3,seed=2", "dst,eps=1e-2,lr=1e-2,seed=1", "dst,eps=1e-2,lr=1e-2,seed=2",
		"lora,lr=1e-3,seed=1", "lora,lr=1e-3,seed=2", "lora,lr=1e-2,seed=1", "lora,lr=1e-2,seed=2",
		"full,lr=1e-3,seed=1", "full,lr=1e-3,seed=2", "full,lr=1e-2,seed=1", "full,lr=1e-2,seed=2",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("runs:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	if s.Model != "/x/m.onnx" || s.Tokenizer != "/x/tok.bin" || s.Datasets["a"].Valid != "/x/a/valid.jsonl" {
		t.Errorf("paths not made relative to the spec's directory: %q %q %+v", s.Model, s.Tokenizer, s.Datasets["a"])
	}
	if s.Quality != QualityLoss {
		t.Errorf("quality %q, want %q (no metric)", s.Quality, QualityLoss)
	}
	args := s.Args(runs[0], "/out/r")
	wantArgs := []string{"/x/m.onnx", "--method=dst", "--data=/x/a/train.jsonl", "--valid=/x/a/valid.jsonl", "--eps=1e-3",
		"--steps=10", "--task=lm", "--trainable=^layers/", "--lr=1e-3", "--seed=1", "--tokenizer=/x/tok.bin", "--out=/out/r"}
	if !slices.Equal(args, wantArgs) {
		t.Errorf("args %q\nwant %q", args, wantArgs)
	}
}

// TestDirName: a setting's characters that a directory name cannot hold
// (or should not) become "_", and runs whose names then collide are an
// error.
func TestDirName(t *testing.T) {
	if got := dirName("dst,trainable=^(a|b)/c,lr=1e-3"); got != "dst,trainable=__a_b__c,lr=1e-3" {
		t.Errorf("dirName = %q", got)
	}
	spec := `{"model": "m", "datasets": {"a": {"data": "d"}}, "train": {"dataset": "a", "trainable": ["a/b", "a|b"]}}`
	_, err := ParseSpec("s.json", []byte(spec), testFlags)
	var se *SpecError
	if !errors.As(err, &se) || se.Where != "grid" || !strings.Contains(se.Msg, "both named full,trainable=a_b") {
		t.Errorf("colliding names: %v", err)
	}
}

// TestBadSpecs: every mistake names the file, where in it and what is
// wrong, and is an ErrSpec.
func TestBadSpecs(t *testing.T) {
	base := `"model": "m.onnx", "datasets": {"a": {"data": "d.jsonl", "valid": "v.jsonl"}}`
	cases := []struct {
		name, spec, where, msg string
	}{
		{"not JSON", `{"model": `, "", "unexpected EOF"},
		{"syntax error", "{\n  \"model\": m.onnx}", "", "line 2, column 12: invalid character 'm'"},
		{"two values", `{` + base + `} {}`, "", "line 1, column 81: more than one JSON value"},
		{"empty file", "", "", "the file is empty: want a JSON object"},
		{"blank file", " \n\t\n", "", "the file is empty: want a JSON object"},
		{"a list", `[]`, "", "want a JSON object, found a list"},
		{"null", `null`, "", "want a JSON object, found null"},
		{"UTF-16", "\xFF\xFE{\x00}\x00", "", "the file is UTF-16"},
		{"unknown field", `{` + base + `, "grids": []}`, "grids", `unknown field "grids"`},
		{"model a number", `{"model": 5, "datasets": {"a": {"data": "d"}}}`, "model", "want a string, found a number"},
		{"keep_deltas a string", `{` + base + `, "keep_deltas": "yes"}`, "keep_deltas", "want true or false, found a string"},
		{"datasets a list", `{"model": "m", "datasets": ["d"]}`, "datasets", "want an object, found a list"},
		{"dataset a string", `{"model": "m", "datasets": {"a": "d.jsonl"}}`, "datasets.a", "want an object, found a string"},
		{"dataset's data a number", `{"model": "m", "datasets": {"a": {"data": 1}}}`, "datasets.a.data", "want a string, found a number"},
		{"dataset field", `{"model": "m", "datasets": {"a": {"data": "d", "test": "t"}}}`, "datasets.a", `unknown field "test"`},
		{"train a list", `{` + base + `, "train": [1]}`, "train", "want an object, found a list"},
		{"grid an object", `{` + base + `, "grid": {"method": "dst"}}`, "grid", "want a list, found an object"},
		{"grid block a number", `{` + base + `, "train": {"dataset": "a"}, "grid": [{}, 1]}`, "grid[1]", "want an object, found a number"},
		{"plots an object", `{` + base + `, "plots": {"kind": "budget"}}`, "plots", "want a list, found an object"},
		{"plot a string", `{` + base + `, "plots": ["budget"]}`, "plots[0]", "want an object, found a string"},
		{"plot kind a number", `{` + base + `, "plots": [{"kind": 1, "file": "p.png"}]}`, "plots[0].kind", "want a string, found a number"},
		{"table rows a string", `{` + base + `, "tables": [{"rows": "lr"}]}`, "tables[0].rows", "want a list, found a string"},
		{"duplicate key", `{"model": "a.onnx", "model": "b.onnx", "datasets": {"a": {"data": "d"}}}`, "model", "given twice"},
		{"duplicate nested key", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "dst"}, {"lr": 1, "eps": 1, "lr": 2}]}`, "grid[1].lr", "given twice"},
		{"duplicate dataset", `{"model": "m", "datasets": {"a": {"data": "d"}, "a": {"data": "e"}}}`, "datasets.a", "given twice"},
		{"duplicate plot file", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "budget", "file": "p.png"}, {"kind": "lr", "file": "q.png"}, {"kind": "lr", "file": "p.png"}]}`,
			"plots[2].file", `"p.png" is also the file of plots[0]`},
		{"unknown method", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "dst"}, {"method": ["lora", "foo"], "eps": 1e-3}]}`,
			"grid[1].method", `unknown method "foo" (want full, dst, lora or prompt)`},
		{"unknown method in train", `{` + base + `, "train": {"dataset": "a", "method": "Full"}}`, "train.method", `unknown method "Full"`},
		{"no validation data", `{"model": "m", "datasets": {"a": {"data": "a.jsonl", "valid": "v.jsonl"}, "b": {"data": "b.jsonl"}}, "train": {"dataset": ["a", "b"]}}`,
			"datasets.b.valid", `required: the report compares the runs by their validation loss, measured on the validation data; run full,dataset=b trains on dataset "b", which has none`},
		{"no validation data for a metric", `{"model": "m", "datasets": {"a": {"data": "a.jsonl"}}, "train": {"dataset": "a", "metric": "token-accuracy"}}`,
			"datasets.a.valid", "by their token accuracy"},
		{"no model", `{"datasets": {"a": {"data": "d"}}, "train": {"dataset": "a"}}`, "model", "required"},
		{"dataset without data", `{"model": "m", "datasets": {"a": {"valid": "v"}}}`, "datasets.a.data", "required"},
		{"unknown setting", `{` + base + `, "train": {"dataset": "a", "learning-rate": 1e-3}}`, "train.learning-rate", `unknown setting "learning-rate"`},
		{"reserved setting", `{` + base + `, "train": {"dataset": "a", "out": "x"}}`, "train.out", "every run gets its own directory"},
		{"reserved data", `{` + base + `, "grid": [{"dataset": "a", "data": "x"}]}`, "grid[0].data", `name the files in "datasets"`},
		{"empty grid", `{` + base + `, "grid": []}`, "grid", "empty: leave it out to run train's settings alone"},
		{"empty axis", `{` + base + `, "train": {"dataset": "a", "lr": []}}`, "train.lr", "an empty list"},
		{"object value", `{` + base + `, "train": {"dataset": "a", "lr": {"x": 1}}}`, "train.lr", "want a string, number or bool"},
		{"nested list", `{` + base + `, "train": {"dataset": "a", "lr": [[1]]}}`, "train.lr", "want a string, number or bool"},
		{"duplicate value", `{` + base + `, "train": {"dataset": "a", "seed": [1, 2, 1]}}`, "train.seed", "the value 1 is listed twice"},
		{"no dataset", `{` + base + `}`, "run full", `no "dataset"`},
		{"unknown dataset", `{` + base + `, "train": {"dataset": "b"}}`, "run full", `dataset "b" is not in "datasets"`},
		{"duplicate run", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "full"}, {"method": "full"}]}`, "grid", "run full is listed twice"},
		{"duplicate value, another spelling", `{` + base + `, "train": {"dataset": "a", "lr": [1e-3, 0.001]}}`, "train.lr", "the value 0.001 is listed twice (as 1e-3)"},
		{"duplicate integer, another spelling", `{` + base + `, "train": {"dataset": "a", "seed": ["1", "01"]}}`, "train.seed", "the value 01 is listed twice (as 1)"},
		{"duplicate run, another spelling", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "dst", "eps": 1e-3}, {"method": "dst", "eps": 0.001}]}`,
			"grid", "runs 1 and 2 have the same settings"},
		{"table cell shared", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "dst", "eps": [1e-3, 1e-2]}], "tables": [{"rows": ["method"]}]}`,
			"tables[0]", "share a cell"},
		{"modules plot of lora runs", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "dst", "eps": 1e-3}, {"method": "lora"}], "plots": [{"kind": "modules", "file": "m.png"}]}`,
			"plots[0] (m.png)", "a modules plot shows DST's subsets; run lora is lora"},
		{"overlap-runs plot of lora runs", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "dst", "eps": 1e-3}, {"method": "lora"}], "plots": [{"kind": "overlap-runs", "file": "o.png", "group": ["method"]}]}`,
			"plots[0] (o.png)", "an overlap-runs plot shows DST's subsets; run lora is lora"},
		{"modules plot, runs drawn as one bar", `{"model": "m.onnx", "datasets": {"a": {"data": "d", "valid": "v"}, "b": {"data": "d2", "valid": "v2"}}, "train": {"method": "dst", "dataset": ["a", "b"]}, "plots": [{"kind": "budget", "file": "b.png"}, {"kind": "modules", "file": "m.png", "group": ["silo"]}]}`,
			"plots[1] (m.png)", "method=dst,dataset=a and method=dst,dataset=b are drawn as one bar"},
		{"bars plot, runs drawn as one bar", `{` + base + `, "train": {"dataset": "a", "method": "dst", "eps": [1e-3, 1e-2]}, "plots": [{"kind": "bars", "file": "b.png", "x": ["method"], "group": ["seed"]}]}`,
			"plots[0] (b.png)", "are drawn as one bar"},
		{"plot where, no such value", `{` + base + `, "train": {"dataset": "a", "method": "dst", "eps": [1e-3, 1e-2]}, "plots": [{"kind": "budget", "file": "b.png", "where": {"eps": 0.5}}]}`,
			"plots[0] (b.png)", "where.eps: 0.5 matches no run of the grid (its values: 1e-3, 1e-2)"},
		{"plot where, a setting no run has", `{` + base + `, "train": {"dataset": "a", "method": "dst"}, "plots": [{"kind": "budget", "file": "b.png", "where": {"rank": 4}}]}`,
			"plots[0] (b.png)", "where.rank: no run of the grid sets rank"},
		{"plot where, no run has both", `{` + base + `, "train": {"dataset": "a"}, "grid": [{"method": "dst", "eps": 1e-3}, {"method": "lora", "rank": 2}], "plots": [{"kind": "lr", "file": "l.png", "where": {"method": "lora", "eps": 1e-3}}]}`,
			"plots[0] (l.png)", "none has all of eps=1e-3, method=lora"},
		{"table where, no such value", `{` + base + `, "train": {"dataset": "a", "method": "dst", "eps": [1e-3, 1e-2]}, "tables": [{"rows": ["eps"], "where": {"method": "lora"}}]}`,
			"tables[0]", "where.method: lora matches no run of the grid (its values: dst)"},
		{"overlap-steps, too many panels", `{` + base + `, "train": {"dataset": "a", "method": "dst", "seed": [` + seq(13) + `]}, "plots": [{"kind": "overlap-steps", "file": "o.png"}]}`,
			"plots[0] (o.png)", "at most 12; it selects 13"},
		{"too many runs", `{` + base + `, "train": {"dataset": "a", "seed": [` + seq(101) + `], "lr": [` + seq(101) + `]}}`, "grid[0]", "more than 10000 runs"},
		{"unknown quality", `{` + base + `, "train": {"dataset": "a"}, "quality": "bleu"}`, "quality", `unknown quality "bleu"`},
		{"quality without metric", `{` + base + `, "train": {"dataset": "a"}, "quality": "exact_match"}`, "quality", "needs --metric exact-match in every run"},
		{"quality, metrics differ", `{` + base + `, "train": {"dataset": "a", "metric": ["exact-match", "loss"]}, "quality": "exact_match"}`, "quality", `run full,metric=loss has "loss"`},
		{"plot kind", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "pie", "file": "p.png"}]}`, "plots[0].kind", `unknown plot kind "pie"`},
		{"plot file", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "budget", "file": "d/p.png"}]}`, "plots[0].file", "want a file name ending in .png"},
		{"plot not png", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "budget", "file": "p.svg"}]}`, "plots[0].file", "ending in .png"},
		{"plot without extension", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "budget", "file": "png"}]}`, "plots[0].file", "ending in .png"},
		{"plot field", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "budget", "file": "p.png", "color": 1}]}`, "plots[0]", `unknown field "color"`},
		{"bars without x", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "bars", "file": "p.png"}]}`, "plots[0].x", "needs the settings of its categories"},
		{"bars unknown x", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "bars", "file": "p.png", "x": ["colour"]}]}`, "plots[0].x", `unknown setting "colour"`},
		{"overlap-runs without group", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "overlap-runs", "file": "p.png"}]}`, "plots[0].group", "needs the settings that group its runs"},
		{"where not an object", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "budget", "file": "p.png", "where": [1]}]}`, "plots[0].where", "want an object of settings"},
		{"where unknown", `{` + base + `, "train": {"dataset": "a"}, "plots": [{"kind": "budget", "file": "p.png", "where": {"colour": 1}}]}`, "plots[0].where.colour", `unknown setting "colour"`},
		{"table without rows", `{` + base + `, "train": {"dataset": "a"}, "tables": [{"cols": ["lr"]}]}`, "tables[0].rows", "needs the settings of its rows"},
		{"table unknown col", `{` + base + `, "train": {"dataset": "a"}, "tables": [{"rows": ["lr"], "cols": ["x"]}]}`, "tables[0].cols", `unknown setting "x"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSpec("dir/s.json", []byte(c.spec), testFlags)
			if err == nil {
				t.Fatal("no error")
			}
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrSpec) {
				t.Fatalf("%v: not a SpecError", err)
			}
			if se.File != "dir/s.json" || se.Where != c.where || !strings.Contains(se.Msg, c.msg) {
				t.Errorf("got file %q, where %q, msg %q; want where %q, a message with %q", se.File, se.Where, se.Msg, c.where, c.msg)
			}
			if !strings.HasPrefix(err.Error(), "dir/s.json: ") {
				t.Errorf("error %q does not start with the file", err)
			}
			// The messages speak of the spec's JSON, not of the Go
			// types it is decoded into.
			for _, leak := range []string{"Go ", "sweep.", "json:", "RawMessage", "map["} {
				if strings.Contains(se.Msg, leak) {
					t.Errorf("message %q mentions %q", se.Msg, leak)
				}
			}
		})
	}
}

// seq lists the numbers 1 … n as a JSON list's inside.
func seq(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = strconv.Itoa(i + 1)
	}
	return strings.Join(parts, ", ")
}

// TestPlanChecksFiles: a spec naming a file that does not exist fails
// before any run, naming the field.
func TestPlanChecksFiles(t *testing.T) {
	dir := t.TempDir()
	spec := `{"model": "missing.onnx", "datasets": {"a": {"data": "d.jsonl", "valid": "v.jsonl"}}, "train": {"dataset": "a"}}`
	s, err := ParseSpec(filepath.Join(dir, "s.json"), []byte(spec), testFlags)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Plan(s, Options{Dir: filepath.Join(dir, "out"), Configure: nil})
	if err == nil {
		t.Fatal("no error")
	}
	_, err = Plan(s, Options{Dir: filepath.Join(dir, "out"), Configure: func([]string) (c train.Config, err error) { return c, nil }})
	var se *SpecError
	if !errors.As(err, &se) || se.Where != "model" || !strings.Contains(se.Msg, "missing.onnx") {
		t.Errorf("missing model: %v", err)
	}
}

// TestSpecBOM: a spec that starts with a UTF-8 byte-order mark (as some
// editors write) reads as the same spec without one.
func TestSpecBOM(t *testing.T) {
	with, err := ParseSpec("/x/spec.json", []byte("\uFEFF"+goodSpec), testFlags)
	if err != nil {
		t.Fatal(err)
	}
	without, err := ParseSpec("/x/spec.json", []byte(goodSpec), testFlags)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(with, without) {
		t.Errorf("with a BOM:\n%+v\nwithout:\n%+v", with, without)
	}
}

// TestNamesFlag: a message names a flag as -key or --key, not as part of
// another flag's name or a word.
func TestNamesFlag(t *testing.T) {
	cases := []struct {
		msg, key string
		want     bool
	}{
		{`invalid value "true" for flag -batch: parse error`, "batch", true},
		{"--beta2 is an AdamW option", "beta2", true},
		{"--beta2 is an AdamW option", "beta", false},
		{"--eps is an option of --method dst", "method", true},
		{"--prompt-len must be positive", "prompt", false},
		{"--prompt-len must be positive", "prompt-len", true},
		{"steps 0, want ≥ 1", "steps", false},
		{"lr=1e-3", "3", false},
	}
	for _, c := range cases {
		if got := namesFlag(c.msg, c.key); got != c.want {
			t.Errorf("namesFlag(%q, %q) = %v, want %v", c.msg, c.key, got, c.want)
		}
	}
}

// TestReportNoQuality: results.md says "all diverged" of a point only
// when its runs diverged; one whose runs finished without a quality
// (runs without validation data, which specs now refuse, from before)
// says so instead, in the best-learning-rate table and in a pivot table.
func TestReportNoQuality(t *testing.T) {
	unmeasured := result(0, StatusDone, "method", "full", "lr", "1e-3", "seed", "1")
	unmeasured.Final = map[string]float64{}
	diverged := result(0, StatusDiverged, "method", "dst", "eps", "1e-3", "lr", "1e-3", "seed", "1")
	s := &Spec{File: "s.json", Quality: QualityLoss, Tables: []Table{{Rows: []string{KeyMethod}}}}
	dir := t.TempDir()
	if _, err := writeReport(s, dir, []*Result{unmeasured, diverged}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	report := string(data)
	for _, row := range []string{
		"| full | — | — | — | no validation loss | — | 1 |",
		"| dst | — | — | — | all diverged | — | 1 |",
		"| full | no validation loss |",
		"| dst | diverged |",
	} {
		if !strings.Contains(report, row) {
			t.Errorf("results.md has no row %q:\n%s", row, report)
		}
	}
}

// TestBudgetPlotOneBudget: a budget plot of one budget, or of runs that
// all diverged, is drawn: gonum widens a log axis over one value (or
// none) to below zero, and its log scale panics there.
func TestBudgetPlotOneBudget(t *testing.T) {
	one := result(0.5, StatusDone, "method", "dst", "eps", "1e-3", "lr", "1e-3", "seed", "1")
	one.Fraction = 0.01
	diverged := result(0, StatusDiverged, "method", "dst", "eps", "1e-3", "lr", "1e-3", "seed", "1")
	s := &Spec{File: "s.json", Quality: "token_accuracy"}
	for name, results := range map[string][]*Result{"one budget": {one}, "all diverged": {diverged}} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := drawPlot(s, dir, Plot{Kind: PlotBudget, File: "b.png"}, results); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(filepath.Join(dir, "b.png"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := png.DecodeConfig(f); err != nil {
				t.Errorf("b.png: %v", err)
			}
		})
	}
}

// TestLongRunNamesShortened: a run named by a long setting (a long
// --trainable expression) gets a directory name of at most maxNameBytes,
// cut and ended with a hash of the whole, so two such runs stay apart.
func TestLongRunNamesShortened(t *testing.T) {
	long := strings.Repeat("(h|wte)", 60)
	spec := `{"model": "m", "datasets": {"a": {"data": "d", "valid": "v"}}, "train": {"dataset": "a", "method": "dst"}, "grid": [{"trainable": ["` + long + `0", "` + long + `1"]}]}`
	s, err := ParseSpec("s.json", []byte(spec), testFlags)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Name == runs[1].Name || len(runs[0].Name) != maxNameBytes || len(runs[1].Name) != maxNameBytes ||
		!strings.HasPrefix(runs[0].Name, "dst,trainable=_h_wte_") {
		t.Errorf("names %q and %q", runs[0].Name, runs[1].Name)
	}
}

// TestWhereMatchesEqualNumbers: a where's number matches a setting of
// the grid written otherwise (0.001 is 1e-3), so a plot or table of it is
// accepted and selects those runs; a plot file's .PNG is a PNG too.
func TestWhereMatchesEqualNumbers(t *testing.T) {
	spec := `{"model": "m", "datasets": {"a": {"data": "d", "valid": "v"}}, "train": {"dataset": "a", "method": "dst", "eps": [1e-3, 1e-2]},
  "plots": [{"kind": "budget", "file": "B.PNG", "where": {"eps": 0.001}}], "tables": [{"rows": ["eps"], "where": {"eps": [0.01]}}]}`
	s, err := ParseSpec("s.json", []byte(spec), testFlags)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	var results []*Result
	for _, r := range runs {
		results = append(results, &Result{Run: r.Name, params: r.Params})
	}
	if sel := selectResults(results, s.Plots[0].Where); len(sel) != 1 || sel[0].Run != "dst,eps=1e-3" {
		t.Errorf("where eps 0.001 selects %v", sel)
	}
	if sel := selectResults(results, s.Tables[0].Where); len(sel) != 1 || sel[0].Run != "dst,eps=1e-2" {
		t.Errorf("where eps [0.01] selects %v", sel)
	}
}
