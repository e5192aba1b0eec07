package generate

import (
	"context"
	"fmt"
	"math/bits"
	"slices"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// Session is one sequence being decoded: the positions fed so far and
// their caches. It is not safe for concurrent use; many sessions may share
// a Decoder.
type Session struct {
	d      *Decoder
	n      int     // positions held
	tokens []int64 // every token fed (Recompute runs them all again)

	capacity int          // positions the caches hold
	caches   []*ir.Tensor // OwnCache: per cache slot; PastInputs: per past input, in plan order
	last     []float32    // the logits of the last position fed

	fixedCapacity int // validation: run at this capacity when it fits
	// acquire gives an executable for a shape: the decoder's pools, or
	// for validation programs built apart from them.
	acquire func(context.Context, shape) (*program, accel.Executable, func(), error)
}

// NewSession starts an empty sequence.
func (d *Decoder) NewSession() *Session { return &Session{d: d, acquire: d.acquire} }

// Len is the number of positions fed so far.
func (s *Session) Len() int { return s.n }

// Fork returns a session holding the positions s holds, which goes on
// apart from s: its caches are copies, so feeding either leaves the other
// as it was, and feeding both the same tokens computes the same bits. A
// prompt several sequences continue is fed once and forked for each.
func (s *Session) Fork() *Session {
	f := *s
	f.tokens = slices.Clone(s.tokens)
	f.caches = make([]*ir.Tensor, len(s.caches))
	for i, c := range s.caches {
		f.caches[i] = c.Clone()
	}
	// f.last is shared: a feed replaces a session's logits, never writes
	// into them.
	return &f
}

// Feed appends tokens to the sequence and returns the logits of the last
// one (vocab floats, valid until the next Feed). Prompts are fed in chunks
// of powers of two, so every call with the same tokens computes the same
// bits.
func (s *Session) Feed(ctx context.Context, tokens []int64) ([]float32, error) {
	return s.feed(ctx, tokens, nil)
}

// FeedAll is Feed, but returns the logits of every token fed (len(tokens)
// rows of vocab floats, row i predicting the token after tokens[i]), in a
// slice of the caller's. The chunks compute them anyway; Feed drops all
// but the last. The rows of a long prompt take much memory (a vocabulary
// of 128,256 floats each): feeding it a chunk at a time (chunkLen) keeps
// one chunk's.
func (s *Session) FeedAll(ctx context.Context, tokens []int64) ([]float32, error) {
	all := make([]float32, 0, len(tokens)*s.d.vocab)
	if _, err := s.feed(ctx, tokens, &all); err != nil {
		return nil, err
	}
	return all, nil
}

// chunkLen is the number of the n tokens left to feed that the next
// chunk feeds: fed a chunk at a time, tokens compute the bits feeding
// them at once does.
func (s *Session) chunkLen(n int) int {
	if s.d.mode == Recompute {
		return n
	}
	return 1 << (bits.Len(uint(min(n, maxChunk))) - 1)
}

// feed feeds tokens, appending every chunk's logits to *all when all is
// not nil, and returns the last position's logits.
func (s *Session) feed(ctx context.Context, tokens []int64, all *[]float32) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("generate: no tokens to feed")
	}
	if s.n+len(tokens) > s.d.context {
		return nil, fmt.Errorf("%w: %d positions, the context holds %d", errContext, s.n+len(tokens), s.d.context)
	}
	for _, t := range tokens {
		if t < 0 || t >= int64(s.d.vocab) {
			return nil, fmt.Errorf("generate: token id %d is outside the vocabulary [0, %d)", t, s.d.vocab)
		}
	}
	for len(tokens) > 0 {
		chunk := s.chunkLen(len(tokens))
		rows, err := s.step(ctx, tokens[:chunk])
		if err != nil {
			return nil, err
		}
		if all != nil {
			if len(rows) != chunk*s.d.vocab {
				return nil, fmt.Errorf("%w: the model's output %q holds %d logits for %d positions of a vocabulary of %d: the prompt's logprobs need every position's, and it gives %d", ErrBadRequest, s.d.logits, len(rows), chunk, s.d.vocab, len(rows)/max(s.d.vocab, 1))
			}
			*all = append(*all, rows...)
		}
		s.last = rows[len(rows)-s.d.vocab:]
		tokens = tokens[chunk:]
	}
	return s.last, nil
}

// step runs one chunk and returns the logits of all its positions.
func (s *Session) step(ctx context.Context, chunk []int64) ([]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch s.d.mode {
	case OwnCache:
		return s.stepOwn(ctx, chunk)
	case PastInputs:
		return s.stepPast(ctx, chunk)
	}
	return s.stepRecompute(ctx, chunk)
}

func (s *Session) capacityFor(need, step int) int {
	c := s.d.capacityFor(need, step)
	if s.fixedCapacity >= need {
		c = s.fixedCapacity
	}
	return c
}

func (s *Session) stepOwn(ctx context.Context, chunk []int64) ([]float32, error) {
	step := len(chunk)
	capacity := s.capacityFor(s.n+step, step)
	prog, exe, release, err := s.acquire(ctx, shape{capacity, step})
	if err != nil {
		return nil, err
	}
	defer release()
	slots := prog.cached.Slots
	if s.capacity != capacity || len(s.caches) != len(slots) {
		shapes := make([]ir.Shape, len(slots))
		axes := make([]int, len(slots))
		dtypes := make([]ir.DType, len(slots))
		for i, sl := range slots {
			shapes[i], axes[i], dtypes[i] = sl.Shape, sl.Axis, sl.DType
		}
		s.resize(capacity, shapes, axes, dtypes)
	}
	feeds := s.lmFeeds(chunk, capacity)
	feeds[cachePositions] = ir.FromInt64s(ir.Shape{step}, positions(s.n, step))
	for i := range slots {
		feeds[cacheIn(i)] = s.caches[i]
	}
	out, err := accel.RunNamed(exe, feeds)
	if err != nil {
		return nil, err
	}
	for i, sl := range slots {
		copyRows(s.caches[i], s.n, out[cacheOut(i)], 0, step, sl.Axis)
	}
	s.n += step
	return logitRows(out[s.d.logits]), nil
}

func (s *Session) stepPast(ctx context.Context, chunk []int64) ([]float32, error) {
	step := len(chunk)
	capacity := s.capacityFor(max(s.n, 1), step)
	prog, exe, release, err := s.acquire(ctx, shape{capacity, step})
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.fitPast(prog.g, capacity); err != nil {
		return nil, err
	}
	feeds := s.lmFeeds(chunk, capacity+step)
	if mask := feeds[s.d.inputWithRole(ir.RoleAttentionMask)]; mask != nil {
		// The cache's unused slots are padding; the new tokens follow them.
		m := mask.Int64s()
		for i := range m {
			m[i] = 0
			if i < s.n || i >= capacity {
				m[i] = 1
			}
		}
	}
	pi := 0
	for _, p := range s.d.plans {
		if p.Role == ir.RolePast {
			feeds[p.Input.Name] = s.caches[pi]
			pi++
		}
	}
	out, err := accel.RunNamed(exe, feeds)
	if err != nil {
		return nil, err
	}
	if s.n+step > s.capacity {
		s.growPast(s.n + step)
	}
	pi = 0
	for _, p := range s.d.plans {
		if p.Role != ir.RolePast {
			continue
		}
		copyRows(s.caches[pi], s.n, out[s.d.presents[p.Input.Name]], capacity, step, p.PastAxis)
		pi++
	}
	s.n += step
	return logitRows(out[s.d.logits]), nil
}

// fitPast shapes the past caches to the graph's past inputs.
func (s *Session) fitPast(g *ir.Graph, capacity int) error {
	if s.capacity == capacity && s.caches != nil {
		return nil
	}
	var shapes []ir.Shape
	var axes []int
	var dtypes []ir.DType
	for _, p := range s.d.plans {
		if p.Role != ir.RolePast {
			continue
		}
		in := g.Input(p.Input.Name)
		if in == nil {
			return fmt.Errorf("generate: the graph lost its past input %q", p.Input.Name)
		}
		shapes = append(shapes, in.Shape)
		axes = append(axes, p.PastAxis)
		dtypes = append(dtypes, in.DType)
	}
	s.resize(capacity, shapes, axes, dtypes)
	return nil
}

// growPast makes room for n positions in the past caches.
func (s *Session) growPast(n int) {
	var shapes []ir.Shape
	var axes []int
	var dtypes []ir.DType
	pi := 0
	for _, p := range s.d.plans {
		if p.Role == ir.RolePast {
			shapes = append(shapes, s.caches[pi].Shape())
			axes = append(axes, p.PastAxis)
			dtypes = append(dtypes, s.caches[pi].DType())
			pi++
		}
	}
	s.resize(n, shapes, axes, dtypes)
}

func (s *Session) stepRecompute(ctx context.Context, chunk []int64) ([]float32, error) {
	s.tokens = append(s.tokens, chunk...)
	n := len(s.tokens)
	_, exe, release, err := s.acquire(ctx, shape{n, n})
	if err != nil {
		s.tokens = s.tokens[:n-len(chunk)]
		return nil, err
	}
	defer release()
	rows, err := runRecompute(exe, s.d.plans, s.tokens)
	if err != nil {
		s.tokens = s.tokens[:n-len(chunk)]
		return nil, err
	}
	s.n = n
	return rows[(n-len(chunk))*s.d.vocab:], nil
}

// runRecompute runs a plain graph on tokens and returns every position's
// logits.
func runRecompute(exe accel.Executable, plans []ir.InputPlan, tokens []int64) ([]float32, error) {
	s := &Session{d: &Decoder{plans: plans}}
	feeds := s.lmFeeds(tokens, len(tokens))
	g := exe.Graph()
	out, err := accel.RunNamed(exe, feeds)
	if err != nil {
		return nil, err
	}
	return logitRows(out[g.Outputs[0].Name]), nil
}

// lmFeeds binds the tokens, positions, token types and an attention mask
// of maskLen ones for the chunk that starts at position s.n.
func (s *Session) lmFeeds(chunk []int64, maskLen int) map[string]*ir.Tensor {
	step := len(chunk)
	feeds := map[string]*ir.Tensor{}
	for _, p := range s.d.plans {
		switch p.Role {
		case ir.RoleTokens:
			feeds[p.Input.Name] = ir.FromInt64s(ir.Shape{1, step}, chunk)
		case ir.RolePositionIDs:
			feeds[p.Input.Name] = ir.FromInt64s(ir.Shape{1, step}, positions(s.n, step))
		case ir.RoleTokenTypeIDs:
			feeds[p.Input.Name] = ir.NewTensor(ir.Int64, ir.Shape{1, step})
		case ir.RoleAttentionMask:
			m := make([]int64, maskLen)
			for i := range m {
				if i < s.n+step {
					m[i] = 1
				}
			}
			feeds[p.Input.Name] = ir.FromInt64s(ir.Shape{1, maskLen}, m)
		}
	}
	for name, t := range feeds {
		if t.DType() != s.d.inputDType(name) && s.d.inputDType(name) != ir.InvalidDType {
			feeds[name] = ir.Convert(t, s.d.inputDType(name))
		}
	}
	return feeds
}

func (d *Decoder) inputDType(name string) ir.DType {
	for _, p := range d.plans {
		if p.Input.Name == name {
			return p.Input.DType
		}
	}
	return ir.InvalidDType
}

func (d *Decoder) inputWithRole(role ir.InputRole) string {
	for _, p := range d.plans {
		if p.Role == role {
			return p.Input.Name
		}
	}
	return ""
}

func positions(first, n int) []int64 {
	p := make([]int64, n)
	for i := range p {
		p[i] = int64(first + i)
	}
	return p
}

// logitRows returns the logits [1, S, vocab] as float32.
func logitRows(t *ir.Tensor) []float32 {
	return append([]float32(nil), ir.Convert(t, ir.Float32).Float32s()...)
}

// resize gives the caches room for capacity positions along their axes,
// keeping the first s.n.
func (s *Session) resize(capacity int, shapes []ir.Shape, axes []int, dtypes []ir.DType) {
	caches := make([]*ir.Tensor, len(shapes))
	for i, sh := range shapes {
		sh = sh.Clone()
		sh[axes[i]] = capacity
		caches[i] = ir.NewTensor(dtypes[i], sh)
		if i < len(s.caches) && s.n > 0 {
			copyRows(caches[i], 0, s.caches[i], 0, s.n, axes[i])
		}
	}
	s.caches, s.capacity = caches, capacity
}

// copyRows copies count rows along axis from src (from row srcAt) into
// dst (from row dstAt); the tensors agree on every other axis.
func copyRows(dst *ir.Tensor, dstAt int, src *ir.Tensor, srcAt, count, axis int) {
	es := dst.DType().Size()
	ds, ss := dst.Shape(), src.Shape()
	outer := ds[:axis].Size()
	inner := ds[axis+1:].Size() * es
	db, sb := dst.Bytes(), src.Bytes()
	for o := range outer {
		d := (o*ds[axis] + dstAt) * inner
		s := (o*ss[axis] + srcAt) * inner
		copy(db[d:d+count*inner], sb[s:s+count*inner])
	}
}
