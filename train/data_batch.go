package train

import (
	"fmt"
	"math/bits"
)

// IgnoreIndex marks a target (or label) that does not count in the loss.
const IgnoreIndex = -100

// BatchOptions say how examples become batches.
type BatchOptions struct {
	BatchSize int // B ≥ 1 rows per batch
	// MaxLen, when > 0, truncates longer examples to their first MaxLen
	// tokens (and loss_mask entries).
	MaxLen int
	// FixedLen pads every batch to T = MaxLen (for static shapes); else T
	// is the longest row of the batch.
	FixedLen bool
	PadID    int64 // token id written at padded positions
}

func (o BatchOptions) validate(task Task) error {
	switch {
	case o.BatchSize < 1:
		return fmt.Errorf("batch size %d, want at least 1", o.BatchSize)
	case o.MaxLen < 0:
		return fmt.Errorf("max length %d, want ≥ 0 (0: no limit)", o.MaxLen)
	case o.FixedLen && o.MaxLen == 0:
		return fmt.Errorf("a fixed sequence length needs a max length")
	case task == TaskLM && o.MaxLen == 1:
		return fmt.Errorf("max length 1 leaves an lm example nothing to predict")
	}
	return nil
}

// Batch is B rows of T positions, row-major. Rows past Rows (only in the
// last batch of EvalBatches) are filler: all padding, nothing to predict.
//
// Right padding: row r holds its example's (truncated) tokens in positions
// [0, len), PadID after. For the lm task, the model reads Tokens and its
// output at position t is scored against Targets[t]:
//
//	Targets[r·T+t] = tokens[t+1]  if t+1 < len and loss_mask[t+1] = 1 (no mask: always)
//	               = IgnoreIndex  otherwise (the last token, padding, masked tokens)
//
// For classify, Labels[r] is the row's label (IgnoreIndex on filler rows)
// and Targets is nil.
type Batch struct {
	B, T          int
	Tokens        []int64 // [B·T]
	AttentionMask []int64 // [B·T]: 1 at real tokens, 0 at padding
	Targets       []int64 // lm: [B·T]; nil for classify
	Labels        []int64 // classify: [B]; nil for lm
	Rows          int     // rows holding examples
	Examples      []int   // [Rows]: dataset index of each row's example
	NumTargets    int     // entries that count in the loss (lm: targets ≠ IgnoreIndex; classify: Rows)
}

// fillBatch lays out the examples idx (≤ B of them) as b, reusing b's
// slices.
func fillBatch(b *Batch, ds *Dataset, opts BatchOptions, idx []int) {
	length := func(i int) int {
		n := ds.starts[i+1] - ds.starts[i]
		if opts.MaxLen > 0 {
			n = min(n, opts.MaxLen)
		}
		return n
	}
	T := opts.MaxLen
	if !opts.FixedLen {
		T = 1
		for _, i := range idx {
			T = max(T, length(i))
		}
	}
	B := opts.BatchSize
	b.B, b.T, b.Rows = B, T, len(idx)
	b.Tokens = resize(b.Tokens, B*T)
	b.AttentionMask = resize(b.AttentionMask, B*T)
	b.Examples = append(b.Examples[:0], idx...)
	if ds.Task == TaskLM {
		b.Targets = resize(b.Targets, B*T)
		b.Labels = nil
	} else {
		b.Labels = resize(b.Labels, B)
		b.Targets = nil
	}
	b.NumTargets = 0
	for r := range B {
		tokens := b.Tokens[r*T : (r+1)*T]
		mask := b.AttentionMask[r*T : (r+1)*T]
		n := 0
		var ex Example
		if r < len(idx) {
			ex = ds.Example(idx[r])
			n = length(idx[r])
		}
		for t := range T {
			if t < n {
				tokens[t], mask[t] = int64(ex.Tokens[t]), 1
			} else {
				tokens[t], mask[t] = opts.PadID, 0
			}
		}
		switch ds.Task {
		case TaskLM:
			targets := b.Targets[r*T : (r+1)*T]
			for t := range T {
				targets[t] = IgnoreIndex
				if t+1 < n && (ex.LossMask == nil || ex.LossMask[t+1]) {
					targets[t] = int64(ex.Tokens[t+1])
					b.NumTargets++
				}
			}
		case TaskClassify:
			b.Labels[r] = IgnoreIndex
			if r < len(idx) {
				b.Labels[r] = ex.Label
				b.NumTargets++
			}
		}
	}
}

func resize(s []int64, n int) []int64 {
	if cap(s) < n {
		return make([]int64, n)
	}
	return s[:n]
}

// Position is where a TrainBatches stream stands: the next example is
// number Index of epoch Epoch's shuffled order. Saving it in a checkpoint
// and passing it to NewTrainBatches resumes the same stream exactly.
type Position struct {
	Epoch int64 `json:"epoch"`
	Index int   `json:"index"`
}

// TrainBatches is an endless stream of full batches for training. Epoch e
// visits every example once, in the order EpochOrder(seed, e, n); a batch
// that reaches the end of an epoch continues into the next one, so every
// batch has B rows and the stream depends only on (seed, start position).
type TrainBatches struct {
	ds    *Dataset
	opts  BatchOptions
	seed  uint64
	pos   Position
	order []int // EpochOrder(seed, pos.Epoch, n)
	idx   []int
}

// NewTrainBatches starts a stream at start (Position{} for a fresh run).
func NewTrainBatches(ds *Dataset, opts BatchOptions, seed uint64, start Position) (*TrainBatches, error) {
	if err := opts.validate(ds.Task); err != nil {
		return nil, fmt.Errorf("%s: %w", ds.Name, err)
	}
	if start.Epoch < 0 || start.Index < 0 || start.Index >= ds.Len() {
		return nil, fmt.Errorf("%s: resume position epoch %d, example %d is outside the data's %d examples", ds.Name, start.Epoch, start.Index, ds.Len())
	}
	tb := &TrainBatches{ds: ds, opts: opts, seed: seed, pos: start}
	tb.order = EpochOrder(seed, start.Epoch, ds.Len())
	return tb, nil
}

// Position is where the next batch starts.
func (tb *TrainBatches) Position() Position { return tb.pos }

// Seek moves the stream back to pos, a position it had (the batches of a
// step that was abandoned are drawn again).
func (tb *TrainBatches) Seek(pos Position) {
	if pos.Epoch != tb.pos.Epoch {
		tb.order = epochOrderInto(tb.order, tb.seed, pos.Epoch)
	}
	tb.pos = pos
}

// Next fills b with the next batch, reusing b's slices.
func (tb *TrainBatches) Next(b *Batch) {
	tb.idx = tb.idx[:0]
	for len(tb.idx) < tb.opts.BatchSize {
		tb.idx = append(tb.idx, tb.order[tb.pos.Index])
		tb.pos.Index++
		if tb.pos.Index == len(tb.order) {
			tb.pos = Position{Epoch: tb.pos.Epoch + 1}
			tb.order = epochOrderInto(tb.order, tb.seed, tb.pos.Epoch)
		}
	}
	fillBatch(b, tb.ds, tb.opts, tb.idx)
}

// EvalBatches walks a dataset once in file order, for validation. The last
// batch is filled up with filler rows when the examples run out.
type EvalBatches struct {
	ds   *Dataset
	opts BatchOptions
	next int
	idx  []int
}

// NewEvalBatches starts a walk over ds.
func NewEvalBatches(ds *Dataset, opts BatchOptions) (*EvalBatches, error) {
	if err := opts.validate(ds.Task); err != nil {
		return nil, fmt.Errorf("%s: %w", ds.Name, err)
	}
	return &EvalBatches{ds: ds, opts: opts}, nil
}

// Next fills b with the next batch and reports whether there was one.
func (eb *EvalBatches) Next(b *Batch) bool {
	if eb.next >= eb.ds.Len() {
		return false
	}
	eb.idx = eb.idx[:0]
	for len(eb.idx) < eb.opts.BatchSize && eb.next < eb.ds.Len() {
		eb.idx = append(eb.idx, eb.next)
		eb.next++
	}
	fillBatch(b, eb.ds, eb.opts, eb.idx)
	return true
}

// EpochOrder is the order in which epoch epoch of a stream seeded with
// seed visits n examples: a Fisher–Yates shuffle of 0…n−1 driven by
// SplitMix64. The generator starts from state seed ⊕ (epoch+1)·φ where φ =
// 0x9E3779B97F4A7C15; for i = n−1 down to 1 it swaps element i with
// element j, j uniform in [0, i] drawn by Lemire's multiply-shift method
// with rejection (unbiased). Being spelled out here, the order depends on
// nothing else (not on Go's math/rand), so resumed runs stay bit-identical
// across Go versions.
func EpochOrder(seed uint64, epoch int64, n int) []int {
	order := make([]int, n)
	return epochOrderInto(order, seed, epoch)
}

func epochOrderInto(order []int, seed uint64, epoch int64) []int {
	for i := range order {
		order[i] = i
	}
	rng := splitMix64{state: seed ^ uint64(epoch+1)*0x9E3779B97F4A7C15}
	for i := len(order) - 1; i > 0; i-- {
		j := rng.below(uint64(i) + 1)
		order[i], order[j] = order[j], order[i]
	}
	return order
}

// splitMix64 is Steele, Lea and Flood's SplitMix64 generator.
type splitMix64 struct{ state uint64 }

func (s *splitMix64) next() uint64 {
	s.state += 0x9E3779B97F4A7C15
	z := s.state
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

// below returns a uniform value in [0, n), n > 0 (Lemire, "Fast random
// integer generation in an interval", 2019).
func (s *splitMix64) below(n uint64) uint64 {
	hi, lo := bits.Mul64(s.next(), n)
	if lo < n {
		threshold := -n % n
		for lo < threshold {
			hi, lo = bits.Mul64(s.next(), n)
		}
	}
	return hi
}
