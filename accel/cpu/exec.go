package cpu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

func init() {
	accel.Register("cpu", func(accel.Settings) (accel.Backend, error) { return New(), nil })
}

// Backend is the CPU backend.
type Backend struct{}

// New returns the CPU backend.
func New() *Backend { return &Backend{} }

// Name is "cpu".
func (b *Backend) Name() string { return "cpu" }

// kernel is one compiled step: its tensors are bound at compile time, so
// running it allocates nothing (the reference fallback excepted).
type kernel interface {
	run() error
}

// Executable is a graph compiled for the CPU: a memory plan (one arena,
// buffers shared between values whose lifetimes do not overlap, reshapes
// as views) and a kernel per node with its tensors bound. Every IR op has
// at least the reference kernel, and import has already rejected dtypes an
// op does not take, so compiling a valid graph cannot fail on an op. An
// Executable is not safe for concurrent use.
type Executable struct {
	g       *ir.Graph
	threads int
	arena   []byte
	dead    [][]byte // the arena outside the outputs (dropDead)
	dropped [][]byte // the parts of dead that dropDead dropped

	inputs []*ir.Tensor // arena storage the caller's inputs are copied into
	// borrowers lists, per input, the kernels that read the caller's
	// tensor itself (nil: the input is copied into inputs[i]).
	borrowers [][]borrowedRead
	outputs   []*ir.Tensor // what Run returns
	steps     []step
	params    map[string]*ir.Param
	closed    bool

	// ArenaBytes is the size of the memory plan's arena; ValueBytes the
	// sum of the sizes of the values placed in it (what they would take
	// without sharing).
	ArenaBytes, ValueBytes int
}

type step struct {
	node   *ir.Node
	k      kernel
	folded []*ir.Node // nodes run inside this one (a product's epilogue)
}

var _ accel.Executable = (*Executable)(nil)

// Compile plans memory and picks a kernel for every node of g.
func (b *Backend) Compile(g *ir.Graph, opts accel.Options) (accel.Executable, error) {
	return Compile(g, opts)
}

// Compile is Backend.Compile returning the concrete type.
func Compile(g *ir.Graph, opts accel.Options) (*Executable, error) {
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = kernels.DefaultThreads()
	}
	precision, err := accel.ParsePrecision(string(opts.Precision))
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	c := &compiler{g: g, threads: threads, precision: precision, maxMemory: opts.MaxMemory, updates: map[string]bool{}}
	for _, name := range opts.UpdateInputs {
		c.updates[name] = true
	}
	return c.compile()
}

type compiler struct {
	g         *ir.Graph
	threads   int
	precision accel.Precision
	maxMemory int64           // accel.Options.MaxMemory
	updates   map[string]bool // accel.Options.UpdateInputs
	// bf16 marks the products that take bfloat16 operands (precision.go).
	bf16 map[*ir.Node]bool

	uses    map[*ir.Value]int  // node inputs reading the value, plus graph outputs
	outputs map[*ir.Value]bool // the graph's outputs
	skip    map[*ir.Node]bool  // nodes folded into a consumer (a transpose into a MatMul)
	fused   map[*ir.Node]fusion
	aliasOf map[*ir.Value]*ir.Value // reshape and in-place outputs: the value whose bytes they view
	tensors map[*ir.Value]*ir.Tensor
	conv    convScratch // the im2col buffer of the convolutions (conv.go)
}

// fusion records MatMul operands read through a transpose: the value
// read instead of the node's input and the transpose's permutation (nil
// for an operand read as it is); and a transpose of the product written
// in its place: the transpose's output and permutation (nil: none).
//
// A product may also take over an Add of a bias row and an activation of
// the sum (compiler.fuseEpilogues): it then writes the sum (out, permOut
// nil) and the activation's output (actOut), reading bias too.
type fusion struct {
	a, b         *ir.Value
	permA, permB []int
	out          *ir.Value
	permOut      []int
	bias, actOut *ir.Value
	act          ir.UnaryFn
	folded       []*ir.Node // the Add and the activation, in order
}

// compile analyzes the graph (uses, fused transposes, reshape views),
// plans the arena, and emits a kernel for every node on the planned
// tensors.
func (c *compiler) compile() (*Executable, error) {
	active := c.analyze()
	plan := c.planSlots(active)
	if c.maxMemory > 0 && int64(plan.total) > c.maxMemory {
		return nil, fmt.Errorf("cpu: %w", &accel.MemoryError{Need: int64(plan.total), Limit: c.maxMemory})
	}
	e := &Executable{g: c.g, threads: c.threads, arena: ir.AlignedBytes(plan.total), params: map[string]*ir.Param{},
		ArenaBytes: plan.total, ValueBytes: plan.valueBytes}
	for _, p := range c.g.Params {
		e.params[p.Name] = p
	}
	if err := c.emit(e, plan, active); err != nil {
		return nil, err
	}
	return e, nil
}

// analyze counts every value's uses, folds transposes into the MatMuls
// they feed, records reshapes as views of their input, and returns the
// nodes that run.
func (c *compiler) analyze() []*ir.Node {
	g := c.g
	c.uses = map[*ir.Value]int{}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			if v != nil {
				c.uses[v]++
			}
		}
	}
	c.outputs = map[*ir.Value]bool{}
	for _, o := range g.Outputs {
		c.uses[o.Value]++
		c.outputs[o.Value] = true
	}
	c.fuseTransposes()
	c.fuseEpilogues()
	c.markBF16Products()
	c.aliasOf = map[*ir.Value]*ir.Value{}
	var active []*ir.Node
	for _, n := range g.Nodes {
		if c.skip[n] {
			continue
		}
		active = append(active, n)
		if _, ok := n.Op.(*ir.Reshape); ok {
			c.aliasOf[n.Outputs[0]] = n.Inputs[0]
		}
	}
	return active
}

// root is the value whose bytes v views (v itself when it is no view).
func (c *compiler) root(v *ir.Value) *ir.Value {
	for {
		a, ok := c.aliasOf[v]
		if !ok {
			return v
		}
		v = a
	}
}

// memoryPlan places every root buffer in the arena.
type memoryPlan struct {
	slots      map[*ir.Value]*slot
	total      int // arena bytes
	valueBytes int // bytes of every value, views excepted, in place outputs included
}

// planSlots gives a slot to every root buffer (graph inputs and node
// outputs that are not views) with the span of steps it lives through,
// lets an output take over a dying input's buffer where its kernel runs
// in place (inplace.go), and lays the slots out (planMemory).
func (c *compiler) planSlots(active []*ir.Node) memoryPlan {
	g := c.g
	slots := map[*ir.Value]*slot{}
	byteSize := func(v *ir.Value) int { return v.Shape.Size() * v.DType.Size() }
	var order []*ir.Value // slots in creation order, for a deterministic plan
	newSlot := func(v *ir.Value, first int) {
		slots[v] = &slot{size: byteSize(v), first: first, last: first}
		order = append(order, v)
	}
	for _, v := range g.Inputs {
		newSlot(v, -1)
	}
	touch := func(v *ir.Value, at int) {
		if s, ok := slots[c.root(v)]; ok {
			s.last = max(s.last, at)
		}
	}
	lastRead := c.lastReads(active, c.root)
	hasSlot := func(v *ir.Value) bool { return slots[v] != nil }
	inPlaceBytes := 0
	for i, n := range active {
		for _, v := range c.readsOf(n) {
			if v != nil {
				touch(v, i)
			}
		}
		for j, v := range c.writesOf(n) {
			if v == nil {
				continue
			}
			if _, alias := c.aliasOf[v]; alias {
				continue
			}
			if own := j < len(n.Outputs) && v == n.Outputs[j]; !own {
				newSlot(v, i) // a fused node's output written by this one
				continue
			}
			if r := c.inPlaceTarget(n, j, i, c.root, lastRead, hasSlot); r != nil {
				// The output takes over a dying input's buffer (inplace.go).
				c.aliasOf[v] = r
				lastRead[r] = lastRead[v]
				inPlaceBytes += byteSize(v)
				continue
			}
			newSlot(v, i)
		}
	}
	for _, o := range g.Outputs {
		touch(o.Value, len(active))
	}
	list := make([]*slot, len(order))
	plan := memoryPlan{slots: slots, valueBytes: inPlaceBytes}
	for i, v := range order {
		list[i] = slots[v]
		plan.valueBytes += list[i].size
	}
	plan.total = planMemory(list)
	return plan
}

// emit makes the tensor of every value — an arena view, a parameter's or
// constant's storage, or a view of those for a reshape — and a kernel for
// every node, bound to its tensors.
func (c *compiler) emit(e *Executable, plan memoryPlan, active []*ir.Node) error {
	c.tensors = map[*ir.Value]*ir.Tensor{}
	var tensorOf func(v *ir.Value) (*ir.Tensor, error)
	tensorOf = func(v *ir.Value) (*ir.Tensor, error) {
		if t, ok := c.tensors[v]; ok {
			return t, nil
		}
		var t *ir.Tensor
		var err error
		switch {
		case v.Kind == ir.ParamValue:
			t = v.Param.Tensor
		case v.Kind == ir.ConstValue:
			t = v.Const
		case c.aliasOf[v] != nil:
			var src *ir.Tensor
			if src, err = tensorOf(c.aliasOf[v]); err != nil {
				return nil, err
			}
			t = src.Reshaped(v.Shape)
		default:
			s, ok := plan.slots[v]
			if !ok {
				return nil, fmt.Errorf("cpu: value %s has no storage", v)
			}
			t, err = ir.TensorOn(v.DType, v.Shape, e.arena[s.offset:s.offset+s.size:s.offset+s.size])
		}
		if err != nil {
			return nil, err
		}
		c.tensors[v] = t
		return t, nil
	}
	for _, v := range c.g.Inputs {
		t, err := tensorOf(v)
		if err != nil {
			return err
		}
		e.inputs = append(e.inputs, t)
	}
	for _, n := range active {
		for _, v := range append(c.readsOf(n), c.writesOf(n)...) {
			if v != nil {
				if _, err := tensorOf(v); err != nil {
					return err
				}
			}
		}
		k, err := c.kernelFor(n)
		if err != nil {
			return fmt.Errorf("cpu: %s: %w", n, err)
		}
		e.steps = append(e.steps, step{n, k, c.fused[n].folded})
	}
	c.planBorrows(e, active, c.updates)
	for _, o := range c.g.Outputs {
		t, err := tensorOf(o.Value)
		if err != nil {
			return err
		}
		e.outputs = append(e.outputs, t)
	}
	return nil
}

// readsOf lists the values a node's kernel reads (after fusion).
func (c *compiler) readsOf(n *ir.Node) []*ir.Value {
	if f, ok := c.fused[n]; ok {
		ins := append([]*ir.Value{}, n.Inputs...)
		ins[0], ins[1] = f.a, f.b
		if f.bias != nil {
			ins = append(ins, f.bias)
		}
		return ins
	}
	return n.Inputs
}

// writesOf lists the values a node's kernel writes (after fusion).
func (c *compiler) writesOf(n *ir.Node) []*ir.Value {
	if f, ok := c.fused[n]; ok && f.out != nil {
		outs := append([]*ir.Value{}, n.Outputs...)
		outs[0] = f.out
		if f.actOut != nil {
			outs = append(outs, f.actOut)
		}
		return outs
	}
	return n.Outputs
}

// fuseTransposes lets a MatMul read an operand produced by a Transpose
// straight from the transpose's input, with strides, whenever every matrix
// of the transposed view has a unit stride along its rows or columns — the
// GEMM's lda and transpose flag express it. That covers nn.Linear weights
// ([out, in] used as Wᵀ) and the head transposes of attention
// ([b,t,h,d] → [b,h,t,d] and → [b,h,d,t]). A chain of transposes is one
// view (the backward pass transposes the forward's transposed keys and
// values again), read from the chain's deepest input that gives such a
// view. A transpose whose output every reader reads through is skipped.
// A transpose that is the only reader of a product is written by the
// product in place, where the GEMM can (attention's per-head outputs
// turned back to [t,b,h,d]; see fuseOutputTransposes).
func (c *compiler) fuseTransposes() {
	c.skip = map[*ir.Node]bool{}
	c.fused = map[*ir.Node]fusion{}
	// source is the value and permutation a MatMul reads operand v
	// through, or nil when v is read as it is.
	source := func(v *ir.Value) (*ir.Value, []int) {
		var src *ir.Value
		var perm []int
		for cur, p := v, []int(nil); cur.Kind == ir.NodeOutput && cur.DType == ir.Float32 && len(cur.Shape) >= 2; {
			t, ok := cur.Producer.Op.(*ir.Transpose)
			if !ok {
				break
			}
			// Transpose(Transpose(x, q), p) is Transpose(x, q∘p).
			if p == nil {
				p = slices.Clone(t.Perm)
			} else {
				for i := range p {
					p[i] = t.Perm[p[i]]
				}
			}
			cur = cur.Producer.Inputs[0]
			if _, ok := stridedMatrix(logicalOperand(cur.Shape, p)); ok {
				src, perm = cur, slices.Clone(p)
			}
		}
		return src, perm
	}
	sources := map[*ir.Value]bool{} // values fused MatMuls read
	for _, n := range c.g.Nodes {
		if _, ok := n.Op.(*ir.MatMul); !ok || n.Inputs[0].DType != ir.Float32 {
			continue
		}
		a, b := n.Inputs[0], n.Inputs[1]
		f := fusion{a: a, b: b}
		if src, perm := source(a); src != nil {
			f.a, f.permA = src, perm
			sources[src] = true
		}
		if src, perm := source(b); src != nil {
			f.b, f.permB = src, perm
			sources[src] = true
		}
		if f.permA != nil || f.permB != nil {
			c.fused[n] = f
		}
	}
	// A transpose is skipped when nothing reads its output: each reader
	// is a fused MatMul reading through it or a skipped transpose. Readers
	// come after their producers, so one pass from the end decides.
	readers := map[*ir.Value][]*ir.Node{}
	for _, n := range c.g.Nodes {
		for _, v := range n.Inputs {
			if v != nil {
				readers[v] = append(readers[v], n)
			}
		}
	}
	for i := len(c.g.Nodes) - 1; i >= 0; i-- {
		n := c.g.Nodes[i]
		if _, ok := n.Op.(*ir.Transpose); !ok {
			continue
		}
		out := n.Outputs[0]
		if c.outputs[out] || sources[out] || len(readers[out]) == 0 {
			continue
		}
		needed := false
		for _, r := range readers[out] {
			f, fused := c.fused[r]
			through := fused && (r.Inputs[0] != out || f.permA != nil) && (r.Inputs[1] != out || f.permB != nil)
			needed = needed || !c.skip[r] && !through
		}
		c.skip[n] = !needed
	}
	c.fuseOutputTransposes(sources)
}

// fuseEpilogues folds Add(MatMul(a, b), bias), bias a row of the
// product's width (a Linear layer's bias), into the MatMul when the sum
// is all that reads the product, the bias is computed before the MatMul,
// and the MatMul is one GEMM with C as it is stored (see biasEpilogue);
// an element-wise activation of the sum (GELU and the like, with a SIMD
// kernel) goes along when the sum is read elsewhere too. The GEMM then
// writes the sum, which training keeps for the activation's gradient, and
// the activation while each block of C is in cache, instead of three
// passes over memory.
func (c *compiler) fuseEpilogues() {
	readers := map[*ir.Value][]*ir.Node{}
	for _, n := range c.g.Nodes {
		if c.skip[n] {
			continue
		}
		for _, v := range c.readsOf(n) {
			if v != nil {
				readers[v] = append(readers[v], n)
			}
		}
	}
	order := map[*ir.Node]int{}
	for i, n := range c.g.Nodes {
		order[n] = i
	}
	for _, m := range c.g.Nodes {
		if _, ok := m.Op.(*ir.MatMul); !ok || c.skip[m] || m.Inputs[0].DType != ir.Float32 || len(m.Inputs[0].Shape) < 2 || len(m.Inputs[1].Shape) < 2 {
			continue
		}
		f, ok := c.fused[m]
		if !ok {
			f = fusion{a: m.Inputs[0], b: m.Inputs[1]}
		}
		u := m.Outputs[0]
		if f.out != nil || c.outputs[u] || c.uses[u] != 1 || len(readers[u]) != 1 || len(u.Shape) == 0 {
			continue
		}
		add := readers[u][0]
		if op, ok := add.Op.(*ir.Binary); !ok || op.Fn != ir.Add || !add.Outputs[0].Shape.Equal(u.Shape) {
			continue
		}
		bias := add.Inputs[0]
		if bias == u {
			bias = add.Inputs[1]
		}
		if bias == u || bias.DType != ir.Float32 || !isRow(bias.Shape, u.Shape[len(u.Shape)-1]) {
			continue
		}
		// The GEMM reads the bias: it must be computed before the MatMul
		// runs, not just before the Add.
		if bias.Kind == ir.NodeOutput && order[bias.Producer] > order[m] {
			continue
		}
		p, err := planMatMul(f.a.Shape, f.permA, f.b.Shape, f.permB, u.Shape, nil)
		if err != nil || p.batch != 1 || p.swapped || p.ldc != p.n || p.n != u.Shape[len(u.Shape)-1] {
			continue
		}
		sum := add.Outputs[0]
		f.out, f.bias, f.folded = sum, bias, []*ir.Node{add}
		c.skip[add] = true
		// The activation goes along when something else reads the sum
		// too (training keeps it for the gradient); when the activation
		// is its only reader, the separate node runs in place on it
		// instead, which holds one buffer where the epilogue would hold
		// two.
		if len(readers[sum]) > 1 || c.outputs[sum] {
			for _, r := range readers[sum] {
				if op, ok := r.Op.(*ir.Unary); ok && simdUnary(op.Fn) != nil && !c.skip[r] {
					f.act, f.actOut = op.Fn, r.Outputs[0]
					f.folded = append(f.folded, r)
					c.skip[r] = true
					break
				}
			}
		}
		c.fused[m] = f
	}
}

// isRow reports whether shape is a row of n values, with any leading
// axes of size one: [n], [1, n], [1, 1, n].
func isRow(shape ir.Shape, n int) bool {
	if len(shape) == 0 || shape[len(shape)-1] != n {
		return false
	}
	for _, d := range shape[:len(shape)-1] {
		if d != 1 {
			return false
		}
	}
	return true
}

// fuseOutputTransposes lets a MatMul write its product straight into the
// output of a Transpose that is the product's only reader, with strides,
// where the transposed product's matrices have a unit stride along rows or
// columns and the GEMM gains by it: not where a batch of products would
// share one B (whose rows stacked into one product would then be
// scattered: the transpose is cheaper there). sources are the values fused
// MatMuls read.
func (c *compiler) fuseOutputTransposes(sources map[*ir.Value]bool) {
	for _, n := range c.g.Nodes {
		t, ok := n.Op.(*ir.Transpose)
		if !ok || c.skip[n] {
			continue
		}
		u := n.Inputs[0]
		if u.Kind != ir.NodeOutput || c.uses[u] != 1 || c.outputs[u] || sources[u] {
			continue
		}
		m := u.Producer
		if _, ok := m.Op.(*ir.MatMul); !ok || m.Inputs[0].DType != ir.Float32 || len(m.Inputs[0].Shape) < 2 || len(m.Inputs[1].Shape) < 2 {
			continue
		}
		f, ok := c.fused[m]
		if !ok {
			f = fusion{a: m.Inputs[0], b: m.Inputs[1]}
		}
		p, err := planMatMul(f.a.Shape, f.permA, f.b.Shape, f.permB, n.Outputs[0].Shape, t.Perm)
		if err != nil || p.batch > 1 && p.sharesB() {
			continue
		}
		f.out, f.permOut = n.Outputs[0], t.Perm
		c.fused[m] = f
		c.skip[n] = true
	}
}

// Graph returns the compiled graph.
func (e *Executable) Graph() *ir.Graph { return e.g }

// Threads is the number of goroutines a kernel call may use.
func (e *Executable) Threads() int { return e.threads }

// ErrClosed is returned by an executable's methods after Close.
var ErrClosed = errors.New("cpu: executable is closed")

// Run copies the inputs into the executable's buffers (or lends them to
// the kernels that read them in place, borrow.go) and runs every
// kernel. It does not allocate when every node has a fast kernel. It
// writes no input but those accel.Options.UpdateInputs names.
func (e *Executable) Run(inputs []*ir.Tensor) ([]*ir.Tensor, error) {
	if e.closed {
		return nil, ErrClosed
	}
	if err := e.bindInputs(inputs); err != nil {
		return nil, err
	}
	defer e.returnBorrowed()
	for i := range e.steps {
		if err := e.steps[i].k.run(); err != nil {
			return nil, fmt.Errorf("cpu: %s: %w", e.steps[i].node, err)
		}
	}
	return e.outputs, nil
}

// bindInputs copies the caller's inputs into the executable's buffers
// (which the memory plan reuses once an input is dead, so every run must
// copy them again), or hands them to the kernels that read them in place
// (borrowers; returnBorrowed undoes that after the run).
func (e *Executable) bindInputs(inputs []*ir.Tensor) error {
	if len(inputs) != len(e.inputs) {
		return fmt.Errorf("cpu: %d inputs given, the graph has %d", len(inputs), len(e.inputs))
	}
	for i, t := range inputs {
		dst := e.inputs[i]
		if t == nil || t.DType() != dst.DType() || !t.Shape().Equal(dst.Shape()) {
			v := e.g.Inputs[i]
			got := "nil"
			if t != nil {
				got = t.String()
			}
			return fmt.Errorf("cpu: input %q is %s, the graph was specialized for %s", v.Name, got, dst)
		}
	}
	for i, t := range inputs {
		if e.borrowers[i] == nil {
			copy(e.inputs[i].Bytes(), t.Bytes())
		}
		for _, r := range e.borrowers[i] {
			r.k.rebind(r.read, t)
		}
	}
	return nil
}

// returnBorrowed points the borrowing kernels back at the executable's
// own tensors, so that it keeps no reference to the caller's.
func (e *Executable) returnBorrowed() {
	for i, rs := range e.borrowers {
		for _, r := range rs {
			r.k.rebind(r.read, e.inputs[i])
		}
	}
}

// Param returns the live storage of a parameter: writing it between runs
// changes what the next run computes.
func (e *Executable) Param(name string) (*ir.Tensor, error) {
	if e.closed {
		return nil, ErrClosed
	}
	p, ok := e.params[name]
	if !ok {
		return nil, fmt.Errorf("cpu: no parameter %q", name)
	}
	return p.Tensor, nil
}

// SetParam copies t into a parameter's storage.
func (e *Executable) SetParam(name string, t *ir.Tensor) error {
	dst, err := e.Param(name)
	if err != nil {
		return err
	}
	if err := dst.CopyFrom(t); err != nil {
		return fmt.Errorf("cpu: parameter %q: %w", name, err)
	}
	return nil
}

// Close drops the arena.
func (e *Executable) Close() error {
	e.closed = true
	e.arena, e.steps, e.inputs, e.borrowers, e.outputs = nil, nil, nil, nil, nil
	return nil
}

// StepTime is the time one op (by IR op name) took in a profiled run.
type StepTime struct {
	Op    string
	Calls int
	Time  time.Duration
}

// Profile runs like Run and reports the time spent per op name, most
// expensive first (for finding what to speed up; it allocates).
func (e *Executable) Profile(inputs []*ir.Tensor) ([]StepTime, error) {
	nodes, err := e.ProfileNodes(context.Background(), inputs, 1)
	if err != nil {
		return nil, err
	}
	byOp := map[string]*StepTime{}
	for _, n := range nodes {
		name := n.Node.Op.Name()
		if n.Reference {
			name += " (reference)"
		}
		st := byOp[name]
		if st == nil {
			st = &StepTime{Op: name}
			byOp[name] = st
		}
		st.Calls++
		st.Time += n.Time
	}
	out := make([]StepTime, 0, len(byOp))
	for _, st := range byOp {
		out = append(out, *st)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Time > out[b].Time })
	return out, nil
}
