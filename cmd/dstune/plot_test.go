package main

import (
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"gonum.org/v1/plot"
)

// fakeRun writes a run directory with a config and metrics.
func fakeRun(t *testing.T, dir, config string, lines []string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "metrics.jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPlot(t *testing.T) {
	dir := t.TempDir()
	var full, dstLines []string
	full = append(full, `{"step":0,"epoch":0,"valid_loss":6}`)
	dstLines = append(dstLines, `{"step":0,"epoch":0,"valid_loss":6}`)
	for step := 1; step <= 30; step++ {
		full = append(full, fmt.Sprintf(`{"step":%d,"epoch":0,"loss":%g}`, step, 6-0.1*float64(step)))
		// eps_alg2 is 2% off at step 25, exact elsewhere; silo "big" (k 200)
		// is 0.5% off from step 20 on.
		alg2 := 0.01
		if step == 25 {
			alg2 = 0.0102
		}
		dstLines = append(dstLines, fmt.Sprintf(`{"step":%d,"epoch":0,"loss":%g,"eps":0.01,"eps_alg2":%g,"exact_fallbacks":1,"dst_ms":0.5,"optimizer_ms":2,`+
			`"silos":{"big":{"eps":0.01,"k":200,"eps_alg2":0.01005},"small":{"eps":0.5,"k":1,"eps_alg2":1}}}`, step, 6-0.05*float64(step), alg2))
	}
	full = append(full, `{"step":30,"epoch":0,"valid_loss":3.5}`)
	a := fakeRun(t, filepath.Join(dir, "full"), `{"model":"/m/tiny/model.onnx","method":"full"}`, full)
	b := fakeRun(t, filepath.Join(dir, "dst"), `{"model":"/m/tiny/model.onnx","method":"dst","dst":{"eps":0.01,"distance":"inv-rel","silo":"module-layer","threshold":"iterative","churn":true,"refine_steps":3,"factor":2}}`, dstLines)
	out := filepath.Join(dir, "curves.png")
	code, stdout, stderr := dstune("plot", a, b, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil || cfg.Width < 500 || cfg.Height < 300 {
		t.Fatalf("PNG %+v, %v", cfg, err)
	}
	for _, want := range []string{
		"full                 30       5.4500       3.4500       6.0000       3.5000",
		"dst ε=0.01: exact fallbacks 30; median optimizer pass 2.000 ms, DST 0.500 ms",
		"Algorithm 2 (eps_alg2) from step 20: |realized/ε − 1| overall max 2.00%, within 1% at 10 of 11 steps",
		"per silo with k ≥ 100 (1 silo): within 1% at 11 of 11 silo-steps; median 0.50%, max 0.50%",
		// Each silo's worst, of the silos the figures above cover.
		"per silo with k ≥ 100, max: big 0.5%\n",
		"1 silo with k < 100 left out",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "small") {
		t.Errorf("the output lists silo small, whose k is under 100:\n%s", stdout)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"plot", "-o", out}, "at least one run"},
		{[]string{"plot", a}, "-o CURVES.png is required"},
		{[]string{"plot", a, "-o", out, "--smooth", "0"}, "--smooth"},
		{[]string{"plot", a, "-o", out, "--from", "-5"}, "--from -5: want a step"},
	} {
		if code, _, stderr := dstune(c.args...); code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %s", c.args, code, stderr)
		}
	}
	// -o over an existing file needs --force, and is never a run's file.
	if code, _, stderr := dstune("plot", a, b, "-o", out); code != 2 || !strings.Contains(stderr, "curves.png exists (--force overwrites it)") {
		t.Errorf("-o an existing file: exit %d, %s", code, stderr)
	}
	if code, _, stderr := dstune("plot", a, b, "-o", out, "--force"); code != 0 {
		t.Errorf("-o an existing file, --force: exit %d, %s", code, stderr)
	}
	if code, _, stderr := dstune("plot", a, b, "-o", filepath.Join(b, "metrics.jsonl"), "--force"); code != 2 || !strings.Contains(stderr, "give a file name ending in .png") {
		t.Errorf("-o a run's metrics: exit %d, %s", code, stderr)
	}
	// plot writes PNG: another name would hold PNG bytes under a name
	// that says otherwise.
	for _, name := range []string{"curves.svg", "curves.pdf", "curves", "curves.png.txt"} {
		if code, _, stderr := dstune("plot", a, "-o", filepath.Join(dir, name)); code != 2 || !strings.Contains(stderr, "plot writes a PNG; give a file name ending in .png") {
			t.Errorf("-o %s: exit %d, %s", name, code, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("-o %s: written", name)
		}
	}
	if code, _, stderr := dstune("plot", a, "-o", filepath.Join(dir, "CURVES.PNG")); code != 0 {
		t.Errorf("-o CURVES.PNG: exit %d, %s", code, stderr)
	}
	bad := fakeRun(t, filepath.Join(dir, "bad"), `{}`, []string{`{"step":1,"loss":1}`, `{"step":2,"loss":`})
	if code, _, stderr := dstune("plot", bad, "-o", filepath.Join(dir, "bad.png")); code != 1 || !strings.Contains(stderr, "metrics.jsonl:2") {
		t.Errorf("a broken metrics line: exit %d, %s", code, stderr)
	}
	for i, c := range []struct{ line, want string }{
		{`[1]`, "metrics.jsonl:2: not a JSON object"},
		{`{"loss":1}`, `metrics.jsonl:2: the record has no "step"`},
		{`{"step":2,"loss":"x"}`, `metrics.jsonl:2: field "loss" is a JSON string, want a number`},
		{`{"step":9223372036854775807,"loss":1}`, "metrics.jsonl:2: step 9223372036854775807 is out of range"},
		{`{"step":-1,"loss":1}`, "metrics.jsonl:2: step -1 is out of range"},
		// Steps only go up (a resumed run cuts the file back first): a
		// step repeated or going back is a file joined or edited by hand.
		{`{"step":1,"loss":0.5}`, "metrics.jsonl:2: training loss of step 1 after that of step 1: the records are out of order"},
		{`{"step":0,"loss":0.5}`, "metrics.jsonl:2: training loss of step 0 after that of step 1"},
	} {
		run := fakeRun(t, filepath.Join(dir, fmt.Sprintf("bad%d", i)), `{}`, []string{`{"step":1,"loss":1}`, c.line})
		if code, _, stderr := dstune("plot", run, "-o", filepath.Join(dir, "bad.png")); code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("metrics line %s: exit %d, %s", c.line, code, stderr)
		}
	}
	// Validation records go in order among themselves; a training record
	// may carry the validation loss of its own step.
	valid := fakeRun(t, filepath.Join(dir, "valid"), `{}`, []string{`{"step":0,"valid_loss":3}`, `{"step":1,"loss":1,"valid_loss":2}`, `{"step":1,"valid_loss":2}`})
	if code, _, stderr := dstune("plot", valid, "-o", filepath.Join(dir, "valid.png")); code != 1 || !strings.Contains(stderr, "metrics.jsonl:3: validation loss of step 1 after that of step 1") {
		t.Errorf("a validation record repeated: exit %d, %s", code, stderr)
	}
	// --from past the run's steps says why the Algorithm 2 figures are
	// missing.
	if code, stdout, stderr := dstune("plot", b, "-o", filepath.Join(dir, "late.png"), "--from", "100"); code != 0 || !strings.Contains(stdout, "dst ε=0.01: no Algorithm 2 figures from step 100: the run's 30 steps tracking it all come before") {
		t.Errorf("--from past the steps: exit %d, %s%s", code, stdout, stderr)
	}
	// A damaged config.json is said, not passed over in silence.
	damaged := fakeRun(t, filepath.Join(dir, "damaged"), `{bad`, []string{`{"step":1,"loss":1}`})
	if code, _, stderr := dstune("plot", damaged, "-o", filepath.Join(dir, "damaged.png")); code != 0 || !strings.Contains(stderr, "config.json") || !strings.Contains(stderr, "labelled by its directory") {
		t.Errorf("a damaged config.json: exit %d, %s", code, stderr)
	}
	// A FIFO in place of metrics.jsonl is refused, not waited on.
	fifo := fakeRun(t, filepath.Join(dir, "fifo"), `{}`, nil)
	os.Remove(filepath.Join(fifo, "metrics.jsonl"))
	if err := syscall.Mkfifo(filepath.Join(fifo, "metrics.jsonl"), 0o644); err == nil {
		if code, _, stderr := dstune("plot", fifo, "-o", filepath.Join(dir, "fifo.png")); code != 1 || !strings.Contains(stderr, "not a regular file (a FIFO)") {
			t.Errorf("metrics.jsonl a FIFO: exit %d, %s", code, stderr)
		}
	}
	defer func(was int) { maxMetricsLine = was }(maxMetricsLine)
	maxMetricsLine = 100
	long := fakeRun(t, filepath.Join(dir, "long"), `{}`, []string{`{"step":1,"loss":1}`, `{"step":2,"loss":2,"pad":"` + strings.Repeat("x", 200) + `"}`})
	if code, _, stderr := dstune("plot", long, "-o", filepath.Join(dir, "long.png")); code != 1 || !strings.Contains(stderr, "metrics.jsonl:2: line longer than 100 bytes") {
		t.Errorf("a metrics line over the limit: exit %d, %s", code, stderr)
	}
}

// TestMovingAverageAfterSpike: the mean of a window after a huge loss
// has left it is the window's mean (a plain running sum said 0.19 for
// losses of 3 after a spike of 1e17).
func TestMovingAverageAfterSpike(t *testing.T) {
	x := []float64{1e17}
	for range 30 {
		x = append(x, 3.19)
	}
	got := movingAverage(x, 10)
	for i := 11; i < len(x); i++ {
		if math.Abs(got[i]-3.19) > 1e-12 {
			t.Fatalf("window ending at %d: %v, want 3.19", i, got[i])
		}
	}
}

// TestPlotLabelsTellRunsApart: runs of one method that differ in their
// learning rate, seed, LoRA rank or --trainable get labels naming what
// differs (what differs among another method's runs is not named);
// runs alike in every setting are told apart by their directories,
// which the table shows.
func TestPlotLabelsTellRunsApart(t *testing.T) {
	dir := t.TempDir()
	lines := []string{`{"step":1,"loss":3}`, `{"step":2,"loss":2.5}`}
	lora := func(name, rank, lr, seed, extra string) string {
		return fakeRun(t, filepath.Join(dir, name), `{"model":"/m/tiny/model.onnx","method":"lora","lora":{"rank":`+rank+`,"alpha":8},`+
			`"optimizer":{"name":"adamw","adamw":{"lr":`+lr+`,"eps":1e-8}},"seed":`+seed+`,"threads":2`+extra+`}`, lines)
	}
	runs := []string{
		lora("l1", "4", "0.001", "1", ""),
		lora("l2", "4", "0.01", "1", ""),
		lora("l3", "8", "0.001", "2", ""),
		lora("l4", "8", "0.001", "2", `,"trainable":"^h\\.0"`),
		fakeRun(t, filepath.Join(dir, "f1"), `{"model":"/m/tiny/model.onnx","method":"full","seed":1,"threads":1}`, lines),
		fakeRun(t, filepath.Join(dir, "f2"), `{"model":"/m/tiny/model.onnx","method":"full","seed":1,"threads":2}`, lines),
	}
	code, stdout, stderr := dstune(append([]string{"plot", "-o", filepath.Join(dir, "c.png")}, runs...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for i, label := range []string{
		"lora lr=0.001 rank=4 seed=1 ",
		"lora lr=0.01 rank=4 seed=1 ",
		"lora lr=0.001 rank=8 seed=2 ",
		`lora lr=0.001 rank=8 trainable=^h\.0 seed=2 `,
		// Alike but for the threads, which change no result.
		"full (" + runs[4] + ") ",
		"full (" + runs[5] + ") ",
	} {
		var row string
		for _, line := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(line, label) {
				row = line
			}
		}
		if row == "" || !strings.HasSuffix(row, "  "+runs[i]) {
			t.Errorf("no row labelled %q ending in its directory %s:\n%s", label, runs[i], stdout)
		}
	}
}

// TestDistinctTicks: the loss axis's tick labels are distinct on a
// narrow range (gonum's own read 6.01, 6.01, 6.01), and gonum's where
// those are.
func TestDistinctTicks(t *testing.T) {
	for _, r := range [][2]float64{{6.0101, 6.0134}, {6, 6.1}, {6.05, 6.0512}, {0, 10}, {2.5, 7}} {
		seen := map[string]bool{}
		var labels []string
		for _, tk := range (distinctTicks{}).Ticks(r[0], r[1]) {
			if tk.Label == "" {
				continue
			}
			if seen[tk.Label] {
				t.Errorf("range %v: labels %q repeat %q", r, labels, tk.Label)
			}
			seen[tk.Label] = true
			labels = append(labels, tk.Label)
		}
		if len(labels) < 2 {
			t.Errorf("range %v: labels %q", r, labels)
		}
	}
	var want []string
	for _, tk := range (plot.DefaultTicks{}).Ticks(0, 10) {
		want = append(want, tk.Label)
	}
	var got []string
	for _, tk := range (distinctTicks{}).Ticks(0, 10) {
		got = append(got, tk.Label)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("range 0…10: labels %q, gonum's %q", got, want)
	}
}
