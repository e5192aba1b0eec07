package sweep

import (
	"errors"
	"fmt"
	"image/color"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/brewer"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/dstune/dstune/dst"
)

// heatCells draws a matrix of values as colored cells, row 0 at the top,
// each with its text; outlined cells get a thick frame.
type heatCells struct {
	values   [][]float64 // [row][col]; NaN: gray
	text     [][]string
	outlined [][]bool
	lo, hi   float64 // the values of the scale's ends
	reverse  bool    // dark for lo
}

func newHeatCells(values [][]float64, text [][]string, lo, hi float64) *heatCells {
	if !(hi > lo) {
		lo, hi = lo-0.5, lo+0.5
	}
	return &heatCells{values: values, text: text, lo: lo, hi: hi}
}

// heatStops is ColorBrewer's sequential yellow–green–blue scale.
var heatStops = func() []color.Color {
	p, err := brewer.GetPalette(brewer.TypeSequential, "YlGnBu", 9)
	if err != nil {
		panic("sweep: " + err.Error())
	}
	return p.Colors()
}()

// color is v's color: heatStops interpolated linearly.
func (h *heatCells) color(v float64) color.Color {
	t := (v - h.lo) / (h.hi - h.lo)
	t = math.Min(math.Max(t, 0), 1)
	if h.reverse {
		t = 1 - t
	}
	x := t * float64(len(heatStops)-1)
	i := min(int(x), len(heatStops)-2)
	f := x - float64(i)
	r0, g0, b0, _ := heatStops[i].RGBA()
	r1, g1, b1, _ := heatStops[i+1].RGBA()
	mix := func(a, b uint32) uint8 { return uint8((float64(a)*(1-f) + float64(b)*f) / 257) }
	return color.RGBA{R: mix(r0, r1), G: mix(g0, g1), B: mix(b0, b1), A: 255}
}

func (h *heatCells) rows() int { return len(h.values) }
func (h *heatCells) cols() int {
	if len(h.values) == 0 {
		return 0
	}
	return len(h.values[0])
}

// y is the data coordinate of row r.
func (h *heatCells) y(r int) float64 { return float64(h.rows() - 1 - r) }

func (h *heatCells) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	style := draw.TextStyle{Color: color.Black, Font: plot.DefaultFont, XAlign: text.XCenter, YAlign: text.YCenter, Handler: plot.DefaultTextHandler}
	style.Font.Size = vg.Points(9)
	for r, row := range h.values {
		for col, v := range row {
			x0, x1 := trX(float64(col)-0.5), trX(float64(col)+0.5)
			y0, y1 := trY(h.y(r)-0.5), trY(h.y(r)+0.5)
			fill := color.Color(color.Gray{Y: 200})
			if !math.IsNaN(v) {
				fill = h.color(v)
			}
			r16, g16, b16, _ := fill.RGBA()
			light := 0.2126*float64(r16)+0.7152*float64(g16)+0.0722*float64(b16) > 0.45*65535
			pts := []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
			c.FillPolygon(fill, pts)
			if h.outlined != nil && h.outlined[r][col] {
				inset := vg.Points(1.5)
				frame := []vg.Point{{X: x0 + inset, Y: y0 + inset}, {X: x1 - inset, Y: y0 + inset}, {X: x1 - inset, Y: y1 - inset}, {X: x0 + inset, Y: y1 - inset}, {X: x0 + inset, Y: y0 + inset}}
				c.StrokeLines(draw.LineStyle{Color: color.RGBA{R: 220, G: 30, B: 30, A: 255}, Width: vg.Points(3)}, frame)
			}
			if h.text != nil && h.text[r][col] != "" {
				style.Color = color.Black
				if !light {
					style.Color = color.White
				}
				c.FillText(style, vg.Point{X: (x0 + x1) / 2, Y: (y0 + y1) / 2}, h.text[r][col])
			}
		}
	}
}

func (h *heatCells) DataRange() (xmin, xmax, ymin, ymax float64) {
	return -0.5, float64(h.cols()) - 0.5, -0.5, float64(h.rows()) - 0.5
}

// heatPlot is a plot holding cells, labelled along both axes.
func heatPlot(title string, cells *heatCells, rowNames, colNames []string) *plot.Plot {
	pl := plot.New()
	pl.Title.Text = title
	pl.Add(cells)
	pl.X.Tick.Marker = categoryTicks(colNames)
	yt := make(plot.ConstantTicks, len(rowNames))
	for i, n := range rowNames {
		yt[i] = plot.Tick{Value: cells.y(i), Label: n}
	}
	pl.Y.Tick.Marker = yt
	pl.X.Padding, pl.Y.Padding = 0, 0
	pl.X.Tick.Label.Font.Size = vg.Points(9)
	pl.Y.Tick.Label.Font.Size = vg.Points(9)
	if len(colNames) > 6 || maxLen(colNames) > 12 {
		pl.X.Tick.Label.Rotation = math.Pi / 4
		pl.X.Tick.Label.XAlign = text.XRight
		pl.X.Tick.Label.YAlign = text.YCenter
	}
	return pl
}

func maxLen(names []string) int {
	n := 0
	for _, s := range names {
		n = max(n, len([]rune(s)))
	}
	return n
}

// lrPlot draws the mean quality of every setting as a heat map: a row
// per point (the settings but the learning rate), a column per learning
// rate; each row's best is framed.
func lrPlot(s *Spec, p Plot, sel []*Result) (*plot.Plot, int, error) {
	q := s.Quality
	pts := points(settings(sel, q), q)
	var lrs []string
	var ps []Params
	for _, pt := range pts {
		ps = append(ps, pt.Params)
		for _, st := range pt.Settings {
			if lr, ok := st.Params.Get(KeyLR); ok && !slices.Contains(lrs, lr) {
				lrs = append(lrs, lr)
			}
		}
	}
	if len(lrs) == 0 {
		return nil, 0, fmt.Errorf("the runs set no learning rate")
	}
	slices.SortFunc(lrs, compareValues)
	keys := varyingOf(ps, KeyLR, KeySeed)
	rowNames := make([]string, len(pts))
	values := make([][]float64, len(pts))
	texts := make([][]string, len(pts))
	outlined := make([][]bool, len(pts))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, pt := range pts {
		rowNames[i] = label(pt.Params, keys)
		values[i], texts[i], outlined[i] = make([]float64, len(lrs)), make([]string, len(lrs)), make([]bool, len(lrs))
		for j := range lrs {
			values[i][j] = math.NaN()
		}
		for _, st := range pt.Settings {
			lr, _ := st.Params.Get(KeyLR)
			j := slices.Index(lrs, lr)
			switch {
			case st.Diverged > 0:
				texts[i][j] = "diverged"
			case st.Quality.N > 0:
				v := scaled(st.Quality.Mean, q)
				values[i][j], texts[i][j] = v, fmt.Sprintf("%.*f", precision(q), v)
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
			outlined[i][j] = st == pt.Best
		}
	}
	cells := newHeatCells(values, texts, lo, hi)
	cells.reverse = !higherIsBetter(q)
	cells.outlined = outlined
	title := p.Title
	if title == "" {
		title = qualityName(q) + " by learning rate (framed: the best)"
	}
	pl := heatPlot(title, cells, rowNames, lrs)
	pl.X.Label.Text = "learning rate"
	return pl, len(pts), nil
}

func precision(q string) int {
	if isShare(q) {
		return 1
	}
	return 3
}

// keptDeltas lists the deltas --keep-deltas kept of a run, by step.
func keptDeltas(runDir string) ([]int64, []string, error) {
	entries, err := os.ReadDir(filepath.Join(runDir, DeltasDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil // the run kept none
	}
	if err != nil {
		return nil, nil, err
	}
	type kept struct {
		step int64
		path string
	}
	var list []kept
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "step-") || strings.HasSuffix(name, ".tmp") {
			continue
		}
		step, err := strconv.ParseInt(strings.TrimPrefix(name, "step-"), 10, 64)
		if err != nil {
			continue
		}
		path := filepath.Join(runDir, DeltasDir, name, dst.DeltaFile)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		list = append(list, kept{step, path})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].step < list[j].step })
	steps, paths := make([]int64, len(list)), make([]string, len(list))
	for i, k := range list {
		steps[i], paths[i] = k.step, k.path
	}
	return steps, paths, nil
}

// overlapMatrix is M[i][j] = |A_i ∩ A_j| / |A_i| over the deltas.
func overlapMatrix(deltas []*dst.Delta) ([][]float64, error) {
	m := make([][]float64, len(deltas))
	for i, a := range deltas {
		m[i] = make([]float64, len(deltas))
		for j, b := range deltas {
			rep, err := dst.SubsetOverlap(a, b)
			if err != nil {
				return nil, err
			}
			m[i][j] = rep.Total.Fraction()
		}
	}
	return m, nil
}

func readDeltas(paths []string) ([]*dst.Delta, error) {
	out := make([]*dst.Delta, len(paths))
	for i, p := range paths {
		d, err := dst.ReadDelta(p)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

func percentTexts(m [][]float64) [][]string {
	t := make([][]string, len(m))
	for i, row := range m {
		t[i] = make([]string, len(row))
		for j, v := range row {
			if !math.IsNaN(v) {
				t[i][j] = fmt.Sprintf("%.0f", 100*v)
			}
		}
	}
	return t
}

func scaleMatrix(m [][]float64, f float64) [][]float64 {
	out := make([][]float64, len(m))
	for i, row := range m {
		out[i] = make([]float64, len(row))
		for j, v := range row {
			out[i][j] = f * v
		}
	}
	return out
}

// bestRuns keeps the results of each point's best learning rate.
func bestRuns(sel []*Result, quality string) []*Result {
	var out []*Result
	for _, pt := range points(settings(sel, quality), quality) {
		if pt.Best != nil {
			for _, r := range pt.Best.Results {
				if r.Status == StatusDone {
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// overlapStepsPlots draws, for every selected run (at its point's best
// learning rate), the subset overlap between its checkpoints: row i,
// column j is |S_i ∩ S_j| / |S_i| for the subsets S of the checkpoints
// at steps i and j, in %.
func overlapStepsPlots(dir string, p Plot, sel []*Result, quality string) ([][]*plot.Plot, error) {
	runs := bestRuns(sel, quality)
	if len(runs) == 0 {
		return nil, fmt.Errorf("no finished run")
	}
	if len(runs) > maxPanels {
		return nil, fmt.Errorf("%d runs selected, at most %d panels: narrow where", len(runs), maxPanels)
	}
	var ps []Params
	for _, r := range runs {
		ps = append(ps, r.params)
	}
	keys := varyingOf(ps)
	cols := min(len(runs), 4)
	grid := make([][]*plot.Plot, (len(runs)+cols-1)/cols)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	kept := make([][]int64, len(runs))
	paths := make([][]string, len(runs))
	var names, dirs []string // the runs that kept no delta
	for i, r := range runs {
		var err error
		if kept[i], paths[i], err = keptDeltas(filepath.Join(dir, r.Dir)); err != nil {
			return nil, err
		}
		if len(kept[i]) == 0 {
			names, dirs = append(names, r.Run), append(dirs, filepath.Join(dir, r.Dir))
		}
	}
	if len(names) == 1 {
		// A finished run is not trained again, so --keep-deltas now
		// cannot give it deltas: its directory must go.
		return nil, fmt.Errorf("run %s kept no delta of its checkpoints: it finished without --keep-deltas (or the spec's keep_deltas), and a finished run is not trained again; "+
			"remove its directory %s and run the sweep again to train it anew, its deltas kept", names[0], dirs[0])
	}
	if len(names) > 1 {
		// Run names hold commas: the directories are listed apart by
		// spaces, as a shell takes them.
		return nil, fmt.Errorf("%d runs kept no delta of their checkpoints: they finished without --keep-deltas (or the spec's keep_deltas), and a finished run is not trained again; "+
			"remove their directories and run the sweep again to train them anew, their deltas kept: %s", len(names), strings.Join(dirs, " "))
	}
	for i, r := range runs {
		steps := kept[i]
		deltas, err := readDeltas(paths[i])
		if err != nil {
			return nil, err
		}
		m, err := overlapMatrix(deltas)
		if err != nil {
			return nil, err
		}
		names := make([]string, len(steps))
		for j, s := range steps {
			names[j] = strconv.FormatInt(s, 10)
		}
		cells := newHeatCells(scaleMatrix(m, 100), percentTexts(m), 0, 100)
		title := label(r.params, keys)
		if i == 0 && p.Title != "" {
			title = p.Title + "\n" + title
		}
		pl := heatPlot(title, cells, names, names)
		pl.X.Label.Text = "step (B)"
		pl.Y.Label.Text = "step (A): |A∩B|/|A| %"
		grid[i/cols][i%cols] = pl
	}
	for j := len(runs); j < len(grid)*cols; j++ {
		grid[j/cols][j%cols] = emptyPlot()
	}
	return grid, nil
}

func emptyPlot() *plot.Plot {
	p := plot.New()
	p.HideAxes()
	return p
}

// overlapRunsPlot draws the mean subset overlap between the final
// subsets of the groups of runs p.Group makes (each point at its best
// learning rate): cell (g, h) averages |A∩B|/|A| over every run A of g
// and B of h other than A, so the diagonal compares runs of one setting
// that differ in their seed.
func overlapRunsPlot(dir string, p Plot, sel []*Result, quality string) (*plot.Plot, int, error) {
	runs := bestRuns(sel, quality)
	var groups []string
	members := map[string][]int{}
	var paths []string
	for i, r := range runs {
		g := label(r.params, p.Group)
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
		members[g] = append(members[g], i)
		paths = append(paths, filepath.Join(dir, r.Dir, dst.DeltaFile))
	}
	if len(groups) == 0 {
		return nil, 0, fmt.Errorf("no finished run")
	}
	deltas, err := readDeltas(paths)
	if err != nil {
		return nil, 0, fmt.Errorf("%w (overlap-runs compares DST runs' deltas)", err)
	}
	m, err := overlapMatrix(deltas)
	if err != nil {
		return nil, 0, err
	}
	mean := make([][]float64, len(groups))
	texts := make([][]string, len(groups))
	for gi, g := range groups {
		mean[gi] = make([]float64, len(groups))
		texts[gi] = make([]string, len(groups))
		for hi, h := range groups {
			var x []float64
			for _, a := range members[g] {
				for _, b := range members[h] {
					if a != b {
						x = appendFinite(x, m[a][b])
					}
				}
			}
			st := statOf(x)
			mean[gi][hi] = 100 * st.Mean
			if st.N > 0 {
				texts[gi][hi] = fmt.Sprintf("%.0f", 100*st.Mean)
				if st.N > 1 && !math.IsNaN(st.SD) {
					texts[gi][hi] += fmt.Sprintf("±%.0f", 100*st.SD)
				}
			}
		}
	}
	title := p.Title
	if title == "" {
		title = "subset overlap |A∩B|/|A| (%) between runs, by " + strings.Join(p.Group, ", ")
	}
	pl := heatPlot(title, newHeatCells(mean, texts, 0, 100), groups, groups)
	pl.Y.Label.Text = "A"
	pl.X.Label.Text = "B (diagonal: other seeds of the same setting)"
	return pl, len(groups), nil
}
