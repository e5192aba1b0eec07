package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/dstune/dstune/kernels"
)

// The element-wise and row kernels of a training step, on the bench models'
// shapes (testdata/bench: 16×128 tokens, d 256, FFN 1024, 4 heads, vocab
// 8000). gbps counts the bytes each call must read and write once.

func init() {
	registerProfiler(profiler{name: "elem", run: profileElem})
}

func profileElem(env *profileEnv) ([]profileRecord, error) {
	tokens, vocab, d, ffn, heads, seq := 2048, 8000, 256, 1024, 4, 128
	reps := 9
	if env.quick {
		tokens, vocab, reps = 2*128, 500, 3
	}
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int, scale float64) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.NormFloat64() * scale)
		}
		return s
	}
	threads := env.threads
	var recs []profileRecord
	add := func(kernel, shape string, bytes int, run func()) {
		ms := elemMedianMS(reps, run)
		recs = append(recs, profileRecord{
			Kernel: kernel, Shape: shape, Threads: threads, ISA: env.isa.String(), MS: ms,
			GBPS: float64(bytes) / ms / 1e6, PeakGBPS: env.peakGBPS(),
		})
	}

	logits := fill(tokens*vocab, 2)
	dlogits := make([]float32, len(logits))
	targets := make([]int32, tokens)
	for i := range targets {
		targets[i] = int32(rng.IntN(vocab))
		if i%seq == seq-1 {
			targets[i] = -100 // the last position has no next token
		}
	}
	scale := 1 / float32(kernels.CountTargets(targets, -100))
	add("softmax-xent", fmt.Sprintf("%dx%d", tokens, vocab), 8*len(logits), func() {
		kernels.SoftmaxCrossEntropy(threads, tokens, vocab, logits, vocab, targets, -100, dlogits, vocab, scale)
	})

	x, dy, y := fill(tokens*d, 1), fill(tokens*d, 1), make([]float32, tokens*d)
	gamma, beta, dgamma, dbeta := fill(d, 1), fill(d, 1), make([]float32, d), make([]float32, d)
	mean, rstd := make([]float32, tokens), make([]float32, tokens)
	add("layernorm", fmt.Sprintf("%dx%d", tokens, d), 8*len(x), func() {
		kernels.LayerNorm(threads, tokens, d, y, d, x, d, gamma, beta, 1e-5, mean, rstd)
	})
	add("layernorm-bwd", fmt.Sprintf("%dx%d", tokens, d), 12*len(x), func() {
		kernels.LayerNormBackward(threads, tokens, d, y, d, dy, d, x, d, gamma, mean, rstd, dgamma, dbeta)
	})

	h, dh, g := fill(tokens*ffn, 1.5), fill(tokens*ffn, 1), make([]float32, tokens*ffn)
	add("gelu", fmt.Sprint(len(h)), 8*len(h), func() { elemSplit(threads, len(h), func(lo, hi int) { kernels.GeluF32(g[lo:hi], h[lo:hi]) }) })
	add("gelu-bwd", fmt.Sprint(len(h)), 12*len(h), func() {
		elemSplit(threads, len(h), func(lo, hi int) { kernels.GeluBackwardF32(g[lo:hi], h[lo:hi], dh[lo:hi]) })
	})

	batch := tokens / seq * heads
	scores, probs := fill(batch*seq*seq, 3), make([]float32, batch*seq*seq)
	shape := fmt.Sprintf("%dx%dx%d", batch, seq, seq)
	add("attn-softmax", shape, 8*len(scores), func() {
		kernels.AttentionSoftmax(threads, batch, seq, seq, probs, seq, scores, seq, 0.125, nil, 0, false)
	})
	add("attn-softmax-causal", shape, 8*len(scores), func() {
		kernels.AttentionSoftmax(threads, batch, seq, seq, probs, seq, scores, seq, 0.125, nil, 0, true)
	})
	dscores := fill(len(scores), 1)
	add("softmax-bwd", fmt.Sprintf("%dx%d", batch*seq, seq), 12*len(scores), func() {
		kernels.SoftmaxBackward(threads, batch*seq, seq, dscores, seq, probs, seq, dscores, seq)
	})
	return recs, nil
}

// elemMedianMS returns the median time of reps calls of run, after one
// warm-up call.
func elemMedianMS(reps int, run func()) float64 {
	run()
	times := make([]float64, reps)
	for i := range times {
		start := time.Now()
		run()
		times[i] = float64(time.Since(start).Nanoseconds()) / 1e6
	}
	slices.Sort(times)
	return times[reps/2]
}

// elemSplit runs f over [0, n) split into one contiguous part per thread
// (the element-wise kernels take slices; callers split them).
func elemSplit(threads, n int, f func(lo, hi int)) {
	if threads <= 1 {
		f(0, n)
		return
	}
	done := make(chan struct{}, threads)
	for w := range threads {
		go func() {
			lo, hi := kernels.Split(n, w, threads, 64)
			f(lo, hi)
			done <- struct{}{}
		}()
	}
	for range threads {
		<-done
	}
}
