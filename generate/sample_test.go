package generate

import (
	"math"
	"slices"
	"strings"
	"testing"
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
