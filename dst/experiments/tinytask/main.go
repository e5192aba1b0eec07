// Command tinytask writes the small task DST's experiments fine-tune
// tiny_gpt (a byte-level LM) on: short English sentences from a tiny
// grammar, one JSON object a line, deterministic for a seed.
//
//	go run ./dst/experiments/tinytask -out DIR [-train 2000] [-valid 200] [-seed 1]
//
// writes DIR/train.jsonl and DIR/valid.jsonl ({"tokens":[bytes...]}).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dstune/dstune/dst/experiments/tinytask/task"
)

func main() {
	out := flag.String("out", "", "directory to write train.jsonl and valid.jsonl into (created)")
	nTrain := flag.Int("train", 2000, "training sentences")
	nValid := flag.Int("valid", 200, "validation sentences")
	seed := flag.Uint64("seed", 1, "seed of the generator")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: tinytask -out DIR [-train N] [-valid N] [-seed S]")
		os.Exit(2)
	}
	if err := os.MkdirAll(*out, 0o777); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	train, valid := task.Split(*seed, *nTrain, *nValid)
	for name, lines := range map[string][]string{"train.jsonl": train, "valid.jsonl": valid} {
		if err := os.WriteFile(filepath.Join(*out, name), task.JSONL(lines), 0o666); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
