package main

import (
	"context"
	"fmt"
	"strings"

	_ "github.com/dstune/dstune/accel/cpu" // the "cpu" backend
	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/tokenizer"
)

// generateStories samples n stories from the model, each from BOS alone
// with its own seed, and returns their text.
func generateStories(modelPath, tokPath string, n, maxTokens int, temperature float64) ([]string, error) {
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		return nil, err
	}
	m, err := onnx.ReadFile(modelPath)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", modelPath, err)
	}
	d, err := generate.New(model, generate.Options{Mode: generate.OwnCache, Threads: 1})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", modelPath, err)
	}
	defer d.Close()
	stories := make([]string, 0, n)
	for i := range n {
		req := generate.Request{Prompt: []int64{int64(tok.BOS())}, MaxTokens: maxTokens,
			Sampling: generate.Sampling{Temperature: temperature, Seed: uint64(i + 1)}, StopTokens: []int64{int64(tok.BOS()), int64(tok.EOS())}}
		res, err := generate.Run(context.Background(), d, nil, req, func(generate.Event) error { return nil })
		if err != nil {
			return nil, err
		}
		ids := make([]int, len(res.Tokens))
		for j, t := range res.Tokens {
			ids[j] = int(t)
		}
		stories = append(stories, strings.TrimSpace(tok.Decode(ids, true)))
	}
	return stories, nil
}
