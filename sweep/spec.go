package sweep

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dstune/dstune/internal/jsontext"
	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/train"
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

// maxSpecBytes bounds a specification file: a grid of runs, not data.
const maxSpecBytes = 16 << 20

// LoadSpec reads a specification. flags are the settings a run may have
// (dstune train's flag names); every key is checked against them.
func LoadSpec(path string, flags []string) (*Spec, error) {
	data, err := regfile.ReadFile(path, maxSpecBytes)
	if err != nil {
		return nil, err
	}
	return ParseSpec(path, data, flags)
}

// specErrorf returns a constructor of SpecErrors for the spec at path.
func specErrorf(path string) func(where, format string, args ...any) error {
	return func(where, format string, args ...any) error {
		return &SpecError{File: path, Where: where, Msg: fmt.Sprintf(format, args...)}
	}
}

// specFields are the keys of a spec's top-level object.
var specFields = []string{"title", "model", "tokenizer", "datasets", "train", "grid", "quality", "keep_deltas", "plots", "tables"}

// ParseSpec parses a specification read from path.
func ParseSpec(path string, data []byte, flags []string) (*Spec, error) {
	bad := specErrorf(path)
	top, err := readTopObject(path, data)
	if err != nil {
		return nil, err
	}
	for key := range top {
		if !slices.Contains(specFields, key) {
			return nil, bad(key, "unknown field %q (want %s)", key, strings.Join(specFields, ", "))
		}
	}
	s := &Spec{File: path, Datasets: map[string]Dataset{}}
	var model, tokenizer string
	for _, f := range []struct {
		key string
		dst *string
	}{{"title", &s.Title}, {"model", &model}, {"tokenizer", &tokenizer}, {"quality", &s.Quality}} {
		if err := decodeField(path, f.key, top[f.key], f.dst); err != nil {
			return nil, err
		}
	}
	if err := decodeField(path, "keep_deltas", top["keep_deltas"], &s.KeepDeltas); err != nil {
		return nil, err
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
	if model == "" {
		return nil, bad("model", "required: the ONNX file every run fine-tunes")
	}
	s.Model = abs(model)
	if tokenizer != "" {
		s.Tokenizer = abs(tokenizer)
	}
	var datasets map[string]json.RawMessage
	if err := decodeField(path, "datasets", top["datasets"], &datasets); err != nil {
		return nil, err
	}
	for name, raw := range datasets {
		var d Dataset
		if err := decodeStrict(path, "datasets."+name, raw, &d); err != nil {
			return nil, err
		}
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
	var common map[string]json.RawMessage // "train": every run's settings
	if err := decodeField(path, "train", top["train"], &common); err != nil {
		return nil, err
	}
	if s.Train, err = parseSettings(path, "train", common, known); err != nil {
		return nil, err
	}
	var grid []json.RawMessage
	if err := decodeField(path, "grid", top["grid"], &grid); err != nil {
		return nil, err
	}
	if len(grid) == 0 {
		if _, given := top["grid"]; given && string(top["grid"]) != "null" {
			// Absent, train's settings are the one block; empty, there
			// would be no run at all.
			return nil, &SpecError{path, "grid", "empty: leave it out to run train's settings alone, or give it blocks of settings"}
		}
		grid = []json.RawMessage{json.RawMessage("{}")}
	}
	for i, raw := range grid {
		where := fmt.Sprintf("grid[%d]", i)
		var settings map[string]json.RawMessage
		if err := decodeStrict(path, where, raw, &settings); err != nil {
			return nil, err
		}
		block, err := parseSettings(path, where, settings, known)
		if err != nil {
			return nil, err
		}
		s.Grid = append(s.Grid, block)
	}
	if err := s.checkMethods(); err != nil {
		return nil, err
	}
	var plots, tables []json.RawMessage
	if err := decodeField(path, "plots", top["plots"], &plots); err != nil {
		return nil, err
	}
	if err := decodeField(path, "tables", top["tables"], &tables); err != nil {
		return nil, err
	}
	fileOf := map[string]int{} // a plot's file → the plot writing it
	for i, raw := range plots {
		where := fmt.Sprintf("plots[%d]", i)
		p, err := parsePlot(path, where, raw, known)
		if err != nil {
			return nil, err
		}
		if j, dup := fileOf[p.File]; dup {
			return nil, bad(where+".file", "%q is also the file of plots[%d]: each plot needs its own file, or one overwrites the other", p.File, j)
		}
		fileOf[p.File] = i
		s.Plots = append(s.Plots, p)
	}
	for i, raw := range tables {
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

// utf8BOM is the byte-order mark some editors write at the start of a
// UTF-8 file; a spec may start with one (as data files may).
var utf8BOM = []byte("\uFEFF")

// readTopObject reads a spec's one JSON object, keeping its values raw.
// Its errors say where the text goes wrong (line and column), what type
// of value was found instead of the object, and which key an object
// gives twice: JSON's decoders let the last of two equal keys win
// silently, and a spec's "lr" given twice is a mistake to report, not to
// guess at.
func readTopObject(path string, data []byte) (map[string]json.RawMessage, error) {
	bad := specErrorf(path)
	for _, bom := range []struct{ mark, name string }{{"\x00\x00\xFE\xFF", "UTF-32"}, {"\xFF\xFE\x00\x00", "UTF-32"}, {"\xFE\xFF", "UTF-16"}, {"\xFF\xFE", "UTF-16"}} {
		if bytes.HasPrefix(data, []byte(bom.mark)) {
			return nil, bad("", "the file is %s (its byte-order mark says so); a spec must be UTF-8", bom.name)
		}
	}
	data = bytes.TrimPrefix(data, utf8BOM)
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, bad("", "the file is empty: want a JSON object (see dstune sweep in the README)")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, bad("", "%s", jsonSyntaxMessage(data, err))
	}
	if dec.More() {
		next := dec.InputOffset() // the end of the object; what follows starts after blanks
		for next < int64(len(data)) && strings.IndexByte(" \t\r\n", data[next]) >= 0 {
			next++
		}
		line, col := jsontext.LineColumn(data, next+1)
		return nil, bad("", "line %d, column %d: more than one JSON value, or text after the spec's object: a spec is one JSON object", line, col)
	}
	if where, err := duplicateKey(json.NewDecoder(bytes.NewReader(raw)), ""); err == nil && where != "" {
		return nil, bad(where, "given twice in one object: keep one (JSON readers silently use the last)")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return nil, bad("", "want a JSON object, found %s", jsonKind(raw))
	}
	return top, nil
}

// jsonSyntaxMessage describes a JSON decoding error, a syntax error with
// its line and column.
func jsonSyntaxMessage(data []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := jsontext.LineColumn(data, se.Offset)
		return fmt.Sprintf("line %d, column %d: %v", line, col, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected EOF: the JSON ends before its last object or list is closed"
	}
	return err.Error()
}

// duplicateKey walks the JSON value dec reads next and returns the place
// (a JSON path such as grid[1].lr) of the first object key given twice
// in its object, or "" when every key is given once. A syntax error ends
// the walk with the error.
func duplicateKey(dec *json.Decoder, where string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return "", err
			}
			key, _ := kt.(string)
			at := key
			if where != "" {
				at = where + "." + key
			}
			if seen[key] {
				return at, nil
			}
			seen[key] = true
			if dup, err := duplicateKey(dec, at); dup != "" || err != nil {
				return dup, err
			}
		}
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if dup, err := duplicateKey(dec, fmt.Sprintf("%s[%d]", where, i)); dup != "" || err != nil {
				return dup, err
			}
		}
	default:
		return "", nil // a scalar
	}
	_, err = dec.Token() // the closing '}' or ']'
	return "", err
}

// jsonKind names the type of a JSON value, as a message says it.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "a bool"
	case 'n':
		return "null"
	}
	return "a number"
}

// goKind names what a Go value decodes from, as a message says it.
func goKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16,
		reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// decodeField decodes the value of a spec's key (absent or null: v stays
// as it is), saying what type was wanted where another was found.
func decodeField(path, where string, raw json.RawMessage, v any) error {
	if raw == nil {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &SpecError{path, where, fmt.Sprintf("want %s, found %s", goKind(reflect.TypeOf(v).Elem()), jsonKind(raw))}
	}
	return nil
}

// decodeStrict decodes an object into a struct (a dataset, a plot, a
// table; refusing unknown fields) or a map; a value of the wrong type is
// an error at its field, and anything but an object one at where.
func decodeStrict(path, where string, raw json.RawMessage, v any) error {
	if k := jsonKind(raw); k != "an object" {
		return &SpecError{path, where, "want an object, found " + k}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		at := where
		if te.Field != "" {
			at += "." + te.Field
		}
		return &SpecError{path, at, fmt.Sprintf("want %s, found %s", goKind(te.Type), article(te.Value))}
	}
	return &SpecError{path, where, strings.TrimPrefix(err.Error(), "json: ")}
}

// article puts "a" or "an" before a JSON type's name ("array" is a list).
func article(value string) string {
	switch value {
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "null":
		return value
	}
	if strings.HasPrefix(value, "number") {
		return "a number"
	}
	return "a " + value
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
	seen := map[string]string{} // canonical value → its text
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
		c := canonicalValue(s)
		if o, dup := seen[c]; dup {
			return nil, fmt.Errorf("the value %s is listed twice (as %s)", s, o)
		}
		seen[c] = s
		out = append(out, s)
	}
	return out, nil
}

// canonicalValue is a setting's text as a number where it is one (an
// integer as Go's flags read it, base prefixes included, or a float), so
// that values equal as numbers (1e-3 and 0.001; 1 and 01, which dstune's
// integer flags read as 1) are one value.
func canonicalValue(s string) string {
	if n, err := strconv.ParseInt(s, 0, 64); err == nil {
		return "n:" + strconv.FormatInt(n, 10)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return "n:" + strconv.FormatInt(int64(f), 10)
		}
		return "n:" + strconv.FormatFloat(f, 'g', -1, 64)
	}
	return "s:" + s
}

// splitWhere takes the "where" object out of a plot or table.
func splitWhere(path, where string, raw json.RawMessage, known map[string]bool) (json.RawMessage, map[string][]string, error) {
	var fields map[string]json.RawMessage
	if err := decodeStrict(path, where, raw, &fields); err != nil {
		return nil, nil, err
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
	if err := decodeStrict(path, where, rest, &p); err != nil {
		return p, err
	}
	p.Where = sel
	switch {
	case !slices.Contains(plotKinds, p.Kind):
		return p, &SpecError{path, where + ".kind", fmt.Sprintf("unknown plot kind %q (want %s)", p.Kind, strings.Join(plotKinds, ", "))}
	case p.File == "" || filepath.Base(p.File) != p.File || !strings.EqualFold(filepath.Ext(p.File), ".png"):
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
	if err := decodeStrict(path, where, rest, &t); err != nil {
		return t, err
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

// checkMethods refuses a method dstune train does not have, where the
// spec names it: train's parser, given an unknown method together with
// the options of a known one, complains about the options instead.
func (s *Spec) checkMethods() error {
	methods := slices.DeleteFunc(train.RegisteredMethods(), func(m string) bool { return m == train.MethodFull })
	methods = append([]string{train.MethodFull}, methods...) // the default first, as dstune train lists them
	check := func(where string, values []string) error {
		for _, m := range values {
			if !slices.Contains(methods, m) {
				return &SpecError{s.File, where, fmt.Sprintf("unknown method %q (want %s)", m, orList(methods))}
			}
		}
		return nil
	}
	if err := check("train."+KeyMethod, s.Train[KeyMethod]); err != nil {
		return err
	}
	for i, block := range s.Grid {
		if err := check(fmt.Sprintf("grid[%d].%s", i, KeyMethod), block[KeyMethod]); err != nil {
			return err
		}
	}
	return nil
}

// orList is "a, b or c".
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
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
	if err := s.checkReportLayout(runs); err != nil {
		return err
	}
	// Every quality is measured on the validation data: a run without
	// any would train for nothing the report can show (no learning rate
	// could be best), so it is refused now rather than after the runs.
	for _, r := range runs {
		name, _ := r.Params.Get(KeyDataset)
		if s.Datasets[name].Valid == "" {
			return &SpecError{s.File, "datasets." + name + ".valid", fmt.Sprintf(
				"required: the report compares the runs by their %s, measured on the validation data; run %s trains on dataset %q, which has none "+
					"(to compare the runs by their loss on the training data, give its training file as \"valid\" too)", qualityName(s.Quality), r.Name, name)}
		}
	}
	return nil
}

// checkReportLayout lays the report's tables and plots out on the runs
// before any has trained: a where that matches no run, two runs sharing
// a table's cell or a plot's bar, a DST plot of runs that write no DST
// delta, more panels than a plot draws, are mistakes of the spec, found
// now rather than after hours of training.
func (s *Spec) checkReportLayout(runs []Run) error {
	planned := make([]*Result, len(runs))
	for i, r := range runs {
		method, _ := r.Params.Get(KeyMethod)
		planned[i] = &Result{Run: r.Name, Params: r.Params.Map(), Method: method, Status: StatusDone,
			Final: map[string]float64{}, Initial: map[string]float64{}, params: r.Params}
	}
	for i, t := range s.Tables {
		where := fmt.Sprintf("tables[%d]", i)
		if err := checkWhere(t.Where, runs); err != nil {
			return &SpecError{s.File, where, err.Error()}
		}
		if err := writePivot(&bytes.Buffer{}, t, planned, s.Quality); err != nil {
			return &SpecError{s.File, where, err.Error()}
		}
	}
	for i, p := range s.Plots {
		if err := s.checkPlotLayout(p, runs, planned); err != nil {
			return &SpecError{s.File, plotPlace(i, p), err.Error()}
		}
	}
	return nil
}

// plotPlace names a plot in messages: plots[0] (budget.png).
func plotPlace(i int, p Plot) string { return fmt.Sprintf("plots[%d] (%s)", i, p.File) }

// maxPanels bounds an overlap-steps plot: a heat map per run.
const maxPanels = 12

// checkPlotLayout lays one plot out on the planned results of the grid.
func (s *Spec) checkPlotLayout(p Plot, runs []Run, planned []*Result) error {
	if err := checkWhere(p.Where, runs); err != nil {
		return err
	}
	sel := selectResults(planned, p.Where)
	switch p.Kind {
	case PlotModules, PlotOverlapSteps, PlotOverlapRuns:
		for _, r := range sel {
			if r.Method != train.MethodDST {
				article := "a"
				if strings.HasPrefix(p.Kind, "o") {
					article = "an"
				}
				return fmt.Errorf("%s %s plot shows DST's subsets; run %s is %s, which has none: restrict the plot with \"where\": {\"method\": [\"dst\"]}", article, p.Kind, r.Run, r.Method)
			}
		}
	}
	q := s.Quality
	if p.Quality != "" {
		q = p.Quality
	}
	pts := points(settings(sel, q), q)
	switch p.Kind {
	case PlotBars:
		_, _, _, err := pointGrid(pts, p.X, p.Group)
		return err
	case PlotModules:
		_, _, _, err := pointGrid(pts, nil, p.Group)
		return err
	case PlotOverlapSteps:
		// A panel per run of each point's best learning rate: at least
		// the runs of the learning rate with the fewest.
		panels := 0
		for _, pt := range pts {
			fewest := math.MaxInt
			for _, st := range pt.Settings {
				fewest = min(fewest, len(st.Results))
			}
			panels += fewest
		}
		if panels > maxPanels {
			return fmt.Errorf("an overlap-steps plot draws a heat map per run of each setting's best learning rate, at most %d; it selects %d: narrow its \"where\"", maxPanels, panels)
		}
	}
	return nil
}

// checkWhere says which of a where's settings matches no run of the grid
// (nil when some run matches them all).
func checkWhere(where map[string][]string, runs []Run) error {
	if len(where) == 0 {
		return nil
	}
	for _, r := range runs {
		if matches(r.Params, where) {
			return nil
		}
	}
	keys := make([]string, 0, len(where))
	for k := range where {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		one := map[string][]string{k: where[k]}
		if slices.ContainsFunc(runs, func(r Run) bool { return matches(r.Params, one) }) {
			continue
		}
		var values []string // the grid's values of k
		for _, r := range runs {
			if v, ok := r.Params.Get(k); ok && !slices.Contains(values, v) {
				values = append(values, v)
			}
		}
		if len(values) == 0 {
			return fmt.Errorf("where.%s: no run of the grid sets %s", k, k)
		}
		return fmt.Errorf("where.%s: %s matches no run of the grid (its values: %s)", k, strings.Join(where[k], ", "), strings.Join(values, ", "))
	}
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+strings.Join(where[k], "|"))
	}
	return fmt.Errorf("where matches no run of the grid: each of its settings matches some run, but none has all of %s", strings.Join(parts, ", "))
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

	block int // the index of the grid block it comes from, for placeOf
}

// placeOf is where in the spec a run's setting comes from: its grid
// block (grid[1].eps), else "train" (train.eps); "" when the spec does
// not set it (the method "full" a block without one gets).
func (s *Spec) placeOf(r Run, key string) string {
	if r.block < len(s.Grid) {
		if _, ok := s.Grid[r.block][key]; ok {
			return fmt.Sprintf("grid[%d].%s", r.block, key)
		}
	}
	if _, ok := s.Train[key]; ok {
		return "train." + key
	}
	return ""
}

// Runs expands the grid: for every block, every combination of its axes'
// values (the block's settings over Train's), in the order the values are
// listed, the last axis (in canonical order) varying fastest.
func (s *Spec) Runs() ([]Run, error) {
	var (
		all    []Params
		blocks []int // all[j] comes from the grid block blocks[j]
	)
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
			blocks = append(blocks, i)
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
	settings := map[string]int{} // a run's settings as values, not texts
	for i, p := range all {
		method, _ := p.Get(KeyMethod)
		name := method
		if rest := p.Only(varying...).Without(KeyMethod).String(); rest != "" {
			name += "," + rest
		}
		name = shortName(dirName(name))
		if j, dup := seen[name]; dup {
			if p.String() == all[j].String() {
				return nil, &SpecError{s.File, "grid", fmt.Sprintf("run %s is listed twice", name)}
			}
			return nil, &SpecError{s.File, "grid", fmt.Sprintf("runs %d and %d are both named %s: their settings differ only in characters a directory name cannot hold", j+1, i+1, name)}
		}
		seen[name] = i
		key := make([]string, len(p))
		for k, kv := range p {
			key[k] = kv.Key + "=" + canonicalValue(kv.Value)
		}
		if j, dup := settings[strings.Join(key, ",")]; dup {
			return nil, &SpecError{s.File, "grid", fmt.Sprintf("runs %d and %d have the same settings (%s and %s): give each run once", j+1, i+1, all[j], p)}
		}
		settings[strings.Join(key, ",")] = i
		runs[i] = Run{Name: name, Params: p, block: blocks[i]}
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

// maxNameBytes bounds a run's directory name, within the 255 bytes file
// systems take for a name with room to spare (".tmp" suffixes and the
// like).
const maxNameBytes = 200

// shortName keeps a name of at most maxNameBytes as it is and cuts a
// longer one (a long --trainable expression, say), ending it with a hash
// of the whole so that names cut alike stay apart.
func shortName(name string) string {
	if len(name) <= maxNameBytes {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return name[:maxNameBytes-17] + "-" + hex.EncodeToString(sum[:8])
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
