package demo

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/accel"
	_ "github.com/dstune/dstune/accel/cpu" // the "cpu" backend
	"github.com/dstune/dstune/ir"
)

// Quality is how well a model does on a set of examples.
type Quality struct {
	// Loss is the mean cross-entropy (nats) of the answer bytes, each
	// predicted from the prompt and the answer's earlier bytes: the
	// validation loss of `dstune train` on the same data.
	Loss float64
	// ExactMatch is the share of examples whose greedy completion (the
	// most likely byte, one at a time, as many bytes as the answer has)
	// is exactly the answer.
	ExactMatch float64
	// Completions are the greedy completions, one per example.
	Completions []string
}

// evalBatch is the number of examples one forward pass scores.
const evalBatch = 64

// Evaluate scores model on examples, which must all have one length.
// threads is the goroutines per kernel call (0: all cores).
func Evaluate(model *ir.Model, examples []Example, threads int) (Quality, error) {
	if len(examples) == 0 {
		return Quality{}, fmt.Errorf("demo: no examples to evaluate")
	}
	P, A := len(examples[0].Prompt), len(examples[0].Answer)
	for i, e := range examples {
		if len(e.Prompt) != P || len(e.Answer) != A {
			return Quality{}, fmt.Errorf("demo: example %d has a %d-byte prompt and a %d-byte answer, example 0 %d and %d", i, len(e.Prompt), len(e.Answer), P, A)
		}
	}
	if P == 0 || A == 0 {
		return Quality{}, fmt.Errorf("demo: examples need a prompt and an answer")
	}
	T := P + A
	B := min(evalBatch, len(examples))
	exe, err := compileFor(model, B, T, threads)
	if err != nil {
		return Quality{}, err
	}
	defer exe.Close()
	tokens := ir.NewTensor(ir.Int64, ir.Shape{B, T})
	tok := tokens.Int64s()
	// run returns the logits' rows [B·T, V]: row r·T+t predicts byte t+1.
	run := func() ([]float32, int, error) {
		out, err := exe.Run([]*ir.Tensor{tokens})
		if err != nil {
			return nil, 0, err
		}
		l := out[0]
		if l.DType() != ir.Float32 || l.Shape().Rank() != 3 || l.Shape()[0] != B || l.Shape()[1] != T {
			return nil, 0, fmt.Errorf("demo: logits are %v, want float32 [%d, %d, vocab]", l, B, T)
		}
		return l.Float32s(), l.Shape()[2], nil
	}
	q := Quality{Completions: make([]string, len(examples))}
	var lossSum float64
	exact := 0
	for start := 0; start < len(examples); start += B {
		rows := min(B, len(examples)-start)
		batch := examples[start : start+rows]
		// Teacher forcing: prompt and answer, one pass for the loss.
		for r := range B {
			copy(tok[r*T:(r+1)*T], batch[min(r, rows-1)].Tokens()) // filler rows repeat the last example
		}
		logits, V, err := run()
		if err != nil {
			return Quality{}, err
		}
		for r := range rows {
			for t := P; t < T; t++ {
				lossSum += crossEntropy(logits[(r*T+t-1)*V:(r*T+t)*V], int(tok[r*T+t]))
			}
		}

		// Greedy decoding: the answer's bytes cleared, then filled one at
		// a time with the most likely byte after what precedes them.
		for r := range B {
			clear(tok[r*T+P : (r+1)*T])
		}
		if logits, _, err = run(); err != nil {
			return Quality{}, err
		}
		for t := P; t < T; t++ {
			for r := range B {
				tok[r*T+t] = int64(argmax(logits[(r*T+t-1)*V : (r*T+t)*V]))
			}
			if t+1 < T {
				if logits, _, err = run(); err != nil {
					return Quality{}, err
				}
			}
		}
		for r := range rows {
			b := make([]byte, A)
			for i := range b {
				b[i] = byte(tok[r*T+P+i])
			}
			q.Completions[start+r] = string(b)
			if q.Completions[start+r] == batch[r].Answer {
				exact++
			}
		}
	}
	q.Loss = lossSum / float64(len(examples)*A)
	q.ExactMatch = float64(exact) / float64(len(examples))
	return q, nil
}

// compileFor compiles model for token batches [B, T] on the CPU backend.
func compileFor(model *ir.Model, B, T, threads int) (accel.Executable, error) {
	if len(model.Inputs) != 1 {
		return nil, fmt.Errorf("demo: the model has %d inputs, want one (tokens)", len(model.Inputs))
	}
	g, err := model.Specialize(ir.Bindings{Shapes: map[string]ir.Shape{model.Inputs[0].Name: {B, T}}})
	if err != nil {
		return nil, err
	}
	backend, err := accel.Open("cpu")
	if err != nil {
		return nil, err
	}
	return backend.Compile(g, accel.Options{Threads: threads})
}

// crossEntropy is −log softmax(logits)[target], computed stably.
func crossEntropy(logits []float32, target int) float64 {
	m := logits[argmax(logits)]
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v - m))
	}
	return math.Log(sum) - float64(logits[target]-m)
}

// argmax is the index of the largest value (the first one on ties).
func argmax(v []float32) int {
	best := 0
	for j, x := range v {
		if x > v[best] {
			best = j
		}
	}
	return best
}
