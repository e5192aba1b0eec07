package sweep

import (
	"context"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/dstune/dstune/train"
)

// loadSpecText writes a spec over the fixture's files (train.jsonl,
// valid.jsonl as dataset "d"; model) with the given train settings,
// grid and plots, and reads it.
func loadSpecText(t *testing.T, dir, model, name, trainSettings, grid, plots string) *Spec {
	t.Helper()
	text := fmt.Sprintf(`{"model": %q,
  "datasets": {"d": {"data": "train.jsonl", "valid": "valid.jsonl"}},
  "train": {"dataset": "d", "task": "lm", "batch": 4, "seed": 1, "threads": 1%s},
  "grid": [%s],
  "plots": [%s]}`, model, trainSettings, grid, plots)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSpec(path, []string{"method", "lr", "seed", "steps", "eps", "rank", "task", "batch", "threads", "checkpoint-every", "checkpoint-minutes"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPlanArgsAreTheRunsFlags: the dstune train arguments a run is
// planned with (what --dry-run prints) give the configuration it runs
// with, the sweep's checkpoint cadence included, so a run trained by
// hand from them is the sweep's run; one trained by hand with other
// flags is refused as a run that trained to its end, not as a stopped
// one.
func TestPlanArgsAreTheRunsFlags(t *testing.T) {
	dir, model := sweepFixture(t)
	s := writeSpec(t, dir, model, "spec.json", `, "steps": 20`, `{"method": "dst", "eps": 0.05}`)
	out := filepath.Join(dir, "out")
	plan, err := Plan(s, testOptions(out, false))
	if err != nil {
		t.Fatal(err)
	}
	p := plan[0]
	for _, flag := range []string{"--checkpoint-every=2", "--checkpoint-minutes=0"} {
		if !slices.Contains(p.Args, flag) {
			t.Errorf("args %q lack %s", p.Args, flag)
		}
	}
	byHand, err := configureTest(p.Args)
	if err != nil {
		t.Fatal(err)
	}
	if diff := train.RecordedDiff(byHand, p.Config); diff != "" || byHand.CheckpointEvery != 2 || byHand.CheckpointMinutes != 0 {
		t.Errorf("the listed arguments configure another run: %s (checkpoint every %d, %v minutes)", diff, byHand.CheckpointEvery, byHand.CheckpointMinutes)
	}
	// A spec that sets the cadence gets no other.
	own := writeSpec(t, dir, model, "own.json", `, "steps": 20, "checkpoint-every": 5`, `{"method": "dst", "eps": 0.05}`)
	ownPlan, err := Plan(own, testOptions(filepath.Join(dir, "own"), false))
	if err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(ownPlan[0].Args, " "); strings.Count(args, "--checkpoint-every") != 1 || strings.Contains(args, "--checkpoint-minutes") {
		t.Errorf("a spec's own checkpoint-every: args %s", args)
	}

	// Trained by hand with the listed arguments: the sweep takes it.
	if _, err := train.Run(context.Background(), byHand, train.RunOptions{Dir: p.Dir}); err != nil {
		t.Fatal(err)
	}
	o, err := Execute(context.Background(), s, testOptions(out, false))
	if err != nil {
		t.Fatalf("a run trained by hand with the listed arguments: %v", err)
	}
	if o.Results[0] == nil || o.Results[0].Steps != 20 {
		t.Errorf("result %+v", o.Results[0])
	}

	// Trained by hand without the sweep's checkpoint flags.
	other := filepath.Join(dir, "other")
	plan, err = Plan(s, testOptions(other, false))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, a := range plan[0].Args {
		if !strings.HasPrefix(a, "--checkpoint-") {
			args = append(args, a)
		}
	}
	cfg, err := configureTest(args)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := train.Run(context.Background(), cfg, train.RunOptions{Dir: plan[0].Dir}); err != nil {
		t.Fatal(err)
	}
	_, err = Plan(s, testOptions(other, false))
	if err == nil || !strings.Contains(err.Error(), "holds a run that trained to its last step with other settings") || strings.Contains(err.Error(), "stopped") ||
		!strings.Contains(err.Error(), "checkpoint_every") {
		t.Errorf("a run trained by hand with other flags: %v", err)
	}
}

// TestOverlapStepsNeedsKeptDeltas: a spec with an overlap-steps plot is
// refused before anything trains when the sweep keeps no deltas; runs
// that finished without them are named, with the directories to remove,
// and once removed they train again with their deltas kept.
func TestOverlapStepsNeedsKeptDeltas(t *testing.T) {
	dir, model := sweepFixture(t)
	out := filepath.Join(dir, "out")
	const grid = `{"method": "dst", "eps": [0.05, 0.1]}`
	s := loadSpecText(t, dir, model, "spec.json", `, "steps": 4`, grid, `{"kind": "overlap-steps", "file": "os.png"}`)
	_, err := Plan(s, testOptions(out, false))
	var se *SpecError
	if !errors.As(err, &se) || se.Where != "plots[0] (os.png)" || !strings.HasPrefix(err.Error(), s.File+": plots[0] (os.png): ") || !strings.Contains(se.Msg, "--keep-deltas") {
		t.Fatalf("overlap-steps without kept deltas: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the sweep's directory was made")
	}
	// The same runs, trained without the plot and without deltas.
	plain := loadSpecText(t, dir, model, "plain.json", `, "steps": 4`, grid, "")
	if _, err := Execute(context.Background(), plain, testOptions(out, false)); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(out, runsDir, "dst,eps=0.05"), filepath.Join(out, runsDir, "dst,eps=0.1")
	_, err = Execute(context.Background(), s, testOptions(out, true))
	if err == nil || !strings.Contains(err.Error(), s.File+": plots[0] (os.png): 2 runs kept no delta") ||
		!strings.HasSuffix(err.Error(), "remove their directories and run the sweep again to train them anew, their deltas kept: "+a+" "+b) {
		t.Fatalf("finished runs without deltas: %v", err)
	}
	if err := os.RemoveAll(a); err != nil {
		t.Fatal(err)
	}
	_, err = Execute(context.Background(), s, testOptions(out, true))
	if err == nil || !strings.Contains(err.Error(), "run dst,eps=0.1 kept no delta") || !strings.Contains(err.Error(), "remove its directory "+b+" ") {
		t.Fatalf("one finished run without deltas: %v", err)
	}
	if err := os.RemoveAll(b); err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(context.Background(), s, testOptions(out, true)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(out, "os.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.DecodeConfig(f); err != nil {
		t.Error(err)
	}
}

// TestWallTimeSumsSessions: a run stopped and continued reports the wall
// time of all its sessions, not of the last alone.
func TestWallTimeSumsSessions(t *testing.T) {
	dir, model := sweepFixture(t)
	s := writeSpec(t, dir, model, "spec.json", `, "steps": 8`, `{"method": "dst", "eps": 0.05}`)
	out := filepath.Join(dir, "out")
	plan, err := Plan(s, testOptions(out, false))
	if err != nil {
		t.Fatal(err)
	}
	p := plan[0]
	// An earlier session of 100 s, stopped after its checkpoint at step 4.
	crash := errors.New("killed")
	_, err = train.Run(context.Background(), p.Config, train.RunOptions{Dir: p.Dir, AfterStep: func(step int64) error {
		if step == 4 {
			return crash
		}
		return nil
	}})
	if !errors.Is(err, crash) {
		t.Fatal(err)
	}
	if err := recordSession(p.Dir, 100); err != nil {
		t.Fatal(err)
	}
	o, err := Execute(context.Background(), s, testOptions(out, false))
	if err != nil {
		t.Fatal(err)
	}
	if w := o.Results[0].WallS; !(w > 100 && w < 160) {
		t.Errorf("wall time %v s, want the 100 s before and this session's", w)
	}
	if saved, err := loadResult(p.Dir); err != nil || saved.WallS != o.Results[0].WallS {
		t.Errorf("result.json: %+v, %v", saved, err)
	}
}

// TestInterruptedBeforeAnyRunFinishedReports: a sweep interrupted before
// any run finished still writes its report, marked partial, and says so;
// its plot, of no finished run, is left out.
func TestInterruptedBeforeAnyRunFinishedReports(t *testing.T) {
	dir, model := sweepFixture(t)
	s := loadSpecText(t, dir, model, "spec.json", `, "steps": 4`, `{"method": "dst", "eps": 0.05}`, `{"kind": "budget", "file": "b.png"}`)
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Execute(ctx, s, testOptions(out, false))
	if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "0 of 1 run finished") || !strings.Contains(err.Error(), "results.jsonl and results.md report the runs that finished") {
		t.Fatalf("err = %v", err)
	}
	md, err := os.ReadFile(filepath.Join(out, ReportFile))
	if err != nil || !strings.Contains(string(md), "**Partial: 1 of the spec's 1 run has not finished.** 0 runs (0 diverged).") {
		t.Errorf("results.md (%v):\n%s", err, md)
	}
	if _, err := os.Stat(filepath.Join(out, "b.png")); err == nil {
		t.Error("b.png drawn of no run")
	}
}

// TestBudgetPlotDashedLineOnlyForFull: full fine-tuning's one point has
// a dashed line across the plot; another method's single budget is a
// point alone.
func TestBudgetPlotDashedLineOnlyForFull(t *testing.T) {
	s := &Spec{File: "s.json", Quality: "token_accuracy"}
	for _, c := range []struct {
		settings []string
		fraction float64
		line     bool
	}{
		{[]string{"method", "full", "lr", "1e-3", "seed", "1"}, 1, true},
		{[]string{"method", "dst", "eps", "1e-3", "lr", "1e-3", "seed", "1"}, 0.01, false},
		{[]string{"method", "lora", "rank", "4", "lr", "1e-3", "seed", "1"}, 0.05, false},
	} {
		r := result(0.5, StatusDone, c.settings...)
		r.Fraction = c.fraction
		r.Initial = map[string]float64{} // no dotted line before training
		pl, err := budgetPlot(s, Plot{Kind: PlotBudget}, []*Result{r})
		if err != nil {
			t.Fatal(err)
		}
		const w, h = 500, 300
		img := vgimg.NewWith(vgimg.UseWH(w*vg.Points(1), h*vg.Points(1)), vgimg.UseDPI(72))
		dc := draw.New(img)
		pl.Draw(dc)
		area := pl.DataCanvas(dc)
		_, trY := pl.Transforms(&area)
		row := h - int(math.Round(float64(trY(50)))) // 50 %, the point's quality; the image's rows run down
		// The left fifth of the plot, far from the point at its middle.
		x0, x1 := int(area.Min.X)+3, int(area.Min.X+(area.Max.X-area.Min.X)/5)
		lineColor := plotutil.Color(0)
		lr, lg, lb, _ := lineColor.RGBA()
		colored := 0
		for y := row - 1; y <= row+1; y++ {
			for x := x0; x < x1; x++ {
				r, g, b, _ := img.Image().At(x, y).RGBA()
				if near(r, lr) && near(g, lg) && near(b, lb) {
					colored++
				}
			}
		}
		if got := colored > (x1-x0)/4; got != c.line {
			t.Errorf("%s: %d pixels of the line's color across the plot at the point's height (of %d), want a line: %v", c.settings[1], colored, x1-x0, c.line)
		}
	}
}

func near(a, b uint32) bool { return a>>8 <= b>>8+40 && b>>8 <= a>>8+40 }
