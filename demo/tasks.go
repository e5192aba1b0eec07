package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
)

// An Example is a prompt and the answer the model should complete it
// with; both are ASCII text, fed to the model as bytes.
type Example struct {
	Prompt, Answer string
}

// Tokens is the example as the model reads it: the bytes of Prompt and
// Answer.
func (e Example) Tokens() []int64 {
	s := e.Prompt + e.Answer
	out := make([]int64, len(s))
	for i := range len(s) {
		out[i] = int64(s[i])
	}
	return out
}

// A Skill turns a lowercase word into a prompt and its answer.
type Skill struct {
	Name   string
	Marker byte // separates the word from the answer
	Apply  func(word []byte) []byte
}

// Example is the skill applied to word: prompt word+marker, answer the
// transformed word and a full stop.
func (s Skill) Example(word []byte) Example {
	return Example{Prompt: string(word) + string(s.Marker), Answer: string(s.Apply(word)) + "."}
}

func reversed(w []byte) []byte {
	r := slices.Clone(w)
	slices.Reverse(r)
	return r
}

func upper(w []byte) []byte { return bytes.ToUpper(w) }

// The skills of the demo. The base model is pretrained on Copy, Reverse and
// Upper; the fine-tuning task is ReverseUpper, a combination it never saw.
var (
	Copy         = Skill{"copy", '>', slices.Clone[[]byte]}
	Reverse      = Skill{"reverse", '<', reversed}
	Upper        = Skill{"upper", '^', upper}
	ReverseUpper = Skill{"reverse-upper", '!', func(w []byte) []byte { return upper(reversed(w)) }}
)

// WordLen is the length of every word, so every example has the same
// length (2·WordLen + 2 bytes) and batches need no padding.
const WordLen = 5

// wordSource draws random lowercase words from a seed.
type wordSource struct{ rng *normalSource }

func (w wordSource) word() []byte {
	b := make([]byte, WordLen)
	for i := range b {
		b[i] = 'a' + byte(w.rng.uint64()%26)
	}
	return b
}

// Examples draws n examples, each of a skill picked in turn from skills,
// on random words from seed.
func Examples(skills []Skill, n int, seed uint64) []Example {
	ws := wordSource{newNormalSource(seed)}
	out := make([]Example, n)
	for i := range out {
		out[i] = skills[i%len(skills)].Example(ws.word())
	}
	return out
}

// WriteJSONL writes examples as dstune's lm training data: tokens, and a
// loss mask that counts only the answer's bytes.
func WriteJSONL(path string, examples []Example) error {
	var buf bytes.Buffer
	for _, e := range examples {
		toks := e.Tokens()
		mask := make([]int, len(toks))
		for i := len(e.Prompt); i < len(toks); i++ {
			mask[i] = 1
		}
		line, err := json.Marshal(struct {
			Tokens   []int64 `json:"tokens"`
			LossMask []int   `json:"loss_mask"`
		}{toks, mask})
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

// TaskData draws the fine-tuning task's examples: nValid validation
// examples, then nTrain training examples on other words (a word of the
// validation set never appears in training).
func TaskData(skill Skill, nTrain, nValid int, seed uint64) (trainSet, validSet []Example) {
	ws := wordSource{newNormalSource(seed)}
	held := map[string]bool{}
	for range nValid {
		w := ws.word()
		held[string(w)] = true
		validSet = append(validSet, skill.Example(w))
	}
	for len(trainSet) < nTrain {
		if w := ws.word(); !held[string(w)] {
			trainSet = append(trainSet, skill.Example(w))
		}
	}
	return trainSet, validSet
}
