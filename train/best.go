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
	bestKept = ".best.ckpt" // the best of the last checkpoint's steps, while RUN/best is of a later one
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

// exhausted reports whether --patience stops the run at step: that many
// validations since the best, and steps left to train.
func (b *bestTracker) exhausted(cfg *Config, step int64) bool {
	return cfg.Patience > 0 && b.stale >= cfg.Patience && step < cfg.Steps
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
// to the restored checkpoint's step) and makes RUN/best the best of a
// step the checkpoint covers: one written after it is dropped for the
// one kept beside it (RUN/.best.ckpt, writeBest), if any — the steps
// after the checkpoint are trained again, and write theirs again when
// they get there. A new run starts with none.
func (r *runner) restoreBest() error {
	r.best = newBestTracker(&r.cfg)
	dir := r.opts.Dir
	best, old, kept := filepath.Join(dir, BestDir), filepath.Join(dir, bestOld), filepath.Join(dir, bestKept)
	if !r.opts.Resume {
		for _, stale := range []string{best, old, kept, filepath.Join(dir, bestTmp)} {
			if err := os.RemoveAll(stale); err != nil {
				return err
			}
		}
		return nil
	}
	if !r.cfg.KeepBest && r.cfg.Patience == 0 {
		return nil
	}
	if err := settleSwap(dir, filepath.Join(dir, bestTmp), best, old); err != nil {
		return err
	}
	if step, ok := BestStepIn(best); ok && step <= r.engine.Step() {
		if err := os.RemoveAll(kept); err != nil {
			return err
		}
	} else {
		if err := os.RemoveAll(best); err != nil {
			return err
		}
		if err := os.Rename(kept, best); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// A change of the step count (--steps with --resume) starts the
	// patience count again: a run that patience stopped goes on.
	changes := r.cfg.StepsChanges
	for line := range bytes.Lines(data) {
		var rec metricsRecord
		if json.Unmarshal(line, &rec) != nil || rec.Step < 1 || rec.ValidLoss == nil {
			continue
		}
		for len(changes) > 0 && changes[0].Step < rec.Step {
			r.best.stale, changes = 0, changes[1:]
		}
		v := validation{loss: *rec.ValidLoss, metric: math.NaN()}
		if p := rec.metricValue(r.cfg.Metric); p != nil {
			v.metric = *p
		}
		r.best.note(rec.Step, v)
	}
	if len(changes) > 0 {
		r.best.stale = 0
	}
	return atomicfile.SyncDir(dir)
}

// BestStepIn is the step best.json in dir (a run's BestDir) names
// (false: none readable).
func BestStepIn(dir string) (int64, bool) {
	data, err := os.ReadFile(filepath.Join(dir, BestFile))
	var rec BestRecord
	if err != nil || json.Unmarshal(data, &rec) != nil {
		return 0, false
	}
	return rec.Step, true
}

// writeBest writes the run's outputs as of step, whose validation v is
// the best so far, into RUN/best. A best of a step the last checkpoint
// covers is not deleted when a later one replaces it but kept as
// RUN/.best.ckpt until a checkpoint covers the new one
// (dropKeptBest), so that a run resumed from that checkpoint has it. st
// is the step's state when a checkpoint needs it too (nil: taken here).
func (r *runner) writeBest(step int64, v validation, st *EngineState) error {
	dir := r.opts.Dir
	tmp := filepath.Join(dir, bestTmp)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o777); err != nil {
		return err
	}
	if st == nil {
		var err error
		if st, err = r.state(); err != nil {
			return err
		}
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
	best, aside := filepath.Join(dir, BestDir), filepath.Join(dir, bestOld)
	if prev, ok := BestStepIn(best); ok && prev <= r.lastCkpt {
		aside = filepath.Join(dir, bestKept)
	}
	if err := swapDir(dir, tmp, best, aside, "best"); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(dir, bestOld))
}

// dropKeptBest removes RUN/.best.ckpt once the checkpoint of step covers
// RUN/best.
func (r *runner) dropKeptBest(step int64) error {
	if b, ok := BestStepIn(filepath.Join(r.opts.Dir, BestDir)); !ok || b > step {
		return nil
	}
	return os.RemoveAll(filepath.Join(r.opts.Dir, bestKept))
}

// stoppedEarly is the message of a run that --patience stopped (or that
// had stopped, when resumed).
func (r *runner) stoppedEarly() string {
	b := r.best
	return fmt.Sprintf("the %s has not improved for %d validations (best %.4g at step %d)", b.what(&r.cfg), b.stale, b.value, b.step)
}
