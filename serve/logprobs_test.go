package serve

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// fullChoice is a choice as clients read it.
type fullChoice struct {
	Index    int     `json:"index"`
	Text     string  `json:"text"`
	Tokens   []int64 `json:"tokens"`
	Logprobs *struct {
		Tokens        []string             `json:"tokens"`
		TokenLogprobs []*float64           `json:"token_logprobs"`
		TopLogprobs   []map[string]float64 `json:"top_logprobs"`
		TextOffset    []int                `json:"text_offset"`
	} `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
	Seed         *uint64 `json:"seed"`
}

type fullCompletion struct {
	Choices []fullChoice `json:"choices"`
	Usage   *usage       `json:"usage"`
	Seed    *uint64      `json:"seed"`
	Error   *apiError    `json:"error"`
}

func (f *fixture) complete(t *testing.T, body string) fullCompletion {
	t.Helper()
	status, b := f.post(t, body)
	var c fullCompletion
	if err := json.Unmarshal(b, &c); err != nil || status != 200 {
		t.Fatalf("%s: status %d, %v: %s", body, status, err, b)
	}
	return c
}

// ortLogSoftmax runs the fixture's model file through onnxruntime on the
// whole sequence and returns each position's log-softmax in float64.
func (f *fixture) ortLogSoftmax(t *testing.T, seq []int64) [][]float64 {
	t.Helper()
	n := int64(len(seq))
	ids, _ := onnx.FromInt64s("", []int64{1, n}, seq)
	mask := make([]int64, n)
	pos := make([]int64, n)
	for i := range mask {
		mask[i], pos[i] = 1, int64(i)
	}
	m, _ := onnx.FromInt64s("", []int64{1, n}, mask)
	p, _ := onnx.FromInt64s("", []int64{1, n}, pos)
	out, err := ort.Run(f.modelPath, map[string]*onnx.Tensor{"input_ids": ids, "attention_mask": m, "position_ids": p})
	if err != nil {
		t.Fatal(err)
	}
	logits, err := out["logits"].Float32s()
	if err != nil {
		t.Fatal(err)
	}
	V := testModel.Vocab
	rows := make([][]float64, len(seq))
	for i := range rows {
		row := logits[i*V : (i+1)*V]
		top := math.Inf(-1)
		for _, x := range row {
			top = max(top, float64(x))
		}
		sum := 0.0
		for _, x := range row {
			sum += math.Exp(float64(x) - top)
		}
		rows[i] = make([]float64, V)
		for j, x := range row {
			rows[i][j] = float64(x) - top - math.Log(sum)
		}
	}
	return rows
}

// TestEchoLogprobsMatchORT: a batch scored as lm-evaluation-harness
// scores it (echo, logprobs, greedy, one token) gets, for each prompt in
// order, the log-softmax onnxruntime computes for the whole sequence at
// every position within 1e-4 — the prompt's first token null — with the
// top logprobs the most likely tokens and the greedy token the first of
// them; max_tokens 0 scores the prompt alone.
func TestEchoLogprobsMatchORT(t *testing.T) {
	ort.Need(t)
	f := newFixture(t, 0)
	prompts := [][]int64{{1, 5, 9, 22, 7, 3, 40, 11, 2, 17, 33, 8, 1, 5, 9, 60, 4, 4, 12}, {3, 14, 15}, {9}}
	batch, _ := json.Marshal(prompts)
	for _, maxTokens := range []int{1, 0, 4} {
		c := f.complete(t, fmt.Sprintf(`{"model":"base","prompt":%s,"echo":true,"logprobs":2,"max_tokens":%d,"temperature":0}`, batch, maxTokens))
		if len(c.Choices) != len(prompts) {
			t.Fatalf("max_tokens %d: %d choices for %d prompts", maxTokens, len(c.Choices), len(prompts))
		}
		promptTokens := 0
		for i, ch := range c.Choices {
			promptTokens += len(prompts[i])
			lp := ch.Logprobs
			if ch.Index != i || lp == nil || len(ch.Tokens) != maxTokens || *ch.FinishReason != "length" {
				t.Fatalf("max_tokens %d: choice %d: %+v", maxTokens, i, ch)
			}
			seq := append(slices.Clone(prompts[i]), ch.Tokens...)
			if len(lp.Tokens) != len(seq) || len(lp.TokenLogprobs) != len(seq) || len(lp.TopLogprobs) != len(seq) || len(lp.TextOffset) != len(seq) {
				t.Fatalf("max_tokens %d: choice %d: logprobs of %d, %d, %d, %d tokens, want %d", maxTokens, i, len(lp.Tokens), len(lp.TokenLogprobs), len(lp.TopLogprobs), len(lp.TextOffset), len(seq))
			}
			if lp.TokenLogprobs[0] != nil || lp.TopLogprobs[0] != nil {
				t.Errorf("max_tokens %d: choice %d: the first token's logprobs %v, %v: want null (it has no context)", maxTokens, i, lp.TokenLogprobs[0], lp.TopLogprobs[0])
			}
			want := f.ortLogSoftmax(t, seq)
			for p := 1; p < len(seq); p++ {
				row := want[p-1]
				if lp.Tokens[p] != fmt.Sprint(seq[p]) || lp.TokenLogprobs[p] == nil || math.Abs(*lp.TokenLogprobs[p]-row[seq[p]]) > 1e-4 {
					t.Errorf("max_tokens %d: choice %d position %d: token %q logprob %v, want %d at %.6f", maxTokens, i, p, lp.Tokens[p], lp.TokenLogprobs[p], seq[p], row[seq[p]])
					continue
				}
				order := make([]int, len(row))
				for j := range order {
					order[j] = j
				}
				slices.SortStableFunc(order, func(a, b int) int {
					switch {
					case row[a] > row[b]:
						return -1
					case row[a] < row[b]:
						return 1
					}
					return 0
				})
				top := lp.TopLogprobs[p]
				inTop := slices.Contains(order[:2], int(seq[p]))
				if len(top) != 2 && !(len(top) == 3 && !inTop) {
					t.Errorf("max_tokens %d: choice %d position %d: %d top logprobs %v: want the 2 most likely and the token itself", maxTokens, i, p, len(top), top)
				}
				for _, id := range append(order[:2:2], int(seq[p])) {
					if got, ok := top[fmt.Sprint(id)]; !ok || math.Abs(got-row[id]) > 1e-4 {
						t.Errorf("max_tokens %d: choice %d position %d: top logprobs %v lack token %d at %.6f", maxTokens, i, p, top, id, row[id])
					}
				}
				if p >= len(prompts[i]) {
					// Greedy: the generated token is the most likely.
					best, bestLP := "", math.Inf(-1)
					for name, v := range top {
						if v > bestLP {
							best, bestLP = name, v
						}
					}
					if best != lp.Tokens[p] {
						t.Errorf("max_tokens %d: choice %d: generated %s, the most likely of %v is %s", maxTokens, i, lp.Tokens[p], top, best)
					}
				}
			}
		}
		if u := c.Usage; u.PromptTokens != promptTokens || u.CompletionTokens != maxTokens*len(prompts) || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("max_tokens %d: usage %+v, want %d prompt tokens and %d completion tokens", maxTokens, u, promptTokens, maxTokens*len(prompts))
		}
	}
}

// TestLogprobsWithoutEcho: the generated tokens' logprobs alone, k = 0
// listing just the chosen token; sampled, not greedy, the logprobs are
// still the model's (before temperature), equal to the greedy request's
// for the same tokens.
func TestLogprobsWithoutEcho(t *testing.T) {
	f := newFixture(t, 1)
	sampled := f.complete(t, `{"model":"task0","prompt":[1,5,9],"logprobs":0,"max_tokens":6,"temperature":1.7,"seed":4}`).Choices[0]
	lp := sampled.Logprobs
	if lp == nil || len(lp.Tokens) != 6 || len(lp.TopLogprobs) != 6 {
		t.Fatalf("logprobs %+v", lp)
	}
	for i, top := range lp.TopLogprobs {
		if len(top) != 1 || top[lp.Tokens[i]] != *lp.TokenLogprobs[i] {
			t.Errorf("logprobs 0: position %d: top %v, want the chosen token %s alone", i, top, lp.Tokens[i])
		}
	}
	// The same sequence scored by echo at temperature 0.
	seq, _ := json.Marshal(append([]int64{1, 5, 9}, sampled.Tokens...))
	scored := f.complete(t, `{"model":"task0","prompt":`+string(seq)+`,"echo":true,"logprobs":0,"max_tokens":0}`).Choices[0].Logprobs
	for i := range lp.TokenLogprobs {
		if got, want := *lp.TokenLogprobs[i], *scored.TokenLogprobs[3+i]; math.Abs(got-want) > 1e-5 {
			t.Errorf("token %d: logprob %g sampled at temperature 1.7, %g scored: want the model's", i, got, want)
		}
	}
}

// TestLogprobsOfAnEmptyCompletion: a completion that ends at once (its
// first token an end token) has empty logprobs lists, not nulls, which
// clients iterating over them would trip on.
func TestLogprobsOfAnEmptyCompletion(t *testing.T) {
	f := newFixture(t, 0, func(c *Config) { c.StopTokens = []int64{7} })
	_, b := f.do(t, "POST", "/v1/completions", `{"model":"base","prompt":[1,5],"logprobs":1,"max_tokens":5,"logit_bias":{"7":100}}`, nil)
	var resp struct {
		Choices []struct {
			FinishReason string                     `json:"finish_reason"`
			Logprobs     map[string]json.RawMessage `json:"logprobs"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &resp); err != nil || len(resp.Choices) != 1 {
		t.Fatalf("%s: %v", b, err)
	}
	c := resp.Choices[0]
	if c.FinishReason != "stop" {
		t.Fatalf("finish_reason %q, want stop at the end token: %s", c.FinishReason, b)
	}
	for _, key := range []string{"tokens", "token_logprobs", "top_logprobs", "text_offset"} {
		if got := string(c.Logprobs[key]); got != "[]" {
			t.Errorf("logprobs.%s = %s, want []", key, got)
		}
	}
}

// TestChoicesAndSeeds: n completions of each prompt of a batch come
// prompt-major (index = prompt·n + j); with a seed each is reproducible,
// the first is the request's seed's, the others differ and each names the
// seed that gives it alone; usage sums over them.
func TestChoicesAndSeeds(t *testing.T) {
	f := newFixture(t, 1)
	const body = `{"model":"task0","prompt":[[1,5],[2,7,3]],"n":3,"max_tokens":10,"temperature":1.5,"seed":11}`
	a, b := f.complete(t, body), f.complete(t, body)
	if len(a.Choices) != 6 || *a.Seed != 11 {
		t.Fatalf("%d choices, seed %d", len(a.Choices), *a.Seed)
	}
	completion := 0
	for k, ch := range a.Choices {
		completion += len(ch.Tokens)
		if ch.Index != k || !slices.Equal(ch.Tokens, b.Choices[k].Tokens) || ch.Seed == nil {
			t.Fatalf("choice %d: %+v; again %+v", k, ch, b.Choices[k])
		}
		prompt := []string{"[1,5]", "[2,7,3]"}[k/3]
		alone := f.complete(t, fmt.Sprintf(`{"model":"task0","prompt":%s,"max_tokens":10,"temperature":1.5,"seed":%d}`, prompt, *ch.Seed)).Choices[0]
		if !slices.Equal(alone.Tokens, ch.Tokens) {
			t.Errorf("choice %d: %v; its prompt alone with its seed %d: %v", k, ch.Tokens, *ch.Seed, alone.Tokens)
		}
		if k%3 == 0 && *ch.Seed != 11 {
			t.Errorf("choice %d: seed %d, want the request's", k, *ch.Seed)
		}
	}
	for i := range 2 {
		seen := map[string]bool{}
		for _, ch := range a.Choices[3*i : 3*i+3] {
			seen[fmt.Sprint(ch.Tokens)] = true
		}
		if len(seen) != 3 {
			t.Errorf("prompt %d: the 3 completions are not distinct: %+v", i, a.Choices[3*i:3*i+3])
		}
	}
	if u := a.Usage; u.PromptTokens != 5 || u.CompletionTokens != completion {
		t.Errorf("usage %+v, want 5 prompt tokens and %d completion tokens", u, completion)
	}
	// Integral floats are integers.
	c := f.complete(t, `{"model":"task0","prompt":[1,5],"n":2.0,"max_tokens":3.0,"temperature":1.5,"seed":11.0}`)
	if len(c.Choices) != 2 || len(c.Choices[0].Tokens) != 3 || !slices.Equal(c.Choices[0].Tokens, a.Choices[0].Tokens[:3]) {
		t.Errorf("n 2.0, max_tokens 3.0, seed 11.0: %+v", c.Choices)
	}
}

// TestBestOf: best_of completions are generated and the n of the highest
// mean logprob answered, in that order.
func TestBestOf(t *testing.T) {
	f := newFixture(t, 1)
	all := f.complete(t, `{"model":"task0","prompt":[1,5],"n":4,"logprobs":0,"max_tokens":8,"temperature":1.5,"seed":3}`)
	type scored struct {
		tokens []int64
		mean   float64
	}
	var s []scored
	for _, ch := range all.Choices {
		sum := 0.0
		for _, lp := range ch.Logprobs.TokenLogprobs {
			sum += *lp
		}
		s = append(s, scored{ch.Tokens, sum / float64(len(ch.Tokens))})
	}
	slices.SortStableFunc(s, func(a, b scored) int {
		switch {
		case a.mean > b.mean:
			return -1
		case a.mean < b.mean:
			return 1
		}
		return 0
	})
	best := f.complete(t, `{"model":"task0","prompt":[1,5],"n":2,"best_of":4,"max_tokens":8,"temperature":1.5,"seed":3}`)
	if len(best.Choices) != 2 || !slices.Equal(best.Choices[0].Tokens, s[0].tokens) || !slices.Equal(best.Choices[1].Tokens, s[1].tokens) || best.Choices[0].Logprobs != nil {
		t.Errorf("n 2 of best_of 4: %+v, want %v then %v without logprobs", best.Choices, s[0].tokens, s[1].tokens)
	}
	if best.Usage.CompletionTokens != 32 {
		t.Errorf("usage %+v: want the 4 completions' 32 tokens", best.Usage)
	}
}

// TestStreamSeveralChoices: a stream of several completions names each
// event's choice; each choice's tokens and logprobs are the non-streamed
// answer's, its echo chunk comes first, and the last event has the
// request's seed.
func TestStreamSeveralChoices(t *testing.T) {
	f := newFixture(t, 1)
	const body = `{"model":"task0","prompt":[[1,5],[2]],"n":2,"echo":true,"logprobs":1,"max_tokens":5,"temperature":1.2,"seed":8`
	want := f.complete(t, body+`}`)
	resp, err := http.Post(f.http.URL+"/v1/completions", "application/json", strings.NewReader(body+`,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tokens := map[int][]int64{}
	names := map[int][]string{}
	finished := map[int]string{}
	var last fullCompletion
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var c fullCompletion
		if err := json.Unmarshal([]byte(line), &c); err != nil || c.Error != nil || len(c.Choices) != 1 {
			t.Fatalf("event %s: %v", line, err)
		}
		ch := c.Choices[0]
		if _, ok := finished[ch.Index]; ok {
			t.Errorf("an event of choice %d after its finish: %s", ch.Index, line)
		}
		if ch.Logprobs != nil {
			if len(names[ch.Index]) == 0 && ch.Logprobs.TokenLogprobs[0] != nil {
				t.Errorf("choice %d's first event does not begin with its prompt: %s", ch.Index, line)
			}
			names[ch.Index] = append(names[ch.Index], ch.Logprobs.Tokens...)
		}
		tokens[ch.Index] = append(tokens[ch.Index], ch.Tokens...)
		if ch.FinishReason != nil {
			finished[ch.Index] = *ch.FinishReason
		}
		last = c
	}
	if !done || len(finished) != 4 || last.Seed == nil || *last.Seed != 8 {
		t.Fatalf("done %v, finished %v, last event %+v, want seed 8", done, finished, last)
	}
	for k, ch := range want.Choices {
		if !slices.Equal(tokens[k], ch.Tokens) || !slices.Equal(names[k], ch.Logprobs.Tokens) || finished[k] != *ch.FinishReason {
			t.Errorf("choice %d streamed: %v %v %s, answered: %v %v %s", k, tokens[k], names[k], finished[k], ch.Tokens, ch.Logprobs.Tokens, *ch.FinishReason)
		}
	}
}

// TestBiasAndPenaltiesServed: logit_bias and the penalties give what
// generating with the same options gives; a bias of 100 forces a token.
func TestBiasAndPenaltiesServed(t *testing.T) {
	f := newFixture(t, 1)
	forced := f.complete(t, `{"model":"task0","prompt":[1],"logit_bias":{"7":100},"max_tokens":6,"seed":1}`).Choices[0].Tokens
	if !slices.Equal(forced, []int64{7, 7, 7, 7, 7, 7}) {
		t.Errorf("logit_bias 7: 100: %v", forced)
	}
	got := f.complete(t, `{"model":"task0","prompt":[1,5,9],"temperature":0,"frequency_penalty":1.5,"presence_penalty":0.5,"logit_bias":{"3":-100},"max_tokens":20}`).Choices[0].Tokens
	want := f.reference(t, "task0", generate.Request{Prompt: []int64{1, 5, 9}, MaxTokens: 20,
		Sampling: generate.Sampling{FrequencyPenalty: 1.5, PresencePenalty: 0.5, LogitBias: map[int]float64{3: -100}}})
	plain := f.reference(t, "task0", generate.Request{Prompt: []int64{1, 5, 9}, MaxTokens: 20})
	if !slices.Equal(got, want) || slices.Equal(got, plain) || slices.Contains(got, 3) {
		t.Errorf("penalties: %v, generating with them %v, without %v", got, want, plain)
	}
}

// letters is a tokenizer of ids 0..255 standing for bytes ("<0xHH>"
// tokens, a run of them decoding as UTF-8) and the words of
// letterWords after them; 0 is a special token.
type letters struct{}

var letterWords = []string{" the", " cat", "s", " é"}

func (letters) Encode(text string) ([]int, error) {
	var ids []int
	for _, b := range []byte(text) {
		ids = append(ids, int(b))
	}
	return ids, nil
}

func (letters) Decode(ids []int) (string, error) {
	var b []byte
	for _, id := range ids {
		switch {
		case id == 0:
		case id < 256:
			b = append(b, byte(id))
		case id-256 < len(letterWords):
			b = append(b, letterWords[id-256]...)
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), nil
}

func (letters) IsByteToken(id int) bool { return id < 256 }

func (letters) Token(id int) string {
	switch {
	case id == 0:
		return "<s>"
	case id < 256:
		return fmt.Sprintf("<0x%02X>", id)
	}
	return letterWords[id-256]
}

// TestTokenNames: tokens are named by the text they add, so the names
// of a sequence add up to its text and the offsets count its characters;
// byte tokens of an incomplete character are "bytes:\xNN", a special
// token by its vocabulary string.
func TestTokenNames(t *testing.T) {
	names := tokenNames{tok: letters{}, bytes: letters{}, vocab: letters{}}
	seq := []int64{0, 256, 257, 258, 0xC3, 0xA9, 'x', 259, 0xE2, 0x82, 0xAC}
	var c choiceLogprobs
	lps := make([]generate.TokenLogprobs, len(seq)-1)
	for i := range lps {
		lps[i] = generate.TokenLogprobs{Token: seq[i+1], Logprob: -1, Top: []generate.Logprob{{Token: 258, Logprob: -0.5}}}
	}
	offset := c.addPrompt(names, seq, lps, 1)
	want := []string{"<s>", " the", " cat", "s", `bytes:\xc3`, `bytes:\xa9`, "x", " é", `bytes:\xe2`, `bytes:\x82`, `bytes:\xac`}
	if !slices.Equal(c.Tokens, want) {
		t.Errorf("names %q, want %q", c.Tokens, want)
	}
	text, _ := letters{}.Decode([]int{0, 256, 257, 258, 0xC3, 0xA9, 'x', 259, 0xE2, 0x82, 0xAC})
	wantOffsets := []int{0, 0, 4, 8, 9, 9, 10, 11, 13, 13, 13}
	if !slices.Equal(c.TextOffset, wantOffsets) || offset != utf8.RuneCountInString(text) {
		t.Errorf("offsets %v then %d, want %v then %d (%q)", c.TextOffset, offset, wantOffsets, utf8.RuneCountInString(text), text)
	}
	// Top logprobs name the token in the same context: "s" after " cat".
	if b, _ := json.Marshal(c.TopLogprobs[3]); string(b) != `{"s":-0.5}` {
		t.Errorf("top logprobs at 3: %s", b)
	}
	b, err := json.Marshal(c.TopLogprobs[2])
	if err != nil || string(b) != `{"s":-0.5," cat":-1}` {
		t.Errorf("top logprobs at 2 in JSON: %s, %v", b, err)
	}
	// Without a tokenizer a token is named by its id.
	var bare choiceLogprobs
	bare.add(tokenNames{}, []int64{1, 2}, generate.TokenLogprobs{Token: 42, Logprob: math.Inf(-1)}, 0, 0)
	b, _ = json.Marshal(bare)
	if string(b) != `{"tokens":["42"],"token_logprobs":[-9999],"top_logprobs":[{"42":-9999}],"text_offset":[0]}` {
		t.Errorf("without a tokenizer: %s", b)
	}
}

// TestEchoText: with a tokenizer, echo puts the prompt's text before the
// completion's, and the logprobs' names add up to it.
func TestEchoText(t *testing.T) {
	f := newFixture(t, 0)
	cfg := f.srv.cfg
	cfg.Tokenizer = codePoints{}
	hs := httptest.NewServer(New(cfg).Handler())
	defer hs.Close()
	f.http = hs
	c := f.complete(t, `{"model":"base","prompt":["0123","(*)"],"echo":true,"logprobs":1,"max_tokens":5,"temperature":0}`)
	for i, prompt := range []string{"0123", "(*)"} {
		ch := c.Choices[i]
		gen, _ := codePoints{}.Decode(toInts(ch.Tokens))
		if ch.Text != prompt+gen || strings.Join(ch.Logprobs.Tokens, "") != ch.Text {
			t.Errorf("prompt %q: text %q, names %q; want %q", prompt, ch.Text, ch.Logprobs.Tokens, prompt+gen)
		}
	}
	scored := f.complete(t, `{"model":"base","prompt":"0123","echo":true,"max_tokens":0}`).Choices[0]
	if scored.Text != "0123" || len(scored.Tokens) != 0 || scored.Logprobs != nil {
		t.Errorf("echo of max_tokens 0 without logprobs: %+v", scored)
	}
}

func toInts(ids []int64) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// TestSeedsFitDoubles: the seeds the server makes — drawn for a request
// without one, derived for a request's later choices — are below 2^53, so
// that a client reading JSON numbers as doubles (the openai npm package)
// sends back the seed it was given, not a rounded one.
func TestSeedsFitDoubles(t *testing.T) {
	for i := range 1000 {
		drawn, err := requestSeed(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []uint64{drawn, choiceSeed(drawn, 1+i%7), choiceSeed(math.MaxUint64, 1+i)} {
			if s >= 1<<53 || uint64(float64(s)) != s {
				t.Fatalf("seed %d is not exact as a double", s)
			}
		}
	}
	// Distinct choices still sample apart.
	seen := map[uint64]bool{}
	for j := range 64 {
		seen[choiceSeed(12345, j)] = true
	}
	if len(seen) != 64 {
		t.Errorf("64 choices of one seed have %d distinct seeds", len(seen))
	}
}
