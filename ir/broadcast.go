package ir

import "fmt"

// BroadcastShapes returns the shape the operands broadcast to under numpy
// rules: shapes are aligned at the right and every dimension must be equal
// or 1.
func BroadcastShapes(shapes ...Shape) (Shape, error) {
	rank := 0
	for _, s := range shapes {
		rank = max(rank, len(s))
	}
	out := make(Shape, rank)
	for i := range out {
		out[i] = 1
	}
	for _, s := range shapes {
		off := rank - len(s)
		for i, d := range s {
			o := &out[off+i]
			switch {
			case d == *o || d == 1:
			case *o == 1:
				*o = d
			default:
				return nil, fmt.Errorf("shapes %v do not broadcast", shapes)
			}
		}
	}
	return out, nil
}

// BroadcastStrides returns the element strides with which an operand of
// shape in is read while iterating over the broadcast shape out (rank
// len(out)): the operand's row-major strides, right-aligned, with 0 for
// every broadcast (size-1 or missing) dimension.
func BroadcastStrides(in, out Shape) []int {
	st := make([]int, len(out))
	off := len(out) - len(in)
	n := 1
	for i := len(in) - 1; i >= 0; i-- {
		if in[i] != 1 {
			st[off+i] = n
		}
		n *= in[i]
	}
	return st
}

// RunLayout describes a walk over a broadcast output shape in row-major
// order, in runs along the innermost dimension, tracking where each
// operand's run starts. Size-1 dimensions and dimensions that are
// contiguous for every operand are merged first, so runs are as long as
// possible. Backends precompute it once per op and iterate without
// allocating.
type RunLayout struct {
	Outer   Shape   // dimensions above the innermost
	Strides [][]int // per operand, its strides for the Outer dimensions
	Inner   int     // length of a run
	Step    []int   // per operand, the stride within a run (0 when broadcast)
}

// NewRunLayout plans the walk over out for operands of the given shapes
// (each broadcastable to out).
func NewRunLayout(out Shape, ins ...Shape) RunLayout {
	all := make([][]int, len(ins))
	for k, s := range ins {
		all[k] = BroadcastStrides(s, out)
	}
	// Merge adjacent dimensions i-1, i when every operand steps through
	// them as one: stride[i-1] == stride[i]*out[i].
	var dims Shape
	merged := make([][]int, len(ins))
	for i, d := range out {
		if d == 1 {
			continue
		}
		if len(dims) > 0 {
			last := len(dims) - 1
			ok := true
			for k := range ins {
				if merged[k][last] != all[k][i]*d {
					ok = false
					break
				}
			}
			if ok {
				dims[last] *= d
				for k := range ins {
					merged[k][last] = all[k][i]
				}
				continue
			}
		}
		dims = append(dims, d)
		for k := range ins {
			merged[k] = append(merged[k], all[k][i])
		}
	}
	r := RunLayout{Inner: 1, Outer: Shape{}, Step: make([]int, len(ins)), Strides: make([][]int, len(ins))}
	for k := range ins {
		r.Strides[k] = []int{}
	}
	if len(dims) == 0 {
		return r
	}
	last := len(dims) - 1
	r.Inner = dims[last]
	r.Outer = dims[:last]
	for k := range ins {
		r.Step[k] = merged[k][last]
		r.Strides[k] = merged[k][:last]
	}
	return r
}

// Runs is the number of runs (the product of Outer; 0 for an empty output).
func (r *RunLayout) Runs() int {
	if r.Inner == 0 {
		return 0
	}
	return r.Outer.Size()
}

// Seek sets idx and base to the start of run number run (0 ≤ run <
// Runs()), so that a walk can start in the middle (one worker's share).
func (r *RunLayout) Seek(run int, idx, base []int) {
	for k := range base {
		base[k] = 0
	}
	for d := len(r.Outer) - 1; d >= 0; d-- {
		idx[d] = run % r.Outer[d]
		run /= r.Outer[d]
		for k := range base {
			base[k] += idx[d] * r.Strides[k][d]
		}
	}
}

// Next advances idx (an odometer over Outer, len(Outer) long) to the next
// run and updates base (per operand, the offset of its run's first
// element); it reports false after the last run.
func (r *RunLayout) Next(idx, base []int) bool {
	for d := len(idx) - 1; d >= 0; d-- {
		idx[d]++
		for k := range base {
			base[k] += r.Strides[k][d]
		}
		if idx[d] < r.Outer[d] {
			return true
		}
		for k := range base {
			base[k] -= r.Strides[k][d] * r.Outer[d]
		}
		idx[d] = 0
	}
	return false
}

// runIndexer is RunLayout with a callback walk, for the reference ops.
type runIndexer struct {
	RunLayout
	inner   int
	step    []int
	outer   Shape
	strides [][]int
}

func newRunIndexer(out Shape, ins ...Shape) *runIndexer {
	l := NewRunLayout(out, ins...)
	return &runIndexer{RunLayout: l, inner: l.Inner, step: l.Step, outer: l.Outer, strides: l.Strides}
}

// forRuns calls fn(o, base) for every run: o is the output offset of the
// run's first element (the run is contiguous in the output), base[k] the
// offset of operand k's first element; operand k advances by step[k].
func (r *runIndexer) forRuns(fn func(o int, base []int)) {
	l := RunLayout{Outer: r.outer, Strides: r.strides, Inner: r.inner, Step: r.step}
	if l.Runs() == 0 {
		return
	}
	idx := make([]int, len(l.Outer))
	base := make([]int, len(l.Step))
	for o := 0; ; o += l.Inner {
		fn(o, base)
		if !l.Next(idx, base) {
			return
		}
	}
}
