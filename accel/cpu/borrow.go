package cpu

import "github.com/dstune/dstune/ir"

// Borrowed inputs: a graph input read only by kernels that take their
// tensors when they run is not copied into the arena; Run hands those
// kernels the caller's tensor instead. A decoder's KV cache (its past
// inputs, or dstune's own cache) is such an input, read once a step by a
// Concat or a TensorScatter: copying it in took a sixth of a decode step
// at 2,000 positions.

// A rebinder is a kernel that reads the tensors of its inputs when it
// runs: rebind(read, t) makes it read t as its input read (an index into
// compiler.readsOf of its node) from then on. It never writes an input.
type rebinder interface {
	rebind(read int, t *ir.Tensor)
}

// borrowedRead is one read of a borrowed input: the kernel and the index
// of the read.
type borrowedRead struct {
	k    rebinder
	read int
}

// planBorrows lends every input it can to the kernels reading it: an
// input that is no graph output and whose every reader is a rebinder (a
// reshape reads its input too: its views are not lent). The input keeps
// its slot in the arena, which then holds nothing but what a kernel that
// ran in place over it writes there.
func (c *compiler) planBorrows(e *Executable, active []*ir.Node) {
	reads := map[*ir.Value][]borrowedRead{}
	refused := map[*ir.Value]bool{}
	for i, n := range active {
		for j, v := range c.readsOf(n) {
			if v == nil || v.Kind != ir.GraphInput {
				continue
			}
			if k, ok := e.steps[i].k.(rebinder); ok {
				reads[v] = append(reads[v], borrowedRead{k, j})
			} else {
				refused[v] = true
			}
		}
	}
	e.borrowers = make([][]borrowedRead, len(c.g.Inputs))
	for i, v := range c.g.Inputs {
		if len(reads[v]) > 0 && !refused[v] && !c.outputs[v] {
			e.borrowers[i] = reads[v]
		}
	}
}

func (k *evalKernel) rebind(read int, t *ir.Tensor) { k.in[read] = t }

func (k *concatKernel) rebind(read int, t *ir.Tensor) { k.xs[read] = t.Bytes() }
