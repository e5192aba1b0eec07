package generate

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"strings"
	"sync"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/ir"
)

// Mode is how a Decoder reuses the work done for earlier positions.
type Mode int

const (
	// Auto picks PastInputs when the model has past_key_values inputs,
	// else OwnCache when the rewrite recognises the graph, else
	// Recompute; each choice is checked against Recompute first.
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
const maxChunk = 64

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

	// own cache: the decisions of the validated rewrite
	decisions []string
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
		candidates := []Mode{OwnCache, Recompute}
		if hasPast {
			candidates = []Mode{PastInputs, OwnCache, Recompute}
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
		if d.mode == Recompute {
			d.note = "recomputing the whole sequence for every token (" + strings.Join(reasons, "; ") + ")"
		}
	default:
		if opts.Mode == PastInputs && !hasPast {
			return nil, fmt.Errorf("generate: the model has no past_key_values inputs")
		}
		if err := try(opts.Mode); err != nil {
			return nil, fmt.Errorf("generate: %s: %w", opts.Mode, err)
		}
	}
	if d.note == "" {
		switch d.mode {
		case PastInputs:
			d.note = fmt.Sprintf("the model's own KV cache (%d past inputs)", len(d.presents))
		case OwnCache:
			d.note = fmt.Sprintf("a KV cache dstune keeps (%d cached attention operands)", d.cacheSlots())
		case Recompute:
			d.note = "recomputing the whole sequence for every token (as asked)"
		}
	}
	return d, nil
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

func (d *Decoder) cacheSlots() int {
	p, err := d.program(shape{d.capacityFor(1, 1), 1})
	if err != nil {
		return 0
	}
	return len(p.cached.Slots)
}

// reset drops what an earlier mode set up.
func (d *Decoder) reset() {
	d.closePools()
	d.decisions, d.presents, d.note = nil, nil, ""
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
		cg, err := d.rewrite(minCapacity, 1)
		if err != nil {
			return err
		}
		d.decisions = cg.Decisions
	}
	rows := d.positionTableRows()
	if d.opts.Context > 0 {
		if rows > 0 && limit > rows {
			return fmt.Errorf("%w: the model does not take %d positions (its position table has %d rows)", errBeyondContext, limit, rows)
		}
		if !d.fits(limit) {
			return fmt.Errorf("%w: the model does not take %d positions", errBeyondContext, limit)
		}
		d.context = limit
		return nil
	}
	if rows > 0 {
		limit = min(limit, rows)
	}
	d.context = d.probeContext(limit)
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

// fits reports whether the mode's graph can be built for n positions and
// reads no table past its end where the positions it reads are known as
// it is built (GPT-2's wpe, read at a Range of the sequence: the graph
// builds for any length, and fails as it runs).
func (d *Decoder) fits(n int) bool {
	var g *ir.Graph
	var err error
	if d.mode == PastInputs {
		g, err = d.pastGraph(n-1, 1)
	} else {
		g, err = d.recomputeGraph(n)
	}
	if err != nil || !constantLookupsFit(g) {
		return false
	}
	if d.mode == OwnCache {
		_, err = rewriteCached(g, d.roles, n, 1) // on the graph just built, as rewrite would
	}
	return err == nil
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

// positionTableRows is the fewest rows of a weight table the position ids
// input indexes (GPT-2's wpe read with a Gather of position_ids, as
// exports with past feed them; a rotary cache stored whole): a bound on
// the context that no graph shape shows, the index being known only as
// the sequence runs (0: none).
func (d *Decoder) positionTableRows() int {
	name := ""
	for _, p := range d.plans {
		if p.Role == ir.RolePositionIDs {
			name = p.Input.Name
		}
	}
	if name == "" {
		return 0
	}
	var g *ir.Graph
	var err error
	if d.mode == PastInputs {
		g, err = d.pastGraph(1, 1)
	} else {
		g, err = d.recomputeGraph(2)
	}
	if err != nil {
		return 0
	}
	positions := map[*ir.Value]bool{} // the input and values that are it, recast or reshaped
	for _, in := range g.Inputs {
		positions[in] = in.Name == name
	}
	rows := 0
	for _, n := range g.Nodes {
		switch op := n.Op.(type) {
		case *ir.Cast, *ir.Reshape, *ir.Copy:
			if positions[n.Inputs[0]] {
				positions[n.Outputs[0]] = true
			}
		case *ir.Gather:
			// A weight of the model, not a value computed for this
			// length (a rotary cache cut to the sequence).
			if table := n.Inputs[0]; positions[n.Inputs[1]] && table.Kind == ir.ParamValue {
				if r := table.Shape[op.Axis]; rows == 0 || r < rows {
					rows = r
				}
			}
		}
	}
	return rows
}

// probeContext finds the most positions (up to limit) the graph can be
// built for: doubling from the smallest capacity, then bisecting.
func (d *Decoder) probeContext(limit int) int {
	good, bad := 0, limit+1
	for n := minCapacity; ; n *= 2 {
		n = min(n, limit)
		if !d.fits(n) {
			bad = n
			break
		}
		good = n
		if n == limit {
			return n
		}
	}
	for bad-good > 1 {
		mid := (good + bad) / 2
		if d.fits(mid) {
			good = mid
		} else {
			bad = mid
		}
	}
	return good
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

func stripNumbers(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return '#'
		}
		return r
	}, s)
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
		exe, err = cpu.Compile(prog.g, accel.Options{Threads: d.opts.Threads})
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
	exe, err := cpu.Compile(cg.Graph, accel.Options{Threads: d.opts.Threads})
	if err != nil {
		return nil, nil, nil, err
	}
	return &program{g: cg.Graph, cached: cg}, exe, func() { exe.Close() }, nil
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
