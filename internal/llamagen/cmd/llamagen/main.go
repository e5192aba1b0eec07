// Command llamagen writes a Llama-shaped ONNX decoder with random weights
// (see package llamagen), for trying dstune on large models:
//
//	go run ./internal/llamagen/cmd/llamagen -out /tmp/llama1b             # TinyLlama-1.1B's shape, float32
//	go run ./internal/llamagen/cmd/llamagen -out /tmp/llama1b -dtype float16 -kv-cache
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/onnx"
)

func main() {
	c := llamagen.TinyLlama1B
	out := flag.String("out", "", "directory to write model.onnx and model.onnx.data into (required)")
	flag.IntVar(&c.Vocab, "vocab", c.Vocab, "vocabulary size")
	flag.IntVar(&c.Dim, "dim", c.Dim, "model width")
	flag.IntVar(&c.Layers, "layers", c.Layers, "decoder layers")
	flag.IntVar(&c.Heads, "heads", c.Heads, "attention heads")
	flag.IntVar(&c.KVHeads, "kv-heads", c.KVHeads, "key/value heads (grouped-query attention)")
	flag.IntVar(&c.Hidden, "hidden", c.Hidden, "MLP width")
	flag.BoolVar(&c.KVCache, "kv-cache", false, "add past_key_values inputs and present outputs")
	flag.BoolVar(&c.Merged, "merged", false, "Optimum's merged decoder (If on use_cache_branch)")
	flag.BoolVar(&c.Tied, "tied", false, "share the embedding with the LM head")
	flag.Uint64Var(&c.Seed, "seed", 1, "seed of the random weights")
	dtype := flag.String("dtype", "float32", "float32, float16 or bfloat16")
	flag.Parse()
	switch *dtype {
	case "float32":
		c.DType = onnx.Float
	case "float16":
		c.DType = onnx.Float16
	case "bfloat16":
		c.DType = onnx.BFloat16
	default:
		fmt.Fprintf(os.Stderr, "llamagen: -dtype %q: want float32, float16 or bfloat16\n", *dtype)
		os.Exit(2)
	}
	if *out == "" {
		fmt.Fprintln(os.Stderr, "llamagen: -out DIR is required")
		os.Exit(2)
	}
	start := time.Now()
	if err := llamagen.Write(*out, c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s/model.onnx: %d parameters (%s) in %.1f s\n", *out, c.Params(), *dtype, time.Since(start).Seconds())
}
