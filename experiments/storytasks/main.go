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
	model := flag.String("model", "", "")
	tokPath := flag.String("tokenizer", "", "")
	out := flag.String("out", "", "")
	n := flag.Int("stories", 600, "")
	nTrain := flag.Int("train", 1000, "")
	nValid := flag.Int("valid", 100, "")
	maxLen := flag.Int("max-len", 48, "")
	flag.Parse()
	stories, err := generateStories(*model, *tokPath, *n, 200, 0.8)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tok, _ := tokenizer.Load(*tokPath)
	sents := sentences(stories)
	fmt.Fprintf(os.Stderr, "%d stories, %d sentences\n", len(stories), len(sents))
	for _, t := range tasks {
		type row struct {
			Prompt     string `json:"prompt"`
			Completion string `json:"completion"`
		}
		var rows []row
		for _, s := range sents {
			c, ok := t.rewrite(s)
			if !ok {
				continue
			}
			p := s + "\n"
			if len(tok.Encode(p, true))+len(tok.Encode(c, false))+1 > *maxLen {
				continue
			}
			rows = append(rows, row{p, c})
		}
		rng := rand.New(rand.NewPCG(1, 2))
		rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
		fmt.Fprintf(os.Stderr, "%s: %d rows\n", t.name, len(rows))
		os.MkdirAll(filepath.Join(*out, t.name), 0o755)
		write := func(name string, rs []row) {
			var b strings.Builder
			for _, r := range rs {
				j, _ := json.Marshal(r)
				b.Write(j)
				b.WriteByte('\n')
			}
			os.WriteFile(filepath.Join(*out, t.name, name), []byte(b.String()), 0o644)
		}
		nv := min(*nValid, len(rows)/10)
		write("valid.jsonl", rows[:nv])
		write("train.jsonl", rows[nv:min(len(rows), nv+*nTrain)])
	}
}

var sentenceRE = regexp.MustCompile(`[A-Z][^.!?"\n]*[.!?]`)

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
