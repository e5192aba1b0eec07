package sweep

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/train"
)

// drawPlot draws one plot of the report into dir.
func drawPlot(s *Spec, dir string, p Plot, results []*Result) error {
	sel := selectResults(results, p.Where)
	if len(sel) == 0 {
		// The spec's where matches runs of the grid (ParseSpec checks):
		// none of those has finished.
		return fmt.Errorf("none of the runs its where selects has finished")
	}
	if p.Quality != "" {
		own := *s
		own.Quality = p.Quality
		s = &own
	}
	var (
		grid [][]*plot.Plot
		w, h = 7 * vg.Inch, 4.5 * vg.Inch
		err  error
	)
	switch p.Kind {
	case PlotBudget:
		var pl *plot.Plot
		pl, err = budgetPlot(s, p, sel)
		grid = [][]*plot.Plot{{pl}}
	case PlotBars:
		var pl *plot.Plot
		pl, err = barsPlot(s, p, sel)
		grid = [][]*plot.Plot{{pl}}
	case PlotModules:
		var pl *plot.Plot
		pl, err = modulesPlot(s, dir, p, sel)
		grid = [][]*plot.Plot{{pl}}
	case PlotLR:
		var pl *plot.Plot
		var rows int
		pl, rows, err = lrPlot(s, p, sel)
		grid = [][]*plot.Plot{{pl}}
		h = vg.Length(math.Max(3, 1.2+0.35*float64(rows))) * vg.Inch
	case PlotOverlapSteps:
		grid, err = overlapStepsPlots(dir, p, sel, s.Quality)
		if err == nil {
			w, h = vg.Length(3.6*float64(len(grid[0])))*vg.Inch, vg.Length(3.4*float64(len(grid)))*vg.Inch
		}
	case PlotOverlapRuns:
		var pl *plot.Plot
		var n int
		pl, n, err = overlapRunsPlot(dir, p, sel, s.Quality)
		grid = [][]*plot.Plot{{pl}}
		side := vg.Length(math.Max(3.5, 1.8+0.6*float64(n))) * vg.Inch
		w, h = side+1.5*vg.Inch, side
	default:
		err = fmt.Errorf("unknown kind %q", p.Kind)
	}
	if err != nil {
		return err
	}
	return savePNG(filepath.Join(dir, p.File), grid, w, h)
}

// savePNG draws the plots, a grid of panels, into a PNG written
// atomically.
func savePNG(path string, grid [][]*plot.Plot, w, h vg.Length) error {
	img := vgimg.New(w, h)
	dc := draw.New(img)
	canvases := plot.Align(grid, draw.Tiles{Rows: len(grid), Cols: len(grid[0]), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}, dc)
	for j, row := range grid {
		for i, pl := range row {
			if pl != nil {
				pl.Draw(canvases[j][i])
			}
		}
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return err
	}
	return atomicfile.Write(path, buf.Bytes())
}

func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Add(plotter.NewGrid())
	return p
}

// qualityAxis labels a plot's y axis with the quality.
func qualityAxis(p *plot.Plot, quality string) {
	p.Y.Label.Text = qualityName(quality)
	if isShare(quality) {
		p.Y.Label.Text += " (%)"
	}
}

func scaled(v float64, quality string) float64 {
	if isShare(quality) {
		return 100 * v
	}
	return v
}

// label names a point by the values of keys ("method=dst, eps=1e-3";
// the method alone by its name).
func label(p Params, keys []string) string {
	var parts []string
	for _, k := range keys {
		v, ok := p.Get(k)
		if !ok {
			continue
		}
		if k == KeyMethod {
			parts = append(parts, v)
		} else {
			parts = append(parts, k+" "+v)
		}
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ", ")
}

// baseQuality is the mean quality before training of the runs that
// start from the model itself (prompt tuning starts from a prompt).
func baseQuality(ss []*Setting, quality string) float64 {
	var x []float64
	for _, s := range ss {
		if m, _ := s.Params.Get(KeyMethod); m != "prompt" {
			for _, r := range s.Results {
				x = appendFinite(x, r.InitialValue(quality))
			}
		}
	}
	return statOf(x).Mean
}

// hline is a horizontal reference line over the x range of a plot.
type hline struct {
	y     float64
	style draw.LineStyle
}

func (l hline) Plot(c draw.Canvas, plt *plot.Plot) {
	_, trY := plt.Transforms(&c)
	y := trY(l.y)
	c.StrokeLine2(l.style, c.Min.X, y, c.Max.X, y)
}

func (l hline) DataRange() (xmin, xmax, ymin, ymax float64) {
	return math.Inf(1), math.Inf(-1), l.y, l.y
}

func dashed(c color.Color) draw.LineStyle {
	return draw.LineStyle{Color: c, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}
}

func dotted() draw.LineStyle {
	return draw.LineStyle{Color: color.Gray{Y: 110}, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(1), vg.Points(2)}}
}

// budgetPlot draws the quality at the best learning rate against the
// fraction of free parameters, a line per method (and other settings
// that vary), with the standard deviation over seeds as error bars; full
// fine-tuning is a point at 1 and a dashed line, the model before
// training a dotted one.
func budgetPlot(s *Spec, p Plot, sel []*Result) (*plot.Plot, error) {
	q := s.Quality
	ss := settings(sel, q)
	pts := points(ss, q)
	type series struct {
		params Params
		pts    []*Point
	}
	var list []*series
	index := map[string]*series{}
	for _, pt := range pts {
		m, _ := pt.Params.Get(KeyMethod)
		sp := pt.Params.Without(budgetKey(m))
		key := sp.String()
		if index[key] == nil {
			index[key] = &series{params: sp}
			list = append(list, index[key])
		}
		index[key].pts = append(index[key].pts, pt)
	}
	var sps []Params
	for _, se := range list {
		sps = append(sps, se.params)
	}
	keys := varyingOf(sps)
	if !slices.Contains(keys, KeyMethod) {
		keys = append([]string{KeyMethod}, keys...)
	}
	title := p.Title
	if title == "" {
		title = qualityName(q) + " vs the fraction of parameters trained"
	}
	pl := newPlot(title + "\n(best learning rate per point; error bars: sd over seeds)")
	pl.X.Label.Text = "free parameters / the model's parameters"
	qualityAxis(pl, q)
	pl.X.Scale = plot.LogScale{}
	pl.X.Tick.Marker = plot.LogTicks{Prec: -1}
	// Quality grows with the budget: the corner away from the curves is
	// the bottom right where higher is better, the top right where lower
	// is.
	pl.Legend.Top, pl.Legend.Left = !higherIsBetter(q), false
	if base := baseQuality(ss, q); !math.IsNaN(base) {
		l := hline{scaled(base, q), dotted()}
		pl.Add(l)
		pl.Legend.Add("before training", &plotter.Line{LineStyle: l.style})
	}
	for i, se := range list {
		var xys plotter.XYs
		var errs plotter.YErrors
		var names []string
		for _, pt := range se.pts {
			b := pt.Best
			if b == nil || !(b.Fraction.Mean > 0) {
				continue
			}
			xys = append(xys, plotter.XY{X: b.Fraction.Mean, Y: scaled(b.Quality.Mean, q)})
			names = append(names, budgetLabel(pt.Params))
			sd := 0.0
			if !math.IsNaN(b.Quality.SD) {
				sd = scaled(b.Quality.SD, q)
			}
			errs = append(errs, struct{ Low, High float64 }{sd, sd})
		}
		if len(xys) == 0 {
			continue
		}
		order := make([]int, len(xys))
		for j := range order {
			order[j] = j
		}
		sort.Slice(order, func(a, b int) bool { return xys[order[a]].X < xys[order[b]].X })
		sx, se2, sn := make(plotter.XYs, len(xys)), make(plotter.YErrors, len(xys)), make([]string, len(xys))
		for j, o := range order {
			sx[j], se2[j], sn[j] = xys[o], errs[o], names[o]
		}
		col := plotutil.Color(i)
		line, scatter, err := plotter.NewLinePoints(sx)
		if err != nil {
			return nil, err
		}
		line.Color, line.Width = col, vg.Points(1.5)
		scatter.Color, scatter.Shape = col, plotutil.Shape(i)
		scatter.Radius = vg.Points(3)
		eb, err := plotter.NewYErrorBars(errorBars{sx, se2})
		if err != nil {
			return nil, err
		}
		eb.Color = col
		pl.Add(line, scatter, eb)
		if labels, err := plotter.NewLabels(plotter.XYLabels{XYs: sx, Labels: sn}); err == nil {
			for j := range labels.TextStyle {
				labels.TextStyle[j].Color = col
				labels.TextStyle[j].Font.Size = vg.Points(8)
				labels.TextStyle[j].XAlign = text.XCenter
			}
			labels.Offset = vg.Point{Y: vg.Points(5)}
			pl.Add(labels)
		}
		if m, _ := se.params.Get(KeyMethod); m == train.MethodFull {
			// Full fine-tuning has one budget, all of the model: a
			// line across to compare the others' budgets with. Any
			// other method's single budget stays a point.
			pl.Add(hline{sx[0].Y, dashed(col)})
		}
		pl.Legend.Add(label(se.params, keys), line, scatter)
	}
	// gonum widens an axis over a single value (one budget) or none (no
	// run finished) by ±1, to below 0, where the log scale panics: span
	// a factor of 2 either side of the one value, or the fractions a
	// sweep usually covers.
	switch lo, hi := pl.X.Min, pl.X.Max; {
	case !(lo > 0) || !(hi >= lo) || math.IsInf(hi, 0):
		pl.X.Min, pl.X.Max = 1e-4, 1
	case lo == hi:
		pl.X.Min, pl.X.Max = lo/2, hi*2
	}
	if higherIsBetter(q) {
		pl.Y.Max += 0.05 * (pl.Y.Max - pl.Y.Min)
		pl.Y.Min -= 0.1 * (pl.Y.Max - pl.Y.Min)
	} else {
		pl.Y.Max += 0.1 * (pl.Y.Max - pl.Y.Min)
	}
	return pl, nil
}

// budgetLabel names a point of the budget plot by its budget: ε for
// DST, r for LoRA's rank, n for prompt tuning's length ("" for full
// fine-tuning).
func budgetLabel(p Params) string {
	m, _ := p.Get(KeyMethod)
	v, ok := p.Get(budgetKey(m))
	if !ok {
		return ""
	}
	switch m {
	case "dst":
		return "ε " + v
	case "lora":
		return "r " + v
	}
	return "n " + v
}

// errorBars pairs points with their errors for plotter.NewYErrorBars.
type errorBars struct {
	plotter.XYs
	plotter.YErrors
}

// bars is a bar chart in data coordinates: category i spans [i−0.4,
// i+0.4], its bars side by side, each rising from base.
type bars struct {
	values [][]float64 // [category][group]
	colors []color.Color
	base   float64
}

func (b *bars) width() float64 { return 0.8 / float64(len(b.colors)) }

func (b *bars) center(cat, group int) float64 {
	return float64(cat) - 0.4 + (float64(group)+0.5)*b.width()
}

func (b *bars) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	w := b.width()
	for i, row := range b.values {
		for j, v := range row {
			if math.IsNaN(v) {
				continue
			}
			x0, x1 := b.center(i, j)-w/2, b.center(i, j)+w/2
			pts := []vg.Point{{X: trX(x0), Y: trY(b.base)}, {X: trX(x1), Y: trY(b.base)}, {X: trX(x1), Y: trY(v)}, {X: trX(x0), Y: trY(v)}}
			c.FillPolygon(b.colors[j], c.ClipPolygonXY(pts))
			c.StrokeLines(draw.LineStyle{Color: color.Black, Width: vg.Points(0.5)}, c.ClipLinesXY(append(pts, pts[0]))...)
		}
	}
}

func (b *bars) DataRange() (xmin, xmax, ymin, ymax float64) {
	ymin, ymax = b.base, b.base
	for _, row := range b.values {
		for _, v := range row {
			if !math.IsNaN(v) {
				ymin, ymax = math.Min(ymin, v), math.Max(ymax, v)
			}
		}
	}
	return -0.5, float64(len(b.values)) - 0.5, ymin, ymax
}

// swatch is a bar's legend entry.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(s.c, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}})
}

// categoryTicks labels the integer positions 0 … len(names)−1.
func categoryTicks(names []string) plot.ConstantTicks {
	t := make(plot.ConstantTicks, len(names))
	for i, n := range names {
		t[i] = plot.Tick{Value: float64(i), Label: n}
	}
	return t
}

// groupedBars draws values[category][group] ± sds as bars with the
// given names, rising from base.
func groupedBars(pl *plot.Plot, cats, groups []string, vals, sds [][]float64, base float64) error {
	b := &bars{values: vals, base: base}
	for j := range groups {
		b.colors = append(b.colors, plotutil.Color(j))
	}
	pl.Add(b)
	var xys plotter.XYs
	var errs plotter.YErrors
	for i := range vals {
		for j := range vals[i] {
			if math.IsNaN(vals[i][j]) || math.IsNaN(sds[i][j]) {
				continue
			}
			xys = append(xys, plotter.XY{X: b.center(i, j), Y: vals[i][j]})
			errs = append(errs, struct{ Low, High float64 }{sds[i][j], sds[i][j]})
		}
	}
	if len(xys) > 0 {
		eb, err := plotter.NewYErrorBars(errorBars{xys, errs})
		if err != nil {
			return err
		}
		pl.Add(eb)
	}
	pl.X.Tick.Marker = categoryTicks(cats)
	pl.X.Tick.Label.Rotation = 0
	if width := len(cats) * maxLen(cats); width > 60 {
		pl.X.Tick.Label.Rotation = math.Pi / 6
		pl.X.Tick.Label.XAlign = text.XRight
		pl.X.Tick.Label.YAlign = text.YCenter
	}
	if len(groups) > 1 || groups[0] != "" {
		for j, g := range groups {
			pl.Legend.Add(g, swatch{b.colors[j]})
		}
	}
	pl.Legend.Top = true
	return nil
}

// pointGrid arranges points by the values of the x keys (categories) and
// the group keys (bars within a category; default: every other setting
// that varies).
func pointGrid(pts []*Point, x, group []string) (cats, groups []string, cell map[[2]string]*Point, err error) {
	var ps []Params
	for _, pt := range pts {
		ps = append(ps, pt.Params)
	}
	if len(group) == 0 {
		group = varyingOf(ps, append(append([]string{}, x...), KeyLR, KeySeed)...)
	}
	cell = map[[2]string]*Point{}
	for _, pt := range pts {
		c, g := combo(pt.Params, x), label(pt.Params, group)
		if len(group) == 0 {
			g = ""
		}
		if !slices.Contains(cats, c) {
			cats = append(cats, c)
		}
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
		if other, dup := cell[[2]string{c, g}]; dup {
			return nil, nil, nil, fmt.Errorf("%s and %s are drawn as one bar; name the settings that tell them apart in x or group, or select with where", other.Params, pt.Params)
		}
		cell[[2]string{c, g}] = pt
	}
	return cats, groups, cell, nil
}

// barsPlot draws the quality at each point's best learning rate as bars:
// categories by p.X, bars within a category by p.Group.
func barsPlot(s *Spec, p Plot, sel []*Result) (*plot.Plot, error) {
	q := s.Quality
	ss := settings(sel, q)
	pts := points(ss, q)
	cats, groups, cell, err := pointGrid(pts, p.X, p.Group)
	if err != nil {
		return nil, err
	}
	vals, sds := make([][]float64, len(cats)), make([][]float64, len(cats))
	lo := math.Inf(1)
	for i, c := range cats {
		vals[i], sds[i] = make([]float64, len(groups)), make([]float64, len(groups))
		for j, g := range groups {
			vals[i][j], sds[i][j] = math.NaN(), math.NaN()
			if pt := cell[[2]string{c, g}]; pt != nil && pt.Best != nil {
				vals[i][j] = scaled(pt.Best.Quality.Mean, q)
				sds[i][j] = 0
				if !math.IsNaN(pt.Best.Quality.SD) {
					sds[i][j] = scaled(pt.Best.Quality.SD, q)
				}
				lo = math.Min(lo, vals[i][j]-sds[i][j])
			}
		}
	}
	title := p.Title
	if title == "" {
		title = qualityName(q) + " at the best learning rate"
	}
	pl := newPlot(title)
	qualityAxis(pl, q)
	pl.X.Label.Text = strings.Join(p.X, ", ") + " (error bars: sd over seeds)"
	base := lo
	if b := baseQuality(ss, q); !math.IsNaN(b) {
		base = math.Min(base, scaled(b, q))
		l := hline{scaled(b, q), dotted()}
		pl.Add(l)
		pl.Legend.Add("before training", &plotter.Line{LineStyle: l.style})
	}
	if math.IsInf(base, 1) {
		base = 0
	}
	if err := groupedBars(pl, cats, groups, vals, sds, base); err != nil {
		return nil, err
	}
	pl.Y.Max += 0.3 * (pl.Y.Max - pl.Y.Min)
	return pl, nil
}
