package train

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/update"
)

// successorSource is a bigram model whose most likely next token after t
// is (t+1) mod V: greedy decoding counts upwards, so the decoded
// completion of any prompt is known without running a model.
type successorSource struct{ *bigramSource }

func newSuccessorSource(vocab int) *successorSource {
	s := newBigramSource(vocab, 1)
	w := s.w.Tensor.Float32s()
	for i := range vocab {
		w[i*vocab+(i+1)%vocab] = 5 // far above the N(0, 0.25) rest
	}
	return &successorSource{s}
}

func (s *successorSource) Forward(shape BatchShape) (*ir.Graph, error) {
	b := ir.NewBuilder("bigram-logits")
	tokens := b.Input("tokens", ir.Int64, ir.Shape{shape.B, shape.T})
	b.Output("logits", b.Op1(&ir.Gather{Axis: 0}, b.Param(s.w.Name, s.w.Tensor), tokens))
	return b.Graph()
}

func (s *successorSource) Loss() ir.LossSpec {
	return ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: IgnoreIndex}
}

// LossGraph is Forward's with the loss appended, as a ForwardSource's is.
func (s *successorSource) LossGraph(shape BatchShape) (*ir.Graph, error) {
	g, err := s.Forward(shape)
	if err != nil {
		return nil, err
	}
	return ir.LossGraph(g, s.Loss())
}

// TestValidationMetrics: token accuracy counts the target tokens that are
// their predecessor's successor; exact match decodes greedily, so a
// completion that counts up from its prompt's last token matches and any
// other does not — also one longer than fits in T (compared on what
// fits) — and a prompt that fills T leaves nothing to match.
func TestValidationMetrics(t *testing.T) {
	const vocab, T = 16, 8
	e := cpuEngine(t, newSuccessorSource(vocab), update.OptimizerSGD, 1)
	rows := []string{
		`{"prompt":[3,4],"completion":[5,6,7]}`,             // counts up: a match
		`{"prompt":[9],"completion":[10,12]}`,               // wrong second token
		`{"prompt":[1,2,3],"completion":[5]}`,               // wrong first token
		`{"prompt":[14],"completion":[15,0,1]}`,             // wraps around: a match
		`{"prompt":[2,3,4,5,6,7],"completion":[8,9,10,11]}`, // only 8, 9 fit in T: a match
		`{"prompt":[1,2,3,4,5,6,7,8,9],"completion":[10]}`,  // the prompt fills T: no match
		`{"prompt":[4,5,6],"completion":[7,8,9,10,12]}`,     // wrong fifth token
		`{"tokens":[1,2,3,5]}`,                              // not a prompt/completion row
	}
	ds, err := ReadJSONL(strings.NewReader(strings.Join(rows, "\n")), "valid.jsonl", DataOptions{Task: TaskLM, VocabSize: vocab})
	if err != nil {
		t.Fatal(err)
	}
	opts := BatchOptions{BatchSize: 3, MaxLen: T, FixedLen: true}
	res, err := Evaluate(context.Background(), e, ds, opts, MetricExactMatch)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3.0 / 7; res.Metric != want {
		t.Errorf("exact match %v, want %v", res.Metric, want)
	}
	if got := greedyExactMatch(t, e, ds, opts); got != 3.0/7 {
		t.Errorf("greedy decoding matches %v of the completions, want 3/7", got)
	}

	// Token accuracy, counted here from the examples themselves: a target
	// is a token the loss predicts within T, right when it succeeds the
	// token before it.
	var wantCorrect, wantTotal int
	for i := range ds.Len() {
		ex := ds.Example(i)
		for j := 1; j < min(len(ex.Tokens), T); j++ {
			if j < ex.PromptLen {
				continue
			}
			wantTotal++
			if ex.Tokens[j] == (ex.Tokens[j-1]+1)%vocab {
				wantCorrect++
			}
		}
	}
	eb, err := NewEvalBatches(ds, opts)
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	var correct, total int
	for eb.Next(&b) {
		logits, err := e.EvalLogits(&b)
		if err != nil {
			t.Fatal(err)
		}
		c, n, err := countCorrect(&b, logits)
		if err != nil {
			t.Fatal(err)
		}
		correct, total = correct+c, total+n
	}
	if correct != wantCorrect || total != wantTotal {
		t.Errorf("token accuracy %d/%d, want %d/%d", correct, total, wantCorrect, wantTotal)
	}

	// A validation pass with the metric takes the loss and the logits
	// from one run of the model: the same loss as the pass without it,
	// the logits EvalLogits gives.
	plain, err := Evaluate(context.Background(), e, ds, opts, MetricLoss)
	if err != nil {
		t.Fatal(err)
	}
	scored, err := Evaluate(context.Background(), e, ds, opts, MetricTokenAccuracy)
	if err != nil {
		t.Fatal(err)
	}
	if scored.Loss != plain.Loss || scored.Targets != plain.Targets {
		t.Errorf("loss %v over %d targets with the metric, %v over %d without", scored.Loss, scored.Targets, plain.Loss, plain.Targets)
	}
	if want := float64(wantCorrect) / float64(wantTotal); scored.Metric != want {
		t.Errorf("token accuracy %v, want %v", scored.Metric, want)
	}
	eb, err = NewEvalBatches(ds, opts)
	if err != nil {
		t.Fatal(err)
	}
	for eb.Next(&b) {
		loss, logits, err := e.EvalScored(&b)
		if err != nil {
			t.Fatal(err)
		}
		scoredLogits := slices.Clone(logits.Float32s())
		wantLoss, err := e.EvalLoss(&b)
		if err != nil {
			t.Fatal(err)
		}
		wantLogits, err := e.EvalLogits(&b)
		if err != nil {
			t.Fatal(err)
		}
		if loss != wantLoss || !slices.Equal(scoredLogits, wantLogits.Float32s()) {
			t.Errorf("batch of examples from %d: EvalScored's loss %v (EvalLoss %v), logits equal: %v", b.Examples[0], loss, wantLoss, slices.Equal(scoredLogits, wantLogits.Float32s()))
		}
	}
}

// TestMetricChecks: the metric must fit the task and have validation
// data with what it measures.
func TestMetricChecks(t *testing.T) {
	for _, c := range []struct {
		metric string
		task   Task
		want   string
	}{
		{MetricAccuracy, TaskLM, "--metric accuracy is for --task classify"},
		{MetricExactMatch, TaskClassify, "--metric exact-match is for --task lm"},
		{MetricTokenAccuracy, TaskClassify, "--metric token-accuracy is for --task lm"},
		{"bleu", TaskLM, `unknown --metric "bleu"`},
	} {
		if err := checkMetric(c.metric, c.task); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s for %s: %v, want %q", c.metric, c.task, err, c.want)
		}
	}
	for _, ok := range []struct {
		metric string
		task   Task
	}{{"", TaskLM}, {MetricLoss, TaskClassify}, {MetricAccuracy, TaskClassify}, {MetricTokenAccuracy, TaskLM}, {MetricExactMatch, TaskLM}} {
		if err := checkMetric(ok.metric, ok.task); err != nil {
			t.Errorf("%s for %s: %v", ok.metric, ok.task, err)
		}
	}
}

// TestCheckValidationData: exact match needs a prompt/completion row in
// the validation data; other metrics take any data.
func TestCheckValidationData(t *testing.T) {
	opts := DataOptions{Task: TaskLM, VocabSize: 10}
	plain, err := ReadJSONL(strings.NewReader("{\"tokens\":[1,2,3]}\n"), "plain.jsonl", opts)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ReadJSONL(strings.NewReader("{\"tokens\":[1,2,3]}\n{\"prompt\":[1,2],\"completion\":[3]}\n"), "rows.jsonl", opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckValidationData(plain, MetricExactMatch); err == nil || !strings.Contains(err.Error(), `no "prompt"/"completion" rows`) {
		t.Errorf("exact match on plain rows: %v", err)
	}
	for _, c := range []struct {
		ds     *Dataset
		metric string
	}{{rows, MetricExactMatch}, {plain, MetricTokenAccuracy}, {plain, MetricLoss}} {
		if err := CheckValidationData(c.ds, c.metric); err != nil {
			t.Errorf("%s, %s: %v", c.ds.Name, c.metric, err)
		}
	}
}

// greedyExactMatch is exact match as its definition says, the reference
// for Evaluate's: it decodes the completion of every prompt/completion
// row of ds greedily — the prompt fed, then at each step the most likely
// token appended, recomputing the batch shape B×T (later positions hold
// padding) — and returns the share of the rows whose decoded tokens are
// their completion, each decoding stopped at the completion's length (or
// at T) or at the first token that differs.
func greedyExactMatch(t *testing.T, e *Engine, ds *Dataset, opts BatchOptions) float64 {
	t.Helper()
	var rows []int
	for i := range ds.Len() {
		if ds.Example(i).PromptLen > 0 {
			rows = append(rows, i)
		}
	}
	B, T := opts.BatchSize, opts.MaxLen
	b := &Batch{B: B, T: T, Tokens: make([]int64, B*T), AttentionMask: make([]int64, B*T), Targets: make([]int64, B*T)}
	for i := range b.Targets {
		b.Targets[i] = IgnoreIndex
	}
	matched := 0
	for start := 0; start < len(rows); start += B {
		chunk := rows[start:min(start+B, len(rows))]
		cur := make([]int, B)      // tokens in each row so far
		want := make([][]int32, B) // the completion tokens left to check
		for r := range B {
			ex := ds.Example(chunk[min(r, len(chunk)-1)]) // padding rows repeat the last example
			n := min(ex.PromptLen, T)
			for j := range T {
				b.Tokens[r*T+j], b.AttentionMask[r*T+j] = opts.PadID, 0
				if j < n {
					b.Tokens[r*T+j], b.AttentionMask[r*T+j] = int64(ex.Tokens[j]), 1
				}
			}
			cur[r] = n
			if r < len(chunk) {
				want[r] = ex.Tokens[n:min(len(ex.Tokens), T)]
			}
		}
		b.Rows = len(chunk)
		open := len(chunk)
		for open > 0 {
			logits, err := e.EvalLogits(b)
			if err != nil {
				t.Fatal(err)
			}
			v, vocab := logits.Float32s(), logits.Shape()[2]
			for r := range chunk {
				if want[r] == nil {
					continue
				}
				at := r*T + cur[r] - 1
				next := int64(argmax(v[at*vocab : (at+1)*vocab]))
				switch {
				case len(want[r]) == 0 || next != int64(want[r][0]):
					want[r], open = nil, open-1
				case len(want[r]) == 1:
					matched++
					want[r], open = nil, open-1
				default:
					b.Tokens[r*T+cur[r]], b.AttentionMask[r*T+cur[r]] = next, 1
					cur[r]++
					want[r] = want[r][1:]
				}
			}
		}
	}
	return float64(matched) / float64(len(rows))
}

// TestExactMatchIsGreedyDecoding: on a real causal model (stories260K),
// exact match from one pass over the validation rows is what decoding
// each completion greedily gives: rows whose completion is the model's
// own greedy continuation (from the README's greedy tokens) match, rows
// with a token changed stop matching there, a completion cut by T is
// compared on what fits and one that does not fit at all does not match.
func TestExactMatchIsGreedyDecoding(t *testing.T) {
	model := readEvalModel(t, sharedtest.Path(t, "models", "stories260K", "stories260K.onnx"))
	src, err := NewModelSource(model, ModelSourceOptions{Task: TaskLM})
	if err != nil {
		t.Fatal(err)
	}
	e := cpuEngine(t, src, update.OptimizerSGD, 1)
	ot, err := onnx.ReadTensorFile(sharedtest.Path(t, "models", "stories260K", "test_data_set_1", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	greedy, err := ir.TensorFromONNX(ot)
	if err != nil {
		t.Fatal(err)
	}
	g := greedy.Int64s() // BOS and its 40 greedy tokens
	row := func(prompt, completion []int64) string {
		js, _ := json.Marshal(map[string][]int64{"prompt": prompt, "completion": completion})
		return string(js)
	}
	changed := func(s []int64, at int) []int64 {
		c := slices.Clone(s)
		c[at] = (c[at] + 1) % 512
		return c
	}
	rows := []string{
		row(g[:1], g[1:6]),                               // the greedy continuation: a match
		row(g[:9], g[9:20]),                              // from further on: a match
		row(g[:9], changed(g[9:20], 4)),                  // a token changed: no match
		row(g[:3], changed(g[3:8], 0)),                   // the first one changed: no match
		row(g[:20], g[20:41]),                            // cut at T = 32: a match on what fits
		row(g[:32], g[32:36]),                            // the prompt fills T: no match
		row(changed(g[:12], 5), g[12:16]),                // another prompt: whatever decoding says
		`{"tokens":[1,400,22,19],"loss_mask":[0,0,0,0]}`, // not a prompt/completion row
	}
	ds, err := ReadJSONL(strings.NewReader(strings.Join(rows, "\n")), "valid.jsonl", DataOptions{Task: TaskLM, VocabSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	for _, batch := range []int{1, 3} {
		opts := BatchOptions{BatchSize: batch, MaxLen: 32, FixedLen: true}
		res, err := Evaluate(context.Background(), e, ds, opts, MetricExactMatch)
		if err != nil {
			t.Fatal(err)
		}
		want := greedyExactMatch(t, e, ds, opts)
		if res.Metric != want || want < 3.0/7 || want > 4.0/7 {
			t.Errorf("batch %d: exact match %v, greedy decoding gives %v (the 3 rows of greedy continuations, maybe the one with another prompt)", batch, res.Metric, want)
		}
	}
}
