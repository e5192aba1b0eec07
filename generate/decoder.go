package generate

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/ir"
)

// Mode is how a Decoder reuses the work done for earlier positions.
type Mode int

const (
	// Auto picks OwnCache when the rewrite recognises the graph, else
	// Recompute; with past_key_values inputs it picks PastInputs first
	// unless the own cache is no larger (see ownCacheNoLarger). Each
	// choice is checked against Recompute first.
	Auto Mode = iota
	// PastInputs feeds the model's own past_key_values inputs and keeps
	// its present outputs.
	PastInputs
	// OwnCache rewrites the graph so that attention reads the keys and
	// values of earlier positions from caches dstune keeps (kvcache.go).
	OwnCache
	// Recompute runs the whole sequence for every new token.
	Recompute
)

var modeNames = [...]string{"auto", "past inputs", "own KV cache", "recompute"}

func (m Mode) String() string { return modeNames[m] }

// ParseMode reads a mode as the command line spells it: auto, past, own,
// recompute.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto":
		return Auto, nil
	case "past":
		return PastInputs, nil
	case "own":
		return OwnCache, nil
	case "recompute":
		return Recompute, nil
	}
	return 0, fmt.Errorf("KV cache mode %q: want auto, past, own or recompute", s)
}

// Options configure a Decoder.
type Options struct {
	Mode Mode
	// Threads is the goroutines per kernel call (0: all cores).
	Threads int
	// Context is the most positions a sequence may have; 0 finds the
	// model's limit (its position tables), at most DefaultContext.
	Context int
	// Executables bounds the forward passes running at once, and so the
	// compiled copies of each graph shape (0: GOMAXPROCS): more passes
	// than cores only take turns, each preempting the others. Others wait.
	Executables int
}

// DefaultContext bounds the context of a model whose graph does not limit
// it (rotary embeddings computed from the positions, say).
const DefaultContext = 2048

// maxChunk is the longest run of tokens fed at once; a prompt is fed in
// chunks of powers of two up to it, so a handful of shapes serve every
// prompt length.
const maxChunk = 256

// minCapacity is the smallest cache capacity; capacities are powers of two
// (and the context itself).
const minCapacity = 16

// Decoder runs a causal language model one chunk of tokens at a time. It
// compiles each graph shape once (the executables are pooled and reused);
// the model's parameters are shared by every shape, so writing them in
// place (a delta) changes what every later run computes. A Decoder is
// safe for concurrent use by many sessions.
type Decoder struct {
	model   *ir.Model
	opts    Options
	mode    Mode
	note    string // how the mode was chosen
	roles   map[string]ir.InputRole
	plans   []ir.InputPlan
	context int
	vocab   int
	logits  string // the logits output's name

	// contextNote says why the probe stopped short of the context's
	// bound, if it did.
	contextNote string

	// own cache: the decisions of the validated rewrite
	decisions []string
	// the rewrite for the smallest capacity, made once: Auto's choice and
	// the own cache's set-up both read it
	firstRewrite    *cachedGraph
	firstRewriteErr error
	// past inputs: each past input's present output and past axis
	presents map[string]string

	mu      sync.Mutex
	pools   map[shape]*pool
	running chan struct{} // a slot per pass running
}

// shape keys a compiled graph: capacity (cache positions, or the whole
// sequence length for Recompute) and step (tokens fed at once).
type shape struct{ capacity, step int }

// New prepares a decoder for model. With Auto it checks each faster mode
// against Recompute on a short sequence and says in Note why it settled
// where it did.
func New(model *ir.Model, opts Options) (*Decoder, error) {
	if opts.Executables <= 0 {
		opts.Executables = runtime.GOMAXPROCS(0)
	}
	plans, err := model.InputPlans()
	if err != nil {
		return nil, err
	}
	d := &Decoder{model: model, opts: opts, plans: plans, roles: map[string]ir.InputRole{}, pools: map[shape]*pool{},
		running: make(chan struct{}, opts.Executables)}
	hasPast := false
	for _, p := range plans {
		d.roles[p.Input.Name] = p.Role
		switch p.Role {
		case ir.RoleOther:
			return nil, fmt.Errorf("generate: the model's input %q is not one a language model's generation can feed (tokens, attention mask, position ids, token types, past key/values)", p.Input.Name)
		case ir.RolePast:
			hasPast = true
		}
	}
	if d.tokenInput() == "" {
		return nil, fmt.Errorf("generate: the model has no integer token input")
	}
	if len(model.Outputs) == 0 {
		return nil, fmt.Errorf("generate: the model has no outputs")
	}
	d.logits = model.Outputs[0]
	if err := d.probeVocab(); err != nil {
		return nil, err
	}

	try := func(m Mode) error {
		d.mode = m
		if err := d.setUp(); err != nil {
			return err
		}
		if m == Recompute {
			return nil
		}
		return d.validate()
	}
	switch opts.Mode {
	case Auto:
		var reasons []string
		why := "" // what the note adds: why Auto settled where it did
		candidates := []Mode{OwnCache, Recompute}
		ownFirst := false
		if hasPast {
			candidates = []Mode{PastInputs, OwnCache, Recompute}
			if ownFirst = d.ownCacheNoLarger(); ownFirst {
				candidates = []Mode{OwnCache, PastInputs, Recompute}
			}
		}
		for _, m := range candidates {
			d.reset()
			err := try(m)
			if err == nil {
				break
			}
			if m == Recompute {
				return nil, err
			}
			reasons = append(reasons, fmt.Sprintf("%s: %v", m, err))
		}
		switch {
		case d.mode == OwnCache && ownFirst:
			why = ", not the export's past inputs: no larger, and a token's rows are written into it rather than the whole past copied"
		case len(reasons) > 0:
			why = strings.Join(reasons, "; ")
		}
		d.note = d.modeNote(why)
	default:
		if opts.Mode == PastInputs && !hasPast {
			return nil, fmt.Errorf("generate: the model has no past_key_values inputs")
		}
		if err := try(opts.Mode); err != nil {
			return nil, fmt.Errorf("generate: %s: %w", opts.Mode, err)
		}
	}
	if d.note == "" {
		d.note = d.modeNote("")
	}
	if d.contextNote != "" {
		d.note += "; " + d.contextNote
	}
	return d, nil
}

// ownCacheNoLarger reports whether the cache OwnCache keeps takes no
// more bytes a position than the export's past inputs: Auto then prefers
// it, since a step writes its rows into it where PastInputs copies the
// whole past through the graph's Concat (three times the time a token at 2,000
// positions). It is larger where the rewrite caches keys expanded to
// every query head (grouped keys written in a way groupedKeysOf does not
// match): PastInputs stays first there.
func (d *Decoder) ownCacheNoLarger() bool {
	cg, err := d.rewriteFirst()
	if err != nil {
		return false
	}
	past := d.pastBytes()
	return past > 0 && slotBytes(cg.Slots) <= past
}

// slotBytes is how many bytes a position takes in the own cache's slots.
func slotBytes(slots []cacheSlot) int {
	n := 0
	for _, sl := range slots {
		n += sl.Shape.Size() / sl.Shape[sl.Axis] * sl.DType.Size()
	}
	return n
}

// pastBytes is how many bytes a position takes in the export's past
// inputs (0: none, or one without a declared shape to weigh).
func (d *Decoder) pastBytes() int {
	past := 0
	for _, p := range d.plans {
		if p.Role != ir.RolePast {
			continue
		}
		if len(p.Input.Dims) == 0 {
			return 0
		}
		past += pastShape(p, 1).Size() * p.Input.DType.Size()
	}
	return past
}

// rewriteFirst is the rewrite for the smallest capacity, made once.
func (d *Decoder) rewriteFirst() (*cachedGraph, error) {
	if d.firstRewrite == nil && d.firstRewriteErr == nil {
		d.firstRewrite, d.firstRewriteErr = d.rewrite(minCapacity, 1)
	}
	return d.firstRewrite, d.firstRewriteErr
}

// modeNote says how the decoder reuses earlier positions; why, when not
// empty, is why Auto settled there: the faster modes' failures (in the
// brackets), or a remark starting with a comma (after them).
func (d *Decoder) modeNote(why string) string {
	inside, after := "", ""
	switch {
	case strings.HasPrefix(why, ","):
		after = why
	case why != "":
		inside = "; " + why
	}
	// The bytes a position takes, which with the context say the cache's
	// size.
	perPosition := func(n int) string {
		if n <= 0 {
			return ""
		}
		return fmt.Sprintf(", %s a position", sysmem.Format(int64(n)))
	}
	switch d.mode {
	case PastInputs:
		return fmt.Sprintf("the model's own KV cache (%d past inputs%s%s)%s", len(d.presents), perPosition(d.pastBytes()), inside, after)
	case OwnCache:
		slots := d.cacheSlots()
		return fmt.Sprintf("a KV cache dstune keeps (%d cached attention operands%s%s)%s", len(slots), perPosition(slotBytes(slots)), inside, after)
	}
	if why == "" {
		why = "as asked"
	}
	return "recomputing the whole sequence for every token (" + why + ")"
}

// Mode is the mode the decoder runs in.
func (d *Decoder) Mode() Mode { return d.mode }

// Note says how the decoder reuses earlier positions and, after a
// fallback, why the faster modes were not used.
func (d *Decoder) Note() string { return d.note }

// Context is the most positions a sequence may hold.
func (d *Decoder) Context() int { return d.context }

// Executables is the most forward passes that run at once.
func (d *Decoder) Executables() int { return d.opts.Executables }

// Vocab is the number of logits per position.
func (d *Decoder) Vocab() int { return d.vocab }

// Model is the model the decoder runs.
func (d *Decoder) Model() *ir.Model { return d.model }

func (d *Decoder) tokenInput() string {
	for _, p := range d.plans {
		if p.Role == ir.RoleTokens {
			return p.Input.Name
		}
	}
	return ""
}

// cacheSlots are the own cache's slots (nil when the first program
// cannot be made).
func (d *Decoder) cacheSlots() []cacheSlot {
	p, err := d.program(shape{d.capacityFor(1, 1), 1})
	if err != nil {
		return nil
	}
	return p.cached.Slots
}

// reset drops what an earlier mode set up.
func (d *Decoder) reset() {
	d.closePools()
	d.decisions, d.presents, d.note, d.contextNote = nil, nil, "", ""
}

// Close releases the compiled executables.
func (d *Decoder) Close() { d.closePools() }

func (d *Decoder) closePools() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.pools {
		p.close()
	}
	d.pools = map[shape]*pool{}
}

// probeVocab reads the vocabulary from the logits of a one-token graph.
func (d *Decoder) probeVocab() error {
	g, err := d.recomputeGraph(1)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	lg := g.Outputs[0].Value
	if len(lg.Shape) != 3 || !lg.DType.IsFloat() {
		return fmt.Errorf("generate: the model's first output %q is %v, not logits [batch, sequence, vocab]", d.logits, lg.Type)
	}
	d.vocab = lg.Shape[2]
	return nil
}

// setUp finds the context and prepares the mode's bookkeeping.
func (d *Decoder) setUp() error {
	limit := d.opts.Context
	if limit <= 0 {
		limit = DefaultContext
	}
	switch d.mode {
	case PastInputs:
		d.presents = map[string]string{}
		outs := d.model.Outputs[1:]
		var pasts []string
		for _, p := range d.plans {
			if p.Role == ir.RolePast {
				pasts = append(pasts, p.Input.Name)
			}
		}
		for i, name := range pasts {
			want := strings.Replace(name, "past_key_values", "present", 1)
			switch {
			case containsString(outs, want):
				d.presents[name] = want
			case len(outs) == len(pasts):
				d.presents[name] = outs[i]
			default:
				return fmt.Errorf("no present output for the past input %q", name)
			}
		}
	case OwnCache:
		cg, err := d.rewriteFirst()
		if err != nil {
			return err
		}
		d.decisions = cg.Decisions
	}
	table, err := d.positionTable()
	if err != nil {
		return err
	}
	if d.opts.Context > 0 {
		if limit == 1 && d.mode != Recompute {
			// (Nor could the rewrite tell a position axis of size 1
			// from the others.)
			return errors.New("a context of 1 position leaves no earlier position to reuse")
		}
		if table.positions > 0 && limit > table.positions {
			return fmt.Errorf("%w: the model does not take %d positions (%s)", errBeyondContext, limit, table)
		}
		if err := d.fitErr(limit); err != nil {
			return fmt.Errorf("%w: the model does not take %d positions: %w", errBeyondContext, limit, err)
		}
		d.context = limit
		return nil
	}
	if table.positions > 0 {
		limit = min(limit, table.positions)
	}
	d.context, d.contextNote = d.probeContext(limit)
	if d.context < 2 {
		return fmt.Errorf("the model takes fewer than 2 positions")
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fitErr says why the mode's graph does not fit n positions, or is nil
// when it can be built for them and reads no table past its end where the
// positions it reads are known as it is built (GPT-2's wpe, read at a
// Range of the sequence: the graph builds for any length, and fails as it
// runs).
func (d *Decoder) fitErr(n int) error {
	var g *ir.Graph
	var err error
	if d.mode == PastInputs {
		g, err = d.pastGraph(n-1, 1)
	} else {
		g, err = d.recomputeGraph(n)
	}
	if err != nil {
		return err
	}
	if !constantLookupsFit(g) {
		return errors.New("a lookup of a constant position reads past its table")
	}
	if d.mode == OwnCache {
		_, err = rewriteCached(g, d.roles, n, 1) // on the graph just built, as rewrite would
	}
	return err
}

// constantLookupsFit reports whether every Gather of g whose indices are
// constants reads inside its data.
func constantLookupsFit(g *ir.Graph) bool {
	for _, n := range g.Nodes {
		op, ok := n.Op.(*ir.Gather)
		if !ok {
			continue
		}
		idx := n.Inputs[1]
		if idx.Kind != ir.ConstValue || idx.Const == nil || (idx.DType != ir.Int64 && idx.DType != ir.Int32) {
			continue
		}
		rows := int64(n.Inputs[0].Shape[op.Axis])
		for i := range idx.Const.Len() {
			if x := idx.Const.Int64At(i); x < -rows || x >= rows {
				return false
			}
		}
	}
	return true
}

// positionTableBound is what the position tables a position_ids input
// indexes allow.
type positionTableBound struct {
	positions int // the most positions they take (0: no table)
	name      string
	rows      int
	offset    int64 // added to the positions before the lookup
}

func (b positionTableBound) String() string {
	if b.offset == 0 {
		return fmt.Sprintf("its position table %q has %d rows", b.name, b.rows)
	}
	return fmt.Sprintf("its position table %q has %d rows, read at position_ids%+d", b.name, b.rows, b.offset)
}

// positionTable finds the tables the position ids input indexes (GPT-2's
// wpe read with a Gather of position_ids, as exports with past feed them;
// OPT's, read at the positions plus 2; a rotary cache stored whole): a
// bound on the context that no graph shape shows, the index being known
// only as the sequence runs. A table is a parameter or a constant (an
// initializer, a Constant node, one folded from them) the same at two
// sequence lengths, not a value computed for the length (a rotary cache
// cut to the sequence, which would bound the context by the probe's
// length). A table of no rows, or one the positions miss from the
// first, is an error.
func (d *Decoder) positionTable() (positionTableBound, error) {
	name := ""
	for _, p := range d.plans {
		if p.Role == ir.RolePositionIDs {
			name = p.Input.Name
		}
	}
	if name == "" {
		return positionTableBound{}, nil
	}
	graph := func(i int) (*ir.Graph, error) {
		if d.mode == PastInputs {
			return d.pastGraph(i, 1)
		}
		return d.recomputeGraph(i + 1)
	}
	g, err := graph(1)
	if err != nil {
		return positionTableBound{}, nil
	}
	lookups := positionLookups(g, name)
	var again []positionLookup // at one position more
	if g2, err := graph(2); err == nil {
		again = positionLookups(g2, name)
	}
	var b positionTableBound
	for i, l := range lookups {
		switch {
		case l.table.Kind == ir.ParamValue:
		case l.table.Kind == ir.ConstValue && len(again) == len(lookups) && again[i].rows == l.rows:
		default:
			continue
		}
		t := positionTableBound{positions: int(max(int64(l.rows)-l.offset, 0)), name: l.table.Name, rows: l.rows, offset: l.offset}
		if l.rows == 0 || l.offset < -int64(l.rows) || t.positions < 2 {
			return positionTableBound{}, fmt.Errorf("the model takes fewer than 2 positions: %s", t)
		}
		if b.positions == 0 || t.positions < b.positions {
			b = t
		}
	}
	return b, nil
}

// positionLookup is a Gather that reads a table at the position ids plus
// a constant offset.
type positionLookup struct {
	table  *ir.Value
	rows   int // the table's length along the gathered axis
	offset int64
}

// positionLookups finds the Gathers of g whose indices are the input
// called input, recast, reshaped or offset by a constant (Add or Sub of
// one integer, broadcast), in the order of g's nodes.
func positionLookups(g *ir.Graph, input string) []positionLookup {
	offsets := map[*ir.Value]int64{} // the values that are the positions plus an offset
	for _, in := range g.Inputs {
		if in.Name == input {
			offsets[in] = 0
		}
	}
	var out []positionLookup
	for _, n := range g.Nodes {
		switch op := n.Op.(type) {
		case *ir.Cast, *ir.Reshape, *ir.Copy:
			if off, ok := offsets[n.Inputs[0]]; ok {
				offsets[n.Outputs[0]] = off
			}
		case *ir.Binary:
			x, c := n.Inputs[0], n.Inputs[1]
			off, ok := offsets[x]
			if !ok && op.Fn == ir.Add {
				x, c = c, x
				off, ok = offsets[x]
			}
			k, isConst := uniformInt(c)
			if !ok || !isConst || (op.Fn != ir.Add && op.Fn != ir.Sub) {
				continue
			}
			if op.Fn == ir.Sub {
				k = -k
			}
			offsets[n.Outputs[0]] = off + k
		case *ir.Gather:
			if off, ok := offsets[n.Inputs[1]]; ok {
				table := n.Inputs[0]
				out = append(out, positionLookup{table: table, rows: table.Shape[op.Axis], offset: off})
			}
		}
	}
	return out
}

// maxOffset bounds the offsets positionLookups follows, far from
// overflowing as they add up.
const maxOffset = 1 << 40

// uniformInt is the element of v when v is an integer constant whose
// elements are all one value, of magnitude under maxOffset.
func uniformInt(v *ir.Value) (int64, bool) {
	if v.Kind != ir.ConstValue || v.Const == nil || v.Const.Len() == 0 || !v.DType.IsInt() {
		return 0, false
	}
	k := v.Const.Int64At(0)
	for i := range v.Const.Len() {
		if v.Const.Int64At(i) != k {
			return 0, false
		}
	}
	if k <= -maxOffset || k >= maxOffset {
		return 0, false
	}
	return k, true
}

// probeBudget bounds what building the graph for a length may allocate
// more than building it for the shortest length does: 1/16 of the memory
// limit (ir.MemoryLimit) and at most 512 MiB, far above what masks and
// position tables take (GPT-2's and Llama's exports: tens of MiB at 2048
// positions). Beyond it the probe stops, so that a graph whose constants
// grow with the sequence (a mask of the sequence squared, or worse,
// folded at import) neither exhausts the memory nor takes minutes to
// probe.
func probeBudget() int64 {
	b := int64(512 << 20)
	if m := ir.MemoryLimit(); m > 0 {
		b = min(b, m/16)
	}
	return b
}

// probeCollect is the allocation after which a probe collects the
// garbage, so that the next probe reuses the memory.
const probeCollect = 64 << 20

// probeContext finds the most positions (up to limit) the graph can be
// built for within the probe's budget: doubling from the smallest
// capacity, then bisecting. The note says when the budget ended it. What
// a probe allocates is read from the process's allocation count, so other
// goroutines allocating meanwhile can only end the probe sooner; the
// garbage of a large probe is collected before the next.
func (d *Decoder) probeContext(limit int) (int, string) {
	budget := probeBudget()
	var base int64 // the first probe's allocation
	first := true
	overBudget := map[int]int64{} // the lengths refused for the budget, and what they took
	fits := func(n int) bool {
		before := allocatedBytes()
		ok := d.fitErr(n) == nil
		spent := int64(allocatedBytes() - before)
		if spent > probeCollect {
			runtime.GC()
		}
		if first {
			base, first = spent, false
		}
		if ok && spent-base > budget {
			overBudget[n] = spent - base
			return false
		}
		return ok
	}
	good, bad := 0, limit+1
	for n := minCapacity; ; n *= 2 {
		n = min(n, limit)
		if !fits(n) {
			bad = n
			break
		}
		good = n
		if n == limit {
			return n, ""
		}
	}
	for bad-good > 1 {
		if _, over := overBudget[bad]; over && bad-good <= bad/16 {
			break // close enough: the budget is no sharp limit
		}
		mid := (good + bad) / 2
		if fits(mid) {
			good = mid
		} else {
			bad = mid
		}
	}
	spent, ok := overBudget[bad]
	if !ok {
		return good, ""
	}
	note := fmt.Sprintf("context %d positions: building the graph for %d takes %s more than for %d, beyond the probe's budget of %s",
		good, bad, sysmem.Format(spent), min(minCapacity, limit), sysmem.Format(budget))
	if m := ir.MemoryLimit(); m > 0 {
		note += fmt.Sprintf(" (the memory limit is %s)", sysmem.Format(m))
	}
	return good, note
}

// allocatedBytes is the bytes this process has allocated on the heap so
// far.
func allocatedBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// capacityFor is the cache capacity for a sequence of n positions fed
// step at a time: a power of two, or the context.
func (d *Decoder) capacityFor(n, step int) int {
	c := max(minCapacity, 1<<bits.Len(uint(n-1)))
	if d.mode == PastInputs {
		// The past and the new tokens together must fit the context.
		return min(c, d.context-step)
	}
	return min(c, d.context)
}

// ---------------------------------------------------------------- graphs

func (d *Decoder) recomputeGraph(seq int) (*ir.Graph, error) {
	b, _, err := d.model.LMBindings(1, seq)
	if err != nil {
		return nil, err
	}
	return d.model.Specialize(b)
}

func (d *Decoder) rewrite(capacity, step int) (*cachedGraph, error) {
	g, err := d.recomputeGraph(capacity)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBeyondContext, err)
	}
	return rewriteCached(g, d.roles, capacity, step)
}

// pastGraph specializes a with-past decoder to past positions and step
// new tokens; a merged decoder's switch selects the branch with past.
func (d *Decoder) pastGraph(past, step int) (*ir.Graph, error) {
	b := ir.Bindings{Shapes: map[string]ir.Shape{}, Values: map[string]*ir.Tensor{}}
	for _, p := range d.plans {
		in := p.Input
		switch p.Role {
		case ir.RoleTokens, ir.RolePositionIDs, ir.RoleTokenTypeIDs:
			b.Shapes[in.Name] = ir.Shape{1, step}
		case ir.RoleAttentionMask:
			b.Shapes[in.Name] = ir.Shape{1, past + step}
		case ir.RolePast:
			b.Shapes[in.Name] = pastShape(p, past)
		case ir.RoleCacheBranch:
			t := ir.NewTensor(ir.Bool, ir.Shape{})
			if in.Dims != nil {
				t = ir.NewTensor(ir.Bool, onesShape(len(in.Dims)))
			}
			t.Bools()[0] = true
			b.Values[in.Name] = t
		}
	}
	return d.model.Specialize(b)
}

func pastShape(p ir.InputPlan, past int) ir.Shape {
	s := make(ir.Shape, len(p.Input.Dims))
	for i, n := range p.Input.Dims {
		switch {
		case i == p.PastAxis:
			s[i] = past
		case n >= 0:
			s[i] = n
		default:
			s[i] = 1 // the batch
		}
	}
	return s
}

func onesShape(rank int) ir.Shape {
	s := make(ir.Shape, rank)
	for i := range s {
		s[i] = 1
	}
	return s
}

// program is one graph shape of the decoder's mode, built once.
type program struct {
	g      *ir.Graph
	cached *cachedGraph // OwnCache
}

func (d *Decoder) buildProgram(s shape) (*program, error) {
	switch d.mode {
	case OwnCache:
		cg, err := d.rewrite(s.capacity, s.step)
		if err != nil {
			return nil, err
		}
		if !equalStrings(cg.Decisions, d.decisions) {
			// Rewritten differently from the validated graph: check this
			// capacity before use.
			if err := d.validateAt(s.capacity); err != nil {
				return nil, err
			}
		}
		return &program{g: cg.Graph, cached: cg}, nil
	case PastInputs:
		g, err := d.pastGraph(s.capacity, s.step)
		if err != nil {
			return nil, err
		}
		return &program{g: g}, nil
	}
	g, err := d.recomputeGraph(s.capacity)
	if err != nil {
		return nil, err
	}
	return &program{g: g}, nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		// The node numbers and capacities differ between capacities;
		// compare what was done.
		if stripNumbers(a[i]) != stripNumbers(b[i]) {
			return false
		}
	}
	return true
}

// stripNumbers replaces each run of digits by one '#'.
func stripNumbers(s string) string {
	var b strings.Builder
	inNumber := false
	for _, r := range s {
		digit := r >= '0' && r <= '9'
		switch {
		case !digit:
			b.WriteRune(r)
		case !inNumber:
			b.WriteByte('#')
		}
		inNumber = digit
	}
	return b.String()
}

// ---------------------------------------------------------------- pools

// pool holds the compiled copies of one program; slots bounds them.
type pool struct {
	once  sync.Once
	prog  *program
	err   error
	slots chan struct{}
	mu    sync.Mutex
	free  []accel.Executable
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.free {
		e.Close()
	}
	p.free = nil
}

func (d *Decoder) poolFor(s shape) *pool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.pools[s]
	if !ok {
		p = &pool{slots: make(chan struct{}, d.opts.Executables)}
		d.pools[s] = p
	}
	return p
}

func (d *Decoder) program(s shape) (*program, error) {
	p := d.poolFor(s)
	p.once.Do(func() { p.prog, p.err = d.buildProgram(s) })
	return p.prog, p.err
}

// acquire returns an executable of shape s for the caller's exclusive use
// until it calls release.
func (d *Decoder) acquire(ctx context.Context, s shape) (*program, accel.Executable, func(), error) {
	prog, err := d.program(s)
	if err != nil {
		return nil, nil, nil, err
	}
	p := d.poolFor(s)
	select {
	case d.running <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, nil, ctx.Err()
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		<-d.running
		return nil, nil, nil, ctx.Err()
	}
	p.mu.Lock()
	var exe accel.Executable
	if n := len(p.free); n > 0 {
		exe, p.free = p.free[n-1], p.free[:n-1]
	}
	p.mu.Unlock()
	if exe == nil {
		exe, err = d.compile(prog)
		if err != nil {
			<-p.slots
			<-d.running
			return nil, nil, nil, err
		}
	}
	release := func() {
		p.mu.Lock()
		p.free = append(p.free, exe)
		p.mu.Unlock()
		<-p.slots
		<-d.running
	}
	return prog, exe, release, nil
}

// acquireUnpooled builds and compiles a program of the own-cache mode
// outside the pools (validation while a pool's program is being built).
func (d *Decoder) acquireUnpooled(_ context.Context, s shape) (*program, accel.Executable, func(), error) {
	cg, err := d.rewrite(s.capacity, s.step)
	if err != nil {
		return nil, nil, nil, err
	}
	prog := &program{g: cg.Graph, cached: cg}
	exe, err := d.compile(prog)
	if err != nil {
		return nil, nil, nil, err
	}
	return prog, exe, func() { exe.Close() }, nil
}

// compile compiles a program on the decoder's threads. An own-cache
// program's runs may write the step's rows into the session's caches
// where they lie (accel.Options.UpdateInputs) rather than copy them: the
// session writes those rows there after the step anyway, and a failed
// step's rows lie past its positions, masked until a later step writes
// them again.
func (d *Decoder) compile(prog *program) (accel.Executable, error) {
	opts := accel.Options{Threads: d.opts.Threads}
	if prog.cached != nil {
		for i := range prog.cached.Slots {
			opts.UpdateInputs = append(opts.UpdateInputs, cacheIn(i))
		}
	}
	return cpu.Compile(prog.g, opts)
}

// ---------------------------------------------------------------- validation

// validate checks the mode against Recompute on a short sequence: a chunk
// of four tokens, then two single tokens.
func (d *Decoder) validate() error {
	return d.validateAt(0)
}

// validationTokens is a fixed pseudo-random sequence of token ids.
func (d *Decoder) validationTokens(n int) []int64 {
	t := make([]int64, n)
	x := uint64(0x9E3779B97F4A7C15)
	for i := range t {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		t[i] = int64(x % uint64(d.vocab))
	}
	return t
}

// validateAt runs the check with caches of the given capacity (0: the
// smallest one).
func (d *Decoder) validateAt(capacity int) error {
	const n = 6
	if d.context < n {
		return nil
	}
	tokens := d.validationTokens(n)
	g, err := d.recomputeGraph(n)
	if err != nil {
		return err
	}
	exe, err := cpu.Compile(g, accel.Options{Threads: d.opts.Threads})
	if err != nil {
		return err
	}
	defer exe.Close()
	want, err := runRecompute(exe, d.plans, tokens)
	if err != nil {
		return err
	}
	s := d.NewSession()
	if capacity > 0 {
		s.fixedCapacity = capacity
		s.acquire = d.acquireUnpooled
	}
	var got []float32
	for _, chunk := range [][]int64{tokens[:4], tokens[4:5], tokens[5:6]} {
		rows, err := s.step(context.Background(), chunk)
		if err != nil {
			return err
		}
		got = append(got, rows...)
	}
	maxAbs, scale := 0.0, 0.0
	for i := range want {
		maxAbs = max(maxAbs, abs64(float64(got[i])-float64(want[i])))
		scale = max(scale, abs64(float64(want[i])))
	}
	tol := 1e-4 + 1e-3*scale
	if g.Outputs[0].Value.DType != ir.Float32 {
		tol = 1e-2 + 3e-2*scale
	}
	if !(maxAbs <= tol) {
		return fmt.Errorf("its logits differ from recomputing the sequence by up to %.3g (tolerance %.3g)", maxAbs, tol)
	}
	return nil
}

func abs64(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// errContext is returned when a sequence would exceed the context.
var errContext = errors.New("the sequence exceeds the model's context")
