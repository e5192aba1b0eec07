// Command storytasks writes fine-tuning tasks for stories260K made of
// text it can read but was never trained to write: it samples stories
// from the model itself, splits them into sentences, and rewrites each
// sentence in a way TinyStories never does (tasks.go): its characters
// renamed, its words in an ornate register, or said by its character
// in the first person. A row is {"prompt": the sentence and a newline,
// "completion": the rewritten sentence}; dstune trains on the completion
// only and measures it with --metric token-accuracy or exact-match.
//
//	go run ./experiments/storytasks -model stories260K.onnx -tokenizer tok512.bin -out DIR
//
// writes DIR/TASK/train.jsonl and DIR/TASK/valid.jsonl for every task.
// The output is deterministic: story i is sampled with seed i+1, the rows
// are shuffled with a fixed seed. experiments/storytasks/data holds what
// the defaults write.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/dstune/dstune/tokenizer"
)

func main() {
	model := flag.String("model", "", "stories260K.onnx")
	tokPath := flag.String("tokenizer", "", "its tokenizer, tok512.bin")
	out := flag.String("out", "", "directory to write TASK/train.jsonl and TASK/valid.jsonl into (created)")
	n := flag.Int("stories", 600, "stories to sample (200 tokens at most, temperature 0.8)")
	nTrain := flag.Int("train", 1000, "training rows per task, at most")
	nValid := flag.Int("valid", 100, "validation rows per task, at most (and at most a tenth of the rows)")
	maxLen := flag.Int("max-len", 48, "longest row in tokens (BOS, prompt, completion, EOS)")
	flag.Parse()
	if *model == "" || *tokPath == "" || *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: storytasks -model stories260K.onnx -tokenizer tok512.bin -out DIR [-stories 600] [-train 1000] [-valid 100] [-max-len 48]")
		os.Exit(2)
	}
	if err := run(*model, *tokPath, *out, *n, *nTrain, *nValid, *maxLen); err != nil {
		fmt.Fprintln(os.Stderr, "storytasks:", err)
		os.Exit(1)
	}
}

// row is one example of a task.
type row struct {
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
}

func run(model, tokPath, out string, n, nTrain, nValid, maxLen int) error {
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		return err
	}
	stories, err := generateStories(model, tokPath, n, 200, 0.8)
	if err != nil {
		return err
	}
	sents := sentences(stories)
	fmt.Fprintf(os.Stderr, "%d stories, %d sentences\n", len(stories), len(sents))
	for _, t := range tasks {
		var rows []row
		for _, s := range sents {
			c, ok := t.rewrite(s)
			if !ok {
				continue
			}
			p := s + "\n"
			if len(tok.Encode(p, true))+len(tok.Encode(c, false))+1 > maxLen {
				continue
			}
			rows = append(rows, row{p, c})
		}
		rng := rand.New(rand.NewPCG(1, 2))
		rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
		nv := min(nValid, len(rows)/10)
		nt := min(len(rows)-nv, nTrain)
		fmt.Fprintf(os.Stderr, "%s (%s): %d rows, %d for training, %d for validation\n", t.name, t.about, len(rows), nt, nv)
		dir := filepath.Join(out, t.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := writeRows(filepath.Join(dir, "valid.jsonl"), rows[:nv]); err != nil {
			return err
		}
		if err := writeRows(filepath.Join(dir, "train.jsonl"), rows[nv:nv+nt]); err != nil {
			return err
		}
	}
	return nil
}

// writeRows writes rows as JSON Lines.
func writeRows(path string, rows []row) error {
	var b strings.Builder
	for _, r := range rows {
		j, err := json.Marshal(r)
		if err != nil {
			return err
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// sentenceRE matches a sentence: a capital letter up to the first end
// mark, without quotes or line breaks (so after a quotation, "Hi!" said
// Sam to the cat., it matches the fragment "Sam to the cat.").
var sentenceRE = regexp.MustCompile(`[A-Z][^.!?"\n]*[.!?]`)

// sentences lists the distinct sentences of 4 to 14 words of the
// stories, in order.
func sentences(stories []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, st := range stories {
		for _, s := range sentenceRE.FindAllString(st, -1) {
			w := len(strings.Fields(s))
			if w < 4 || w > 14 || seen[s] {
				continue
			}
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
