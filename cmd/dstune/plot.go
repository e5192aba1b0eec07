package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/train"
)

func init() {
	register(&command{
		name:     "plot",
		synopsis: []string{"RUN... -o CURVES.png [--smooth 10] [--from 20] [--title T] [--force]"},
		summary:  "plot the loss curves of training runs (metrics.jsonl) into a PNG and print their figures",
		flags:    func(fs *flag.FlagSet) { new(plotFlags).define(fs) },
		run:      runPlot,
	})
}

// runSeries is what plot reads from one run directory.
type runSeries struct {
	dir, label  string
	method      string            // config.json's
	settings    map[string]string // config.json's settings by their flag names (runSettings)
	steps, loss []float64
	validSteps  []float64
	valid       []float64
	// DST: how far Algorithm 2's thresholds were from keeping exactly ε,
	// from --from on: eps_alg2 (started from the exact threshold, as
	// dstune runs it) and eps_paper_alg2 (the printed algorithm, when the
	// run tracked it).
	alg2, paper  accuracy
	siloK        map[string]int64
	fallbacks    int
	dstMS, optMS []float64
	configErr    error // config.json there but unreadable
	alg2Before   int   // DST steps tracking Algorithm 2 before --from
}

// plotFlags are dstune plot's flags.
type plotFlags struct {
	out, title *string
	smooth     *int
	from       *int64
	force      *bool
}

func (f *plotFlags) define(fs *flag.FlagSet) {
	f.out = fs.String("o", "", "the PNG to write")
	f.smooth = fs.Int("smooth", 10, "plot the training loss as a moving average over this many steps (1: raw)")
	f.from = fs.Int64("from", 20, "the first step of the Algorithm 2 accuracy figures (the paper's ramp-up ends near step 20)")
	f.title = fs.String("title", "", "the plot's title (default: the model's file name)")
	f.force = fs.Bool("force", false, "overwrite an existing CURVES.png")
}

func runPlot(args []string, stdout, stderr io.Writer) error {
	var f plotFlags
	fs := newFlagSet("plot", f.define)
	out, smooth, from, title := f.out, f.smooth, f.from, f.title
	runs, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return usagef("want at least one run directory")
	}
	if *out == "" {
		return usagef("-o CURVES.png is required")
	}
	if !strings.EqualFold(filepath.Ext(*out), ".png") {
		return usagef("-o %s: plot writes a PNG; give a file name ending in .png", *out)
	}
	if *smooth < 1 {
		return usagef("--smooth must be at least 1")
	}
	if *from < 0 {
		return usagef("--from %d: want a step ≥ 0", *from)
	}
	var inputs []outpath.Input
	for _, dir := range runs {
		for _, name := range []string{train.MetricsFile, train.ConfigFile} {
			inputs = append(inputs, outpath.Input{Path: filepath.Join(dir, name), What: filepath.Join(dir, name)})
		}
	}
	if err := checkOutputFile("-o", *out, *f.force, inputs...); err != nil {
		return err
	}
	var series []*runSeries
	for _, dir := range runs {
		s, err := readRunSeries(dir, *from)
		if err != nil {
			return err
		}
		if s.configErr != nil {
			fmt.Fprintf(stderr, "plot: %v: the run is labelled by its directory, without its settings\n", s.configErr)
		}
		series = append(series, s)
	}
	labelRuns(series)
	if *title == "" {
		if cfg, err := train.LoadConfig(runs[0]); err == nil {
			*title = "loss, " + filepath.Join(filepath.Base(filepath.Dir(cfg.Model)), filepath.Base(cfg.Model))
		}
	}
	if err := writeLossPlot(*out, *title, series, *smooth, atomicfile.Options{NoReplace: !*f.force}); err != nil {
		return writtenOutput("-o", err)
	}
	printRunFigures(stdout, series, *from)
	fmt.Fprintf(stdout, "plot: %s\n", *out)
	return nil
}

// maxMetricsLine bounds a line of metrics.jsonl (a DST run's records name
// every silo: kilobytes on large models); tests lower it.
var maxMetricsLine = 64 << 20

// readRunSeries reads RUN/config.json (for the label) and RUN/metrics.jsonl.
func readRunSeries(dir string, from int64) (*runSeries, error) {
	s := &runSeries{dir: dir, label: filepath.Base(dir), alg2: newAccuracy(), paper: newAccuracy(), siloK: map[string]int64{}}
	cfg, err := train.LoadConfig(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.configErr = err
	}
	if err == nil {
		s.label, s.method = cfg.Method, cfg.Method
		if c, err := dst.ParseOptions(cfg.DST, cfg.Seed); len(cfg.DST) > 0 && err == nil {
			s.label = fmt.Sprintf("dst ε=%g", c.Eps)
			def := dst.DefaultOptions()
			for _, part := range []struct {
				differs bool
				text    string
			}{
				{c.Distance != def.Distance, c.Distance},
				{c.Silo != def.Silo, "silo " + c.Silo},
				{c.Normalize != "", c.Normalize + "-norm"},
				{c.Threshold != def.Threshold, c.Threshold},
				{!c.Churn, "no churn"},
				{c.RefineSteps != def.RefineSteps, fmt.Sprintf("m=%d", c.RefineSteps)},
				{c.Factor != def.Factor, fmt.Sprintf("r=%g", c.Factor)},
			} {
				if part.differs {
					s.label += " " + part.text
				}
			}
		}
	}
	if data, err := regfile.ReadRegular(filepath.Join(dir, train.ConfigFile), maxConfigBytes); err == nil {
		s.settings = runSettings(data)
	}
	path := filepath.Join(dir, train.MetricsFile)
	f, _, err := regfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type siloRec struct {
		Eps          float64  `json:"eps"`
		K            int64    `json:"k"`
		EpsAlg2      *float64 `json:"eps_alg2"`
		EpsPaperAlg2 *float64 `json:"eps_paper_alg2"`
	}
	var rec struct {
		Step           *int64             `json:"step"`
		Loss           *float64           `json:"loss"`
		ValidLoss      *float64           `json:"valid_loss"`
		Eps            *float64           `json:"eps"`
		EpsAlg2        *float64           `json:"eps_alg2"`
		EpsPaperAlg2   *float64           `json:"eps_paper_alg2"`
		ExactFallbacks int                `json:"exact_fallbacks"`
		DstMS          *float64           `json:"dst_ms"`
		OptimizerMS    *float64           `json:"optimizer_ms"`
		Silos          map[string]siloRec `json:"silos"`
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, maxMetricsLine)
	line := 1
	for ; sc.Scan(); line++ {
		rec.Step, rec.Loss, rec.ValidLoss, rec.Eps, rec.EpsAlg2, rec.EpsPaperAlg2, rec.DstMS, rec.OptimizerMS, rec.Silos = nil, nil, nil, nil, nil, nil, nil, nil, nil
		rec.ExactFallbacks = 0
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		if text[0] != '{' {
			return nil, fmt.Errorf("%s:%d: not a JSON object: not a metrics record", path, line)
		}
		if err := json.Unmarshal(text, &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: %s", path, line, jsonFieldError(err))
		}
		switch {
		case rec.Step == nil:
			return nil, fmt.Errorf("%s:%d: the record has no \"step\"", path, line)
		case *rec.Step < 0 || *rec.Step > maxExactStep:
			return nil, fmt.Errorf("%s:%d: step %d is out of range (0 to 2⁵³)", path, line, *rec.Step)
		}
		st := float64(*rec.Step)
		// Training appends a record a step and a resumed run cuts the file
		// back to its checkpoint, so steps only go up; anything else (files
		// joined or edited by hand) would draw curves that double back and
		// figures of the wrong steps.
		if rec.Loss != nil {
			if n := len(s.steps); n > 0 && st <= s.steps[n-1] {
				return nil, fmt.Errorf("%s:%d: training loss of step %d after that of step %d: the records are out of order", path, line, *rec.Step, int64(s.steps[n-1]))
			}
			s.steps, s.loss = append(s.steps, st), append(s.loss, *rec.Loss)
		}
		if rec.ValidLoss != nil {
			if n := len(s.validSteps); n > 0 && st <= s.validSteps[n-1] {
				return nil, fmt.Errorf("%s:%d: validation loss of step %d after that of step %d: the records are out of order", path, line, *rec.Step, int64(s.validSteps[n-1]))
			}
			s.validSteps, s.valid = append(s.validSteps, st), append(s.valid, *rec.ValidLoss)
		}
		if *rec.Step < from && rec.Eps != nil && *rec.Eps > 0 && rec.EpsAlg2 != nil {
			s.alg2Before++
		}
		if *rec.Step >= from && rec.Eps != nil && *rec.Eps > 0 {
			s.alg2.addOverall(rec.EpsAlg2, *rec.Eps)
			s.paper.addOverall(rec.EpsPaperAlg2, *rec.Eps)
			for name, sr := range rec.Silos {
				s.siloK[name] = sr.K
				if sr.Eps > 0 {
					s.alg2.addSilo(name, sr.EpsAlg2, sr.Eps)
					s.paper.addSilo(name, sr.EpsPaperAlg2, sr.Eps)
				}
			}
		}
		s.fallbacks += rec.ExactFallbacks
		if rec.DstMS != nil && rec.OptimizerMS != nil && *rec.Step > 1 {
			s.dstMS, s.optMS = append(s.dstMS, *rec.DstMS), append(s.optMS, *rec.OptimizerMS)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes: not a metrics record", path, line, maxMetricsLine)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.loss) == 0 {
		return nil, fmt.Errorf("%s: no training steps recorded", path)
	}
	return s, nil
}

// maxConfigBytes bounds a run's config.json read for its settings.
const maxConfigBytes = 16 << 20

// runSettings reads a run's settings from its config.json, named as
// dstune train's flags name them ("lr", "rank", "prompt-len", "seed"),
// each value as text; the records of what the run read (sha256s, sizes)
// and the settings that change no result (threads, checkpoints) are left
// out, and so are the method and the DST options the run's label shows
// already.
func runSettings(data []byte) map[string]string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var cfg map[string]any
	if dec.Decode(&cfg) != nil {
		return nil
	}
	out := map[string]string{}
	var walk func(path []string, v any)
	walk = func(path []string, v any) {
		if m, ok := v.(map[string]any); ok {
			for k, x := range m {
				walk(append(slices.Clone(path), k), x)
			}
			return
		}
		name := settingName(path)
		if name == "" {
			return
		}
		switch x := v.(type) {
		case string:
			out[name] = x
		case json.Number:
			if f, err := x.Float64(); err == nil {
				out[name] = fmt.Sprintf("%g", f)
			} else {
				out[name] = x.String()
			}
		default:
			text, _ := json.Marshal(x)
			out[name] = string(text)
		}
	}
	walk(nil, cfg)
	return out
}

// settingName names a config.json field (its path of keys) as the flag
// that sets it, or "" for one that is no setting to tell runs apart by.
func settingName(path []string) string {
	switch path[0] {
	case "model_sha256", "data_sha256", "valid_sha256", "tokenizer_sha256", "data_size", "valid_size", "data_changes",
		"text_encoding", "threads", "eval_every", "checkpoint_every", "checkpoint_minutes", "method":
		return ""
	case "dst":
		// The options readRunSeries puts into the label already.
		if len(path) == 2 && !slices.Contains([]string{"eps", "distance", "silo", "normalize", "threshold", "churn", "refine_steps", "factor"}, path[1]) {
			return strings.ReplaceAll(path[1], "_", "-")
		}
		return ""
	case "optimizer":
		switch {
		case len(path) == 2 && path[1] == "name":
			return "optimizer"
		case len(path) == 3 && path[2] == "eps":
			return path[1] + "-eps" // adamw-eps: not DST's ε
		case len(path) == 3:
			return strings.ReplaceAll(path[2], "_", "-")
		}
	case "schedule":
		if len(path) == 2 && path[1] == "name" {
			return "schedule"
		}
		if len(path) == 2 {
			return path[1] // warmup
		}
	case "lora":
		if len(path) == 2 {
			return strings.ReplaceAll(path[1], "_", "-")
		}
	case "prompt":
		if len(path) == 2 && path[1] == "length" {
			return "prompt-len"
		}
		if len(path) == 2 {
			return "prompt-" + path[1]
		}
	}
	return strings.ReplaceAll(strings.Join(path, "."), "_", "-")
}

// labelRuns adds to every run's label the settings that differ among the
// plotted runs of its method (lr, seed, rank, …; a setting absent from
// some counts as differing): the method and DST's options are the label
// already. Runs that still look alike are told apart by their
// directories.
func labelRuns(series []*runSeries) {
	byMethod := map[string][]*runSeries{}
	for _, s := range series {
		if s.settings != nil { // a run without config.json is labelled by its directory
			byMethod[s.method] = append(byMethod[s.method], s)
		}
	}
	for _, group := range byMethod {
		var differ []string
		for _, s := range group {
			for k := range s.settings {
				if slices.Contains(differ, k) {
					continue
				}
				first, firstOK := group[0].settings[k]
				for _, o := range group {
					if v, ok := o.settings[k]; ok != firstOK || v != first {
						differ = append(differ, k)
						break
					}
				}
			}
		}
		// The learning rate first, the seed last, the rest by name.
		rank := func(k string) int {
			switch k {
			case "lr":
				return 0
			case "seed":
				return 2
			}
			return 1
		}
		slices.SortFunc(differ, func(a, b string) int {
			if ra, rb := rank(a), rank(b); ra != rb {
				return ra - rb
			}
			return strings.Compare(a, b)
		})
		for _, s := range group {
			for _, k := range differ {
				if v, ok := s.settings[k]; ok {
					if isPathSetting(k) {
						v = runFileName(v, k, group)
					}
					s.label += " " + k + "=" + v
				}
			}
		}
	}
	count := map[string]int{}
	for _, s := range series {
		count[s.label]++
	}
	for _, s := range series {
		if count[s.label] > 1 {
			s.label += " (" + s.dir + ")"
		}
	}
}

// isPathSetting reports whether a setting names a file.
func isPathSetting(k string) bool {
	return k == "model" || k == "data" || k == "valid" || k == "tokenizer"
}

// runFileName is a file setting's base name, or the whole path where two
// runs' files of that setting share a base name.
func runFileName(path, key string, series []*runSeries) string {
	base := filepath.Base(path)
	for _, s := range series {
		if o, ok := s.settings[key]; ok && o != path && filepath.Base(o) == base {
			return path
		}
	}
	return base
}

// maxExactStep is the largest step plot takes: steps are plotted as
// float64, exact up to 2⁵³.
const maxExactStep = 1 << 53

// jsonFieldError says what encoding/json's err found wrong in a record's
// field in a user's terms (its own message names Go types).
func jsonFieldError(err error) string {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	want := "a number"
	switch te.Type.Kind() {
	case reflect.Map, reflect.Struct:
		want = "an object"
	case reflect.String:
		want = "a string"
	case reflect.Int, reflect.Int64:
		want = "an integer"
	}
	if te.Field == "" {
		return fmt.Sprintf("a JSON %s where %s belongs", te.Value, want)
	}
	return fmt.Sprintf("field %q is a JSON %s, want %s", te.Field, te.Value, want)
}

// movingAverage of the last n values (fewer at the start).
func movingAverage(x []float64, n int) []float64 {
	out := make([]float64, len(x))
	// A running sum with Neumaier's compensation: a plain one keeps the
	// rounding of a huge value (a loss spike of 1e17) long after the
	// value has left the window.
	var sum, comp float64
	add := func(v float64) {
		t := sum + v
		if math.Abs(sum) >= math.Abs(v) {
			comp += (sum - t) + v
		} else {
			comp += (v - t) + sum
		}
		sum = t
	}
	for i, v := range x {
		add(v)
		if i >= n {
			add(-x[i-n])
		}
		out[i] = (sum + comp) / float64(min(i+1, n))
	}
	return out
}

func xys(x, y []float64) plotter.XYs {
	pts := make(plotter.XYs, len(x))
	for i := range x {
		pts[i].X, pts[i].Y = x[i], y[i]
	}
	return pts
}

// writeLossPlot draws every run's (smoothed) training loss as a solid line
// and its validation loss as a dashed one of the same color, and writes
// the PNG atomically, as opts say.
func writeLossPlot(path, title string, series []*runSeries, smooth int, opts atomicfile.Options) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "cross-entropy (nats)"
	if smooth > 1 {
		p.Y.Label.Text += fmt.Sprintf("; training: mean of %d steps, validation: dashed", smooth)
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	for i, s := range series {
		l, err := plotter.NewLine(xys(s.steps, movingAverage(s.loss, smooth)))
		if err != nil {
			return fmt.Errorf("%s: %w", s.dir, err)
		}
		l.Color, l.Width = plotutil.Color(i), vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.label, l)
		if len(s.valid) > 1 {
			v, err := plotter.NewLine(xys(s.validSteps, s.valid))
			if err != nil {
				return fmt.Errorf("%s: %w", s.dir, err)
			}
			v.Color, v.Dashes, v.Width = plotutil.Color(i), []vg.Length{vg.Points(4), vg.Points(3)}, vg.Points(1)
			p.Add(v)
		}
	}
	// Room above the curves for the legend.
	p.Y.Max += 0.2 * (p.Y.Max - p.Y.Min)
	p.Y.Tick.Marker = distinctTicks{}
	return savePNGWith(path, p, 9*vg.Inch, 5.5*vg.Inch, opts)
}

// distinctTicks are gonum's default ticks, their labels written with as
// many decimals as tell them apart: gonum's own round a narrow range's
// ticks (6.0101 … 6.0134) to one label ("6.01", "6.01", "6.01").
type distinctTicks struct{}

func (distinctTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	distinct := func(label func(plot.Tick) string) bool {
		seen := map[string]bool{}
		for _, t := range ticks {
			if t.Label == "" {
				continue // a minor tick
			}
			if l := label(t); seen[l] {
				return false
			} else {
				seen[l] = true
			}
		}
		return true
	}
	if distinct(func(t plot.Tick) string { return t.Label }) {
		return ticks
	}
	for prec := 1; prec <= 17; prec++ {
		format := func(t plot.Tick) string { return strconv.FormatFloat(t.Value, 'f', prec, 64) }
		if distinct(format) {
			for i := range ticks {
				if ticks[i].Label != "" {
					ticks[i].Label = format(ticks[i])
				}
			}
			break
		}
	}
	return ticks
}

// savePNGWith renders p as a w×h PNG and writes it to path atomically,
// as opts say.
func savePNGWith(path string, p *plot.Plot, w, h vg.Length, opts atomicfile.Options) error {
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return err
	}
	return opts.Write(path, buf.Bytes())
}

func medianFloat(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	s := slices.Clone(x)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func meanOf(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// printRunFigures prints per run: the training loss averaged over the
// first and last 10 steps, the first and last validation loss, and for
// DST runs how close Algorithm 2's threshold came to the target ε from
// step from on, overall and per silo.
func printRunFigures(w io.Writer, series []*runSeries, from int64) {
	width := 16
	for _, s := range series {
		width = max(width, len([]rune(s.label)))
	}
	fmt.Fprintf(w, "%-*s %6s %12s %12s %12s %12s  %s\n", width, "run", "steps", "loss first10", "loss last10", "valid first", "valid last", "directory")
	for _, s := range series {
		n := len(s.loss)
		head, tail := s.loss[:min(10, n)], s.loss[max(0, n-10):]
		vf, vl := "-", "-"
		if len(s.valid) > 0 {
			vf, vl = fmt.Sprintf("%.4f", s.valid[0]), fmt.Sprintf("%.4f", s.valid[len(s.valid)-1])
		}
		fmt.Fprintf(w, "%-*s %6d %12.4f %12.4f %12s %12s  %s\n", width, s.label, int(s.steps[n-1]), meanOf(head), meanOf(tail), vf, vl, s.dir)
	}
	for _, s := range series {
		if len(s.alg2.overall) == 0 {
			if s.alg2Before > 0 {
				fmt.Fprintf(w, "%s: no Algorithm 2 figures from step %d: the run's %s tracking it all come before\n", s.label, from, plural(int64(s.alg2Before), "step", "steps"))
			}
			continue
		}
		fmt.Fprintf(w, "%s: exact fallbacks %d", s.label, s.fallbacks)
		if len(s.dstMS) > 0 {
			fmt.Fprintf(w, "; median optimizer pass %.3f ms, DST %.3f ms", medianFloat(s.optMS), medianFloat(s.dstMS))
		}
		fmt.Fprintln(w)
		s.alg2.print(w, "Algorithm 2 (eps_alg2)", from, s.siloK)
		s.paper.print(w, "the printed Algorithm 2 carrying its own threshold (eps_paper_alg2)", from, s.siloK)
	}
}

// accuracy collects |realized/target − 1| of one threshold tracker.
type accuracy struct {
	overall []float64
	silo    map[string][]float64
}

func newAccuracy() accuracy { return accuracy{silo: map[string][]float64{}} }

func (a *accuracy) addOverall(realized *float64, target float64) {
	if realized != nil {
		a.overall = append(a.overall, math.Abs(*realized/target-1))
	}
}

func (a *accuracy) addSilo(name string, realized *float64, target float64) {
	if realized != nil {
		a.silo[name] = append(a.silo[name], math.Abs(*realized/target-1))
	}
}

// print reports the worst and the share of steps within 1 %, overall and
// over the silos with k ≥ 100 (a smaller silo cannot be within 1 % without
// being exact), then each of those silos' worst.
func (a *accuracy) print(w io.Writer, what string, from int64, siloK map[string]int64) {
	if len(a.overall) == 0 {
		return
	}
	within := func(errs []float64) int {
		n := 0
		for _, e := range errs {
			if e <= 0.01 {
				n++
			}
		}
		return n
	}
	fmt.Fprintf(w, "  %s from step %d: |realized/ε − 1| overall max %.2f%%, within 1%% at %d of %d steps\n",
		what, from, 100*slices.Max(a.overall), within(a.overall), len(a.overall))
	names := make([]string, 0, len(a.silo))
	for name := range a.silo {
		names = append(names, name)
	}
	sort.Strings(names)
	var big []float64
	bigSilos := 0
	for _, name := range names {
		if siloK[name] >= 100 {
			bigSilos++
			big = append(big, a.silo[name]...)
		}
	}
	if bigSilos > 0 {
		fmt.Fprintf(w, "    per silo with k ≥ 100 (%s): within 1%% at %d of %d silo-steps; median %.2f%%, max %.2f%%\n",
			plural(int64(bigSilos), "silo", "silos"), within(big), len(big), 100*medianFloat(big), 100*slices.Max(big))
	}
	if bigSilos > 0 && bigSilos <= 64 {
		var each []string
		for _, name := range names {
			if siloK[name] >= 100 {
				each = append(each, fmt.Sprintf("%s %.1f%%", name, 100*slices.Max(a.silo[name])))
			}
		}
		fmt.Fprintf(w, "    per silo with k ≥ 100, max: %s\n", strings.Join(each, ", "))
	}
	if small := len(names) - bigSilos; small > 0 {
		fmt.Fprintf(w, "    %s with k < 100 left out\n", plural(int64(small), "silo", "silos"))
	}
}
