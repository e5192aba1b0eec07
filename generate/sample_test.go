package generate

import (
	"math"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestGreedyPicksFirstLargest(t *testing.T) {
	nan := float32(math.NaN())
	for _, c := range []struct {
		logits []float32
		want   int
	}{
		{[]float32{1, 3, 2}, 1},
		{[]float32{3, 1, 3}, 0},
		{[]float32{nan, -1, -2}, 1},
		{[]float32{float32(math.Inf(-1)), -5}, 1},
	} {
		if got := NewSampler(Sampling{}).Next(c.logits); got != c.want {
			t.Errorf("%v: %d, want %d", c.logits, got, c.want)
		}
	}
}

// frequencies draws n tokens and returns each token's share.
func frequencies(o Sampling, logits []float32, n int) []float64 {
	s := NewSampler(o)
	f := make([]float64, len(logits))
	for range n {
		f[s.Next(logits)] += 1 / float64(n)
	}
	return f
}

// TestSamplingDistributions compares the shares of 40000 draws with the
// probabilities each option defines (within 0.015, about 6 standard
// deviations).
func TestSamplingDistributions(t *testing.T) {
	logits := []float32{float32(math.Log(0.1)), float32(math.Log(0.5)), float32(math.Log(0.3)), float32(math.Log(0.1))}
	for _, c := range []struct {
		o    Sampling
		want []float64
	}{
		{Sampling{Temperature: 1, Seed: 1}, []float64{0.1, 0.5, 0.3, 0.1}},
		// Temperature 0.5 squares the probabilities: 0.01, 0.25, 0.09, 0.01 over 0.36.
		{Sampling{Temperature: 0.5, Seed: 2}, []float64{0.01 / 0.36, 0.25 / 0.36, 0.09 / 0.36, 0.01 / 0.36}},
		{Sampling{Temperature: 1, TopK: 2, Seed: 3}, []float64{0, 0.5 / 0.8, 0.3 / 0.8, 0}},
		// 0.5 < 0.7 ≤ 0.8: the two most likely.
		{Sampling{Temperature: 1, TopP: 0.7, Seed: 4}, []float64{0, 0.5 / 0.8, 0.3 / 0.8, 0}},
		{Sampling{Temperature: 1, TopP: 0.5, Seed: 5}, []float64{0, 1, 0, 0}},
		{Sampling{Temperature: 1, TopK: 1, Seed: 6}, []float64{0, 1, 0, 0}},
	} {
		got := frequencies(c.o, logits, 40000)
		for i := range got {
			if math.Abs(got[i]-c.want[i]) > 0.015 {
				t.Errorf("%+v: shares %.3f, want %.3f", c.o, got, c.want)
				break
			}
		}
	}
}

func TestSamplingSeeds(t *testing.T) {
	logits := make([]float32, 50)
	for i := range logits {
		logits[i] = float32(i%7) / 3
	}
	draw := func(seed uint64) []int {
		s := NewSampler(Sampling{Temperature: 1, Seed: seed})
		var out []int
		for range 30 {
			out = append(out, s.Next(logits))
		}
		return out
	}
	if !slices.Equal(draw(9), draw(9)) {
		t.Error("one seed gave two sequences")
	}
	if slices.Equal(draw(9), draw(10)) {
		t.Error("two seeds gave one sequence")
	}
}

func TestSamplingCheck(t *testing.T) {
	for _, o := range []Sampling{{Temperature: -1}, {Temperature: math.Inf(1)}, {TopK: -1}, {TopP: 1.5}, {TopP: math.NaN()}} {
		if o.Check() == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// bytesTokenizer is a tokenizer whose ids are bytes.
type bytesTokenizer struct{}

func (bytesTokenizer) Encode(s string) ([]int, error) {
	ids := make([]int, len(s))
	for i := range len(s) {
		ids[i] = int(s[i])
	}
	return ids, nil
}

func (bytesTokenizer) Decode(ids []int) (string, error) {
	b := make([]byte, len(ids))
	for i, id := range ids {
		b[i] = byte(id)
	}
	return string(b), nil
}

// stream pushes the bytes of text one by one and records what comes out.
func stream(t *testing.T, prompt, text string, stop []string) (pieces []string, stopped bool, all string) {
	t.Helper()
	ids, _ := bytesTokenizer{}.Encode(prompt)
	p := make([]int64, len(ids))
	for i, id := range ids {
		p[i] = int64(id)
	}
	ts, err := NewTextStream(bytesTokenizer{}, p, stop)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(text) {
		piece, st, err := ts.Push(int(text[i]))
		if err != nil {
			t.Fatal(err)
		}
		pieces = append(pieces, piece)
		if st {
			return pieces, true, ts.Text()
		}
	}
	return append(pieces, ts.Flush()), false, ts.Text()
}

func TestTextStream(t *testing.T) {
	// "é" is two bytes: nothing comes out until both are there.
	pieces, _, all := stream(t, "p", "aé!", nil)
	if !slices.Equal(pieces, []string{"a", "", "é", "!", ""}) || all != "aé!" {
		t.Errorf("pieces %q, text %q", pieces, all)
	}
	// A stop string: the tail that may become it is held back.
	pieces, stopped, all := stream(t, "", "abENxyEND tail", []string{"END"})
	if !stopped || all != "abENxy" || strings.Join(pieces, "") != "abENxy" {
		t.Errorf("pieces %q, stopped %v, text %q", pieces, stopped, all)
	}
	if pieces[2] != "" || pieces[3] != "" || pieces[4] != "ENx" {
		t.Errorf("held back %q", pieces)
	}
	// The earliest of several stop strings wins.
	_, stopped, all = stream(t, "", "one\ntwo.", []string{".", "\n"})
	if !stopped || all != "one" {
		t.Errorf("stopped %v at %q", stopped, all)
	}
}

// TestTopKMatchesSort: the heap selection gives the first k ids of the
// full order, ties (by id) and NaNs included.
func TestTopKMatchesSort(t *testing.T) {
	for n := 1; n < 60; n += 3 {
		logits := make([]float32, n)
		for i := range logits {
			logits[i] = float32((i * 7919) % 5)
			if i%11 == 3 {
				logits[i] = float32(math.NaN())
			}
		}
		var all []int
		for i, x := range logits {
			if !math.IsNaN(float64(x)) {
				all = append(all, i)
			}
		}
		slices.SortFunc(all, func(a, b int) int { return byLikelihood(logits, a, b) })
		for k := 1; k <= n; k++ {
			want := all[:min(k, len(all))]
			if got := topK(nil, logits, k); !slices.Equal(got, want) {
				t.Fatalf("n %d, k %d: %v, want %v", n, k, got, want)
			}
		}
	}
}

// fallbackTokenizer decodes as a byte-fallback BPE does: ids 0–255 are
// byte tokens, and a run of them that is not valid UTF-8 becomes one
// U+FFFD per byte (Hugging Face's ByteFallback, the valid bytes of the
// run included); 256 is "a", 257 " a".
type fallbackTokenizer struct{}

func (fallbackTokenizer) Encode(string) ([]int, error) { return nil, nil }
func (fallbackTokenizer) IsByteToken(id int) bool      { return id < 256 }
func (fallbackTokenizer) Decode(ids []int) (string, error) {
	var out strings.Builder
	var run []byte
	end := func() {
		if utf8.Valid(run) {
			out.Write(run)
		} else {
			out.WriteString(strings.Repeat("\uFFFD", len(run)))
		}
		run = run[:0]
	}
	for _, id := range ids {
		if id < 256 {
			run = append(run, byte(id))
			continue
		}
		end()
		out.WriteString(map[int]string{256: "a", 257: " a"}[id])
	}
	end()
	return out.String(), nil
}

// valuedTokenizer is fallbackTokenizer telling its byte tokens' bytes
// (ByteValues), as tokenizer files do.
type valuedTokenizer struct{ fallbackTokenizer }

func (valuedTokenizer) ByteToken(id int) (byte, bool) { return byte(id), id < 256 }

// TestTextStreamByteRuns: the pieces a stream hands out add up to its
// text, character by character, also where a run of byte tokens decodes
// as a whole (a valid byte before an invalid one becomes U+FFFD too), a
// prompt ends inside a character, or a stop string is U+FFFD. Every
// case of fallbackTokenizer runs again with valuedTokenizer.
func TestTextStreamByteRuns(t *testing.T) {
	type textCase struct {
		name         string
		tok          Tokenizer
		prompt, gen  []int
		stop         []string
		want         string
		stoppedEarly bool
		promptText   string
	}
	cases := []textCase{
		{"characters of byte tokens", fallbackTokenizer{}, []int{257}, []int{0xE4, 0xB8, 0xAD, 257, 0xF0, 0x9F, 0x98, 0x80, 257}, nil, "中 a😀 a", false, " a"},
		{"a run made invalid by its last byte", fallbackTokenizer{}, []int{257}, []int{0x56, 0xE4, 256}, nil, "\uFFFD\uFFFDa", false, " a"},
		{"a prompt ending inside a character", fallbackTokenizer{}, []int{257, 0xE4}, []int{0xB8, 0xAD, 256}, nil, "中a", false, " a"},
		{"U+FFFD as a stop string", fallbackTokenizer{}, []int{257}, []int{0xE4, 0xB8, 0xAD, 256}, []string{"\uFFFD"}, "中a", false, " a"},
		{"a prompt ending inside a character, plain decoder", bytesTokenizer{}, []int{'p', 0xC3}, []int{0xA9, 'a', 'b'}, nil, "éab", false, "p"},
		// The prompt's trailing byte tokens that are whole characters are
		// the prompt's text, not the generated text's.
		{"a prompt ending in a newline byte token", fallbackTokenizer{}, []int{257, 0x0A}, []int{256, 257}, nil, "a a", false, " a\n"},
		{"a prompt ending in characters of byte tokens", fallbackTokenizer{}, []int{257, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC}, []int{257}, nil, " a", false, " a日本"},
		{"a stop string the prompt ends in", fallbackTokenizer{}, []int{257, 0x0A}, []int{256, 0x0A, 257}, []string{"\n"}, "a", true, " a\n"},
		{"a stop string the prompt ends in, plain decoder", bytesTokenizer{}, []int{'p', '\n'}, []int{'a', '\n', 'b'}, []string{"\n"}, "a", true, "p\n"},
		{"a prompt's run: a whole character, then one cut short", fallbackTokenizer{}, []int{257, 0x0A, 0xE4}, []int{0xB8, 0xAD, 256}, nil, "中a", false, " a\n"},
		{"a prompt's run: two characters cut short", fallbackTokenizer{}, []int{257, 0xE6, 0x97, 0xA5, 0xE6, 0x9C}, []int{0xAC, 256}, nil, "本a", false, " a日"},
		// A run going on from the prompt that the generated bytes make
		// invalid turns the prompt's bytes of it into U+FFFD too: the
		// generated text is what follows them.
		{"a run made invalid across the seam", fallbackTokenizer{}, []int{257, 0x0A}, []int{0xE4, 256}, nil, "\uFFFDa", false, " a\n"},
		// Bytes no others can make a character of (0xFF, 0xFE) are the
		// prompt's, when the tokenizer tells the bytes.
		{"a prompt ending in invalid bytes", valuedTokenizer{}, []int{257, 0xFF, 0xFE}, []int{256}, nil, "a", false, " a\uFFFD\uFFFD"},
		{"a prompt ending in an invalid byte, U+FFFD a stop string", valuedTokenizer{}, []int{257, 0xFF}, []int{256, 257}, []string{"\uFFFD"}, "a a", false, " a\uFFFD"},
		{"a prompt ending in a valid byte, then a lead byte cut short", valuedTokenizer{}, []int{257, 0x0A, 0xE4, 0xB8}, []int{0xAD, 256}, nil, "中a", false, " a\n"},
	}
	for _, c := range cases {
		if _, ok := c.tok.(fallbackTokenizer); ok {
			again := c
			again.name, again.tok = c.name+" (bytes told)", valuedTokenizer{}
			cases = append(cases, again)
		}
	}
	for _, c := range cases {
		p := make([]int64, len(c.prompt))
		for i, id := range c.prompt {
			p[i] = int64(id)
		}
		ts, err := NewTextStream(c.tok, p, c.stop)
		if err != nil {
			t.Fatal(err)
		}
		if ts.PromptText() != c.promptText {
			t.Errorf("%s: prompt text %q, want %q", c.name, ts.PromptText(), c.promptText)
		}
		var pieces []string
		stopped := false
		for _, id := range c.gen {
			piece, st, err := ts.Push(id)
			if err != nil {
				t.Fatal(err)
			}
			if !utf8.ValidString(piece) {
				t.Errorf("%s: piece %q is not valid UTF-8", c.name, piece)
			}
			pieces = append(pieces, piece)
			if stopped = st; st {
				break
			}
		}
		if !stopped {
			pieces = append(pieces, ts.Flush())
		}
		if got := strings.Join(pieces, ""); got != c.want || ts.Text() != c.want || stopped != c.stoppedEarly {
			t.Errorf("%s: pieces %q (joined %q), text %q, stopped %v; want %q", c.name, pieces, got, ts.Text(), stopped, c.want)
		}
	}
}

// TestBiasAndPenalties: the logits the sampler draws from are OpenAI's
// formula computed in float64 and rounded once — logit[j] + bias[j] −
// count[j]·frequency − (count[j] > 0)·presence, count[j] the times j was
// drawn — and a bias of -100 or 100 bans or forces a token.
func TestBiasAndPenalties(t *testing.T) {
	logits := []float32{0.5, 2.25, -1.125, 3, 0.75, 1e-3}
	o := Sampling{Temperature: 0.8, Seed: 9, LogitBias: map[int]float64{1: 1.5, 4: -0.3}, PresencePenalty: 0.4, FrequencyPenalty: 0.7}
	s := NewSampler(o)
	counts := map[int]int{}
	for step := range 50 {
		want := make([]float32, len(logits))
		for j, x := range logits {
			v := float64(x) + o.LogitBias[j] - float64(counts[j])*o.FrequencyPenalty
			if counts[j] > 0 {
				v -= o.PresencePenalty
			}
			want[j] = float32(v)
		}
		if got := s.adjust(logits); !slices.Equal(got, want) {
			t.Fatalf("step %d (counts %v): logits %v, want %v", step, counts, got, want)
		}
		counts[s.Next(logits)]++
	}
	if !slices.Equal(logits, []float32{0.5, 2.25, -1.125, 3, 0.75, 1e-3}) {
		t.Errorf("the sampler changed the caller's logits: %v", logits)
	}
	// The penalties spread the draws: without them token 3 dominates.
	if counts[3] > 30 {
		t.Errorf("token 3 drawn %d times of 50 despite the penalties", counts[3])
	}
	for _, temp := range []float64{0, 1} {
		banned := NewSampler(Sampling{Temperature: temp, Seed: 1, LogitBias: map[int]float64{3: -100, 1: -100}})
		forced := NewSampler(Sampling{Temperature: temp, Seed: 1, LogitBias: map[int]float64{2: 100}})
		for range 200 {
			if id := banned.Next(logits); id == 3 || id == 1 {
				t.Fatalf("temperature %g: drew token %d, banned by a bias of -100", temp, id)
			}
			if id := forced.Next(logits); id != 2 {
				t.Fatalf("temperature %g: drew token %d, token 2 has a bias of 100", temp, id)
			}
		}
	}
	// Greedy decoding with a frequency penalty moves off a token once its
	// logit falls below the next.
	g := NewSampler(Sampling{FrequencyPenalty: 0.5})
	var got []int
	for range 4 {
		got = append(got, g.Next(logits))
	}
	// 3 (3), then 3 (2.5 > 2.25), then 1 (2.25 > 2), then 3 (2 > 1.75).
	if want := []int{3, 3, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("greedy with frequency penalty 0.5: %v, want %v", got, want)
	}
}

func TestLogprobsOf(t *testing.T) {
	logits := []float32{1, 3, 2, float32(math.NaN()), 3}
	lp := LogprobsOf(logits, 2, 3)
	lse := math.Log(math.Exp(1) + 2*math.Exp(3) + math.Exp(2))
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	if !near(lp.Logprob, 2-lse) || len(lp.Top) != 3 || lp.Top[0].Token != 1 || !near(lp.Top[0].Logprob, 3-lse) ||
		lp.Top[1].Token != 4 || !near(lp.Top[1].Logprob, 3-lse) || lp.Top[2].Token != 2 || !near(lp.Top[2].Logprob, 2-lse) {
		t.Errorf("LogprobsOf: %+v, want token 2 at %g, top 1, 4, 2", lp, 2-lse)
	}
	if nan := LogprobsOf(logits, 3, 0); !math.IsNaN(nan.Logprob) || nan.Top != nil {
		t.Errorf("a NaN logit's logprob: %+v", nan)
	}
}
