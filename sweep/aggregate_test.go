package sweep

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// result makes a finished run's result with the given settings and
// final quality.
func result(q float64, status string, kv ...string) *Result {
	var p Params
	for i := 0; i < len(kv); i += 2 {
		p = append(p, Param{kv[i], kv[i+1]})
	}
	sortParams(p)
	r := &Result{Params: p.Map(), Status: status, Final: map[string]float64{}, Initial: map[string]float64{"token_accuracy": 0.4}, params: p}
	if status == StatusDone {
		r.Final["token_accuracy"] = q
		r.Final[QualityLoss] = 1 - q
	}
	return r
}

// TestBestLearningRate: a point's best learning rate has the best mean
// quality over its seeds; a learning rate with a diverged run is never
// best; means and sample standard deviations are over the seeds.
func TestBestLearningRate(t *testing.T) {
	rs := []*Result{
		result(0.50, StatusDone, "method", "dst", "eps", "1e-3", "lr", "1e-2", "seed", "1"),
		result(0.60, StatusDone, "method", "dst", "eps", "1e-3", "lr", "1e-2", "seed", "2"),
		result(0.70, StatusDone, "method", "dst", "eps", "1e-3", "lr", "1e-1", "seed", "1"),
		result(0.62, StatusDone, "method", "dst", "eps", "1e-3", "lr", "1e-1", "seed", "2"),
		result(0.90, StatusDone, "method", "dst", "eps", "1e-3", "lr", "1", "seed", "1"),
		result(0, StatusDiverged, "method", "dst", "eps", "1e-3", "lr", "1", "seed", "2"),
		result(0.30, StatusDone, "method", "full", "lr", "1e-3", "seed", "1"),
		result(0, StatusDiverged, "method", "full", "lr", "1e-2", "seed", "1"),
	}
	for _, q := range []string{"token_accuracy", QualityLoss} {
		pts := points(settings(rs, q), q)
		if len(pts) != 2 {
			t.Fatalf("%s: %d points, want 2", q, len(pts))
		}
		best := pts[0].Best
		if lr, _ := best.Params.Get(KeyLR); lr != "1e-1" {
			t.Errorf("%s: best lr of dst %s, want 1e-1 (lr 1 has a diverged run)", q, lr)
		}
		wantMean := 0.66
		if q == QualityLoss {
			wantMean = 0.34
		}
		if math.Abs(best.Quality.Mean-wantMean) > 1e-12 || math.Abs(best.Quality.SD-math.Sqrt(2*0.04*0.04)) > 1e-12 || best.Quality.N != 2 {
			t.Errorf("%s: best %+v, want mean %v, sd %v over 2", q, best.Quality, wantMean, math.Sqrt(2*0.04*0.04))
		}
		if lr, _ := pts[1].Best.Params.Get(KeyLR); lr != "1e-3" {
			t.Errorf("%s: best lr of full %s, want 1e-3", q, lr)
		}
	}
	ss := settings(rs, "token_accuracy")
	if ss[2].Diverged != 1 || ss[2].Quality.N != 1 {
		t.Errorf("lr 1: %d diverged, %d measured; want 1, 1", ss[2].Diverged, ss[2].Quality.N)
	}
	only := points(settings(rs[7:], "token_accuracy"), "token_accuracy")
	if only[0].Best != nil {
		t.Errorf("a point whose runs all diverged has a best: %v", only[0].Best.Params)
	}
}

// TestReportEscapesAndCounts: settings holding Markdown's "|" and "\"
// stay in their cell, a title's newline does not start a heading, and a
// setting whose every run diverged counts its runs, not its learning
// rates.
func TestReportEscapesAndCounts(t *testing.T) {
	rs := []*Result{
		result(0.5, StatusDone, "method", "dst", "trainable", `^(h|wte)\.0`, "lr", "1e-2", "seed", "1"),
		result(0.6, StatusDone, "method", "dst", "trainable", `^(h|wte)\.0`, "lr", "1e-2", "seed", "2"),
		result(0, StatusDiverged, "method", "dst", "trainable", "^h", "lr", "1e-2", "seed", "1"),
		result(0, StatusDiverged, "method", "dst", "trainable", "^h", "lr", "1e-2", "seed", "2"),
		result(0, StatusDiverged, "method", "dst", "trainable", "^h", "lr", "1e-1", "seed", "1"),
		result(0, StatusDiverged, "method", "dst", "trainable", "^h", "lr", "1e-1", "seed", "2"),
	}
	dir := t.TempDir()
	s := &Spec{File: "s.json", Quality: "token_accuracy", Title: "a sweep\n## injected"}
	if _, err := writeReport(s, dir, rs); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(md)
	if strings.Contains(text, "\n## injected") || !strings.Contains(text, "# a sweep ## injected") {
		t.Errorf("the title's newline reached the report:\n%s", text)
	}
	if !strings.Contains(text, `| ^(h\|wte)\\.0 |`) {
		t.Errorf("the setting with | and \\ is not escaped:\n%s", text)
	}
	found := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "| ^h |") && strings.Contains(line, "all diverged") {
			found = true
			if !strings.HasSuffix(line, "| 4 |") {
				t.Errorf("an all-diverged row counts other than its 4 runs: %s", line)
			}
		}
	}
	if !found {
		t.Errorf("no all-diverged row for ^h:\n%s", text)
	}
}
