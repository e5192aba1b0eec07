package train

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/ir"
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
	src := newSuccessorSource(vocab)
	opt, err := update.DefaultOptimizer(update.OptimizerSGD)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(src, cpu.New(), opt, FullMethod{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
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
	got, err := exactMatch(e, ds, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3.0 / 7; got != want {
		t.Errorf("exact match %v, want %v", got, want)
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
