package generate

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// logSoftmax64 is the log-softmax of one row of logits in float64.
func logSoftmax64(row []float32) []float64 {
	top := math.Inf(-1)
	for _, x := range row {
		top = max(top, float64(x))
	}
	sum := 0.0
	for _, x := range row {
		sum += math.Exp(float64(x) - top)
	}
	out := make([]float64, len(row))
	for i, x := range row {
		out[i] = float64(x) - top - math.Log(sum)
	}
	return out
}

// TestLogprobsMatchORT: the logprobs Run gives for the prompt (from the
// prefill's every row) and for the generated tokens are the log-softmax of
// the logits onnxruntime computes for the whole sequence at once, within
// 1e-4, with a KV cache and without; the top logprobs are that row's most likely tokens,
// and greedy decoding draws the first of them.
func TestLogprobsMatchORT(t *testing.T) {
	ort.Need(t)
	path := storiesPath(t, "stories260K.onnx")
	model := loadModel(t, path)
	// 70 prompt tokens: chunks of 64, 4 and 2.
	prompt := storiesGreedy(t)[:30]
	for i := range 40 {
		prompt = append(prompt, int64(100+7*i%400))
	}
	const gen, k = 6, 3
	for _, mode := range []Mode{Auto, Recompute} {
		d, err := New(model, Options{Mode: mode, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		var prefilled []TokenLogprobs
		res, err := Run(context.Background(), d, nil, Request{Prompt: prompt, MaxTokens: gen, Logprobs: true, TopLogprobs: k, PromptLogprobs: true,
			Prefilled: func(lp []TokenLogprobs, _ string) error { prefilled = lp; return nil }}, func(Event) error { return nil })
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(res.PromptLogprobs) != len(prompt)-1 || len(res.Logprobs) != gen || len(prefilled) != len(prompt)-1 {
			t.Fatalf("%s: %d prompt logprobs (%d given to Prefilled), %d generated, want %d and %d", mode, len(res.PromptLogprobs), len(prefilled), len(res.Logprobs), len(prompt)-1, gen)
		}
		seq := append(slices.Clone(prompt), res.Tokens...)
		in, _ := onnx.FromInt64s("", []int64{1, int64(len(seq))}, seq)
		out, err := ort.Run(path, map[string]*onnx.Tensor{"tokens": in})
		if err != nil {
			t.Fatal(err)
		}
		logits, err := out["logits"].Float32s()
		if err != nil {
			t.Fatal(err)
		}
		const vocab = 512
		all := append(slices.Clone(res.PromptLogprobs), res.Logprobs...)
		worst := 0.0
		for i, lp := range all {
			row := logits[i*vocab : (i+1)*vocab]
			want := logSoftmax64(row)
			if lp.Token != seq[i+1] {
				t.Fatalf("%s: position %d: token %d, want %d", mode, i+1, lp.Token, seq[i+1])
			}
			worst = max(worst, math.Abs(lp.Logprob-want[lp.Token]))
			order := make([]int, vocab)
			for j := range order {
				order[j] = j
			}
			slices.SortStableFunc(order, func(a, b int) int { return -cmpFloat(want[a], want[b]) })
			if len(lp.Top) != k {
				t.Fatalf("%s: position %d: %d top logprobs, want %d", mode, i+1, len(lp.Top), k)
			}
			for j, c := range lp.Top {
				worst = max(worst, math.Abs(c.Logprob-want[c.Token]))
				// Near-ties may order differently between the two
				// computations: the logprob must be the j-th largest.
				if math.Abs(want[c.Token]-want[order[j]]) > 1e-4 {
					t.Errorf("%s: position %d: top %d is token %d (%.5f), onnxruntime's is %d (%.5f)", mode, i+1, j, c.Token, want[c.Token], order[j], want[order[j]])
				}
			}
			if i >= len(prompt)-1 && lp.Top[0].Token != lp.Token {
				t.Errorf("%s: generated token %d is %d, the most likely is %d", mode, i-len(prompt)+1, lp.Token, lp.Top[0].Token)
			}
			if i < len(prefilled) && prefilled[i].Logprob != lp.Logprob {
				t.Errorf("%s: Prefilled got logprob %g at %d, the result has %g", mode, prefilled[i].Logprob, i, lp.Logprob)
			}
		}
		if worst > 1e-4 {
			t.Errorf("%s: logprobs differ from onnxruntime's log-softmax by up to %.3g", mode, worst)
		}
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestFeedAllMatchesFeed: the rows FeedAll returns end with the row Feed
// returns for the same tokens, bit for bit, and generation after either
// is the same.
func TestFeedAllMatchesFeed(t *testing.T) {
	d, err := New(writeLlama(t, smallLlama), Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	prompt := []int64{1, 7, 19, 3, 44, 2, 9, 11, 30, 5, 8}
	a, b := d.NewSession(), d.NewSession()
	last, err := a.Feed(context.Background(), prompt)
	if err != nil {
		t.Fatal(err)
	}
	last = slices.Clone(last)
	rows, err := b.FeedAll(context.Background(), prompt)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(prompt)*d.Vocab() || !slices.Equal(rows[len(rows)-d.Vocab():], last) {
		t.Fatalf("FeedAll: %d values, last row equal to Feed's: %v", len(rows), slices.Equal(rows[len(rows)-d.Vocab():], last))
	}
	// Row i is what feeding the first i+1 tokens gives as its last row.
	for _, n := range []int{1, 4, 9} {
		s := d.NewSession()
		got, err := s.Feed(context.Background(), prompt[:n])
		if err != nil {
			t.Fatal(err)
		}
		want := rows[(n-1)*d.Vocab() : n*d.Vocab()]
		for j := range got {
			if math.Abs(float64(got[j]-want[j])) > 1e-4 {
				t.Fatalf("row %d of FeedAll differs from feeding %d tokens: %g vs %g at %d", n-1, n, want[j], got[j], j)
			}
		}
	}
}

// TestMaxTokensZero: with no tokens to generate Run feeds nothing unless
// the prompt's logprobs are asked for, and then it draws no token. It
// scores the prompt a chunk at a time (3 tokens: 2, then 1), each chunk
// a scheduled pass of its own.
func TestMaxTokensZero(t *testing.T) {
	d, err := New(writeLlama(t, smallLlama), Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	passes := 0
	schedule := func(ctx context.Context, step func() error) error { passes++; return step() }
	prompt := []int64{1, 7, 19}
	res, err := Run(context.Background(), d, nil, Request{Prompt: prompt, Schedule: schedule}, func(Event) error { return nil })
	if err != nil || passes != 0 || len(res.Tokens) != 0 || res.FinishReason != FinishLength {
		t.Errorf("max tokens 0: %d passes, %+v, %v", passes, res, err)
	}
	res, err = Run(context.Background(), d, nil, Request{Prompt: prompt, Schedule: schedule, PromptLogprobs: true, TopLogprobs: 2}, func(Event) error { return nil })
	if err != nil || passes != 2 || len(res.Tokens) != 0 || len(res.PromptLogprobs) != 2 || len(res.PromptLogprobs[0].Top) != 2 {
		t.Errorf("max tokens 0 with the prompt's logprobs: %d passes, %+v, %v", passes, res, err)
	}
}

// TestLongPromptChunks: prompts around the longest chunk (maxChunk) and
// up to the context, fed in chunks over caches of growing capacity, give
// every position the logits of one pass over the whole prompt, with the
// model's past inputs and with dstune's own cache.
func TestLongPromptChunks(t *testing.T) {
	c := smallLlama
	c.KVCache = true
	model := writeLlama(t, c)
	const contextLen = 2 * maxChunk
	prompt := make([]int64, contextLen)
	for i := range prompt {
		prompt[i] = int64(1 + i*17%(c.Vocab-1))
	}
	r, err := New(model, Options{Mode: Recompute, Threads: 1, Context: contextLen})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lengths := []int{maxChunk - 1, maxChunk, maxChunk + 1, maxChunk + maxChunk/8 + 12, contextLen - 1}
	want := map[int][]float32{}
	for _, n := range lengths {
		if want[n], err = r.NewSession().FeedAll(context.Background(), prompt[:n]); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []Mode{PastInputs, OwnCache} {
		d, err := New(model, Options{Mode: mode, Threads: 1, Context: contextLen})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range lengths {
			s := d.NewSession()
			got, err := s.FeedAll(context.Background(), prompt[:n])
			if err != nil {
				t.Fatalf("%s, %d tokens: %v", mode, n, err)
			}
			worst, at := 0.0, 0
			for i := range got {
				if diff := math.Abs(float64(got[i] - want[n][i])); !(diff <= worst) {
					worst, at = diff, i
				}
			}
			if worst > 1e-4 {
				t.Errorf("%s, %d tokens: logits differ from one pass by up to %.3g (position %d)", mode, n, worst, at/d.Vocab())
			}
			// The cache the chunks left serves the next token.
			next, err := s.Feed(context.Background(), prompt[n:n+1])
			if err != nil {
				t.Fatal(err)
			}
			one, err := r.NewSession().Feed(context.Background(), prompt[:n+1])
			if err != nil {
				t.Fatal(err)
			}
			for j := range next {
				if math.Abs(float64(next[j]-one[j])) > 1e-4 {
					t.Fatalf("%s, %d tokens: the next token's logit %d is %g, one pass gives %g", mode, n, j, next[j], one[j])
				}
			}
		}
		d.Close()
	}
}

// TestPromptLogprobsByChunk: Run scores a long prompt a chunk at a time,
// one scheduled pass per chunk (the rows of one chunk held at once, not
// the whole prompt's), with the logprobs of all its rows fed at once.
func TestPromptLogprobsByChunk(t *testing.T) {
	d, err := New(writeLlama(t, smallLlama), Options{Threads: 1, Context: 2 * maxChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	prompt := make([]int64, maxChunk+13) // chunks of maxChunk, 8, 4 and 1
	for i := range prompt {
		prompt[i] = int64(1 + i*17%(d.Vocab()-1))
	}
	rows, err := d.NewSession().FeedAll(context.Background(), prompt)
	if err != nil {
		t.Fatal(err)
	}
	passes := 0
	schedule := func(ctx context.Context, step func() error) error { passes++; return step() }
	res, err := Run(context.Background(), d, nil, Request{Prompt: prompt, Schedule: schedule, PromptLogprobs: true, TopLogprobs: 3}, func(Event) error { return nil })
	if err != nil || passes != 4 || len(res.PromptLogprobs) != len(prompt)-1 {
		t.Fatalf("%d passes, %d prompt logprobs, %v; want 4 and %d", passes, len(res.PromptLogprobs), err, len(prompt)-1)
	}
	v := d.Vocab()
	for i, lp := range res.PromptLogprobs {
		want := LogprobsOf(rows[i*v:(i+1)*v], prompt[i+1], 3)
		if lp.Token != want.Token || lp.Logprob != want.Logprob || !slices.Equal(lp.Top, want.Top) {
			t.Fatalf("token %d: %+v, the rows fed at once give %+v", i+1, lp, want)
		}
	}
}

// TestPrefixRuns: a prompt prefilled once serves several generations at
// once, each on a copy of its caches — across their growth to a larger
// capacity — in every mode: the prefill's passes are the prompt's chunks
// (not one per generation), and each generation gives, bit for bit, the
// tokens and logprobs (the prompt's included) Run gives it alone with its
// seed; a generation beyond those prefilled for is refused.
func TestPrefixRuns(t *testing.T) {
	c := smallLlama
	c.KVCache = true
	model := writeLlama(t, c)
	prompt := make([]int64, 37) // chunks of 32, 4 and 1 (with a cache); capacity 64
	for i := range prompt {
		prompt[i] = int64(1 + i*13%(c.Vocab-1))
	}
	seeds := []uint64{3, 4, 5}
	for _, mode := range []Mode{PastInputs, OwnCache, Recompute} {
		d, err := New(model, Options{Mode: mode, Threads: 1, Context: 128})
		if err != nil {
			t.Fatal(err)
		}
		// 40 tokens take the sequence past 64 positions.
		req := Request{Prompt: prompt, MaxTokens: 40, Sampling: Sampling{Temperature: 1.3, TopP: 1},
			Logprobs: true, TopLogprobs: 2, PromptLogprobs: true}
		counting := func(n *int) func(context.Context, func() error) error {
			return func(ctx context.Context, step func() error) error { *n++; return step() }
		}
		var prefills int
		req.Schedule = counting(&prefills)
		p, err := Prefill(context.Background(), d, nil, req, len(seeds))
		if err != nil {
			t.Fatal(err)
		}
		got := make([]Result, len(seeds))
		errs := make([]error, len(seeds))
		passes := make([]int, len(seeds))
		var wg sync.WaitGroup
		for i, seed := range seeds {
			wg.Go(func() {
				r := req
				r.Sampling.Seed = seed
				r.Schedule = counting(&passes[i])
				got[i], errs[i] = p.Run(context.Background(), r, func(Event) error { return nil })
			})
		}
		wg.Wait()
		chunks := 3
		if mode == Recompute {
			chunks = 1 // the whole sequence each pass
		}
		if prefills != chunks {
			t.Errorf("%s: %d passes prefill the prompt for %d generations, want its %d chunks", mode, prefills, len(seeds), chunks)
		}
		for i, seed := range seeds {
			r := req
			r.Sampling.Seed = seed
			r.Schedule = nil
			want, err := Run(context.Background(), d, nil, r, func(Event) error { return nil })
			if err != nil || errs[i] != nil {
				t.Fatalf("%s, seed %d: %v, alone %v", mode, seed, errs[i], err)
			}
			if passes[i] != len(want.Tokens)-1 || len(want.Tokens) != 40 {
				t.Errorf("%s, seed %d: %d passes for %d tokens, want one per token after the first", mode, seed, passes[i], len(want.Tokens))
			}
			same := func(a, b []TokenLogprobs) bool {
				return slices.EqualFunc(a, b, func(x, y TokenLogprobs) bool {
					return x.Token == y.Token && math.Float64bits(x.Logprob) == math.Float64bits(y.Logprob) && slices.Equal(x.Top, y.Top)
				})
			}
			if !slices.Equal(got[i].Tokens, want.Tokens) || !same(got[i].Logprobs, want.Logprobs) || !same(got[i].PromptLogprobs, want.PromptLogprobs) || got[i].FinishReason != want.FinishReason {
				t.Errorf("%s, seed %d: from the prefix %v, alone %v", mode, seed, got[i].Tokens, want.Tokens)
			}
		}
		if _, err := p.Run(context.Background(), req, func(Event) error { return nil }); err == nil {
			t.Errorf("%s: a run beyond the %d prefilled for: no error", mode, len(seeds))
		}
		d.Close()
	}
}
