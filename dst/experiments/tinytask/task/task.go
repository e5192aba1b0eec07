// Package task generates the small text task of DST's tiny_gpt
// experiments: sentences of a tiny grammar ("the red fox sees a small
// dog."), at most 64 bytes, deterministic for a seed.
package task

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
)

var (
	determiners = []string{"the", "a", "one", "every", "my", "your"}
	adjectives  = []string{"red", "small", "old", "quick", "lazy", "green", "tall", "quiet"}
	nouns       = []string{"fox", "dog", "cat", "bird", "horse", "child", "farmer", "river", "tree", "stone"}
	verbs       = []string{"sees", "likes", "finds", "follows", "hears", "paints", "carries", "watches"}
	adverbs     = []string{"today", "again", "slowly", "at night", "in the rain", "near the hill"}
)

// maxBytes is tiny_gpt's context: 64 positions.
const maxBytes = 64

// Sentence draws one sentence.
func Sentence(rng *rand.Rand) string {
	pick := func(words []string) string { return words[rng.IntN(len(words))] }
	phrase := func() string {
		if rng.IntN(2) == 0 {
			return pick(determiners) + " " + pick(adjectives) + " " + pick(nouns)
		}
		return pick(determiners) + " " + pick(nouns)
	}
	s := phrase() + " " + pick(verbs) + " " + phrase()
	if rng.IntN(3) == 0 {
		s += " " + pick(adverbs)
	}
	return s + "."
}

// Split draws nTrain training and nValid validation sentences (no
// sentence in both), each at most 64 bytes.
func Split(seed uint64, nTrain, nValid int) (train, valid []string) {
	rng := rand.New(rand.NewPCG(seed, 0x7461736b))
	seen := map[string]bool{}
	for len(train)+len(valid) < nTrain+nValid {
		s := Sentence(rng)
		if len(s) > maxBytes || seen[s] {
			continue
		}
		seen[s] = true
		if len(train) < nTrain {
			train = append(train, s)
		} else {
			valid = append(valid, s)
		}
	}
	return train, valid
}

// JSONL encodes sentences as training lines {"tokens":[bytes...]}.
func JSONL(lines []string) []byte {
	var b bytes.Buffer
	for _, s := range lines {
		toks := make([]string, len(s))
		for i := range len(s) {
			toks[i] = strconv.Itoa(int(s[i]))
		}
		b.WriteString(`{"tokens":[` + strings.Join(toks, ",") + "]}\n")
	}
	return b.Bytes()
}
