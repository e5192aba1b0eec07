package generate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Sampling chooses the next token from the logits.
type Sampling struct {
	// Temperature divides the logits; 0 is greedy (the most likely token,
	// the lowest id among equals).
	Temperature float64
	// TopK keeps the k most likely tokens (0: all).
	TopK int
	// TopP keeps the most likely tokens whose probabilities sum to at
	// least p (1 or 0: all).
	TopP float64
	// Seed seeds the draws: the same seed, logits and options give the
	// same tokens.
	Seed uint64
	// LogitBias is added to the logits of its token ids before the other
	// options apply (OpenAI's logit_bias: -100 bans a token, 100 all but
	// forces it).
	LogitBias map[int]float64
	// PresencePenalty and FrequencyPenalty lower the logits of the tokens
	// drawn so far, as OpenAI's penalties do: token j's logit becomes
	// logit[j] − count[j]·FrequencyPenalty − (count[j] > 0)·PresencePenalty,
	// count[j] being the times the sampler has drawn j.
	PresencePenalty, FrequencyPenalty float64
}

// Check reports options out of range.
func (o Sampling) Check() error {
	switch {
	case o.Temperature < 0 || math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0):
		return fmt.Errorf("temperature %g: want a finite number ≥ 0", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("top-k %d: want ≥ 0", o.TopK)
	case o.TopP < 0 || o.TopP > 1 || math.IsNaN(o.TopP):
		return fmt.Errorf("top-p %g: want a number in [0, 1]", o.TopP)
	case math.IsNaN(o.PresencePenalty) || math.IsInf(o.PresencePenalty, 0):
		return fmt.Errorf("presence penalty %g: want a finite number", o.PresencePenalty)
	case math.IsNaN(o.FrequencyPenalty) || math.IsInf(o.FrequencyPenalty, 0):
		return fmt.Errorf("frequency penalty %g: want a finite number", o.FrequencyPenalty)
	}
	for id, b := range o.LogitBias {
		if id < 0 || math.IsNaN(b) || math.IsInf(b, 0) {
			return fmt.Errorf("logit bias %g of token %d: want a token id ≥ 0 and a finite bias", b, id)
		}
	}
	return nil
}

// Sampler draws tokens as Sampling says; it keeps the random state of one
// sequence.
type Sampler struct {
	opts  Sampling
	rng   *rand.Rand
	order []int
	probs []float64
	// counts holds the times each token was drawn, for the penalties.
	counts   map[int]int
	adjusted []float32 // the logits with the biases and penalties
}

// NewSampler starts the draws of one sequence.
func NewSampler(o Sampling) *Sampler {
	return &Sampler{opts: o, rng: rand.New(rand.NewPCG(o.Seed, 0x6a09e667f3bcc908))}
}

// Next picks a token from logits (which it leaves as they are).
func (s *Sampler) Next(logits []float32) int {
	logits = s.adjust(logits)
	id := s.pick(logits)
	if s.opts.PresencePenalty != 0 || s.opts.FrequencyPenalty != 0 {
		if s.counts == nil {
			s.counts = map[int]int{}
		}
		s.counts[id]++
	}
	return id
}

// adjust returns the logits with the biases and penalties applied, each
// changed logit computed in float64 and rounded once; logits itself when
// there is nothing to change.
func (s *Sampler) adjust(logits []float32) []float32 {
	if len(s.opts.LogitBias) == 0 && len(s.counts) == 0 {
		return logits
	}
	s.adjusted = append(s.adjusted[:0], logits...)
	for id, b := range s.opts.LogitBias {
		if id < len(logits) {
			s.adjusted[id] = float32(float64(logits[id]) + b - s.penalty(id))
		}
	}
	for id := range s.counts {
		if _, biased := s.opts.LogitBias[id]; !biased && id < len(logits) {
			s.adjusted[id] = float32(float64(logits[id]) - s.penalty(id))
		}
	}
	return s.adjusted
}

// penalty is what the penalties take off token id's logit.
func (s *Sampler) penalty(id int) float64 {
	c := s.counts[id]
	if c == 0 {
		return 0
	}
	return float64(c)*s.opts.FrequencyPenalty + s.opts.PresencePenalty
}

// pick draws a token from logits.
func (s *Sampler) pick(logits []float32) int {
	if s.opts.Temperature == 0 {
		return argmax(logits)
	}
	topP := s.opts.TopP > 0 && s.opts.TopP < 1
	s.order = s.order[:0]
	switch k := s.opts.TopK; {
	case k > 0 && k < len(logits):
		s.order = topK(s.order, logits, k)
	default:
		for i, x := range logits {
			if !math.IsNaN(float64(x)) {
				s.order = append(s.order, i)
			}
		}
		if topP {
			slices.SortFunc(s.order, func(a, b int) int { return byLikelihood(logits, a, b) })
		}
	}
	if len(s.order) == 0 {
		return 0
	}
	top := float64(logits[s.order[0]])
	for _, i := range s.order {
		top = max(top, float64(logits[i]))
	}
	s.probs = s.probs[:0]
	sum := 0.0
	for _, i := range s.order {
		p := math.Exp((float64(logits[i]) - top) / s.opts.Temperature)
		s.probs = append(s.probs, p)
		sum += p
	}
	if topP {
		// The most likely first (s.order is sorted): keep them until
		// their probabilities reach p.
		acc, keep := 0.0, len(s.probs)
		for j, q := range s.probs {
			acc += q / sum
			if acc >= s.opts.TopP {
				keep = j + 1
				break
			}
		}
		s.probs = s.probs[:keep]
		sum = 0
		for _, q := range s.probs {
			sum += q
		}
	}
	u := s.rng.Float64() * sum
	for j, q := range s.probs {
		u -= q
		if u < 0 {
			return s.order[j]
		}
	}
	return s.order[len(s.probs)-1]
}

// byLikelihood orders token ids by descending logit, equal logits by id:
// a total order, so the draws do not depend on how ids were sorted.
func byLikelihood(logits []float32, a, b int) int {
	switch {
	case logits[a] > logits[b]:
		return -1
	case logits[a] < logits[b]:
		return 1
	}
	return a - b
}

// topK appends the k most likely token ids (NaN logits excluded) to dst,
// most likely first: a heap of the best k seen, then a sort of those.
func topK(dst []int, logits []float32, k int) []int {
	// worse reports whether a ranks below b.
	worse := func(a, b int) bool { return byLikelihood(logits, a, b) > 0 }
	heap := dst[:0]
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= len(heap) {
				return
			}
			if c+1 < len(heap) && worse(heap[c+1], heap[c]) {
				c++
			}
			if !worse(heap[c], heap[i]) {
				return
			}
			heap[i], heap[c] = heap[c], heap[i]
			i = c
		}
	}
	for i, x := range logits {
		if math.IsNaN(float64(x)) {
			continue
		}
		switch {
		case len(heap) < k:
			heap = append(heap, i)
			for j := len(heap) - 1; j > 0 && worse(heap[j], heap[(j-1)/2]); j = (j - 1) / 2 {
				heap[j], heap[(j-1)/2] = heap[(j-1)/2], heap[j]
			}
		case worse(heap[0], i):
			heap[0] = i
			down(0)
		}
	}
	slices.SortFunc(heap, func(a, b int) int { return byLikelihood(logits, a, b) })
	return heap
}

// argmax is the index of the largest logit, the first among equals; NaN
// is never chosen unless everything is NaN.
func argmax(logits []float32) int {
	best := -1
	for i, x := range logits {
		if math.IsNaN(float64(x)) {
			continue
		}
		if best < 0 || x > logits[best] {
			best = i
		}
	}
	return max(best, 0)
}
