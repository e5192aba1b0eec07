package train

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
)

// Validation metrics (Config.Metric, --metric). The validation loss is
// always reported; a metric adds its own field to the validation records
// of metrics.jsonl and to the validation line of the progress display.
const (
	MetricLoss          = "loss"           // the validation loss alone
	MetricTokenAccuracy = "token-accuracy" // lm: share of the target tokens that are the most likely next token
	MetricExactMatch    = "exact-match"    // lm: share of prompt/completion rows whose completion greedy decoding reproduces
	MetricAccuracy      = "accuracy"       // classify: share of the examples whose most likely class is the label
)

// checkMetric reports whether metric fits task ("" is MetricLoss).
func checkMetric(metric string, task Task) error {
	switch {
	case metric == "" || metric == MetricLoss:
	case metric == MetricAccuracy && task != TaskClassify:
		return fmt.Errorf("--metric %s is for --task classify (lm: %s or %s)", metric, MetricTokenAccuracy, MetricExactMatch)
	case (metric == MetricTokenAccuracy || metric == MetricExactMatch) && task != TaskLM:
		return fmt.Errorf("--metric %s is for --task lm (classify: %s)", metric, MetricAccuracy)
	case metric != MetricAccuracy && metric != MetricTokenAccuracy && metric != MetricExactMatch:
		return fmt.Errorf("unknown --metric %q (want %s, %s, %s or %s)", metric, MetricLoss, MetricTokenAccuracy, MetricExactMatch, MetricAccuracy)
	}
	return nil
}

// metricField is the metrics.jsonl key of a metric: its name with
// underscores ("token_accuracy", "exact_match", "accuracy").
func metricField(metric string) string {
	switch metric {
	case MetricTokenAccuracy:
		return "token_accuracy"
	case MetricExactMatch:
		return "exact_match"
	}
	return metric
}

// argmax is the index of the largest of v (the lowest among equals; a NaN
// is never the largest).
func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] || (v[best] != v[best] && x == x) {
			best = i
		}
	}
	return best
}

// countCorrect counts, in one validation batch, the targets the logits
// predict: lm, the target tokens (≠ IgnoreIndex) whose most likely token
// at the position before is the target; classify, the rows whose most
// likely class is the label.
func countCorrect(b *Batch, logits *ir.Tensor) (correct, total int, err error) {
	v := logits.Float32s()
	shape := logits.Shape()
	switch {
	case b.Labels != nil:
		if len(shape) != 2 || shape[0] != b.B {
			return 0, 0, fmt.Errorf("logits %v for a batch of %d", shape, b.B)
		}
		c := shape[1]
		for i := range b.Rows {
			if int64(argmax(v[i*c:(i+1)*c])) == b.Labels[i] {
				correct++
			}
		}
		return correct, b.Rows, nil
	case len(shape) != 3 || shape[0] != b.B || shape[1] != b.T:
		return 0, 0, fmt.Errorf("logits %v for a batch of %d×%d", shape, b.B, b.T)
	}
	vocab := shape[2]
	for i, target := range b.Targets {
		if target == IgnoreIndex {
			continue
		}
		total++
		if int64(argmax(v[i*vocab:(i+1)*vocab])) == target {
			correct++
		}
	}
	return correct, total, nil
}

// countExact counts, in one validation batch of lm data, the
// prompt/completion rows whose completion greedy decoding reproduces:
// the prompt fed, then at each step the most likely token appended,
// stopped at the completion's length (or at the batch's length T: a
// longer completion is compared on what fits) or at the first token that
// differs, an end token the model chose early included. A completion
// that does not fit at all does not count as reproduced. While decoding
// reproduces the completion it feeds the completion's own tokens, so it
// reproduces it exactly when every completion token is the most likely
// one after the true tokens before it: what logits, the model's output
// for the whole rows, give (the model being causal, a position's logits
// do not depend on the tokens after it).
func countExact(ds *Dataset, b *Batch, logits *ir.Tensor) (int, error) {
	v, shape := logits.Float32s(), logits.Shape()
	if len(shape) != 3 || shape[0] != b.B || shape[1] != b.T {
		return 0, fmt.Errorf("logits %v for a batch of %d×%d", shape, b.B, b.T)
	}
	vocab, matched := shape[2], 0
	for r, i := range b.Examples[:b.Rows] {
		ex := ds.Example(i)
		if ex.PromptLen == 0 {
			continue
		}
		first, end := min(ex.PromptLen, b.T), min(len(ex.Tokens), b.T)
		reproduced := first < end
		for j := first; j < end && reproduced; j++ {
			at := r*b.T + j - 1
			reproduced = int64(argmax(v[at*vocab:(at+1)*vocab])) == int64(ex.Tokens[j])
		}
		if reproduced {
			matched++
		}
	}
	return matched, nil
}

// completionRows is how many prompt/completion rows ds has: exact
// match's denominator.
func completionRows(ds *Dataset) int {
	n := 0
	for i := range ds.Len() {
		if ds.Example(i).PromptLen > 0 {
			n++
		}
	}
	return n
}

// CheckValidationData refuses validation data that cannot give metric:
// exact match decodes completions, so it needs a prompt/completion row.
func CheckValidationData(ds *Dataset, metric string) error {
	if metric != MetricExactMatch {
		return nil
	}
	for i := range ds.Len() {
		if ds.Example(i).PromptLen > 0 {
			return nil
		}
	}
	return fmt.Errorf("--metric %s decodes completions, and the validation data has no \"prompt\"/\"completion\" rows", MetricExactMatch)
}

// formatMetric writes a metric's value for the progress display
// ("exact match 85.0 %"; "" for none).
func formatMetric(metric string, v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return fmt.Sprintf("%s %.1f %%", metricLabel[metric], 100*v)
}

// validated shows a validation's results: a line of its own, and the
// metric on the step lines after it.
func (p *progress) validated(step int64, metric string, v validation) {
	p.metric = formatMetric(metric, v.metric)
	if p.metric == "" {
		p.message("step %d: validation loss %.4f", step, v.loss)
		return
	}
	p.message("step %d: validation loss %.4f, %s", step, v.loss, p.metric)
}

var metricLabel = map[string]string{MetricTokenAccuracy: "token accuracy", MetricExactMatch: "exact match", MetricAccuracy: "accuracy"}
