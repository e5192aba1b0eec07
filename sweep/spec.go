package sweep

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ErrSpec is wrapped by every error in a sweep specification.
var ErrSpec = errors.New("bad sweep spec")

// SpecError is a mistake in a specification: the file, where in it (a
// JSON path such as grid[1].rank) and what is wrong.
type SpecError struct {
	File, Where, Msg string
}

func (e *SpecError) Error() string {
	if e.Where == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Where, e.Msg)
}

// Unwrap makes every SpecError an ErrSpec.
func (e *SpecError) Unwrap() error { return ErrSpec }

// Spec is a sweep: a grid of training runs and the report made of them.
type Spec struct {
	File      string // the specification file; relative paths in it are relative to its directory
	Title     string
	Model     string // absolute
	Tokenizer string // absolute, or ""
	Datasets  map[string]Dataset
	// Train holds the settings of every run; Grid's blocks add their own
	// (overriding Train's). A setting with several values is an axis:
	// every combination of the values of a block's axes is a run.
	Train map[string][]string
	Grid  []map[string][]string
	// Quality is the result the report compares: "valid_loss" (lower is
	// better) or a validation metric's field ("token_accuracy",
	// "exact_match", "accuracy"; higher is better).
	Quality    string
	KeepDeltas bool
	Plots      []Plot
	Tables     []Table
}

// Dataset is a named pair of training and validation files (absolute).
type Dataset struct {
	Data  string `json:"data"`
	Valid string `json:"valid"`
}

// Plot is one figure of the report (see the package documentation for
// the kinds).
type Plot struct {
	Kind  string              `json:"kind"`
	File  string              `json:"file"`
	Title string              `json:"title"`
	Where map[string][]string `json:"-"`
	// X and Group name settings: bars' categories and colors; modules'
	// and overlap-runs' groups (Group).
	X     []string `json:"x"`
	Group []string `json:"group"`
	// Log plots the budget plot's y axis on a log scale.
	Log bool `json:"log"`
	// Quality replaces the spec's quality in this plot.
	Quality string `json:"quality"`
}

// Table is a pivot table of the report: quality at the best learning
// rate, rows and columns by the settings named.
type Table struct {
	Title string              `json:"title"`
	Rows  []string            `json:"rows"`
	Cols  []string            `json:"cols"`
	Where map[string][]string `json:"-"`
	// Quality replaces the spec's quality in this table.
	Quality string `json:"quality"`
}

// Plot kinds.
const (
	PlotBudget       = "budget"
	PlotLR           = "lr"
	PlotBars         = "bars"
	PlotModules      = "modules"
	PlotOverlapSteps = "overlap-steps"
	PlotOverlapRuns  = "overlap-runs"
)

var plotKinds = []string{PlotBudget, PlotLR, PlotBars, PlotModules, PlotOverlapSteps, PlotOverlapRuns}

// Qualities the report can compare.
const (
	QualityLoss = "valid_loss"
)

var qualities = map[string]string{ // field → the --metric that reports it
	QualityLoss:      "",
	"token_accuracy": "token-accuracy",
	"exact_match":    "exact-match",
	"accuracy":       "accuracy",
}

// Settings a run's key names besides dstune train's flags.
const (
	KeyDataset = "dataset"
	KeyMethod  = "method"
	KeyLR      = "lr"
	KeySeed    = "seed"
)

// reservedKeys are train flags a spec may not set: the sweep sets them.
var reservedKeys = map[string]string{
	"out":         "every run gets its own directory under the sweep's",
	"resume":      "the sweep resumes unfinished runs itself",
	"data":        `name the files in "datasets" and choose one with "dataset"`,
	"valid":       `name the files in "datasets" and choose one with "dataset"`,
	"tokenizer":   `give it once, as the spec's "tokenizer"`,
	"log-every":   "each run's progress goes to its train.log",
	"pjrt-plugin": "not part of a run",
}

// maxRuns bounds a grid (a typo in an axis should not plan a million runs).
const maxRuns = 10000

type specJSON struct {
	Title      string                     `json:"title"`
	Model      string                     `json:"model"`
	Tokenizer  string                     `json:"tokenizer"`
	Datasets   map[string]Dataset         `json:"datasets"`
	Train      map[string]json.RawMessage `json:"train"`
	Grid       []map[string]json.RawMessage
	Quality    string            `json:"quality"`
	KeepDeltas bool              `json:"keep_deltas"`
	Plots      []json.RawMessage `json:"plots"`
	Tables     []json.RawMessage `json:"tables"`
}

// LoadSpec reads a specification. flags are the settings a run may have
// (dstune train's flag names); every key is checked against them.
func LoadSpec(path string, flags []string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSpec(path, data, flags)
}

// ParseSpec parses a specification read from path.
func ParseSpec(path string, data []byte, flags []string) (*Spec, error) {
	bad := func(where, format string, args ...any) error {
		return &SpecError{File: path, Where: where, Msg: fmt.Sprintf(format, args...)}
	}
	var sj specJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&sj); err != nil {
		return nil, bad("", "%v", err)
	}
	if dec.More() {
		return nil, bad("", "more than one JSON value")
	}
	dir := filepath.Dir(path)
	abs := func(p string) string {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	s := &Spec{File: path, Title: sj.Title, Quality: sj.Quality, KeepDeltas: sj.KeepDeltas, Datasets: map[string]Dataset{}}
	if sj.Model == "" {
		return nil, bad("model", "required: the ONNX file every run fine-tunes")
	}
	s.Model = abs(sj.Model)
	if sj.Tokenizer != "" {
		s.Tokenizer = abs(sj.Tokenizer)
	}
	for name, d := range sj.Datasets {
		if d.Data == "" {
			return nil, bad("datasets."+name+".data", "required: the training data")
		}
		ds := Dataset{Data: abs(d.Data)}
		if d.Valid != "" {
			ds.Valid = abs(d.Valid)
		}
		s.Datasets[name] = ds
	}
	known := map[string]bool{KeyDataset: true}
	for _, f := range flags {
		known[f] = true
	}
	var err error
	if s.Train, err = parseSettings(path, "train", sj.Train, known); err != nil {
		return nil, err
	}
	if len(sj.Grid) == 0 {
		sj.Grid = []map[string]json.RawMessage{{}}
	}
	for i, b := range sj.Grid {
		block, err := parseSettings(path, fmt.Sprintf("grid[%d]", i), b, known)
		if err != nil {
			return nil, err
		}
		s.Grid = append(s.Grid, block)
	}
	for i, raw := range sj.Plots {
		p, err := parsePlot(path, fmt.Sprintf("plots[%d]", i), raw, known)
		if err != nil {
			return nil, err
		}
		s.Plots = append(s.Plots, p)
	}
	for i, raw := range sj.Tables {
		t, err := parseTable(path, fmt.Sprintf("tables[%d]", i), raw, known)
		if err != nil {
			return nil, err
		}
		s.Tables = append(s.Tables, t)
	}
	if err := s.checkRuns(); err != nil {
		return nil, err
	}
	return s, nil
}

// parseSettings reads a block of settings: each a string, number or bool,
// or a non-empty list of them (an axis).
func parseSettings(path, where string, raw map[string]json.RawMessage, known map[string]bool) (map[string][]string, error) {
	out := map[string][]string{}
	for key, msg := range raw {
		at := where + "." + key
		if why, ok := reservedKeys[key]; ok {
			return nil, &SpecError{path, at, "not a setting of a sweep: " + why}
		}
		if !known[key] {
			return nil, &SpecError{path, at, fmt.Sprintf("unknown setting %q (not a dstune train flag, nor %q)", key, KeyDataset)}
		}
		vals, err := parseValues(msg)
		if err != nil {
			return nil, &SpecError{path, at, err.Error()}
		}
		out[key] = vals
	}
	return out, nil
}

// parseValues reads a scalar or a list of scalars as flag values.
func parseValues(msg json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	list, isList := v.([]any)
	if !isList {
		list = []any{v}
	} else if len(list) == 0 {
		return nil, errors.New("an empty list: give at least one value")
	}
	var out []string
	for _, x := range list {
		var s string
		switch x := x.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		case bool:
			s = strconv.FormatBool(x)
		default:
			return nil, fmt.Errorf("want a string, number or bool, or a list of them; got %s", strings.TrimSpace(string(msg)))
		}
		if slices.Contains(out, s) {
			return nil, fmt.Errorf("the value %s is listed twice", s)
		}
		out = append(out, s)
	}
	return out, nil
}

func decodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// splitWhere takes the "where" object out of a plot or table.
func splitWhere(path, where string, raw json.RawMessage, known map[string]bool) (json.RawMessage, map[string][]string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, nil, &SpecError{path, where, err.Error()}
	}
	var sel map[string][]string
	if w, ok := fields["where"]; ok {
		var ws map[string]json.RawMessage
		if err := json.Unmarshal(w, &ws); err != nil {
			return nil, nil, &SpecError{path, where + ".where", "want an object of settings"}
		}
		var err error
		if sel, err = parseSettings(path, where+".where", ws, known); err != nil {
			return nil, nil, err
		}
		delete(fields, "where")
	}
	rest, _ := json.Marshal(fields)
	return rest, sel, nil
}

func checkKeys(path, where string, keys []string, known map[string]bool) error {
	for _, k := range keys {
		if !known[k] {
			return &SpecError{path, where, fmt.Sprintf("unknown setting %q", k)}
		}
	}
	return nil
}

func parsePlot(path, where string, raw json.RawMessage, known map[string]bool) (Plot, error) {
	var p Plot
	rest, sel, err := splitWhere(path, where, raw, known)
	if err != nil {
		return p, err
	}
	if err := decodeStrict(rest, &p); err != nil {
		return p, &SpecError{path, where, err.Error()}
	}
	p.Where = sel
	switch {
	case !slices.Contains(plotKinds, p.Kind):
		return p, &SpecError{path, where + ".kind", fmt.Sprintf("unknown plot kind %q (want %s)", p.Kind, strings.Join(plotKinds, ", "))}
	case p.File == "" || filepath.Base(p.File) != p.File || !strings.HasSuffix(p.File, ".png"):
		return p, &SpecError{path, where + ".file", fmt.Sprintf("want a file name ending in .png (written into the sweep's directory), got %q", p.File)}
	case p.Kind == PlotBars && len(p.X) == 0:
		return p, &SpecError{path, where + ".x", "a bars plot needs the settings of its categories"}
	case p.Kind == PlotOverlapRuns && len(p.Group) == 0:
		return p, &SpecError{path, where + ".group", "an overlap-runs plot needs the settings that group its runs"}
	}
	if err := checkQuality(path, where+".quality", p.Quality); err != nil {
		return p, err
	}
	if err := checkKeys(path, where+".x", p.X, known); err != nil {
		return p, err
	}
	return p, checkKeys(path, where+".group", p.Group, known)
}

func parseTable(path, where string, raw json.RawMessage, known map[string]bool) (Table, error) {
	var t Table
	rest, sel, err := splitWhere(path, where, raw, known)
	if err != nil {
		return t, err
	}
	if err := decodeStrict(rest, &t); err != nil {
		return t, &SpecError{path, where, err.Error()}
	}
	t.Where = sel
	if len(t.Rows) == 0 {
		return t, &SpecError{path, where + ".rows", "a table needs the settings of its rows"}
	}
	if err := checkQuality(path, where+".quality", t.Quality); err != nil {
		return t, err
	}
	if err := checkKeys(path, where+".rows", t.Rows, known); err != nil {
		return t, err
	}
	return t, checkKeys(path, where+".cols", t.Cols, known)
}

// checkQuality checks a plot's or table's own quality ("": the spec's).
func checkQuality(path, where, q string) error {
	if _, ok := qualities[q]; q != "" && !ok {
		return &SpecError{path, where, fmt.Sprintf("unknown quality %q (want valid_loss, token_accuracy, exact_match or accuracy)", q)}
	}
	return nil
}

// checkRuns expands the grid once to check what only the runs show: the
// grid's size, datasets named, duplicates, the quality.
func (s *Spec) checkRuns() error {
	runs, err := s.Runs()
	if err != nil {
		return err
	}
	metrics := map[string]bool{}
	for _, r := range runs {
		if name, ok := r.Params.Get(KeyDataset); ok {
			if _, known := s.Datasets[name]; !known {
				return &SpecError{s.File, "run " + r.Name, fmt.Sprintf("dataset %q is not in \"datasets\"", name)}
			}
		} else {
			return &SpecError{s.File, "run " + r.Name, `no "dataset": name its data in "datasets" and choose one with "dataset"`}
		}
		m, _ := r.Params.Get("metric")
		metrics[m] = true
	}
	if s.Quality == "" {
		s.Quality = QualityLoss
		if len(metrics) == 1 {
			for m := range metrics {
				if f := metricField(m); f != "" {
					s.Quality = f
				}
			}
		}
	}
	want, ok := qualities[s.Quality]
	if !ok {
		return &SpecError{s.File, "quality", fmt.Sprintf("unknown quality %q (want valid_loss, token_accuracy, exact_match or accuracy)", s.Quality)}
	}
	if want != "" {
		for _, r := range runs {
			if m, _ := r.Params.Get("metric"); m != want {
				return &SpecError{s.File, "quality", fmt.Sprintf("%s needs --metric %s in every run; run %s has %q", s.Quality, want, r.Name, m)}
			}
		}
	}
	return nil
}

// metricField is the results field of a --metric ("" for the loss).
func metricField(metric string) string {
	for f, m := range qualities {
		if m == metric && m != "" {
			return f
		}
	}
	return ""
}

// Param is one setting of a run.
type Param struct{ Key, Value string }

// Params are a run's settings, in canonical order (keyOrder).
type Params []Param

// Get returns the value of key.
func (p Params) Get(key string) (string, bool) {
	for _, kv := range p {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Float returns key's value as a number (NaN when absent or not one).
func (p Params) Float(key string) float64 {
	v, ok := p.Get(key)
	if !ok {
		return math.NaN()
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// Without returns p without the settings named.
func (p Params) Without(keys ...string) Params {
	var out Params
	for _, kv := range p {
		if !slices.Contains(keys, kv.Key) {
			out = append(out, kv)
		}
	}
	return out
}

// Only returns the settings of p named by keys, in p's order.
func (p Params) Only(keys ...string) Params {
	var out Params
	for _, kv := range p {
		if slices.Contains(keys, kv.Key) {
			out = append(out, kv)
		}
	}
	return out
}

// String is "key=value,…" (the empty string for no settings).
func (p Params) String() string {
	parts := make([]string, len(p))
	for i, kv := range p {
		parts[i] = kv.Key + "=" + kv.Value
	}
	return strings.Join(parts, ",")
}

// Map returns the settings as a map.
func (p Params) Map() map[string]string {
	m := make(map[string]string, len(p))
	for _, kv := range p {
		m[kv.Key] = kv.Value
	}
	return m
}

// keyOrder puts the settings that tell runs apart first: the method, the
// dataset, the budgets, DST's options, then the rest alphabetically, the
// learning rate and the seed last.
var keyOrder = []string{KeyMethod, KeyDataset, "eps", "rank", "prompt-len", "distance", "silo", "normalize", "churn", "threshold"}

func keyRank(k string) (int, string) {
	if i := slices.Index(keyOrder, k); i >= 0 {
		return i, ""
	}
	switch k {
	case KeyLR:
		return len(keyOrder) + 1, ""
	case KeySeed:
		return len(keyOrder) + 2, ""
	}
	return len(keyOrder), k
}

func sortParams(p Params) {
	sort.SliceStable(p, func(i, j int) bool {
		ri, si := keyRank(p[i].Key)
		rj, sj := keyRank(p[j].Key)
		if ri != rj {
			return ri < rj
		}
		return si < sj
	})
}

// Run is one training run of a sweep.
type Run struct {
	Name   string // its directory's name: the method and the settings that vary across the sweep
	Params Params // every setting, the method always among them
}

// Runs expands the grid: for every block, every combination of its axes'
// values (the block's settings over Train's), in the order the values are
// listed, the last axis (in canonical order) varying fastest.
func (s *Spec) Runs() ([]Run, error) {
	var all []Params
	for i, block := range s.Grid {
		merged := map[string][]string{}
		for k, v := range s.Train {
			merged[k] = v
		}
		for k, v := range block {
			merged[k] = v
		}
		if _, ok := merged[KeyMethod]; !ok {
			merged[KeyMethod] = []string{"full"}
		}
		var axes Params // the keys, in order
		for k := range merged {
			axes = append(axes, Param{Key: k})
		}
		sortParams(axes)
		n := 1
		for _, a := range axes {
			n *= len(merged[a.Key])
			if n > maxRuns {
				return nil, &SpecError{s.File, fmt.Sprintf("grid[%d]", i), fmt.Sprintf("more than %d runs", maxRuns)}
			}
		}
		if len(all)+n > maxRuns {
			return nil, &SpecError{s.File, "grid", fmt.Sprintf("more than %d runs", maxRuns)}
		}
		idx := make([]int, len(axes))
		for range n {
			p := make(Params, len(axes))
			for j, a := range axes {
				p[j] = Param{a.Key, merged[a.Key][idx[j]]}
			}
			all = append(all, p)
			for j := len(axes) - 1; j >= 0; j-- {
				idx[j]++
				if idx[j] < len(merged[axes[j].Key]) {
					break
				}
				idx[j] = 0
			}
		}
	}
	varying := distinguishingKeys(all)
	runs := make([]Run, len(all))
	seen := map[string]int{}
	for i, p := range all {
		method, _ := p.Get(KeyMethod)
		name := method
		if rest := p.Only(varying...).Without(KeyMethod).String(); rest != "" {
			name += "," + rest
		}
		name = dirName(name)
		if j, dup := seen[name]; dup {
			if p.String() == all[j].String() {
				return nil, &SpecError{s.File, "grid", fmt.Sprintf("run %s is listed twice", name)}
			}
			return nil, &SpecError{s.File, "grid", fmt.Sprintf("runs %d and %d are both named %s: their settings differ only in characters a directory name cannot hold", j+1, i+1, name)}
		}
		seen[name] = i
		runs[i] = Run{Name: name, Params: p}
	}
	return runs, nil
}

// distinguishingKeys lists the settings that tell runs apart besides
// their method: those that vary (varyingKeys) among the runs of one
// method. A setting that only some methods have, with one value each
// (a --trainable given to DST's runs only, LoRA's --alpha), names no run
// and heads no column.
func distinguishingKeys(all []Params) []string {
	byMethod := map[string][]Params{}
	for _, p := range all {
		m, _ := p.Get(KeyMethod)
		byMethod[m] = append(byMethod[m], p)
	}
	var out []string
	for _, k := range varyingKeys(all) {
		if k == KeyMethod {
			out = append(out, k)
			continue
		}
		for _, ps := range byMethod {
			if slices.Contains(varyingKeys(ps), k) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// dirName makes a run's name a safe directory name: every character but
// letters, digits and ".,=+-_" becomes "_" (a regular expression's "^|()"
// or a path's "/").
func dirName(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".,=+-_", r):
			return r
		}
		return '_'
	}, name)
}

// varyingKeys lists the settings that do not have one value in every run
// (absent counts as a value).
func varyingKeys(all []Params) []string {
	values := map[string]map[string]bool{}
	for _, p := range all {
		for _, kv := range p {
			if values[kv.Key] == nil {
				values[kv.Key] = map[string]bool{}
			}
			values[kv.Key][kv.Value] = true
		}
	}
	var out []string
	for k, vs := range values {
		present := 0
		for _, p := range all {
			if _, ok := p.Get(k); ok {
				present++
			}
		}
		if len(vs) > 1 || present < len(all) {
			out = append(out, k)
		}
	}
	return out
}

// Args are the dstune train arguments of a run: the model, then one
// --flag=value per setting (a dataset becomes --data and --valid), the
// tokenizer, and --out dir.
func (s *Spec) Args(r Run, dir string) []string {
	args := []string{s.Model}
	for _, kv := range r.Params {
		if kv.Key == KeyDataset {
			d := s.Datasets[kv.Value]
			args = append(args, "--data="+d.Data)
			if d.Valid != "" {
				args = append(args, "--valid="+d.Valid)
			}
			continue
		}
		args = append(args, "--"+kv.Key+"="+kv.Value)
	}
	if s.Tokenizer != "" {
		args = append(args, "--tokenizer="+s.Tokenizer)
	}
	return append(args, "--out="+dir)
}
