package cpu

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/ir"
)

// Borrowed inputs: a graph input read only by kernels that take their
// tensors when they run is not copied into the arena; Run hands those
// kernels the caller's tensor instead. A decoder's KV cache (its past
// inputs, or dstune's own cache) is such an input, read once a step by a
// Concat or a TensorScatter: copying it in took a sixth of a decode step
// at 2,000 positions.

// A rebinder is a kernel that reads the tensors of its inputs when it
// runs: rebind(read, t) makes it read t as its input read (an index into
// compiler.readsOf of its node) from then on, where rebindable(read) says
// it can. It never writes an input.
type rebinder interface {
	rebind(read int, t *ir.Tensor)
	rebindable(read int) bool
}

// borrowedRead is one read of a borrowed input: the kernel and the index
// of the read.
type borrowedRead struct {
	k    rebinder
	read int
}

// readersOf lists, for every value the active nodes read, the kernels
// reading it as rebinders, and marks the values some kernel reads without
// being able to take another tensor (a reshape reads its input too: its
// views are not lent).
func (c *compiler) readersOf(e *Executable, active []*ir.Node) (reads map[*ir.Value][]borrowedRead, refused map[*ir.Value]bool) {
	reads, refused = map[*ir.Value][]borrowedRead{}, map[*ir.Value]bool{}
	for i, n := range active {
		for j, v := range c.readsOf(n) {
			if v == nil {
				continue
			}
			if k, ok := e.steps[i].k.(rebinder); ok && k.rebindable(j) {
				reads[v] = append(reads[v], borrowedRead{k, j})
			} else {
				refused[v] = true
			}
		}
	}
	return reads, refused
}

// planBorrows lends every input it can to the kernels reading it: an
// input that is no graph output and every read of which a rebinder can
// take (not a MatMul's folded bias). The input keeps its slot in the
// arena, which then holds nothing but what a kernel that ran in place
// over it writes there. Inputs the caller lets a run update
// (accel.Options.UpdateInputs) may go further: see planUpdates.
func (c *compiler) planBorrows(e *Executable, active []*ir.Node, updates map[string]bool) {
	e.borrowers = make([][]borrowedRead, len(c.g.Inputs))
	results := c.planUpdates(e, active, updates)
	// The reads as the kernels now stand (planUpdates replaced some).
	reads, refused := c.readersOf(e, active)
	for i, v := range c.g.Inputs {
		switch {
		case results[i] != nil:
			// The scatter's read of the cache and every read of its
			// result take the caller's tensor.
			e.borrowers[i] = append(slices.Clone(reads[v]), reads[results[i]]...)
		case len(reads[v]) > 0 && !refused[v] && !c.outputs[v]:
			e.borrowers[i] = reads[v]
		}
	}
}

// A decoder's KV cache is fed every step, read once by a TensorScatter
// that writes the step's new rows into a copy of it, and the copy read by
// attention's MatMuls: copying a cache of 2,000 positions took 40 % of a
// decode step. When the caller lets a run update the cache input
// (accel.Options.UpdateInputs), the scatter writes its rows into the
// caller's tensor instead (scatterInPlace) and the scatter's readers are
// lent that tensor, as readers of the input are: no copy at all.
// planUpdates does this where it is safe — the input is read by the
// scatter alone and is no graph output; the scatter's result is no graph
// output, no view shares it (a reshape of it), and every read of it can
// take another tensor at run time — and returns, per graph input, the
// result of the scatter it now updates (nil: none). The arena keeps the
// input's and the result's slots, unused.
func (c *compiler) planUpdates(e *Executable, active []*ir.Node, updates map[string]bool) []*ir.Value {
	results := make([]*ir.Value, len(c.g.Inputs))
	if len(updates) == 0 {
		return results
	}
	reads, refused := c.readersOf(e, active)
	viewed := map[*ir.Value]bool{}
	for _, src := range c.aliasOf {
		viewed[src] = true
	}
	for i, n := range active {
		op, ok := n.Op.(*ir.TensorScatter)
		if !ok {
			continue
		}
		cache, result := n.Inputs[0], n.Outputs[0]
		in := slices.Index(c.g.Inputs, cache)
		if in < 0 || !updates[cache.Name] || c.outputs[cache] || c.outputs[result] || viewed[result] || refused[result] || len(reads[result]) == 0 {
			continue
		}
		if c.uses[cache] != 1 {
			continue // read elsewhere too: it must keep its rows
		}
		if _, own := c.aliasOf[result]; own {
			continue
		}
		k := &scatterInPlace{op: op, cache: e.inputs[in], upd: c.tensors[n.Inputs[1]]}
		if len(n.Inputs) > 2 && n.Inputs[2] != nil {
			k.w = c.tensors[n.Inputs[2]]
		}
		e.steps[i].k = k
		results[in] = result
	}
	return results
}

// scatterInPlace is a TensorScatter writing its rows into the cache it is
// given, the caller's tensor (see planUpdates); its result is that
// tensor. Every read can take another tensor: its update may itself be
// an updated cache (a scatter's result lent the caller's tensor).
type scatterInPlace struct {
	op            *ir.TensorScatter
	cache, upd, w *ir.Tensor
}

func (k *scatterInPlace) run() error {
	if err := k.op.ScatterInto(k.cache, k.upd, k.w); err != nil {
		return fmt.Errorf("%s: %w", k.op.Name(), err)
	}
	return nil
}

func (k *scatterInPlace) rebind(read int, t *ir.Tensor) {
	switch read {
	case 0:
		k.cache = t
	case 1:
		k.upd = t
	default:
		k.w = t
	}
}

func (k *scatterInPlace) rebindable(int) bool { return true }

func (k *evalKernel) rebind(read int, t *ir.Tensor) { k.in[read] = t }
func (k *evalKernel) rebindable(int) bool           { return true }

func (k *concatKernel) rebind(read int, t *ir.Tensor) { k.xs[read] = t.Bytes() }
func (k *concatKernel) rebindable(int) bool           { return true }

// A MatMul reads its operands (reads 0 and 1) when it runs; a folded bias
// (read 2) is bound into its epilogue.
func (k *matmulKernel) rebind(read int, t *ir.Tensor) {
	x := t.Float32s()
	if (read == 0) != k.swapped {
		k.a = x
	} else {
		k.b = x
	}
}

func (k *matmulKernel) rebindable(read int) bool { return read < 2 }
