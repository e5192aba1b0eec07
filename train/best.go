package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"github.com/dstune/dstune/internal/atomicfile"
)

// The best validation's outputs (Config.KeepBest): RUN/best holds what
// the run writes at its end — the delta, the adapters or the fine-tuned
// model — as of the step whose validation was the best so far, and
// best.json says which step that is. A new best is written into
// RUN/.best.tmp and swapped in, so RUN/best is always one step's.
const (
	BestDir  = "best"
	BestFile = "best.json"
	bestTmp  = ".best.tmp"
	bestOld  = ".best.old"
)

// BestRecord is RUN/best/best.json.
type BestRecord struct {
	Step      int64    `json:"step"`
	ValidLoss float64  `json:"valid_loss"`
	Metric    string   `json:"metric,omitempty"` // Config.Metric, when the best is by it
	Value     *float64 `json:"value,omitempty"`  // the metric's value
}

// bestTracker follows a run's validations after its first step: the best
// one so far — the lowest validation loss, or the highest value of the
// run's --metric (a share that grows with quality) — and how many
// validations since did not beat it (Config.Patience). Validations tie
// to the earlier. It is a function of metrics.jsonl's validation records,
// so a resumed run rebuilds it from those the checkpoint kept.
type bestTracker struct {
	byMetric bool
	step     int64   // the best validation's step (0: none yet)
	value    float64 // its loss or metric
	stale    int64   // validations since the best one
}

func newBestTracker(cfg *Config) *bestTracker {
	return &bestTracker{byMetric: cfg.Metric != "" && cfg.Metric != MetricLoss}
}

// note takes the validation v of step (≥ 1) and reports whether it is the
// new best.
func (b *bestTracker) note(step int64, v validation) bool {
	x, better := v.loss, func(x, best float64) bool { return x < best }
	if b.byMetric {
		x, better = v.metric, func(x, best float64) bool { return x > best }
	}
	if math.IsNaN(x) || (b.step > 0 && !better(x, b.value)) {
		b.stale++
		return false
	}
	b.step, b.value, b.stale = step, x, 0
	return true
}

// what names the quantity compared.
func (b *bestTracker) what(cfg *Config) string {
	if b.byMetric {
		return cfg.Metric
	}
	return "validation loss"
}

// restoreBest rebuilds the tracker from metrics.jsonl (already cut back
// to the restored checkpoint's step) and removes a RUN/best written after
// that step (the steps that wrote it are trained again, and write it again
// when they get there).
func (r *runner) restoreBest() error {
	r.best = newBestTracker(&r.cfg)
	if !r.cfg.KeepBest && r.cfg.Patience == 0 {
		return nil
	}
	// A swap that a crash cut short: the previous best is put back.
	best, old := filepath.Join(r.opts.Dir, BestDir), filepath.Join(r.opts.Dir, bestOld)
	if _, err := os.Stat(best); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(old, best); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, stale := range []string{old, filepath.Join(r.opts.Dir, bestTmp)} {
		if err := os.RemoveAll(stale); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(filepath.Join(r.opts.Dir, MetricsFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for line := range bytes.Lines(data) {
		var rec metricsRecord
		if json.Unmarshal(line, &rec) != nil || rec.Step < 1 || rec.ValidLoss == nil {
			continue
		}
		v := validation{loss: *rec.ValidLoss, metric: math.NaN()}
		if p := rec.metricValue(r.cfg.Metric); p != nil {
			v.metric = *p
		}
		r.best.note(rec.Step, v)
	}
	var kept BestRecord
	data, err = os.ReadFile(filepath.Join(best, BestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && json.Unmarshal(data, &kept) == nil && kept.Step <= r.engine.Step() {
		return nil
	}
	return os.RemoveAll(best)
}

// writeBest writes the run's outputs as of step, whose validation v is
// the best so far, into RUN/best.
func (r *runner) writeBest(step int64, v validation) error {
	dir := r.opts.Dir
	tmp := filepath.Join(dir, bestTmp)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o777); err != nil {
		return err
	}
	st, err := r.state()
	if err != nil {
		return err
	}
	if w, ok := r.method.(RunFileWriter); ok {
		if err := w.WriteRunFiles(tmp, st); err != nil {
			return err
		}
	}
	if r.onnxModel != nil && r.method.Name() == MethodFull {
		if err := r.writeModel(filepath.Join(tmp, ModelFile)); err != nil {
			return err
		}
	}
	rec := BestRecord{Step: step, ValidLoss: v.loss}
	if r.best.byMetric {
		rec.Metric, rec.Value = r.cfg.Metric, &v.metric
	}
	if err := writeJSONFile(filepath.Join(tmp, BestFile), rec); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	best, old := filepath.Join(dir, BestDir), filepath.Join(dir, bestOld)
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(best, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, best); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// stoppedEarly is the message of a run that --patience stopped (or that
// had stopped, when resumed).
func (r *runner) stoppedEarly() string {
	b := r.best
	return fmt.Sprintf("the %s has not improved for %d validations (best %.4g at step %d)", b.what(&r.cfg), b.stale, b.value, b.step)
}
