package sweep

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/train"
)

// TestResultOfAKeptBest: a run's result is judged by its last validation,
// unless it kept the outputs of its best one (--keep-best): then by that
// validation's loss and metric, and it says the step. A best.json naming
// a step without a validation in metrics.jsonl changes nothing.
func TestResultOfAKeptBest(t *testing.T) {
	metrics := `{"step":0,"valid_loss":3.0,"token_accuracy":0.1}
{"step":1,"loss":2.9}
{"step":2,"loss":2.5,"valid_loss":2.0,"token_accuracy":0.4}
{"step":3,"loss":2.2}
{"step":4,"loss":2.4,"valid_loss":2.6,"token_accuracy":0.3}
`
	for _, c := range []struct {
		name      string
		best      *train.BestRecord
		wantLoss  float64
		wantAcc   float64
		wantBestS int64
	}{
		{"no best kept", nil, 2.6, 0.3, 0},
		{"best kept", &train.BestRecord{Step: 2, ValidLoss: 2.0}, 2.0, 0.4, 2},
		{"best of no validation", &train.BestRecord{Step: 3, ValidLoss: 2.0}, 2.6, 0.3, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, train.MetricsFile), []byte(metrics), 0o644); err != nil {
				t.Fatal(err)
			}
			if c.best != nil {
				if err := os.Mkdir(filepath.Join(dir, train.BestDir), 0o755); err != nil {
					t.Fatal(err)
				}
				data, _ := json.Marshal(c.best)
				if err := os.WriteFile(filepath.Join(dir, train.BestDir, train.BestFile), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res, err := readResult(dir, Run{Name: "r"}, 100)
			if err != nil {
				t.Fatal(err)
			}
			if res.Value(QualityLoss) != c.wantLoss || res.Value("token_accuracy") != c.wantAcc || res.BestStep != c.wantBestS {
				t.Errorf("final %v at best step %d, want valid_loss %v, token_accuracy %v at %d", res.Final, res.BestStep, c.wantLoss, c.wantAcc, c.wantBestS)
			}
			if res.Steps != 4 || res.InitialValue(QualityLoss) != 3.0 {
				t.Errorf("steps %d, initial %v: want 4 and the step-0 validation", res.Steps, res.Initial)
			}
		})
	}
}
