package sweep

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dstune/dstune/internal/atomicfile"
)

// qualityName is how the report names a quality.
func qualityName(q string) string {
	switch q {
	case QualityLoss:
		return "validation loss"
	case "token_accuracy":
		return "token accuracy"
	case "exact_match":
		return "exact match"
	}
	return q
}

// capitalized is s with its first letter in upper case.
func capitalized(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// isShare says whether a quality is a share, shown in percent.
func isShare(q string) bool { return q != QualityLoss }

// fmtStat formats mean ± sd (n), a share in percent.
func fmtStat(s Stat, share bool) string {
	if s.N == 0 || math.IsNaN(s.Mean) {
		return "—"
	}
	scale, prec := 1.0, 3
	if share {
		scale, prec = 100, 1
	}
	out := fmt.Sprintf("%.*f", prec, scale*s.Mean)
	if !math.IsNaN(s.SD) {
		out += fmt.Sprintf(" ± %.*f", prec, scale*s.SD)
	}
	return out
}

func fmtFraction(f float64) string {
	if math.IsNaN(f) {
		return "—"
	}
	return fmt.Sprintf("%.2g", f)
}

func fmtCount(s Stat) string {
	if s.N == 0 {
		return "—"
	}
	return groupThousands(int64(math.Round(s.Mean)))
}

// count is n with the singular or plural noun: "1 run", "2 runs".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func groupThousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + groupThousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// writeReport writes results.md and the plots of the finished results.
func writeReport(s *Spec, dir string, results []*Result) ([]string, error) {
	var b bytes.Buffer
	title := s.Title
	if title == "" {
		title = "Sweep " + filepath.Base(s.File)
	}
	n, diverged := 0, 0
	for _, r := range results {
		if r != nil {
			n++
			if r.Status == StatusDiverged {
				diverged++
			}
		}
	}
	partial := ""
	if missing := len(results) - n; missing > 0 {
		verb := "have"
		if missing == 1 {
			verb = "has"
		}
		partial = fmt.Sprintf("**Partial: %d of the spec's %s %s not finished.** ", missing, count(len(results), "run", "runs"), verb)
	}
	share := isShare(s.Quality)
	dir2 := "higher is better"
	if !higherIsBetter(s.Quality) {
		dir2 = "lower is better"
	}
	unit := ""
	if share {
		unit = ", in %"
	}
	fmt.Fprintf(&b, "# %s\n\n", markdownLine(title))
	fmt.Fprintf(&b, "%s%s (%d diverged). Quality: %s on the validation data (%s%s), mean ± standard deviation over the seeds. "+
		"The best learning rate of a setting has the best mean quality among those whose runs all finished; "+
		"fraction: the free parameters over the model's parameters (1 for full fine-tuning).\n\n", partial, count(n, "run", "runs"), diverged, qualityName(s.Quality), dir2, unit)
	all := settings(results, s.Quality)
	pts := points(all, s.Quality)
	var ps []Params
	for _, pt := range pts {
		ps = append(ps, pt.Params)
	}
	keys := varyingOf(ps, KeyLR, KeySeed)
	if len(keys) == 0 {
		keys = []string{KeyMethod}
	}
	fmt.Fprintf(&b, "## Best learning rate per setting\n\n")
	// The loss gets its own column where it is not the quality.
	withLoss := s.Quality != QualityLoss
	header := append(append([]string{}, keys...), "free params", "fraction", "lr", qualityName(s.Quality))
	if withLoss {
		header = append(header, "validation loss")
	}
	header = append(header, "before training", "runs")
	writeRow(&b, header)
	writeRule(&b, len(header), len(keys))
	for _, pt := range pts {
		row := values(pt.Params, keys)
		if pt.Best == nil {
			row = append(row, "—", "—", "—", noBest(pt, s.Quality, "all diverged"))
			if withLoss {
				row = append(row, "—")
			}
			runs := 0
			for _, st := range pt.Settings {
				runs += len(st.Results)
			}
			row = append(row, "—", fmt.Sprint(runs))
		} else {
			bs := pt.Best
			lr, _ := bs.Params.Get(KeyLR)
			row = append(row, fmtCount(bs.Free), fmtFraction(bs.Fraction.Mean), lr, fmtStat(bs.Quality, share))
			if withLoss {
				row = append(row, fmtStat(bs.Loss, false))
			}
			row = append(row, fmtStat(bs.Base, share), fmt.Sprint(len(bs.Results)))
		}
		writeRow(&b, row)
	}
	for i, t := range s.Tables {
		q := s.Quality
		if t.Quality != "" {
			q = t.Quality
		}
		if err := writePivot(&b, t, results, q); err != nil {
			return nil, fmt.Errorf("%s: tables[%d]: %w", s.File, i, err)
		}
	}
	fmt.Fprintf(&b, "\n## Every learning rate\n\n")
	var sp []Params
	for _, st := range all {
		sp = append(sp, st.Params)
	}
	keys = varyingOf(sp, KeySeed)
	if len(keys) == 0 {
		keys = []string{KeyMethod}
	}
	header = append(append([]string{}, keys...), qualityName(s.Quality))
	if withLoss {
		header = append(header, "validation loss")
	}
	header = append(header, "runs", "diverged")
	writeRow(&b, header)
	writeRule(&b, len(header), len(keys))
	for _, st := range all {
		row := append(values(st.Params, keys), fmtStat(st.Quality, share))
		if withLoss {
			row = append(row, fmtStat(st.Loss, false))
		}
		row = append(row, fmt.Sprint(len(st.Results)), fmt.Sprint(st.Diverged))
		writeRow(&b, row)
	}
	files := []string{ReportFile}
	if err := atomicfile.Write(filepath.Join(dir, ReportFile), b.Bytes()); err != nil {
		return nil, err
	}
	var errs []error // each plot's: one that fails leaves the others drawn
	for i, p := range s.Plots {
		if err := drawPlot(s, dir, p, results); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", s.File, plotPlace(i, p), err))
			continue
		}
		files = append(files, p.File)
	}
	return files, errors.Join(errs...)
}

// noBest says why a point has no best learning rate: every learning
// rate has a diverged run (diverged), or one has none but no quality
// was measured either (a run without validation data, from before
// sweeps required it), which is no divergence.
func noBest(pt *Point, quality, diverged string) string {
	for _, st := range pt.Settings {
		if st.Diverged == 0 {
			return "no " + qualityName(quality)
		}
	}
	return diverged
}

func values(p Params, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		v, ok := p.Get(k)
		if !ok {
			v = "—"
		}
		out[i] = markdownCell(v)
	}
	return out
}

// markdownCell escapes a setting's text for a table cell: a "|" would
// end the cell, a "\" escape what follows, a newline the row.
func markdownCell(s string) string { return cellEscaper.Replace(s) }

// markdownLine keeps a title on its heading's line.
func markdownLine(s string) string { return lineEscaper.Replace(s) }

var (
	cellEscaper = strings.NewReplacer(`\`, `\\`, "|", `\|`, "\n", " ", "\r", " ", "`", "\\`")
	lineEscaper = strings.NewReplacer("\n", " ", "\r", " ")
)

func writeRow(b *bytes.Buffer, cells []string) {
	b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

// writeRule writes the header rule: the first left columns left-aligned,
// the rest right-aligned.
func writeRule(b *bytes.Buffer, n, left int) {
	cells := make([]string, n)
	for i := range cells {
		cells[i] = "---:"
		if i < left {
			cells[i] = "---"
		}
	}
	writeRow(b, cells)
}

// combo is the values of some settings, as a label.
func combo(p Params, keys []string) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		v, ok := p.Get(k)
		if !ok {
			v = "—"
		}
		parts[i] = v
	}
	return strings.Join(parts, ", ")
}

// writePivot writes a table: the best learning rate's quality of every
// point, a row per combination of t.Rows' values and a column per
// combination of t.Cols'.
func writePivot(b *bytes.Buffer, t Table, results []*Result, quality string) error {
	ss := settings(selectResults(results, t.Where), quality)
	pts := points(ss, quality)
	byLR := slices.Contains(t.Rows, KeyLR) || slices.Contains(t.Cols, KeyLR)
	if byLR {
		// A cell per learning rate: every setting is its own point.
		pts = nil
		for _, st := range ss {
			pt := &Point{Params: st.Params, Settings: []*Setting{st}}
			if st.Diverged == 0 && st.Quality.N > 0 {
				pt.Best = st
			}
			pts = append(pts, pt)
		}
	}
	var rows, cols []string
	cells := map[[2]string]*Point{}
	for _, pt := range pts {
		r, c := combo(pt.Params, t.Rows), combo(pt.Params, t.Cols)
		if !slices.Contains(rows, r) {
			rows = append(rows, r)
		}
		if !slices.Contains(cols, c) {
			cols = append(cols, c)
		}
		if other, dup := cells[[2]string{r, c}]; dup {
			return fmt.Errorf("table %q: %s and %s share a cell; put the settings that tell them apart into rows, cols or where", t.Title, other.Params, pt.Params)
		}
		cells[[2]string{r, c}] = pt
	}
	title := t.Title
	if title == "" {
		title = "Table"
	}
	fmt.Fprintf(b, "\n## %s\n\n", markdownLine(title))
	how := "lower is better"
	if higherIsBetter(quality) {
		how = "higher is better"
	}
	if isShare(quality) {
		how += ", in %"
	}
	if byLR {
		fmt.Fprintf(b, "%s (%s), mean ± sd over the seeds.\n\n", capitalized(qualityName(quality)), how)
	} else {
		fmt.Fprintf(b, "%s (%s) at the best learning rate, mean ± sd over the seeds.\n\n", capitalized(qualityName(quality)), how)
	}
	if len(pts) == 0 {
		b.WriteString("No runs.\n")
		return nil
	}
	header := []string{strings.Join(t.Rows, ", ")}
	for _, c := range cols {
		if c == "" {
			c = qualityName(quality)
		}
		header = append(header, markdownCell(c))
	}
	writeRow(b, header)
	writeRule(b, len(header), 1)
	for _, r := range rows {
		row := []string{markdownCell(r)}
		for _, c := range cols {
			pt := cells[[2]string{r, c}]
			switch {
			case pt == nil:
				row = append(row, "")
			case pt.Best == nil:
				row = append(row, noBest(pt, quality, "diverged"))
			default:
				lr, _ := pt.Best.Params.Get(KeyLR)
				cell := fmtStat(pt.Best.Quality, isShare(quality))
				if lr != "" && !byLR {
					cell += " (lr " + lr + ")"
				}
				row = append(row, cell)
			}
		}
		writeRow(b, row)
	}
	return nil
}
