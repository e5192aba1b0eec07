package sweep

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/train"
)

// Statuses of a finished run.
const (
	StatusDone     = "done"
	StatusDiverged = "diverged" // the loss, a gradient, a parameter or the optimizer state became NaN or infinite; no quality
)

// ResultFile is written into a run's directory when it has finished; a
// run that has one is not run again.
const ResultFile = "result.json"

// Result is what a finished run measured; results.jsonl holds one a line.
type Result struct {
	Run    string            `json:"run"`
	Dir    string            `json:"dir"` // relative to the sweep's directory
	Params map[string]string `json:"params"`
	Method string            `json:"method"`
	Status string            `json:"status"`
	Error  string            `json:"error,omitempty"` // why it diverged
	Steps  int64             `json:"steps"`
	// FreeParams is what the method trains: DST's kept entries at the
	// last step, LoRA's and prompt tuning's added parameters, full
	// fine-tuning's parameters (those --trainable names, when it is
	// given); Fraction is that over the model's parameters (the elements
	// of its floating-point initializers; 1 for full fine-tuning).
	FreeParams int64   `json:"free_params,omitempty"`
	Fraction   float64 `json:"fraction"`
	// Final holds the last validation's loss ("valid_loss") and metric
	// (its metrics.jsonl field), Initial the model's before training.
	// A run that keeps its best validation's outputs (--keep-best) is
	// judged by those: Final is that validation's, at BestStep.
	Final    map[string]float64 `json:"final"`
	BestStep int64              `json:"best_step,omitempty"`
	Initial  map[string]float64 `json:"initial"`
	WallS    float64            `json:"wall_s"` // the run's own time, summed over the sessions that trained it (SessionsFile)

	params Params // in canonical order
}

// Value is a field of Final (NaN when absent).
func (r *Result) Value(field string) float64 {
	if v, ok := r.Final[field]; ok {
		return v
	}
	return math.NaN()
}

// InitialValue is a field of Initial (NaN when absent).
func (r *Result) InitialValue(field string) float64 {
	if v, ok := r.Initial[field]; ok {
		return v
	}
	return math.NaN()
}

// metricsLine holds the metrics.jsonl fields a result reads.
type metricsLine struct {
	Step          int64    `json:"step"`
	Loss          *float64 `json:"loss"`
	ValidLoss     *float64 `json:"valid_loss"`
	TokenAccuracy *float64 `json:"token_accuracy"`
	ExactMatch    *float64 `json:"exact_match"`
	Accuracy      *float64 `json:"accuracy"`
	Kept          *int64   `json:"kept"`
	FreeParams    *int64   `json:"free_params"`
}

func (m *metricsLine) validation() map[string]float64 {
	out := map[string]float64{}
	for name, v := range map[string]*float64{QualityLoss: m.ValidLoss, "token_accuracy": m.TokenAccuracy, "exact_match": m.ExactMatch, "accuracy": m.Accuracy} {
		if v != nil && !math.IsNaN(*v) && !math.IsInf(*v, 0) {
			out[name] = *v
		}
	}
	return out
}

// readResult summarizes a finished run from its metrics.jsonl; fractions
// are over modelParams.
func readResult(dir string, r Run, modelParams int64) (*Result, error) {
	method, _ := r.Params.Get(KeyMethod)
	res := &Result{Run: r.Name, Dir: filepath.Join(runsDir, r.Name), Params: r.Params.Map(), Method: method, Status: StatusDone,
		Final: map[string]float64{}, Initial: map[string]float64{}, params: r.Params}
	path := filepath.Join(dir, train.MetricsFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	n := 0
	bestStep, keptBest := train.BestStepIn(filepath.Join(dir, train.BestDir))
	var best map[string]float64
	for line := range bytes.Lines(data) {
		n++
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m metricsLine
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if m.ValidLoss != nil {
			if m.Step == 0 {
				res.Initial = m.validation()
			}
			res.Final = m.validation()
			if keptBest && m.Step == bestStep {
				best = res.Final
			}
		}
		if m.Loss != nil {
			res.Steps = m.Step
			switch {
			case m.Kept != nil:
				res.FreeParams = *m.Kept
			case m.FreeParams != nil:
				res.FreeParams = *m.FreeParams
			}
		}
	}
	if best != nil && bestStep > 0 {
		res.Final, res.BestStep = best, bestStep
	}
	res.Fraction = 1
	if method != train.MethodFull && res.FreeParams > 0 && modelParams > 0 {
		res.Fraction = float64(res.FreeParams) / float64(modelParams)
	}
	return res, nil
}

// loadResult reads a run's result.json (nil when the run has not
// finished).
func loadResult(dir string) (*Result, error) {
	data, err := os.ReadFile(filepath.Join(dir, ResultFile))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ResultFile), err)
	}
	return &r, nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'))
}

// writeResults writes results.jsonl: the finished runs, in grid order.
func writeResults(path string, results []*Result) error {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	for _, r := range results {
		if r == nil {
			continue
		}
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	w.Flush()
	return atomicfile.Write(path, b.Bytes())
}
